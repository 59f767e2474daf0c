"""What the processor shows operators: its group offsets (not part of its transactions - the
checkpoint in ``ledger.state`` is - but moved up to what it has decided soon after, for lag
tooling), and its ``/metrics`` and ``/healthz``."""

import asyncio
import json
import re
import urllib.request
import uuid

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import RecordMetadata

from common.kafka import client_options
from events import codec, topics
from events.keys import wallet_key
from events.messages import InitiateTransfer
from tests.conftest import Running, unique
from tests.integration.ledger import read_events

pytestmark = pytest.mark.integration


async def _refused_commands(bootstrap: str, count: int) -> list[tuple[str, RecordMetadata]]:
    """Commands of one new wallet, each refused (no such asset): a decision all the same."""
    wallet = unique("observed")
    producer = AIOKafkaProducer(**client_options(bootstrap), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = []
        for _ in range(count):
            env = codec.envelope(
                InitiateTransfer(transfer_id=str(uuid.uuid4()), source=wallet, target="nobody",
                                 asset="NOSUCHASSET", amount=1),
                key=wallet_key(wallet), command_id=str(uuid.uuid4()), principal=wallet)
            sent.append((env.command_id, await producer.send_and_wait(
                topics.COMMANDS, codec.encode(env), key=wallet_key(wallet).encode())))
        return sent
    finally:
        await producer.stop()


async def test_group_offsets_follow_what_the_processor_decided(running: Running) -> None:
    bootstrap = running.stack.infra.bootstrap
    sent = await _refused_commands(bootstrap, 5)
    last = sent[-1][1]
    tp = TopicPartition(topics.COMMANDS, last.partition)

    async def decided() -> bool:
        return sent[-1][0] in {e.command_id for e in await read_events(bootstrap)}

    async def committed() -> int:
        offsets = await admin.list_consumer_group_offsets(topics.PROCESSOR_GROUP, partitions=[tp])
        return offsets[tp].offset if tp in offsets else -1

    admin = AIOKafkaAdminClient(**client_options(bootstrap))
    await admin.start()
    try:
        for _ in range(300):
            if await decided() and await committed() > last.offset:
                break
            await asyncio.sleep(0.1)
        assert await decided(), "the processor did not decide the commands"
        assert await committed() > last.offset, "the group's offset stayed behind what was decided"
    finally:
        await admin.close()


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.status, answer.read().decode()


def _decided(metrics: str) -> float:
    found = re.search(r'^ledgerline_processor_commands_total\{outcome="decided"\} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else 0.0


async def test_the_processor_serves_metrics_and_health(running: Running) -> None:
    url = f"http://127.0.0.1:{running.stack.settings.processor_metrics_port}"
    _, before = await asyncio.to_thread(_get, url + "/metrics")
    sent = await _refused_commands(running.stack.infra.bootstrap, 3)
    for _ in range(100):
        _, metrics = await asyncio.to_thread(_get, url + "/metrics")
        if _decided(metrics) >= _decided(before) + len(sent):
            break
        await asyncio.sleep(0.1)
    assert _decided(metrics) >= _decided(before) + len(sent), metrics[:3000]
    for name in ("ledgerline_processor_transaction_seconds_count",
                 "ledgerline_processor_decide_latency_seconds_bucket",
                 "ledgerline_processor_batch_records_count"):
        assert name in metrics, name
    partitions = running.stack.settings.partitions
    assert f"ledgerline_processor_partitions {float(partitions)}" in metrics
    status, health = await asyncio.to_thread(_get, url + "/healthz")
    assert status == 200
    assert json.loads(health) == {"status": "ok", "partitions": list(range(partitions))}
