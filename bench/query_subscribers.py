"""The subscriber side of ``bench.query``: N websocket subscribers to one wallet, then a few
transfers from it over HTTP; how long each balance change takes to reach every subscriber,
counted from the projector's NOTIFY (seen by a LISTEN connection of our own) and from the HTTP
request. ``python -m bench.query_subscribers '<json spec>'`` prints one JSON line."""

import asyncio
import base64
import contextlib
import json
import os
import sys
import time
import urllib.request
from typing import Any

import asyncpg

from bench.httpload import event_loop_runner
from common.auth import issue_token
from common.settings import asyncpg_dsn
from events.readmodel import CHANNEL

ALICE, BOB, SYMBOL = "bench-alice", "bench-bob", "BENCHUSD"
SUBSCRIPTION = """subscription($w: ID!) { walletBalances(wallet: $w) { balances { availableUnits } } }"""


class Arrivals:
    """When each subscriber first saw each balance, and an event set once all of them saw one."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: list[dict[str, float]] = [{} for _ in range(n)]
        self.counts: dict[str, int] = {}
        self.all_seen: dict[str, asyncio.Event] = {}

    def expect(self, key: str) -> asyncio.Event:
        return self.all_seen.setdefault(key, asyncio.Event())

    def arrived(self, i: int, key: str, at: float) -> None:
        if key in self.seen[i]:  # the same balance again (another field of the state changed)
            return
        self.seen[i][key] = at
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.counts[key] == self.n:
            self.expect(key).set()


class Subscriber(asyncio.Protocol):
    """One graphql-transport-ws client on a bare socket: a push is timed when its bytes arrive,
    before anything else is done with it, so the figure is the server's and the network's, not
    a client library's (a thousand of them share this process and its event loop)."""

    def __init__(self, i: int, arrivals: Arrivals) -> None:
        self.i, self.arrivals = i, arrivals
        self.buffer = bytearray()
        self.upgraded = False
        self.streaming = False  # after the first answer: every text frame is a push to time
        self.setup: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.upgrade: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        at = time.monotonic()
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buffer.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(f"no websocket: {bytes(self.buffer[:200])!r}")
            del self.buffer[:end + 4]
            self.upgraded = True
            self.upgrade.set_result(None)
        for opcode, payload in self._frames():
            if opcode == 0x9:  # ping
                self.send_frame(payload, opcode=0xA)
            elif opcode == 0x1 and self.streaming:
                balances = json.loads(payload)["payload"]["data"]["walletBalances"]["balances"]
                self.arrivals.arrived(self.i, balances[0]["availableUnits"], at)
            elif opcode == 0x1:
                self.setup.put_nowait(payload)

    def _frames(self) -> list[tuple[int, bytes]]:
        frames = []
        buffer = self.buffer
        while len(buffer) >= 2:
            length, at = buffer[1] & 0x7F, 2
            if length == 126:
                length, at = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                length, at = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < at + length:
                break
            frames.append((buffer[0] & 0x0F, bytes(buffer[at:at + length])))
            del buffer[:at + length]
        return frames

    def send_frame(self, payload: bytes, opcode: int = 0x1) -> None:
        """A final frame, masked as a client's must be (with a zero key: the payload as is)."""
        n = len(payload)
        head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else
                                         bytes([0x80 | 126]) + n.to_bytes(2, "big"))
        self.transport.write(head + b"\0\0\0\0" + payload)

    async def open(self, host: str, port: int, token: str) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write((f"GET /graphql HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                              f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                              "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n"
                              "\r\n").encode())
        await asyncio.wait_for(self.upgrade, 30)
        self.send_frame(json.dumps({"type": "connection_init",
                                    "payload": {"Authorization": f"Bearer {token}"}}).encode())
        ack = json.loads(await asyncio.wait_for(self.setup.get(), 30))
        assert ack["type"] == "connection_ack", ack
        self.send_frame(json.dumps({"id": "1", "type": "subscribe",
                                    "payload": {"query": SUBSCRIPTION, "variables": {"w": ALICE}}}).encode())
        now = json.loads(await asyncio.wait_for(self.setup.get(), 30))  # the balance as it is now
        assert now["type"] == "next", now
        self.streaming = True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _subscriber(port: int, token: str, i: int, arrivals: Arrivals,
                      gate: asyncio.Semaphore) -> Subscriber:
    subscriber = Subscriber(i, arrivals)
    async with gate:
        await subscriber.open("127.0.0.1", port, token)
    return subscriber


def _transfer(command_port: int, token: str) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{command_port}/v1/transfers", method="POST",
        data=json.dumps({"from": ALICE, "to": BOB, "asset": SYMBOL, "amount": "1.00"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=15):
        pass


def _pct(values: list[float], p: float) -> float | None:
    values = sorted(values)
    return None if not values else round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 1)


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    secret, dsn = os.environ["LEDGERLINE_JWT_SECRET"], asyncpg_dsn(os.environ["DATABASE_URL"])
    token = issue_token(secret, ALICE, wallets=[ALICE])
    n, rounds = spec["n"], spec["rounds"]
    arrivals = Arrivals(n)
    gate = asyncio.Semaphore(50)
    subscribers = await asyncio.wait_for(asyncio.gather(
        *(_subscriber(spec["query_port"], token, i, arrivals, gate) for i in range(n))), 120)

    notified: list[float] = []
    listener = await asyncpg.connect(dsn)
    await listener.add_listener(CHANNEL, lambda _c, _p, _ch, payload: notified.append(time.monotonic())
                                if ALICE in json.loads(payload).get("wallets", []) else None)
    units = int(await listener.fetchval(
        "SELECT available FROM wallet_balances WHERE wallet = $1 AND asset = $2", ALICE, SYMBOL))
    from_notify: list[float] = []
    from_request: list[float] = []
    received = 0
    loop = asyncio.get_running_loop()
    for _ in range(rounds):
        units -= 100
        key, before = str(units), len(notified)
        everyone = arrivals.expect(key)
        posted = time.monotonic()
        await loop.run_in_executor(None, _transfer, spec["command_port"], token)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everyone.wait(), 10)
        times = [s[key] for s in arrivals.seen if key in s]
        received += len(times)
        if len(notified) > before:
            from_notify += [t - notified[before] for t in times]
        from_request += [t - posted for t in times]
        await asyncio.sleep(0.3)
    await listener.close()
    for subscriber in subscribers:
        subscriber.close()
    return {"subscribers": n, "rounds": rounds, "expected": n * rounds, "received": received,
            "notify_p50_ms": _pct(from_notify, 0.5), "notify_p99_ms": _pct(from_notify, 0.99),
            "notify_max_ms": _pct(from_notify, 1.0), "request_p50_ms": _pct(from_request, 0.5),
            "request_p99_ms": _pct(from_request, 0.99), "request_max_ms": _pct(from_request, 1.0)}


if __name__ == "__main__":
    print(json.dumps(event_loop_runner()(run(json.loads(sys.argv[1])))))
