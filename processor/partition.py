"""The worker of one input partition: decides its commands in batches and commits each batch -
events (the credits they cause in other aggregates' partitions included), follow-up requests,
snapshots and the checkpoint of the consumed offset - in one Kafka transaction.

It owns the partition's transactional id: starting it (``init_transactions``) fences any older
owner. A batch is decided in memory (no awaits per record), handed to the producer as a few record
batches and committed; the in-memory state takes the batch only once the commit is done, so a
failed batch can simply be decided again.
"""

import asyncio
import itertools
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.producer import sender as aiokafka_sender

from common.failures import Backoff, transient_in_transaction
from common.kafka import KafkaTarget, client_options
from common.tracing import Batch, Consumer
from events import codec, topics
from events.codec import DecodeError, Envelope
from events.deadletter import dead_letter_headers
from processor import snapshots
from processor.chain import Chain
from processor.decide import consequences, decide, evolve, react
from processor.faults import Fault
from processor.limits import track
from processor.metrics import ProcessorMetrics
from processor.outbox import Outbox, Partitioner
from processor.sanctions import Sanctions
from processor.snapshots import EMPTY, Snapshot, restore
from processor.wellformed import envelope_problem

log = logging.getLogger("ledgerline.processor")

#: The producer's pause before retrying a request. A transaction begun right after the previous
#: commit may hear CONCURRENT_TRANSACTIONS until the broker has written that commit's markers (a
#: millisecond or two here); the default 100 ms pause would be most of a command's latency.
_RETRY_BACKOFF_MS = 5


def quick_transaction_restarts() -> None:
    """aiokafka answers CONCURRENT_TRANSACTIONS on a transaction's first AddPartitionsToTxn with
    a fixed 20 ms pause of its own (``BACKOFF_OVERRIDE``), whatever ``retry_backoff_ms`` says;
    a worker with commands waiting begins its next transaction right after a commit, so it
    would pay those 20 ms on most transactions under load. Called once, at start-up."""
    aiokafka_sender.BACKOFF_OVERRIDE = _RETRY_BACKOFF_MS / 1000


#: How long follow-ups that decide nothing may wait for a command to share a transaction with
#: (``PartitionWorker._hold_follow_ups``); also how far the checkpoint may trail them.
FOLLOW_UP_HOLD_SECONDS = 0.25
_DECIDE_NOTHING = frozenset({"ApplyCredit", "ApplySettlement", "ApplyBurn"})


class _Kind(msgspec.Struct):
    type: str = ""


_kind_decoder = msgspec.json.Decoder(_Kind)


def _decides_nothing(record: Any) -> bool:
    """Whether ``record`` is a follow-up whose events are already written (see
    ``decide.consequences``). Read for timing only: whatever it says, every record is decided
    in order; one that does not parse is not held."""
    try:
        return _kind_decoder.decode(record.value).type in _DECIDE_NOTHING
    except (msgspec.DecodeError, TypeError):
        return False


class Fenced(RuntimeError):
    """The broker fenced this partition's producer: a newer instance owns the partition, or the
    broker ended a transaction that outlived the transaction timeout. Either way nothing more may
    be written from the state this worker holds."""

    def __init__(self, partition: int) -> None:
        super().__init__(f"partition {partition} is fenced (another instance took it over, or "
                         "the broker ended its transaction)")


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


