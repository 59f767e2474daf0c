"""The reporting role reads the reporting views and nothing else, and cannot write."""

import asyncpg
import httpx
import pytest

from common.settings import asyncpg_dsn
from tests.conftest import Running, token, unique, unique_symbol
from tests.e2e.helpers import new_asset, post

pytestmark = pytest.mark.integration


@pytest.fixture
async def analyst(running: Running) -> asyncpg.Connection:
    admin = await asyncpg.connect(asyncpg_dsn(running.stack.infra.admin_url))
    name, password = unique("analyst_"), unique("pw")
    await admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}' IN ROLE ledgerline_reporting")
    await admin.close()
    conn = await asyncpg.connect(asyncpg_dsn(running.stack.infra.database_url), user=name,
                                 password=password)
    yield conn
    await conn.close()


async def test_analysts_read_scaled_amounts_from_the_reporting_views(
    http: httpx.AsyncClient, running: Running, analyst: asyncpg.Connection
) -> None:
    symbol, alice = unique_symbol(), unique("alice")
    issuer = token("treasury", roles=["issuer"], assets=[symbol])
    await new_asset(http, running, issuer, symbol, decimals=2)
    answer = await post(http, running, f"/v1/assets/{symbol}/issue", issuer,
                        {"to": alice, "amount": "12.34"})
    assert answer.json()["status"] == "completed"
    row = await analyst.fetchrow(
        "SELECT available, available_units FROM reporting.balances WHERE wallet = $1", alice)
    assert str(row["available"].normalize()) == "12.34" and row["available_units"] == 1234
    entries = await analyst.fetch("SELECT kind, delta FROM reporting.ledger_entries WHERE wallet = $1",
                                  alice)
    assert [(e["kind"], str(e["delta"].normalize())) for e in entries] == [("issue_in", "12.34")]
    for view in ("assets", "transfers", "trades", "events", "commands", "alerts"):
        await analyst.fetchval(f"SELECT count(*) FROM reporting.{view}")


@pytest.mark.parametrize("statement", [
    "SELECT * FROM ledger.wallet_balances",
    "SELECT * FROM public.idempotency_keys",
    "SELECT * FROM compliance.alerts",
    "SELECT * FROM wallet_balances",
    "UPDATE reporting.commands SET status = 'completed'",
    "DELETE FROM reporting.events",
    "CREATE TABLE public.mine (x int)",
    "CREATE TABLE reporting.mine (x int)",
])
async def test_the_reporting_role_can_do_nothing_else(
    running: Running, analyst: asyncpg.Connection, statement: str
) -> None:
    with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.UndefinedTableError)):
        await analyst.execute(statement)
