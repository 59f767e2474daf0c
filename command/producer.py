"""The command API's Kafka producer: durable, and quick at any load.

Durable: ``acks=all`` and idempotent, so an answered command is in Kafka once, whatever retries
happen. Quick: no linger. A record is sent as soon as the sender is free, so at low load it
waits for nothing; under load, records that arrive while a partition's previous request is in
flight queue up and go out together in the next one (up to ``BATCH_BYTES``), so batching grows
with the load without a timer adding latency. Records are small JSON, not compressed: the CPU
would cost more than the bytes.
"""

import random

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from common.kafka import KafkaTarget, client_options

BATCH_BYTES = 256 * 1024


class KeyHashPartitioner:
    """Kafka's default partitioning (murmur2 of the key, as the Java client and aiokafka do),
    with each key's hash remembered: the same wallets send again and again, and murmur2 in
    Python costs more than the rest of a send. The partition stays the default one, so a
    command lands where the processor and every other producer expect it."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self.size:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


def command_producer(bootstrap: KafkaTarget) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **client_options(bootstrap),
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        max_batch_size=BATCH_BYTES,
        compression_type=None,
        partitioner=KeyHashPartitioner(),
    )
