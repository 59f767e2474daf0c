"""The live path: a debit's transaction writes the payee's credit into the payee's events
partition, and the payee's processor takes it into its state later, from its command partition.
A wallet's own debits decided in between land after the credit in its events partition, decided
on a balance without it. The views must still be the running sum in partition order, and a
replay from offset 0 must give the same tables, ``ledger_entries``' balances after included."""

import random

import asyncpg
import pytest

from common.settings import asyncpg_dsn
from tests.conftest import Running
from tests.integration.ledger import (
    Workload,
    assert_decided_once,
    assert_views_agree,
    produce,
    unique_wallets,
    wait_decided,
)
from tests.integration.projector_support import caught_up, replay_matches_live

pytestmark = pytest.mark.integration


async def test_interleaved_credits_and_debits_project_and_replay_identically(running: Running) -> None:
    bootstrap = running.stack.settings.kafka_bootstrap
    seed = random.randrange(1 << 30)
    # Few wallets, many commands at once: each wallet's debits queue on its partition while
    # credits for it are written by the transactions of the other partitions.
    wallets = unique_wallets("live", 8)
    workload = Workload.build(wallets, transfers=500, trades=80, seed=seed, cash=2_000, bonds=20)
    await produce(bootstrap, workload.setup)
    await wait_decided(bootstrap, Workload(workload.cash, workload.bond, wallets,
                                           issues=list(workload.issues)))
    await produce(bootstrap, workload.stream)

    f = await wait_decided(bootstrap, workload, within=120)
    assert_decided_once(f, workload)  # no balance below zero; no decision on more than there was
    # The case this is about happened: debits decided on a balance that did not count a credit
    # already before them in the partition. Their projected balance must count it.
    assert f.decided_behind > 0, f"seed {seed}: no decision was made behind a credit"
    await assert_views_agree(running, f, workload.assets)

    pool = await asyncpg.create_pool(asyncpg_dsn(running.stack.settings.database_url),
                                     min_size=1, max_size=4)
    try:
        await caught_up(pool, bootstrap)
        rows = await pool.fetch("SELECT event_id, available_after, held_after FROM ledger_entries "
                                "WHERE event_id = ANY($1::text[])", list(f.after))
        projected = {r["event_id"]: (int(r["available_after"]), int(r["held_after"])) for r in rows}
        assert projected == f.after, f"seed {seed}"
        await replay_matches_live(running, pool)
    finally:
        await pool.close()
