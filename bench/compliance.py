"""Compliance monitor benchmark: catch-up beside the projector's on the same log, and live
alert latency beside its floors.

Starts its own Kafka broker and PostgreSQL, produces the projector benchmark's ledger
(:class:`bench.projector.Ledger`: issues and skewed transfers) straight into ``ledger.events``
before anything is timed, then

- catch-up: ``ledgerline projector`` and then ``ledgerline compliance`` (the real processes,
  one after the other, never both at once) each read the whole log from the start; events/s
  and each one's CPU per event, from the moment its first batch is stored until its stored
  offsets reach the end of the log. The monitor runs the shipped rules;
- live: with the monitor caught up (the projector stopped), transfers are produced open loop
  at ``--rate`` events/s for ``--live-seconds``; every ``--trip-every``-th transfer moves the
  large-movement threshold, so its ``TransferConfirmed`` raises a ``large_movement`` alert.
  Latency: from the record's produce acknowledged (idempotent producer, ``acks=all``: the
  record is committed) until the alert's ``NOTIFY``, sent in the monitor's batch transaction,
  is heard: the alert row is then visible to any reader. p50 / p99;
- floors, in the same run on the same stack: a record produced until a ``read_committed``
  consumer has it, and a PostgreSQL commit until its ``NOTIFY`` is heard (the two hops every
  alert takes, see :mod:`bench.command_floor`); and the monitor's own batch transaction during
  the live run (its ``ledgerline_compliance_batch_seconds``).

    python -m bench.compliance --events 1000000
"""

import argparse
import asyncio
import itertools
import json
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from bench import command_floor, stack
from bench.projector import SYMBOL, Ledger, end_offsets, produce
from common.kafka import client_options
from common.settings import asyncpg_dsn
from compliance import rules as rules_file
from compliance import store
from events import codec, topics
from events.compliance import CHANNEL
from ledgerline.stack.ports import free_port
from projector import shadow


def _quantiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return float("nan"), float("nan")
    cut = statistics.quantiles(values, n=100)
    return 1000 * cut[49], 1000 * cut[98]


def _start(process: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "ledgerline", process],
                            env={**env, "LEDGERLINE_LOG_LEVEL": "WARNING"})


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _stored(conn: asyncpg.Connection, process: str) -> dict[int, int]:
    if process == "projector":
        return await shadow.offsets(conn, shadow.LIVE, "views", topics.EVENTS)
    return await store.load_offsets(conn, topics.EVENTS)


async def catch_up(dsn: str, process: str, proc: subprocess.Popen[bytes],
                   ends: dict[int, int]) -> tuple[float, float, int, float]:
    """Waits for ``process`` to store its first batch, then times it to the end of the log.
    Returns events/s, its CPU µs per event over that stretch, the events timed, and the rate
    over the second half of them divided by the rate over the first."""
    conn = await asyncpg.connect(dsn)
    try:
        while not (before := await _stored(conn, process)):
            if proc.poll() is not None:
                raise RuntimeError(f"{process} exited with {proc.returncode}")
            await asyncio.sleep(0.02)
        started, cpu = time.perf_counter(), stack.cpu_seconds(proc.pid)
        first, total = sum(before.values()), sum(ends.values())
        half = None
        while True:
            at = await _stored(conn, process)
            if half is None and sum(at.values()) - first >= (total - first) / 2:
                half = time.perf_counter()
            if all(at.get(p, 0) >= end for p, end in ends.items()):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"{process} exited with {proc.returncode}")
            await asyncio.sleep(0.05)
        done = time.perf_counter()
        elapsed, used = done - started, stack.cpu_seconds(proc.pid) - cpu
        timed = total - first
        half = half or done
        return (timed / elapsed, 1e6 * used / max(timed, 1), timed,
                (half - started) / max(done - half, 1e-3))
    finally:
        await conn.close()


def batch_seconds(metrics_url: str) -> tuple[float, float]:
    """The monitor's ``ledgerline_compliance_batch_seconds`` (sum, count) from its /metrics."""
    with urllib.request.urlopen(metrics_url, timeout=5) as answer:
        text = answer.read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith(("ledgerline_compliance_batch_seconds_sum",
                            "ledgerline_compliance_batch_seconds_count")):
            name, value = line.rsplit(" ", 1)
            found[name.split("{")[0].rsplit("_", 1)[1]] = float(value)
    return found.get("sum", 0.0), found.get("count", 0.0)


