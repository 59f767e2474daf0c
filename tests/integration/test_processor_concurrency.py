"""Concurrency: 500 transfers submitted at once over HTTP from a wallet funded for exactly 100 of
them, to several receivers -> exactly 100 completed, 400 failed ``insufficient_funds``, the
sender's balance 0, and conservation in the views."""

import asyncio
import time

import asyncpg
import httpx
import pytest

from common.settings import asyncpg_dsn
from tests.conftest import Running, token, unique, unique_symbol
from tests.e2e.helpers import new_asset, post
from tests.integration.ledger import facts, read_events

pytestmark = pytest.mark.integration


async def _final_statuses(running: Running, transfer_ids: list[str]) -> list[tuple[str, str | None]]:
    conn = await asyncpg.connect(asyncpg_dsn(running.stack.settings.database_url))
    try:
        deadline = time.monotonic() + 60
        while True:
            rows = await conn.fetch("SELECT status, reason FROM transfers WHERE transfer_id = ANY($1) "
                                    "AND status IN ('completed', 'failed')", transfer_ids)
            if len(rows) == len(transfer_ids) or time.monotonic() > deadline:
                return [(r["status"], r["reason"]) for r in rows]
            await asyncio.sleep(0.3)
    finally:
        await conn.close()


async def test_500_concurrent_transfers_from_a_wallet_funded_for_100(
    http: httpx.AsyncClient, running: Running
) -> None:
    symbol, sender = unique_symbol(), unique("sender")
    receivers = [unique(f"receiver{n}-") for n in range(5)]
    issuer = token("treasury", roles=["issuer"], assets=[symbol])
    sender_token = token(sender, wallets=[sender])
    await new_asset(http, running, issuer, symbol)
    funded = await post(http, running, f"/v1/assets/{symbol}/issue", issuer,
                        {"to": sender, "amount": "100.00"})
    assert funded.json()["status"] == "completed", funded.text

    answers = await asyncio.gather(*(
        http.post(running.command_url + "/v1/transfers",
                  json={"from": sender, "to": receivers[n % 5], "asset": symbol, "amount": "1.00"},
                  headers={"Authorization": f"Bearer {sender_token}"})
        for n in range(500)
    ))
    assert [a.status_code for a in answers] == [202] * 500
    transfer_ids = [a.json()["transfer_id"] for a in answers]
    statuses = await _final_statuses(running, transfer_ids)

    assert sorted(statuses) == [("completed", None)] * 100 + [("failed", "insufficient_funds")] * 400
    conn = await asyncpg.connect(asyncpg_dsn(running.stack.settings.database_url))
    try:
        rows = await conn.fetch("SELECT wallet, available, held FROM wallet_balances WHERE asset = $1", symbol)
        supply = await conn.fetchval("SELECT supply FROM assets WHERE symbol = $1", symbol)
    finally:
        await conn.close()
    views = {r["wallet"]: (int(r["available"]), int(r["held"])) for r in rows}
    assert views[sender] == (0, 0)
    assert sum(views[r][0] for r in receivers) == 100_00
    assert sum(a + h for a, h in views.values()) == supply == 100_00  # conservation, base units

    f = facts(await read_events(running.stack.infra.bootstrap), {symbol})
    assert (len(f.confirmed), len(f.failed)) == (100, 400)
    assert not f.stale and f.in_flight[symbol] == 0
