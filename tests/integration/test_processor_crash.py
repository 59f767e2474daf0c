"""Crash: SIGKILL the processor at several points while it works through a stream of transfers,
trades and issues, restart it each time -> every command decided exactly once, no credit lost,
no hold left behind, conservation."""

import asyncio
import os
import random
import signal

import pytest

from tests.conftest import Running
from tests.integration.chain_support import end_offsets, scope, verify
from tests.integration.ledger import (
    Workload,
    assert_decided_once,
    assert_views_agree,
    facts,
    produce,
    read_events,
    unique_wallets,
    wait_decided,
)
from tests.integration.processes import own_processors, wait_for_exit, wait_for_log

pytestmark = pytest.mark.integration


async def _funded(bootstrap: str, workload: Workload, credits: int, within: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        seen = sum(1 for e in await read_events(bootstrap)
                   if e.type == "WalletCredited" and e.payload.asset in workload.assets)
        if seen >= credits:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the setup's issues were not credited in time")


async def test_sigkill_at_several_points_decides_every_command_once(running: Running) -> None:
    bootstrap = running.stack.infra.bootstrap
    all_partitions = f"assigned partitions {list(range(running.stack.settings.partitions))}"
    seed = random.randrange(1 << 30)
    wallets = unique_wallets("crash", 6)
    workload = Workload.build(wallets, transfers=300, trades=100, seed=seed, cash=3_000, bonds=20)
    first, later = workload.stream[:270], workload.stream[270:]
    # A long tail of small transfers, so the external kill lands while work is left.
    rng = random.Random(seed)
    later += [workload.transfer(*rng.sample(wallets, 2), 1) for _ in range(2000)]
    before = await end_offsets(bootstrap)
    with own_processors(running, "crash") as procs:
        # The wallets are funded before the stream arrives; otherwise the issue credits (follow-up
        # requests) queue behind the whole stream and every transfer and trade fails.
        await produce(bootstrap, workload.setup)
        # Mid-transaction, after N records: the batch's events are in the log, uncommitted.
        for n, after in enumerate((60, 150, 90)):
            proc = procs.start(f"crash-{n}", LEDGERLINE_FAULT_AFTER_RECORDS=str(after))
            if n == 0:
                await _funded(bootstrap, workload, len(wallets) * 2)
                await produce(bootstrap, first)
            assert await wait_for_exit(proc, 40) == -signal.SIGKILL, proc.text()[-3000:]
            assert "fault injection: sending myself SIGKILL" in proc.text()
        # From outside, at a random moment while it works through a backlog.
        await produce(bootstrap, later)
        proc = procs.start("crash-external")
        await wait_for_log(proc, all_partitions, within=40)
        await asyncio.sleep(random.Random(seed).uniform(0.05, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
        proc.popen.wait()
        undecided = facts(await read_events(bootstrap), workload.assets).undecided(workload)
        assert undecided, "the kill came after the work: nothing was left for the restart"
        procs.start("crash-final")
        f = await wait_decided(bootstrap, workload)
    assert_decided_once(f, workload)
    assert f.settled and set(f.failed) & set(workload.trades), "trades were meant to settle and to fail"
    assert set(f.failed) & set(workload.transfers), "some transfers were meant to fail"
    await assert_views_agree(running, f, workload.assets)
    # The hash chain survived every crash: linked again from the committed heads each time.
    code, out = await verify(running, *scope(before, await end_offsets(bootstrap)))
    assert code == 0, out
