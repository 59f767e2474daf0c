"""A credit is final with its debit's transaction (docs/processor.md, "The live path"): a payee
that sees ``completed`` (or ``settled``) may spend what it received at once, and its processor
decides that spend after the credit, whichever partitions the wallets live on."""

import asyncio
import itertools

import httpx
import pytest
from aiokafka.partitioner import murmur2

from events.keys import wallet_key
from tests.conftest import Running, token, unique, unique_symbol
from tests.e2e.helpers import balances, new_asset, post

pytestmark = pytest.mark.e2e

OPERATOR = token("venue", roles=["operator"])
AUDITOR = token("auditor", roles=["auditor"])


def _partition(running: Running, wallet: str) -> int:
    return (murmur2(wallet_key(wallet).encode()) & 0x7FFFFFFF) % running.stack.settings.partitions


async def _spend_all(http: httpx.AsyncClient, running: Running, path: str, bearer: str,
                     body: dict[str, str], final: str) -> None:
    answer = await post(http, running, path, bearer, body, wait=20)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["reason"]) == (final, None), (body, answer.text)


async def test_a_payee_spends_a_credit_the_moment_it_is_completed(
    http: httpx.AsyncClient, running: Running
) -> None:
    symbol = unique_symbol()
    issuer = token("treasury", roles=["issuer"], assets=[symbol])
    await new_asset(http, running, issuer, symbol)
    chains = [[unique(f"relay{c}-") for _ in range(13)] for c in range(4)]

    async def relay(wallets: list[str]) -> None:
        # Issued, then passed on in full down the chain, each hop sent as soon as the one
        # before it answered completed.
        await _spend_all(http, running, f"/v1/assets/{symbol}/issue", issuer,
                         {"to": wallets[0], "amount": "50.00"}, "completed")
        for source, target in itertools.pairwise(wallets):
            await _spend_all(http, running, "/v1/transfers", token(source, wallets=[source]),
                             {"from": source, "to": target, "asset": symbol, "amount": "50.00"},
                             "completed")

    await asyncio.gather(*(relay(w) for w in chains))

    hops = [(_partition(running, a), _partition(running, b))
            for w in chains for a, b in itertools.pairwise(w)]
    assert sum(1 for a, b in hops if a != b) >= 10, "the hops should cross partitions"
    for wallets in chains:
        assert await balances(http, running, AUDITOR, wallets[-1]) == {symbol: ("50.00", "0.00")}
        for wallet in wallets[:-1]:
            assert await balances(http, running, AUDITOR, wallet) == {symbol: ("0.00", "0.00")}


async def test_a_buyer_sells_on_and_a_seller_spends_the_payment_the_moment_a_trade_settles(
    http: httpx.AsyncClient, running: Running
) -> None:
    bond, cash = unique_symbol(), unique_symbol()
    issuer = token("treasury", roles=["issuer"], assets=[bond, cash])
    await new_asset(http, running, issuer, bond, decimals=0)
    await new_asset(http, running, issuer, cash, decimals=2)
    holders = [unique("holder") for _ in range(7)]
    await _spend_all(http, running, f"/v1/assets/{bond}/issue", issuer,
                     {"to": holders[0], "amount": "5"}, "completed")
    for buyer in holders[1:]:
        await _spend_all(http, running, f"/v1/assets/{cash}/issue", issuer,
                         {"to": buyer, "amount": "100.00"}, "completed")
    sink = unique("sink")
    for seller, buyer in itertools.pairwise(holders):
        # The buyer's payment settles the trade; the buyer can sell the bonds at once, and the
        # seller can pass the payment on at once.
        await _spend_all(http, running, "/v1/trades", OPERATOR, {
            "seller": seller, "buyer": buyer, "asset": bond, "quantity": "5",
            "payment_asset": cash, "price": "100.00"}, "settled")
        await _spend_all(http, running, "/v1/transfers", token(seller, wallets=[seller]),
                         {"from": seller, "to": sink, "asset": cash, "amount": "100.00"},
                         "completed")
    assert await balances(http, running, AUDITOR, holders[-1]) == {bond: ("5", "0"),
                                                                   cash: ("0.00", "0.00")}
    assert await balances(http, running, AUDITOR, sink) == {cash: ("600.00", "0.00")}
