"""The records one processor transaction writes, packed into Kafka record batches.

Appending to a record batch is a plain function call; ``producer.send`` per record would be a
coroutine, a future and a partitioner call each, which dominated the processor's time.
"""

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2


class Partitioner:
    """Kafka's default key -> partition mapping (murmur2), cached: keys repeat, murmur2 is slow."""

    def __init__(self, partitions: list[int]) -> None:
        self.partitions = partitions
        self._cache: dict[bytes, int] = {}

    def partition(self, key: bytes) -> int:
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) > 1_000_000:
                self._cache.clear()
            found = self._cache[key] = self.partitions[(murmur2(key) & 0x7FFFFFFF) % len(self.partitions)]
        return found


_NO_HEADERS: list[tuple[str, bytes]] = []  # read, never written, by the batch builder


Held = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes]]]


class Outbox:
    def __init__(self, producer: AIOKafkaProducer, hold: str | None = None) -> None:
        self.producer = producer
        self._open: dict[tuple[str, int], Any] = {}
        self._full: list[tuple[str, int, Any]] = []
        # Records of the topic ``hold`` wait in ``held`` until released (the hash chain links
        # a batch's events once all of them are known: see processor.chain).
        self.hold = hold
        self.held: list[Held] = []

    def take_held(self) -> list[Held]:
        held, self.held = self.held, []
        return held

    def add(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
            headers: list[tuple[str, bytes]] | None = None, *, hold: bool = True) -> None:
        if hold and topic == self.hold:
            self.held.append((partition, key, value, headers or []))
            return
        builder = self._open.get((topic, partition))
        if builder is None:
            builder = self._open[(topic, partition)] = self.producer.create_batch()
        headers = headers or _NO_HEADERS
        if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            self._full.append((topic, partition, builder))
            builder = self._open[(topic, partition)] = self.producer.create_batch()
            if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                raise ValueError(f"a record of {len(value or b'')} bytes does not fit a batch")

    async def flush(self) -> None:
        """Hand every batch to the producer (inside its transaction) and wait until all are written."""
        batches = [*self._full, *((t, p, b) for (t, p), b in self._open.items())]
        self._open, self._full = {}, []
        sent = []
        for topic, partition, builder in batches:
            if builder.record_count():
                builder.close()  # a closed batch is sent at once, without lingering
                sent.append(await self.producer.send_batch(builder, topic, partition=partition))
        await asyncio.gather(*sent)
