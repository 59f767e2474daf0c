"""The ledger processor: consumes ``ledger.commands``, decides, and writes events, follow-up
requests, snapshots and its consumed offsets in one Kafka transaction per batch.

One transactional producer per input partition (``transactional_id`` derived from the
partition), initialised on assignment: that fences any older instance still holding it, so a
paused "zombie" can no longer commit. Only then are the partition's state (from the compacted
snapshot topic) and its committed offset read, so neither can move afterwards.

A batch is decided in memory first (no awaits per record), written as a few Kafka record batches
and committed with its offsets; the in-memory state takes the batch only once that commit is done.
"""

import asyncio
import itertools
import logging
import os
import signal
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError, ProducerFenced

from command import snapshots
from command.decide import decide, evolve, react
from command.outbox import Outbox, Partitioner
from command.snapshots import EMPTY, Snapshot
from events import codec, topics
from events.codec import DecodeError, Envelope

log = logging.getLogger("ledgerline.processor")

_RETRY_FOR_SECONDS = 60.0


class Fenced(RuntimeError):
    """A newer processor instance owns this partition; this one must stop writing."""


def dead_letter_headers(error: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        ("error", error.encode()[:4000]),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
    ]


class Ids:
    """Unique ids in UUID (version 4) form, cheaply: 70 random bits drawn per worker start, then
    a 48-bit counter. Fresh random bits at each start keep them unique across restarts and
    instances; they name events and follow-up requests and are not meant to be unguessable."""

    def __init__(self) -> None:
        r = uuid.uuid4().hex  # version and variant digits already in place
        self.prefix = f"{r[:8]}-{r[8:12]}-{r[12:16]}-{r[16:20]}-"
        self.counter = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):012x}"


class Fault:
    """A fault-injection hook for the crash and zombie tests, off unless its variable is set.

    ``LEDGERLINE_FAULT_AFTER_RECORDS=N`` makes the process send itself ``LEDGERLINE_FAULT_SIGNAL``
    (``KILL``, the default, or ``STOP``) once, when it has decided N records, in the middle of
    that batch's transaction: its records are in the log, its offsets and commit are not.
    """

    def __init__(self, after_records: int, sig: signal.Signals) -> None:
        self.left = after_records
        self.signal = sig

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Fault | None":
        raw = env.get("LEDGERLINE_FAULT_AFTER_RECORDS")
        if not raw:
            return None
        return cls(int(raw), signal.Signals[f"SIG{env.get('LEDGERLINE_FAULT_SIGNAL', 'KILL')}"])

    def decided(self, records: int) -> None:
        fire = self.left > 0 and self.left <= records
        self.left -= records
        if fire:
            log.warning("fault injection: sending myself %s mid-transaction", self.signal.name)
            os.kill(os.getpid(), self.signal)


async def restore(bootstrap: str, partition: int) -> dict[str, Snapshot]:
    """Read one partition of the snapshot topic, start to end, into memory.

    Called after ``init_transactions`` for the partition's transactional id, so no transaction of
    an earlier owner is still open on it and the end offset is final.
    """
    tp = TopicPartition(topics.STATE, partition)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        # Snapshots are small and many: fetch them in large slices.
        max_partition_fetch_bytes=32 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    states: dict[str, Snapshot] = {}
    decode = snapshots.decode
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=100_000)
            for record in batch.get(tp, ()):
                if record.value is None:
                    states.pop(record.key.decode(), None)
                else:
                    states[record.key.decode()] = decode(record.value)
    finally:
        await consumer.stop()
    return states


