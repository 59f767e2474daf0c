"""Bad input on the trade, burn and freeze endpoints: a 4xx with a stable code and field."""

from typing import Any

import httpx
import pytest

from tests.conftest import Running, token, unique, unique_symbol
from tests.e2e.helpers import assert_refused, new_asset

pytestmark = pytest.mark.e2e

BOND, CASH = unique_symbol(), unique_symbol()
SELLER, BUYER = unique("seller"), unique("buyer")
ISSUER = token("treasury", roles=["issuer"], assets=[BOND, CASH])
OPERATOR = token("venue", roles=["operator"])
COMPLIANCE = token("compliance", roles=["compliance"])
SELLER_TOKEN = token(SELLER, wallets=[SELLER])
BUYER_TOKEN = token(BUYER, wallets=[BUYER])
TRADE: dict[str, Any] = {"seller": SELLER, "buyer": BUYER, "asset": BOND, "quantity": "1", "payment_asset": CASH,
         "price": "10.00"}
BURN: dict[str, Any] = {"wallet": SELLER, "asset": BOND, "amount": "1"}
FREEZE = f"/v1/wallets/{SELLER}/freeze"
UNFREEZE = f"/v1/wallets/{SELLER}/unfreeze"


def without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


# (path, token, body, expected status, expected code, expected field)
CASES: list[tuple[str, str | None, dict[str, Any] | bytes, int, str, str | None]] = [
    ("/v1/trades", OPERATOR, without(TRADE, "seller"), 422, "missing_field", "seller"),
    ("/v1/trades", OPERATOR, without(TRADE, "price"), 422, "missing_field", "price"),
    ("/v1/trades", OPERATOR, {**TRADE, "buyer": SELLER}, 422, "same_wallet", "buyer"),
    ("/v1/trades", OPERATOR, {**TRADE, "payment_asset": BOND}, 422, "same_asset", "payment_asset"),
    ("/v1/trades", OPERATOR, {**TRADE, "asset": "NOPE"}, 422, "unknown_asset", "asset"),
    ("/v1/trades", OPERATOR, {**TRADE, "payment_asset": "NOPE"}, 422, "unknown_asset", "payment_asset"),
    ("/v1/trades", OPERATOR, {**TRADE, "asset": "bond"}, 422, "invalid_symbol", "asset"),
    ("/v1/trades", OPERATOR, {**TRADE, "quantity": "1.5"}, 422, "too_many_decimals", "quantity"),
    ("/v1/trades", OPERATOR, {**TRADE, "quantity": "0"}, 422, "invalid_amount", "quantity"),
    ("/v1/trades", OPERATOR, {**TRADE, "price": "-10.00"}, 422, "invalid_amount", "price"),
    ("/v1/trades", OPERATOR, {**TRADE, "price": 10}, 422, "invalid_amount", "price"),
    ("/v1/trades", OPERATOR, {**TRADE, "seller": "a b"}, 422, "invalid_wallet", "seller"),
    ("/v1/trades", SELLER_TOKEN, TRADE, 403, "forbidden", "buyer"),
    ("/v1/trades", BUYER_TOKEN, TRADE, 403, "forbidden", "seller"),
    ("/v1/trades", None, TRADE, 401, "unauthenticated", None),
    ("/v1/trades", OPERATOR, b'{"seller": ', 400, "malformed_json", None),
    ("/v1/burns", SELLER_TOKEN, without(BURN, "amount"), 422, "missing_field", "amount"),
    ("/v1/burns", SELLER_TOKEN, {**BURN, "amount": "0"}, 422, "invalid_amount", "amount"),
    ("/v1/burns", SELLER_TOKEN, {**BURN, "amount": "0.5"}, 422, "too_many_decimals", "amount"),
    ("/v1/burns", SELLER_TOKEN, {**BURN, "asset": "NOPE"}, 422, "unknown_asset", "asset"),
    ("/v1/burns", SELLER_TOKEN, {**BURN, "wallet": "a/b"}, 422, "invalid_wallet", "wallet"),
    ("/v1/burns", BUYER_TOKEN, BURN, 403, "forbidden", "wallet"),
    ("/v1/burns", SELLER_TOKEN, b"[]", 400, "malformed_json", None),
    (FREEZE, COMPLIANCE, {}, 422, "missing_field", "reason"),
    (FREEZE, COMPLIANCE, {"reason": " "}, 422, "invalid_field", "reason"),
    (FREEZE, COMPLIANCE, {"reason": "x" * 281}, 422, "invalid_field", "reason"),
    (FREEZE, COMPLIANCE, {"reason": 5}, 422, "invalid_field", "reason"),
    (FREEZE, OPERATOR, {"reason": "ops may not"}, 403, "forbidden", None),
    (FREEZE, SELLER_TOKEN, {"reason": "nor owners"}, 403, "forbidden", None),
    (UNFREEZE, OPERATOR, {"reason": "ops may not"}, 403, "forbidden", None),
    ("/v1/wallets/a%20b/freeze", COMPLIANCE, {"reason": "r"}, 422, "invalid_wallet", "wallet"),
    (UNFREEZE, None, {"reason": "r"}, 401, "unauthenticated", None),
]


@pytest.fixture(scope="module")
async def market(running: Running) -> Running:
    async with httpx.AsyncClient(timeout=30) as http:
        await new_asset(http, running, ISSUER, BOND, decimals=0)
        await new_asset(http, running, ISSUER, CASH, decimals=2)
    return running


@pytest.mark.parametrize(("path", "auth", "body", "status", "code", "field"), CASES,
                         ids=[f"{c[0].split('/')[2]}-{c[4]}-{i}" for i, c in enumerate(CASES)])
async def test_bad_request_gets_a_clear_error(
    http: httpx.AsyncClient, market: Running, path: str, auth: str | None,
    body: dict[str, Any] | bytes, status: int, code: str, field: str | None,
) -> None:
    await assert_refused(http, market.command_url + path, auth, body, status, code, field, field_absent_when_none=True)


@pytest.mark.parametrize("path", ["/v1/trades", "/v1/burns", FREEZE, UNFREEZE])
async def test_new_endpoints_take_only_post(http: httpx.AsyncClient, market: Running, path: str) -> None:
    answer = await http.get(market.command_url + path,
                            headers={"Authorization": f"Bearer {OPERATOR}"})
    assert answer.status_code == 405
    assert answer.json()["error"]["code"] == "method_not_allowed"
