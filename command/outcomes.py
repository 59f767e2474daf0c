"""Command outcomes as the read model shows them, and waiting for them (``Prefer: wait=N``).

One LISTEN connection per process wakes the waiters of the command ids each projector commit
names (it names a command once its outcome is final). The outcomes of all the commands one
notification names are read in one statement and handed to their waiters, so a thousand
waiting requests cost a few reads, not a thousand. In case a notification is lost (the listener
reconnecting), every waited-for command is also re-read, all in one statement, every
``RECHECK_SECONDS``: a lost notification costs latency, never truth, and waiting never turns
into one poll per request. The listener reconnects by itself, with backoff, when the database
goes away; while it is away a waiting request answers with the latest state it knows.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import asyncpg

from command import availability
from ledgerline.retry import TRANSIENT, Backoff
from projector.fold import FINAL_COMMAND_STATUSES
from projector.store import CHANNEL

log = logging.getLogger("ledgerline.outcomes")

# completed, settled (a trade), failed, rejected: the statuses the projector never moves past.
FINAL = FINAL_COMMAND_STATUSES

_COLUMNS = ("c.command_id, c.type, c.principal, c.status, c.reason, c.correlation_id, c.created_at, "
            "c.updated_at")
_STATUS = f"SELECT {_COLUMNS} FROM command_log c WHERE c.command_id = $1"
_STATUSES = f"SELECT {_COLUMNS} FROM command_log c WHERE c.command_id = ANY($1::text[])"

RECHECK_SECONDS = 1.0


async def read(pool: asyncpg.Pool, command_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(_STATUS, command_id)
    return None if row is None else dict(row)


class Watch:
    """One request's wait for one command; registered before the command is sent, so no
    notification of its outcome can be missed."""

    def __init__(self, pool: asyncpg.Pool, command_id: str) -> None:
        self.pool = pool
        self.command_id = command_id
        self.done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.latest: dict[str, Any] | None = None  # the last outcome read, final or not

    def deliver(self, outcome: dict[str, Any]) -> None:
        self.latest = outcome
        if outcome["status"] in FINAL and not self.done.done():
            self.done.set_result(outcome)

    async def final(self, seconds: float, *, read_first: bool = True) -> dict[str, Any] | None:
        """The outcome once final, or the latest one when ``seconds`` run out.

        ``read_first=False`` only for a command sent after this watch was registered: nothing
        about it can be in the read model yet that a notification would not bring.
        """
        availability.unbounded()  # the client chose how long to wait for the outcome
        if read_first:
            outcome = await self._read()
            if outcome is not None:
                self.deliver(outcome)
        try:
            async with asyncio.timeout(seconds):
                return await self.done
        except TimeoutError:
            # The state the last sweep saw (at most RECHECK_SECONDS old) or, before any, a read:
            # when the pipeline falls behind, timed-out requests add no read each.
            return self.latest or await self._read()

    async def _read(self) -> dict[str, Any] | None:
        try:
            return await read(self.pool, self.command_id)
        except TRANSIENT as exc:  # the database is away: what we know is "accepted"
            log.warning("could not read the outcome of %s: %r", self.command_id, exc)
            return None


class Waiters:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._waiting: dict[str, list[Watch]] = {}
        self._conn: asyncpg.Connection | None = None
        self._to_read: set[str] = set()
        self._reader: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self, dsn: str) -> None:
        loop = asyncio.get_running_loop()
        self._listener = loop.create_task(self._listen(dsn))
        self._sweeper = loop.create_task(self._sweep())
        await asyncio.wait_for(self.connected.wait(), 30)

    async def stop(self) -> None:
        for task in (self._reader, self._sweeper, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _listen(self, dsn: str) -> None:
        """Keep one LISTEN connection, reconnecting with backoff whenever it is lost."""
        backoff = Backoff(first=0.1, cap=2.0)
        while True:
            closed = asyncio.Event()
            try:
                conn = await asyncpg.connect(dsn, timeout=5)
            except TRANSIENT as exc:
                delay = backoff.next()
                log.warning("outcome listener cannot connect (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            try:
                conn.add_termination_listener(lambda _c, gone=closed: gone.set())
                await conn.add_listener(CHANNEL, self._notified)
                self._conn = conn
                backoff.reset()
                self.connected.set()
                while not closed.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(closed.wait(), 5)
                    if not closed.is_set():  # a peer that vanished without a goodbye
                        await conn.fetchval("SELECT 1", timeout=5)
                log.warning("outcome listener connection lost; reconnecting")
            except TRANSIENT as exc:
                log.warning("outcome listener failed (%r); reconnecting", exc)
            finally:
                self.connected.clear()
                self._conn = None
                with contextlib.suppress(Exception):
                    await conn.close(timeout=1)

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        # Every projector commit notifies, one kind of id per payload ({"commands": [...]},
        # {"wallets": [...]}, ...); only command ids somebody here waits for matter.
        if not self._waiting or not payload.startswith('{"commands"'):
            return
        try:
            ids = json.loads(payload).get("commands", [])
        except ValueError:
            return
        waited = [i for i in ids if i in self._waiting]
        if not waited:
            return
        self._to_read.update(waited)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read_notified())

    async def _read_notified(self) -> None:
        # Notifications that arrive while a read is under way are read together by the next one.
        while self._to_read:
            ids, self._to_read = list(self._to_read), set()
            await self._read_and_deliver(ids)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(RECHECK_SECONDS)
            if self._waiting:
                await self._read_and_deliver(list(self._waiting))

    async def _read_and_deliver(self, ids: Iterable[str]) -> None:
        try:
            rows = await self.pool.fetch(_STATUSES, list(ids))
        except (*TRANSIENT, asyncpg.PostgresError) as exc:
            # The next sweep tries again; nothing is lost but time.
            log.warning("could not read command outcomes: %r", exc)
            return
        for row in rows:
            outcome = dict(row)
            for watch in self._waiting.get(outcome["command_id"], ()):
                watch.deliver(outcome)

    @contextlib.contextmanager
    def watch(self, command_id: str) -> Iterator[Watch]:
        """Wake the watch on notifications for ``command_id`` while the block runs."""
        watch = Watch(self.pool, command_id)
        self._waiting.setdefault(command_id, []).append(watch)
        try:
            yield watch
        finally:
            waiting = self._waiting.get(command_id, [])
            waiting.remove(watch)
            if not waiting:
                self._waiting.pop(command_id, None)

    async def wait_final(self, command_id: str, seconds: float) -> dict[str, Any] | None:
        """The command's outcome once final, or its latest state when ``seconds`` run out."""
        with self.watch(command_id) as watch:
            return await watch.final(seconds)
