"""Helpers for the processor's fault tests: processors of their own, a command workload produced
straight to Kafka, and the ledger's facts read back from ``ledger.events``.

The checks read the system of record (``ledger.events``, ``read_committed``) and replay it: each
command decided once, each balance change made on the balance before it (so nothing was decided
twice or on stale state), no credit lost, and conservation per asset.
"""

import asyncio
import contextlib
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from events import codec, topics
from events.codec import Envelope
from events.keys import asset_key, wallet_key
from events.messages import (
    InitiateTransfer,
    IssueRejected,
    IssueTokens,
    Message,
    RegisterAsset,
    TokensIssued,
    TransferConfirmed,
    TransferFailed,
    TransferInitiated,
    WalletCredited,
)
from ledgerline.settings import asyncpg_dsn
from tests.conftest import Running

# Test processors: a short session so a killed one's partitions move on quickly, and small
# batches so a stream is worked through in many transactions (more points to crash at).
FAST = {"LEDGERLINE_PROCESSOR_SESSION_TIMEOUT_MS": "6000", "LEDGERLINE_PROCESSOR_MAX_RECORDS": "40"}


# --- processes ----------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stopped(self) -> bool:
        """True while the process is stopped by a signal (SIGSTOP)."""
        with contextlib.suppress(OSError):
            return Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
        return False


@dataclass
class Processors:
    """Processor processes this test starts, signals and stops, by pid."""

    env: dict[str, str]
    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, **env: str) -> Proc:
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "ledgerline", "processor"], env={**self.env, **FAST, **env},
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGCONT)
                    proc.popen.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.popen.wait(15)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()


@contextlib.contextmanager
def own_processors(running: Running, test: str) -> Iterator[Processors]:
    """Stop the stack's processor, hand the test processors of its own, and start the stack's
    processor again afterwards for the tests that follow."""
    services = running.services
    theirs = services.children.get("processor")
    if theirs is not None and theirs.poll() is None:
        theirs.send_signal(signal.SIGTERM)
        theirs.wait(30)
    log_dir = running.stack.home / "logs" / test
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = Processors(dict(running.stack.env), log_dir)
    try:
        yield procs
    finally:
        procs.stop_all()
        services.start_one("processor")


