"""Small clients for the two edges, as a frontend would use them."""

from typing import Any, NamedTuple

import httpx

from tests.conftest import Running, token, unique, unique_symbol


async def post(http: httpx.AsyncClient, running: Running, path: str, token: str,
               body: dict[str, Any], *, wait: int = 15, **headers: str) -> httpx.Response:
    return await http.post(
        running.command_url + path, json=body,
        headers={"Authorization": f"Bearer {token}", "Prefer": f"wait={wait}", **headers},
    )


async def graphql(http: httpx.AsyncClient, running: Running, token: str, query: str,
                  **variables: Any) -> dict[str, Any]:
    answer = await http.post(running.graphql_url, json={"query": query, "variables": variables},
                             headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert "errors" not in body, body
    return body["data"]  # type: ignore[no-any-return]


BALANCES = """query($id: ID!) { wallet(id: $id) { id balances {
    asset { symbol decimals } available held availableUnits } } }"""


async def balances(http: httpx.AsyncClient, running: Running, token: str,
                   wallet: str) -> dict[str, tuple[str, str]]:
    data = await graphql(http, running, token, BALANCES, id=wallet)
    return {b["asset"]["symbol"]: (b["available"], b["held"]) for b in data["wallet"]["balances"]}


async def new_asset(http: httpx.AsyncClient, running: Running, issuer_token: str, symbol: str,
                    decimals: int = 2, max_supply: str | None = None) -> None:
    answer = await post(http, running, "/v1/assets", issuer_token, {
        "symbol": symbol, "name": f"Test {symbol}", "decimals": decimals,
        "issuer": "treasury", "max_supply": max_supply,
    })
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "completed", answer.text


class Funded(NamedTuple):
    symbol: str
    alice: str
    bob: str
    issuer: str  # the asset's issuer's token
    alice_token: str


async def funded_alice(http: httpx.AsyncClient, running: Running, amount: str) -> Funded:
    """A new asset (2 decimals), ``amount`` of it issued to a new alice; bob, also new, has none."""
    symbol, alice, bob = unique_symbol(), unique("alice"), unique("bob")
    issuer = token("treasury", roles=["issuer"], assets=[symbol])
    await new_asset(http, running, issuer, symbol)
    await post(http, running, f"/v1/assets/{symbol}/issue", issuer, {"to": alice, "amount": amount})
    return Funded(symbol, alice, bob, issuer, token(alice, wallets=[alice]))


async def assert_refused(http: httpx.AsyncClient, url: str, auth: str | None,
                         body: dict[str, Any] | bytes, status: int, code: str, field: str | None,
                         *, field_absent_when_none: bool = False) -> None:
    """POST ``body`` (raw bytes as they are) and check the one error shape of the command API."""
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = f"Bearer {auth}"
    content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    answer = await http.post(url, content=content, headers=headers)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    assert error["message"]
    if field is not None or field_absent_when_none:
        assert error.get("field") == field
