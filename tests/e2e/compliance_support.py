"""Workloads for the compliance tests: assets with 0 decimals (amounts are base units, as in the
rules file), funded wallets, transfers, and reading the monitor's answers over GraphQL."""

import asyncio
import time
from typing import Any

import asyncpg
import httpx

from common.settings import asyncpg_dsn
from tests.conftest import Running, token, unique_symbol
from tests.e2e.helpers import graphql, new_asset, post

COMPLIANCE = token("officer", roles=["compliance"])
AUDITOR = token("auditor", roles=["auditor"])
CHUNK = 999_999  # under the large-movement threshold of tests/compliance_rules.toml

ALERTS = """query($f: AlertFilter, $first: Int) { alerts(filter: $f, first: $first) {
    nodes { id rule ruleVersion wallet asset severity status caseId evidence windowStart windowEnd } } }"""


class Ledger:
    """One asset (0 decimals) of its own, so the tests' workloads do not meet."""

    def __init__(self, http: httpx.AsyncClient, running: Running) -> None:
        self.http, self.running = http, running
        self.symbol = unique_symbol()
        self.issuer = token("treasury", roles=["issuer"], assets=[self.symbol])

    async def start(self) -> "Ledger":
        await new_asset(self.http, self.running, self.issuer, self.symbol, decimals=0)
        return self

    async def fund(self, wallet: str, amount: int) -> None:
        """Issued in chunks under the large-movement threshold, so funding raises nothing."""
        while amount > 0:
            piece = min(amount, CHUNK)
            answer = await post(self.http, self.running, f"/v1/assets/{self.symbol}/issue", self.issuer,
                                {"to": wallet, "amount": str(piece)})
            assert answer.json()["status"] == "completed", answer.text
            amount -= piece

    async def send(self, source: str, target: str, amount: int) -> str:
        """A completed transfer; its ``TransferConfirmed`` event id."""
        answer = await post(self.http, self.running, "/v1/transfers", token(source, wallets=[source]),
                            {"from": source, "to": target, "asset": self.symbol, "amount": str(amount)})
        assert answer.json()["status"] == "completed", answer.text
        data = await graphql(self.http, self.running, COMPLIANCE,
                             """query($c: ID!) { events(filter: {correlationId: $c, type: "TransferConfirmed"})
                                { nodes { id } } }""", c=answer.json()["transfer_id"])
        [event] = data["events"]["nodes"]
        return str(event["id"])


async def monitor_caught_up(running: Running, seconds: float = 60.0) -> None:
    """Wait until the monitor has read every event the views hold (the workloads' commands
    answered ``completed``, so their events are in the views)."""
    conn = await asyncpg.connect(asyncpg_dsn(running.stack.infra.database_url))
    try:
        views = {r[0]: r[1] for r in await conn.fetch(
            "SELECT partition, next_offset FROM projection_offsets "
            "WHERE projection = 'views' AND topic = 'ledger.events'")}
        deadline = time.monotonic() + seconds
        while True:
            seen = {r[0]: r[1] for r in await conn.fetch(
                "SELECT partition, next_offset FROM compliance.offsets WHERE topic = 'ledger.events'")}
            if all(seen.get(p, 0) >= o for p, o in views.items()):
                return
            assert time.monotonic() < deadline, f"monitor at {seen}, views at {views}"
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def alerts(http: httpx.AsyncClient, running: Running, wallet: str, rule: str | None = None,
                 who: str = COMPLIANCE) -> list[dict[str, Any]]:
    f: dict[str, Any] = {"wallet": wallet}
    if rule is not None:
        f["rule"] = rule
    data = await graphql(http, running, who, ALERTS, f=f, first=100)
    return list(data["alerts"]["nodes"])


async def wait_for_alerts(http: httpx.AsyncClient, running: Running, wallet: str, rule: str,
                          seconds: float = 120.0) -> list[dict[str, Any]]:
    """Long by default: right after a broker restart (tests/integration/test_broker_crash.py
    runs just before the monitor's tests) the monitor takes a while to rejoin its group."""
    deadline = time.monotonic() + seconds
    while True:
        found = await alerts(http, running, wallet, rule)
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


async def fixed_window_margin(seconds: int = 3600, margin: float = 60.0) -> None:
    """Fan-in counts in windows aligned to the epoch: start a workload well inside one."""
    left = seconds - time.time() % seconds
    if left < margin:
        await asyncio.sleep(left + 1)
