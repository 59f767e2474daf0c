"""Floors for ``bench.command_api``: what no command API built on this stack can beat here.

* A bare HTTP server: uvicorn as the command API runs it (one worker, httptools, uvloop), its
  app answering every POST ``202`` at once, with no token, no JSON, no Kafka. Its closed-loop
  rate under the same load generator caps the rate any such API can accept on this machine.
  ``python -m bench.command_floor PORT`` serves it.
* The hops of a transfer, each alone on the idle stack: the API's append (one record, plain
  idempotent produce) until a ``read_committed`` consumer has it; one Kafka transaction (one
  record, commit) until such a consumer has it; one small PostgreSQL transaction with
  ``NOTIFY`` until a ``LISTEN``er hears it. A transfer goes through the first, two of the second
  in series (the debit on the payer's partition, then the credit on the payee's) and the third
  (the projector), so their sum is the least its end-to-end latency can be.
"""

import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from common.kafka import client_options
from processor.partition import quick_transaction_restarts
from projector.worker import SESSION

_ANSWER = b'{"status":"accepted"}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_ANSWER)).encode())]


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the request, answers 202 with a fixed body."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 202, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _ANSWER})


def _quantiles(values: list[float]) -> dict[str, float]:
    cut = statistics.quantiles(values, n=100)
    return {"p50_ms": round(1000 * cut[49], 1), "p99_ms": round(1000 * cut[98], 1)}


async def _sampled(send: Callable[[int], Awaitable[None]], arrivals: dict[int, asyncio.Future[float]],
                   samples: int, every: float) -> dict[str, float]:
    """Time ``send(i)`` until something sets ``arrivals[i]`` to the moment it arrived; the first
    20 sends warm the path up and are not counted."""
    loop, visible = asyncio.get_running_loop(), []
    for i in range(-20, samples):
        arrivals[i] = loop.create_future()
        began = time.perf_counter()
        await send(i)
        arrived = await asyncio.wait_for(arrivals[i], 10)
        del arrivals[i]
        if i >= 0:
            visible.append(arrived - began)
        await asyncio.sleep(every)
    return _quantiles(visible)


async def kafka_hop(bootstrap: str, *, transactional: bool, samples: int = 400,
                    every: float = 0.005) -> dict[str, float]:
    """One record sent (in a transaction of its own, or plainly as the API appends), until a
    ``read_committed`` consumer has it: p50/p99 ms. Producers set up as the processor's and the
    API's are; the scratch topic is removed afterwards."""
    quick_transaction_restarts()
    topic = f"bench.hop.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**client_options(bootstrap))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        try:
            return await _kafka_hop(bootstrap, topic, transactional, samples, every)
        finally:
            await admin.delete_topics([topic])
    finally:
        await admin.close()


async def _kafka_hop(bootstrap: str, topic: str, transactional: bool, samples: int,
                     every: float) -> dict[str, float]:
    producer = AIOKafkaProducer(**client_options(bootstrap), enable_idempotence=True, acks="all",
                                linger_ms=0, retry_backoff_ms=5,
                                transactional_id=f"{topic}-tx" if transactional else None)
    consumer = AIOKafkaConsumer(**client_options(bootstrap), isolation_level="read_committed")
    arrivals: dict[int, asyncio.Future[float]] = {}

    async def watch() -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                now = time.perf_counter()
                for record in records:
                    arrivals[int(record.value)].set_result(now)

    async def send(i: int) -> None:
        if transactional:
            async with producer.transaction():
                await producer.send(topic, str(i).encode(), partition=0)
        else:
            await producer.send_and_wait(topic, str(i).encode(), partition=0)

    await producer.start()
    await consumer.start()
    watcher = None
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        watcher = asyncio.create_task(watch())
        return await _sampled(send, arrivals, samples, every)
    finally:
        if watcher is not None:
            watcher.cancel()
        await consumer.stop()
        await producer.stop()


async def notify_hop(dsn: str, samples: int = 400, every: float = 0.005) -> dict[str, float]:
    """A small PostgreSQL transaction as the projector commits one (a row written, ``NOTIFY``,
    its session's settings) until a ``LISTEN``ing connection hears it: p50/p99 ms."""
    listener = await asyncpg.connect(dsn)
    writer = await asyncpg.connect(dsn, server_settings=SESSION)
    arrivals: dict[int, asyncio.Future[float]] = {}
    channel = f"bench_floor_{uuid.uuid4().hex[:8]}"

    def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        arrivals[int(payload)].set_result(time.perf_counter())

    async def send(i: int) -> None:
        async with writer.transaction():
            await writer.execute(f"INSERT INTO {channel} VALUES ($1)", i)
            await writer.execute("SELECT pg_notify($1, $2)", channel, str(i))

    try:
        await writer.execute(f"CREATE TABLE {channel} (n int PRIMARY KEY)")
        await listener.add_listener(channel, on_notify)
        return await _sampled(send, arrivals, samples, every)
    finally:
        await writer.execute(f"DROP TABLE IF EXISTS {channel}")
        await listener.close()
        await writer.close()


async def transfer_path(bootstrap: str, dsn: str) -> dict[str, dict[str, float]]:
    """The hops a transfer goes through, each measured alone."""
    return {"append": await kafka_hop(bootstrap, transactional=False),
            "transaction": await kafka_hop(bootstrap, transactional=True),
            "commit": await notify_hop(dsn)}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(bare_app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False, lifespan="off", proxy_headers=False)
