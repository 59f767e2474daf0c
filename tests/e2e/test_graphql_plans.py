"""Compiled query plans answer exactly as graphql-core does: the same data, the same errors (message,
path, locations, code), the same SQL statements; documents they do not cover get no plan."""

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest
from graphql import execute, parse

from common.auth import Principal
from common.settings import asyncpg_dsn
from query.context import Context, Loaders
from query.direct import resolver_for
from query.errors import coded
from query.plan import Plan, build
from query.schema import schema
from tests.conftest import Running, token, unique, unique_symbol
from tests.e2e.helpers import new_asset, post
from tests.e2e.test_graphql_loaders import CountingDb

pytestmark = pytest.mark.e2e

SYMBOL, ALICE, BOB, CAROL = unique_symbol(), unique("alice"), unique("bob"), unique("carol")

QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("query($w: ID!, $a: String!) { wallet(id: $w) { balance(asset: $a) { available availableUnits } } }",
     {"w": ALICE, "a": SYMBOL}),
    (f'{{ wallet(id: "{ALICE}") {{ id balances {{ available held heldUnits updatedAt '
     "asset { symbol name decimals supply supplyUnits maxSupply registeredAt __typename } } } }", {}),
    ("query($w: ID!) { w: wallet(id: $w) { id } me: wallet(id: $w) { balances { available } } }",
     {"w": ALICE}),
    ("query($w: ID!) { wallet(id: $w) { id } }", {"w": CAROL}),  # forbidden: null and an error
    ('{ wallet(id: "no way!") { id } }', {}),  # malformed id
    ("query($w: ID!, $a: String!) { wallet(id: $w) { balance(asset: $a) { available } } }",
     {"w": ALICE, "a": "bad symbol"}),
    ("query($n: Int, $s: String) { transfers(first: $n, filter: {asset: $s}) { nodes { id status amount "
     "fromWallet { id } toWallet { id } asset { symbol } steps { type } } pageInfo { hasNextPage } } }",
     {"n": 5, "s": SYMBOL}),
    ("query($n: Int) { transfers(first: $n) { nodes { id } } }", {"n": 1000}),  # non-null: data null
    ('{ transfers(filter: {status: "lost"}) { nodes { id } } }', {}),
    ("query($w: ID!) { wallet(id: $w) { id } }", {"w": 7}),  # an int for an ID: coerced
    ("query($w: ID!) { wallet(id: $w) { id } }", {}),  # a missing variable
    ("{ assets(first: 2) { nodes { symbol } } freshness { recordsBehind partitions { partition recordsBehind } } }", {}),
]


@pytest.fixture(scope="module")
async def funded(running: Running) -> None:
    issuer = token("treasury", roles=["issuer"], assets=[SYMBOL])
    async with httpx.AsyncClient(timeout=30) as http:
        await new_asset(http, running, issuer, SYMBOL)
        await post(http, running, f"/v1/assets/{SYMBOL}/issue", issuer, {"to": ALICE, "amount": "50.00"})
        sent = await post(http, running, "/v1/transfers", token(ALICE, wallets=[ALICE]),
                          {"from": ALICE, "to": BOB, "asset": SYMBOL, "amount": "2.50"}, wait=30)
        assert sent.json()["status"] == "completed", sent.text


def _plan(query: str) -> Plan | None:
    return build(schema._schema, parse(query), None, lambda field: resolver_for(schema, field))


def _answer(result: Any) -> dict[str, Any]:
    return {"data": result.data, "errors": [coded(e).formatted for e in result.errors or ()]}


@pytest.mark.usefixtures("funded")
async def test_plans_answer_as_graphql_core(running: Running) -> None:
    alice = Principal(sub=ALICE, wallets=frozenset({ALICE}), roles=frozenset(), assets=frozenset())
    pool = await asyncpg.create_pool(asyncpg_dsn(running.stack.infra.database_url), min_size=1, max_size=4)
    try:
        for query, variables in QUERIES:
            plan = _plan(query)
            assert plan is not None, query
            answers, statements = [], []
            for run in ("plan", "graphql-core"):
                database = CountingDb(pool)
                context = Context(db=database, principal=alice, loaders=Loaders(database))
                if run == "plan":
                    result = await plan.run(context, variables)
                else:
                    result = execute(schema._schema, parse(query), context_value=context,
                                     variable_values=variables)
                    if asyncio.iscoroutine(result):
                        result = await result
                answers.append(_answer(result))
                statements.append(database.statements)
            assert answers[0] == answers[1], query
            assert statements[0] == statements[1], query
    finally:
        await pool.close()


def test_documents_plans_do_not_cover_get_none() -> None:
    for query in ("{ ...F } fragment F on Query { freshness { recordsBehind } }",
                  "{ assets @include(if: true) { nodes { symbol } } }",
                  "{ __schema { queryType { name } } }",
                  "{ freshness { recordsBehind } freshness { partitions { partition } } }",
                  "subscription { walletBalances(wallet: \"x\") { wallet } }"):
        assert _plan(query) is None, query
    assert _plan("{ freshness { recordsBehind } }") is not None
