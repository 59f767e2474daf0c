"""Bad input on the command endpoints: a 4xx with a stable code, and every process keeps running."""

from typing import Any

import httpx
import pytest

from tests.conftest import Running, token, unique, unique_symbol
from tests.e2e.helpers import assert_refused, balances, new_asset, post

pytestmark = pytest.mark.e2e

SYMBOL = unique_symbol()
ALICE = unique("alice")
ISSUER = token("treasury", roles=["issuer"], assets=[SYMBOL])
ALICE_TOKEN = token(ALICE, wallets=[ALICE])
GOOD_TRANSFER = {"from": ALICE, "to": "bob", "asset": SYMBOL, "amount": "1.00"}
GOOD_ASSET = {"symbol": "NEWONE", "name": "n", "decimals": 2, "issuer": "treasury"}


def without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


# (path, token, json body or raw bytes, expected status, expected code, expected field)
CASES = [
    ("/v1/transfers", ALICE_TOKEN, without(GOOD_TRANSFER, "amount"), 422, "missing_field", "amount"),
    ("/v1/transfers", ALICE_TOKEN, without(GOOD_TRANSFER, "to"), 422, "missing_field", "to"),
    ("/v1/transfers", ALICE_TOKEN, {**GOOD_TRANSFER, "amount": "-5.00"}, 422, "invalid_amount", "amount"),
    ("/v1/transfers", ALICE_TOKEN, {**GOOD_TRANSFER, "amount": "0.00"}, 422, "invalid_amount", "amount"),
    ("/v1/transfers", ALICE_TOKEN, {**GOOD_TRANSFER, "amount": 5}, 422, "invalid_amount", "amount"),
    ("/v1/transfers", ALICE_TOKEN, {**GOOD_TRANSFER, "amount": "1.001"}, 422, "too_many_decimals", "amount"),
    ("/v1/transfers", ALICE_TOKEN, {**GOOD_TRANSFER, "amount": "1e3"}, 422, "invalid_amount", "amount"),
    ("/v1/transfers", ALICE_TOKEN, {**GOOD_TRANSFER, "asset": "NOPE"}, 422, "unknown_asset", "asset"),
    ("/v1/transfers", ALICE_TOKEN, {**GOOD_TRANSFER, "to": ALICE}, 422, "same_wallet", "to"),
    ("/v1/transfers", ALICE_TOKEN, {**GOOD_TRANSFER, "to": "a b"}, 422, "invalid_wallet", "to"),
    ("/v1/transfers", ALICE_TOKEN, b'{"from": "alice",', 400, "malformed_json", None),
    ("/v1/transfers", ALICE_TOKEN, b"[1, 2]", 400, "malformed_json", None),
    ("/v1/transfers", ALICE_TOKEN, b'{"memo": "' + b"x" * 70_000 + b'"}', 413, "body_too_large", None),
    ("/v1/transfers", token("mallory", wallets=["mallory"]), GOOD_TRANSFER, 403, "forbidden", "from"),
    ("/v1/transfers", None, GOOD_TRANSFER, 401, "unauthenticated", None),
    ("/v1/transfers", "not-a-jwt", GOOD_TRANSFER, 401, "invalid_token", None),
    (f"/v1/assets/{SYMBOL}/issue", ISSUER, {"to": ALICE}, 422, "missing_field", "amount"),
    (f"/v1/assets/{SYMBOL}/issue", ISSUER, {"to": ALICE, "amount": "-1"}, 422, "invalid_amount", "amount"),
    (f"/v1/assets/{SYMBOL}/issue", ISSUER, {"to": ALICE, "amount": "0"}, 422, "invalid_amount", "amount"),
    (f"/v1/assets/{SYMBOL}/issue", ISSUER, {"to": ALICE, "amount": "0.123"}, 422, "too_many_decimals", "amount"),
    ("/v1/assets/NOPE/issue", ISSUER, {"to": ALICE, "amount": "1"}, 404, "unknown_asset", "symbol"),
    (f"/v1/assets/{SYMBOL}/issue", ISSUER, b"{not json", 400, "malformed_json", None),
    (f"/v1/assets/{SYMBOL}/issue", ISSUER, b'{"to": "' + b"x" * 70_000 + b'"}', 413, "body_too_large", None),
    (f"/v1/assets/{SYMBOL}/issue", ALICE_TOKEN, {"to": ALICE, "amount": "1"}, 403, "forbidden", None),
    ("/v1/assets", ISSUER, without(GOOD_ASSET, "symbol"), 422, "missing_field", "symbol"),
    ("/v1/assets", ISSUER, {**GOOD_ASSET, "decimals": 19}, 422, "invalid_decimals", "decimals"),
    ("/v1/assets", ISSUER, {**GOOD_ASSET, "decimals": "2"}, 422, "invalid_field", "decimals"),
    ("/v1/assets", ISSUER, {**GOOD_ASSET, "symbol": "usd x"}, 422, "invalid_symbol", "symbol"),
    ("/v1/assets", ISSUER, {**GOOD_ASSET, "max_supply": "-10"}, 422, "invalid_amount", "max_supply"),
    ("/v1/assets", ISSUER, {**GOOD_ASSET, "max_supply": "1.234"}, 422, "too_many_decimals", "max_supply"),
    ("/v1/assets", ISSUER, {**GOOD_ASSET, "symbol": SYMBOL}, 409, "asset_exists", "symbol"),
    ("/v1/assets", ISSUER, b"", 400, "malformed_json", None),
    ("/v1/assets", ISSUER, b'{"name": "' + b"x" * 70_000 + b'"}', 413, "body_too_large", None),
    ("/v1/assets", ALICE_TOKEN, GOOD_ASSET, 403, "forbidden", None),
]


