"""Projector benchmark: catch-up on pre-produced events, and live end-to-end lag.

Starts its own Kafka broker and PostgreSQL (as the local stack does), produces a ledger of
issues and transfers skewed over many wallets straight into ``ledger.events``, then measures

- catch-up of the batched worker (the real :class:`projector.worker.Projector`) over all events;
- the baseline in the same run: the same code applying one event per transaction, on a subset,
  into a shadow schema;
- live lag: events produced at a steady rate while the worker runs, event produced (record
  timestamp) -> its batch committed, p50 / p99;
- the floor: every event read once and not decoded, and the rows of ``events`` and
  ``ledger_entries`` written again by PostgreSQL alone: the least any projector spends here.

``--instances N`` adds N - 1 ``ledgerline projector`` processes to the worker's consumer group.

    python -m bench.projector --events 1000000 [--instances 2]
"""

import argparse
import asyncio
import bisect
import itertools
import random
import resource
import statistics
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench import stack
from common.kafka import client_options
from common.settings import asyncpg_dsn
from events import codec, topics
from events.keys import asset_key, wallet_key
from events.messages import (
    AssetRegistered,
    TokensIssued,
    TransferConfirmed,
    TransferInitiated,
    WalletCredited,
)
from projector import shadow
from projector.metrics import ProjectorMetrics
from projector.worker import SESSION, Prepared, Projection, Projector

SYMBOL = "BENCH"


