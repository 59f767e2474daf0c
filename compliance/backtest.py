"""``ledgerline compliance backtest RULES_FILE``: what a candidate rule set would have raised.

The event log is replayed from offset 0 to its end (as it stands when the backtest starts)
through the monitor's own code with the candidate rules, into shadow schema
``compliance_backtest`` (the live tables' copies, dropped and made again each run), never
touching the live alerts. Then, per rule, the candidate's alerts are compared with the live
ones by signature (rule, wallet, asset and trigger, without the rules version):

- ``new``: the candidate raises it, the live rules did not;
- ``gone``: the live rules raised it, the candidate does not;
- ``changed``: both raise it with different evidence;
- ``unchanged``: both raise it with the same evidence.

Progress (records done / total, rate) goes to stderr every second. The live monitor should have
read the log as far as the backtest does; if it has not, the backtest says so (its missing
alerts would show as ``new``).
"""

import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from common import runtime
from common.kafka import KafkaTarget, client_options
from common.settings import Settings, asyncpg_dsn
from common.topic_reader import partitions_of
from compliance import rules as rules_file
from compliance import store
from compliance.worker import Monitor
from events import topics
from events.compliance import evidence_sql

SHADOW = "compliance_backtest"
TABLES = ("offsets", "state", "state_entries", "cases", "alerts", "alert_evidence", "case_notes")


@dataclass
class Report:
    """Per rule: signatures new, gone, changed and unchanged against the live alerts."""

    new: dict[str, list[str]] = field(default_factory=dict)
    gone: dict[str, list[str]] = field(default_factory=dict)
    changed: dict[str, list[str]] = field(default_factory=dict)
    unchanged: Counter[str] = field(default_factory=Counter)
    records: int = 0
    live_behind: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> (live, end)

    @property
    def differences(self) -> int:
        return sum(len(v) for d in (self.new, self.gone, self.changed) for v in d.values())

    def render(self) -> str:
        rules = sorted(set(self.new) | set(self.gone) | set(self.changed) | set(self.unchanged))
        lines = [f"{'rule':<16} {'new':>6} {'gone':>6} {'changed':>8} {'unchanged':>10}"]
        for r in rules:
            lines.append(f"{r:<16} {len(self.new.get(r, [])):>6} {len(self.gone.get(r, [])):>6} "
                         f"{len(self.changed.get(r, [])):>8} {self.unchanged[r]:>10}")
        lines.append(f"{self.records} records replayed; {self.differences} differences")
        for p, (live, end) in sorted(self.live_behind.items()):
            lines.append(f"note: the live monitor is at {live} of partition {p}, the backtest read to {end}")
        return "\n".join(lines)


async def make_shadow(conn: asyncpg.Connection, schema: str = SHADOW) -> None:
    """Empty copies of the live tables in ``schema`` (dropped first if it exists)."""
    await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    await conn.execute(f"CREATE SCHEMA {schema}")
    for table in TABLES:
        await conn.execute(f"CREATE TABLE {schema}.{table} (LIKE {store.SCHEMA}.{table} INCLUDING ALL)")


async def replay(bootstrap: KafkaTarget, pool: asyncpg.Pool, rules: rules_file.RuleSet,
                 progress: Callable[[int, int], None] | None = None) -> tuple[int, dict[int, int]]:
    """Replay ``ledger.events`` from 0 to its current end into the shadow schema; returns the
    records read and, per partition, the offset after the last record read (the end offset
    may lie further, past a transaction's commit marker)."""
    tps = [TopicPartition(topics.EVENTS, p) for p in await partitions_of(bootstrap, topics.EVENTS)]
    consumer = AIOKafkaConsumer(**client_options(bootstrap), enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 * 1024 * 1024)
    monitor = Monitor(pool, rules, None, schema=SHADOW, notify=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
        await consumer.seek_to_beginning(*tps)
        await monitor.load([tp.partition for tp in tps])
        total, done = sum(ends.values()), 0
        reached: dict[int, int] = {}
        while any([await consumer.position(tp) < ends[tp.partition] for tp in tps]):
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            kept = {tp.partition: [r for r in rs if r.offset < ends[tp.partition]]
                    for tp, rs in batches.items()}
            kept = {p: rs for p, rs in kept.items() if rs}
            reached.update({p: rs[-1].offset + 1 for p, rs in kept.items()})
            await monitor.apply(kept)
            done += sum(len(rs) for rs in kept.values())
            if progress is not None:
                progress(done, total)
        return done, reached
    finally:
        await consumer.stop()


async def compare(conn: asyncpg.Connection) -> Report:
    report = Report()
    live = {r["signature"]: r for r in await conn.fetch(
        f"SELECT signature, rule, {evidence_sql('a', store.SCHEMA)} AS evidence "
        f"FROM {store.SCHEMA}.alerts a")}
    shadow = {r["signature"]: r for r in await conn.fetch(
        f"SELECT signature, rule, {evidence_sql('a', SHADOW)} AS evidence FROM {SHADOW}.alerts a")}
    for sig, row in shadow.items():
        if sig not in live:
            report.new.setdefault(row["rule"], []).append(sig)
        elif sorted(live[sig]["evidence"]) != sorted(row["evidence"]):
            report.changed.setdefault(row["rule"], []).append(sig)
        else:
            report.unchanged[row["rule"]] += 1
    for sig, row in live.items():
        if sig not in shadow:
            report.gone.setdefault(row["rule"], []).append(sig)
    return report


class _Progress:
    def __init__(self, out: TextIO) -> None:
        self.out, self.started, self.last = out, time.monotonic(), 0.0

    def __call__(self, done: int, total: int, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self.last >= 1.0:
            self.last = now
            rate = done / max(now - self.started, 1e-6)
            print(f"backtest: {done}/{total} records ({rate:,.0f}/s)", file=self.out, flush=True)


async def backtest(bootstrap: KafkaTarget, dsn: str, rules: rules_file.RuleSet, *,
                   out: TextIO = sys.stderr) -> Report:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2,
                                     server_settings={"application_name": "ledgerline-backtest"})
    try:
        async with pool.acquire() as conn:
            await make_shadow(conn)
        progress = _Progress(out)
        records, reached = await replay(bootstrap, pool, rules, progress)
        progress(records, records, final=True)
        async with pool.acquire() as conn:
            report = await compare(conn)
            live = await store.load_offsets(conn, topics.EVENTS)
        report.records = records
        report.live_behind = {p: (live.get(p, 0), end) for p, end in reached.items() if live.get(p, 0) < end}
        return report
    finally:
        await pool.close()


def main(settings: Settings, rules_path: str) -> int:
    """Print the report; 0 when it ran (differences are the answer, not an error)."""
    try:
        rules = rules_file.load(rules_path)
    except rules_file.RulesError as exc:
        print(f"ledgerline compliance backtest: {exc}", file=sys.stderr)
        return 2
    report = runtime.run(backtest(settings.kafka, asyncpg_dsn(settings.database_url), rules))
    print(report.render())
    return 0

