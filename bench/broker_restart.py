"""The floor of a broker's return after a SIGKILL: ``python -m bench.broker_restart``.

A broker of its own (the local stack's JVM options, the topics, some records written), SIGKILLed
and started again on its data, as the supervisor does, ``--rounds`` times. Each restart is split
in two: from the start of the JVM to Kafka's ``Kafka Server started`` (the JVM, log recovery,
KRaft's own log), then to the broker serving metadata with a controller (its registration, which
waits for the old incarnation's session to end, and the readiness probe). A cold start of a
fresh broker is measured the same way, for comparison. Nothing but 127.0.0.1 is contacted.

It is what the soak's "SIGKILL -> part back" for the broker cannot go below; the supervisor adds
up to one tick (0.5 s) to notice the death. Not part of ``make bench``.
"""

import argparse
import asyncio
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

_STARTED = re.compile(r"^\[(\S+ \S+)\] INFO \[KafkaRaftServer nodeId=\d+\] Kafka Server started",
                      re.MULTILINE)


def _last_started(log: Path) -> float:
    """The wall-clock time of the last ``Kafka Server started`` in the broker's log."""
    stamps = _STARTED.findall(log.read_text(errors="replace"))
    return datetime.strptime(stamps[-1], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _timed_start(broker: KafkaBroker) -> tuple[float, float]:
    """Start ``broker``; returns (JVM start to Kafka started, Kafka started to ready)."""
    began = time.time()
    broker.start()
    ready = time.time()
    started = _last_started(broker.log_path)
    return started - began, ready - started


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
        jvm, ready = _timed_start(broker)
        print(f"cold start        JVM -> Kafka started {jvm:4.1f}s, -> ready {ready:4.1f}s", flush=True)
        asyncio.run(_fill(broker.bootstrap, 4, args.records))
        ups, readies, totals = [], [], []
        for i in range(args.rounds):
            time.sleep(3)
            killed = time.time()
            broker.kill()
            broker.reap()
            jvm, ready = _timed_start(broker)
            total = time.time() - killed
            ups.append(jvm)
            readies.append(ready)
            totals.append(total)
            print(f"restart {i + 1}         JVM -> Kafka started {jvm:4.1f}s, -> ready {ready:4.1f}s, "
                  f"SIGKILL -> ready {total:4.1f}s", flush=True)
        print(f"\nafter a SIGKILL (p50 / max of {args.rounds}): JVM, log recovery and KRaft "
              f"{statistics.median(ups):.1f} / {max(ups):.1f}s; registration and probe "
              f"{statistics.median(readies):.1f} / {max(readies):.1f}s; SIGKILL to ready "
              f"{statistics.median(totals):.1f} / {max(totals):.1f}s")
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    run()
