"""The subscriber side of ``bench.query``: N websocket subscribers to one wallet, then a few
transfers from it over HTTP; how long each balance change takes to reach every subscriber,
counted from the projector's NOTIFY (seen by a LISTEN connection of our own) and from the HTTP
request. ``python -m bench.query_subscribers '<json spec>'`` prints one JSON line."""

import asyncio
import contextlib
import json
import os
import sys
import time
import urllib.request
from typing import Any

import asyncpg
import websockets

from ledgerline.auth import issue_token
from ledgerline.settings import asyncpg_dsn
from projector.store import CHANNEL

ALICE, BOB, SYMBOL = "bench-alice", "bench-bob", "BENCHUSD"
SUBSCRIPTION = """subscription($w: ID!) { walletBalances(wallet: $w) { balances { availableUnits } } }"""


class Arrivals:
    """When each subscriber saw each balance, and an event set once all of them saw one."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: list[dict[str, float]] = [{} for _ in range(n)]
        self.counts: dict[str, int] = {}
        self.all_seen: dict[str, asyncio.Event] = {}

    def expect(self, key: str) -> asyncio.Event:
        return self.all_seen.setdefault(key, asyncio.Event())

    def arrived(self, i: int, key: str, at: float) -> None:
        self.seen[i][key] = at
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.counts[key] == self.n:
            self.expect(key).set()


async def _subscriber(url: str, token: str, i: int, arrivals: Arrivals, ready: asyncio.Event,
                      gate: asyncio.Semaphore) -> None:
    init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
    async with gate:
        ws = await websockets.connect(url, subprotocols=["graphql-transport-ws"], max_queue=None)
        await ws.send(json.dumps(init))
        await ws.recv()
        await ws.send(json.dumps({"id": "1", "type": "subscribe",
                                  "payload": {"query": SUBSCRIPTION, "variables": {"w": ALICE}}}))
        await ws.recv()  # the balance as it is now
    ready.set()
    async with ws:
        async for message in ws:
            at = time.monotonic()
            balances = json.loads(message)["payload"]["data"]["walletBalances"]["balances"]
            arrivals.arrived(i, balances[0]["availableUnits"], at)


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
    url = f"ws://127.0.0.1:{spec['query_port']}/graphql"
    n, rounds = spec["n"], spec["rounds"]
    arrivals = Arrivals(n)
    ready = [asyncio.Event() for _ in range(n)]
    gate = asyncio.Semaphore(50)
    tasks = [asyncio.create_task(_subscriber(url, token, i, arrivals, ready[i], gate)) for i in range(n)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 120)

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
    for task in tasks:
        task.cancel()
    return {"subscribers": n, "rounds": rounds, "expected": n * rounds, "received": received,
            "notify_p50_ms": _pct(from_notify, 0.5), "notify_p99_ms": _pct(from_notify, 0.99),
            "notify_max_ms": _pct(from_notify, 1.0), "request_p50_ms": _pct(from_request, 0.5),
            "request_p99_ms": _pct(from_request, 0.99), "request_max_ms": _pct(from_request, 1.0)}


def _event_loop_runner() -> Any:
    """uvloop when installed (it is, with uvicorn's extras): the client's own cost per message
    is then well below the server's, so the client is not what the figures measure."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


if __name__ == "__main__":
    print(json.dumps(_event_loop_runner()(run(json.loads(sys.argv[1])))))
