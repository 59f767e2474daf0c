"""The compliance monitor, exactly once: SIGKILLed in the middle of a batch three times during a
workload, its alerts equal a clean replay (the backtest with the live rules finds no
difference), every alert reaches ``compliance.alerts``; a backtest with a lowered threshold
reports exactly the extra alerts an oracle over the views expects."""

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from io import StringIO

import asyncpg
import httpx
import pytest

from common.kafka import client_options
from common.settings import asyncpg_dsn
from common.topic_reader import read_to_end
from compliance import backtest, rules
from events import topics
from events.compliance import decode_alert
from tests.conftest import COMPLIANCE_RULES, REPO, Running, unique
from tests.e2e.compliance_support import Ledger, monitor_caught_up

pytestmark = pytest.mark.integration

_IN_BATCH = """SELECT count(*) FROM pg_stat_activity
               WHERE application_name = 'ledgerline-compliance' AND xact_start IS NOT NULL"""


@pytest.fixture
async def pool(running: Running) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(asyncpg_dsn(running.stack.settings.database_url), min_size=1, max_size=4)
    yield p
    await p.close()


async def _kill_mid_batch(running: Running, pool: asyncpg.Pool, seconds: float = 30.0) -> bool:
    """SIGKILL the monitor while one of its batch transactions is open, then start it again."""
    deadline = time.monotonic() + seconds
    killed = False
    while time.monotonic() < deadline:
        if await pool.fetchval(_IN_BATCH):
            os.kill(running.services.children["compliance"].pid, signal.SIGKILL)
            killed = True
            break
        await asyncio.sleep(0.002)
    if killed:
        running.services.children["compliance"].wait(10)
        running.services.restart_dead()
    return killed


async def _workload(ledger: Ledger, payers: list[str], leaves: list[str], seed: int) -> None:
    rnd = random.Random(seed)
    for payer in payers:
        # Enough for any 8 payments whatever the draws: the payers run concurrently, so which
        # payer draws which amount depends on how their requests interleave.
        await ledger.fund(payer, 8 * 1_000_000)

    async def pay(payer: str) -> None:
        for i in range(8):
            amount = rnd.choice([950_000, 10, 1_000_000, 960_000, 5])
            await ledger.send(payer, leaves[(i + payers.index(payer)) % len(leaves)], amount)

    await asyncio.gather(*(pay(p) for p in payers))


