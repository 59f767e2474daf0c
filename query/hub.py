"""One LISTEN connection per process, fanned out to every subscriber and read-your-writes waiter.

The projector's commits ``NOTIFY ledger_changes`` with what changed (``{"wallets": [...]}``,
``{"transfers": [...]}``, ``{"trades": [...]}``, ``{"commands": [...]}``). The hub keeps, per
watched row, the mailboxes of its watchers; a notification naming watched rows marks them dirty,
and one refresher task reads all dirty rows of a kind in one statement and puts the fresh value
in each watcher's mailbox. So a change seen by a thousand subscribers costs one query, a
mailbox keeps only the latest value (a slow subscriber skips states, it never piles them up),
and nothing polls. After the listener reconnects every watched row is re-read, so a lost
notification costs latency, never truth.
"""

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg

from common.listen import Listener
from events import readmodel
from events.readmodel import FINAL_COMMAND_STATUSES
from query import db

log = logging.getLogger("ledgerline.query.hub")

APPLICATION_NAME = "ledgerline-query-listener"  # how the listener shows in pg_stat_activity

Fetch = Callable[[db.Db, list[str]], Awaitable[dict[str, Any]]]

FETCHERS: dict[str, Fetch] = {
    "wallets": db.balances_by_wallet,
    "transfers": db.transfers_by_id,
    "trades": db.trades_by_id,
    "commands": db.commands_by_id,
}


class Mailbox:
    """The latest value of one watched row, for one watcher."""

    def __init__(self) -> None:
        self._ready = asyncio.Event()
        self._value: Any = None

    def put(self, value: Any) -> None:
        self._value = value
        self._ready.set()

    async def get(self) -> Any:
        await self._ready.wait()
        self._ready.clear()
        return self._value


class Hub:
    def __init__(self, dsn: str, database: db.Db) -> None:
        self.dsn = dsn
        self.db = database
        self._watchers: dict[tuple[str, str], set[Mailbox]] = defaultdict(set)
        self._dirty: dict[str, set[str]] = defaultdict(set)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.listener = Listener(dsn, self._notified, on_connect=self._mark_all_dirty,
                                 application_name=APPLICATION_NAME)
        self.connected = self.listener.connected

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._refresh())]
        await self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @contextlib.contextmanager
    def watch(self, kind: str, key: str) -> Iterator[Mailbox]:
        """A mailbox that receives the row ``key`` of ``kind`` each time the projection changes it."""
        if kind not in FETCHERS:
            raise ValueError(f"unknown kind {kind!r}")
        box = Mailbox()
        watchers = self._watchers[(kind, key)]
        watchers.add(box)
        try:
            yield box
        finally:
            watchers.discard(box)
            if not watchers:
                self._watchers.pop((kind, key), None)

    @property
    def watchers(self) -> int:
        return sum(len(w) for w in self._watchers.values())

    def _notified(self, payload: str) -> None:
        for kind, keys in readmodel.parse(payload).items():
            if kind in FETCHERS:
                watched = [k for k in keys if (kind, k) in self._watchers]
                if watched:
                    self._dirty[kind].update(watched)
                    self._wake.set()

    def _mark_all_dirty(self) -> None:
        for kind, key in self._watchers:
            self._dirty[kind].add(key)
        self._wake.set()

    async def _refresh(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, defaultdict(set)
            for kind, keys in dirty.items():
                try:
                    values = await FETCHERS[kind](self.db, sorted(keys))
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("cannot read changed %s (%s); retrying", kind, exc)
                    self._dirty[kind].update(keys)
                    await asyncio.sleep(0.5)
                    self._wake.set()
                    continue
                for key in keys:
                    for box in self._watchers.get((kind, key), ()):
                        box.put(values.get(key))



async def wait_for_command(hub: Hub, database: db.Db, command_id: str, seconds: float,
                           visible: Callable[[dict[str, Any]], bool] = lambda _row: True,
                           ) -> dict[str, Any] | None:
    """The command's row once its outcome is final, or as it is when ``seconds`` run out. A row
    the caller may not see is no row: another principal's command is waited for as long as an
    unknown one and answered the same, so neither the answer nor its time tells it exists."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    def seen(found: dict[str, Any] | None) -> dict[str, Any] | None:
        return found if found is not None and visible(found) else None

    with hub.watch("commands", command_id) as box:
        row = seen((await db.commands_by_id(database, [command_id])).get(command_id))
        while row is None or row["status"] not in FINAL_COMMAND_STATUSES:
            try:
                row = seen(await asyncio.wait_for(box.get(), max(0.0, deadline - loop.time())))
            except TimeoutError:
                break
    return row
