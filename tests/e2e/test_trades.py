"""Delivery versus payment over HTTP, read back through GraphQL: both legs or none."""

import httpx
import pytest

from tests.conftest import Running, token, unique, unique_symbol
from tests.e2e.helpers import balances, graphql, new_asset, post

pytestmark = pytest.mark.e2e

OPERATOR = token("venue", roles=["operator"])
AUDITOR = token("auditor", roles=["auditor"])
TRADE = "query($id: ID!) { trade(id: $id) { id status reason } }"


async def _market(http: httpx.AsyncClient, running: Running, buyer_cash: str) -> tuple[str, str, str, str]:
    """A bond (0 decimals) held by a seller, cash (2 decimals) held by a buyer."""
    bond, cash = unique_symbol(), unique_symbol()
    seller, buyer = unique("seller"), unique("buyer")
    issuer = token("treasury", roles=["issuer"], assets=[bond, cash])
    await new_asset(http, running, issuer, bond, decimals=0)
    await new_asset(http, running, issuer, cash, decimals=2)
    for symbol, to, amount in ((bond, seller, "10"), (cash, buyer, buyer_cash)):
        answer = await post(http, running, f"/v1/assets/{symbol}/issue", issuer,
                            {"to": to, "amount": amount})
        assert answer.json()["status"] == "completed", answer.text
    return bond, cash, seller, buyer


async def test_settled_trade_moves_the_asset_and_the_payment(
    http: httpx.AsyncClient, running: Running
) -> None:
    bond, cash, seller, buyer = await _market(http, running, "1000.00")
    answer = await post(http, running, "/v1/trades", OPERATOR, {
        "seller": seller, "buyer": buyer, "asset": bond, "quantity": "3",
        "payment_asset": cash, "price": "300.00",
    })
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "settled" and body["reason"] is None
    # "settled" promises the buyer's credit with the asset is already visible.
    assert await balances(http, running, AUDITOR, seller) == {bond: ("7", "0"), cash: ("300.00", "0.00")}
    assert await balances(http, running, AUDITOR, buyer) == {bond: ("3", "0"), cash: ("700.00", "0.00")}
    data = await graphql(http, running, AUDITOR, TRADE, id=body["trade_id"])
    assert data["trade"] == {"id": body["trade_id"], "status": "settled", "reason": None}
    # Someone else's trade is answered as an unknown one: the id's existence does not show.
    outsider = token(unique("mallory"), wallets=[unique("mallory")])
    assert await graphql(http, running, outsider, TRADE, id=body["trade_id"]) == {"trade": None}
    assert await graphql(http, running, outsider, TRADE, id="00000000-0000-0000-0000-000000000000") == {"trade": None}
    status = await http.get(f"{running.command_url}/v1/commands/{body['command_id']}",
                            headers={"Authorization": f"Bearer {OPERATOR}"})
    assert status.json()["status"] == "settled"
    assert status.json()["correlation_id"] == body["trade_id"]


async def test_trade_the_buyer_cannot_pay_for_releases_the_sellers_lock(
    http: httpx.AsyncClient, running: Running
) -> None:
    bond, cash, seller, buyer = await _market(http, running, "100.00")
    before = (await balances(http, running, AUDITOR, seller),
              await balances(http, running, AUDITOR, buyer))
    answer = await post(http, running, "/v1/trades", OPERATOR, {
        "seller": seller, "buyer": buyer, "asset": bond, "quantity": "3",
        "payment_asset": cash, "price": "300.00",
    })
    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["reason"]) == ("failed", "insufficient_funds")
    # "failed" is final only once the seller's lock is released: nothing stays held.
    after = (await balances(http, running, AUDITOR, seller),
             await balances(http, running, AUDITOR, buyer))
    assert after == before == ({bond: ("10", "0")}, {cash: ("100.00", "0.00")})
    data = await graphql(http, running, AUDITOR, TRADE, id=answer.json()["trade_id"])
    assert data["trade"]["status"] == "failed" and data["trade"]["reason"] == "insufficient_funds"


async def test_trade_the_seller_cannot_cover_fails_and_locks_nothing(
    http: httpx.AsyncClient, running: Running
) -> None:
    bond, cash, seller, buyer = await _market(http, running, "1000.00")
    answer = await post(http, running, "/v1/trades", OPERATOR, {
        "seller": seller, "buyer": buyer, "asset": bond, "quantity": "11",
        "payment_asset": cash, "price": "1.00",
    })
    assert (answer.json()["status"], answer.json()["reason"]) == ("failed", "insufficient_funds")
    assert await balances(http, running, AUDITOR, seller) == {bond: ("10", "0")}
    assert await balances(http, running, AUDITOR, buyer) == {cash: ("1000.00", "0.00")}


async def test_owner_of_both_wallets_may_trade_and_a_retried_trade_settles_once(
    http: httpx.AsyncClient, running: Running
) -> None:
    bond, cash, seller, buyer = await _market(http, running, "50.00")
    both = token(unique("desk"), wallets=[seller, buyer])
    body = {"seller": seller, "buyer": buyer, "asset": bond, "quantity": "1",
            "payment_asset": cash, "price": "20.00"}
    headers = {"Authorization": f"Bearer {both}", "Prefer": "wait=15", "Idempotency-Key": "once"}
    answers = [await http.post(running.command_url + "/v1/trades", json=body, headers=headers)
               for _ in range(3)]
    assert {a.json()["trade_id"] for a in answers} == {answers[0].json()["trade_id"]}
    assert all(a.json()["status"] == "settled" for a in answers), [a.text for a in answers]
    assert await balances(http, running, AUDITOR, buyer) == {bond: ("1", "0"), cash: ("30.00", "0.00")}
