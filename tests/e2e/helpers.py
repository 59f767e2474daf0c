"""Small clients for the two edges, as a frontend would use them."""

from typing import Any

import httpx

from tests.conftest import Running


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
