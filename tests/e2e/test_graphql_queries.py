"""Every GraphQL query against data the real pipeline produced: HTTP commands in, GraphQL out."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import Running, token, unique, unique_symbol
from tests.e2e import gql
from tests.e2e.helpers import new_asset, post

pytestmark = pytest.mark.e2e

AUDITOR = token("auditor", roles=["auditor"])


@dataclass
class World:
    symbol: str
    alice: str
    bob: str
    carol: str
    alice_token: str
    bob_token: str
    transfers: list[str]  # alice -> bob, oldest first
    failed: str
    bob_to_carol: str
    transfer_command: str


@pytest.fixture(scope="module")
async def world(running: Running) -> World:
    symbol, alice, bob, carol = unique_symbol(), unique("alice"), unique("bob"), unique("carol")
    issuer = token("treasury", roles=["issuer"], assets=[symbol])
    alice_token, bob_token = token(alice, wallets=[alice]), token(bob, wallets=[bob])
    async with httpx.AsyncClient(timeout=30) as http:
        await new_asset(http, running, issuer, symbol)
        issued = await post(http, running, f"/v1/assets/{symbol}/issue", issuer, {"to": alice, "amount": "100.00"})
        assert issued.json()["status"] == "completed", issued.text
        sent = []
        for amount in ("10.00", "20.00", "30.25"):
            answer = await post(http, running, "/v1/transfers", alice_token,
                                {"from": alice, "to": bob, "asset": symbol, "amount": amount})
            assert answer.json()["status"] == "completed", answer.text
            sent.append(answer.json())
        failed = await post(http, running, "/v1/transfers", alice_token,
                            {"from": alice, "to": bob, "asset": symbol, "amount": "1000.00"})
        assert failed.json()["status"] == "failed", failed.text
        onward = await post(http, running, "/v1/transfers", bob_token,
                            {"from": bob, "to": carol, "asset": symbol, "amount": "5.00", "memo": "lunch"})
        assert onward.json()["status"] == "completed", onward.text
    return World(symbol, alice, bob, carol, alice_token, bob_token, [s["transfer_id"] for s in sent],
                 failed.json()["transfer_id"], onward.json()["transfer_id"], sent[0]["command_id"])


async def test_wallet_balances_and_one_balance(http: httpx.AsyncClient, running: Running, world: World) -> None:
    got = await gql.data(http, running, world.alice_token, """query($id: ID!, $asset: String!) {
        wallet(id: $id) { id balances { asset { symbol decimals } available held availableUnits heldUnits }
                          balance(asset: $asset) { available availableUnits } } }""",
                         id=world.alice, asset=world.symbol)
    assert got["wallet"]["balances"] == [{
        "asset": {"symbol": world.symbol, "decimals": 2}, "available": "39.75", "held": "0.00",
        "availableUnits": "3975", "heldUnits": "0"}]
    assert got["wallet"]["balance"] == {"available": "39.75", "availableUnits": "3975"}


async def test_statement_pages_with_running_balance(http: httpx.AsyncClient, running: Running,
                                                    world: World) -> None:
    query = """query($id: ID!, $asset: String!, $after: String, $from: DateTime) { wallet(id: $id) {
        statement(asset: $asset, first: 2, after: $after, from: $from) {
            opening { available }
            edges { cursor node { kind reference amount amountUnits availableAfter heldAfter at } }
            pageInfo { hasNextPage endCursor } } } }"""
    entries, after = [], None
    for _ in range(5):
        page = (await gql.data(http, running, world.alice_token, query, id=world.alice, asset=world.symbol,
                               after=after))["wallet"]["statement"]
        assert page["opening"] == {"available": "0.00"}
        entries += [e["node"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert [(e["kind"], e["amount"], e["availableAfter"]) for e in entries] == [
        ("issue_in", "100.00", "100.00"), ("transfer_out", "-10.00", "90.00"),
        ("transfer_out", "-20.00", "70.00"), ("transfer_out", "-30.25", "39.75")]
    assert [e["reference"] for e in entries[1:]] == world.transfers
    # From the second transfer on: the opening balance is the one before it.
    page = (await gql.data(http, running, world.alice_token, query, id=world.alice, asset=world.symbol,
                           after=None, **{"from": entries[2]["at"]}))["wallet"]["statement"]
    assert page["opening"] == {"available": "90.00"}
    assert [e["node"]["amount"] for e in page["edges"]] == ["-20.00", "-30.25"]


async def test_balance_at_a_point_in_time(http: httpx.AsyncClient, running: Running, world: World) -> None:
    statement = (await gql.data(http, running, world.alice_token, """query($id: ID!, $asset: String!) {
        wallet(id: $id) { statement(asset: $asset) { nodes { at } } } }""",
                                id=world.alice, asset=world.symbol))["wallet"]["statement"]["nodes"]
    times = [datetime.fromisoformat(n["at"]) for n in statement]
    query = """query($id: ID!, $asset: String!, $at: DateTime!) {
        wallet(id: $id) { balanceAt(asset: $asset, at: $at) { available held updatedAt } } }"""

    async def at(moment: datetime) -> str:
        got = await gql.data(http, running, world.alice_token, query, id=world.alice, asset=world.symbol,
                             at=moment.isoformat())
        return got["wallet"]["balanceAt"]["available"]  # type: ignore[no-any-return]

    assert await at(times[0] - timedelta(microseconds=1)) == "0.00"
    assert await at(times[0]) == "100.00"
    assert await at(times[2]) == "70.00"
    assert await at(datetime.now(UTC) + timedelta(days=1)) == "39.75"


async def test_transfer_by_id_with_steps_and_wallets(http: httpx.AsyncClient, running: Running,
                                                     world: World) -> None:
    got = await gql.data(http, running, world.bob_token, """query($id: ID!) { transfer(id: $id) {
        id status reason from to amount amountUnits memo asset { symbol decimals }
        fromWallet { id balances { available } } toWallet { id }
        initiatedAt confirmedAt completedAt failedAt commandId steps { type aggregate } } }""",
                         id=world.bob_to_carol)
    t = got["transfer"]
    assert (t["status"], t["reason"], t["from"], t["to"], t["amount"], t["amountUnits"], t["memo"]) == (
        "completed", None, world.bob, world.carol, "5.00", "500", "lunch")
    assert t["asset"] == {"symbol": world.symbol, "decimals": 2}
    assert t["fromWallet"] == {"id": world.bob, "balances": [{"available": "55.25"}]}
    assert t["toWallet"] is None  # bob may not look into carol's wallet
    assert t["initiatedAt"] <= t["confirmedAt"] <= t["completedAt"] and t["failedAt"] is None
    assert [(s["type"], s["aggregate"]) for s in t["steps"]] == [
        ("TransferInitiated", f"wallet:{world.bob}"), ("TransferConfirmed", f"wallet:{world.bob}"),
        ("WalletCredited", f"wallet:{world.carol}")]

    failed = await gql.data(http, running, world.alice_token,
                            "query($id: ID!) { transfer(id: $id) { status reason failedAt } }", id=world.failed)
    assert failed["transfer"]["status"] == "failed"
    assert failed["transfer"]["reason"] == "insufficient_funds" and failed["transfer"]["failedAt"]
    missing = await gql.data(http, running, world.alice_token,
                             'query { transfer(id: "00000000-0000-0000-0000-000000000000") { id } }')
    assert missing == {"transfer": None}


TRANSFERS = """query($after: String, $filter: TransferFilter, $first: Int) {
    transfers(first: $first, after: $after, filter: $filter) {
        edges { cursor node { id status amount } } pageInfo { hasNextPage hasPreviousPage endCursor } } }"""


async def all_pages(http: httpx.AsyncClient, running: Running, tok: str, filt: dict[str, object],
                    first: int = 2) -> list[dict[str, str]]:
    nodes, after = [], None
    for _ in range(50):
        page = (await gql.data(http, running, tok, TRANSFERS, after=after, filter=filt, first=first))["transfers"]
        assert page["pageInfo"]["hasPreviousPage"] == (after is not None)
        nodes += [e["node"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return nodes
        after = page["pageInfo"]["endCursor"]
    raise AssertionError("pagination did not end")


async def test_transfers_paginate_newest_first_with_filters(http: httpx.AsyncClient, running: Running,
                                                            world: World) -> None:
    mine = await all_pages(http, running, world.alice_token, {"asset": world.symbol})
    assert [n["id"] for n in mine] == [world.failed, *reversed(world.transfers)]
    failed = await all_pages(http, running, world.alice_token, {"asset": world.symbol, "status": "failed"})
    assert [n["id"] for n in failed] == [world.failed]
    bobs = await all_pages(http, running, AUDITOR, {"wallet": world.bob, "status": "completed"}, first=3)
    assert {n["id"] for n in bobs} == {*world.transfers, world.bob_to_carol}
    future = datetime.now(UTC) + timedelta(hours=1)
    assert await all_pages(http, running, AUDITOR, {"asset": world.symbol, "since": future.isoformat()}) == []
    until_now = await all_pages(http, running, AUDITOR, {"asset": world.symbol, "until": future.isoformat()})
    assert len(until_now) == 5


async def test_assets_paginate_by_symbol(http: httpx.AsyncClient, running: Running, world: World) -> None:
    symbols, after = [], None
    query = """query($after: String) { assets(first: 3, after: $after) {
        nodes { symbol decimals supply supplyUnits issuer maxSupply } pageInfo { hasNextPage endCursor } } }"""
    for _ in range(200):
        page = (await gql.data(http, running, world.alice_token, query, after=after))["assets"]
        symbols += [n["symbol"] for n in page["nodes"]]
        for found in (n for n in page["nodes"] if n["symbol"] == world.symbol):
            assert found == {"symbol": world.symbol, "decimals": 2, "supply": "100.00", "supplyUnits": "10000",
                             "issuer": "treasury", "maxSupply": None}
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert world.symbol in symbols and symbols == sorted(symbols) and len(set(symbols)) == len(symbols)
    one = await gql.data(http, running, world.alice_token, "query($s: String!) { asset(symbol: $s) { symbol } }",
                         s=world.symbol)
    assert one == {"asset": {"symbol": world.symbol}}


async def test_events_audit_trail_by_aggregate_and_correlation(http: httpx.AsyncClient, running: Running,
                                                               world: World) -> None:
    query = """query($filter: EventFilter, $after: String) { events(first: 2, filter: $filter, after: $after) {
        nodes { id type aggregate correlationId commandId principal topic partition offset payload }
        pageInfo { hasNextPage endCursor } } }"""

    async def trail(tok: str, filt: dict[str, str]) -> list[dict[str, object]]:
        out, after = [], None
        for _ in range(20):
            page = (await gql.data(http, running, tok, query, filter=filt, after=after))["events"]
            out += page["nodes"]
            if not page["pageInfo"]["hasNextPage"]:
                return out
            after = page["pageInfo"]["endCursor"]
        raise AssertionError("pagination did not end")

    transfer = await trail(AUDITOR, {"correlationId": world.bob_to_carol})
    assert [e["type"] for e in transfer] == ["TransferInitiated", "TransferConfirmed", "WalletCredited"]
    assert '"amount": 500' in str(transfer[0]["payload"])
    own = await trail(world.alice_token, {"aggregate": f"wallet:{world.alice}"})
    assert [e["type"] for e in own] == ["WalletCredited", *["TransferInitiated", "TransferConfirmed"] * 3,
                                        "TransferInitiated", "TransferFailed"]
    assert all(e["aggregate"] == f"wallet:{world.alice}" for e in own)
    by_command = await trail(AUDITOR, {"commandId": world.transfer_command})
    assert {e["correlationId"] for e in by_command} == {world.transfers[0]}


async def test_command_status(http: httpx.AsyncClient, running: Running, world: World) -> None:
    got = await gql.data(http, running, world.alice_token, """query($id: ID!) {
        commandStatus(id: $id) { id type status reason correlationId createdAt updatedAt } }""",
                         id=world.transfer_command)
    status = got["commandStatus"]
    assert (status["id"], status["type"], status["status"], status["reason"], status["correlationId"]) == (
        world.transfer_command, "InitiateTransfer", "completed", None, world.transfers[0])
    missing = await gql.data(http, running, world.alice_token,
                             'query { commandStatus(id: "no-such-command") { id } }')
    assert missing == {"commandStatus": None}


async def test_freshness_answers_per_partition(http: httpx.AsyncClient, running: Running, world: World) -> None:
    got = (await gql.data(http, running, world.alice_token, """{ freshness { recordsBehind maxSecondsBehind
        partitions { projection topic partition nextOffset endOffset recordsBehind secondsBehind updatedAt } } }"""
                          ))["freshness"]
    assert int(got["recordsBehind"]) == sum(int(p["recordsBehind"]) for p in got["partitions"])
    assert got["maxSecondsBehind"] == max((p["secondsBehind"] for p in got["partitions"]), default=0.0)
    for p in got["partitions"]:
        assert int(p["endOffset"]) - int(p["nextOffset"]) == int(p["recordsBehind"]) >= 0


async def test_read_your_writes_waits_for_the_command(http: httpx.AsyncClient, running: Running,
                                                      world: World) -> None:
    sent = await post(http, running, "/v1/transfers", world.alice_token,
                      {"from": world.alice, "to": world.carol, "asset": world.symbol, "amount": "0.75"}, wait=0)
    assert sent.status_code == 202, sent.text
    answer = await gql.raw(http, running, world.alice_token,
                           'query($id: ID!, $a: String!) { wallet(id: $id) { balance(asset: $a) { available } } }',
                           headers={"X-After-Command": sent.json()["command_id"]}, id=world.alice, a=world.symbol)
    body = answer.json()
    assert body["extensions"]["afterCommand"] == {"id": sent.json()["command_id"], "caughtUp": True,
                                                  "status": "completed"}
    assert body["data"]["wallet"]["balance"]["available"] == "39.00"
    refused = await gql.raw(http, running, world.alice_token, "{ assets { nodes { symbol } } }",
                            headers={"X-After-Command": "not an id"})
    assert refused.status_code == 400 and refused.json()["errors"][0]["extensions"]["code"] == "invalid_argument"


async def test_trades_by_id_and_list(http: httpx.AsyncClient, running: Running, world: World) -> None:
    """Trades as the pipeline settles them (delivery versus payment)."""
    bond = unique_symbol()
    issuer = token("treasury", roles=["issuer"], assets=[bond, world.symbol])
    await new_asset(http, running, issuer, bond, decimals=0)
    await post(http, running, f"/v1/assets/{bond}/issue", issuer, {"to": world.alice, "amount": "3"})
    operator = token("ops", roles=["operator"])
    answer = await post(http, running, "/v1/trades", operator, {
        "seller": world.alice, "buyer": world.bob, "asset": bond, "quantity": "2",
        "payment_asset": world.symbol, "price": "12.50"})
    assert answer.status_code == 200 and answer.json()["status"] == "settled", answer.text
    trade_id = answer.json()["trade_id"]
    got = await gql.data(http, running, world.bob_token, """query($id: ID!) { trade(id: $id) {
        id status reason seller buyer quantity quantityUnits price priceUnits asset { symbol }
        paymentAsset { symbol } steps { type } } }""", id=trade_id)
    t = got["trade"]
    assert (t["status"], t["seller"], t["buyer"], t["quantity"], t["price"], t["priceUnits"]) == (
        "settled", world.alice, world.bob, "2", "12.50", "1250")
    assert t["asset"] == {"symbol": bond} and t["paymentAsset"] == {"symbol": world.symbol}
    assert "TradeSettled" in [s["type"] for s in t["steps"]]
    listed = await gql.data(http, running, world.alice_token, """query($f: TradeFilter) {
        trades(first: 5, filter: $f) { nodes { id status } } }""", f={"asset": bond})
    assert listed["trades"]["nodes"] == [{"id": trade_id, "status": "settled"}]
