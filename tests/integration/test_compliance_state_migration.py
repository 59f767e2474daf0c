"""Migration 0008 turns the monitor's JSON state slots into rows the monitor reads back as the
same state, and its downgrade turns them into the slots again; an alert's later evidence, rows
of ``alert_evidence``, is part of its evidence in ``reporting.alerts`` and folded back into the
array by the downgrade."""

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.config import Config

import migrations
from common.settings import asyncpg_dsn
from compliance import store
from compliance.evaluate import Incoming, Move, Outgoing, State
from ledgerline.migrate import upgrade
from ledgerline.stack.ports import free_port
from ledgerline.stack.postgres import LocalPostgres

pytestmark = pytest.mark.integration

T = "2026-12-01T12:00:00+00:00"
T1 = "2026-12-01T12:01:00+00:00"
WINDOW = 1764590400  # 2026-12-01T12:00:00Z, a multiple of 3600
OLD = {
    "out|a|USDX": {"moves": [["e1", T, "950", "b"], ["e2", T1, "5", None]], "fired": {"velocity": T1}},
    "out|c|USDX": {"moves": [["e3", T, "7", "d"]], "fired": {}},
    "in|d|USDX": {"windows": {str(WINDOW): {"c": ["e3"], "x": ["e4", "e5"]}}},
}


def _downgrade(url: str, revision: str) -> None:
    folder = Path(migrations.__file__).parent
    config = Config(str(folder / "alembic.ini"))
    config.set_main_option("script_location", str(folder))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.downgrade(config, revision)


def test_state_slots_become_rows_and_back(tmp_path: Path) -> None:
    pg = LocalPostgres(tmp_path / "postgres", port=free_port(), secrets_dir=tmp_path)
    pg.start()
    try:
        upgrade(pg.url, "0007")
        asyncio.run(_run(pg.url, "INSERT INTO compliance.state (key, slot) VALUES ($1, $2)",
                         [(k, json.dumps(v)) for k, v in OLD.items()]))
        upgrade(pg.url, "0008")
        state = asyncio.run(_load(pg.url))
        a, c, d = state.slots["out|a|USDX"], state.slots["out|c|USDX"], state.slots["in|d|USDX"]
        assert isinstance(a, Outgoing) and isinstance(c, Outgoing) and isinstance(d, Incoming)
        at, at1 = datetime.fromisoformat(T), datetime.fromisoformat(T1)
        assert list(a.moves) == [Move(at, "e1", 950, "b"), Move(at1, "e2", 5, None)]
        assert a.fired == {"velocity": at1} and c.fired == {}
        assert {(e.event_id, e.counterparty, e.at) for e in d.loaded} == {
            ("e3", "c", datetime.fromtimestamp(WINDOW, UTC)), ("e4", "x", datetime.fromtimestamp(WINDOW, UTC)),
            ("e5", "x", datetime.fromtimestamp(WINDOW, UTC))}

        asyncio.run(_run(pg.url, """INSERT INTO compliance.alerts (alert_id, rule, rule_version, signature,
            wallet, asset, severity, evidence, window_start, window_end) VALUES ($1, 'fan_in', 'v', 's',
            'd', 'USDX', 'medium', $2, now(), now())""", [("f1", ["e3", "e4"])]))
        asyncio.run(_run(pg.url, "INSERT INTO compliance.alert_evidence VALUES ($1, $2)",
                         [("f1", "e5"), ("f1", "e4")]))
        [view] = asyncio.run(_fetch(pg.url, "SELECT evidence FROM reporting.alerts"))
        assert view["evidence"] == ["e3", "e4", "e5"]

        _downgrade(pg.url, "0007")
        [alert] = asyncio.run(_fetch(pg.url, "SELECT evidence FROM compliance.alerts"))
        assert alert["evidence"] == ["e3", "e4", "e5"]
        rows = asyncio.run(_fetch(pg.url, "SELECT key, slot FROM compliance.state"))
        back = {r["key"]: json.loads(r["slot"]) for r in rows}
        for slot in (back["out|a|USDX"], back["out|c|USDX"]):
            slot["moves"] = [[i, datetime.fromisoformat(t), amount, party] for i, t, amount, party in slot["moves"]]
            slot["fired"] = {r: datetime.fromisoformat(t) for r, t in slot["fired"].items()}
        assert back["out|a|USDX"] == {"moves": [["e1", at, "950", "b"], ["e2", at1, "5", None]],
                                      "fired": {"velocity": at1}}
        assert back["out|c|USDX"] == {"moves": [["e3", at, "7", "d"]], "fired": {}}
        assert back["in|d|USDX"] == OLD["in|d|USDX"]
    finally:
        pg.stop()


async def _run(url: str, sql: str, args: list[tuple[object, ...]]) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.executemany(sql, args)
    finally:
        await conn.close()


async def _fetch(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def _load(url: str) -> State:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await store.load_state(conn)
    finally:
        await conn.close()
