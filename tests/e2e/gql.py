"""A small GraphQL client for the tests: HTTP queries and graphql-transport-ws subscriptions."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import Running


async def raw(http: httpx.AsyncClient, running: Running, token: str | None, query: str,
              headers: dict[str, str] | None = None, **variables: Any) -> httpx.Response:
    auth = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return await http.post(running.graphql_url, json={"query": query, "variables": variables},
                           headers={**auth, **(headers or {})})


async def data(http: httpx.AsyncClient, running: Running, token: str, query: str,
               **variables: Any) -> dict[str, Any]:
    answer = await raw(http, running, token, query, **variables)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert "errors" not in body, body
    return body["data"]  # type: ignore[no-any-return]


async def error(http: httpx.AsyncClient, running: Running, token: str, query: str,
                **variables: Any) -> dict[str, Any]:
    """The one error the answer holds (its message, path and extensions)."""
    answer = await raw(http, running, token, query, **variables)
    assert answer.status_code == 200, answer.text
    errors = answer.json().get("errors")
    assert errors and len(errors) == 1, answer.text
    return errors[0]  # type: ignore[no-any-return]


def ws_url(running: Running) -> str:
    return running.graphql_url.replace("http://", "ws://", 1)


@contextlib.asynccontextmanager
async def session(running: Running, token: str) -> AsyncIterator[ClientConnection]:
    """A graphql-transport-ws connection, acknowledged."""
    async with websockets.connect(ws_url(running), subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ack["type"] == "connection_ack", ack
        yield ws


async def subscribe(ws: ClientConnection, op_id: str, query: str, **variables: Any) -> None:
    await ws.send(json.dumps({"id": op_id, "type": "subscribe",
                              "payload": {"query": query, "variables": variables}}))


async def receive(ws: ClientConnection, seconds: float = 15) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), seconds))  # type: ignore[no-any-return]