class Live:
    """Open-loop transfers, a known share of them tripping ``large_movement``; every tripping
    event's commit time, and every alert's NOTIFY heard time."""

    def __init__(self, ledger: Ledger, threshold: int, trip_every: int) -> None:
        self.ledger, self.threshold, self.trip_every = ledger, threshold, trip_every
        self.committed: dict[str, float] = {}  # event id of a tripping TransferConfirmed -> acked
        self.heard: dict[str, float] = {}  # alert id -> its NOTIFY heard
        self.trips = 0
        self.sent = 0
        self.behind = 0.0  # the most the generator fell behind its schedule, in seconds
        self.cpu = 0.0  # CPU seconds of this process (the generator, its producer) while offering

    def events(self) -> Iterator[tuple[int, bytes, bytes, str | None]]:
        """Records with, for the tripping ``TransferConfirmed``, its event id."""
        for n in itertools.count():
            trip = n % self.trip_every == 0
            for partition, key, value in self.ledger.transfer(self.threshold if trip else None):
                tripping = None
                if trip:
                    env = codec.decode(value)
                    if type(env.payload).__name__ == "TransferConfirmed":
                        tripping = env.id
                yield partition, key, value, tripping

    def on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        now = time.time()
        for alert in json.loads(payload).get("alerts", []):
            self.heard.setdefault(alert, now)

    async def run(self, bootstrap: str, rate: int, seconds: float) -> None:
        producer = AIOKafkaProducer(**client_options(bootstrap), acks="all", enable_idempotence=True,
                                    linger_ms=2)
        await producer.start()
        source = self.events()
        begin, cpu = time.perf_counter(), time.process_time()
        try:
            while (elapsed := time.perf_counter() - begin) < seconds:
                due = int(elapsed * rate)
                if due - self.sent > rate * 0.02:
                    self.behind = max(self.behind, (due - self.sent) / rate)
                for partition, key, value, tripping in itertools.islice(source, max(0, due - self.sent)):
                    sent = await producer.send(topics.EVENTS, value, key=key, partition=partition)
                    if tripping is not None:
                        self.trips += 1
                        sent.add_done_callback(
                            lambda _f, event=tripping: self.committed.__setitem__(event, time.time()))
                    self.sent += 1
                await asyncio.sleep(max(0.0, (self.sent + 1) / rate - (time.perf_counter() - begin)))
            await producer.flush()
            self.cpu = time.process_time() - cpu
        finally:
            await producer.stop()


async def live(bootstrap: str, dsn: str, ledger: Ledger, threshold: int, args: argparse.Namespace,
               metrics_url: str) -> dict[str, Any]:
    run = Live(ledger, threshold, args.trip_every)
    listener = await asyncpg.connect(dsn)
    await listener.add_listener(CHANNEL, run.on_notify)
    try:
        alerts_before = int(await listener.fetchval("SELECT count(*) FROM compliance.alerts"))
        batches_before = batch_seconds(metrics_url)
        await run.run(bootstrap, args.rate, args.live_seconds)
        deadline = time.monotonic() + 30
        while set(run.committed) - set(await _evidence(listener, run.heard)):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        batches_after = batch_seconds(metrics_url)
        evidence = await _evidence(listener, run.heard)
        alerts_after = int(await listener.fetchval("SELECT count(*) FROM compliance.alerts"))
    finally:
        await listener.close()
    latencies = [heard - run.committed[event] for event, heard in evidence.items()
                 if event in run.committed]
    batches = batches_after[1] - batches_before[1]
    return {"sent": run.sent, "trips": run.trips, "timed": len(latencies),
            "missing": len(set(run.committed) - set(evidence)), "behind": run.behind,
            "alerts": alerts_after - alerts_before, "latency": _quantiles(latencies),
            "generator_us": 1e6 * run.cpu / max(run.sent, 1),
            "max": 1000 * max(latencies, default=float("nan")), "batches": batches,
            "batch_ms": 1000 * (batches_after[0] - batches_before[0]) / max(batches, 1)}