async def test_sigkill_mid_batch_three_times_alerts_equal_a_clean_replay(
    http: httpx.AsyncClient, running: Running, pool: asyncpg.Pool
) -> None:
    await monitor_caught_up(running, seconds=120)  # e.g. back from a broker restart
    ledger = await Ledger(http, running).start()
    payers = [unique("payer") for _ in range(6)]
    leaves = [unique("leaf") for _ in range(5)]
    # A batch of the monitor's is a few milliseconds: small payments keep it busy until it has
    # been caught in one three times (the workload alone may be over before that).
    keep_busy = asyncio.Event()
    trickler, sink = unique("trickle"), unique("sink")
    await ledger.fund(trickler, 1_000_000)

    async def trickle() -> None:
        while not keep_busy.is_set():
            await ledger.send(trickler, sink, 1)

    work = asyncio.gather(_workload(ledger, payers, leaves, seed=7), trickle())
    kills = 0
    try:
        for _ in range(6):
            await asyncio.sleep(1.0)
            kills += await _kill_mid_batch(running, pool)
            if kills == 3:
                break
    finally:
        keep_busy.set()
        await work
    assert kills == 3, "the monitor was not caught in a batch three times"
    await monitor_caught_up(running, seconds=90)

    mine = await pool.fetch("SELECT rule, count(*) FROM compliance.alerts WHERE asset = $1 GROUP BY rule",
                            ledger.symbol)
    assert {r["rule"] for r in mine} >= {"large_movement", "structuring", "velocity", "fan_out", "fan_in"}

    report = await backtest.backtest(running.stack.settings.kafka_bootstrap,
                                     asyncpg_dsn(running.stack.settings.database_url),
                                     rules.load(COMPLIANCE_RULES), out=StringIO())
    assert report.differences == 0, report.render()
    assert report.live_behind == {}
    assert sum(report.unchanged.values()) == await pool.fetchval("SELECT count(*) FROM compliance.alerts")
    assert await pool.fetchval("SELECT count(*) FROM reporting.alerts") == sum(report.unchanged.values())

    # Every alert reaches compliance.alerts (at least once; consumers de-duplicate by id).
    deadline = time.monotonic() + 30
    while await pool.fetchval("SELECT count(*) FROM compliance.alerts WHERE NOT published"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    sent = {decode_alert(r.value).id for rs in (await read_to_end(
        running.stack.settings.kafka_bootstrap, topics.ALERTS)).values() for r in rs}
    assert sent == {r[0] for r in await pool.fetch("SELECT alert_id FROM compliance.alerts")}


async def test_backtest_reports_no_difference_for_the_live_rules_and_an_oracle_for_a_lowered_one(
    http: httpx.AsyncClient, running: Running, pool: asyncpg.Pool,
) -> None:
    ledger = await Ledger(http, running).start()
    w, x = unique("w"), unique("x")
    await ledger.fund(w, 3 * 999_999)
    for amount in (600_000, 700_000, 10, 499_999):
        await ledger.send(w, x, amount)
    await monitor_caught_up(running)

    # The CLI, with the live rules: no difference, and progress on stderr.
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "ledgerline", "compliance", "backtest", str(COMPLIANCE_RULES)],
        env=running.stack.env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "; 0 differences" in done.stdout, done.stdout
    assert "backtest: " in done.stderr and " records (" in done.stderr

    # The candidate lowers the threshold of this asset alone to 500000.
    candidate = COMPLIANCE_RULES.read_text().replace(
        'version = "test-1"', 'version = "candidate-1"').replace(
        "default_threshold = 1000000", f"default_threshold = 1000000\nthresholds = {{ {ledger.symbol} = 500000 }}")
    path = REPO / ".cache" / f"candidate-{ledger.symbol}.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(candidate)
    try:
        report = await backtest.backtest(running.stack.settings.kafka_bootstrap,
                                         asyncpg_dsn(running.stack.settings.database_url),
                                         rules.load(path), out=StringIO())
    finally:
        path.unlink()
    # The oracle, from the views: every issue and transfer of the asset at 500000 or more and
    # under the live threshold.
    expected = {r[0] for r in await pool.fetch(
        """SELECT event_id FROM events WHERE type IN ('TokensIssued', 'TransferConfirmed')
           AND coalesce(payload->>'asset', payload->>'symbol') = $1
           AND (payload->>'amount')::numeric >= 500000 AND (payload->>'amount')::numeric < 1000000""",
        ledger.symbol)}
    assert len(expected) == 5  # three issues of 999999, the transfers of 600000 and 700000
    assert set(report.new) == {"large_movement"} and report.gone == {} and report.changed == {}, report.render()
    new = await pool.fetch(f"SELECT evidence FROM {backtest.SHADOW}.alerts WHERE signature = ANY($1::text[])",
                           report.new["large_movement"])
    assert sorted(e for r in new for e in r[0]) == sorted(expected)


@dataclass
class _Record:
    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes = b"wallet:poison"


async def test_a_poison_record_is_dead_lettered_and_the_monitor_goes_on(
        running: Running, pool: asyncpg.Pool) -> None:
    """The monitor's own code, into a schema of the test's own, fed a batch whose middle record
    is garbage: it lands in ``ledger.dlq`` with the standard headers, the offsets move past it
    and the record after it raises its alert."""
    from aiokafka import AIOKafkaProducer

    from compliance.worker import Monitor
    from events.codec import encode, envelope
    from events.messages import TransferConfirmed

    bootstrap = running.stack.settings.kafka_bootstrap
    schema = "compliance_poison_test"
    async with pool.acquire() as conn:
        await backtest.make_shadow(conn, schema)
    before = {p: len(rs) for p, rs in (await read_to_end(bootstrap, topics.DLQ)).items()}
    producer = AIOKafkaProducer(**client_options(bootstrap), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        monitor = Monitor(pool, rules.load(COMPLIANCE_RULES), producer, schema=schema, notify=False)
        await monitor.load([0])
        big = envelope(TransferConfirmed(transfer_id="t", source="poisoned", target="b", asset="X",
                                         amount=5_000_000, available_after=0, held_after=0),
                       key="wallet:poisoned", command_id="c", principal="p")
        offset = 10**12
        written = await monitor.apply({0: [_Record(topics.EVENTS, 0, offset, b"not an envelope"),
                                           _Record(topics.EVENTS, 0, offset + 1, encode(big))]})
    finally:
        await producer.stop()
    assert [a.rule for a in written.alerts] == ["large_movement", "velocity"]
    assert await pool.fetchval(f"SELECT next_offset FROM {schema}.offsets WHERE partition = 0") == offset + 2
    letters = [r for p, rs in (await read_to_end(bootstrap, topics.DLQ)).items() for r in rs[before.get(p, 0):]]
    [letter] = [r for r in letters if dict(r.headers).get("source_offset") == str(offset).encode()]
    headers = dict(letter.headers)
    assert headers["source_topic"] == topics.EVENTS.encode() and headers["consumer"] == b"ledger-compliance"
    assert b"not an envelope" in letter.value and headers["error"]
