"""The projector worker: Kafka ``ledger.events`` (read_committed) -> Postgres views, in batches.

Each batch is folded into row changes and written with the partition offsets in one Postgres
transaction; the offsets are moved first and fenced (the stored offset must be the one this
worker expects), so a batch is applied exactly once even with several instances, a rebalance or
a stale instance. On assignment the consumer seeks to the offsets stored there.

Records that cannot be decoded or applied go to the dead-letter topic with their error and
position *before* the offsets move past them, and the worker goes on; each is also a row of
``dead_letters``, written with the offsets, so the count is exact and outlives the process. A
batch the database refuses as a whole (a constraint) is split in halves until the refused record
is alone. Transient failures (database or broker away, deadlock) are retried with backoff,
never committed past.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from common import failures
from common.failures import Backoff
from common.kafka import KafkaTarget, client_options
from common.keyring import Erased, KeyStore, is_sealed, unseal
from common.ops import Health
from common.tracing import Consumer, Tracing
from events import codec, topics
from events.codec import Envelope
from events.deadletter import dead_letter_headers
from events.messages import TransferInitiated
from events.readmodel import MEMO_ERASED, PROJECTION
from projector import chain, dlq, store
from projector.fold import Position, Row, RowChanges, apply
from projector.lag import Lag
from projector.metrics import ProjectorMetrics

log = logging.getLogger("ledgerline.projector")

#: The data itself refused: by the database, or a balance the batch would take below zero.
_REFUSED: tuple[type[BaseException], ...] = (*failures.REFUSED, store.NegativeBalance)

#: Session settings of every connection that writes the views. Asynchronous commit is safe here:
#: the offsets are in the same transaction, so a commit lost in a database crash takes its offsets
#: with it and the records are simply applied again.
SESSION = {"application_name": "ledgerline-projector", "synchronous_commit": "off"}

#: Batches up to this many records are folded on the event loop, larger ones in a thread (see
#: ``Projector._step``). Folding one costs tens of microseconds; the thread hop about as much as
#: a dozen, and two wake-ups of the loop.
INLINE_RECORDS = 32


# Why a record was dead-lettered: the ``cause`` of its ``dead_letters`` row and the ``reason``
# label of the dead-letter counter.
UNDECODABLE, UNAPPLIABLE, REFUSED = "undecodable", "unappliable", "refused_by_database"


@dataclass(slots=True)
class Item:
    """One record of a batch on its way to the views."""

    record: Any
    position: Position
    env: Envelope | None = None
    error: str | None = None
    cause: str | None = None  # set with error
    redriven: bool = False
    skip: bool = False  # a re-driven event the views already hold
    memo: str | None = None  # a sealed memo in clear (or MEMO_ERASED)

    def fail(self, cause: str, error: str) -> None:
        self.cause, self.error = cause, error


def _storable(text: str, limit: int = 2000) -> str:
    """Text PostgreSQL takes whatever it came from: no NUL, no unpaired surrogate."""
    return text[:limit].replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()


def _dead_letter_row(item: Item) -> Row:
    r = item.record
    return {
        "topic": item.position.topic, "partition": item.position.partition,
        "offset": item.position.offset, "cause": item.cause or UNAPPLIABLE,
        "type": None if item.env is None else item.env.type,
        "key": None if r.key is None else _storable(r.key.decode(errors="replace"), 500),
        "error": _storable(item.error or ""),
        "appended_at": datetime.fromtimestamp(r.timestamp / 1000, UTC),
    }


def _dead_letters(changes: RowChanges, items: Sequence[Item]) -> RowChanges:
    """``changes`` with the batch's dead letters, and the earlier letters it resolves: a
    re-driven record applied (or found applied) at its original position. A position that
    appears twice (a record and its re-driven copy) ends as the later of the two left it."""
    rows: dict[Position, Row] = {}
    resolved: dict[Position, None] = {}
    for i in items:
        if i.error is not None:
            rows[i.position] = _dead_letter_row(i)
            resolved.pop(i.position, None)
        elif i.redriven:
            resolved[i.position] = None
            rows.pop(i.position, None)
    changes.dead_letters = list(rows.values())
    changes.resolved = list(resolved)
    return changes


def _item(record: Any, keys: KeyStore | None = None) -> Item:
    original = dlq.original_position(record.headers) if record.headers else None
    item = Item(record, original or Position(record.topic, record.partition, record.offset),
                redriven=original is not None)
    try:
        item.env = codec.decode(record.value)
    except Exception as exc:  # poison, whatever the reason: it must not stop the worker
        item.fail(UNDECODABLE, str(exc))
        return item
    e = item.env.payload
    if keys is not None and isinstance(e, TransferInitiated) and e.memo and is_sealed(e.memo):
        try:
            item.memo = unseal(keys, e.source, e.memo)
        except Erased:
            item.memo = MEMO_ERASED
        except Exception as exc:  # a memo its key cannot open: poison, not a reason to stop
            item.fail(UNAPPLIABLE, f"cannot open the memo of {item.env.type}: {exc!r}")
    return item


def _fold(items: Sequence[Item]) -> RowChanges:
    """Fold the applicable items; an item that raises is marked and the fold starts again
    without it, so nothing it half-wrote survives."""
    while True:
        changes = RowChanges()
        for item in items:
            if item.error is not None or item.skip or item.env is None:
                continue
            try:
                apply(changes, item.env, item.position, memo=item.memo)
                changes.events[-1].update(chain.columns(item.record.headers))
            except Exception as exc:
                item.fail(UNAPPLIABLE, f"cannot apply {item.env.type}: {exc}")
                break
        else:
            return changes


@dataclass(slots=True)
class Prepared:
    """A batch decoded and folded, waiting for its turn to be written."""

    items: list[Item]
    changes: RowChanges


class Projection:
    """Applies batches of ``ledger.events`` records to the views, exactly once per record.

    ``stored`` holds, per owned partition, the offset this instance expects to find in
    ``projection_offsets`` (None: no row yet); only owned partitions are applied.
    """

    def __init__(self, pool: asyncpg.Pool, dead_letters: AIOKafkaProducer, *,
                 name: str = PROJECTION, swap_lock: bool = True,
                 already_dead: set[tuple[str, int, int]] | None = None,
                 metrics: ProjectorMetrics | None = None,
                 on_dead_letters: Callable[[int], None] | None = None,
                 keys: KeyStore | None = None, traced: Consumer | None = None) -> None:
        self.pool = pool
        self.traced = traced  # spans of its commits (None: tracing is off)
        self.keys = keys
        self.dead_letters = dead_letters
        self.name = name
        self.swap_lock = swap_lock
        self.metrics = metrics
        # Positions already in the dead-letter topic (sent by this instance, or, for a rebuild,
        # by the live projector): never sent twice.
        self.already_dead = already_dead if already_dead is not None else set()
        self.stored: dict[int, int | None] = {}
        # Told the number of rows in dead_letters at start and whenever a batch changes it.
        self.on_dead_letters = on_dead_letters

    async def load(self, partitions: Sequence[int]) -> dict[int, int | None]:
        """The stored offsets of ``partitions``; waits out a database that is away (a partition
        left without its offsets would be skipped, not applied)."""
        backoff = Backoff(first=0.1, cap=2.0)
        while True:
            try:
                async with self.pool.acquire() as conn:
                    offsets = await store.load_offsets(conn, self.name, topics.EVENTS)
                    if self.on_dead_letters is not None:
                        self.on_dead_letters(await store.dead_letter_count(conn))
                break
            except failures.TRANSIENT as exc:
                delay = backoff.next()
                log.warning("cannot read the stored offsets (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
        for p in partitions:
            self.stored[p] = offsets.get(p)
        return {p: self.stored[p] for p in partitions}

    def forget(self, partition: int) -> None:
        self.stored.pop(partition, None)

    def prepare(self, batches: Mapping[int, Sequence[Any]]) -> "Prepared | None":
        """Decode and fold records (partition -> records in offset order): CPU only, so it can
        run while the previous batch is being written. Records before a partition's stored
        offset (stale prefetch after a seek) and records of partitions not owned are dropped."""
        fresh = self._fresh(batches)
        if not fresh:
            return None
        items = [_item(r, self.keys) for p in sorted(fresh) for r in fresh[p]]
        return Prepared(items, _fold(items))

    async def commit(self, prepared: "Prepared | None") -> None:
        """Write a prepared batch with its offsets; retries transient failures.

        Raises :class:`store.OffsetConflict` when another instance moved a partition on.
        """
        if prepared is None:
            return
        if self.traced is None:
            await self._commit(prepared)
            return
        # The commit's span, and in each trace its events carry a span of their part in it.
        batch = self.traced.batch("commit", [i.record for i in prepared.items])
        for item in prepared.items:
            batch.child(item.record, f"project {topics.EVENTS}")
        try:
            with batch.current():
                await self._commit(prepared)
        except BaseException as exc:
            batch.end(exc)
            raise
        batch.end()

    async def _commit(self, prepared: "Prepared") -> None:
        backoff = failures.Backoff()
        changes: RowChanges | None = prepared.changes
        while True:
            # Recomputed on every attempt: part of a split batch may have committed already.
            items = [i for i in prepared.items if self._owned(i)]
            if not items:
                return
            if len(items) != len(prepared.items) or any(i.redriven for i in items):
                changes = None
            try:
                await self._skip_applied_redrives(items)
                await self._write(items, changes)
                return
            except failures.TRANSIENT as exc:
                delay = backoff.next()
                log.warning("transient failure (%r); retrying the batch in %.1fs", exc, delay)
                if self.metrics is not None:
                    self.metrics.retries.labels(self.name).inc()
                await asyncio.sleep(delay)
                changes = None

    async def apply(self, batches: Mapping[int, Sequence[Any]]) -> int:
        """Prepare and commit in one go; returns how many records were new."""
        prepared = self.prepare(batches)
        await self.commit(prepared)
        return 0 if prepared is None else len(prepared.items)

    def _owned(self, item: Item) -> bool:
        p = item.record.partition
        return p in self.stored and item.record.offset >= (self.stored[p] or 0)

    def _fresh(self, batches: Mapping[int, Sequence[Any]]) -> dict[int, list[Any]]:
        fresh: dict[int, list[Any]] = {}
        for p, records in batches.items():
            if p in self.stored:
                start = self.stored[p] or 0
                kept = [r for r in records if r.offset >= start]
                if kept:
                    fresh[p] = kept
        return fresh

    async def _skip_applied_redrives(self, items: list[Item]) -> None:
        """A re-driven copy of an event the views already hold (applied from its original
        position, e.g. by a rebuild after the fix) is skipped: an event applies once."""
        ids = [i.env.id for i in items if i.redriven and i.env is not None]
        if not ids:
            return
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT event_id FROM events WHERE event_id = ANY($1::text[])", ids)
        seen = {r[0] for r in rows}
        for item in items:
            if item.env is None:
                continue
            if item.redriven and item.env.id in seen:
                item.skip = True
            seen.add(item.env.id)

    async def _write(self, items: list[Item], changes: RowChanges | None = None) -> None:
        if changes is None:
            changes = _fold(items)
        changes = _dead_letters(changes, items)
        await self._dead_letter([i for i in items if i.error is not None])
        offsets = self._offsets(items)
        started = time.monotonic()
        try:
            async with self.pool.acquire() as conn:
                await store.write_batch(conn, changes, self.name, topics.EVENTS, offsets,
                                        swap_lock=self.swap_lock)
                if (changes.dead_letters or changes.resolved) and self.on_dead_letters is not None:
                    self.on_dead_letters(await store.dead_letter_count(conn))
        except _REFUSED as exc:
            if len(items) == 1 and items[0].error is None:
                items[0].fail(REFUSED, f"cannot apply: {exc}")
                await self._write(items)
                return
            if len(items) == 1:  # even its dead-letter row is refused: a bug, not poison
                raise
            log.warning("the database refused a batch of %d (%r); splitting it", len(items), exc)
            half = len(items) // 2
            await self._write(items[:half])
            await self._write(items[half:])
            return
        self._advance(offsets)
        if self.metrics is not None:
            self.metrics.batch_seconds.labels(self.name).observe(time.monotonic() - started)
            self.metrics.batch_size.labels(self.name).observe(len(items))
            self.metrics.events.labels(self.name).inc(len(items))

    def _offsets(self, items: list[Item]) -> dict[int, tuple[int | None, int]]:
        last: dict[int, int] = {}
        for item in items:
            last[item.record.partition] = item.record.offset
        return {p: (self.stored.get(p), offset + 1) for p, offset in last.items()}

    def _advance(self, offsets: dict[int, tuple[int | None, int]]) -> None:
        for partition, (_, nxt) in offsets.items():
            if partition in self.stored:
                self.stored[partition] = nxt

    async def _dead_letter(self, poison: list[Item]) -> None:
        sends = []
        for item in poison:
            r = item.record
            where = (r.topic, r.partition, r.offset)
            if where in self.already_dead:
                continue
            log.warning("dead-lettering %s[%s]@%s: %s", *where, item.error)
            headers = dead_letter_headers(item.error or "", *where)
            if item.redriven:
                headers.append(dlq.original_header(item.position))
            headers += dlq.chain_headers(r.headers)
            sends.append((where, await self.dead_letters.send(
                topics.DLQ, r.value, key=r.key, partition=r.partition, headers=headers,
            )))
        for where, sent in sends:
            await sent
            self.already_dead.add(where)
            if self.metrics is not None:
                self.metrics.dead_letters.labels(self.name, where[0], item.cause or UNAPPLIABLE).inc()


class _Seek(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka has no type hints
    def __init__(self, worker: "Projector") -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self.worker.inflight is not None:  # let the batch being written finish first
            await asyncio.wait({self.worker.inflight})
        for tp in revoked:
            self.worker.projection.forget(tp.partition)
            self.worker.lag.revoked(tp.partition)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.worker.seek_to_stored(assigned)


class Projector:
    """The live projector: one member of the consumer group that shares ``ledger.events``.

    One batch is written while the next is fetched and folded (in a thread, so the event loop
    keeps feeding the database its statements), so Python's work and the database's overlap; a
    batch is committed only after the one before it.
    """

    def __init__(self, bootstrap: KafkaTarget, pool: asyncpg.Pool, *, group: str = topics.PROJECTOR_GROUP,
                 projection: str = PROJECTION, max_records: int = 20_000,
                 metrics: ProjectorMetrics | None = None, health: Health | None = None,
                 keys: KeyStore | None = None, tracing: Tracing | None = None,
                 group_instance_id: str | None = None) -> None:
        self.pool = pool
        self.max_records = max_records
        self.health = health or Health()
        self.consumer = AIOKafkaConsumer(
            **client_options(bootstrap),
            group_id=group,
            group_instance_id=group_instance_id,  # static membership (common.settings)
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            # A dead member's partitions move after 6 s (the broker's minimum) rather than 10 s.
            session_timeout_ms=6_000,
            heartbeat_interval_ms=1_000,
        )
        self.dlq = AIOKafkaProducer(**client_options(bootstrap), acks="all", enable_idempotence=True)
        self.metrics = metrics
        traced = None if tracing is None else tracing.consumer(topics.EVENTS, group)
        self.projection = Projection(pool, self.dlq, name=projection, metrics=metrics, keys=keys,
                                     on_dead_letters=self._dead_letters_stored, traced=traced)
        self.projection_name = projection
        self.lag = Lag(projection, topics.EVENTS, metrics)
        self.inflight: asyncio.Task[None] | None = None
        self._inflight_note: tuple[dict[int, list[Any]], dict[int, int]] = ({}, {})

    def _dead_letters_stored(self, count: int) -> None:
        # Shown, not acted on: a degraded projector still applies every record it can, and
        # restarting it would not bring the dead letters back.
        self.health.dead_letters = count
        if self.metrics is not None:
            self.metrics.dead_letters_stored.labels(self.projection_name).set(count)

    @property
    def stored(self) -> dict[int, int | None]:
        return self.projection.stored

    async def seek_to_stored(self, assigned: Any) -> None:
        offsets = await self.projection.load([tp.partition for tp in assigned])
        for tp in assigned:
            stored = offsets[tp.partition]
            if stored is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, stored)
            self.lag.assigned(tp.partition, stored or 0)
        log.info("assigned %s at %s", sorted(offsets), offsets)

    async def run(self, stop: asyncio.Event) -> None:
        await self.dlq.start()
        self.consumer.subscribe([topics.EVENTS], listener=_Seek(self))
        await self.consumer.start()
        publisher = asyncio.create_task(self._publish_lag(stop))
        try:
            while not stop.is_set():
                batches = await self.consumer.getmany(timeout_ms=200, max_records=self.max_records)
                await self._step(batches)
            await self._drain()
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
            if self.inflight is not None:
                await asyncio.wait({self.inflight})
            await self.consumer.stop()
            await self.dlq.stop()

    async def _step(self, batches: dict[TopicPartition, list[Any]]) -> None:
        owned = {tp.partition: r for tp, r in batches.items() if r and tp.partition in self.stored}
        positions = {tp.partition: await self.consumer.position(tp)
                     for tp in self.consumer.assignment() if tp.partition in self.stored}
        # In a thread, while the previous batch is being written: a batch is written in several
        # statements, and the event loop must be free to send each one as the last completes.
        # A few records are folded here instead: the hop to a thread and back (two wake-ups of
        # the loop) cost more than folding them, and on a busy machine each wake-up waits for
        # a core. Nothing fetched: nothing to fold.
        count = sum(len(r) for r in owned.values())
        if count == 0:
            prepared = None
        elif count <= INLINE_RECORDS:
            prepared = self.projection.prepare(owned)
        else:
            prepared = await asyncio.to_thread(self.projection.prepare, owned)
        if not await self._drain():
            return  # offsets were re-read and the consumer moved: what we prepared is stale
        if prepared is not None:
            self.inflight = asyncio.create_task(self.projection.commit(prepared))
            self._inflight_note = (owned, positions)
        else:
            for p, position in positions.items():
                self.lag.moved(p, position)
        for tp in self.consumer.assignment():
            self.lag.end(tp.partition, self.consumer.last_stable_offset(tp))
        self.health.turned(sorted(self.stored))

    async def _drain(self) -> bool:
        """Wait for the batch in flight; False if it met another instance's offsets."""
        task, self.inflight = self.inflight, None
        if task is None:
            return True
        try:
            await task
        except store.OffsetConflict as exc:
            log.warning("%s: another instance moved on; re-reading stored offsets", exc)
            await self.seek_to_stored(list(self.consumer.assignment()))
            return False
        owned, positions = self._inflight_note
        for p, records in owned.items():
            self.lag.applied(p, positions[p], records[-1].timestamp)
        return True

    async def _publish_lag(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(1.0)
            try:
                await self.lag.publish(self.pool)
            except Exception as exc:  # lag is reporting only: never stop the worker for it
                log.warning("could not publish the projection lag: %r", exc)
