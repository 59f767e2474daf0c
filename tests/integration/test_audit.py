"""``ledgerline audit`` against the real pipeline: it passes on what the system wrote, and it
fails, naming the asset and the wallet, when a view row is tampered with."""

import asyncio
import sys

import asyncpg
import httpx
import pytest

from tests.conftest import Running, token, unique, unique_symbol
from tests.e2e.helpers import new_asset, post

pytestmark = pytest.mark.integration


async def _audit(running: Running, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ledgerline", "audit", "--wait", "30", *args,
        env=running.stack.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


@pytest.fixture(scope="module")
async def traded(running: Running) -> tuple[Running, str, str, str]:
    """Every flow once: issue, transfer, a settled and a failed trade, a burn."""
    cash, bond, alice, bob = unique_symbol(), unique_symbol(), unique("alice"), unique("bob")
    issuer = token("treasury", roles=["issuer"], assets=[cash, bond])
    operator = token("ops", roles=["operator"])
    async with httpx.AsyncClient(timeout=30) as http:
        await new_asset(http, running, issuer, cash)
        await new_asset(http, running, issuer, bond, decimals=0)
        steps = [
            (f"/v1/assets/{cash}/issue", issuer, {"to": alice, "amount": "500.00"}, "completed"),
            (f"/v1/assets/{bond}/issue", issuer, {"to": bob, "amount": "5"}, "completed"),
            ("/v1/transfers", operator, {"from": alice, "to": bob, "asset": cash,
                                         "amount": "20.00"}, "completed"),
            ("/v1/trades", operator, {"seller": bob, "buyer": alice, "asset": bond, "quantity": "2",
                                      "payment_asset": cash, "price": "200.00"}, "settled"),
            ("/v1/trades", operator, {"seller": bob, "buyer": alice, "asset": bond, "quantity": "1",
                                      "payment_asset": cash, "price": "999.00"}, "failed"),
            ("/v1/burns", operator, {"wallet": alice, "asset": cash, "amount": "30.00"}, "completed"),
        ]
        for path, auth, body, expected in steps:
            answer = await post(http, running, path, auth, body)
            assert answer.json()["status"] == expected, answer.text
    return running, cash, bond, alice


async def test_audit_passes_on_what_the_pipeline_wrote(traded: tuple[Running, str, str, str]) -> None:
    running, cash, bond, _ = traded
    code, out = await _audit(running)
    assert code == 0, out
    assert "MISMATCH" not in out
    lines = out.splitlines()
    # issued 500.00, burned 30.00, in wallets 470.00, nothing in flight, supply 470.00
    [cash_line] = [line for line in lines if line.split()[:1] == [cash]
                   and line.split()[-1] == "ok" and "500.00" in line]
    assert cash_line.split()[1:] == ["500.00", "30.00", "470.00", "0.00", "470.00", "ok"]
    assert any(line.split()[:1] == [bond] for line in lines)
    assert lines[-1].startswith("audit: ") and " 0 mismatches" in lines[-1]


# How to put one view row off by one base unit (and back, with -1).
TAMPER = {
    "wallet_balances": "UPDATE wallet_balances SET available = available + $3 "
                       "WHERE asset = $1 AND wallet = $2",
    "assets": "UPDATE assets SET supply = supply + $3 WHERE symbol = $1 AND $2::text IS NOT NULL",
}


@pytest.mark.parametrize("table", sorted(TAMPER))
async def test_audit_fails_on_a_tampered_view(traded: tuple[Running, str, str, str],
                                             table: str) -> None:
    running, cash, _, alice = traded
    conn = await asyncpg.connect(running.stack.infra.database_url)
    try:
        assert await conn.execute(TAMPER[table], cash, alice, 1) == "UPDATE 1"
        try:
            code, out = await _audit(running)
        finally:
            await conn.execute(TAMPER[table], cash, alice, -1)
    finally:
        await conn.close()
    assert code == 1, out
    mismatches = [line for line in out.splitlines() if line.startswith("MISMATCH")]
    assert mismatches and all(cash in line for line in mismatches), out
    if table == "wallet_balances":
        # 500.00 issued - 20.00 sent - 200.00 paid - 30.00 burned = 250.00, shown as 250.01
        assert any(f"wallet {alice}: wallet_balances shows available 250.01" in line
                   and "the events give available 250.00" in line for line in mismatches), out
    else:
        assert any("assets shows supply/burned (47001, 3000), the events give (47000, 3000)"
                   in line for line in mismatches), out
    assert "the ledger does NOT add up" in out.splitlines()[-1]


async def test_audit_of_the_events_alone_ignores_the_views(
    traded: tuple[Running, str, str, str]
) -> None:
    running, cash, *_ = traded
    conn = await asyncpg.connect(running.stack.infra.database_url)
    try:
        await conn.execute("UPDATE assets SET supply = supply + 1 WHERE symbol = $1", cash)
        try:
            code, out = await _audit(running, "--events-only")
        finally:
            await conn.execute("UPDATE assets SET supply = supply - 1 WHERE symbol = $1", cash)
    finally:
        await conn.close()
    assert code == 0, out
    assert "views at the projector" not in out



async def test_audit_of_one_asset_judges_that_asset_alone(
    traded: tuple[Running, str, str, str]
) -> None:
    running, cash, bond, alice = traded
    conn = await asyncpg.connect(running.stack.infra.database_url)
    try:
        assert await conn.execute(TAMPER["wallet_balances"], cash, alice, 1) == "UPDATE 1"
        try:
            other = await _audit(running, "--asset", bond)
            tampered = await _audit(running, "--asset", bond, "--asset", cash)
            unknown = await _audit(running, "--asset", "NOSUCH")
        finally:
            await conn.execute(TAMPER["wallet_balances"], cash, alice, -1)
    finally:
        await conn.close()
    code, out = other
    assert code == 0, out
    assert cash not in out and any(line.split()[:1] == [bond] for line in out.splitlines()), out
    assert out.splitlines()[-1].startswith("audit: 1 assets, 0 mismatches")
    code, out = tampered
    assert code == 1, out
    mismatches = [line for line in out.splitlines() if line.startswith("MISMATCH")]
    assert mismatches and all(cash in line for line in mismatches), out
    code, out = unknown
    assert code == 1 and "MISMATCH NOSUCH: no event names this asset" in out, out
