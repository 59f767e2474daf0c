"""The projector worker: Kafka ``ledger.events`` (read_committed) -> Postgres views, in batches.

Each batch is folded into row changes and written with the partition offsets in one Postgres
transaction; on assignment the consumer seeks to the offsets stored there, so every event
changes every view exactly once. Records that cannot be decoded or applied go to the
dead-letter topic with their error and position, and the worker goes on.
"""

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from command.processor import dead_letter_headers
from events import codec, topics
from events.codec import DecodeError
from projector import store
from projector.fold import Position, RowChanges, apply

log = logging.getLogger("ledgerline.projector")

PROJECTION = "views"


class _Seek(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: "Projector") -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self.worker.stored.pop(tp.partition, None)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.worker.seek_to_stored(assigned)


class Projector:
    def __init__(self, bootstrap: str, pool: asyncpg.Pool, *, group: str = topics.PROJECTOR_GROUP,
                 projection: str = PROJECTION, max_records: int = 5000) -> None:
        self.pool = pool
        self.projection = projection
        self.max_records = max_records
        self.stored: dict[int, int | None] = {}
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.dlq = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)

    async def seek_to_stored(self, assigned: Any) -> None:
        async with self.pool.acquire() as conn:
            offsets = await store.load_offsets(conn, self.projection, topics.EVENTS)
        for tp in assigned:
            stored = offsets.get(tp.partition)
            self.stored[tp.partition] = stored
            if stored is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, stored)
        log.info("assigned %s at %s", sorted(tp.partition for tp in assigned),
                 {p: self.stored[p] for p in sorted(self.stored)})

    async def run(self, stop: asyncio.Event) -> None:
        await self.dlq.start()
        self.consumer.subscribe([topics.EVENTS], listener=_Seek(self))
        await self.consumer.start()
        try:
            while not stop.is_set():
                batches = await self.consumer.getmany(timeout_ms=200, max_records=self.max_records)
                batches = {tp: r for tp, r in batches.items() if r and tp.partition in self.stored}
                if batches:
                    await self._with_retry(batches)
        finally:
            await self.consumer.stop()
            await self.dlq.stop()

    async def _with_retry(self, batches: dict[TopicPartition, Sequence[Any]]) -> None:
        delay = 0.1
        while True:
            try:
                await self.project(batches)
                return
            except store.OffsetConflict as exc:
                log.warning("%s: another instance moved on; re-reading stored offsets", exc)
                await self.seek_to_stored([tp for tp in batches if tp.partition in self.stored])
                return
            except (OSError, asyncpg.PostgresConnectionStatusError,
                    asyncpg.exceptions.ConnectionDoesNotExistError,
                    asyncpg.CannotConnectNowError) as exc:
                log.warning("database unavailable (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def project(self, batches: dict[TopicPartition, Sequence[Any]]) -> None:
        changes = RowChanges()
        # Dead letters are written before the offsets move on: at least once, never lost.
        poison: list[tuple[Any, str]] = []
        for records in batches.values():
            for record in records:
                error = self._fold(changes, record)
                if error is not None:
                    poison.append((record, error))
        await self._dead_letter(poison)
        offsets = {
            tp.partition: (self.stored.get(tp.partition), records[-1].offset + 1)
            for tp, records in batches.items()
        }
        try:
            async with self.pool.acquire() as conn:
                await store.write_batch(conn, changes, self.projection, topics.EVENTS, offsets)
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
            log.warning("batch does not apply as a whole (%r); applying record by record", exc)
            await self._one_by_one(batches)
            return
        self._advance(offsets)

    def _fold(self, changes: RowChanges, record: Any) -> str | None:
        try:
            env = codec.decode(record.value)
            apply(changes, env, Position(record.topic, record.partition, record.offset))
        except (DecodeError, ValueError) as exc:
            return str(exc)
        return None

    async def _one_by_one(self, batches: dict[TopicPartition, Sequence[Any]]) -> None:
        for tp, records in batches.items():
            for record in records:
                changes = RowChanges()
                error = self._fold(changes, record)
                offsets = {tp.partition: (self.stored.get(tp.partition), record.offset + 1)}
                async with self.pool.acquire() as conn:
                    if error is None:
                        try:
                            await store.write_batch(
                                conn, changes, self.projection, topics.EVENTS, offsets
                            )
                        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as e:
                            error = f"cannot apply: {e}"
                    if error is not None:
                        await self._dead_letter([(record, error)])
                        await store.write_batch(
                            conn, RowChanges(), self.projection, topics.EVENTS, offsets
                        )
                self._advance(offsets)

    def _advance(self, offsets: dict[int, tuple[int | None, int]]) -> None:
        for partition, (_, nxt) in offsets.items():
            if partition in self.stored:
                self.stored[partition] = nxt

    async def _dead_letter(self, poison: list[tuple[Any, str]]) -> None:
        for record, error in poison:
            log.warning("dead-lettering %s[%s]@%s: %s", record.topic, record.partition,
                        record.offset, error)
            await self.dlq.send_and_wait(
                topics.DLQ, record.value, key=record.key, partition=record.partition,
                headers=dead_letter_headers(error, record.topic, record.partition, record.offset),
            )
