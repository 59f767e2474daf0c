"""What the projector tests share: a mixed workload sent through the command API, waiting for it
to settle, the projector processes, and comparing the live views with a replay from offset 0.

The workload is a table of weighted steps (:attr:`Workload.steps`); a new kind of command is one
more ``async def _step_x(self)`` and one more entry in the table.
"""

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import httpx

from common.settings import asyncpg_dsn
from common.topic_reader import read_to_end
from events import topics
from projector import dlq, rebuild, shadow
from tests.conftest import Running, token, unique, unique_symbol

FINAL = ("completed", "failed", "rejected", "settled")


@dataclass
class Workload:
    """Random issues, transfers (some beyond the balance, so they fail) and burns over a few
    wallets."""

    http: httpx.AsyncClient
    running: Running
    seed: int = 7
    wallets: int = 12
    concurrency: int = 16
    symbol: str = field(default_factory=unique_symbol)
    command_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.names = [unique("w") for _ in range(self.wallets)]
        self.issuer = token("treasury", roles=["issuer"], assets=[self.symbol])
        self.owners = {w: token(w, wallets=[w]) for w in self.names}
        self.steps: list[tuple[Callable[[], Awaitable[None]], int]] = [
            (self._step_issue, 2), (self._step_transfer, 6), (self._step_overdraft, 1),
            (self._step_burn, 1),
        ]

    async def _post(self, path: str, bearer: str, body: dict[str, object], wait: int = 0) -> None:
        headers = {"Authorization": f"Bearer {bearer}"}
        if wait:
            headers["Prefer"] = f"wait={wait}"
        answer = await self.http.post(self.running.command_url + path, json=body, headers=headers)
        assert answer.status_code in (200, 202), answer.text
        self.command_ids.append(answer.json()["command_id"])

    async def start(self) -> None:
        await self._post("/v1/assets", self.issuer, {
            "symbol": self.symbol, "name": "Projector test", "decimals": 2, "issuer": "treasury",
            "max_supply": None}, wait=15)
        for w in self.names:
            await self._post(f"/v1/assets/{self.symbol}/issue", self.issuer,
                             {"to": w, "amount": "1000.00"})

    async def _step_issue(self) -> None:
        amount = f"{self.rng.randint(1, 500)}.{self.rng.randint(0, 99):02d}"
        await self._post(f"/v1/assets/{self.symbol}/issue", self.issuer,
                         {"to": self.rng.choice(self.names), "amount": amount})

    async def _step_transfer(self) -> None:
        source, target = self.rng.sample(self.names, 2)
        amount = f"{self.rng.randint(1, 120)}.{self.rng.randint(0, 99):02d}"
        await self._post("/v1/transfers", self.owners[source],
                         {"from": source, "to": target, "asset": self.symbol, "amount": amount})

    async def _step_burn(self) -> None:
        wallet = self.rng.choice(self.names)
        await self._post("/v1/burns", self.owners[wallet], {
            "wallet": wallet, "asset": self.symbol, "amount": f"{self.rng.randint(1, 50)}.00"})

    async def _step_overdraft(self) -> None:
        source, target = self.rng.sample(self.names, 2)
        await self._post("/v1/transfers", self.owners[source],
                         {"from": source, "to": target, "asset": self.symbol, "amount": "99999999.00"})

    async def run(self, commands: int) -> None:
        kinds, weights = zip(*self.steps, strict=True)
        picks = self.rng.choices(kinds, weights, k=commands)
        gate = asyncio.Semaphore(self.concurrency)

        async def one(step: Callable[[], Awaitable[None]]) -> None:
            async with gate:
                await step()

        await asyncio.gather(*(one(step) for step in picks))


async def settled(pool: asyncpg.Pool, command_ids: list[str], seconds: float = 90.0) -> None:
    """Wait until every command is final in ``command_log``: its last event has been applied."""
    deadline = time.monotonic() + seconds
    while True:
        done = await pool.fetchval(
            "SELECT count(*) FROM command_log WHERE command_id = ANY($1::text[]) AND status = ANY($2)",
            command_ids, list(FINAL))
        if done == len(set(command_ids)):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"only {done} of {len(set(command_ids))} commands final in {seconds}s")
        await asyncio.sleep(0.2)


async def caught_up(pool: asyncpg.Pool, bootstrap: str, seconds: float = 60.0) -> dict[int, int]:
    """Wait until the live projection has applied every committed record of ``ledger.events``."""
    last = await last_record_offsets(bootstrap)
    deadline = time.monotonic() + seconds
    while True:
        async with pool.acquire() as conn:
            stored = await shadow.offsets(conn, shadow.LIVE, "views", topics.EVENTS)
        if all(stored.get(p, 0) > offset for p, offset in last.items()):
            return stored
        if time.monotonic() > deadline:
            raise AssertionError(f"projection at {stored}, last records at {last}")
        await asyncio.sleep(0.2)


