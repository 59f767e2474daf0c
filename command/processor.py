"""The ledger processor: consumes ``ledger.commands``, decides, and writes events, follow-up
requests, snapshots and its consumed offsets in one Kafka transaction per batch.

One transactional producer per input partition (``transactional_id`` derived from the
partition), initialised on assignment: that fences any older instance still holding it, so a
paused "zombie" can no longer commit. State is recovered from the compacted snapshot topic.
"""

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from command import snapshots
from command.decide import decide, evolve, react
from command.snapshots import EMPTY, Snapshot
from events import codec, topics
from events.codec import DecodeError, Envelope

log = logging.getLogger("ledgerline.processor")

_FOLLOW_UP_NS = uuid.UUID("6b1f0c1e-6f1d-4d7c-9d52-3d9a1b7f0a11")


class Fenced(RuntimeError):
    """A newer processor instance owns this partition; this one must stop writing."""


def dead_letter_headers(error: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        ("error", error.encode()[:4000]),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
    ]


async def restore(bootstrap: str, partition: int) -> dict[str, Snapshot]:
    """Read one partition of the snapshot topic, start to end, into memory."""
    tp = TopicPartition(topics.STATE, partition)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    states: dict[str, Snapshot] = {}
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
            for record in batch.get(tp, []):
                key = record.key.decode()
                if record.value is None:
                    states.pop(key, None)
                else:
                    states[key] = snapshots.decode(record.value)
    finally:
        await consumer.stop()
    return states


class PartitionWorker:
    """Decides the commands of one input partition; owns that partition's transactional id."""

    def __init__(self, bootstrap: str, tp: TopicPartition, group: str, prefix: str) -> None:
        self.tp = tp
        self.group = group
        self.bootstrap = bootstrap
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            transactional_id=f"{prefix}-{tp.partition}",
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
        )
        self.states: dict[str, Snapshot] = {}

    async def start(self) -> None:
        await self.producer.start()  # init_transactions: bumps the epoch, fences older owners
        self.states = await restore(self.bootstrap, self.tp.partition)
        log.info("partition %s: recovered %d aggregates", self.tp.partition, len(self.states))

    async def stop(self) -> None:
        await self.producer.stop()

    async def process(self, records: Sequence[Any]) -> None:
        pending: dict[str, Snapshot] = {}
        sends: list[asyncio.Future[Any]] = []
        try:
            async with self.producer.transaction():
                for record in records:
                    sends.extend(await self._one(record, pending))
                for key, snap in pending.items():
                    sends.append(await self.producer.send(
                        topics.STATE, snapshots.encode(snap), key=key.encode(),
                        partition=self.tp.partition,
                    ))
                # Records first, then the offsets, so the offsets never lead what they cover.
                await asyncio.gather(*sends)
                await self.producer.send_offsets_to_transaction(
                    {self.tp: records[-1].offset + 1}, self.group
                )
        except ProducerFenced as exc:
            raise Fenced(f"partition {self.tp.partition} was taken over") from exc
        self.states.update(pending)

    async def _one(self, record: Any, pending: dict[str, Snapshot]) -> list[asyncio.Future[Any]]:
        try:
            env = codec.decode(record.value)
        except DecodeError as exc:
            return [await self._dead_letter(record, str(exc))]
        snap = pending.get(env.key) or self.states.get(env.key) or EMPTY
        if snap.seen(env.id):
            log.info("duplicate command %s on %s ignored", env.id, env.key)
            return []
        try:
            decided = decide(snap.state, env.payload)
            state = snap.state
            for event in decided:
                state = evolve(state, event)
        except Exception as exc:  # a command no decider can apply is poison, not a crash
            return [await self._dead_letter(record, f"cannot decide {env.type}: {exc!r}")]
        pending[env.key] = snap.after(state, env.id)
        return await self._emit(env, decided)

    async def _emit(self, cmd: Envelope, decided: list[Any]) -> list[asyncio.Future[Any]]:
        sends = []
        for event in decided:
            out = codec.envelope(
                event, key=cmd.key, command_id=cmd.command_id, principal=cmd.principal,
                correlation_id=cmd.correlation_id,
            )
            sends.append(await self.producer.send(
                topics.EVENTS, codec.encode(out), key=cmd.key.encode(), partition=self.tp.partition,
            ))
            for n, (key, follow_up) in enumerate(react(event)):
                request = codec.envelope(
                    follow_up, key=key, command_id=cmd.command_id, principal=cmd.principal,
                    correlation_id=cmd.correlation_id,
                    id=str(uuid.uuid5(_FOLLOW_UP_NS, f"{out.id}/{n}")),
                )
                sends.append(await self.producer.send(
                    topics.COMMANDS, codec.encode(request), key=key.encode()
                ))
        return sends

    async def _dead_letter(self, record: Any, error: str) -> asyncio.Future[Any]:
        log.warning("dead-lettering %s[%s]@%s: %s", record.topic, record.partition, record.offset, error)
        return await self.producer.send(
            topics.DLQ, record.value, key=record.key, partition=self.tp.partition,
            headers=dead_letter_headers(error, record.topic, record.partition, record.offset),
        )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, processor: "Processor") -> None:
        self.processor = processor

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.processor.release(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.processor.take(assigned)


class Processor:
    def __init__(self, bootstrap: str, *, group: str = topics.PROCESSOR_GROUP,
                 max_records: int = 2000) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.max_records = max_records
        self.workers: dict[TopicPartition, PartitionWorker] = {}
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_poll_interval_ms=60_000,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )

    async def take(self, assigned: Any) -> None:
        for tp in sorted(assigned):
            if tp in self.workers:
                continue
            worker = PartitionWorker(self.bootstrap, tp, self.group, f"{self.group}-tx")
            await worker.start()
            self.workers[tp] = worker
            # The committed offset is read only now, after the fencing: nothing moves it since.
            committed = await self.consumer.committed(tp)
            if committed is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)
        log.info("assigned partitions %s", sorted(tp.partition for tp in self.workers))

    async def release(self, revoked: Any) -> None:
        for tp in revoked:
            worker = self.workers.pop(tp, None)
            if worker is not None:
                await worker.stop()

    async def run(self, stop: asyncio.Event) -> None:
        self.consumer.subscribe([topics.COMMANDS], listener=_Rebalance(self))
        await self.consumer.start()
        try:
            while not stop.is_set():
                batches = await self.consumer.getmany(timeout_ms=200, max_records=self.max_records)
                for tp, records in batches.items():
                    worker = self.workers.get(tp)
                    if worker is None or not records:
                        continue
                    await self._process(worker, records)
        finally:
            await self.consumer.stop()
            for worker in list(self.workers.values()):
                await worker.stop()

    async def _process(self, worker: PartitionWorker, records: Sequence[Any]) -> None:
        delay = 0.1
        while True:
            try:
                await worker.process(records)
                return
            except Fenced:
                raise
            except KafkaError as exc:
                # Transient: the transaction was aborted; nothing was committed past. Retry the
                # same records from the consumer's point of view by seeking back.
                log.warning("batch on partition %s failed (%r); retrying", worker.tp.partition, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
