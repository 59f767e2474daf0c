"""The processor's cost per Kafka transaction, in Python function calls and CPU: one partition's
worker (``processor.partition``) committing one transfer per transaction, the low-rate case
where nothing is amortised over a batch.

A worker is started against its own broker (``make up``'s JVM options), its payers funded in
memory, and fed transfer commands one at a time, each awaited to its commit: first a warm-up,
then ``--transactions`` timed by CPU and wall clock (and the requests the clients send to the
broker counted by kind), then as many again under ``cProfile`` (function calls per transaction,
in all, inside aiokafka, by kind, and the functions called most). Then the whole processor
(``processor.worker.Processor``: its consumer and its partition workers) is run on lone
transfers 50 ms apart: CPU, calls and broker requests per transfer, its follow-up included, and
CPU and requests per second once idle.

Measured on a shared 2-core machine, both versions interleaved twice on one broker: a
transaction is 3 requests (``AddPartitionsToTxn``, ``Produce``, ``EndTxn``), about 2,100 calls
and 0.9-1.6 ms of CPU, the same for the previous ``main`` and this version, whose Kafka path it
shares; the whole processor spends 3.5-5.8 ms and about 5,900 calls per lone transfer (two
transactions, two fetches).

``--against DIR`` measures the code of another checkout (a ``git worktree`` of an earlier
commit) in the same run, on the same broker: the measurement runs in a child process whose
``PYTHONPATH`` starts with that checkout.

    python -m bench.txn_path [--transactions 400] [--against DIR]
"""

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve()


def _kind(file: str, name: str) -> str:
    """Where a profiled function belongs, for the summary."""
    if "aiokafka/protocol" in file or "aiokafka/record" in file:
        return "aiokafka: protocol and record codecs"
    if "aiokafka" in file:
        return "aiokafka: producer, client, connection"
    if "asyncio" in file or "uvloop" in file or "_asyncio" in name or "Future" in name:
        return "asyncio: tasks, futures, streams"
    if any(part in file for part in ("/processor/", "/events/", "/common/")):
        return "ledgerline: decide, encode, outbox"
    if file == "~":
        return "builtins (len, struct, bytes, dict ...)"
    return "other (logging, abc, stdlib)"


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    timestamp: int


