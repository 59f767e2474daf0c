"""Durability: SIGKILL the Kafka broker while the processor works through a stream, restart it on
the same data -> every command decided exactly once, nothing acknowledged lost, conservation.

Right after a broker restart the group coordinator may still be loading its offsets and answer
"no committed offset"; the processor resumes from the checkpoint it writes to ``ledger.state``
in the same transaction as its snapshots, so it neither replays nor skips."""

import asyncio
import random

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

pytestmark = pytest.mark.integration


async def test_broker_sigkill_loses_nothing_and_decides_once(running: Running) -> None:
    broker = running.stack.infra.broker
    if broker is None:
        pytest.skip("the broker is not ours to kill (KAFKA_BOOTSTRAP points elsewhere)")
    bootstrap = running.stack.infra.bootstrap
    seed = random.randrange(1 << 30)
    wallets = unique_wallets("brokercrash", 6)
    workload = Workload.build(wallets, transfers=400, trades=60, seed=seed)
    # A long tail of small transfers, so the kill lands while work is left.
    rng = random.Random(seed)
    tail = [workload.transfer(*rng.sample(wallets, 2), 1) for _ in range(12_000)]
    # Everything produced is acknowledged (acks=all) before the kill.
    await produce(bootstrap, workload.setup + workload.stream + tail)
    await asyncio.sleep(rng.uniform(0.0, 0.1))
    before = facts(await read_events(bootstrap), workload.assets)
    await asyncio.to_thread(broker.kill)
    try:
        assert before.undecided(workload), "the kill came after the work: nothing left to check"
    finally:
        await asyncio.to_thread(broker.start)
    # And the processor recovers its partitions right after the broker came back.
    processor = running.services.children["processor"]
    processor.kill()
    processor.wait()
    running.services.start_one("processor")

    f = await wait_decided(bootstrap, workload, within=90)
    assert_decided_once(f, workload)
    await assert_views_agree(running, f, workload.assets, within=60)
    assert all(running.alive().values()), running.alive()