class PartitionWorker:
    """Decides the commands of one input partition; owns that partition's transactional id."""

    def __init__(self, bootstrap: str, tp: TopicPartition, group: str, prefix: str,
                 fault: Fault | None = None) -> None:
        self.tp = tp
        self.group = group
        self.bootstrap = bootstrap
        self.fault = fault
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            transactional_id=f"{prefix}-{tp.partition}",
            enable_idempotence=True,
            acks="all",
            linger_ms=0,
            max_batch_size=512 * 1024,
        )
        self.states: dict[str, Snapshot] = {}
        self.next_offset = 0
        self.partitioner: Partitioner | None = None
        self.ids = Ids()

    async def start(self) -> None:
        await self.producer.start()  # init_transactions: bumps the epoch, fences older owners
        self.partitioner = Partitioner(sorted(await self.producer.partitions_for(topics.COMMANDS)))
        self.states = await restore(self.bootstrap, self.tp.partition)
        log.info("partition %s: recovered %d aggregates", self.tp.partition, len(self.states))

    async def stop(self) -> None:
        await self.producer.stop()

    async def process(self, records: Sequence[Any]) -> None:
        records = [r for r in records if r.offset >= self.next_offset]
        if not records:
            return
        out = Outbox(self.producer)
        pending: dict[str, Snapshot] = {}
        for record in records:
            self._one(record, pending, out)
        partition = self.tp.partition
        for key, snap in pending.items():
            out.add(topics.STATE, partition, key.encode(), snapshots.encode(snap))
        next_offset = records[-1].offset + 1
        try:
            async with self.producer.transaction():
                # Records first, then the offsets, so the offsets never lead what they cover.
                await out.flush()
                if self.fault is not None:
                    self.fault.decided(len(records))
                await self.producer.send_offsets_to_transaction({self.tp: next_offset}, self.group)
        except ProducerFenced as exc:
            raise Fenced(f"partition {partition} was taken over by another instance") from exc
        self.states.update(pending)
        self.next_offset = next_offset

    def _one(self, record: Any, pending: dict[str, Snapshot], out: Outbox) -> None:
        try:
            env = codec.decode(record.value)
        except DecodeError as exc:
            self._dead_letter(record, str(exc), out)
            return
        assert self.partitioner is not None
        if self.partitioner.partition(env.key.encode()) != self.tp.partition:
            # Its state lives with another partition's owner; deciding it here would fork it.
            self._dead_letter(record, f"key {env.key!r} does not belong to this partition", out)
            return
        snap = pending.get(env.key) or self.states.get(env.key) or EMPTY
        if snap.seen(env.id):
            log.info("duplicate command %s on %s ignored", env.id, env.key)
            return
        try:
            decided = decide(snap.state, env.payload)
            state = snap.state
            for event in decided:
                state = evolve(state, event)
        except Exception as exc:  # a command no decider can apply is poison, not a crash
            self._dead_letter(record, f"cannot decide {env.type}: {exc!r}", out)
            return
        pending[env.key] = snap.after(state, env.id)
        self._emit(env, decided, out)

    def _emit(self, cmd: Envelope, decided: list[Any], out: Outbox) -> None:
        assert self.partitioner is not None
        key, now, next_id = cmd.key.encode(), datetime.now(UTC), self.ids.next
        for event in decided:
            env = codec.envelope(
                event, key=cmd.key, command_id=cmd.command_id, principal=cmd.principal,
                correlation_id=cmd.correlation_id, id=next_id(), occurred_at=now,
            )
            out.add(topics.EVENTS, self.tp.partition, key, codec.encode(env))
            for target, follow_up in react(event):
                request = codec.envelope(
                    follow_up, key=target, command_id=cmd.command_id, principal=cmd.principal,
                    correlation_id=cmd.correlation_id, id=next_id(), occurred_at=now,
                )
                target_key = target.encode()
                out.add(topics.COMMANDS, self.partitioner.partition(target_key), target_key,
                        codec.encode(request))

    def _dead_letter(self, record: Any, error: str, out: Outbox) -> None:
        log.warning("dead-lettering %s[%s]@%s: %s", record.topic, record.partition, record.offset, error)
        out.add(topics.DLQ, self.tp.partition, record.key, record.value,
                dead_letter_headers(error, record.topic, record.partition, record.offset))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, processor: "Processor") -> None:
        self.processor = processor

    # aiokafka logs and swallows a listener's exception; a partition without its worker would
    # then stall unnoticed, so the failure is handed to the loop, which stops the process.
    async def on_partitions_revoked(self, revoked: Any) -> None:
        try:
            await self.processor.release(revoked)
        except Exception as exc:
            self.processor.failure = exc

    async def on_partitions_assigned(self, assigned: Any) -> None:
        try:
            await self.processor.take(assigned)
        except Exception as exc:
            self.processor.failure = exc


