"""Benchmark: transfers the ledger processor decides per second, and one partition's recovery.

Starts its own Kafka broker (``ledgerline.stack``, JVM options for steady state) in a temporary
folder and stops it at the end. Wallets are funded by writing their snapshots to ``ledger.state``;
then N ``InitiateTransfer`` commands are produced to ``ledger.commands`` before the processor
(the real one, a child process) starts, and the run is timed from its first committed batch to:

* *decided*: every transfer debited or failed (the offsets passed the last transfer command);
* *completed*: every follow-up taken as well (nothing left in ``ledger.commands``): since the
  live path the credits are written with their debits, so this is the ``ApplyCredit`` that
  brings each payee's state up to date; before, it was the credit's own decision.

A warm-up run (not shown) first brings the broker's JIT up to speed. The baseline is the same
processor committing one transaction per command (``max_records=1``). CPU time per transfer of
the processor and the broker is shown too: unlike rates, it hardly depends on what else the
machine is doing. Recovery: ``restore()`` of one partition of ``ledger.state`` holding 100,000
wallets, beside a bare read of the same partition.

    python -m bench.processor [--transfers 100000] [--wallets 4000] [--profile]
"""

import argparse
import asyncio
import cProfile
import os
import pstats
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench.stack import cpu_seconds
from common import logs
from common.kafka import client_options
from events import codec, topics
from events.keys import wallet_key
from events.messages import InitiateTransfer
from ledgerline.local import cache_dir
from ledgerline.stack.kafka import THROUGHPUT_JVM_OPTS, KafkaBroker, ensure_kafka_jars
from ledgerline.stack.ports import free_port
from ledgerline.stack.topics import ensure_topics
from processor import snapshots
from processor.decide import Balance, WalletState
from processor.outbox import Outbox, Partitioner
from processor.snapshots import Snapshot, restore
from processor.worker import Processor

ASSET = "BNCH"
async def _producer(bootstrap: str) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(**client_options(bootstrap), acks="all", enable_idempotence=True,
                                max_batch_size=512 * 1024, linger_ms=0)
    await producer.start()
    return producer


async def fund(bootstrap: str, wallets: list[str], partitioner: Partitioner) -> None:
    """Write a funded snapshot for each wallet, where the processor will restore it from."""
    producer = await _producer(bootstrap)
    try:
        out = Outbox(producer)
        for wallet in wallets:
            key = wallet_key(wallet).encode()
            snap = Snapshot(state=WalletState(balances={ASSET: Balance(10**15, 0)}))
            out.add(topics.STATE, partitioner.partition(key), key, snapshots.encode(snap))
        await out.flush()
    finally:
        await producer.stop()


async def produce_transfers(bootstrap: str, wallets: list[str], count: int,
                            partitioner: Partitioner) -> dict[int, int]:
    """Produce ``count`` random transfers; returns how many went to each partition."""
    rng = random.Random(count)
    producer = await _producer(bootstrap)
    per_partition: dict[int, int] = {}
    try:
        out = Outbox(producer)
        for n in range(count):
            source, target = rng.sample(wallets, 2)
            transfer_id = str(uuid.uuid4())
            key = wallet_key(source)
            message = InitiateTransfer(transfer_id=transfer_id, source=source, target=target,
                                       asset=ASSET, amount=rng.randint(1, 10_000))
            env = codec.envelope(message, key=key, command_id=transfer_id, id=transfer_id,
                                 principal="bench", correlation_id=transfer_id)
            partition = partitioner.partition(key.encode())
            out.add(topics.COMMANDS, partition, key.encode(), codec.encode(env))
            per_partition[partition] = per_partition.get(partition, 0) + 1
            if n % 20_000 == 19_999:
                await out.flush()
        await out.flush()
    finally:
        await producer.stop()
    return per_partition


@dataclass
class Run:
    label: str
    transfers: int
    decided_s: float
    completed_s: float
    processor_cpu_s: float
    broker_cpu_s: float

    def line(self) -> str:
        per = 1e6 / self.transfers
        return (f"  {self.label:<36} {self.transfers:>7} transfers in {self.completed_s:5.1f}s  "
                f"decided {self.transfers / self.decided_s:>7,.0f}/s  "
                f"completed {self.transfers / self.completed_s:>7,.0f}/s  "
                f"cpu per transfer: processor {self.processor_cpu_s * per:5.0f} µs, "
                f"broker {self.broker_cpu_s * per:5.0f} µs")


