"""Subscriptions over a real websocket (graphql-transport-ws), pushed by the projector's NOTIFY."""

import asyncio
import contextlib
import json

import asyncpg
import httpx
import pytest
import websockets

from common.auth import issue_token
from common.settings import asyncpg_dsn
from query.hub import APPLICATION_NAME
from tests.conftest import SECRET, Running, token, unique, unique_symbol
from tests.e2e import gql
from tests.e2e.helpers import new_asset, post

pytestmark = pytest.mark.e2e

BALANCES = """subscription($w: ID!) { walletBalances(wallet: $w) {
    wallet balances { asset { symbol } available held availableUnits } } }"""
TRANSFER = "subscription($id: ID!) { transferStatus(id: $id) { id status reason amount } }"


async def funded(http: httpx.AsyncClient, running: Running, amount: str = "50.00") -> tuple[str, str, str]:
    symbol, alice = unique_symbol(), unique("alice")
    issuer = token("treasury", roles=["issuer"], assets=[symbol])
    await new_asset(http, running, issuer, symbol)
    issued = await post(http, running, f"/v1/assets/{symbol}/issue", issuer, {"to": alice, "amount": amount})
    assert issued.json()["status"] == "completed", issued.text
    return symbol, alice, token(alice, wallets=[alice])


async def test_balance_subscription_receives_a_transfer_sent_over_http(
    http: httpx.AsyncClient, running: Running
) -> None:
    symbol, alice, alice_token = await funded(http, running)
    bob = unique("bob")
    async with gql.session(running, alice_token) as ws:
        await gql.subscribe(ws, "b", BALANCES, w=alice)
        first = await gql.receive(ws)
        assert first["type"] == "next" and first["id"] == "b"
        assert first["payload"]["data"]["walletBalances"]["balances"] == [
            {"asset": {"symbol": symbol}, "available": "50.00", "held": "0.00", "availableUnits": "5000"}]

        sent = await post(http, running, "/v1/transfers", alice_token,
                          {"from": alice, "to": bob, "asset": symbol, "amount": "12.34"}, wait=0)
        assert sent.status_code == 202, sent.text
        pushed = await gql.receive(ws)
        assert pushed["id"] == "b", pushed
        assert pushed["payload"]["data"]["walletBalances"] == {
            "wallet": alice,
            "balances": [{"asset": {"symbol": symbol}, "available": "37.66", "held": "0.00",
                          "availableUnits": "3766"}]}


async def test_transfer_status_stream_ends_at_the_final_status(http: httpx.AsyncClient, running: Running) -> None:
    symbol, alice, alice_token = await funded(http, running)
    bob = unique("bob")
    bob_token = token(bob, wallets=[bob])
    sent = await post(http, running, "/v1/transfers", alice_token,
                      {"from": alice, "to": bob, "asset": symbol, "amount": "60.00"}, wait=0)
    transfer_id = sent.json()["transfer_id"]
    async with gql.session(running, bob_token) as ws:  # the receiver may follow it too
        await gql.subscribe(ws, "t", TRANSFER, id=transfer_id)
        messages = [await gql.receive(ws)]
        while messages[-1]["type"] == "next":
            messages.append(await gql.receive(ws))
    final = messages[-2]["payload"]["data"]["transferStatus"]
    assert final == {"id": transfer_id, "status": "failed", "reason": "insufficient_funds", "amount": "60.00"}
    assert messages[-1] == {"id": "t", "type": "complete"}
    statuses = [m["payload"]["data"]["transferStatus"]["status"] for m in messages[:-1]]
    assert len(statuses) == len(set(statuses)), "each status is pushed once"


