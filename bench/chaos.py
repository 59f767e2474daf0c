"""Clients under faults: a supervised stack of its own, a wallet population sending mixed
commands through HTTP, and the checks that nothing was lost or done twice.

Used by the whole-stack fault tests and by ``python -m bench.soak``. A client sends every command
with an ``Idempotency-Key`` and, on a ``503`` (or no answer at all: the command API itself may be
restarting), sends it again with the same key until it is accepted, as the API asks. Afterwards:

- every accepted command reaches a final outcome, and no command id is decided twice (no event
  type repeats for one command on one aggregate in ``ledger.events``);
- the balances in the views equal the funding plus the effect of every command whose reported
  outcome is ``completed`` / ``settled`` (so nothing reported was lost, nothing unreported done);
- ``ledgerline audit`` finds nothing wrong.
"""

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from common.auth import issue_token
from common.settings import Settings, asyncpg_dsn, load
from common.topic_reader import read_to_end
from events import codec, topics
from ledgerline import local
from ledgerline.stack.ports import free_port
from ledgerline.stack.supervisor import Supervisor

SECRET = "chaos-secret-" + "x" * 40
FINAL = {"completed", "settled", "failed", "rejected"}


@dataclass
class Stack:
    """A whole local stack on free ports, supervised as ``ledgerline up`` supervises its own."""

    settings: Settings
    infra: local.Infra
    services: local.Services
    supervisor: Supervisor
    home: Path
    env: dict[str, str]

    @property
    def command_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.command_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.query_port}"

    @property
    def dsn(self) -> str:
        return asyncpg_dsn(self.infra.database_url)

    def pid(self, part: str) -> int:
        if part == "kafka" and self.infra.broker is not None:
            pid = self.infra.broker.pid
        elif part == "postgres" and self.infra.postgres is not None:
            pid = self.infra.postgres.pid
        else:
            pid = self.services.children[part].pid
        assert pid is not None, f"{part} is not running"
        return pid

    async def back(self, within: float = 90.0) -> float:
        """Wait until every part is up and both APIs are ready; returns how long it took."""
        began = time.monotonic()
        async with httpx.AsyncClient(timeout=3) as http:
            while time.monotonic() - began < within:
                if self.supervisor.all_up():
                    with contextlib.suppress(httpx.TransportError):
                        a = await http.get(f"{self.command_url}/readyz")
                        b = await http.get(f"{self.query_url}/readyz")
                        if a.status_code == b.status_code == 200:
                            return time.monotonic() - began
                await asyncio.sleep(0.2)
        raise AssertionError(f"the stack was not back within {within}s: {self.supervisor.health()}")


@contextlib.contextmanager
def supervised_stack(name: str, *, keep: bool = True, **env_extra: str) -> Iterator[Stack]:
    """The stack in a scratch folder, removed afterwards unless ``keep`` (its logs, its data)."""
    cache = local.cache_dir(os.environ)
    home = Path(tempfile.mkdtemp(prefix=f"ledgerline-{name}-"))
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "DATABASE_URL")}
    env.update(env_extra, LEDGERLINE_PG_PORT=str(free_port()))
    settings = replace(load(env), kafka_bootstrap=f"127.0.0.1:{free_port()}")
    infra = local.start_infra(settings, home, cache, env)
    services = None
    try:
        settings = replace(settings, database_url=infra.database_url, jwt_secret=SECRET,
                           query_port=free_port(), command_port=free_port(),
                           projector_metrics_port=free_port(), processor_metrics_port=free_port(),
                           compliance_metrics_port=free_port())
        penv = local.process_env(settings, infra, SECRET, env)
        services = local.Services(penv, home / "logs")
        services.start()
        services.wait_http(f"http://127.0.0.1:{settings.command_port}/readyz", "command-api")
        services.wait_http(f"http://127.0.0.1:{settings.query_port}/readyz", "query-api")
        supervisor = local.supervisor(infra, services, home)
        supervisor.start_thread()
        try:
            yield Stack(settings, infra, services, supervisor, home, penv)
        finally:
            supervisor.stop()
    finally:
        if services is not None:
            services.stop()
        infra.stop()
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


