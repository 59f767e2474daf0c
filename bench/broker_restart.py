"""The floor of a broker's return after a SIGKILL: ``python -m bench.broker_restart``.

A broker of its own (the local stack's JVM options, the topics, some records written), SIGKILLed
and started again on its data, as the supervisor does, ``--rounds`` times. Each restart is split
by the broker's own log lines (:data:`PHASES`): the JVM up and the metadata log caught up, the
logs loaded (recovered after a crash), the broker registered and unfenced (the controller first lets
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

from common.kafka import client_options
from ledgerline import local
from ledgerline.stack.kafka import KafkaBroker, ensure_kafka_jars
from ledgerline.stack.ports import free_port
from ledgerline.stack.topics import ensure_topics

#: Lines of the broker's log that end a phase of its start. Their order differs: after a crash
#: the logs are recovered before the metadata log is caught up, on a first start after it.
PHASES = {
    "logs loaded (recovered)": r"Loaded \d+ logs in",
    "metadata log caught up": r"The broker has caught up",
    "registered and unfenced": r"The broker has been unfenced",
}
READY = "serving metadata (the probe)"
_STAMP = r"^\[(\S+ \S+)\] INFO .*"


def _stamp(text: str, pattern: str) -> float | None:
    found = re.findall(_STAMP + pattern, text, re.MULTILINE)
    if not found:
        return None
    return datetime.strptime(found[-1], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _timed_start(broker: KafkaBroker) -> dict[str, float]:
    """Start ``broker``; returns each phase (in the order they ended) and how long it took,
    the first counted from the JVM's start."""
    seen = broker.log_path.stat().st_size if broker.log_path.exists() else 0
    began = time.time()
    broker.start()
    ready = time.time()
    with broker.log_path.open(errors="replace") as log:
        log.seek(seen)
        text = log.read()
    ends = sorted((stamp, name) for name, pattern in PHASES.items()
                  if (stamp := _stamp(text, pattern)) is not None)
    marks = [(began, "JVM started"), *ends, (ready, READY)]
    return {name: b - a for (a, _), (b, name) in itertools.pairwise(marks)}


def _show(phases: dict[str, float]) -> str:
    return ", ".join(f"{name} {took:.1f}s" for name, took in phases.items())


async def _fill(bootstrap: str, partitions: int, records: int) -> None:
    await ensure_topics(bootstrap, partitions)
    producer = AIOKafkaProducer(**client_options(bootstrap), acks="all", enable_idempotence=True)
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
        rounds: list[dict[str, float]] = []
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
              f"{statistics.median(totals):.1f} / {max(totals):.1f}s; each phase (from the one "
              "before it, the first from the JVM's start):")
        for name in rounds[0]:
            took = [r[name] for r in rounds if name in r]
            print(f"  {name:<30} {statistics.median(took):4.1f} / {max(took):4.1f}s")
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    run()
