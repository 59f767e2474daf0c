"""Who may read what over GraphQL: each role against each entry point, on pipeline data.

A wallet owner sees its own wallets, the transfers and trades it takes part in, its own wallets'
events and its own commands; operator, compliance and auditor see everything; no token, a
malformed, wrongly signed or expired token: no access. Subscriptions are covered beside the
other subscription tests.
"""

import asyncio
import time
from dataclasses import dataclass

import httpx
import pytest

from common.auth import issue_token
from tests.conftest import SECRET, Running, token, unique, unique_symbol
from tests.e2e import gql
from tests.e2e.helpers import new_asset, post

pytestmark = pytest.mark.e2e


@dataclass
class Parties:
    symbol: str
    alice: str
    bob: str
    alice_token: str
    alice_to_bob: str
    bob_to_carol: str
    bob_command: str


@pytest.fixture(scope="module")
async def parties(running: Running) -> Parties:
    symbol, alice, bob, carol = unique_symbol(), unique("alice"), unique("bob"), unique("carol")
    issuer = token("treasury", roles=["issuer"], assets=[symbol])
    alice_token, bob_token = token(alice, wallets=[alice]), token(bob, wallets=[bob])
    async with httpx.AsyncClient(timeout=30) as http:
        await new_asset(http, running, issuer, symbol)
        for wallet in (alice, bob):
            issued = await post(http, running, f"/v1/assets/{symbol}/issue", issuer, {"to": wallet, "amount": "10.00"})
            assert issued.json()["status"] == "completed", issued.text
        a = await post(http, running, "/v1/transfers", alice_token,
                       {"from": alice, "to": bob, "asset": symbol, "amount": "1.00"})
        b = await post(http, running, "/v1/transfers", bob_token,
                       {"from": bob, "to": carol, "asset": symbol, "amount": "2.00"})
        assert a.json()["status"] == b.json()["status"] == "completed", (a.text, b.text)
    return Parties(symbol, alice, bob, alice_token, a.json()["transfer_id"], b.json()["transfer_id"],
                   b.json()["command_id"])


# Entry points into bob's data: (name, query, variables from the parties).
BOBS = [
    ("wallet", "query($bob: ID!) { wallet(id: $bob) { id } }", {}),
    ("balances", "query($bob: ID!) { wallet(id: $bob) { balances { available } } }", {}),
    ("balanceAt", """query($bob: ID!, $sym: String!) { wallet(id: $bob) {
        balanceAt(asset: $sym, at: "2100-01-01T00:00:00Z") { available } } }""", {}),
    ("statement", """query($bob: ID!, $sym: String!) { wallet(id: $bob) {
        statement(asset: $sym) { nodes { amount } } } }""", {}),
    ("transfers of bob", "query($bob: ID!) { transfers(filter: {wallet: $bob}) { nodes { id } } }", {}),
    ("trades of bob", "query($bob: ID!) { trades(filter: {wallet: $bob}) { nodes { id } } }", {}),
    ("transfer", "query($t: ID!) { transfer(id: $t) { id status } }", {}),
    ("events of bob", 'query($agg: String!) { events(filter: {aggregate: $agg}) { nodes { id } } }', {}),
    ("command", "query($c: ID!) { commandStatus(id: $c) { id status } }", {}),
]


def variables(p: Parties, query: str) -> dict[str, str]:
    every = {"bob": p.bob, "sym": p.symbol, "t": p.bob_to_carol, "agg": f"wallet:{p.bob}", "c": p.bob_command}
    return {k: v for k, v in every.items() if f"${k}" in query}


# Looked up by id: someone else's is answered as an unknown one, so an id cannot be probed.
BY_ID = {"transfer": "transfer", "command": "commandStatus"}
UNKNOWN = {"t": "00000000-0000-0000-0000-000000000000", "c": "00000000-0000-0000-0000-000000000000"}


@pytest.mark.parametrize("entry, query", [(n, q) for n, q, _ in BOBS], ids=[n for n, _, _ in BOBS])
async def test_an_owner_cannot_read_anothers_data(http: httpx.AsyncClient, running: Running, parties: Parties,
                                                  entry: str, query: str) -> None:
    issuer = token("treasury", roles=["issuer"], assets=[parties.symbol])  # issuing is not reading
    for reader in (parties.alice_token, issuer):
        if entry in BY_ID:
            hidden = await gql.raw(http, running, reader, query, **variables(parties, query))
            unknown = await gql.raw(http, running, reader, query, **{**variables(parties, query), **UNKNOWN})
            assert hidden.json() == unknown.json() == {"data": {BY_ID[entry]: None}}
        else:
            refused = await gql.error(http, running, reader, query, **variables(parties, query))
            assert refused["extensions"]["code"] == "forbidden", refused


