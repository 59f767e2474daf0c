"""Hostile queries are refused with a clear error code, and the server keeps serving."""

import asyncio
import base64
import json
import re
import time

import httpx
import pytest
import websockets
from graphql import get_introspection_query

from query.app import MAX_BODY_BYTES
from tests.conftest import Running, token, unique, unique_symbol
from tests.e2e import gql
from tests.e2e.helpers import new_asset

pytestmark = pytest.mark.e2e

ALICE = unique("alice")
ALICE_TOKEN = token(ALICE, wallets=[ALICE])
OPERATOR_TOKEN = token("ops", roles=["operator"])


def nested(levels: int) -> str:
    """A selection ``levels`` deep: refused for its depth before anything looks at its fields."""
    inner = "id"
    for _ in range(levels):
        inner = f"asset {{ {inner} }}"
    return f'{{ wallet(id: "{ALICE}") {{ balances {{ {inner} }} }} }}'



def deep_introspection(levels: int) -> str:
    inner = "name"
    for _ in range(levels):
        inner = f"fields {{ type {{ {inner} }} }}"
    return f"{{ __schema {{ types {{ {inner} }} }} }}"


CASES = [
    ("deep nesting", nested(40), "query_too_deep"),
    ("huge first", "{ transfers(first: 1000000) { nodes { id } } }", "page_too_large"),
    ("negative first", "{ transfers(first: -1) { nodes { id } } }", "invalid_argument"),
    ("many aliases", "{ " + " ".join(f"a{i}: freshness {{ recordsBehind }}" for i in range(50)) + " }",
     "too_many_aliases"),
    ("costly fan-out", """{ transfers(first: 100) { nodes { fromWallet { statement(asset: "X", first: 100) {
        nodes { reference } } } } } }""", "query_too_costly"),
    ("aliased introspection", "{ " + " ".join(f"s{i}: __schema {{ queryType {{ name }} }}" for i in range(11))
     + " }", "query_too_costly"),
    ("deep introspection", deep_introspection(12), "query_too_deep"),
    ("too many tokens", "{ " + "freshness { recordsBehind } " * 700 + "}", "query_too_long"),
    ("malformed wallet id", '{ wallet(id: "alice; DROP TABLE assets") { id } }', "invalid_argument"),
    ("overlong wallet id", '{ wallet(id: "' + "a" * 5000 + '") { id } }', "invalid_argument"),
    ("malformed transfer id", '{ transfer(id: "../../etc/passwd") { id } }', "invalid_argument"),
    ("malformed asset", f'{{ wallet(id: "{ALICE}") {{ balance(asset: "usd x") {{ available }} }} }}',
     "invalid_argument"),
    ("malformed aggregate", '{ events(filter: {aggregate: "table:events"}) { nodes { id } } }', "invalid_argument"),
    ("forged cursor", '{ transfers(after: "bm90IGEgY3Vyc29y") { nodes { id } } }', "invalid_cursor"),
    ("cursor of another list", '{ events(after: "WyJ0cmFuc2ZlcnMiLCAiMjAyNi0wMS0wMVQwMDowMDowMCswMDowMCIsICJ4Il0=") '
     "{ nodes { id } } }", "invalid_cursor"),
    ("fanned-out fragments", "query { ...F19 } fragment F0 on Query { freshness { recordsBehind } } "
     + " ".join(f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 20)), "query_too_costly"),
    ("repeated fields", "{ " + "freshness { recordsBehind } " * 495 + "}", "too_many_fields"),
    ("unknown field", "{ wallets { id } }", "invalid_query"),
    ("syntax error", "{ transfers(first: ", "invalid_query"),
]


@pytest.mark.parametrize("name, query, code", CASES, ids=[c[0] for c in CASES])
async def test_hostile_query_is_refused_with_a_code(http: httpx.AsyncClient, running: Running, name: str,
                                                    query: str, code: str) -> None:
    answer = await gql.raw(http, running, ALICE_TOKEN, query)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [e["extensions"]["code"] for e in body["errors"]] == [code], body
    assert body["errors"][0]["message"], body


async def test_graphiql_introspection_is_allowed(http: httpx.AsyncClient, running: Running) -> None:
    got = await gql.data(http, running, ALICE_TOKEN, get_introspection_query(descriptions=True))
    names = {t["name"] for t in got["__schema"]["types"]}
    assert {"Query", "Subscription", "Wallet", "ErrorCode"} <= names


