"""The floor of a broker's return after a SIGKILL: ``python -m bench.broker_restart``.

A broker of its own (the local stack's JVM options, the topics, some records written), SIGKILLed
and started again on its data, as the supervisor does, ``--rounds`` times. Each restart is split
by the broker's own log lines (:data:`PHASES`): the JVM up and the logs loaded (recovered after a
crash), the metadata log caught up, the broker registered and unfenced (the controller first lets
the old incarnation's session end), and serving metadata to the readiness probe. A cold start of a
fresh broker is measured the same way, for comparison. Nothing but 127.0.0.1 is contacted.

It is what the soak's "SIGKILL -> part back" for the broker cannot go below; the supervisor adds
up to one tick (0.5 s) to notice the death. Not part of ``make bench``.
"""

import argparse
import asyncio
import itertools
import os
import re
import shutil
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer

from ledgerline import local
from ledgerline.stack.kafka import KafkaBroker, ensure_kafka_jars
from ledgerline.stack.ports import free_port
from ledgerline.stack.topics import ensure_topics

#: Lines of the broker's log that end each phase of a start, in order.
PHASES = (
    ("JVM up, logs loaded", r"Loaded \d+ logs in"),
    ("caught up with the metadata log", r"The broker has caught up"),
    ("registered and unfenced", r"The broker has been unfenced"),
)
_STAMP = r"^\[(\S+ \S+)\] INFO .*"


def _stamp(text: str, pattern: str) -> float | None:
    found = re.findall(_STAMP + pattern, text, re.MULTILINE)
    if not found:
        return None
    return datetime.strptime(found[-1], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _timed_start(broker: KafkaBroker) -> list[float]:
    """Start ``broker``; returns how long each phase took (:data:`PHASES`, then to ready)."""
    seen = broker.log_path.stat().st_size if broker.log_path.exists() else 0
    began = time.time()
    broker.start()
    ready = time.time()
    with broker.log_path.open(errors="replace") as log:
        log.seek(seen)
        text = log.read()
    ends = [e for _, pattern in PHASES if (e := _stamp(text, pattern)) is not None]
    if len(ends) < len(PHASES):
        return [ready - began]  # a line this version does not write: the whole only
    return [b - a for a, b in itertools.pairwise([began, *ends, ready])]


def _show(phases: list[float]) -> str:
    names = [name for name, _ in PHASES] + ["serving metadata (the probe)"]
    if len(phases) != len(names):
        return f"start {sum(phases):.1f}s"
    return ", ".join(f"{name} {took:.1f}s" for name, took in zip(names, phases, strict=True))


async def _fill(bootstrap: str, partitions: int, records: int) -> None:
    await ensure_topics(bootstrap, partitions)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        value = b"x" * 300
        for i in range(records):
            await producer.send("ledger.commands", value, key=f"wallet:{i % 500}".encode())
        await producer.flush()
    finally:
        await producer.stop()


def run() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.broker_restart",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args()
    jars = ensure_kafka_jars(local.cache_dir(os.environ))
    home = Path(tempfile.mkdtemp(prefix="ledgerline-broker-restart-"))
    broker = KafkaBroker(jars, home / "kafka", port=free_port())
    try:
        print(f"cold start:      {_show(_timed_start(broker))}", flush=True)
        asyncio.run(_fill(broker.bootstrap, 4, args.records))
        rounds: list[list[float]] = []
        totals = []
        for i in range(args.rounds):
            time.sleep(3)
            killed = time.time()
            broker.kill()
            broker.reap()
            phases = _timed_start(broker)
            totals.append(time.time() - killed)
            rounds.append(phases)
            print(f"restart {i + 1}:       {_show(phases)}; SIGKILL to ready {totals[-1]:.1f}s",
                  flush=True)
        print(f"\nafter a SIGKILL, p50 / max of {args.rounds}: SIGKILL to ready "
              f"{statistics.median(totals):.1f} / {max(totals):.1f}s")
        if all(len(r) == len(PHASES) + 1 for r in rounds):
            names = [name for name, _ in PHASES] + ["serving metadata (the probe)"]
            for n, name in enumerate(names):
                took = [r[n] for r in rounds]
                print(f"  {name:<32} {statistics.median(took):4.1f} / {max(took):4.1f}s")
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    run()