async def _measure(bootstrap: str, transactions: int, profile_top: int) -> dict[str, Any]:
    from aiokafka import TopicPartition
    from aiokafka.client import AIOKafkaClient

    from events import codec, topics
    from events.keys import wallet_key
    from events.messages import InitiateTransfer
    from processor.chain import Chain
    from processor.decide import Balance, WalletState
    from processor.outbox import Partitioner
    from processor.partition import PartitionWorker, quick_transaction_restarts
    from processor.snapshots import Snapshot

    quick_transaction_restarts()
    tp = TopicPartition(topics.COMMANDS, 0)
    prefix = f"txnpath-{uuid.uuid4().hex[:8]}"
    worker = PartitionWorker(bootstrap, tp, prefix, max_records=10_000,
                             chain=Chain(f"{prefix}-tx-0"))

    async def committed(_tp: Any) -> int:
        return 0

    await worker.start(committed)
    assert worker.partitioner is not None
    partitioner: Partitioner = worker.partitioner
    # Payers and payees whose keys belong to partition 0 and to others (a credit elsewhere).
    payers = [w for w in (f"tp-w{i}" for i in range(2000))
              if partitioner.partition(wallet_key(w).encode()) == 0][:50]
    payees = [f"tp-x{i}" for i in range(50)]
    for w in payers:
        worker.states[wallet_key(w)] = Snapshot(state=WalletState(balances={"TXP": Balance(10**15, 0)}))
    offset = worker.next_offset  # past what earlier runs on this broker decided

    def record() -> Record:
        nonlocal offset
        i = offset
        offset += 1
        transfer_id = str(uuid.uuid4())
        key = wallet_key(payers[i % len(payers)])
        message = InitiateTransfer(transfer_id=transfer_id, source=payers[i % len(payers)],
                                   target=payees[i % len(payees)], asset="TXP", amount=1)
        env = codec.envelope(message, key=key, command_id=transfer_id, id=transfer_id,
                             principal="bench", correlation_id=transfer_id)
        return Record(topics.COMMANDS, 0, i, key.encode(), codec.encode(env), int(time.time() * 1000))

    async def run(n: int) -> None:
        for _ in range(n):
            await worker.process([record()])

    await run(max(100, transactions // 2))  # warm-up: connections, metadata, caches
    requests: Counter[str] = Counter()
    send = AIOKafkaClient.send

    async def counted(self: Any, node_id: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        requests[type(request).__name__.removesuffix("Request").rstrip("_v0123456789")] += 1
        return await send(self, node_id, request, *args, **kwargs)

    AIOKafkaClient.send = counted
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        await run(transactions)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        AIOKafkaClient.send = send
    profiler = cProfile.Profile()
    profiler.enable()
    await run(transactions)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = aiokafka = 0
    rows = []
    kinds: dict[str, list[float]] = {}
    for (file, line, name), (_cc, nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += nc
        if "aiokafka" in file:
            aiokafka += nc
        kind = kinds.setdefault(_kind(file, name), [0, 0.0])
        kind[0] += nc
        kind[1] += tt
        rows.append((nc, tt, f"{Path(file).parent.name}/{Path(file).name}:{line}({name})"))
    rows.sort(reverse=True)
    await worker.stop()
    idle = await _processor(bootstrap, max(40, transactions // 4), 0.05)
    return {"transactions": transactions,
            "cpu_ms_per_txn": round(cpu / transactions * 1000, 3),
            "wall_ms_per_txn": round(wall / transactions * 1000, 3),
            "calls_per_txn": round(total / transactions),
            "requests_per_txn": {k: round(n / transactions, 2) for k, n in requests.most_common()},
            "aiokafka_calls_per_txn": round(aiokafka / transactions),
            "top": [(round(nc / transactions, 1), label) for nc, _tt, label in rows[:profile_top]],
            "kinds": {k: (round(n / transactions), round(t / transactions * 1e6))
                      for k, (n, t) in sorted(kinds.items(), key=lambda kv: -kv[1][0])},
            **idle}


async def _processor(bootstrap: str, commands: int, gap: float, seconds_idle: float = 4.0) -> dict[str, Any]:
    """The whole processor (``processor.worker.Processor``: its consumer, its partition workers)
    deciding lone transfers ``gap`` seconds apart on partitions 1-3, and then idle: CPU, Python
    calls and requests to the broker per command, and per second when idle."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.client import AIOKafkaClient

    from common.kafka import client_options
    from events import codec, topics
    from events.keys import wallet_key
    from events.messages import InitiateTransfer
    from processor import snapshots
    from processor.decide import Balance, WalletState
    from processor.outbox import Outbox, Partitioner
    from processor.snapshots import Snapshot
    from processor.worker import Processor

    group = f"txnpath-proc-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(**client_options(bootstrap), acks="all", enable_idempotence=True,
                                linger_ms=0)
    await producer.start()
    partitioner = Partitioner(sorted(await producer.partitions_for(topics.COMMANDS)))
    payers = [w for w in (f"{group}-w{i}" for i in range(400))
              if partitioner.partition(wallet_key(w).encode()) != 0][:30]
    out = Outbox(producer)
    for w in payers:  # funded where the processor restores its state from
        key = wallet_key(w).encode()
        out.add(topics.STATE, partitioner.partition(key), key, snapshots.encode(
            Snapshot(state=WalletState(balances={"TXP": Balance(10**15, 0)}))))
    await out.flush()
    partitions = len(partitioner.partitions)
    proc = Processor(bootstrap, group=group)
    stop = asyncio.Event()
    task = asyncio.create_task(proc.run(stop))
    while len(proc.workers) < partitions:  # noqa: ASYNC110 (joined, assigned, workers started)
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)

    requests: Counter[str] = Counter()
    send = AIOKafkaClient.send

    async def counted(self: Any, node_id: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        requests[type(request).__name__.removesuffix("Request").rstrip("_v0123456789")] += 1
        return await send(self, node_id, request, *args, **kwargs)

    async def lone(n: int) -> None:
        for i in range(n):
            transfer_id = str(uuid.uuid4())
            source = payers[i % len(payers)]
            key = wallet_key(source)
            env = codec.envelope(InitiateTransfer(transfer_id=transfer_id, source=source,
                                                  target=payers[(i + 7) % len(payers)], asset="TXP",
                                                  amount=1),
                                 key=key, command_id=transfer_id, id=transfer_id, principal="bench",
                                 correlation_id=transfer_id)
            await producer.send_and_wait(topics.COMMANDS, codec.encode(env), key=key.encode())
            await asyncio.sleep(gap)

    await lone(max(20, commands // 4))  # warm-up
    await asyncio.sleep(1.0)
    profiler = cProfile.Profile()
    AIOKafkaClient.send = counted
    try:
        cpu = time.process_time()
        await lone(commands)
        await asyncio.sleep(0.5)  # the last one's follow-up decided too
        cpu = time.process_time() - cpu
        busy = dict(requests)
        requests.clear()
        profiler.enable()
        await lone(commands // 2)
        await asyncio.sleep(0.5)
        profiler.disable()
        calls = sum(nc for (_f, _l, _n), (_cc, nc, *_rest) in pstats.Stats(profiler).stats.items())  # type: ignore[attr-defined]
        requests.clear()
        idle_cpu = time.process_time()
        await asyncio.sleep(seconds_idle)
        idle_cpu = time.process_time() - idle_cpu
        idle = dict(requests)
    finally:
        AIOKafkaClient.send = send
        stop.set()
        await task
        await producer.stop()
    # The producer's own send_and_wait is in the figures: a Produce a command, and its CPU (small).
    window = commands * gap + 0.5
    return {"lone_cpu_ms_per_command": round(cpu / commands * 1000, 3),
            "lone_calls_per_command": round(calls / (commands // 2)),
            "lone_requests_per_command": {k: round(v / commands, 2) for k, v in sorted(busy.items())},
            "lone_window_s": round(window, 1),
            "idle_cpu_ms_per_s": round(idle_cpu / seconds_idle * 1000, 1),
            "idle_requests_per_s": {k: round(v / seconds_idle, 1) for k, v in sorted(idle.items())}}


def _child(bootstrap: str, tree: Path, transactions: int, top: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-P", str(HERE), "--child", bootstrap, str(transactions), str(top)],
                         env=env, cwd=tree, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        import uvloop

        from common import logs
        logs.setup("bench", "WARNING")
        print(json.dumps(uvloop.run(_measure(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=400)
    parser.add_argument("--against", type=Path, help="another checkout, measured in the same run")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    from ledgerline.local import cache_dir
    from ledgerline.stack.kafka import KafkaBroker, ensure_kafka_jars
    from ledgerline.stack.ports import free_port
    from ledgerline.stack.topics import ensure_topics

    cache = Path(os.environ.get("LEDGERLINE_CACHE") or cache_dir(os.environ))
    with tempfile.TemporaryDirectory(prefix="ledgerline-txnpath-") as home:
        broker = KafkaBroker(ensure_kafka_jars(cache), Path(home) / "kafka", port=free_port())
        broker.start()
        try:
            asyncio.run(ensure_topics(broker.bootstrap, 4))
            trees = [("this checkout", HERE.parent.parent)]
            if args.against:
                trees.insert(0, ("against", args.against.resolve()))
            results = []
            for rounds in range(2):  # interleaved, twice: the broker warms up under both
                for label, tree in trees:
                    result = _child(broker.bootstrap, tree, args.transactions, args.top)
                    results.append((label, result))
                    print(f"{label} (round {rounds + 1}): {result['cpu_ms_per_txn']} ms CPU, "
                          f"{result['calls_per_txn']} calls ({result['aiokafka_calls_per_txn']} in "
                          f"aiokafka), {result['wall_ms_per_txn']} ms wall per transaction; requests "
                          f"to the broker per transaction: {result['requests_per_txn']}\n"
                          f"  the whole processor, lone transfers 50 ms apart: "
                          f"{result['lone_cpu_ms_per_command']} ms CPU and "
                          f"{result['lone_calls_per_command']} calls per transfer (its follow-up "
                          f"included); requests per transfer {result['lone_requests_per_command']}; "
                          f"idle: {result['idle_cpu_ms_per_s']} ms CPU/s, requests/s "
                          f"{result['idle_requests_per_s']}", flush=True)
            for label, result in results[-len(trees):]:
                print(f"\n{label}: calls and profiled us per transaction, by kind")
                for kind, (n, us) in result["kinds"].items():
                    print(f"  {n:6}  {us:6} us  {kind}")
                print(f"{label}: the functions called most per transaction")
                for n, where in result["top"]:
                    print(f"  {n:8.1f}  {where}")
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
