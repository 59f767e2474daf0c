"""The live path: a debit's transaction writes the payee's credit into the payee's events
partition, and the payee's processor takes it into its state later, from its command partition.
A wallet's own debits decided in between land after the credit in its events partition, decided
on a balance without it. The views must still be the running sum in partition order, and a
replay from offset 0 must give the same tables, ``ledger_entries``' balances after included."""

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from common.kafka import client_options
from common.settings import asyncpg_dsn
from events import topics
from events.codec import Envelope
from events.keys import asset_key, wallet_key
from events.messages import CreditWallet, RegisterAsset
from tests.conftest import Running, unique_symbol
from tests.integration.ledger import (
    Workload,
    _env,
    assert_decided_once,
    assert_views_agree,
    produce,
    read_events,
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


async def test_a_log_from_before_the_live_path_is_still_decided_and_projected(
    running: Running,
) -> None:
    """A ``CreditWallet`` follow-up still in ``ledger.commands`` at the upgrade is decided as it
    was, and a version 1 credit (with the balance its payee's processor gave it) projects its
    amount."""
    bootstrap = running.stack.settings.kafka_bootstrap
    wallets = unique_wallets("old", 3)
    workload = Workload(unique_symbol(), unique_symbol(), wallets)
    workload.setup.append(_env(RegisterAsset(symbol=workload.cash, name="c", decimals=0,
                                             issuer="t"), asset_key(workload.cash)))
    pending = _env(CreditWallet(wallet=wallets[0], asset=workload.cash, amount=70,
                                kind="transfer", reference="before-the-upgrade"),
                   wallet_key(wallets[0]))
    spend = workload.transfer(wallets[0], wallets[1], 70)
    await produce(bootstrap, [*workload.setup, pending, spend])

    v1 = {"id": str(uuid.uuid4()), "type": "WalletCredited", "version": 1,
          "key": wallet_key(wallets[2]), "command_id": str(uuid.uuid4()),
          "occurred_at": "2026-01-01T00:00:00Z", "principal": "old",
          "payload": {"wallet": wallets[2], "asset": workload.cash, "amount": 9, "kind": "issue",
                      "reference": workload.cash, "available_after": 9, "held_after": 0}}
    producer = AIOKafkaProducer(**client_options(bootstrap), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topics.EVENTS, json.dumps(v1).encode(),
                                     key=wallet_key(wallets[2]).encode())
    finally:
        await producer.stop()

    events = await _until(bootstrap, lambda es: any(
        e.type == "WalletCredited" and e.payload.wallet == wallets[1] for e in es))
    credited = [e for e in events if e.type == "WalletCredited" and e.key == wallet_key(wallets[0])]
    assert [(e.payload.amount, e.payload.reference) for e in credited] == [(70, "before-the-upgrade")]
    assert any(e.type == "TransferConfirmed" and e.payload.source == wallets[0] for e in events)

    conn = await asyncpg.connect(asyncpg_dsn(running.stack.settings.database_url))
    try:
        expected = {wallets[0]: 0, wallets[1]: 70, wallets[2]: 9}
        got: dict[str, int] = {}
        deadline = time.monotonic() + 30
        while got != expected and time.monotonic() < deadline:
            rows = await conn.fetch("SELECT wallet, available FROM wallet_balances WHERE asset = $1",
                                    workload.cash)
            got = {r["wallet"]: int(r["available"]) for r in rows}
            await asyncio.sleep(0.3)
    finally:
        await conn.close()
    assert got == expected


async def _until(bootstrap: str, done: Callable[[list[Envelope]], bool],
                 seconds: float = 30.0) -> list[Envelope]:
    deadline = time.monotonic() + seconds
    while True:
        events = await read_events(bootstrap)
        if done(events) or time.monotonic() > deadline:
            return events
        await asyncio.sleep(0.3)
