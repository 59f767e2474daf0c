"""Zombie: two processor instances share the partitions; one is paused (SIGSTOP) mid-transaction
past its session timeout, the other takes its partitions, then the paused one resumes -> it
cannot write (its producer is fenced): it drops what it held and joins the group again as a new
member, and nothing is decided twice."""

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
from tests.integration.processes import own_processors, wait_for_log, wait_until_stopped

pytestmark = pytest.mark.integration


async def test_a_resumed_zombie_is_fenced_rejoins_and_nothing_is_decided_twice(running: Running) -> None:
    bootstrap = running.stack.infra.bootstrap
    partitions = list(range(running.stack.settings.partitions))
    workload = Workload.build(unique_wallets("zombie", 10), transfers=200, trades=100, seed=7)
    before = await end_offsets(bootstrap)
    with own_processors(running, "zombie") as procs:
        zombie = procs.start("zombie", LEDGERLINE_FAULT_AFTER_RECORDS="12", LEDGERLINE_FAULT_SIGNAL="STOP")
        await wait_for_log(zombie, f"assigned partitions {partitions}")
        survivor = procs.start("survivor")
        await wait_for_log(survivor, "assigned partitions [")  # the group now shares the partitions
        await produce(bootstrap, workload.setup + workload.stream)

        # The zombie stops itself in a transaction whose records are already in the log ...
        await wait_for_log(zombie, "fault injection: sending myself SIGSTOP")
        await wait_until_stopped(zombie)
        # ... its session runs out and the survivor takes every partition, fencing it.
        await wait_for_log(survivor, f"assigned partitions {partitions}", within=40)
        zombie.popen.send_signal(signal.SIGCONT)
        fenced = await wait_for_log(zombie, "is fenced (another instance took it over, or the "
                                    "broker ended its transaction); this instance must not write "
                                    "from the state it held")
        # It rides through: a member again, given partitions afresh (fenced, state read back).
        await wait_for_log(zombie, "assigned partitions [", after=fenced)
        f = await wait_decided(bootstrap, workload)
        assert zombie.popen.poll() is None, zombie.text()[-3000:]

    assert_decided_once(f, workload)
    # The zombie did write: its records are in the log, but aborted, never read as committed.
    written = facts(await read_events(bootstrap, "read_uncommitted"), workload.assets)
    assert sum(written.event_ids.values()) > sum(f.event_ids.values())
    await assert_views_agree(running, f, workload.assets)
    # The zombie's aborted links are invisible; its successor linked on from the committed heads.
    code, out = await verify(running, *scope(before, await end_offsets(bootstrap)))
    assert code == 0, out
