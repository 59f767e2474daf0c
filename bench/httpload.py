"""A small HTTP/1.1 load generator, meant to run in its own process beside the server it loads.

Two modes: closed loop (``connections`` clients, each sending its next request when the last
answer arrives: the server's maximum rate) and open loop (requests sent on a fixed schedule
whatever the server does; each latency is measured from the request's scheduled time, so a
server that falls behind shows it instead of slowing the load down). Requests are prebuilt
bytes and answers are read by ``Content-Length``, to keep the generator's own cost small.
A spec may give ``variants`` (per-request ``headers`` and ``body``), sent in turn, and the
``status`` an answer must have (200 unless told).

``python -m bench.httpload '<json spec>'`` prints one JSON result line.
"""

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

# The event loop's own clock may be coarse (uvloop's ticks in milliseconds): latencies are
# read from the process's monotonic clock instead.
clock = time.perf_counter


@dataclass
class Result:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (scheduled, latency) s
    started: float = 0.0  # the open loop's start on the monotonic clock (shared by processes)
    first_failure: str | None = None
    statuses: dict[int, int] = field(default_factory=dict)  # answers by HTTP status

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return None if not lat else round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2)

        return {"sent": self.sent, "ok": self.ok, "failed": self.failed,
                "rate": round(self.ok / self.seconds, 1) if self.seconds else 0.0,
                "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0),
                "first_failure": self.first_failure, "statuses": self.statuses}


def request_bytes(method: str, path: str, host: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 address: tuple[str, int]) -> None:
        self.reader, self.writer, self.address = reader, writer, address

    @classmethod
    async def open(cls, host: str, port: int) -> "Connection":
        return cls(*await asyncio.open_connection(host, port), (host, port))

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
            # A server closes a connection left idle past its keep-alive time (a reset if our
            # request crossed its close); like any HTTP client, send again on a new one (the
            # request was never read: nothing came back).
            if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                raise
            self.writer.close()
            self.reader, self.writer = await asyncio.open_connection(*self.address)
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        at = head.lower().find(b"content-length:")
        length = int(head[at + 15: head.find(b"\r\n", at)]) if at >= 0 else 0
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


@dataclass
class Expect:
    status: int
    text: bytes


def _check(result: Result, status: int, body: bytes, expect: Expect) -> None:
    result.statuses[status] = result.statuses.get(status, 0) + 1
    if status == expect.status and expect.text in body:
        result.ok += 1
    else:
        result.failed += 1
        result.first_failure = result.first_failure or f"{status} {body[:200]!r}"


class Requests:
    """The prebuilt requests, handed out in turn."""

    def __init__(self, requests: list[bytes]) -> None:
        self.requests = requests
        self.i = 0

    def next(self) -> bytes:
        self.i += 1
        return self.requests[self.i % len(self.requests)]


async def closed_loop(host: str, port: int, requests: Requests, expect: Expect, connections: int,
                      seconds: float) -> Result:
    result = Result()
    end = clock() + seconds

    async def client() -> None:
        conn = await Connection.open(host, port)
        try:
            while clock() < end:
                started = clock()
                result.sent += 1
                status, body = await conn.exchange(requests.next())
                result.latencies.append(clock() - started)
                _check(result, status, body, expect)
        finally:
            conn.close()

    started = clock()
    await asyncio.gather(*(client() for _ in range(connections)))
    result.seconds = clock() - started
    return result


async def open_loop(host: str, port: int, requests: Requests, expect: Expect, rate: float, seconds: float,
                    max_connections: int = 1000) -> Result:
    result = Result()
    idle = [await Connection.open(host, port) for _ in range(16)]
    opened = len(idle)

    async def fire(scheduled: float) -> None:
        nonlocal opened
        if idle:
            conn = idle.pop()
        elif opened < max_connections:
            opened += 1
            conn = await Connection.open(host, port)
        else:
            result.failed += 1
            result.first_failure = result.first_failure or "no free connection"
            return
        status, body = await conn.exchange(requests.next())
        result.latencies.append(clock() - scheduled)
        result.timeline.append((scheduled - start, result.latencies[-1]))
        _check(result, status, body, expect)
        idle.append(conn)

    total = int(rate * seconds)
    start = clock() + 0.05
    tasks = []
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - clock()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        result.sent += 1
        tasks.append(asyncio.create_task(fire(scheduled)))
    await asyncio.gather(*tasks)
    result.seconds = seconds
    result.started = start
    for conn in idle:
        conn.close()
    return result


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    host, port = spec["host"], spec["port"]
    variants = spec.get("variants") or [{}]
    requests = Requests([
        request_bytes(spec["method"], spec["path"], f"{host}:{port}",
                      {**spec["headers"], **v.get("headers", {})},
                      v.get("body", spec.get("body", "")).encode())
        for v in variants])
    expect = Expect(spec.get("status", 200), spec["expect"].encode())
    # Warm the server up (and its caches) before measuring.
    warm = await closed_loop(host, port, requests, expect, 4, spec.get("warmup", 1.0))
    cpu = time.process_time()
    if spec["mode"] == "closed":
        result = await closed_loop(host, port, requests, expect, spec["connections"], spec["seconds"])
    else:
        result = await open_loop(host, port, requests, expect, spec["rate"], spec["seconds"])
    out = {**result.summary(), "client_cpu_s": round(time.process_time() - cpu, 2), "warmup_ok": warm.ok,
           "warmup_statuses": warm.statuses}
    if spec.get("timeline"):  # when each request was due, and its latency: to see when the slow ones come
        out["timeline"] = [(round(t, 4), round(lat * 1000, 2)) for t, lat in result.timeline]
        out["timeline_start"] = result.started
    return out


def event_loop_runner() -> Any:
    """uvloop when installed (it is, with uvicorn's extras): the client's own cost per message
    is then well below the server's, so the client is not what the figures measure."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


if __name__ == "__main__":
    print(json.dumps(event_loop_runner()(run(json.loads(sys.argv[1])))))
