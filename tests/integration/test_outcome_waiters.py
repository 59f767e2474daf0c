"""``Prefer: wait`` waiters are woken by the projector's NOTIFY and read in batches, not by polling.

The periodic re-check is pushed far beyond the test's patience, so only the notification path
can answer in time. Real PostgreSQL; rows and notifications are written the way the projector
writes them (``command_log`` row first, then ``pg_notify`` on its channel), into a
``command_log`` of the test's own schema, so the shared read model is left alone.
"""

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from command import outcomes
from common.settings import asyncpg_dsn
from events.readmodel import CHANNEL
from tests.conftest import Stack

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def _waiters(stack: Stack) -> AsyncIterator[outcomes.Waiters]:
    dsn = asyncpg_dsn(stack.infra.database_url)
    schema = f"waiters_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"CREATE SCHEMA {schema}; "
                        f"CREATE TABLE {schema}.command_log (LIKE command_log INCLUDING ALL)")
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, server_settings={"search_path": schema})
    w = outcomes.Waiters(pool)
    await w.start(dsn)
    try:
        yield w
    finally:
        await w.stop()
        await pool.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


@pytest.fixture
async def waiters(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[outcomes.Waiters]:
    monkeypatch.setattr(outcomes, "RECHECK_SECONDS", 600.0)  # only a notification can answer
    async with _waiters(stack) as w:
        yield w


async def _settle(pool: asyncpg.Pool, ids: list[str], status: str, reason: str | None = None) -> None:
    await pool.executemany(
        "INSERT INTO command_log (command_id, type, principal, status, status_rank, reason, updated_at) "
        "VALUES ($1, 'InitiateTransfer', 'waiter-test', $2, $3, $4, now()) "
        "ON CONFLICT (command_id) DO UPDATE SET status = $2, status_rank = $3, reason = $4",
        [(i, status, 3 if status in outcomes.FINAL else 1, reason) for i in ids],
    )
    if status in outcomes.FINAL:
        await pool.execute("SELECT pg_notify($1, $2)", CHANNEL, json.dumps({"commands": ids}))


async def test_one_notification_answers_every_waiter_it_names(waiters: outcomes.Waiters) -> None:
    ids = [str(uuid.uuid4()) for _ in range(50)]
    with contextlib.ExitStack() as held:
        watches = [held.enter_context(waiters.watch(i)) for i in ids]
        answers = [asyncio.create_task(w.final(30, read_first=False)) for w in watches]
        await asyncio.sleep(0.1)
        await _settle(waiters.pool, ids[:25], "completed")
        await _settle(waiters.pool, ids[25:], "failed", "insufficient_funds")
        got = await asyncio.wait_for(asyncio.gather(*answers), 20)
    assert [g["command_id"] for g in got] == ids
    assert {g["status"] for g in got[:25]} == {"completed"}
    assert {(g["status"], g["reason"]) for g in got[25:]} == {("failed", "insufficient_funds")}


async def test_a_command_already_final_is_answered_from_a_first_read(waiters: outcomes.Waiters) -> None:
    # A retried Idempotency-Key names a command that may have been decided long ago: no
    # notification will come for it again.
    command_id = str(uuid.uuid4())
    await _settle(waiters.pool, [command_id], "completed")
    got = await asyncio.wait_for(waiters.wait_final(command_id, 30), 20)
    assert got is not None and got["status"] == "completed"


async def test_a_waiter_is_not_answered_before_its_outcome_is_final(waiters: outcomes.Waiters) -> None:
    command_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    await _settle(waiters.pool, [command_id], "pending")
    with waiters.watch(command_id) as watch:
        answer = asyncio.create_task(watch.final(30))
        await _settle(waiters.pool, [other], "completed")  # a notification for someone else
        await asyncio.sleep(0.5)
        assert not answer.done()
        await _settle(waiters.pool, [command_id], "completed")
        got = await asyncio.wait_for(answer, 20)
    assert got is not None and got["status"] == "completed"
    assert command_id not in waiters._waiting  # the watch is gone once the request is answered



class CountedPool:
    """The real pool, counting the batched reads."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.batches: list[list[str]] = []

    async def fetch(self, query: str, ids: list[str]) -> list[asyncpg.Record]:
        self.batches.append(ids)
        return await self.pool.fetch(query, ids)

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        return await self.pool.fetchrow(query, *args)


async def test_a_lost_notification_is_made_up_for_by_one_read_for_all_waiters(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outcomes, "RECHECK_SECONDS", 0.2)
    async with _waiters(stack) as waiters:
        counted = CountedPool(waiters.pool)
        waiters.pool = counted  # type: ignore[assignment]
        ids = [str(uuid.uuid4()) for _ in range(20)]
        await counted.pool.executemany(  # final in the read model, but nobody is told
            "INSERT INTO command_log (command_id, type, principal, status, status_rank, updated_at) "
            "VALUES ($1, 'InitiateTransfer', 'waiter-test', 'completed', 3, now())",
            [(i,) for i in ids],
        )
        with contextlib.ExitStack() as held:
            watches = [held.enter_context(waiters.watch(i)) for i in ids]
            got = await asyncio.wait_for(
                asyncio.gather(*(w.final(30, read_first=False) for w in watches)), 20)
        waiters.pool = counted.pool
    assert {g["status"] for g in got} == {"completed"}
    assert len(counted.batches) == 1 and sorted(counted.batches[0]) == sorted(ids)
