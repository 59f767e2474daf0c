"""The broker away for longer than the processor's transaction timeout: when it is back it ends
the transaction that outlived the timeout and fences the producer, as it would for a newer owner.
The processor rides through: it drops what it held, joins the group again and takes its
partitions afresh (fence, then the state read back from Kafka) -> it is not restarted, every
command is decided once, and the ended transaction's records stay invisible."""

import asyncio
import signal

import pytest

from tests.conftest import Running
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

TIMEOUT_MS = 2000


async def test_a_broker_away_past_the_transaction_timeout_is_ridden_through(running: Running) -> None:
    broker = running.stack.infra.broker
    if broker is None:
        pytest.skip("the broker is not ours to stop (KAFKA_BOOTSTRAP points elsewhere)")
    bootstrap = running.stack.infra.bootstrap
    partitions = list(range(running.stack.settings.partitions))
    workload = Workload.build(unique_wallets("txtimeout", 8), transfers=200, trades=60, seed=11)
    with own_processors(running, "txtimeout") as procs:
        # The processor stops itself inside a transaction (its records are in the log, the
        # commit is not sent), so the broker, not the processor, decides how it ends.
        proc = procs.start("processor", LEDGERLINE_FAULT_AFTER_RECORDS="12",
                           LEDGERLINE_FAULT_SIGNAL="STOP",
                           LEDGERLINE_PROCESSOR_TRANSACTION_TIMEOUT_MS=str(TIMEOUT_MS))
        await wait_for_log(proc, f"assigned partitions {partitions}")
        await produce(bootstrap, workload.setup + workload.stream)
        await wait_for_log(proc, "fault injection: sending myself SIGSTOP")
        await wait_until_stopped(proc)

        # The broker goes away for longer than the transaction timeout, and comes back.
        await asyncio.to_thread(broker.kill)
        await asyncio.sleep(TIMEOUT_MS / 1000 + 1)
        await asyncio.to_thread(broker.start)
        # Back, it ends the transaction that outlived its timeout (it looks every second).
        await asyncio.sleep(TIMEOUT_MS / 1000 + 3)
        proc.popen.send_signal(signal.SIGCONT)

        fenced = await wait_for_log(proc, "is fenced (another instance took it over, or the "
                                    "broker ended its transaction)")
        await wait_for_log(proc, f"assigned partitions {partitions}", after=fenced)
        f = await wait_decided(bootstrap, workload, within=90)
        assert proc.popen.poll() is None, proc.text()[-3000:]

    assert_decided_once(f, workload)
    # The ended transaction's records are in the log, aborted, never read as committed.
    written = facts(await read_events(bootstrap, "read_uncommitted"), workload.assets)
    assert sum(written.event_ids.values()) > sum(f.event_ids.values())
    await assert_views_agree(running, f, workload.assets)
    assert all(running.alive().values()), running.alive()