async def _drained(probe: AIOKafkaConsumer, committed: dict[int, int]) -> bool:
    """True if no committed command lies at or after the committed offsets. (The end offsets
    do not tell: transaction markers take offsets of their own.)"""
    for tp in probe.assignment():
        probe.seek(tp, committed[tp.partition])
    return not await probe.getmany(timeout_ms=100)


async def _offsets(admin: AIOKafkaAdminClient, ends: AIOKafkaConsumer,
                   tps: list[TopicPartition]) -> tuple[dict[int, int], dict[int, int]]:
    for _ in range(100):  # a fresh broker creates its offsets topic on first use
        try:
            committed = await admin.list_consumer_group_offsets(topics.PROCESSOR_GROUP, partitions=tps)
            break
        except KafkaError as exc:
            if not exc.retriable:
                raise
            await asyncio.sleep(0.1)
    end = await ends.end_offsets(tps)
    return ({tp.partition: max(committed[tp].offset, 0) if tp in committed else 0 for tp in tps},
            {tp.partition: end[tp] for tp in tps})


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(command, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)


async def timed_run(label: str, bootstrap: str, wallets: list[str], count: int, max_records: int,
                    partitioner: Partitioner, broker_pid: int, log_dir: Path,
                    profile: Path | None, instances: int = 1) -> Run:
    tps = [TopicPartition(topics.COMMANDS, p) for p in partitioner.partitions]
    admin = AIOKafkaAdminClient(**client_options(bootstrap))
    ends = AIOKafkaConsumer(**client_options(bootstrap), isolation_level="read_committed")
    probe = AIOKafkaConsumer(**client_options(bootstrap), isolation_level="read_committed")
    await admin.start()
    await ends.start()
    await probe.start()
    probe.assign(tps)
    children: list[subprocess.Popen[bytes]] = []
    try:
        _, base = await _offsets(admin, ends, tps)
        sent = await produce_transfers(bootstrap, wallets, count, partitioner)
        command = [sys.executable, "-m", "bench.processor", "--child", "--bootstrap", bootstrap,
                   "--max-records", str(max_records)]
        if profile is not None:
            command += ["--profile-to", str(profile)]
        children = [_start(command, log_dir / f"processor-{max_records}-{n}.log") for n in range(instances)]
        first = decided_at = None
        shown = time.monotonic()
        while True:
            if any(c.poll() is not None for c in children):
                raise RuntimeError("a processor exited early")
            committed, _ = await _offsets(admin, ends, tps)
            now = time.monotonic()
            decided = sum(min(max(committed[p] - base[p], 0), sent.get(p, 0)) for p in committed)
            if now - shown > 5:
                shown = now
                print(f"    ... {label}: {decided}/{count} decided", file=sys.stderr, flush=True)
            if first is None and decided > 0:
                first = (now, decided, sum(cpu_seconds(c.pid) for c in children), cpu_seconds(broker_pid))
            if decided == count and decided_at is None:
                decided_at = now
            if decided == count and await _drained(probe, committed):
                break
            await asyncio.sleep(0.05)
        assert first is not None and decided_at is not None
        started, before, cpu, broker_cpu = first
        timed = count - before
        return Run(label, timed, decided_at - started, now - started,
                   sum(cpu_seconds(c.pid) for c in children) - cpu, cpu_seconds(broker_pid) - broker_cpu)
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        await probe.stop()
        await ends.stop()
        await admin.close()


