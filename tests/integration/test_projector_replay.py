"""Replay: rebuilding every view from offset 0 gives the same tables, and a rebuild swapped in
while events keep arriving leaves readers and the live projector on the new tables."""

import asyncio
import sys
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from common.settings import asyncpg_dsn
from projector import rebuild, shadow
from tests.conftest import Running
from tests.integration.projector_support import Workload, caught_up, replay_matches_live, settled

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(running: Running) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(asyncpg_dsn(running.stack.settings.database_url), min_size=1, max_size=4)
    yield p
    await p.close()


async def test_rebuild_from_offset_zero_gives_identical_tables(
    http: httpx.AsyncClient, running: Running, pool: asyncpg.Pool
) -> None:
    work = Workload(http, running, seed=1)
    await work.start()
    await work.run(150)
    await settled(pool, work.command_ids)
    await caught_up(pool, running.stack.settings.kafka_bootstrap)
    failed = await pool.fetchval("SELECT count(*) FROM transfers WHERE status = 'failed' AND asset = $1",
                                 work.symbol)
    assert failed > 0, "the workload should include failed transfers"

    before = await replay_matches_live(running, pool)

    # The same, through the command line, swapping the rebuilt tables in.
    oid_before = await pool.fetchval("SELECT 'ledger.events'::regclass::oid")
    layout = await _layout(pool)
    assert layout["command_log"][0] == ["fillfactor=80"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ledgerline", "rebuild", env=running.stack.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    shown = err.decode()
    assert proc.returncode == 0, shown
    assert "records/s" in shown and "ETA" in shown, shown
    assert "swapped" in shown, shown
    assert await pool.fetchval("SELECT 'ledger.events'::regclass::oid") != oid_before
    async with pool.acquire() as conn:
        assert await shadow.checksums(conn) == before
    assert await _layout(pool) == layout  # same indexes and storage parameters as before


async def test_rebuild_while_events_arrive_swaps_readers_and_projector_onto_new_tables(
    http: httpx.AsyncClient, running: Running, pool: asyncpg.Pool
) -> None:
    s = running.stack.settings
    work = Workload(http, running, seed=2)
    await work.start()
    await work.run(60)
    await settled(pool, work.command_ids)
    # A view of another schema over a view table, and a long-lived reader with cached statements.
    await pool.execute("CREATE SCHEMA IF NOT EXISTS projector_test")
    await pool.execute("CREATE OR REPLACE VIEW projector_test.transfer_count AS "
                       "SELECT asset, count(*) AS n FROM transfers GROUP BY asset")
    reader = await asyncpg.connect(asyncpg_dsn(s.database_url))
    count = "SELECT n FROM projector_test.transfer_count WHERE asset = $1"
    balances = "SELECT sum(available + held) FROM wallet_balances WHERE asset = $1"
    await reader.fetchval(count, work.symbol)
    await reader.fetchval(balances, work.symbol)

    errors: list[BaseException] = []
    stop = asyncio.Event()

    async def keep_reading() -> None:
        while not stop.is_set():
            try:
                await reader.fetchval(balances, work.symbol)
            except Exception as exc:  # the live views must keep serving through the swap
                errors.append(exc)
            await asyncio.sleep(0.01)

    readers = asyncio.create_task(keep_reading())
    more = asyncio.create_task(work.run(250))
    try:
        swapped = await rebuild.rebuild(s.kafka_bootstrap, asyncpg_dsn(s.database_url),
                                        progress=rebuild.Progress(out=None), close_enough=200,
                                        keys=running.stack.keys)
        assert "events" in swapped and "wallet_balances" in swapped
        await more
        await settled(pool, work.command_ids)
    finally:
        stop.set()
        await readers
    assert not errors, errors[:3]

    # Events after the swap reached the new tables, and the old connection reads them.
    transfers = await pool.fetchval("SELECT count(*) FROM transfers WHERE asset = $1", work.symbol)
    assert transfers > 60
    assert await reader.fetchval(count, work.symbol) == transfers
    issued = await pool.fetchval("SELECT supply FROM assets WHERE symbol = $1", work.symbol)
    assert await reader.fetchval(balances, work.symbol) == issued
    await reader.close()
    await pool.execute("DROP SCHEMA projector_test CASCADE")

    await caught_up(pool, s.kafka_bootstrap)
    await replay_matches_live(running, pool)
    assert await pool.fetchval("SELECT to_regnamespace($1) IS NULL", shadow.SHADOW)


async def test_rebuilding_one_view_swaps_that_table_only(running: Running, pool: asyncpg.Pool) -> None:
    s = running.stack.settings
    oids = dict(await pool.fetch("SELECT relname, oid FROM pg_class WHERE relnamespace = 'ledger'::regnamespace "
                                 "AND relkind = 'r'"))
    before = await _checksums(pool)
    swapped = await rebuild.rebuild(s.kafka_bootstrap, asyncpg_dsn(s.database_url), ["transfers"],
                                    progress=rebuild.Progress(out=None), keys=running.stack.keys)
    assert swapped == ["transfers"]
    after = dict(await pool.fetch("SELECT relname, oid FROM pg_class WHERE relnamespace = 'ledger'::regnamespace "
                                  "AND relkind = 'r'"))
    assert {t for t in oids if oids[t] != after.get(t)} == {"transfers"}
    assert await _checksums(pool) == before

    with pytest.raises(rebuild.RebuildError, match="no such view: nonsense"):
        await rebuild.rebuild(s.kafka_bootstrap, asyncpg_dsn(s.database_url), ["nonsense"],
                              progress=rebuild.Progress(out=None))


async def _checksums(pool: asyncpg.Pool) -> dict[str, tuple[int, str]]:
    async with pool.acquire() as conn:
        return await shadow.checksums(conn)


async def _layout(pool: asyncpg.Pool) -> dict[str, tuple[list[str] | None, list[str]]]:
    """Per view: its storage parameters and the definitions of its indexes."""
    rows = await pool.fetch(
        "SELECT c.relname, c.reloptions, array(SELECT pg_get_indexdef(x.indexrelid) FROM pg_index x "
        "WHERE x.indrelid = c.oid ORDER BY 1) FROM pg_class c "
        "WHERE c.relnamespace = 'ledger'::regnamespace AND c.relkind = 'r'")
    return {name: (options, list(indexes)) for name, options, indexes in rows}
