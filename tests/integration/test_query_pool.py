"""The query side's connection pool, on the real PostgreSQL: bounded, and a connection that failed
or was interrupted mid-statement is replaced, never lent again; a statement error keeps it."""

import asyncio

import asyncpg
import pytest

from common.settings import asyncpg_dsn
from query.pool import Pool
from tests.conftest import Stack

pytestmark = pytest.mark.integration


async def _pool(stack: Stack, **sizes: int) -> Pool:
    return await Pool(asyncpg_dsn(stack.infra.database_url), **sizes).start()


async def test_many_statements_share_at_most_max_size_connections(stack: Stack) -> None:
    pool = await _pool(stack, min_size=1, max_size=3)
    try:
        pids = await asyncio.gather(*(pool.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.01)")
                                      for _ in range(40)))
        assert len(set(pids)) == 3 and pool.size == 3
        rows = await pool.fetch("SELECT g FROM generate_series(1, 3) g")
        assert [r["g"] for r in rows] == [1, 2, 3]
        assert (await pool.fetchrow("SELECT 1 AS one"))["one"] == 1
    finally:
        await pool.close()


async def test_a_statement_error_keeps_the_connection(stack: Stack) -> None:
    pool = await _pool(stack, min_size=1, max_size=1)
    try:
        pid = await pool.fetchval("SELECT pg_backend_pid()")
        with pytest.raises(asyncpg.UndefinedTableError):
            await pool.fetch("SELECT * FROM no_such_table")
        assert await pool.fetchval("SELECT pg_backend_pid()") == pid
    finally:
        await pool.close()


async def test_an_interrupted_statement_does_not_leave_a_busy_connection(stack: Stack) -> None:
    pool = await _pool(stack, min_size=1, max_size=1)
    try:
        pid = await pool.fetchval("SELECT pg_backend_pid()")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.fetchval("SELECT pg_sleep(5)"), 0.2)
        # The next statement runs at once, on a new connection (the old one was still busy).
        started = asyncio.get_running_loop().time()
        assert await pool.fetchval("SELECT pg_backend_pid()") != pid
        assert asyncio.get_running_loop().time() - started < 2
        assert pool.size == 1
    finally:
        await pool.close()


async def test_a_connection_killed_by_the_server_is_replaced(stack: Stack) -> None:
    pool = await _pool(stack, min_size=2, max_size=2)
    admin = await asyncpg.connect(asyncpg_dsn(stack.infra.database_url))
    try:
        pids = set(await asyncio.gather(*(pool.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.05)")
                                          for _ in range(2))))
        assert len(pids) == 2
        await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", list(pids))
        failures = 0
        for _ in range(4):  # each dead connection fails at most once (however asyncpg words it), then is replaced
            try:
                await pool.fetchval("SELECT 1")
            except (asyncpg.InterfaceError, asyncpg.InternalClientError, asyncpg.PostgresError, OSError):
                failures += 1
        assert failures <= 2
        fresh = await asyncio.gather(*(pool.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.05)")
                                       for _ in range(2)))
        assert not pids & set(fresh) and pool.size == 2
    finally:
        await admin.close()
        await pool.close()


async def test_waiters_get_a_connection_when_one_is_dropped(stack: Stack) -> None:
    pool = await _pool(stack, min_size=0, max_size=1)
    try:
        slow = asyncio.create_task(pool.fetchval("SELECT pg_sleep(5)"))
        await asyncio.sleep(0.2)
        waiting = asyncio.create_task(pool.fetchval("SELECT 42"))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        slow.cancel()  # interrupted: its connection is dropped, the waiter opens a new one
        assert await asyncio.wait_for(waiting, 5) == 42
        assert pool.size == 1
    finally:
        await pool.close()
