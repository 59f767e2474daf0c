"""The whole stack under one fault at a time, through HTTP, under a light load from clients that
retry ``503`` with the same ``Idempotency-Key``.

Each test kills a real part of a stack of its own (its supervisor brings it back) and checks:
every accepted command decided once, no answer a 500 or slower than the bound, the balances are
what the reported outcomes say (the retrying client lost nothing), the stack back without help and
no process restarted (each rode through the outage), ``ledgerline audit`` clean."""

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

import asyncpg
import httpx
import pytest
import websockets

from bench.chaos import Command, Population, Stack, supervised_stack
from ledgerline.local import PROCESSES

pytestmark = pytest.mark.e2e

Fault = Callable[[Stack], Awaitable[None]]


@pytest.fixture(scope="module")
def chaos() -> Iterator[Stack]:
    if os.environ.get("KAFKA_BOOTSTRAP") or os.environ.get("DATABASE_URL"):
        pytest.skip("the broker and the database are not ours to kill")
    with supervised_stack("faults") as stack:
        yield stack


async def _ready_watch(stack: Stack, stop: asyncio.Event, seen: Counter[tuple[str, int]]) -> None:
    async with httpx.AsyncClient(timeout=stack.settings.unavailable_seconds + 1) as http:
        while not stop.is_set():
            for name, url in (("command", stack.command_url), ("query", stack.query_url)):
                try:
                    seen[(name, (await http.get(f"{url}/readyz")).status_code)] += 1
                except httpx.TransportError:
                    seen[(name, 0)] += 1
            await asyncio.sleep(0.3)


async def _under(stack: Stack, fault: Fault) -> tuple[Population, Counter[tuple[str, int]]]:
    population = Population(stack, wallets=8)
    async with httpx.AsyncClient() as http:
        await population.setup(http)
    pids = {name: stack.pid(name) for name in PROCESSES}
    stop, ready = asyncio.Event(), Counter[tuple[str, int]]()
    load = asyncio.gather(population.load(stop, clients=3, pause=0.1), _ready_watch(stack, stop, ready))
    try:
        await asyncio.sleep(2)
        await fault(stack)
        await stack.back()
        await asyncio.sleep(2)
    finally:
        stop.set()
        await load
    t = population.tally
    assert not t.errors, t.errors[:5]
    assert not t.slow, f"answers slower than the bound: {t.slow}"
    assert t.id_changed == 0
    status = await population.outcomes()
    assert await population.doubled() == []
    assert await population.balance_mismatches(status) == []
    code, report = await asyncio.to_thread(population.audit)
    assert code == 0, report
    assert {name: stack.pid(name) for name in PROCESSES} == pids, "a process was restarted"
    return population, ready


async def _kill(stack: Stack, part: str) -> None:
    os.kill(stack.pid(part), signal.SIGKILL)
    await asyncio.sleep(0.5)


async def _hang_then_kill(stack: Stack, part: str) -> None:
    """Stop the part past the answer bound, then kill it: a restart as quick as the supervisor's
    can otherwise bring the broker back before any request waited the whole bound."""
    pid = stack.pid(part)
    os.kill(pid, signal.SIGSTOP)
    await asyncio.sleep(stack.settings.unavailable_seconds + 2.0)
    os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.5)


async def test_broker_sigkill(chaos: Stack) -> None:
    restarts = chaos.supervisor.parts["kafka"].restarts
    population, ready = await _under(chaos, lambda s: _hang_then_kill(s, "kafka"))
    assert chaos.supervisor.parts["kafka"].restarts == restarts + 1
    assert ready[("command", 503)] > 0, ready
    assert population.tally.unavailable > 0


async def test_postgres_sigkill(chaos: Stack) -> None:
    restarts = chaos.supervisor.parts["postgres"].restarts
    _, ready = await _under(chaos, lambda s: _kill(s, "postgres"))
    assert chaos.supervisor.parts["postgres"].restarts == restarts + 1
    assert ready[("command", 503)] > 0 and ready[("query", 503)] > 0, ready