async def last_record_offsets(bootstrap: str) -> dict[int, int]:
    """The offset of the last committed record per partition of ``ledger.events``."""
    counts = await read_events(bootstrap)
    return {p: max(offsets) for p, offsets in counts.items() if offsets}


async def read_events(bootstrap: str) -> dict[int, list[int]]:
    """Offsets of every committed record of ``ledger.events``, per partition."""
    read = await read_to_end(bootstrap, topics.EVENTS)
    return {p: [r.offset for r in records] for p, records in read.items()}


async def replay_matches_live(running: Running, pool: asyncpg.Pool) -> dict[str, tuple[int, str]]:
    """Rebuild every view from offset 0 into the shadow schema (no swap) and compare it with
    the live tables, table by table; returns the live checksums."""
    s = running.stack.settings
    dsn = asyncpg_dsn(s.database_url)
    await rebuild.rebuild(s.kafka_bootstrap, dsn, swap=False, progress=rebuild.Progress(out=None),
                          keys=running.stack.keys)
    try:
        async with pool.acquire() as conn:
            live = await shadow.checksums(conn, shadow.LIVE)
            replayed = await shadow.checksums(conn, shadow.SHADOW)
            differ = [t for t in sorted(set(live) | set(replayed)) if live.get(t) != replayed.get(t)]
            samples = {t: await _sample(conn, t) for t in differ}
    finally:
        async with pool.acquire() as conn:
            await shadow.drop_shadow(conn)
    assert not differ, samples
    return live


async def _sample(conn: asyncpg.Connection, table: str) -> list[str]:
    """A few rows that differ between the live table and its replay, bookkeeping left out."""
    columns = ", ".join(f'"{r[0]}"' for r in await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum", f"ledger.{table}") if r[0] != "updated_at")
    rows = await conn.fetch(
        f"(SELECT 'live' AS side, {columns} FROM ledger.{table} EXCEPT "
        f"SELECT 'live', {columns} FROM {shadow.SHADOW}.{table}) UNION ALL "
        f"(SELECT 'replay', {columns} FROM {shadow.SHADOW}.{table} EXCEPT "
        f"SELECT 'replay', {columns} FROM ledger.{table}) LIMIT 6")
    return [str(dict(r)) for r in rows]


async def no_double_counting(pool: asyncpg.Pool, bootstrap: str) -> None:
    """Every committed record is in ``events`` or the dead-letter topic, once; each balance is the
    sum of its ledger entries."""
    in_topic = await read_events(bootstrap)
    rows = await pool.fetch("SELECT partition, \"offset\" FROM events WHERE topic = $1", topics.EVENTS)
    projected: dict[int, list[int]] = {}
    for p, o in rows:
        projected.setdefault(p, []).append(o)
    dead = {(x.where.partition, x.where.offset) for x in await dlq.read_letters(bootstrap)
            if x.where.topic == topics.EVENTS}
    for p, offsets in in_topic.items():
        mine = sorted(projected.get(p, []))
        assert len(mine) == len(set(mine)), f"partition {p}: an event projected twice"
        assert set(mine) | {o for q, o in dead if q == p} >= set(offsets), f"partition {p}: lost"
    drift = await pool.fetch(
        "SELECT b.wallet, b.asset, b.available + b.held AS balance, sum(e.delta) AS entries "
        "FROM wallet_balances b JOIN ledger_entries e USING (wallet, asset) "
        "GROUP BY b.wallet, b.asset, b.available, b.held HAVING b.available + b.held <> sum(e.delta)")
    assert not drift, [dict(r) for r in drift[:5]]


class ExtraProjector:
    """A projector process of our own, started the way the local stack starts them."""

    def __init__(self, running: Running, metrics_port: int) -> None:
        env = dict(running.stack.env)
        env["LEDGERLINE_PROJECTOR_METRICS_PORT"] = str(metrics_port)
        self.metrics_port = metrics_port
        self.log = running.stack.home / "logs" / f"projector-{metrics_port}.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "ledgerline", "projector"], env=env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def projector_of(running: Running) -> subprocess.Popen[bytes]:
    return running.services.children["projector"]


def kill_projector(running: Running) -> None:
    proc = projector_of(running)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def restart_projector(running: Running) -> None:
    if projector_of(running).poll() is not None:
        running.services.start_one("projector")