async def recovery(bootstrap: str, wallets: int) -> tuple[float, float, int, int]:
    """Write ``wallets`` snapshots to partition 0 of the state topic; time a bare read of it with
    default consumer settings (the baseline) and ``restore()``."""
    producer = await _producer(bootstrap)
    size = 0
    try:
        out = Outbox(producer)
        for n in range(wallets):
            snap = Snapshot(
                state=WalletState(balances={ASSET: Balance(10**9 + n, 0), "USDX": Balance(n, 5)}),
                recent=tuple(str(uuid.uuid4()) for _ in range(8)),
            )
            value = snapshots.encode(snap)
            size += len(value)
            out.add(topics.STATE, 0, f"wallet:recover-{n}".encode(), value)
            if n % 20_000 == 19_999:
                await out.flush()
        await out.flush()
    finally:
        await producer.stop()

    tp = TopicPartition(topics.STATE, 0)
    consumer = AIOKafkaConsumer(**client_options(bootstrap), isolation_level="read_committed",
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        started = time.monotonic()
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            await consumer.getmany(tp, timeout_ms=1000)
        bare = time.monotonic() - started
    finally:
        await consumer.stop()
    started = time.monotonic()
    restored = await restore(bootstrap, 0)
    return bare, time.monotonic() - started, len(restored), size // wallets


async def bench(bootstrap: str, args: argparse.Namespace, broker_pid: int, log_dir: Path) -> None:
    await ensure_topics(bootstrap, args.partitions)
    partitioner = Partitioner(list(range(args.partitions)))
    wallets = [f"bench-{n}" for n in range(args.wallets)]
    await fund(bootstrap, wallets, partitioner)
    profile = log_dir / "processor.prof" if args.profile else None

    # Warm the broker's JIT first, so neither measured run pays for it.
    await timed_run("warm-up", bootstrap, wallets, args.transfers // 10, args.max_records,
                    partitioner, broker_pid, log_dir, None)
    baseline = await timed_run("baseline: a transaction per command", bootstrap, wallets,
                               args.baseline_transfers, 1, partitioner, broker_pid, log_dir, None)
    batched = await timed_run("processor: a transaction per batch", bootstrap, wallets,
                              args.transfers, args.max_records, partitioner, broker_pid, log_dir, profile)
    runs = [baseline, batched]
    if args.instances > 1:
        runs.append(await timed_run(f"  the same, {args.instances} processes", bootstrap, wallets,
                                    args.transfers, args.max_records, partitioner, broker_pid,
                                    log_dir, None, args.instances))
    print(f"transfers ({args.partitions} partitions, {args.wallets} funded wallets, "
          "each transfer = a debit command and a credit follow-up):")
    for run in runs:
        print(run.line())
    speed_up = (batched.transfers / batched.completed_s) / (baseline.transfers / baseline.completed_s)
    print(f"  speed-up {speed_up:.0f}x (completed); the issue asks for >= 10,000 decided/s")

    bare, restored_s, restored, size = await recovery(bootstrap, args.recover_wallets)
    print(f"recovery of one partition ({restored:,} aggregates, ~{size} bytes per snapshot):")
    print(f"  baseline: read the partition, no decoding   {bare:6.2f}s")
    print(f"  restore(): read and decode into state       {restored_s:6.2f}s  (the issue asks for <= 5 s)")
    if profile is not None:
        print("profile of the processor (top 25 by own time):")
        pstats.Stats(str(profile)).sort_stats("tottime").print_stats(25)


def _child(args: argparse.Namespace) -> None:
    logs.setup("processor", "INFO")

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await Processor(args.bootstrap, max_records=args.max_records).run(stop)

    if args.profile_to is None:
        asyncio.run(run())
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(run())
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile_to)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.processor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transfers", type=int, default=100_000)
    parser.add_argument("--baseline-transfers", type=int, default=200)
    parser.add_argument("--wallets", type=int, default=4_000)
    parser.add_argument("--recover-wallets", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--max-records", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=1,
                        help="also run this many processor processes in one group")
    parser.add_argument("--profile", action="store_true", help="run the processor under cProfile")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return

    print(f"machine: {os.cpu_count()} cores, broker on the same machine; figures vary with load")
    # SIGTERM (a timeout, Ctrl-C's cousin) still stops the broker and the processor.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log_dir = Path(tempfile.mkdtemp(prefix="ledgerline-bench-logs-"))
    print(f"logs and profiles in {log_dir}")
    with tempfile.TemporaryDirectory(prefix="ledgerline-bench-") as home:
        jars = ensure_kafka_jars(cache_dir(os.environ))
        broker = KafkaBroker(jars, Path(home) / "kafka", port=free_port(), jvm_opts=THROUGHPUT_JVM_OPTS)
        broker.start()
        try:
            assert broker.pid is not None
            asyncio.run(bench(broker.bootstrap, args, broker.pid, log_dir))
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
