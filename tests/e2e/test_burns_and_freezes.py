"""Burning reduces the supply; a frozen wallet cannot be debited but is still credited."""

import httpx
import pytest

from tests.conftest import Running, token, unique, unique_symbol
from tests.e2e.helpers import balances, funded_alice, graphql, new_asset, post

pytestmark = pytest.mark.e2e

AUDITOR = token("auditor", roles=["auditor"])
COMPLIANCE = token("compliance", roles=["compliance"])


async def test_burn_debits_the_wallet_and_reduces_the_supply(
    http: httpx.AsyncClient, running: Running
) -> None:
    symbol, alice = unique_symbol(), unique("alice")
    issuer = token("treasury", roles=["issuer"], assets=[symbol])
    alice_token = token(alice, wallets=[alice])
    await new_asset(http, running, issuer, symbol)
    await post(http, running, f"/v1/assets/{symbol}/issue", issuer, {"to": alice, "amount": "100.00"})

    burned = await post(http, running, "/v1/burns", alice_token,
                        {"wallet": alice, "asset": symbol, "amount": "40.00"})
    assert burned.status_code == 200, burned.text
    assert burned.json()["status"] == "completed"
    data = await graphql(http, running, AUDITOR,
                         "query($s: String!) { asset(symbol: $s) { supply } }", s=symbol)
    assert data["asset"] == {"supply": "60.00"}
    assert await balances(http, running, alice_token, alice) == {symbol: ("60.00", "0.00")}

    too_much = await post(http, running, "/v1/burns", alice_token,
                          {"wallet": alice, "asset": symbol, "amount": "60.01"})
    assert (too_much.json()["status"], too_much.json()["reason"]) == ("failed", "insufficient_funds")
    data = await graphql(http, running, AUDITOR,
                         "query($s: String!) { asset(symbol: $s) { supply } }", s=symbol)
    assert data["asset"] == {"supply": "60.00"}


async def test_frozen_wallet_cannot_send_until_unfrozen(
    http: httpx.AsyncClient, running: Running
) -> None:
    symbol, alice, bob, issuer, alice_token = await funded_alice(http, running, "50.00")
    send = {"from": alice, "to": bob, "asset": symbol, "amount": "10.00"}

    frozen = await post(http, running, f"/v1/wallets/{alice}/freeze", COMPLIANCE,
                        {"reason": "sanctions screening"})
    assert frozen.status_code == 200, frozen.text
    assert frozen.json()["status"] == "completed"

    refused = await post(http, running, "/v1/transfers", alice_token, send)
    assert (refused.json()["status"], refused.json()["reason"]) == ("failed", "wallet_frozen")
    burn = await post(http, running, "/v1/burns", alice_token,
                      {"wallet": alice, "asset": symbol, "amount": "1.00"})
    assert (burn.json()["status"], burn.json()["reason"]) == ("failed", "wallet_frozen")
    # Credits still land on a frozen wallet.
    credited = await post(http, running, f"/v1/assets/{symbol}/issue", issuer,
                          {"to": alice, "amount": "5.00"})
    assert credited.json()["status"] == "completed"
    assert await balances(http, running, alice_token, alice) == {symbol: ("55.00", "0.00")}

    thawed = await post(http, running, f"/v1/wallets/{alice}/unfreeze", COMPLIANCE,
                        {"reason": "cleared"})
    assert thawed.json()["status"] == "completed", thawed.text
    sent = await post(http, running, "/v1/transfers", alice_token, send)
    assert sent.json()["status"] == "completed", sent.text
    assert await balances(http, running, alice_token, alice) == {symbol: ("45.00", "0.00")}
    assert await balances(http, running, AUDITOR, bob) == {symbol: ("10.00", "0.00")}
