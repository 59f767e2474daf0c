"""``Prefer: wait`` waiters are woken by the projector's NOTIFY and read in batches, not by polling.

The re-check a waiter does on its own is pushed far beyond the test's patience, so only the
notification path can answer in time. Real PostgreSQL; rows and notifications are written the
way the projector writes them (``command_log`` row first, then ``pg_notify`` on its channel).
"""

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from command import outcomes
from ledgerline.settings import asyncpg_dsn
from projector.store import CHANNEL
from tests.conftest import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
async def waiters(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[outcomes.Waiters]:
    monkeypatch.setattr(outcomes, "RECHECK_SECONDS", 600.0)
    dsn = asyncpg_dsn(stack.infra.database_url)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    w = outcomes.Waiters(pool)
    await w.start(dsn)
    yield w
    await w.stop()
    await pool.close()


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

