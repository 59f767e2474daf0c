"""A small pool of asyncpg connections for the query side's reads.

asyncpg's own pool does more around every statement than a read-only API needs: it shields each
release in a task of its own, re-arms an inactivity timer, runs a reset hook. On a one-row lookup
that costs more CPU than running the statement. This pool only lends connections: a statement
takes a free connection (or opens one while the pool is under ``max_size``, or waits for one),
runs, and gives it back. It offers the three methods of :class:`query.db.Db` and nothing else:
no transactions and no session state, so there is nothing to reset between borrowers. A
connection whose statement was interrupted or that failed itself (not the statement: PostgreSQL
answered an error) is terminated, never lent again; a new one is opened when needed. A statement
that found its idle connection dead (the server restarted since) runs once more on a fresh one:
reads are safe to repeat, and a restart then costs the clients nothing.
"""

import asyncio
import collections
from typing import Any

import asyncpg


class Pool:
    def __init__(self, dsn: str, *, min_size: int = 2, max_size: int = 10, **connect: Any) -> None:
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError("need 0 <= min_size <= max_size and max_size >= 1")
        self.dsn, self.min_size, self.max_size, self._connect = dsn, min_size, max_size, connect
        self._free: list[asyncpg.Connection] = []
        self._waiters: collections.deque[asyncio.Future[asyncpg.Connection | None]] = collections.deque()
        self.size = 0  # connections open or being opened
        self._closed = False

    async def start(self) -> "Pool":
        for _ in range(self.min_size):
            self.size += 1
            try:
                self._free.append(await asyncpg.connect(self.dsn, **self._connect))
            except BaseException:
                self.size -= 1
                raise
        return self

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        return await self._run("fetch", query, args)

    async def fetchrow(self, query: str, *args: Any) -> Any:
        return await self._run("fetchrow", query, args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._run("fetchval", query, args)

    async def close(self) -> None:
        """Closes the free connections now and the lent ones when they come back."""
        self._closed = True
        free, self._free = self._free, []
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(asyncpg.InterfaceError("the pool is closed"))
        await asyncio.gather(*(c.close() for c in free), return_exceptions=True)

    async def _run(self, method: str, query: str, args: tuple[Any, ...]) -> Any:
        try:
            return await self._run_once(method, query, args)
        except (asyncpg.ConnectionDoesNotExistError, asyncpg.AdminShutdownError,
                ConnectionResetError):
            return await self._run_once(method, query, args)

    async def _run_once(self, method: str, query: str, args: tuple[Any, ...]) -> Any:
        conn = await self._acquire()
        try:
            result = await getattr(conn, method)(query, *args)
        except asyncpg.PostgresError as exc:
            # The statement failed, not the connection, unless the server says the connection is
            # gone (class 08) or was ended by an operator or a shutdown (57P).
            gone = str(getattr(exc, "sqlstate", "") or "").startswith(("08", "57P"))
            self._release(conn, sound=not gone and not conn.is_closed())
            raise
        except BaseException:
            self._release(conn, sound=False)  # interrupted mid-statement, or the connection failed
            raise
        self._release(conn, sound=True)
        return result

    async def _acquire(self) -> asyncpg.Connection:
        while True:
            if self._closed:
                raise asyncpg.InterfaceError("the pool is closed")
            if self._free:
                conn = self._free.pop()  # the most recently used: warm caches
                if conn.is_closed():  # closed by the server while it was free
                    conn.terminate()
                    self.size -= 1
                    continue
                return conn
            if self.size < self.max_size:
                self.size += 1
                try:
                    conn = await asyncpg.connect(self.dsn, **self._connect)
                except BaseException:
                    self.size -= 1
                    self._wake()
                    raise
                return conn
            waiter: asyncio.Future[asyncpg.Connection | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self._release(waiter.result(), sound=True)  # handed over just as we gave up
                raise
            if handed is not None:
                return handed
            # None: a connection was dropped, so there is room to open one: try again

    def _release(self, conn: asyncpg.Connection, *, sound: bool) -> None:
        if not sound or self._closed or conn.is_closed():
            conn.terminate()
            self.size -= 1
            self._wake()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._free.append(conn)

    def _wake(self) -> None:
        """Room for one more connection: the first waiter opens it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