class Processor:
    def __init__(self, bootstrap: str, *, group: str = topics.PROCESSOR_GROUP,
                 max_records: int = 5000, session_timeout_ms: int = 10_000,
                 fault: Fault | None = None) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.max_records = max_records
        self.fault = fault
        self.workers: dict[TopicPartition, PartitionWorker] = {}
        # Rebalance callbacks run in aiokafka's coordinator task, concurrently with the loop: the
        # lock makes a revocation wait for the batch in flight, and the generation tells the loop
        # that records it fetched may predate the positions a new assignment sought to.
        self.lock = asyncio.Lock()
        self.generation = 0
        self.failure: Exception | None = None
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_poll_interval_ms=60_000,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=1_000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )

    async def take(self, assigned: Any) -> None:
        async with self.lock:
            self.generation += 1
            for tp in sorted(assigned):
                if tp in self.workers:
                    continue
                worker = PartitionWorker(self.bootstrap, tp, self.group, f"{self.group}-tx",
                                         self.fault)
                await worker.start()
                # aiokafka's fetcher may already have read the committed offset, before the
                # fencing above: read it again now, when no earlier owner can move it any more.
                committed = await self.consumer.committed(tp)
                if committed is None:
                    committed = (await self.consumer.beginning_offsets([tp]))[tp]
                worker.next_offset = committed
                self.consumer.seek(tp, committed)
                self.workers[tp] = worker
            log.info("assigned partitions %s", sorted(tp.partition for tp in self.workers))

    async def release(self, revoked: Any) -> None:
        async with self.lock:
            for tp in revoked:
                worker = self.workers.pop(tp, None)
                if worker is not None:
                    await worker.stop()

    async def run(self, stop: asyncio.Event) -> None:
        self.consumer.subscribe([topics.COMMANDS], listener=_Rebalance(self))
        await self.consumer.start()
        try:
            while not stop.is_set():
                generation = self.generation
                batches = await self.consumer.getmany(timeout_ms=200, max_records=self.max_records)
                if self.failure is not None:
                    raise RuntimeError("taking or releasing partitions failed") from self.failure
                if not batches:
                    continue
                async with self.lock:
                    if generation != self.generation:
                        self._rewind()
                        continue
                    work = [(self.workers[tp], records) for tp, records in batches.items()
                            if records and tp in self.workers]
                    results = await asyncio.gather(
                        *(self._process(worker, records) for worker, records in work),
                        return_exceptions=True,
                    )
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
        except Fenced as exc:
            log.error("stopping: %s; this instance must not write any more", exc)
            raise
        finally:
            await self.consumer.stop()
            for worker in list(self.workers.values()):
                await worker.stop()

    def _rewind(self) -> None:
        """Forget fetched records that may predate the current assignment: seek every partition
        back to the first offset its worker has not decided."""
        for tp, worker in self.workers.items():
            self.consumer.seek(tp, worker.next_offset)

    async def _process(self, worker: PartitionWorker, records: Sequence[Any]) -> None:
        delay, deadline = 0.1, time.monotonic() + _RETRY_FOR_SECONDS
        while True:
            try:
                await worker.process(records)
                return
            except KafkaError as exc:
                # The transaction was aborted and the in-memory state did not take the batch:
                # deciding the same records again is safe. Anything else, or a failure that
                # persists, stops the process: a restart rejoins the group from a clean slate.
                if not _transient(exc) or time.monotonic() > deadline:
                    raise
                log.warning("batch on partition %s failed (%r); retrying", worker.tp.partition, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


def _transient(exc: KafkaError) -> bool:
    return bool(getattr(exc, "retriable", False)) or isinstance(exc, KafkaTimeoutError)