async def _evidence(conn: asyncpg.Connection, heard: dict[str, float]) -> dict[str, float]:
    """Tripping event id -> when its large_movement alert was heard."""
    rows = await conn.fetch("SELECT alert_id, evidence FROM compliance.alerts "
                            "WHERE rule = 'large_movement' AND alert_id = ANY($1::text[])", list(heard))
    return {event: heard[r["alert_id"]] for r in rows for event in r["evidence"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.compliance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000,
                        help="events to catch up on (the issue's figure is 1,000,000: see README)")
    parser.add_argument("--wallets", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=int, default=500, help="events/s offered in the live run")
    parser.add_argument("--live-seconds", type=float, default=20.0)
    parser.add_argument("--trip-every", type=int, default=10,
                        help="every N-th live transfer moves the large-movement threshold")
    args = parser.parse_args(argv)

    with stack.infra("compliance", partitions=args.partitions, keep=False) as bench:
        metrics_port = free_port()
        env = {**bench.env, "LEDGERLINE_PROJECTOR_METRICS_PORT": "0",
               "LEDGERLINE_COMPLIANCE_METRICS_PORT": str(metrics_port)}
        asyncio.run(_run(args, bench.infra.bootstrap, asyncpg_dsn(bench.infra.database_url), env,
                         f"http://127.0.0.1:{metrics_port}/metrics"))


async def _run(args: argparse.Namespace, bootstrap: str, dsn: str, env: dict[str, str],
               metrics_url: str) -> None:
    rules = rules_file.load(env.get("LEDGERLINE_COMPLIANCE_RULES") or None)
    threshold = rules.large_movement.threshold(SYMBOL)
    ledger = Ledger(args.wallets, args.partitions)
    started = time.perf_counter()
    produced = await produce(bootstrap, ledger.events(args.events))
    print(f"produced {produced:,} events in {time.perf_counter() - started:.1f}s (before any timing)",
          file=sys.stderr)
    ends = await end_offsets(bootstrap, args.partitions)

    projector = _start("projector", env)
    try:
        p_rate, p_cpu, p_timed, p_slow = await catch_up(dsn, "projector", projector, ends)
    finally:
        _stop(projector)
    monitor = _start("compliance", env)
    try:
        m_rate, m_cpu, m_timed, m_slow = await catch_up(dsn, "compliance", monitor, ends)
        conn = await asyncpg.connect(dsn)
        try:
            caught_alerts = int(await conn.fetchval("SELECT count(*) FROM compliance.alerts"))
        finally:
            await conn.close()
        stack.wait_up(metrics_url.removesuffix("/metrics") + "/healthz")
        figures = await live(bootstrap, dsn, ledger, threshold, args, metrics_url)
    finally:
        _stop(monitor)
    kafka = await command_floor.kafka_hop(bootstrap, transactional=False, samples=300)
    notify = await command_floor.notify_hop(dsn, samples=300)
    p50, p99 = figures["latency"]
    print(f"""
compliance catch-up: {produced:,} events over {args.wallets:,} wallets (skewed), {args.partitions} \
partitions, rules {rules.version}; produced before timing
  monitor                 {m_rate:>10,.0f} events/s  {m_cpu:>6.0f} µs of its CPU per event  \
({m_timed:,} events timed, {caught_alerts:,} alerts)
  projector (same log)    {p_rate:>10,.0f} events/s  {p_cpu:>6.0f} µs of its CPU per event  \
({p_timed:,} events timed)
  monitor / projector     {m_rate / p_rate:>10.2f} x
  second half / first     monitor {m_slow:.2f} x, projector {p_slow:.2f} x (rate over the later half \
of the log over the earlier)
live: {figures['sent']:,} events at {args.rate:,}/s offered for {args.live_seconds:.0f}s (open loop, \
generator at most {1000 * figures['behind']:.0f} ms behind schedule); {figures['trips']:,} transfers \
({100 * figures['trips'] / max(figures['sent'], 1):.1f}% of events) move the large-movement threshold
  load generator          {figures['generator_us']:>6.0f} µs of its CPU per event \
({figures['generator_us'] * args.rate / 1e4:.1f}% of one core at {args.rate:,}/s: not the bottleneck \
while well under 100%)
  event committed -> alert visible (NOTIFY heard), {figures['timed']:,} alerts timed \
({figures['missing']} not seen; {figures['alerts']:,} alerts in all)
    p50 {p50:.1f} ms   p99 {p99:.1f} ms   max {figures['max']:.1f} ms
  monitor batch transaction  {figures['batch_ms']:.1f} ms mean over {figures['batches']:.0f} batches
floor, same stack, idle: the two hops every alert takes
  record produced -> read_committed reader has it  p50 {kafka['p50_ms']:.1f} ms  p99 {kafka['p99_ms']:.1f} ms
  PostgreSQL commit -> its NOTIFY heard           p50 {notify['p50_ms']:.1f} ms  p99 {notify['p99_ms']:.1f} ms
  together                                        p50 {kafka['p50_ms'] + notify['p50_ms']:.1f} ms
""")


if __name__ == "__main__":
    main()