async def test_huge_body_is_refused_before_parsing(http: httpx.AsyncClient, running: Running) -> None:
    answer = await http.post(running.graphql_url, content=b'{"query": "' + b" " * 200_000 + b'{ assets { nodes { symbol } } }"}',
                             headers={"Authorization": f"Bearer {ALICE_TOKEN}", "Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["errors"][0]["extensions"]["code"] == "query_too_long"


async def test_server_keeps_serving_after_a_burst_of_hostile_queries(http: httpx.AsyncClient,
                                                                    running: Running) -> None:
    answers = await asyncio.gather(*(gql.raw(http, running, ALICE_TOKEN, q) for _, q, _ in CASES * 3))
    assert all(a.status_code == 200 for a in answers)
    ready = await http.get(running.graphql_url.replace("/graphql", "/readyz"))
    assert ready.status_code == 200
    assert running.alive()["query-api"]
    ok = await gql.data(http, running, ALICE_TOKEN, f'{{ wallet(id: "{ALICE}") {{ id balances {{ available }} }} }}')
    assert ok == {"wallet": {"id": ALICE, "balances": []}}


async def test_graphiql_opens_without_a_token(http: httpx.AsyncClient, running: Running) -> None:
    page = await http.get(running.graphql_url, headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    scripts = re.findall(r'src="(/graphiql/[^"]+)"', page.text)
    assert scripts, page.text  # its scripts come from this server, not from a CDN
    origin = running.graphql_url.removesuffix("/graphql")
    for src in scripts:
        asset = await http.get(origin + src)
        assert asset.status_code == 200, src
    # The page is static: a query from it still needs the token.
    refused = await http.post(running.graphql_url, json={"query": "{ freshness { recordsBehind } }"})
    assert refused.status_code == 401


async def test_an_accept_header_that_is_not_utf8_is_no_server_error(http: httpx.AsyncClient,
                                                                    running: Running) -> None:
    page = await http.get(running.graphql_url, headers={"Accept": b"text/html\xff"})
    assert page.status_code == 200


def _refused_body(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json", answer.text
    assert [e["extensions"]["code"] for e in answer.json()["errors"]] == [code], answer.text


DEEP = b"[" * 1000 + b"]" * 1000


@pytest.mark.parametrize("body", [
    b'{"query": "query($f: TransferFilter) { transfers(filter: $f) { nodes { id } } }", "variables": {"f": '
    + DEEP + b"}}",
    b'{"query": "{ freshness { recordsBehind } }", "variables": {"f": ' + b"[" * 100 + b"]" * 100 + b"}}",
    b'{"query": "{ wallet(id: \\"\xff\xfe\\") { id } }"}',
    b'{"query": "{ wallet(id: \\"\xed\xa0\x80\\") { id } }"}',  # a surrogate, encoded
    b'{"query": "{ wallet(id: \\"\\ud800\\") { id } }"}',  # a surrogate, escaped
    b'{"query": "{ freshness { recordsBehind } }", "operationName": "\\udfff"}',
], ids=["nested 1000 deep", "nested 100 deep", "invalid UTF-8", "encoded surrogate", "escaped surrogate",
        "surrogate operation name"])
async def test_a_body_that_is_not_json_is_a_coded_400(http: httpx.AsyncClient, running: Running,
                                                      body: bytes) -> None:
    answer = await http.post(running.graphql_url, content=body, headers={
        "Authorization": f"Bearer {ALICE_TOKEN}", "Content-Type": "application/json"})
    code = "query_too_deep" if body.count(b"[") == 100 else "invalid_query"
    _refused_body(answer, 200 if code == "query_too_deep" else 400, code)


async def test_a_websocket_message_that_is_not_json_closes_with_4400(running: Running) -> None:
    async with gql.session(running, ALICE_TOKEN) as ws:
        await ws.send('{"id": "1", "type": "subscribe", "payload": {"query": "{ x }", "variables": {"v": '
                      + DEEP.decode() + "}}}")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await gql.receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400


def cursor(*key: object) -> str:
    """A cursor made by hand: base64 of a JSON list, as the server makes them."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


NOW = "2026-01-01T00:00:00+00:00"
YEAR_ZERO = "0001-01-01T00:00:00+14:00"  # in UTC, a day of year 0
YEAR_10000 = "9999-12-31T23:59:59-14:00"
NUL = chr(0)

BAD_INPUT = [
    ("NUL in a trade status", '{ trades(filter: {status: "paid\\u0000"}) { nodes { id } } }', "invalid_argument"),
    ("NUL in an event type", '{ events(filter: {type: "Transfer\\u0000"}) { nodes { id } } }', "invalid_argument"),
    ("control character in a wallet filter", '{ transfers(filter: {wallet: "a\\u001b"}) { nodes { id } } }',
     "invalid_argument"),
    ("NUL in a transfers cursor", f'{{ transfers(after: "{cursor("transfers", NOW, "x" + NUL)}") {{ nodes {{ id }} }} }}',
     "invalid_cursor"),
    ("NUL in an events cursor", f'{{ events(after: "{cursor("events", NOW, NUL)}") {{ nodes {{ id }} }} }}',
     "invalid_cursor"),
    ("a cursor in year 0", f'{{ trades(after: "{cursor("trades", YEAR_ZERO, "x")}") {{ nodes {{ id }} }} }}',
     "invalid_cursor"),
    ("since in year 0", f'{{ transfers(filter: {{since: "{YEAR_ZERO}"}}) {{ nodes {{ id }} }} }}', "invalid_argument"),
    ("until in year 10000", f'{{ trades(filter: {{until: "{YEAR_10000}"}}) {{ nodes {{ id }} }} }}', "invalid_argument"),
    ("since in year 0 for events", f'{{ events(filter: {{since: "{YEAR_ZERO}"}}) {{ nodes {{ id }} }} }}',
     "invalid_argument"),
]


@pytest.mark.parametrize("name, query, code", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
async def test_bad_input_is_a_coded_error_not_internal(http: httpx.AsyncClient, running: Running, name: str,
                                                       query: str, code: str) -> None:
    error = await gql.error(http, running, OPERATOR_TOKEN, query)
    assert error["extensions"]["code"] == code, error


@pytest.fixture(scope="module")
async def symbol(running: Running) -> str:
    symbol = unique_symbol()
    async with httpx.AsyncClient(timeout=30) as http:
        await new_asset(http, running, token("treasury", roles=["issuer"], assets=[symbol]), symbol)
    return symbol


@pytest.mark.parametrize("arguments, code", [
    (f'after: "{cursor("statement", NOW, 10**30)}"', "invalid_cursor"),
    (f'after: "{cursor("statement", NOW, -(10**30))}"', "invalid_cursor"),
    (f'after: "{cursor("statement", YEAR_ZERO, 1)}"', "invalid_cursor"),
    (f'from: "{YEAR_ZERO}"', "invalid_argument"),
    (f'to: "{YEAR_10000}"', "invalid_argument"),
], ids=["offset 10**30", "offset -10**30", "cursor in year 0", "from year 0", "to year 10000"])
async def test_statement_arguments_at_the_edges_are_coded_errors(http: httpx.AsyncClient, running: Running,
                                                                 symbol: str, arguments: str, code: str) -> None:
    query = f'{{ wallet(id: "{ALICE}") {{ statement(asset: "{symbol}", {arguments}) {{ nodes {{ kind }} }} }} }}'
    error = await gql.error(http, running, ALICE_TOKEN, query)
    assert error["extensions"]["code"] == code, error


async def test_a_balance_at_year_zero_is_a_coded_error(http: httpx.AsyncClient, running: Running,
                                                       symbol: str) -> None:
    query = f'{{ wallet(id: "{ALICE}") {{ balanceAt(asset: "{symbol}", at: "{YEAR_ZERO}") {{ available }} }} }}'
    error = await gql.error(http, running, ALICE_TOKEN, query)
    assert error["extensions"] == {"code": "invalid_argument", "field": "at", "classification": "BAD_USER_INPUT"}, error


async def test_hostile_documents_are_refused_quickly(http: httpx.AsyncClient, running: Running) -> None:
    """Secondary to the unit tests that count the work: the fanned-out fragments took 2.4 s to
    cost and the repeated fields 1.4 s to validate, on the one event loop."""
    for name in ("fanned-out fragments", "repeated fields"):
        query = next(q for n, q, _ in CASES if n == name)
        started = time.monotonic()
        await gql.raw(http, running, ALICE_TOKEN, query + " " * len(name))  # not a cached text
        assert time.monotonic() - started < 2.0, name


async def test_a_websocket_message_larger_than_a_request_body_is_refused(running: Running) -> None:
    async with gql.session(running, ALICE_TOKEN) as ws:
        await gql.subscribe(ws, "big", "subscription { walletBalances(wallet: \"x\") { wallet } }",
                            padding="x" * (MAX_BODY_BYTES + 1))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await gql.receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big


async def test_a_subscription_with_variables_nested_too_deeply_is_refused(running: Running) -> None:
    async with gql.session(running, ALICE_TOKEN) as ws:
        deep = '{"id": "d", "type": "subscribe", "payload": {"query": "subscription($w: ID!) { walletBalances(wallet: $w) { wallet } }", "variables": {"w": "x", "v": ' + "[" * 900 + "]" * 900 + "}}}"
        await ws.send(deep)
        refused = await gql.receive(ws)
    assert refused["type"] == "error" and refused["payload"][0]["extensions"]["code"] == "query_too_deep", refused