async def wait_for_log(proc: Proc, text: str, within: float = 30.0, after: int = 0) -> int:
    """Wait until ``text`` appears in the process's log after character ``after``; returns where."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = proc.text().find(text, after)
        if found >= 0:
            return found + len(text)
        if proc.popen.poll() is not None:
            raise AssertionError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.text()[-3000:]}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"{proc.name} did not log {text!r} in {within}s:\n{proc.text()[-3000:]}")


async def wait_until_stopped(proc: Proc, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not proc.stopped():
        if time.monotonic() > deadline:
            raise AssertionError(f"{proc.name} was not stopped within {within}s")
        await asyncio.sleep(0.05)


async def wait_for_exit(proc: Proc, within: float) -> int:
    deadline = time.monotonic() + within
    while proc.popen.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{proc.name} is still running after {within}s:\n{proc.text()[-3000:]}")
        await asyncio.sleep(0.05)
    return proc.popen.returncode


# --- workload -------------------------------------------------------------------------------------


def _env(message: Message, key: str, command_id: str | None = None,
         correlation_id: str | None = None) -> Envelope:
    command_id = command_id or codec.new_id()
    return codec.envelope(message, key=key, command_id=command_id, id=command_id,
                          principal="fault-test", correlation_id=correlation_id)


@dataclass
class Workload:
    """Commands as clients would send them: register an asset, issue, and a stream of transfers
    among a few wallets with issues mixed in. (More kinds of command join the stream here.)"""

    symbol: str
    wallets: list[str]
    setup: list[Envelope] = field(default_factory=list)
    stream: list[Envelope] = field(default_factory=list)
    transfers: list[str] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, symbol: str, wallets: list[str], *, transfers: int, seed: int,
              funds: int = 1_000, issue_every: int = 10) -> "Workload":
        rng = random.Random(seed)
        w = cls(symbol, wallets)
        w.setup.append(_env(RegisterAsset(symbol=symbol, name=symbol, decimals=0, issuer="treasury"),
                            asset_key(symbol)))
        for wallet in wallets:
            w.setup.append(w._issue(wallet, funds))
        for n in range(transfers):
            if n % issue_every == issue_every - 1:
                w.stream.append(w._issue(rng.choice(wallets), rng.randint(1, 300)))
            source, target = rng.sample(wallets, 2)
            w.stream.append(w.transfer(source, target, rng.randint(1, 400)))
        return w

    def _issue(self, wallet: str, amount: int) -> Envelope:
        env = _env(IssueTokens(symbol=self.symbol, to=wallet, amount=amount), asset_key(self.symbol))
        self.issues.append(env.command_id)
        return env

    def transfer(self, source: str, target: str, amount: int) -> Envelope:
        transfer_id = codec.new_id()
        self.transfers.append(transfer_id)
        return _env(InitiateTransfer(transfer_id=transfer_id, source=source, target=target,
                                     asset=self.symbol, amount=amount),
                    wallet_key(source), correlation_id=transfer_id)


async def produce(bootstrap: str, envelopes: list[Envelope]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = [await producer.send(topics.COMMANDS, codec.encode(env), key=env.key.encode())
                for env in envelopes]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


# --- the ledger's facts ---------------------------------------------------------------------------


async def read_events(bootstrap: str, isolation: str = "read_committed") -> list[Envelope]:
    """Every event in ``ledger.events``, partition by partition, each in log order."""
    consumer = AIOKafkaConsumer(topics.EVENTS, bootstrap_servers=bootstrap, isolation_level=isolation,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    read: dict[TopicPartition, list[Envelope]] = {}
    try:
        for _ in range(200):  # without a group: every partition, once the metadata is in
            if consumer.assignment():
                break
            await asyncio.sleep(0.05)
        tps = sorted(consumer.assignment())
        end = await consumer.end_offsets(tps)
        for tp in tps:
            await consumer.seek_to_beginning(tp)
            read[tp] = []
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                read[tp].extend(codec.decode(r.value) for r in records)
    finally:
        await consumer.stop()
    return [env for tp in tps for env in read[tp]]


@dataclass
class Facts:
    """What ``ledger.events`` says about one asset."""

    initiated: Counter[str] = field(default_factory=Counter)
    terminal: Counter[str] = field(default_factory=Counter)
    confirmed: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    credited: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, reference)
    issued: Counter[str] = field(default_factory=Counter)  # issue command id -> decisions
    supply: int = 0
    balances: dict[str, int] = field(default_factory=dict)
    stale: list[str] = field(default_factory=list)  # balance changes not made on the balance before
    event_ids: Counter[str] = field(default_factory=Counter)

    def in_flight(self) -> int:
        """Debited but not yet credited."""
        return sum(a for t, a in self.confirmed.items() if not self.credited[("transfer", t)])

    def undecided(self, workload: "Workload") -> int:
        """Commands of the workload without an outcome yet."""
        return (sum(1 for t in workload.transfers if not self.terminal[t])
                + sum(1 for c in workload.issues if not self.issued[c]))

    def change(self, wallet: str, delta: int, after: int, event_id: str) -> None:
        before = self.balances.get(wallet, 0)
        if before + delta != after or after < 0:
            self.stale.append(f"{event_id}: {wallet} {before} {delta:+} -> {after}")
        self.balances[wallet] = after


def facts(events: list[Envelope], symbol: str) -> Facts:
    f = Facts()
    for env in events:
        e: Any = env.payload
        if getattr(e, "asset", getattr(e, "symbol", None)) != symbol:
            continue
        f.event_ids[env.id] += 1
        match e:
            case TransferInitiated():
                f.initiated[e.transfer_id] += 1
            case TransferConfirmed():
                f.terminal[e.transfer_id] += 1
                f.confirmed[e.transfer_id] = e.amount
                f.change(e.source, -e.amount, e.available_after, env.id)
            case TransferFailed():
                f.terminal[e.transfer_id] += 1
                f.failed[e.transfer_id] = e.reason
            case WalletCredited():
                f.credited[(e.kind, e.reference)] += 1
                f.change(e.wallet, e.amount, e.available_after, env.id)
            case TokensIssued():
                f.issued[env.command_id] += 1
                f.supply += e.amount
            case IssueRejected():
                f.issued[env.command_id] += 1
    return f


def assert_decided_once(f: Facts, workload: Workload) -> None:
    """Every command of the workload decided exactly once; nothing lost; conservation."""
    assert not f.stale, f"balance changes not made on the balance before them: {f.stale[:5]}"
    dup_ids = [i for i, n in f.event_ids.items() if n > 1]
    assert not dup_ids, f"event ids written more than once: {dup_ids[:5]}"
    wrong = {t: (f.initiated[t], f.terminal[t]) for t in workload.transfers
             if (f.initiated[t], f.terminal[t]) != (1, 1)}
    assert not wrong, f"transfers not decided exactly once (initiated, terminal): {list(wrong.items())[:5]}"
    assert all(f.credited[("transfer", t)] == 1 for t in f.confirmed), "a confirmed transfer's credit is lost or doubled"
    assert {t for (kind, t) in f.credited if kind == "transfer"} <= set(f.confirmed), "a credit without a debit"
    assert all(f.issued[c] == 1 for c in workload.issues), "an issue not decided exactly once"
    assert sum(n for (kind, _), n in f.credited.items() if kind == "issue") == sum(
        1 for c in workload.issues if f.issued[c]), "an issue credit lost or doubled"
    assert sum(f.balances.values()) + f.in_flight() == f.supply, "conservation"


async def wait_decided(bootstrap: str, workload: Workload, within: float = 40.0) -> Facts:
    """Read the events until every command of the workload has its outcome and every credit."""
    deadline = time.monotonic() + within
    while True:
        f = facts(await read_events(bootstrap), workload.symbol)
        done = (not f.undecided(workload) and f.in_flight() == 0
                and sum(n for (k, _), n in f.credited.items() if k == "issue") >= len(workload.issues))
        if done or time.monotonic() > deadline:
            return f
        await asyncio.sleep(0.5)


async def assert_views_agree(running: Running, f: Facts, symbol: str, within: float = 30.0) -> None:
    """The projected balances equal the replayed ones, and sum to the supply (conservation)."""
    conn = await asyncpg.connect(asyncpg_dsn(running.stack.settings.database_url))
    try:
        deadline = time.monotonic() + within
        while True:
            rows = await conn.fetch("SELECT wallet, available, held FROM wallet_balances WHERE asset = $1",
                                    symbol)
            views = {r["wallet"]: int(r["available"]) for r in rows if r["available"] or r["held"]}
            held = sum(int(r["held"]) for r in rows)
            supply = await conn.fetchval("SELECT supply FROM assets WHERE symbol = $1", symbol)
            expected = {w: b for w, b in f.balances.items() if b}
            if (views, held, supply) == (expected, 0, f.supply) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
    finally:
        await conn.close()
    assert (views, held) == (expected, 0)
    assert supply == f.supply == sum(views.values())


def unique_wallets(prefix: str, n: int) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"{prefix}{tag}-{i}" for i in range(n)]