async def test_read_your_writes_does_not_tell_whether_anothers_command_exists(
    http: httpx.AsyncClient, running: Running, parties: Parties
) -> None:
    query = "{ assets(first: 1) { nodes { symbol } } }"

    async def after(command_id: str) -> tuple[dict[str, object], float]:
        started = time.monotonic()
        answer = await gql.raw(http, running, parties.alice_token, query, headers={"X-After-Command": command_id})
        assert answer.status_code == 200, answer.text
        return answer.json()["extensions"]["afterCommand"], time.monotonic() - started

    (bobs, bobs_time), (unknown, unknown_time) = await asyncio.gather(after(parties.bob_command),
                                                                      after(UNKNOWN["c"]))
    assert bobs == {"id": parties.bob_command, "caughtUp": False}
    assert unknown == {"id": UNKNOWN["c"], "caughtUp": False}
    # Both wait the whole bound (5 s): the time does not tell either.
    assert bobs_time >= 4.5 and unknown_time >= 4.5, (bobs_time, unknown_time)


@pytest.mark.parametrize("role", ["operator", "compliance", "auditor"])
@pytest.mark.parametrize("entry, query", [(n, q) for n, q, _ in BOBS], ids=[n for n, _, _ in BOBS])
async def test_operator_compliance_and_auditor_read_everything(
    http: httpx.AsyncClient, running: Running, parties: Parties, role: str, entry: str, query: str
) -> None:
    got = await gql.data(http, running, token(role, roles=[role]), query, **variables(parties, query))
    assert all(v is not None for v in got.values()), got


async def test_lists_only_hold_the_owners_rows_whatever_the_cursor(
    http: httpx.AsyncClient, running: Running, parties: Parties
) -> None:
    query = """query($after: String, $sym: String) { transfers(first: 1, after: $after, filter: {asset: $sym}) {
        nodes { id from to } pageInfo { endCursor hasNextPage } } }"""
    auditor = token("auditor", roles=["auditor"])
    everything = await gql.data(http, running, auditor, query, sym=parties.symbol, after=None)
    assert everything["transfers"]["nodes"][0]["id"] == parties.bob_to_carol
    # A cursor is only a position: alice resuming after the auditor's first row sees her own transfer,
    # and starting from the top she never sees bob's.
    cursor = everything["transfers"]["pageInfo"]["endCursor"]
    resumed = await gql.data(http, running, parties.alice_token, query, sym=parties.symbol, after=cursor)
    assert [n["id"] for n in resumed["transfers"]["nodes"]] == [parties.alice_to_bob]
    top = await gql.data(http, running, parties.alice_token, query, sym=parties.symbol, after=None)
    assert [n["id"] for n in top["transfers"]["nodes"]] == [parties.alice_to_bob]
    assert top["transfers"]["pageInfo"]["hasNextPage"] is False


async def test_audit_trail_is_scoped_to_the_owners_wallets(http: httpx.AsyncClient, running: Running,
                                                           parties: Parties) -> None:
    query = """query($f: EventFilter) { events(first: 100, filter: $f) { nodes { aggregate correlationId } } }"""
    bobs_transfer = await gql.data(http, running, parties.alice_token, query, f={"correlationId": parties.bob_to_carol})
    assert bobs_transfer["events"]["nodes"] == []
    # alice's transfer to bob: her own events, not bob's credit (it shows bob's balance).
    own = await gql.data(http, running, parties.alice_token, query, f={"correlationId": parties.alice_to_bob})
    assert {e["aggregate"] for e in own["events"]["nodes"]} == {f"wallet:{parties.alice}"}
    everything = await gql.data(http, running, parties.alice_token, query, f=None)
    assert {e["aggregate"] for e in everything["events"]["nodes"]} == {f"wallet:{parties.alice}"}


async def test_counterparty_wallet_is_hidden_inside_a_shared_transfer(
    http: httpx.AsyncClient, running: Running, parties: Parties
) -> None:
    got = await gql.data(http, running, parties.alice_token, """query($t: ID!) { transfer(id: $t) {
        from to fromWallet { id balances { available } } toWallet { id balances { available } } } }""",
                         t=parties.alice_to_bob)
    assert got["transfer"]["from"] == parties.alice and got["transfer"]["to"] == parties.bob
    assert got["transfer"]["fromWallet"] == {"id": parties.alice, "balances": [{"available": "9.00"}]}
    assert got["transfer"]["toWallet"] is None


@pytest.mark.parametrize("authorization, status, code", [
    (None, 401, "unauthenticated"),
    ("Basic YWxpY2U6c2VjcmV0", 401, "unauthenticated"),
    ("Bearer not.a.jwt", 401, "invalid_token"),
    ("Bearer " + issue_token("another-secret-" + "y" * 40, "alice", wallets=["alice"]), 401, "invalid_token"),
    ("Bearer " + issue_token(SECRET, "alice", wallets=["alice"], ttl_seconds=-60), 401, "token_expired"),
    ("Bearer " + issue_token(SECRET, "alice", roles=["superuser"]), 401, "invalid_token"),
])
async def test_bad_tokens_are_refused(http: httpx.AsyncClient, running: Running, authorization: str | None,
                                      status: int, code: str) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = await http.post(running.graphql_url, json={"query": "{ assets { nodes { symbol } } }"}, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.json()["errors"][0]["extensions"]["code"] == code
    assert "data" not in answer.json()
