"""The projector's Prometheus metrics and its small ``/metrics`` + ``/healthz`` HTTP endpoint.

The registry is made per process (in ``main``), never at import. The endpoint is a few lines of
asyncio rather than a web framework: it serves two fixed paths and nothing else.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger("ledgerline.projector")


class ProjectorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("ledgerline_projector_events", "Records applied to the views",
                              ["projection"], registry=r)
        self.dead_letters = Counter("ledgerline_projector_dead_letters",
                                    "Records sent to the dead-letter topic", ["projection"], registry=r)
        self.batch_size = Histogram("ledgerline_projector_batch_records", "Records per committed batch",
                                    ["projection"], registry=r,
                                    buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000))
        self.batch_seconds = Histogram("ledgerline_projector_batch_seconds",
                                       "Time to write one batch and its offsets", ["projection"],
                                       registry=r)
        self.retries = Counter("ledgerline_projector_retries",
                               "Batches retried after a transient failure", ["projection"], registry=r)
        labels = ["projection", "topic", "partition"]
        self.lag_records = Gauge("ledgerline_projection_lag_records",
                                 "Records in the topic not yet applied to the views", labels, registry=r)
        self.lag_seconds = Gauge("ledgerline_projection_lag_seconds",
                                 "Age of the newest applied record while records are pending, else 0",
                                 labels, registry=r)


class Health:
    """Alive while the consume loop has turned recently."""

    def __init__(self, stale_after: float = 30.0) -> None:
        self.stale_after = stale_after
        self.last_turn = time.monotonic()
        self.partitions: list[int] = []

    def turned(self, partitions: list[int]) -> None:
        self.last_turn = time.monotonic()
        self.partitions = partitions

    def healthy(self) -> bool:
        return time.monotonic() - self.last_turn < self.stale_after


async def serve(metrics: ProjectorMetrics, health: Health, host: str, port: int) -> asyncio.Server:
    """Start serving ``GET /metrics`` and ``GET /healthz``; the caller closes the server."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            status, kind, body = _route(path, metrics, health.healthy, health.partitions)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(answer, host, port)
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server


def _route(path: str, metrics: ProjectorMetrics, healthy: Callable[[], bool],
           partitions: list[int]) -> tuple[str, str, bytes]:
    if path == "/metrics":
        return "200 OK", CONTENT_TYPE_LATEST, generate_latest(metrics.registry)
    if path == "/healthz":
        ok = healthy()
        body = json.dumps({"status": "ok" if ok else "stalled", "partitions": partitions}).encode()
        return ("200 OK" if ok else "503 Service Unavailable"), "application/json", body
    return "404 Not Found", "text/plain", b"not found\n"