class Ledger:
    """Generates valid events (balances never negative) for issues and skewed transfers."""

    def __init__(self, wallets: int, partitions: int, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.partitions = partitions
        self.names = [f"w{i:05d}" for i in range(wallets)]
        weights = [1 / (i + 1) ** 1.1 for i in range(wallets)]  # a few wallets do most of it
        self.cumulative = list(itertools.accumulate(weights))
        self.balance = dict.fromkeys(self.names, 0)
        self.supply = 0
        self.clock = datetime(2026, 1, 1, tzinfo=UTC)
        self.ids = (str(uuid.UUID(int=self.rng.getrandbits(128))) for _ in itertools.count())

    def partition(self, key: str) -> int:
        return zlib.crc32(key.encode()) % self.partitions

    def _pick(self) -> str:
        return self.names[bisect.bisect(self.cumulative, self.rng.random() * self.cumulative[-1])]

    def _env(self, event: Any, key: str, command: str,
             correlation: str | None = None) -> tuple[int, bytes, bytes]:
        self.clock += timedelta(microseconds=50)
        env = codec.envelope(event, key=key, command_id=command, principal="bench",
                             correlation_id=correlation, id=next(self.ids), occurred_at=self.clock)
        return self.partition(key), key.encode(), codec.encode(env)

    def start(self) -> Iterator[tuple[int, bytes, bytes]]:
        yield self._env(AssetRegistered(symbol=SYMBOL, name="Bench", decimals=2, issuer="bank"),
                        asset_key(SYMBOL), next(self.ids))
        for wallet in self.names:
            yield from self.issue(wallet, 1_000_000)

    def issue(self, wallet: str, amount: int) -> Iterator[tuple[int, bytes, bytes]]:
        command = next(self.ids)
        self.supply += amount
        yield self._env(TokensIssued(symbol=SYMBOL, to=wallet, amount=amount, supply_after=self.supply),
                        asset_key(SYMBOL), command)
        self.balance[wallet] += amount
        yield self._env(WalletCredited(wallet=wallet, asset=SYMBOL, amount=amount, kind="issue",
                                       reference=command), wallet_key(wallet), command)

    def transfer(self, amount: int | None = None) -> Iterator[tuple[int, bytes, bytes]]:
        """A transfer between two skewed wallets: of ``amount`` (the payer first issued what it
        lacks), else of a small random amount."""
        source, target = self._pick(), self._pick()
        while target == source:
            target = self._pick()
        if amount is not None and self.balance[source] < amount:
            yield from self.issue(source, amount - self.balance[source])
        elif amount is None and self.balance[source] < 100:
            yield from self.issue(source, 1_000_000)
            return
        if amount is None:
            amount = self.rng.randint(1, min(self.balance[source], 5_000))
        command, transfer = next(self.ids), next(self.ids)
        src, dst = wallet_key(source), wallet_key(target)
        yield self._env(TransferInitiated(transfer_id=transfer, source=source, target=target,
                                          asset=SYMBOL, amount=amount), src, command, transfer)
        self.balance[source] -= amount
        yield self._env(TransferConfirmed(transfer_id=transfer, source=source, target=target,
                                          asset=SYMBOL, amount=amount,
                                          available_after=self.balance[source], held_after=0),
                        src, command, transfer)
        self.balance[target] += amount
        yield self._env(WalletCredited(wallet=target, asset=SYMBOL, amount=amount, kind="transfer",
                                       reference=transfer), dst, command, transfer)

    def events(self, count: int) -> Iterator[tuple[int, bytes, bytes]]:
        produced = 0
        for event in itertools.chain(self.start(), itertools.chain.from_iterable(
                self.transfer() for _ in itertools.count())):
            yield event
            produced += 1
            if produced >= count:
                return


async def produce(bootstrap: str, events: Iterator[tuple[int, bytes, bytes]]) -> int:
    """Bulk-produce with one record batch per partition at a time; returns the count."""
    producer = AIOKafkaProducer(**client_options(bootstrap), acks="all", enable_idempotence=True,
                                linger_ms=20, max_batch_size=1024 * 1024, max_request_size=8 * 1024 * 1024)
    await producer.start()
    count = 0
    try:
        batches: dict[int, Any] = {}
        pending = []
        for partition, key, value in events:
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                batch.close()
                pending.append(await producer.send_batch(batch, topics.EVENTS, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
            count += 1
            if len(pending) > 64:
                await asyncio.gather(*pending)
                pending.clear()
        for partition, batch in batches.items():
            batch.close()
            pending.append(await producer.send_batch(batch, topics.EVENTS, partition=partition))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count


async def end_offsets(bootstrap: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(**client_options(bootstrap))
    await consumer.start()
    try:
        tps = [TopicPartition(topics.EVENTS, p) for p in range(partitions)]
        return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def stored(pool: asyncpg.Pool, schema: str = shadow.LIVE) -> dict[int, int]:
    async with pool.acquire() as conn:
        return await shadow.offsets(conn, schema, "views", topics.EVENTS)


async def naive(bootstrap: str, dsn: str, partitions: int, count: int) -> float:
    """One transaction per event (the same code, batches of one), into a shadow schema."""
    async with asyncpg.create_pool(dsn, min_size=1, max_size=1) as admin:
        async with admin.acquire() as conn:
            await shadow.create_shadow(conn)
            await shadow.create_indexes(conn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2,
                                     server_settings={**SESSION, "search_path": f"{shadow.SHADOW}, public"})
    consumer = AIOKafkaConsumer(**client_options(bootstrap), enable_auto_commit=False,
                                auto_offset_reset="earliest", isolation_level="read_committed")
    await consumer.start()
    try:
        tps = [TopicPartition(topics.EVENTS, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        projection = Projection(pool, None, swap_lock=False)
        await projection.load(range(partitions))
        records: list[Any] = []
        while len(records) < count:
            for batch in (await consumer.getmany(timeout_ms=500, max_records=count)).values():
                records.extend(batch)
        records = records[:count]
        started = time.perf_counter()
        for record in records:
            await projection.apply({record.partition: [record]})
        return count / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await pool.close()
        async with asyncpg.create_pool(dsn, min_size=1, max_size=1) as admin:
            async with admin.acquire() as conn:
                await shadow.drop_shadow(conn)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                found.append(int(entry.name))
    return found


class Cpu:
    """CPU used over a stretch of time by this process and by each server's process tree."""

    def __init__(self, servers: dict[str, int | None]) -> None:
        self.servers = {name: pid for name, pid in servers.items() if pid is not None}
        self.started = self._now()

    def _now(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        now = {"projector (Python)": usage.ru_utime + usage.ru_stime}
        for name, pid in self.servers.items():
            now[name] = sum(stack.cpu_seconds(p) for p in [pid, *_children(pid)])
        return now

    def seconds(self) -> dict[str, float]:
        now = self._now()
        return {name: now[name] - self.started[name] for name in now}

    def per_event(self, events: int) -> str:
        return ", ".join(f"{name} {1e6 * used / events:.0f}" for name, used in self.seconds().items())


async def read_floor(bootstrap: str, partitions: int, servers: dict[str, int | None]
                     ) -> tuple[float, dict[str, float]]:
    """The least any projector on aiokafka does: read every event once, decoding nothing.
    Returns events/s and CPU µs per event (this process, the broker)."""
    ends = await end_offsets(bootstrap, partitions)
    total = sum(ends.values())
    consumer = AIOKafkaConsumer(**client_options(bootstrap), enable_auto_commit=False,
                                auto_offset_reset="earliest", isolation_level="read_committed",
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topics.EVENTS, p) for p in range(partitions)])
        started, cpu, seen = time.perf_counter(), Cpu({"Kafka": servers.get("Kafka")}), 0
        while seen < total:
            for batch in (await consumer.getmany(timeout_ms=500, max_records=20_000)).values():
                seen += len(batch)
        elapsed, seen = time.perf_counter() - started, max(seen, 1)
        return seen / elapsed, {k: 1e6 * v / seen for k, v in cpu.seconds().items()}
    finally:
        await consumer.stop()


async def write_floor(dsn: str, servers: dict[str, int | None]) -> float:
    """The least PostgreSQL does for the two append-only views alone (``events``, one row per
    event, and ``ledger_entries``, one per balance change): their rows written again by
    ``INSERT … SELECT`` (no parsing, no client) into copies of the tables with their indexes.
    Returns PostgreSQL's CPU µs per event."""
    conn = await asyncpg.connect(dsn)
    try:
        events = int(await conn.fetchval("SELECT count(*) FROM events"))
        cpu = Cpu({"PostgreSQL": servers.get("PostgreSQL")})
        for table in ("events", "ledger_entries"):
            await conn.execute(f"CREATE TABLE bench_floor_{table} (LIKE {table} INCLUDING ALL)")
            await conn.execute(f"INSERT INTO bench_floor_{table} SELECT * FROM {table}")
        await conn.execute("CHECKPOINT")  # their share of writing the pages out
        return 1e6 * cpu.seconds()["PostgreSQL"] / max(events, 1)
    finally:
        for table in ("events", "ledger_entries"):
            await conn.execute(f"DROP TABLE IF EXISTS bench_floor_{table}")
        await conn.close()


class Timed(Projection):
    """The worker's projection, noting produced -> committed for every record it commits."""

    latencies: list[float]

    async def commit(self, prepared: Prepared | None) -> None:
        await super().commit(prepared)
        if prepared is not None:
            now = time.time()
            self.latencies.extend(now - i.record.timestamp / 1000 for i in prepared.items)


def _more_instances(count: int, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    """Further projector processes (``ledgerline projector``) in the same consumer group."""
    env = {**env, "LEDGERLINE_PROJECTOR_METRICS_PORT": "0", "LEDGERLINE_LOG_LEVEL": "WARNING"}
    return [subprocess.Popen([sys.executable, "-m", "ledgerline", "projector"], env=env)
            for _ in range(count)]


async def catch_up_and_live(bootstrap: str, dsn: str, partitions: int, ledger: Ledger, rate: int,
                            seconds: float, servers: dict[str, int | None], instances: int,
                            env: dict[str, str]) -> tuple[float, int, list[float], str]:
    ends = await end_offsets(bootstrap, partitions)
    total = sum(ends.values())
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=3, server_settings=SESSION)
    metrics = ProjectorMetrics()
    worker = Projector(bootstrap, pool, metrics=metrics)
    timed = Timed(pool, worker.dlq, metrics=metrics)
    timed.latencies = []
    worker.projection = timed
    stop = asyncio.Event()
    more = _more_instances(instances - 1, env)
    servers = {**servers, **{f"projector #{i + 2} (Python)": proc.pid for i, proc in enumerate(more)}}
    task = asyncio.create_task(worker.run(stop))
    try:
        while not worker.stored:  # noqa: ASYNC110 - polling another task's progress
            await asyncio.sleep(0.01)
        # Other instances may have begun first: count only what is applied from here on.
        started, cpu = time.perf_counter(), Cpu(servers)
        before = sum((await stored(pool)).values())
        while True:
            at = await stored(pool)
            if all(at.get(p, 0) >= ends[p] for p in range(partitions)):
                break
            await asyncio.sleep(0.05)
        catch_up = (total - before) / (time.perf_counter() - started)
        cpu_per_event = cpu.per_event(total - before)
        print(f"catch-up: {_batches(metrics)}", file=sys.stderr)
        # Live: a steady rate for a while, the worker caught up from the start.
        timed.latencies.clear()
        producer = AIOKafkaProducer(**client_options(bootstrap), acks="all", enable_idempotence=True,
                                    linger_ms=2)
        await producer.start()
        source = itertools.chain.from_iterable(ledger.transfer() for _ in itertools.count())
        tick, sent = 0.01, 0
        begin = time.perf_counter()
        try:
            while time.perf_counter() - begin < seconds:
                due = int((time.perf_counter() - begin) * rate)
                for partition, key, value in itertools.islice(source, max(0, due - sent)):
                    await producer.send(topics.EVENTS, value, key=key, partition=partition)
                    sent += 1
                await asyncio.sleep(tick)
            await producer.flush()
        finally:
            await producer.stop()
        live_ends = await end_offsets(bootstrap, partitions)
        while True:
            at = await stored(pool)
            if all(at.get(p, 0) >= live_ends[p] for p in range(partitions)):
                break
            await asyncio.sleep(0.05)
        print(f"catch-up + live: {_batches(metrics)}", file=sys.stderr)
        return catch_up, sent, timed.latencies, cpu_per_event
    finally:
        stop.set()
        await task
        await pool.close()
        for proc in more:
            proc.terminate()
            proc.wait(15)


def _batches(metrics: ProjectorMetrics) -> str:
    count = metrics.registry.get_sample_value("ledgerline_projector_batch_records_count",
                                              {"projection": "views"}) or 0
    records = metrics.registry.get_sample_value("ledgerline_projector_batch_records_sum",
                                                {"projection": "views"}) or 0
    seconds = metrics.registry.get_sample_value("ledgerline_projector_batch_seconds_sum",
                                                {"projection": "views"}) or 0
    return (f"{count:.0f} batches, {records / max(count, 1):.0f} records each, "
            f"{1000 * seconds / max(count, 1):.1f} ms writing each")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.projector", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events to catch up on")
    parser.add_argument("--wallets", type=int, default=10_000)
    parser.add_argument("--naive-events", type=int, default=2_000,
                        help="events for the one-transaction-per-event baseline")
    parser.add_argument("--rate", type=int, default=2_000, help="events/s for the live lag")
    parser.add_argument("--live-seconds", type=float, default=15.0)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--instances", type=int, default=1,
                        help="projector processes sharing the partitions (this one and more)")
    args = parser.parse_args(argv)

    # keep=False: a million events leave about 3 GB behind.
    with stack.infra("projector", partitions=args.partitions, keep=False) as bench:
        infra = bench.infra
        servers = {"PostgreSQL": infra.postgres.pid if infra.postgres else None,
                   "Kafka": infra.broker.pid if infra.broker else None}
        asyncio.run(_run(args, infra.bootstrap, asyncpg_dsn(infra.database_url), servers, bench.env))


async def _run(args: argparse.Namespace, bootstrap: str, dsn: str,
               servers: dict[str, int | None], env: dict[str, str]) -> None:
    ledger = Ledger(args.wallets, args.partitions)
    started = time.perf_counter()
    produced = await produce(bootstrap, ledger.events(args.events))
    print(f"produced {produced:,} events in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    read_rate, read_cpu = await read_floor(bootstrap, args.partitions, servers)
    baseline = await naive(bootstrap, dsn, args.partitions, min(args.naive_events, produced))
    rate, sent, latencies, cpu = await catch_up_and_live(bootstrap, dsn, args.partitions, ledger,
                                                         args.rate, args.live_seconds, servers,
                                                         args.instances, env)
    read_python, read_kafka = read_cpu["projector (Python)"], read_cpu["Kafka"]
    write_pg = await write_floor(dsn, servers)
    floor = read_python + read_kafka + write_pg
    processes = f"{args.instances} process{'es' if args.instances > 1 else ''}"
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    print(f"""
projector catch-up: {produced:,} events over {args.wallets:,} wallets (skewed), {args.partitions} partitions
  batched worker          {rate:>10,.0f} events/s  ({processes})
  one transaction/event  {baseline:>10,.0f} events/s  (same code, {min(args.naive_events, produced):,} events)
  speed-up                {rate / baseline:>10.1f} x
  CPU per event (µs)      {cpu}
floor: what any projector must spend per event here, before five of the seven views
  read only (aiokafka) {read_rate:>10,.0f} events/s, µs each: Python {read_python:.1f}, Kafka {read_kafka:.1f}
  events, ledger_entries  PostgreSQL {write_pg:.1f} µs per event (INSERT … SELECT into copies)
  together                {floor:.1f} µs of CPU per event: at most {2e6 / floor:,.0f} events/s on 2 cores
live: {sent:,} events at {args.rate:,}/s for {args.live_seconds:.0f}s, produced -> committed
  p50 {1000 * q[49]:.1f} ms   p99 {1000 * q[98]:.1f} ms   max {1000 * max(latencies):.1f} ms
""")


if __name__ == "__main__":
    main()
