"""The operations endpoint of a worker process (processor, projector): ``GET /metrics``
(Prometheus) and ``GET /healthz``.

A few lines of asyncio rather than a web framework: it serves two fixed paths and nothing else.
The registry is made per process (in its ``main``), never at import.
"""

import asyncio
import contextlib
import json
import logging
import time

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from common.settings import SettingsError

log = logging.getLogger("common.ops")


class Health:
    """Alive while the worker's loop has turned recently; *degraded* (still 200: a restart
    would not help) while records it could not apply are waiting in the dead-letter topic."""

    def __init__(self, stale_after: float = 30.0) -> None:
        self.stale_after = stale_after
        self.last_turn = time.monotonic()
        self.partitions: list[int] = []
        self.dead_letters: int | None = None  # None: this worker does not count them

    def turned(self, partitions: list[int] | None = None) -> None:
        """The loop turned; ``partitions``: what it owns now, if that changed."""
        self.last_turn = time.monotonic()
        if partitions is not None:
            self.partitions = partitions

    def healthy(self) -> bool:
        return time.monotonic() - self.last_turn < self.stale_after


async def serve(registry: CollectorRegistry, health: Health, host: str, port: int) -> asyncio.Server:
    """Start serving ``GET /metrics`` and ``GET /healthz``; the caller closes the server."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            status, kind, body = _route(path, registry, health)
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


async def listen(registry: CollectorRegistry, health: Health, port: int, setting: str) -> asyncio.Server:
    """:func:`serve` on 127.0.0.1, failing with a message that names the setting to change."""
    try:
        return await serve(registry, health, "127.0.0.1", port)
    except OSError as exc:
        raise SettingsError(f"{setting}={port}: cannot listen ({exc.strerror}); choose a free port, "
                         "or 0 for no metrics endpoint") from None


def _route(path: str, registry: CollectorRegistry, health: Health) -> tuple[str, str, bytes]:
    if path == "/metrics":
        return "200 OK", CONTENT_TYPE_LATEST, generate_latest(registry)
    if path == "/healthz":
        ok = health.healthy()
        status = "stalled" if not ok else "degraded" if health.dead_letters else "ok"
        answer: dict[str, object] = {"status": status, "partitions": health.partitions}
        if health.dead_letters is not None:
            answer["dead_letters"] = health.dead_letters
        body = json.dumps(answer).encode()
        return ("200 OK" if ok else "503 Service Unavailable"), "application/json", body
    return "404 Not Found", "text/plain", b"not found\n"
