"""The ledger processor: consumes ``ledger.commands`` and hands each partition's records to that
partition's worker (:mod:`processor.partition`), which decides them and commits events, follow-up
requests, snapshots and a checkpoint of the input offset in one Kafka transaction per batch.

The group's committed offsets follow the checkpoints in the background (for lag tooling, and
where a partition without a checkpoint starts), never on a transaction's path.

Workers run as tasks of their own, so one partition decides while another waits for its commit,
and a worker's next batch is whatever arrived meanwhile. A partition whose worker falls behind
is paused, not buffered without bound.

Rebalances: aiokafka calls the listener below from its coordinator task, after it has marked the
new assignment active and started reading committed offsets for it, so it may already be fetching
from an offset read *before* the new owner's fence went up. :meth:`Processor.take` therefore
fences first, reads the committed offset again and seeks to it; the loop drops any fetch that
straddles a rebalance (``generation``) and seeks back to what each worker has been handed.
A revocation waits for the worker's batch in flight to commit.

Fenced, or a producer that cannot go on: the processor lets go of every partition, drops the state
it held, closes its consumer and joins the group again with a new one, as a restarted process
would; each partition it is then given is fenced and its state read back from Kafka before a
record is decided. Nothing is committed from the state held before, which may be stale. It is the
same whether another instance took the partition over or the broker ended a transaction that
outlived the transaction timeout (an outage longer than that): the broker's answer is the same
fence, and the rejoin is right for both.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from common.failures import Backoff
from common.kafka import KafkaTarget, client_options
from common.ops import Health
from common.tracing import Tracing
from events import topics
from processor.chain import Chain
from processor.faults import Fault
from processor.metrics import ProcessorMetrics
from processor.partition import Fenced, PartitionWorker, quick_transaction_restarts
from processor.sanctions import Sanctions

__all__ = ["Fenced", "Processor"]

log = logging.getLogger("ledgerline.processor")

#: At most this often, the group's offsets are moved to what the workers have committed.
OFFSETS_EVERY_SECONDS = 0.2
#: A membership that lasted this long before it had to rejoin starts the backoff afresh.
STABLE_SECONDS = 30.0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka has no type hints
    # aiokafka logs and swallows a listener's exception; a partition without its worker would
    # then stall unnoticed, so the failure is handed to the loop, which stops the process.
    def __init__(self, processor: "Processor") -> None:
        self.processor = processor

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
    def __init__(self, bootstrap: KafkaTarget, *, group: str = topics.PROCESSOR_GROUP,
                 max_records: int = 10_000, session_timeout_ms: int = 10_000,
                 fault: Fault | None = None, metrics: ProcessorMetrics | None = None,
                 health: Health | None = None, sanctions: Sanctions | None = None,
                 chains: Callable[[str], Chain] = Chain, tracing: Tracing | None = None,
                 transaction_timeout_ms: int = 60_000, group_instance_id: str | None = None) -> None:
        quick_transaction_restarts()
        self.traced = None if tracing is None else tracing.consumer(topics.COMMANDS, group)
        self.sanctions = sanctions
        self.chains = chains  # a writer's name -> its hash chain (processor.chain)
        self.bootstrap = bootstrap
        self.metrics = metrics
        self.health = health or Health()
        self.group = group
        self.max_records = max_records
        self.fault = fault
        self.workers: dict[TopicPartition, PartitionWorker] = {}
        self.paused: set[TopicPartition] = set()
        self.generation = 0
        self.failure: BaseException | None = None
        self.leaving = False  # this membership is ending: no partition may be taken any more
        self.decided: dict[TopicPartition, int] = {}  # committed by a worker, not yet by the group
        self.decided_more = asyncio.Event()
        self.session_timeout_ms = session_timeout_ms
        self.transaction_timeout_ms = transaction_timeout_ms
        self.group_instance_id = group_instance_id
        self.consumer = self._consumer()

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **client_options(self.bootstrap),
            group_id=self.group,
            # Static membership: a restarted instance takes its partitions back at once rather
            # than after the dead member's session (see common.settings, docs/faults.md).
            group_instance_id=self.group_instance_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_poll_interval_ms=60_000,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=1_000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )

    async def take(self, assigned: Any) -> None:
        self.generation += 1
        self.paused.clear()
        if self.failure is not None or self.leaving:
            return  # stopping: a fenced instance must not take partitions (and fence others)
        fresh = [self._worker(tp) for tp in sorted(assigned) if tp not in self.workers]
        # The partitions are fenced and recovered side by side: each waits mostly on the broker
        # (ending the old owner's transactions, reading its snapshots), and one after another a
        # restarted processor took ~1.5 s a partition before deciding anything.
        try:
            started = await asyncio.gather(*(w.start(self._committed) for w in fresh),
                                           return_exceptions=True)
        except asyncio.CancelledError:  # the consumer is stopping (its rebalance is cancelled)
            await _close(fresh)
            raise
        failed = [r for r in started if isinstance(r, BaseException)]
        if self.fault is not None and not failed:
            await self.fault.taking()
        if failed or self.leaving:
            # None of them decides anything: close what each opened. Leaving: the stop signal
            # came while they started, and the member has already stopped the workers it had;
            # these would run on, deciding, after the process meant to exit.
            await _close(fresh)
            if failed:
                raise failed[0]
            return
        for worker in fresh:
            tp = worker.tp
            self.consumer.seek(tp, worker.next_offset)
            worker.task = asyncio.create_task(worker.run(), name=f"partition-{tp.partition}")
            worker.task.add_done_callback(self._worker_done)
            self.workers[tp] = worker
        log.info("assigned partitions %s", sorted(tp.partition for tp in self.workers))
        self._owned()

    def _worker(self, tp: TopicPartition) -> PartitionWorker:
        worker = PartitionWorker(self.bootstrap, tp, f"{self.group}-tx",
                                 max_records=self.max_records, fault=self.fault,
                                 on_commit=self._decided, metrics=self.metrics,
                                 chain=self.chains(f"{self.group}-tx-{tp.partition}"),
                                 traced=self.traced,
                                 transaction_timeout_ms=self.transaction_timeout_ms)
        worker.sanctions = self.sanctions
        return worker

    async def release(self, revoked: Any) -> None:
        self.generation += 1
        self.paused.clear()
        for tp in revoked:
            worker = self.workers.pop(tp, None)
            if worker is not None:
                await worker.stop()
        self._owned()

    def _owned(self) -> None:
        partitions = sorted(tp.partition for tp in self.workers)
        self.health.turned(partitions)
        if self.metrics is not None:
            self.metrics.partitions.set(len(partitions))

    async def _committed(self, tp: TopicPartition) -> int:
        committed = await self.consumer.committed(tp)  # a request to the broker, never a cache
        if committed is None:
            committed = (await self.consumer.beginning_offsets([tp]))[tp]
        return int(committed)

    def _decided(self, tp: TopicPartition, next_offset: int) -> None:
        self.decided[tp] = next_offset
        self.decided_more.set()

    async def _commit_offsets(self) -> None:
        """Move the group's offsets up to the workers' checkpoints, a request at a time. Only a
        convenience (lag tooling, a partition's start before its first checkpoint): a refusal,
        e.g. during a rebalance, is left for the next round."""
        while True:
            await self.decided_more.wait()
            self.decided_more.clear()
            offsets = {tp: o for tp, o in self.decided.items() if tp in self.workers}
            self.decided.clear()
            if offsets:
                try:
                    await self.consumer.commit(offsets)
                except KafkaError as exc:
                    log.debug("group offsets not moved this time: %r", exc)
            await asyncio.sleep(OFFSETS_EVERY_SECONDS)

    def _worker_done(self, task: "asyncio.Task[None]") -> None:
        if not task.cancelled() and task.exception() is not None and self.failure is None:
            self.failure = task.exception()

    async def run(self, stop: asyncio.Event) -> None:
        """Decide until ``stop``; fenced (or a producer that cannot go on), join again afresh."""
        backoff = Backoff(first=0.5, cap=10.0)
        while True:
            joined = time.monotonic()
            try:
                await self._member(stop)
                return
            except (Fenced, KafkaError) as exc:
                if stop.is_set():
                    raise
                if time.monotonic() - joined > STABLE_SECONDS:
                    backoff.reset()
                log.warning("%s; this instance must not write from the state it held: it lets go "
                            "of every partition and joins the group again", exc)
                self.failure = None
                self.generation += 1
                self.paused.clear()
                self.decided.clear()
                self.consumer = self._consumer()
                await backoff.sleep()

    async def _member(self, stop: asyncio.Event) -> None:
        """One membership of the group, with one consumer, until ``stop`` or a failure."""
        self.leaving = False
        self.consumer.subscribe([topics.COMMANDS], listener=_Rebalance(self))
        await self.consumer.start()
        reporter = asyncio.create_task(self._commit_offsets(), name="group-offsets")
        try:
            while not stop.is_set():
                if self.failure is not None:
                    raise self.failure
                generation = self.generation
                batches = await self.consumer.getmany(timeout_ms=100, max_records=self.max_records)
                if generation != self.generation:
                    self._rewind()
                    continue
                for tp, records in batches.items():
                    worker = self.workers.get(tp)
                    if worker is not None and records:
                        worker.offer(records)
                self._pace()
                self.health.turned()
        finally:
            self.leaving = True
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            # Workers first: their batches in flight commit while this instance still owns them.
            for worker in list(self.workers.values()):
                await worker.stop()
            self.workers.clear()
            self._owned()
            await self.consumer.stop()

    def _rewind(self) -> None:
        """Drop records fetched across a rebalance: they may predate the positions the new
        assignment sought to. Seek every partition back to what its worker has been handed."""
        for tp, worker in self.workers.items():
            self.consumer.seek(tp, worker.fetched_to)

    def _pace(self) -> None:
        """Pause a partition whose worker has two batches queued; resume it below one."""
        for tp, worker in self.workers.items():
            if len(worker.inbox) >= 2 * self.max_records and tp not in self.paused:
                self.consumer.pause(tp)
                self.paused.add(tp)
            elif len(worker.inbox) < self.max_records and tp in self.paused:
                self.consumer.resume(tp)
                self.paused.discard(tp)


async def _close(workers: list[PartitionWorker]) -> None:
    """Stop workers that never ran, closing whatever each opened."""
    for worker in workers:
        with contextlib.suppress(Exception):
            await worker.stop()
