"""HTTP in, GraphQL out: register, issue, transfer, and a transfer that cannot be covered."""

import httpx
import pytest

from tests.conftest import Running, token, unique, unique_symbol
from tests.e2e.helpers import balances, graphql, new_asset, post

pytestmark = pytest.mark.e2e


async def test_issue_and_transfer_show_in_graphql(http: httpx.AsyncClient, running: Running) -> None:
    symbol, alice, bob = unique_symbol(), unique("alice"), unique("bob")
    issuer = token("treasury", roles=["issuer"], assets=[symbol])
    alice_token = token(alice, wallets=[alice])
    auditor = token("auditor", roles=["auditor"])
    await new_asset(http, running, issuer, symbol)

    issued = await post(http, running, f"/v1/assets/{symbol}/issue", issuer,
                        {"to": alice, "amount": "100.00"})
    assert issued.status_code == 200, issued.text
    assert issued.json()["status"] == "completed"

    sent = await post(http, running, "/v1/transfers", alice_token,
                      {"from": alice, "to": bob, "asset": symbol, "amount": "30.25", "memo": "rent"})
    assert sent.status_code == 200, sent.text
    answer = sent.json()
    assert answer["status"] == "completed" and answer["reason"] is None
    # "completed" promises the receiver's credit is already visible.
    assert await balances(http, running, auditor, bob) == {symbol: ("30.25", "0.00")}
    assert await balances(http, running, alice_token, alice) == {symbol: ("69.75", "0.00")}

    data = await graphql(http, running, alice_token,
                         "query($id: ID!) { transfer(id: $id) { id status reason from to amount } }",
                         id=answer["transfer_id"])
    assert data["transfer"] == {"id": answer["transfer_id"], "status": "completed",
                                "reason": None, "from": alice, "to": bob, "amount": "30.25"}


async def test_transfer_beyond_balance_fails_and_changes_nothing(
    http: httpx.AsyncClient, running: Running
) -> None:
    symbol, alice, bob = unique_symbol(), unique("alice"), unique("bob")
    issuer = token("treasury", roles=["issuer"], assets=[symbol])
    alice_token = token(alice, wallets=[alice])
    auditor = token("auditor", roles=["auditor"])
    await new_asset(http, running, issuer, symbol, decimals=6)
    await post(http, running, f"/v1/assets/{symbol}/issue", issuer, {"to": alice, "amount": "5"})

    sent = await post(http, running, "/v1/transfers", alice_token,
                      {"from": alice, "to": bob, "asset": symbol, "amount": "5.000001"})
    assert sent.status_code == 200, sent.text
    assert sent.json()["status"] == "failed"
    assert sent.json()["reason"] == "insufficient_funds"

    assert await balances(http, running, alice_token, alice) == {symbol: ("5.000000", "0.000000")}
    assert await balances(http, running, auditor, bob) == {}
    data = await graphql(http, running, alice_token,
                         "query($id: ID!) { transfer(id: $id) { status reason } }",
                         id=sent.json()["transfer_id"])
    assert data["transfer"] == {"status": "failed", "reason": "insufficient_funds"}
    status = await http.get(f"{running.command_url}/v1/commands/{sent.json()['command_id']}",
                            headers={"Authorization": f"Bearer {alice_token}"})
    assert status.json()["status"] == "failed"