async def _terminate_backends(stack: Stack) -> None:
    names = ["ledgerline-projector", "ledgerline-query", "ledgerline-query-listener"]
    conn = await asyncpg.connect(stack.dsn)
    try:
        for _ in range(3):
            killed = await conn.fetch(
                "SELECT application_name, pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = ANY($1::text[])", names)
            assert {r["application_name"] for r in killed} >= set(names[:2]), killed
            await asyncio.sleep(1.0)
    finally:
        await conn.close()


async def test_projector_and_query_connections_terminated(chaos: Stack) -> None:
    population, _ = await _under(chaos, _terminate_backends)
    # The query API answers from fresh connections, without an error.
    wallet = population.wallets[0]
    query = f'{{ wallet(id: "{wallet}") {{ balances {{ asset {{ symbol }} available }} }} }}'
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(f"{chaos.query_url}/graphql", json={"query": query},
                                 headers={"Authorization": f"Bearer {population.operator}"})
    assert answer.status_code == 200 and "errors" not in answer.json(), answer.text


async def test_broker_sigstop_answers_503_in_bound_and_one_command(chaos: Stack) -> None:
    population = Population(chaos, wallets=2)
    async with httpx.AsyncClient() as http:
        await population.setup(http)
        a, b = population.wallets
        cmd = Command("transfer", "/v1/transfers", {"from": a, "to": b, "asset": population.cash,
                                                    "amount": "7.00"}, population.operator)
        headers = {"Authorization": f"Bearer {cmd.token}", "Idempotency-Key": cmd.key}
        broker = chaos.pid("kafka")
        os.kill(broker, signal.SIGSTOP)
        try:
            began = time.monotonic()
            answer = await http.post(f"{chaos.command_url}{cmd.path}", json=cmd.body,
                                     headers=headers, timeout=30)
            took = time.monotonic() - began
        finally:
            os.kill(broker, signal.SIGCONT)
        assert answer.status_code == 503, answer.text
        assert took <= chaos.settings.unavailable_seconds + 1.0, took
        assert "Retry-After" in answer.headers
        error = answer.json()["error"]
        assert error["code"] == "unavailable" and error["outcome"] in ("unknown", "not_sent")
        await population.send(http, cmd)  # the same key, until accepted
    assert cmd.status == 202
    if error["outcome"] == "unknown":
        assert error["command_id"] == cmd.command_id
    status = await population.outcomes()
    assert status[cmd.command_id] == "completed"
    assert await population.doubled() == []
    assert await population.balance_mismatches(status) == []
    await chaos.back()


BALANCES = "subscription($w: ID!) { walletBalances(wallet: $w) { balances { asset { symbol } available } } }"


async def test_a_subscription_stays_open_through_postgres_sigkill(chaos: Stack) -> None:
    population = Population(chaos, wallets=2)
    async with httpx.AsyncClient() as http:
        await population.setup(http)
    a, b = population.wallets
    ws_url = f"{chaos.query_url.replace('http://', 'ws://', 1)}/graphql"
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"Authorization": f"Bearer {population.operator}"}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "b", "type": "subscribe",
                                  "payload": {"query": BALANCES, "variables": {"w": b}}}))
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert first["type"] == "next", first

        await _kill(chaos, "postgres")
        await chaos.back()
        async with httpx.AsyncClient() as http:
            await population.send(http, Command("transfer", "/v1/transfers", {
                "from": a, "to": b, "asset": population.cash, "amount": "3.00"}, population.operator))

        # The same subscription, never re-subscribed, shows the credit made after the restart.
        deadline = time.monotonic() + 30
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
            assert message["type"] == "next", message
            balances = message["payload"]["data"]["walletBalances"]["balances"]
            if {"asset": {"symbol": population.cash}, "available": "1003.00"} in balances:
                break