class PartitionWorker:
    def __init__(self, bootstrap: KafkaTarget, tp: TopicPartition, prefix: str, *,
                 max_records: int, fault: Fault | None = None,
                 on_commit: Callable[[TopicPartition, int], None] | None = None,
                 metrics: ProcessorMetrics | None = None, chain: Chain | None = None,
                 traced: Consumer | None = None, transaction_timeout_ms: int = 60_000) -> None:
        self.tp = tp
        self.traced = traced  # spans of its batches and commands (None: tracing is off)
        self.sanctions: Sanctions | None = None  # the sanctions list and KYC limits, if screened
        self.chain = chain  # the hash chain of the events this worker writes (processor.chain)
        self.bootstrap = bootstrap
        self.max_records = max_records
        self.fault = fault
        self.on_commit = on_commit
        self.metrics = metrics
        # Two transactional producers, taking turns: the broker completes a commit (writes its
        # markers) after it has answered it, and a producer's next transaction must wait for
        # that; the other producer can begin at once. Both are this partition's: starting them
        # fences both ids of any older owner. A batch still starts only after the previous one
        # committed, so decisions keep their order; so do the records in every partition, and
        # a reader (read_committed) sees a batch only once the one before it is complete.
        self.producers = [
            AIOKafkaProducer(
                **client_options(bootstrap),
                transactional_id=transactional_id,
                enable_idempotence=True,
                acks="all",
                linger_ms=0,
                max_batch_size=512 * 1024,
                retry_backoff_ms=_RETRY_BACKOFF_MS,
                transaction_timeout_ms=transaction_timeout_ms,
            )
            for transactional_id in (f"{prefix}-{tp.partition}", f"{prefix}-{tp.partition}-b")
        ]
        self.turn = 0
        self.states: dict[str, Snapshot] = {}
        self.next_offset = 0  # the first offset not decided yet
        self.fetched_to = 0  # the first offset not handed to this worker yet
        self.inbox: list[Any] = []
        self.wake = asyncio.Event()
        self.closing = False
        self.task: asyncio.Task[None] | None = None
        self.partitioner: Partitioner | None = None
        self.ids = Ids()

    async def start(self, committed: Any) -> None:
        """Fence older owners, then recover the state and, through ``committed`` (a coroutine
        function), the committed offset: nothing can move either once the fence is up."""
        for producer in self.producers:  # init_transactions: bumps the epoch, aborts theirs
            await producer.start()
        self.partitioner = Partitioner(sorted(await self.producers[0].partitions_for(topics.COMMANDS)))
        restored = await restore(self.bootstrap, self.tp.partition)
        self.states = dict(restored)
        if self.chain is not None:
            self.chain.restore(restored.reserved.get(self.chain.state_key))
        if restored.checkpoint is not None:
            self.next_offset = self.fetched_to = restored.checkpoint
        else:  # nothing decided on this partition yet (or snapshots from before checkpoints)
            self.next_offset = self.fetched_to = await committed(self.tp)
        log.info("partition %s: recovered %d aggregates, resuming at offset %d",
                 self.tp.partition, len(self.states), self.next_offset)

    def offer(self, records: list[Any]) -> None:
        """Queue fetched records; the worker's task decides them in batches."""
        fresh = [r for r in records if r.offset >= self.fetched_to]
        if fresh:
            self.inbox.extend(fresh)
            self.fetched_to = fresh[-1].offset + 1
            self.wake.set()

    async def run(self) -> None:
        while not self.closing:
            quiet = self.chain.quiet_for() if self.chain is not None else None
            if not await self._woken(quiet):  # idle with heads no checkpoint names yet: publish one
                assert self.chain is not None
                try:
                    await self.chain.checkpoint(self.producers[self.turn])
                except ProducerFenced as exc:
                    raise Fenced(self.tp.partition) from exc
                self.turn ^= 1
                continue
            self.wake.clear()
            await self._hold_follow_ups()
            while self.inbox and not self.closing:
                records, self.inbox = self.inbox[: self.max_records], self.inbox[self.max_records :]
                await self._with_retry(records)

    async def _woken(self, seconds: float | None) -> bool:
        """Wait until :meth:`offer` or :meth:`stop` wakes the worker, at most ``seconds`` (None:
        no limit); False if the time ran out. ``asyncio.timeout``, not ``wait_for``: on Python
        3.11 ``wait_for`` returns normally when it is cancelled just as the event is set, and a
        task that swallows its cancellation keeps a process from exiting."""
        try:
            async with asyncio.timeout(None if seconds is None else max(0.0, seconds)):
                await self.wake.wait()
        except TimeoutError:
            return False
        return True

    async def _hold_follow_ups(self) -> None:
        """Group commit for follow-ups that decide nothing: while everything queued is such a
        follow-up, wait up to ``FOLLOW_UP_HOLD_SECONDS`` for a command that decides something,
        and commit them with it.

        Nobody waits for these: their events were written, and became visible, with the payer's
        transaction; they only bring this partition's state up to date. A command of this
        aggregate's that comes later is behind them in the partition, so it is decided after
        them, in the same batch, whatever the hold; and until they are committed the checkpoint
        is before them, so a restart reads them again. At low rates they were half of the
        processor's transactions (a transfer's debit, then its payee's credit follow-up alone);
        any other command goes at once, as before. Measured by ``bench.txn_path`` (the whole
        processor, lone transfers 50 ms apart, beside the version without the hold on the same
        broker): 2.0 -> 1.22 transactions per transfer, 5,906-5,939 -> 4,871-4,934 Python calls.
        """
        deadline = time.monotonic() + FOLLOW_UP_HOLD_SECONDS
        held = 0  # the queued records known to be such follow-ups
        while not self.closing:
            while held < len(self.inbox) and _decides_nothing(self.inbox[held]):
                held += 1
            if not self.inbox or held < len(self.inbox):
                return
            self.wake.clear()
            if not await self._woken(deadline - time.monotonic()):
                return

    async def stop(self) -> None:
        """Finish the batch in flight, drop the queued records (the next owner resumes at the
        committed offset), and close the producers."""
        self.closing = True
        self.wake.set()
        if self.task is not None:
            await asyncio.wait([self.task])
        for producer in self.producers:
            await producer.stop()

    async def _with_retry(self, records: list[Any]) -> None:
        backoff = Backoff(first=0.1, cap=5.0)
        while True:
            try:
                if self.traced is None:
                    await self.process(records)
                else:
                    await self._process_traced(records)
                return
            except KafkaError as exc:
                # The transaction was aborted and the in-memory state did not take the batch:
                # deciding the same records again is safe, for as long as the broker is away.
                # Anything else (a fence, a producer in a state it cannot leave) ends this
                # worker: the processor lets go of its partitions and takes them again from
                # what Kafka holds (processor.worker).
                if not transient_in_transaction(exc):
                    raise
                log.warning("batch on partition %s failed (%r); retrying", self.tp.partition, exc)
                if self.metrics is not None:
                    self.metrics.retries.inc()
                await backoff.sleep()

    async def _process_traced(self, records: list[Any]) -> None:
        """:meth:`process` inside the batch's span (common.tracing), ended with its outcome."""
        assert self.traced is not None
        fresh = [r for r in records if r.offset >= self.next_offset]
        if not fresh:
            return
        batch = self.traced.batch("process", fresh)
        try:
            with batch.current():
                await self.process(fresh, batch)
        except BaseException as exc:
            batch.end(exc)
            raise
        batch.end()

    async def process(self, records: list[Any], batch: Batch | None = None) -> None:
        records = [r for r in records if r.offset >= self.next_offset]
        if not records:
            return
        producer = self.producers[self.turn]
        out = Outbox(producer, hold=topics.EVENTS if self.chain is not None else None)
        pending: dict[str, Snapshot] = {}
        outcomes = [self._one(record, pending, out, batch) for record in records]
        partition = self.tp.partition
        for key, snap in pending.items():
            out.add(topics.STATE, partition, key.encode(), snapshots.encode(snap))
        next_offset = records[-1].offset + 1
        out.add(topics.STATE, partition, snapshots.CHECKPOINT_KEY,
                snapshots.encode_checkpoint(next_offset))
        sealed = self.chain.seal(out, partition) if self.chain is not None else None
        started = time.monotonic()
        try:
            # The checkpoint record, not the group's offset, is what this transaction commits
            # the input position with: sending offsets to a transaction costs two more round
            # trips to the broker on every commit.
            async with producer.transaction():
                await out.flush()
                if self.fault is not None:
                    self.fault.decided(len(records))
        except ProducerFenced as exc:
            raise Fenced(partition) from exc
        self.states.update(pending)
        if self.chain is not None and sealed is not None:
            self.chain.committed(sealed)
        self.next_offset = next_offset
        self.turn ^= 1
        if self.on_commit is not None:
            self.on_commit(self.tp, next_offset)
        if self.metrics is not None:
            self._measured(records, outcomes, time.monotonic() - started)

    def _measured(self, records: list[Any], outcomes: list[str], seconds: float) -> None:
        assert self.metrics is not None
        m = self.metrics
        m.batch_size.observe(len(records))
        m.transaction_seconds.observe(seconds)
        for outcome, count in Counter(outcomes).items():
            m.commands.labels(outcome).inc(count)
        now = time.time()
        for record in records:
            m.decide_latency.observe(max(0.0, now - record.timestamp / 1000))

    def _one(self, record: Any, pending: dict[str, Snapshot], out: Outbox,
             batch: Batch | None = None) -> str:
        """Decide one record into ``pending`` and ``out``; returns what became of it. With
        ``batch`` (tracing on), what the decision writes carries its span's context."""
        try:
            env = codec.decode(record.value)
        except DecodeError as exc:
            return self._dead_letter(record, str(exc), out)
        assert self.partitioner is not None
        problem = envelope_problem(key=env.key, id=env.id, command_id=env.command_id,
                                   correlation_id=env.correlation_id, principal=env.principal)
        if problem is not None:  # every event repeats these: none could be stored
            return self._dead_letter(record, f"cannot decide {env.type}: {problem}", out)
        if self.partitioner.partition(env.key.encode()) != self.tp.partition:
            # Its state lives with another partition's owner; deciding it here would fork it.
            return self._dead_letter(record, f"key {env.key!r} does not belong to this partition", out)
        snap = pending.get(env.key) or self.states.get(env.key) or EMPTY
        if snap.seen(env.id):
            log.info("duplicate command %s on %s ignored", env.id, env.key)
            return "duplicate"
        traced = None if batch is None else batch.child(record, f"decide {env.type}")
        try:
            decided = (None if self.sanctions is None
                       else self.sanctions.screen(env.payload, snap.debits, env.occurred_at)) \
                or decide(snap.state, env.payload, env.key)
            state = snap.state
            # A follow-up that decides nothing (ApplyCredit) brings the events another
            # partition's transaction already wrote for this aggregate into its state.
            for event in (*consequences(env.payload), *decided):
                state = evolve(state, event)
            # Encoded before anything is added to the transaction: a record that cannot be
            # encoded leaves nothing of its decision behind.
            written = self._encode(env, decided)
        except Exception as exc:  # a command no decider can apply is poison, not a crash
            return self._dead_letter(record, f"cannot decide {env.type}: {exc!r}", out)
        pending[env.key] = snap.after(state, env.id, track(snap.debits, decided, env.occurred_at))
        for topic, partition, key, value in written:
            out.add(topic, partition, key, value, traced)
        return "decided"

    def _encode(self, cmd: Envelope, decided: list[Any]) -> list[tuple[str, int, bytes, bytes]]:
        """The records a decision writes: its events, and the follow-up requests they cause."""
        assert self.partitioner is not None
        key, now, next_id = cmd.key.encode(), datetime.now(UTC), self.ids.next
        written = []
        for event in decided:
            env = codec.envelope(
                event, key=cmd.key, command_id=cmd.command_id, principal=cmd.principal,
                correlation_id=cmd.correlation_id, id=next_id(), occurred_at=now,
            )
            written.append((topics.EVENTS, self.tp.partition, key, codec.encode(env)))
            for target, follow_up in react(event):
                request = codec.envelope(
                    follow_up, key=target, command_id=cmd.command_id, principal=cmd.principal,
                    correlation_id=cmd.correlation_id, id=next_id(), occurred_at=now,
                )
                target_key = target.encode()
                target_partition = self.partitioner.partition(target_key)
                written.append((topics.COMMANDS, target_partition, target_key, codec.encode(request)))
                # The target's events of a credit are written here, in this transaction, and
                # the request above brings the target's state up to date without deciding.
                for consequence in consequences(follow_up):
                    target_env = codec.envelope(
                        consequence, key=target, command_id=cmd.command_id,
                        principal=cmd.principal, correlation_id=cmd.correlation_id,
                        id=next_id(), occurred_at=now,
                    )
                    written.append((topics.EVENTS, target_partition, target_key,
                                    codec.encode(target_env)))
        return written

    def _dead_letter(self, record: Any, error: str, out: Outbox) -> str:
        log.warning("dead-lettering %s[%s]@%s: %s", record.topic, record.partition, record.offset, error)
        out.add(topics.DLQ, self.tp.partition, record.key, record.value,
                dead_letter_headers(error, record.topic, record.partition, record.offset))
        return "dead_letter"
