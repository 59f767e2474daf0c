"""Helpers of the hash chain's tests: where ledger.events ends, and ``audit --verify-chain``."""

import asyncio
import sys

from aiokafka import AIOKafkaConsumer, TopicPartition

from common.kafka import client_options
from common.topic_reader import partitions_of
from events import topics
from tests.conftest import Running


async def end_offsets(bootstrap: str) -> dict[int, int]:
    """Where the next committed record of each partition of ledger.events will stand."""
    tps = [TopicPartition(topics.EVENTS, p) for p in await partitions_of(bootstrap, topics.EVENTS)]
    consumer = AIOKafkaConsumer(**client_options(bootstrap), isolation_level="read_committed")
    await consumer.start()
    try:
        return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def verify(running: Running, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ledgerline", "audit", "--verify-chain", *args,
        env=running.stack.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


def scope(before: dict[int, int], after: dict[int, int]) -> list[str]:
    """``--from``/``--to`` options verifying the records written between two end offsets."""
    args = []
    for p in sorted(after):
        args += ["--from", f"{p}:{before.get(p, 0)}", "--to", f"{p}:{after[p]}"]
    return args
