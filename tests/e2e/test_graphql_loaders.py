"""No N+1: a page of transfers with their assets, wallets and steps costs a fixed number of SQL
statements, however long the page. Counted by wrapping the database the resolvers get."""

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest

from common.auth import Principal
from common.settings import asyncpg_dsn
from query.context import Context, Loaders
from query.schema import schema
from tests.conftest import Running, token, unique, unique_symbol
from tests.e2e.helpers import new_asset, post

pytestmark = pytest.mark.e2e

PAGE = """query($first: Int!, $sym: String!) { transfers(first: $first, filter: {asset: $sym}) {
    nodes { id status amount asset { symbol decimals }
            fromWallet { id balances { available asset { symbol } } }
            toWallet { id balances { available } }
            steps { type } } } }"""


class CountingDb:
    """The pool's three methods, counting the statements that pass through."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.statements: list[str] = []

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        self.statements.append(query)
        return await self.pool.fetch(query, *args)  # type: ignore[no-any-return]

    async def fetchrow(self, query: str, *args: Any) -> Any:
        self.statements.append(query)
        return await self.pool.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        self.statements.append(query)
        return await self.pool.fetchval(query, *args)


async def test_a_page_of_100_transfers_is_four_statements(http: httpx.AsyncClient, running: Running) -> None:
    symbol, alice = unique_symbol(), unique("alice")
    receivers = [unique("bob") for _ in range(10)]
    issuer = token("treasury", roles=["issuer"], assets=[symbol])
    alice_token = token(alice, wallets=[alice])
    await new_asset(http, running, issuer, symbol)
    await post(http, running, f"/v1/assets/{symbol}/issue", issuer, {"to": alice, "amount": "1000.00"})
    sent = await asyncio.gather(*(
        post(http, running, "/v1/transfers", alice_token,
             {"from": alice, "to": receivers[i % 10], "asset": symbol, "amount": "1.00"}, wait=30)
        for i in range(100)))
    assert all(s.json()["status"] == "completed" for s in sent), [s.text for s in sent if s.status_code != 200]

    pool = await asyncpg.create_pool(asyncpg_dsn(running.stack.infra.database_url), min_size=1, max_size=4)
    try:
        counts = {}
        for first in (10, 100):
            database = CountingDb(pool)
            auditor = Principal(sub="auditor", wallets=frozenset(), roles=frozenset({"auditor"}),
                                assets=frozenset())
            result = await schema.execute(PAGE, variable_values={"first": first, "sym": symbol},
                                          context_value=Context(db=database, principal=auditor,
                                                                loaders=Loaders(database)))
            assert result.errors is None, result.errors
            nodes = result.data["transfers"]["nodes"]  # type: ignore[index]
            assert len(nodes) == first
            assert all(n["amount"] == "1.00" and n["asset"]["symbol"] == symbol for n in nodes)
            assert all(n["fromWallet"]["balances"][0]["available"] == "900.00" for n in nodes)
            assert all(n["toWallet"]["balances"][0]["available"] == "10.00" for n in nodes)
            assert all([s["type"] for s in n["steps"]] == ["TransferInitiated", "TransferConfirmed",
                                                          "WalletCredited"] for n in nodes)
            counts[first] = len(database.statements)
    finally:
        await pool.close()
    # the page, its assets, the balances of its wallets, the steps of its transfers
    assert counts == {10: 4, 100: 4}