@pytest.fixture(scope="module")
async def funded(running: Running) -> Running:
    async with httpx.AsyncClient(timeout=30) as http:
        await new_asset(http, running, ISSUER, SYMBOL)
        answer = await post(http, running, f"/v1/assets/{SYMBOL}/issue", ISSUER,
                            {"to": ALICE, "amount": "10.00"})
        assert answer.json()["status"] == "completed"
    return running


@pytest.mark.parametrize(("path", "auth", "body", "status", "code", "field"), CASES,
                         ids=[f"{c[0].split('/')[2]}-{c[4]}-{i}" for i, c in enumerate(CASES)])
async def test_bad_request_gets_a_clear_error(
    http: httpx.AsyncClient, funded: Running, path: str, auth: str | None,
    body: dict[str, Any] | bytes, status: int, code: str, field: str | None,
) -> None:
    await assert_refused(http, funded.command_url + path, auth, body, status, code, field)


async def test_wrong_media_type_is_415(http: httpx.AsyncClient, funded: Running) -> None:
    answer = await http.post(funded.command_url + "/v1/transfers", content=b"from=alice",
                             headers={"Authorization": f"Bearer {ALICE_TOKEN}",
                                      "Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 415
    assert answer.json()["error"]["code"] == "unsupported_media_type"


async def test_processes_survive_bad_input_and_keep_working(
    http: httpx.AsyncClient, funded: Running
) -> None:
    for path, auth, body, *_ in CASES:
        content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
        await http.post(funded.command_url + path, content=content,
                        headers={"Content-Type": "application/json",
                                 "Authorization": f"Bearer {auth}"})
    assert all(funded.alive().values()), funded.alive()
    answer = await post(http, funded, "/v1/transfers", ALICE_TOKEN, GOOD_TRANSFER)
    assert answer.json()["status"] == "completed", answer.text
    auditor = token("auditor", roles=["auditor"])
    assert (await balances(http, funded, auditor, ALICE))[SYMBOL] == ("9.00", "0.00")
