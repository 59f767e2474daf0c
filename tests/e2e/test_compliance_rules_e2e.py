"""Each rule of tests/compliance_rules.toml fires end to end (HTTP → Kafka → processor →
monitor → GraphQL) on a workload built to trip it, and stays silent on a near miss."""

import asyncio
import time

import asyncpg
import httpx
import pytest

from common.settings import asyncpg_dsn
from tests.conftest import Running, unique
from tests.e2e.compliance_support import (
    COMPLIANCE,
    Ledger,
    alerts,
    fixed_window_margin,
    monitor_caught_up,
    wait_for_alerts,
)
from tests.e2e.helpers import graphql

pytestmark = pytest.mark.e2e


async def test_large_movement(http: httpx.AsyncClient, running: Running) -> None:
    ledger = await Ledger(http, running).start()
    big, near = unique("big"), unique("near")
    await ledger.fund(big, 1_000_000)
    await ledger.fund(near, 999_999)
    missed = await ledger.send(near, unique("to"), 999_999)
    tripped = await ledger.send(big, unique("to"), 1_000_000)
    [alert] = await wait_for_alerts(http, running, big, "large_movement")
    assert alert["evidence"] == [tripped]
    assert (alert["asset"], alert["ruleVersion"], alert["severity"], alert["status"]) == (
        ledger.symbol, "test-1", "high", "open")
    await monitor_caught_up(running)
    assert await alerts(http, running, near) == [], missed
    port = running.stack.settings.compliance_metrics_port
    exposed = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    assert 'ledgerline_compliance_alerts_total{rule="large_movement"}' in exposed
    assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200


async def test_velocity(http: httpx.AsyncClient, running: Running) -> None:
    ledger = await Ledger(http, running).start()
    fast, slow, to = unique("fast"), unique("slow"), unique("to")
    await ledger.fund(fast, 100)
    await ledger.fund(slow, 100)
    for _ in range(5):
        await ledger.send(slow, to, 1)
    sent = [await ledger.send(fast, to, 1) for _ in range(6)]
    [alert] = await wait_for_alerts(http, running, fast, "velocity")
    assert sorted(alert["evidence"]) == sorted(sent)
    await monitor_caught_up(running)
    assert await alerts(http, running, slow) == []


async def test_structuring(http: httpx.AsyncClient, running: Running) -> None:
    ledger = await Ledger(http, running).start()
    smurf, near = unique("smurf"), unique("near")
    await ledger.fund(smurf, 3 * 950_000)
    await ledger.fund(near, 3 * 950_000)
    for amount in (950_000, 950_000, 899_999):  # the third is more than 10% under the threshold
        await ledger.send(near, unique("to"), amount)
    sent = [await ledger.send(smurf, unique("to"), 950_000) for _ in range(3)]
    [alert] = await wait_for_alerts(http, running, smurf, "structuring")
    assert sorted(alert["evidence"]) == sorted(sent)
    await monitor_caught_up(running)
    assert await alerts(http, running, near) == []


async def test_fan_out(http: httpx.AsyncClient, running: Running) -> None:
    ledger = await Ledger(http, running).start()
    hub, near = unique("hub"), unique("near")
    await ledger.fund(hub, 100)
    await ledger.fund(near, 100)
    leaves = [unique("leaf") for _ in range(4)]
    for leaf in [*leaves[:3], leaves[0]]:  # four payments, three payees
        await ledger.send(near, leaf, 1)
    for leaf in leaves:
        await ledger.send(hub, leaf, 1)
    [alert] = await wait_for_alerts(http, running, hub, "fan_out")
    assert len(alert["evidence"]) == 4
    await monitor_caught_up(running)
    assert await alerts(http, running, near) == []


async def test_fan_in(http: httpx.AsyncClient, running: Running) -> None:
    ledger = await Ledger(http, running).start()
    sink, near = unique("sink"), unique("near")
    payers = [unique("payer") for _ in range(4)]
    for payer in payers:
        await ledger.fund(payer, 10)
    await fixed_window_margin()
    for payer in [*payers[:3], payers[0]]:  # four payments, three payers
        await ledger.send(payer, near, 1)
    sent = [await ledger.send(payer, sink, 1) for payer in payers]
    [alert] = await wait_for_alerts(http, running, sink, "fan_in")
    assert sorted(alert["evidence"]) == sorted(sent)
    await monitor_caught_up(running)
    assert await alerts(http, running, near) == []


async def test_watch_list(http: httpx.AsyncClient, running: Running) -> None:
    ledger = await Ledger(http, running).start()
    payer = unique("payer")
    await ledger.fund(payer, 10)
    await ledger.send(payer, unique("watched-walle"), 1)  # a near miss by name
    tripped = await ledger.send(payer, "watched-wallet", 1)
    await monitor_caught_up(running)
    found = [a for a in await alerts(http, running, "watched-wallet", "watch_list")
             if a["evidence"] == [tripped]]
    assert len(found) == 1
    assert await alerts(http, running, payer) == []
    # The rule is marked freeze: the monitor froze the listed wallet with the ordinary command,
    # as its own principal, once.
    query = """{ events(filter: {aggregate: "wallet:watched-wallet", type: "WalletFrozen"}, first: 100)
                 { nodes { principal payload } } }"""
    deadline = time.monotonic() + 30
    while not (frozen := [e for e in (await graphql(http, running, COMPLIANCE, query))["events"]["nodes"]
                          if found[0]["id"] in e["payload"]]):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert [e["principal"] for e in frozen] == ["compliance-monitor"]
    # Published again (as after a crash before the mark, or a replay): no second freeze.
    conn = await asyncpg.connect(asyncpg_dsn(running.stack.infra.database_url))
    try:
        await conn.execute("UPDATE compliance.alerts SET published = false WHERE alert_id = $1", found[0]["id"])
    finally:
        await conn.close()
    second = await ledger.send(payer, "watched-wallet", 1)  # a new alert: the monitor publishes
    await monitor_caught_up(running)
    deadline = time.monotonic() + 30
    while not any(second in a["evidence"] for a in await alerts(http, running, "watched-wallet", "watch_list")):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    await asyncio.sleep(2)
    nodes = (await graphql(http, running, COMPLIANCE, query))["events"]["nodes"]
    assert len([e for e in nodes if found[0]["id"] in e["payload"]]) == 1
