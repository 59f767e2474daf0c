"""The local-stack building blocks against a real Kafka broker and a real PostgreSQL.

Starts both on fresh folders and free ports, sends one record through a transactional producer,
reads it back with read_committed, touches PostgreSQL, then restarts both on the same folders and
checks that the record, the committed group offset and a table survived.
"""

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from common.kafka import client_options
from ledgerline.stack import StackError
from ledgerline.stack.kafka import KafkaBroker, ensure_kafka_jars
from ledgerline.stack.ports import free_port, port_in_use
from ledgerline.stack.postgres import LocalPostgres
from ledgerline.stack.topics import EVENTS_TOPIC, SINGLE_PARTITION, TOPICS, ensure_topics

pytestmark = pytest.mark.integration

JAR_CACHE = Path(__file__).resolve().parents[2] / ".cache"
GROUP = "stack-test"


async def _read_committed(bootstrap: str, tp: TopicPartition, offset: int) -> tuple[bytes, int]:
    """The value at ``offset`` (read_committed) and the group's committed offset, then commit."""
    consumer = AIOKafkaConsumer(
        **client_options(bootstrap),
        group_id=GROUP,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        committed = await consumer.committed(tp)
        consumer.seek(tp, offset)
        record = await asyncio.wait_for(consumer.getone(), 20)
        await consumer.commit({tp: record.offset + 1})
        assert record.value is not None
        return record.value, -1 if committed is None else committed
    finally:
        await consumer.stop()


async def _committed_after_restart(bootstrap: str, tp: TopicPartition) -> int | None:
    """The group's committed offset once the restarted coordinator has loaded it (bounded wait)."""
    consumer = AIOKafkaConsumer(**client_options(bootstrap), group_id=GROUP, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        for _ in range(40):
            committed = await consumer.committed(tp)
            if committed is not None:
                return committed
            await asyncio.sleep(0.25)
        return None
    finally:
        await consumer.stop()


async def _stop(*processes: KafkaBroker | LocalPostgres) -> None:
    await asyncio.gather(*(asyncio.to_thread(p.stop) for p in processes))


async def test_stack_round_trip_survives_restart(tmp_path: Path) -> None:
    jars = await asyncio.to_thread(ensure_kafka_jars, JAR_CACHE)
    broker = KafkaBroker(jars, tmp_path / "kafka", port=free_port())
    pg = LocalPostgres(tmp_path / "pg", port=free_port())
    value = f"hello {uuid.uuid4()}".encode()
    try:
        await asyncio.gather(asyncio.to_thread(broker.start), asyncio.to_thread(pg.start))
        assert broker.pid is not None and pg.pid is not None

        # A second broker on the same port is refused with a clear message.
        with pytest.raises(StackError, match=f"port {broker.port} is in use"):
            KafkaBroker(jars, tmp_path / "other", port=broker.port).start()

        await ensure_topics(broker.bootstrap, partitions=2)
        await ensure_topics(broker.bootstrap, partitions=2)  # idempotent
        admin = AIOKafkaAdminClient(**client_options(broker.bootstrap))
        await admin.start()
        try:
            described = {t["topic"]: t for t in await admin.describe_topics(list(TOPICS))}
        finally:
            await admin.close()
        assert set(described) == set(TOPICS)
        assert all(len(t["partitions"]) == (1 if name in SINGLE_PARTITION else 2)
                   for name, t in described.items())

        producer = AIOKafkaProducer(
            **client_options(broker.bootstrap),
            transactional_id=f"stack-test-{uuid.uuid4()}",
            acks="all",
            enable_idempotence=True,
        )
        await producer.start()
        try:
            async with producer.transaction():
                sent = await producer.send_and_wait(EVENTS_TOPIC, value, key=b"account-1")
        finally:
            await producer.stop()
        tp = TopicPartition(EVENTS_TOPIC, sent.partition)
        assert await _read_committed(broker.bootstrap, tp, sent.offset) == (value, -1)

        conn = await asyncpg.connect(pg.url)
        try:
            assert await conn.fetchval("SELECT 1") == 1
            await conn.execute("CREATE TABLE kept (id int PRIMARY KEY, note text NOT NULL)")
            await conn.execute("INSERT INTO kept VALUES (1, $1)", value.decode())
        finally:
            await conn.close()

        await _stop(broker, pg)
        assert broker.pid is None and pg.pid is None
        assert not port_in_use(broker.host, broker.port)

        # Same folders again: the data is reused, not re-initialised.
        await asyncio.gather(asyncio.to_thread(broker.start), asyncio.to_thread(pg.start))
        await ensure_topics(broker.bootstrap, partitions=2)
        assert await _committed_after_restart(broker.bootstrap, tp) == sent.offset + 1
        assert (await _read_committed(broker.bootstrap, tp, sent.offset))[0] == value
        conn = await asyncpg.connect(pg.url)
        try:
            assert await conn.fetchval("SELECT note FROM kept WHERE id = 1") == value.decode()
        finally:
            await conn.close()
    finally:
        await _stop(broker, pg)
