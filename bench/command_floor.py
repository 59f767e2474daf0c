"""Floors for ``bench.command_api``: what no command API built on this stack can beat here.

* A bare HTTP server: uvicorn as the command API runs it (one worker, httptools, uvloop), its
  app answering every POST ``202`` at once, with no token, no JSON, no Kafka. Its closed-loop
  rate under the same load generator caps the rate any such API can accept on this machine.
  ``python -m bench.command_floor PORT`` serves it.
* One Kafka transaction hop: a transactional producer sends one record and commits; the time
  until a ``read_committed`` consumer has it. A transfer is decided in two such hops in series
  (the debit on the payer's partition, then the credit on the payee's), before the projector's
  PostgreSQL transaction, so twice this is the least its end-to-end latency can be.
"""

import asyncio
import statistics
import sys
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from command.partition import quick_transaction_restarts

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


async def transaction_hop(bootstrap: str, samples: int = 400, every: float = 0.005) -> dict[str, float]:
    """p50/p99 ms of one transaction (one record, commit) answered, and of the same record
    seen by a ``read_committed`` consumer; the producer tuned as the processor's are."""
    quick_transaction_restarts()
    topic = f"bench.hop.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{topic}-tx",
                                enable_idempotence=True, acks="all", linger_ms=0, retry_backoff_ms=5)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    await producer.start()
    await consumer.start()
    seen: dict[int, asyncio.Future[float]] = {}

    async def watch() -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                now = time.perf_counter()
                for record in records:
                    seen[int(record.value)].set_result(now)

    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        watcher = asyncio.create_task(watch())
        committed, visible = [], []
        for i in range(-20, samples):  # the first 20 warm the path up
            seen[i] = asyncio.get_running_loop().create_future()
            began = time.perf_counter()
            async with producer.transaction():
                await producer.send(topic, str(i).encode(), partition=0)
            answered = time.perf_counter()
            arrived = await asyncio.wait_for(seen[i], 10)
            del seen[i]
            if i >= 0:
                committed.append(answered - began)
                visible.append(arrived - began)
            await asyncio.sleep(every)
        watcher.cancel()
    finally:
        await consumer.stop()
        await producer.stop()

    def q(values: list[float], at: int) -> float:
        return round(1000 * statistics.quantiles(values, n=100)[at - 1], 1)

    return {"committed_p50_ms": q(committed, 50), "committed_p99_ms": q(committed, 99),
            "visible_p50_ms": q(visible, 50), "visible_p99_ms": q(visible, 99)}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(bare_app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False, lifespan="off", proxy_headers=False)
