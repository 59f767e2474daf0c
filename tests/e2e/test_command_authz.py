"""Who may send which command: each role against each command endpoint, end to end.

Allowed requests are accepted (202, the command is in Kafka); refused ones get 403 `forbidden`
and nothing is appended (checked by reading the wallets back after the refused ones)."""

import httpx
import pytest

from tests.conftest import Running, token, unique, unique_symbol
from tests.e2e.helpers import balances, new_asset, post

pytestmark = pytest.mark.e2e

SYMBOL, OTHER = unique_symbol(), unique_symbol()
ALICE, BOB = unique("alice"), unique("bob")

PRINCIPALS = {
    "operator": token("ops", roles=["operator"]),
    "compliance": token("compliance", roles=["compliance"]),
    "auditor": token("auditor", roles=["auditor"]),
    "issuer": token("treasury", roles=["issuer"], assets=[SYMBOL]),
    "other-issuer": token("mint", roles=["issuer"], assets=[OTHER]),
    "alice": token(ALICE, wallets=[ALICE]),
    "alice-and-bob": token("both", wallets=[ALICE, BOB]),
    "stranger": token("eve", wallets=["eve"]),
}


def _requests() -> dict[str, tuple[str, dict[str, object]]]:
    return {
        "register": ("/v1/assets", {"symbol": unique_symbol(), "name": "x", "decimals": 0,
                                    "issuer": "treasury"}),
        "issue": (f"/v1/assets/{SYMBOL}/issue", {"to": ALICE, "amount": "1"}),
        "transfer": ("/v1/transfers", {"from": ALICE, "to": BOB, "asset": SYMBOL, "amount": "1"}),
        "trade": ("/v1/trades", {"seller": ALICE, "buyer": BOB, "asset": SYMBOL, "quantity": "1",
                                 "payment_asset": OTHER, "price": "1"}),
        "burn": ("/v1/burns", {"wallet": ALICE, "asset": SYMBOL, "amount": "1"}),
        "freeze": (f"/v1/wallets/{BOB}/freeze", {"reason": "check"}),
        "unfreeze": (f"/v1/wallets/{BOB}/unfreeze", {"reason": "checked"}),
    }


# command -> the principals allowed to send it; everyone else is refused.
ALLOWED = {
    "register": {"operator", "issuer", "other-issuer"},
    "issue": {"issuer"},
    "transfer": {"operator", "alice", "alice-and-bob"},
    "trade": {"operator", "alice-and-bob"},
    "burn": {"operator", "alice", "alice-and-bob"},
    "freeze": {"compliance"},
    "unfreeze": {"compliance"},
}


@pytest.fixture(scope="module")
async def market(running: Running) -> Running:
    async with httpx.AsyncClient(timeout=30) as http:
        await new_asset(http, running, PRINCIPALS["issuer"], SYMBOL, decimals=0)
        await new_asset(http, running, PRINCIPALS["other-issuer"], OTHER, decimals=0)
    return running


@pytest.mark.parametrize("command", sorted(ALLOWED))
@pytest.mark.parametrize("principal", sorted(PRINCIPALS))
async def test_role_matrix(http: httpx.AsyncClient, market: Running, command: str,
                           principal: str) -> None:
    path, body = _requests()[command]
    answer = await post(http, market, path, PRINCIPALS[principal], body, wait=0)
    if principal in ALLOWED[command]:
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "accepted"
    else:
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "forbidden"


async def test_a_refused_debit_moves_nothing(http: httpx.AsyncClient, market: Running) -> None:
    owner, thief = unique("owner"), token("eve", wallets=["eve"])
    issued = await post(http, market, f"/v1/assets/{SYMBOL}/issue", PRINCIPALS["issuer"],
                        {"to": owner, "amount": "5"})
    assert issued.json()["status"] == "completed"
    for path, body in (("/v1/transfers", {"from": owner, "to": "eve", "asset": SYMBOL, "amount": "5"}),
                       ("/v1/burns", {"wallet": owner, "asset": SYMBOL, "amount": "5"})):
        assert (await post(http, market, path, thief, body)).status_code == 403
    assert await balances(http, market, PRINCIPALS["auditor"], owner) == {SYMBOL: ("5", "0")}
