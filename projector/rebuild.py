"""``ledgerline rebuild``: replay ``ledger.events`` from offset 0 into a shadow schema while the
live views keep serving, then swap the rebuilt tables in.

1. Copy the live tables' definitions into the shadow schema (:mod:`projector.shadow`).
2. Replay with the live projector's own code (:class:`projector.worker.Projection`), never past
   the live projection's offsets, until close to them; add the secondary indexes.
3. Pause the live projector (it takes a shared advisory lock per batch; the rebuild takes it
   exclusively, so the batch in flight finishes and the next waits), replay exactly up to the
   live offsets, and swap in one transaction. The live projector then goes on from the same
   offsets, writing into the new tables.

Records the live projector already dead-lettered are not dead-lettered again.
"""

import asyncio
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from common.kafka import KafkaTarget, client_options
from common.keyring import KeyStore
from common.topic_reader import partitions_of
from events import topics
from events.readmodel import PROJECTION
from projector import dlq, shadow, store
from projector.worker import SESSION, Projection

log = logging.getLogger("ledgerline.rebuild")


class RebuildError(RuntimeError):
    """The rebuild cannot go on (unknown view, the swap could not get its locks)."""


@dataclass
class Progress:
    """Records replayed / to replay, rate and ETA, printed at most once a second."""

    out: TextIO | None = sys.stderr
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    total: int = 0
    _printed: float = 0.0

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done / elapsed
        left = max(self.total - self.done, 0)
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        share = 100.0 * self.done / self.total if self.total else 100.0
        return (f"rebuild: {self.done:,} / {self.total:,} records ({share:.1f}%), "
                f"{rate:,.0f} records/s, ETA {eta}")

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.out is not None and (force or now - self._printed >= 1.0):
            self._printed = now
            print(self.line(), file=self.out, flush=True)

    def say(self, message: str) -> None:
        if self.out is not None:
            print(f"rebuild: {message}", file=self.out, flush=True)


class Replay:
    """A consumer outside any group that replays ``ledger.events`` into the shadow schema."""

    def __init__(self, bootstrap: KafkaTarget, pool: asyncpg.Pool, producer: AIOKafkaProducer,
                 already_dead: set[tuple[str, int, int]], progress: Progress,
                 max_records: int = 5000, keys: KeyStore | None = None) -> None:
        self.consumer = AIOKafkaConsumer(
            **client_options(bootstrap), enable_auto_commit=False, isolation_level="read_committed",
            auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024)
        self.projection = Projection(pool, producer, name=PROJECTION, swap_lock=False,
                                     already_dead=already_dead, keys=keys)
        self.progress = progress
        self.max_records = max_records
        self.tps: list[TopicPartition] = []

    async def start(self, bootstrap: KafkaTarget) -> None:
        partitions = await partitions_of(bootstrap, topics.EVENTS)
        await self.consumer.start()
        if not partitions:
            raise RebuildError(f"topic {topics.EVENTS} has no partitions")
        self.tps = [TopicPartition(topics.EVENTS, p) for p in partitions]
        self.consumer.assign(self.tps)
        await self.consumer.seek_to_beginning(*self.tps)
        await self.projection.load(partitions)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def done(self) -> int:
        return sum([await self.consumer.position(tp) for tp in self.tps])

    async def catch_up(self, bounds: dict[int, int]) -> None:
        """Apply every record below ``bounds[partition]``, and none at or past it."""
        pending = [tp for tp in self.tps if await self.consumer.position(tp) < bounds.get(tp.partition, 0)]
        self.progress.total = sum(bounds.values())
        inflight: asyncio.Task[None] | None = None  # one batch written while the next is folded
        while pending:
            batches = await self.consumer.getmany(*pending, timeout_ms=500, max_records=self.max_records)
            owned: dict[int, list[Any]] = {}
            for tp, records in batches.items():
                bound = bounds.get(tp.partition, 0)
                kept = [r for r in records if r.offset < bound]
                if len(kept) < len(records):
                    self.consumer.seek(tp, bound)  # the rest is for a later round
                if kept:
                    owned[tp.partition] = kept
            prepared = await asyncio.to_thread(self.projection.prepare, owned)  # see worker.Projector
            if inflight is not None:
                await inflight
            inflight = asyncio.create_task(self.projection.commit(prepared))
            pending = [tp for tp in pending
                       if await self.consumer.position(tp) < bounds.get(tp.partition, 0)]
            self.progress.done = await self.done()
            self.progress.show()
        if inflight is not None:
            await inflight


