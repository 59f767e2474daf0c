"""Reading a whole topic as it stands: every partition from its start to its end offset at the
moment of asking (the dead-letter list, a rebuild's plan, tests that check the log)."""

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from common.failures import Backoff
from common.kafka import KafkaTarget, client_options


async def partitions_of(bootstrap: KafkaTarget, topic: str, *, attempts: int = 8) -> list[int]:
    """The partition numbers of ``topic`` (empty if it does not exist). A broker that is not
    ready yet (just restarted or resumed, its metadata stale) is asked again, with backoff."""
    backoff = Backoff(first=0.2, cap=2.0)
    while True:
        try:
            described = await _describe(bootstrap, topic)
            break
        except KafkaError:
            if backoff.failures + 1 >= attempts:
                raise
            await backoff.sleep()
    return sorted(p["partition"] for t in described if t.get("error_code", 0) == 0
                  for p in t.get("partitions") or ())


async def _describe(bootstrap: KafkaTarget, topic: str) -> list[Any]:
    admin = AIOKafkaAdminClient(**client_options(bootstrap))
    await admin.start()
    try:
        described: list[Any] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return described


async def read_to_end(bootstrap: KafkaTarget, topic: str, *,
                      isolation: str = "read_committed") -> dict[int, list[Any]]:
    """The records of every partition of ``topic``, each in log order, up to the end offsets read
    first (records appended meanwhile are left out)."""
    tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
    if not tps:
        return {}
    # earliest: with the default (latest) the position could settle at the end before the seek.
    consumer = AIOKafkaConsumer(**client_options(bootstrap), enable_auto_commit=False,
                                isolation_level=isolation, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        read: dict[int, list[Any]] = {tp.partition: [] for tp in tps}
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            for tp, records in (await consumer.getmany(timeout_ms=500, max_records=20_000)).items():
                read[tp.partition].extend(r for r in records if r.offset < ends[tp])
        return read
    finally:
        await consumer.stop()
