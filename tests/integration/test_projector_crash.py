"""Crash: the projector is SIGKILLed in the middle of a batch, several times while a workload
runs; once restarted, every view equals a clean replay and nothing is counted twice. The lag
table and the metrics endpoint report the caught-up projection."""

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from common.settings import asyncpg_dsn
from projector import dlq
from tests.conftest import Running
from tests.integration.projector_support import (
    Workload,
    caught_up,
    kill_projector,
    no_double_counting,
    projector_of,
    replay_matches_live,
    restart_projector,
    settled,
)

pytestmark = pytest.mark.integration

_IN_BATCH = """
SELECT count(*) FROM pg_stat_activity
WHERE application_name = 'ledgerline-projector' AND xact_start IS NOT NULL
"""


@pytest.fixture
async def pool(running: Running) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(asyncpg_dsn(running.stack.settings.database_url), min_size=1, max_size=4)
    yield p
    await p.close()


async def _kill_mid_batch(running: Running, pool: asyncpg.Pool, seconds: float = 40.0) -> bool:
    """SIGKILL the projector while one of its batch transactions is open; False if none opened."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await pool.fetchval(_IN_BATCH):
            kill_projector(running)
            return True
        await asyncio.sleep(0.002)
    return False


async def test_sigkill_mid_batch_then_restart_equals_clean_replay(
    http: httpx.AsyncClient, running: Running, pool: asyncpg.Pool
) -> None:
    s = running.stack.settings
    letters_before = len(await dlq.read_letters(s.kafka_bootstrap))
    work = Workload(http, running, seed=3, wallets=16)
    await work.start()
    load = asyncio.create_task(work.run(500))
    kills = 0
    try:
        for _ in range(3):
            kills += await _kill_mid_batch(running, pool)
            restart_projector(running)
            await asyncio.sleep(0.3)
    finally:
        await load
        restart_projector(running)
    assert kills >= 2, "the projector was never caught inside a batch"
    await settled(pool, work.command_ids, seconds=120)
    stored = await caught_up(pool, s.kafka_bootstrap)
    # A record applied twice would fail its primary key and be dead-lettered: there must be none.
    assert len(await dlq.read_letters(s.kafka_bootstrap)) == letters_before

    await no_double_counting(pool, s.kafka_bootstrap)
    await replay_matches_live(running, pool)

    # Lag: a row per partition, nothing behind once caught up; the same on /metrics.
    await asyncio.sleep(1.5)
    lag = {r["partition"]: r for r in await pool.fetch(
        "SELECT * FROM public.projection_lag WHERE projection = 'views'")}
    assert set(lag) == set(stored)
    for p, row in lag.items():
        assert row["records_behind"] == 0 and row["seconds_behind"] == 0.0, dict(row)
        assert row["end_offset"] >= stored[p], dict(row)
    assert projector_of(running).poll() is None
    url = f"http://127.0.0.1:{s.projector_metrics_port}"
    metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(url + "/metrics", timeout=5).read())
    text = metrics.decode()
    assert 'ledgerline_projection_lag_records{partition="0",projection="views",topic="ledger.events"} 0.0' \
        in text, text[:2000]
    assert "ledgerline_projector_events_total" in text
    health = await asyncio.to_thread(lambda: urllib.request.urlopen(url + "/healthz", timeout=5).status)
    assert health == 200