async def rebuild(bootstrap: KafkaTarget, database_url: str, views: list[str] | None = None, *,
                  swap: bool = True, progress: Progress | None = None,
                  close_enough: int = 2000, keys: KeyStore | None = None) -> list[str]:
    """Rebuild ``views`` (all when None) and swap them in; returns the swapped table names.

    With ``swap=False`` the shadow schema is left in place, aligned to the live offsets, for a
    comparison (:func:`projector.shadow.checksums`).
    """
    progress = progress or Progress()
    conn = await asyncpg.connect(database_url)
    shadow_pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=2,
        server_settings={**SESSION, "search_path": f"{shadow.SHADOW}, public"})
    producer = AIOKafkaProducer(**client_options(bootstrap), acks="all", enable_idempotence=True)
    replay: Replay | None = None
    try:
        live_tables = [t for t in await shadow.tables(conn) if t != shadow.OFFSETS]
        names = live_tables if not views else views
        unknown = sorted(set(names) - set(live_tables))
        if unknown:
            raise RebuildError(f"no such view: {', '.join(unknown)} (views: {', '.join(live_tables)})")
        await shadow.create_shadow(conn)
        await producer.start()
        dead = {(x.source.topic, x.source.partition, x.source.offset)
                for x in await dlq.read_letters(bootstrap)}
        replay = Replay(bootstrap, shadow_pool, producer, dead, progress, keys=keys)
        await replay.start(bootstrap)

        async def live() -> dict[int, int]:
            return await shadow.offsets(conn, shadow.LIVE, PROJECTION, topics.EVENTS)

        # Bulk phase: follow the live offsets until the gap is small.
        indexed = False
        while True:
            bounds = await live()
            await replay.catch_up(bounds)
            gap = sum((await live()).values()) - sum(bounds.values())
            if gap <= close_enough:
                if indexed:
                    break
                progress.say("adding the secondary indexes")
                await shadow.create_indexes(conn)
                indexed = True
        progress.show(force=True)
        # Final phase: live projector paused, replay exactly to its offsets, swap.
        await conn.execute("SELECT pg_advisory_lock($1)", store.SWAP_LOCK)
        try:
            bounds = await live()
            await replay.catch_up(bounds)
            mine = await shadow.offsets(conn, shadow.SHADOW, PROJECTION, topics.EVENTS)
            if mine != bounds:
                raise RebuildError(f"the replay stopped at {mine}, the live views are at {bounds}")
            progress.show(force=True)
            if not swap:
                progress.say(f"shadow schema {shadow.SHADOW} left in place at {bounds}")
                return []
            started = time.monotonic()
            await _swap(conn, names)
            progress.say(f"swapped {', '.join(names)} in {1000 * (time.monotonic() - started):.0f} ms")
            return names
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", store.SWAP_LOCK)
    except BaseException:
        if swap:
            await shadow.drop_shadow(conn)
        raise
    finally:
        if replay is not None:
            await replay.stop()
        await producer.stop()
        await shadow_pool.close()
        await conn.close()


async def _swap(conn: asyncpg.Connection, names: list[str], attempts: int = 5) -> None:
    for attempt in range(1, attempts + 1):
        try:
            await shadow.swap(conn, names)
            return
        except asyncpg.exceptions.LockNotAvailableError:
            log.warning("swap attempt %d: a reader holds a table; trying again", attempt)
            await asyncio.sleep(0.5)
    raise RebuildError(f"could not take the locks for the swap in {attempts} attempts")
