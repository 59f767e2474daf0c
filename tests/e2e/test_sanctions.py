"""Screening that blocks: a wallet put on the sanctions list through the command API (compliance
role; the change is an event on the compacted ``compliance.sanctions`` every processor holds)
makes every transfer, issue and trade touching it fail ``sanctioned_wallet``, before any
balance changes; taken off the list, it moves again."""

import asyncio
import time

import httpx
import pytest

from tests.conftest import Running, token, unique
from tests.e2e.compliance_support import COMPLIANCE, Ledger
from tests.e2e.helpers import post

pytestmark = pytest.mark.e2e


async def test_a_sanctioned_wallet_cannot_send_receive_be_issued_or_trade(
        http: httpx.AsyncClient, running: Running) -> None:
    ledger = await Ledger(http, running).start()
    bad, good = unique("bad"), unique("good")
    await ledger.fund(bad, 100)
    await ledger.fund(good, 100)
    other = await Ledger(http, running).start()  # the payment asset of a trade
    await other.fund(bad, 10)

    refused = await post(http, running, f"/v1/wallets/{bad}/sanction", token(good, wallets=[good]),
                         {"reason": "listed"})
    assert refused.status_code == 403
    listed = await post(http, running, f"/v1/wallets/{bad}/sanction", COMPLIANCE, {"reason": "OFAC SDN"})
    assert listed.status_code == 202, listed.text

    async def transfer(source: str, target: str) -> dict[str, str]:
        answer = await post(http, running, "/v1/transfers", token(source, wallets=[source]),
                            {"from": source, "to": target, "asset": ledger.symbol, "amount": "1"})
        return dict(answer.json())

    # The processor holds the list within moments of the append.
    deadline = time.monotonic() + 15
    while (outcome := await transfer(good, bad))["status"] != "failed":
        assert time.monotonic() < deadline, outcome
        await asyncio.sleep(0.2)
    assert outcome["reason"] == "sanctioned_wallet"
    assert ((await transfer(bad, good))["status"], (await transfer(bad, good))["reason"]) == (
        "failed", "sanctioned_wallet")
    issued = await post(http, running, f"/v1/assets/{ledger.symbol}/issue", ledger.issuer,
                        {"to": bad, "amount": "5"})
    assert (issued.json()["status"], issued.json()["reason"]) == ("rejected", "sanctioned_wallet"), issued.text
    operator = token("ops", roles=["operator"])
    traded = await post(http, running, "/v1/trades", operator, {
        "seller": good, "buyer": bad, "asset": ledger.symbol, "quantity": "1",
        "payment_asset": other.symbol, "price": "1"})
    assert (traded.json()["status"], traded.json()["reason"]) == ("failed", "sanctioned_wallet"), traded.text

    assert (await post(http, running, f"/v1/wallets/{bad}/unsanction", COMPLIANCE,
                       {"reason": "delisted"})).status_code == 202
    deadline = time.monotonic() + 15
    while (outcome := await transfer(bad, good))["status"] != "completed":
        assert time.monotonic() < deadline, outcome
        await asyncio.sleep(0.2)


async def test_a_kyc_tier_limits_what_a_wallet_sends_in_24_hours(http: httpx.AsyncClient,
                                                                 running: Running) -> None:
    ledger = await Ledger(http, running).start()
    payer, payee = unique("kyc"), unique("to")
    await ledger.fund(payer, 1000)
    tier = await post(http, running, f"/v1/wallets/{payer}/kyc", COMPLIANCE,
                      {"tier": "basic", "daily_limits": {ledger.symbol: "100"}})
    assert tier.status_code == 202, tier.text

    async def send(amount: int) -> dict[str, str]:
        answer = await post(http, running, "/v1/transfers", token(payer, wallets=[payer]),
                            {"from": payer, "to": payee, "asset": ledger.symbol, "amount": str(amount)})
        return dict(answer.json())

    # Until the processor holds the tier, a transfer of 101 goes through; then it cannot.
    deadline = time.monotonic() + 15
    sent = 0
    while (outcome := await send(101))["status"] == "completed":
        sent += 101
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert (outcome["status"], outcome["reason"]) == ("failed", "limit_exceeded")
    if sent == 0:
        assert (await send(60))["status"] == "completed"
        assert (await send(40))["status"] == "completed"  # exactly the limit
        last = await send(1)
        assert (last["status"], last["reason"]) == ("failed", "limit_exceeded")
