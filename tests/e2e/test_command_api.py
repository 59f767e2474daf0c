"""The command API's own contract: its OpenAPI document, who may read a command's outcome, and
what a wait that runs out answers."""

import asyncio
import json

import httpx
import pytest

from command.openapi import render
from tests.conftest import Running, token, unique, unique_symbol
from tests.e2e.helpers import graphql, new_asset, post

pytestmark = pytest.mark.e2e


async def test_the_api_serves_its_openapi_document(http: httpx.AsyncClient, running: Running) -> None:
    answer = await http.get(running.command_url + "/openapi.json")
    assert answer.status_code == 200
    assert answer.json() == json.loads(render())


async def test_only_the_sender_or_an_overseer_reads_a_command_outcome(
    http: httpx.AsyncClient, running: Running
) -> None:
    symbol, alice = unique_symbol(), unique("alice")
    issuer = token("treasury", roles=["issuer"], assets=[symbol])
    await new_asset(http, running, issuer, symbol)
    alice_token = token(alice, wallets=[alice])
    sent = await post(http, running, "/v1/transfers", alice_token,
                      {"from": alice, "to": "bob", "asset": symbol, "amount": "1.00"})
    command_id = sent.json()["command_id"]
    url = f"{running.command_url}/v1/commands/{command_id}"

    mine = await http.get(url, headers={"Authorization": f"Bearer {alice_token}"})
    assert mine.status_code == 200 and mine.json()["status"] == "failed"
    auditor = await http.get(url, headers={"Authorization": f"Bearer {token('a', roles=['auditor'])}"})
    assert auditor.status_code == 200
    other = await http.get(url, headers={"Authorization": f"Bearer {token('eve', wallets=['eve'])}"})
    assert other.status_code == 404 and other.json()["error"]["code"] == "unknown_command"
    nobody = await http.get(url)
    assert nobody.status_code == 401


async def test_idempotency_survives_a_command_api_restart(
    http: httpx.AsyncClient, running: Running
) -> None:
    symbol, alice = unique_symbol(), unique("alice")
    issuer = token("treasury", roles=["issuer"], assets=[symbol])
    await new_asset(http, running, issuer, symbol)
    body = {"to": alice, "amount": "10.00"}
    key = {"Idempotency-Key": unique("issue-")}
    first = await post(http, running, f"/v1/assets/{symbol}/issue", issuer, body, **key)
    assert first.json()["status"] == "completed", first.text

    services = running.services
    old = services.children["command-api"]
    old.kill()
    old.wait()
    services.start_one("command-api")
    services.wait_http(f"{running.command_url}/readyz", "command-api")

    again = await post(http, running, f"/v1/assets/{symbol}/issue", issuer, body, **key)
    assert again.status_code == 200, again.text
    assert again.json()["command_id"] == first.json()["command_id"]
    other = await post(http, running, f"/v1/assets/{symbol}/issue", issuer,
                       {"to": alice, "amount": "11.00"}, **key)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    auditor = token("auditor", roles=["auditor"])
    data = await graphql(http, running, auditor, "query($s: String!) { asset(symbol: $s) { supply } }",
                         s=symbol)
    assert data["asset"]["supply"] == "10.00"


async def test_a_wait_that_runs_out_answers_202_with_where_to_look(
    http: httpx.AsyncClient, running: Running
) -> None:
    symbol, alice = unique_symbol(), unique("alice")
    issuer = token("treasury", roles=["issuer"], assets=[symbol])
    await new_asset(http, running, issuer, symbol)
    await post(http, running, f"/v1/assets/{symbol}/issue", issuer, {"to": alice, "amount": "5.00"})
    alice_token = token(alice, wallets=[alice])
    # No pipeline decides, projects and notifies within a millisecond.
    sent = await post(http, running, "/v1/transfers", alice_token,
                      {"from": alice, "to": "bob", "asset": symbol, "amount": "1.00"}, Prefer="wait=0.001")
    assert sent.status_code == 202, sent.text
    accepted = sent.json()
    assert accepted["status"] not in ("completed", "failed"), accepted
    assert accepted["links"]["status"] == f"/v1/commands/{accepted['command_id']}"

    for _ in range(150):
        later = await http.get(running.command_url + accepted["links"]["status"],
                               headers={"Authorization": f"Bearer {alice_token}"})
        if later.status_code == 200 and later.json()["status"] == "completed":
            break
        await asyncio.sleep(0.1)
    assert later.json()["status"] == "completed", later.text