@dataclass
class Command:
    kind: str  # transfer | trade | burn | register | issue
    path: str
    body: dict[str, Any]
    token: str
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    command_id: str | None = None
    status: int | None = None
    outcome: str | None = None  # the status in the answer: accepted, or final with Prefer: wait


@dataclass
class Tally:
    commands: int = 0
    accepted: int = 0
    unavailable: int = 0  # 503 answers
    outcomes: Counter[str] = field(default_factory=Counter)  # not_sent / unknown, of the 503s
    no_answer: int = 0  # transport errors: the command API itself away
    in_progress: int = 0  # 409 idempotency_key_in_progress: the key's first send not settled yet
    errors: list[str] = field(default_factory=list)  # 500s and anything unexpected
    slow: list[float] = field(default_factory=list)  # answers slower than the bound
    max_latency: float = 0.0
    id_changed: int = 0  # a retry with the same key answered with another command id


class Population:
    """Wallets with two assets and a client that retries ``503`` with the same key."""

    def __init__(self, stack: Stack, wallets: int = 16, seed: int | None = None) -> None:
        self.stack = stack
        self.rng = random.Random(seed)
        tag = uuid.uuid4().hex[:6]
        self.cash, self.bond = f"C{tag.upper()}", f"B{tag.upper()}"
        self.wallets = [f"soak-{tag}-{i}" for i in range(wallets)]
        self.operator = issue_token(SECRET, "chaos-operator", roles=["operator"])
        self.issuer = issue_token(SECRET, "chaos-treasury", roles=["issuer"],
                                  wallets=["chaos-treasury"], assets=[self.cash, self.bond])
        self.bound = stack.settings.unavailable_seconds
        self.tally = Tally()
        self.sent: list[Command] = []
        self.funding = {"cash": 1_000_00, "bond": 100}

    async def send(self, http: httpx.AsyncClient, cmd: Command, *, wait: float = 0.0,
                   give_up: float = 300.0, retry_pause: float | None = None) -> Command:
        """Send until accepted (or refused for a reason of its own), retrying 503 and silence
        (after ``retry_pause`` seconds if given, else as ``Retry-After`` says, up to 1 s)."""
        t = self.tally
        t.commands += 1
        headers = {"Authorization": f"Bearer {cmd.token}", "Idempotency-Key": cmd.key}
        if wait:
            headers["Prefer"] = f"wait={wait:g}"
        url = f"{self.stack.command_url}{cmd.path}"
        deadline = time.monotonic() + give_up
        while time.monotonic() < deadline:
            began = time.monotonic()
            try:
                answer = await http.post(url, json=cmd.body, headers=headers,
                                         timeout=self.bound + wait + 10)
            except httpx.TransportError:
                t.no_answer += 1
                await asyncio.sleep(0.5 if retry_pause is None else retry_pause)
                continue
            took = time.monotonic() - began
            t.max_latency = max(t.max_latency, took if not wait else 0.0)
            if not wait and took > self.bound + 1.0:
                t.slow.append(took)
            if answer.status_code == 503:
                t.unavailable += 1
                error = answer.json()["error"]
                t.outcomes[error.get("outcome", "?")] += 1
                if "Retry-After" not in answer.headers or error.get("code") != "unavailable":
                    t.errors.append(f"503 without Retry-After or code: {answer.text[:200]}")
                if cmd.command_id and error.get("command_id") not in (None, cmd.command_id):
                    t.id_changed += 1
                cmd.command_id = error.get("command_id") or cmd.command_id
                await asyncio.sleep(retry_pause if retry_pause is not None else
                                    min(float(answer.headers.get("Retry-After", 1)), 1.0)
                                    * self.rng.uniform(0.5, 1.0))
                continue
            if answer.status_code == 409 and _code(answer) == "idempotency_key_in_progress":
                # The first send under this key is unsettled (its request was cut off: a 503,
                # the command API killed); the API says retry, and the key resolves to that one
                # command once the send settles or goes stale.
                t.in_progress += 1
                await asyncio.sleep(retry_pause if retry_pause is not None else
                                    float(answer.headers.get("Retry-After", 1)))
                continue
            if answer.status_code >= 500:
                t.errors.append(f"{answer.status_code} {cmd.path}: {answer.text[:200]}")
                await asyncio.sleep(0.5)
                continue
            first = cmd.status is None
            cmd.status = answer.status_code
            if answer.status_code in (200, 202):
                body = answer.json()
                if cmd.command_id not in (None, body["command_id"]):
                    t.id_changed += 1
                cmd.command_id, cmd.outcome = body["command_id"], body["status"]
                if first:  # a command sent again (same key) is still one command
                    t.accepted += 1
                    self.sent.append(cmd)
            else:
                t.errors.append(f"{answer.status_code} {cmd.path}: {answer.text[:200]}")
            return cmd
        t.errors.append(f"gave up on {cmd.kind} {cmd.key} after {give_up}s")
        return cmd

    async def setup(self, http: httpx.AsyncClient) -> None:
        for symbol, decimals in ((self.cash, 2), (self.bond, 0)):
            await self.send(http, Command("register", "/v1/assets", {
                "symbol": symbol, "name": symbol, "decimals": decimals,
                "issuer": "chaos-treasury", "max_supply": None}, self.issuer), wait=10)
        for wallet in self.wallets:
            for symbol, units in ((self.cash, self.funding["cash"]), (self.bond, self.funding["bond"])):
                await self.send(http, Command("issue", f"/v1/assets/{symbol}/issue", {
                    "to": wallet, "amount": _decimal(units, 2 if symbol == self.cash else 0)},
                    self.issuer), wait=10)

    def next_command(self) -> Command:
        rng = self.rng
        roll = rng.random()
        a, b = rng.sample(self.wallets, 2)
        if roll < 0.6:
            return Command("transfer", "/v1/transfers", {
                "from": a, "to": b, "asset": self.cash,
                "amount": _decimal(rng.randint(1, 20_000), 2)}, self.operator)
        if roll < 0.85:
            return Command("trade", "/v1/trades", {
                "seller": a, "buyer": b, "asset": self.bond, "quantity": str(rng.randint(1, 5)),
                "payment_asset": self.cash, "price": _decimal(rng.randint(100, 20_000), 2)},
                self.operator)
        return Command("burn", "/v1/burns", {
            "wallet": a, "asset": self.cash, "amount": _decimal(rng.randint(1, 500), 2)},
            self.operator)

    async def probe(self, http: httpx.AsyncClient, within: float = 180.0,
                    retry_pause: float | None = None) -> None:
        """A transfer through the whole pipeline, returning once its outcome is final: how long
        the stack takes to do its work again, not only to answer. ``retry_pause``: how soon a
        503 or silence is tried again (a measuring client asks often)."""
        a, b = self.rng.sample(self.wallets, 2)
        cmd = Command("transfer", "/v1/transfers", {"from": a, "to": b, "asset": self.cash,
                                                    "amount": "0.01"}, self.operator)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            await self.send(http, cmd, wait=10, retry_pause=retry_pause)
            if cmd.outcome in FINAL:
                return
        raise AssertionError(f"a probe transfer was not decided within {within}s")

    async def load(self, stop: asyncio.Event, clients: int = 4, pause: float = 0.1) -> None:
        """``clients`` concurrent clients, each sending a command, then pausing, until ``stop``."""
        async with httpx.AsyncClient() as http:
            async def one() -> None:
                while not stop.is_set():
                    await self.send(http, self.next_command())
                    await asyncio.sleep(pause * self.rng.uniform(0.5, 1.5))

            await asyncio.gather(*(one() for _ in range(clients)))

    # -- the checks afterwards ------------------------------------------------------------------

    async def outcomes(self, within: float = 120.0) -> dict[str, str]:
        """Every accepted command's final status, waiting for the pipeline to decide them all."""
        ids = [c.command_id for c in self.sent if c.command_id]
        deadline = time.monotonic() + within
        while True:
            try:
                conn = await asyncpg.connect(self.stack.dsn, timeout=5)
                try:
                    rows = await conn.fetch("SELECT command_id, status FROM command_log "
                                            "WHERE command_id = ANY($1::text[])", ids)
                finally:
                    await conn.close()
                status = {r["command_id"]: r["status"] for r in rows}
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                status = {}
            if all(status.get(i) in FINAL for i in ids):
                return status
            if time.monotonic() > deadline:
                missing = [i for i in ids if status.get(i) not in FINAL]
                raise AssertionError(f"{len(missing)} accepted commands never decided: {missing[:5]}")
            await asyncio.sleep(1.0)

    async def doubled(self) -> list[str]:
        """Command ids of ours with an event type repeated on one aggregate: decided twice."""
        ours = {c.command_id for c in self.sent}
        seen: Counter[tuple[str, str, str]] = Counter()
        for records in (await read_to_end(self.stack.infra.bootstrap, topics.EVENTS)).values():
            for record in records:
                try:
                    env = codec.decode(record.value)
                except codec.DecodeError:
                    continue  # not ours: another test's poison
                if env.command_id in ours:
                    seen[(env.command_id, env.type, env.key)] += 1
        return sorted({cid for (cid, _, _), n in seen.items() if n > 1})

    async def balance_mismatches(self, status: dict[str, str]) -> list[str]:
        """The views' balances against funding plus every command reported completed."""
        cash, bond = self.cash, self.bond
        expected: Counter[tuple[str, str]] = Counter()
        for w in self.wallets:
            expected[(w, cash)] += self.funding["cash"]
            expected[(w, bond)] += self.funding["bond"]
        for c in self.sent:
            done = status.get(c.command_id or "") in ("completed", "settled")
            if not done or c.kind not in ("transfer", "trade", "burn"):
                continue
            b = c.body
            if c.kind == "transfer":
                expected[(b["from"], cash)] -= _units(b["amount"])
                expected[(b["to"], cash)] += _units(b["amount"])
            elif c.kind == "burn":
                expected[(b["wallet"], cash)] -= _units(b["amount"])
            else:
                q, p = int(b["quantity"]), _units(b["price"])
                expected[(b["seller"], bond)] -= q
                expected[(b["buyer"], bond)] += q
                expected[(b["buyer"], cash)] -= p
                expected[(b["seller"], cash)] += p
        conn = await asyncpg.connect(self.stack.dsn)
        try:
            rows = await conn.fetch("SELECT wallet, asset, available, held FROM wallet_balances "
                                    "WHERE asset = ANY($1::text[])", [cash, bond])
        finally:
            await conn.close()
        actual = {(r["wallet"], r["asset"]): int(r["available"]) + int(r["held"]) for r in rows}
        return [f"{k}: views {actual.get(k, 0)}, outcomes say {v}"
                for k, v in expected.items() if actual.get(k, 0) != v]

    def audit(self) -> tuple[int, str]:
        env = {**self.stack.env}
        done = subprocess.run([sys.executable, "-m", "ledgerline", "audit"], env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        return done.returncode, done.stdout[-3000:] + done.stderr[-2000:]


def _code(answer: httpx.Response) -> str | None:
    try:
        return str(answer.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


def _decimal(units: int, decimals: int) -> str:
    if decimals == 0:
        return str(units)
    return f"{units // 10**decimals}.{units % 10**decimals:0{decimals}d}"


def _units(text: str) -> int:
    whole, _, frac = text.partition(".")
    return int(whole) * 100 + int((frac + "00")[:2]) if frac else int(whole) * 100