async def test_owner_may_subscribe_to_own_wallet_and_transfers_only(
    http: httpx.AsyncClient, running: Running
) -> None:
    symbol, alice, alice_token = await funded(http, running)
    bob = unique("bob")
    sent = await post(http, running, "/v1/transfers", alice_token,
                      {"from": alice, "to": bob, "asset": symbol, "amount": "1.00"})
    mallory = token(unique("mallory"), wallets=["someone-else"])
    auditor = token("auditor", roles=["auditor"])
    # alice's own stream is running: identical subscriptions share it only with the same rights.
    async with gql.session(running, alice_token) as own, gql.session(running, mallory) as ws:
        await gql.subscribe(own, "mine", BALANCES, w=alice)
        assert (await gql.receive(own))["payload"]["data"]["walletBalances"]["wallet"] == alice
        await gql.subscribe(ws, "w", BALANCES, w=alice)
        refused = await gql.receive(ws)
        assert refused["payload"]["errors"][0]["extensions"]["code"] == "forbidden", refused
        assert (await gql.receive(ws)) == {"id": "w", "type": "complete"}
        # Someone else's transfer streams as an unknown one: nothing, not even a refusal.
        await gql.subscribe(ws, "t", TRANSFER, id=sent.json()["transfer_id"])
        await gql.subscribe(ws, "u", TRANSFER, id="00000000-0000-0000-0000-000000000000")
        await gql.subscribe(ws, "mine", BALANCES, w="someone-else")
        assert (await gql.receive(ws))["id"] == "mine"
        with pytest.raises(TimeoutError):
            await gql.receive(ws, 1)
    async with gql.session(running, auditor) as ws:
        await gql.subscribe(ws, "w", BALANCES, w=alice)
        seen = await gql.receive(ws)
        assert seen["payload"]["data"]["walletBalances"]["balances"][0]["available"] == "49.00"


@pytest.mark.parametrize("payload, code", [
    ({}, "unauthenticated"),
    ({"Authorization": "Bearer not-a-jwt"}, "invalid_token"),
    ({"Authorization": "Bearer " + issue_token("another-secret-" + "y" * 40, "alice", wallets=["alice"])},
     "invalid_token"),
    ({"Authorization": "Bearer " + issue_token(SECRET, "alice", wallets=["alice"], ttl_seconds=-60)},
     "token_expired"),
])
async def test_connection_init_without_a_valid_token_is_closed(
    running: Running, payload: dict[str, str], code: str
) -> None:
    async with websockets.connect(gql.ws_url(running), subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403 and closed.value.rcvd.reason.startswith(code)


async def test_subscribing_before_connection_init_is_refused(running: Running) -> None:
    async with websockets.connect(gql.ws_url(running), subprotocols=["graphql-transport-ws"]) as ws:
        await gql.subscribe(ws, "x", BALANCES, w="alice")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_legacy_graphql_ws_protocol_is_off(running: Running) -> None:
    async with websockets.connect(gql.ws_url(running), subprotocols=["graphql-ws"]) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4406


async def test_subscriptions_are_not_served_over_http(http: httpx.AsyncClient, running: Running) -> None:
    alice = unique("alice")
    refused = await gql.error(http, running, token(alice, wallets=[alice]), BALANCES, w=alice)
    assert refused["extensions"]["code"] == "invalid_query"
    assert "graphql-transport-ws" in refused["message"]


async def listeners(running: Running) -> list[int]:
    conn = await asyncpg.connect(asyncpg_dsn(running.stack.infra.database_url))
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", APPLICATION_NAME)
    finally:
        await conn.close()
    return [r["pid"] for r in rows]


async def test_one_listener_serves_every_subscriber_and_survives_losing_it(
    http: httpx.AsyncClient, running: Running
) -> None:
    symbol, alice, alice_token = await funded(http, running)
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(gql.session(running, alice_token)) for _ in range(5)]
        for i, ws in enumerate(sockets):
            for j in range(4):
                await gql.subscribe(ws, f"s{j}", BALANCES, w=alice)
                assert (await gql.receive(ws))["type"] == "next", (i, j)
        before = await listeners(running)
        assert len(before) == 1, "twenty subscribers, one LISTEN connection"

        # Lose the listener: it reconnects and re-reads what it watches, so nothing is missed.
        conn = await asyncpg.connect(asyncpg_dsn(running.stack.infra.database_url))
        try:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", before[0])
        finally:
            await conn.close()
        sent = await post(http, running, "/v1/transfers", alice_token,
                          {"from": alice, "to": unique("bob"), "asset": symbol, "amount": "5.00"})
        assert sent.json()["status"] == "completed", sent.text
        for ws in sockets:
            seen = {}
            while len(seen) < 4:
                message = await gql.receive(ws)
                seen[message["id"]] = message["payload"]["data"]["walletBalances"]["balances"][0]["available"]
            assert set(seen.values()) == {"45.00"}
        after = await listeners(running)
        assert len(after) == 1 and after != before
