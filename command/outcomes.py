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
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import asyncpg

from command import availability
from common.failures import TRANSIENT
from common.listen import Listener
from events import readmodel
from events.readmodel import FINAL_COMMAND_STATUSES

log = logging.getLogger("ledgerline.outcomes")

# completed, settled (a trade), failed, rejected: the statuses the projector never moves past.
FINAL = FINAL_COMMAND_STATUSES

_COLUMNS = ("c.command_id, c.type, c.principal, c.status, c.reason, c.correlation_id, c.created_at, "
            "c.updated_at")
_STATUS = f"SELECT {_COLUMNS} FROM command_log c WHERE c.command_id = $1"
# The caller's visibility is part of the statement, so an invisible command and a missing one
# are the same query returning no row.
_VISIBLE_STATUS = f"{_STATUS} AND ($2 OR c.principal = $3)"
_STATUSES = f"SELECT {_COLUMNS} FROM command_log c WHERE c.command_id = ANY($1::text[])"

RECHECK_SECONDS = 1.0


async def read(pool: asyncpg.Pool, command_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(_STATUS, command_id)
    return None if row is None else dict(row)


async def read_visible(pool: asyncpg.Pool, command_id: str, principal: str, *,
                       sees_everything: bool) -> dict[str, Any] | None:
    """The command's outcome if ``principal`` may see it (it sent the command, or sees
    everything), else None, exactly as for a command that does not exist."""
    row = await pool.fetchrow(_VISIBLE_STATUS, command_id, sees_everything, principal)
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
        self._listener: Listener | None = None
        self._to_read: set[str] = set()
        self._reader: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, dsn: str) -> None:
        self._listener = Listener(dsn, self._notified, on_connect=self._reread,
                                  application_name="ledgerline-command-listener")
        await self._listener.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
        for task in (self._reader, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _notified(self, payload: str) -> None:
        # Every projector commit notifies, one kind of id per payload ({"commands": [...]},
        # {"wallets": [...]}, ...); only command ids somebody here waits for matter.
        if not self._waiting or not payload.startswith('{"commands"'):
            return
        waited = [i for i in readmodel.parse(payload).get("commands", []) if i in self._waiting]
        if waited:
            self._read_soon(waited)

    def _reread(self) -> None:
        # Reconnected: a notification may have been lost meanwhile.
        if self._waiting:
            self._read_soon(list(self._waiting))

    def _read_soon(self, ids: list[str]) -> None:
        self._to_read.update(ids)
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
