"""Cases: actions are commands through the command API (compliance role), decided by the
monitor and recorded on ``compliance.events``; GraphQL shows the case, its alerts, evidence and
notes. A wallet owner never sees an alert nor learns a case exists: every answer is exactly the
answer for an unknown id."""

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest

from common.topic_reader import read_to_end
from events import topics
from events.compliance import CASE_CODEC
from tests.conftest import Running, token, unique
from tests.e2e.compliance_support import AUDITOR, COMPLIANCE, Ledger, wait_for_alerts
from tests.e2e.gql import raw
from tests.e2e.helpers import graphql, post

pytestmark = pytest.mark.e2e

CASE = """query($id: ID!) { case(id: $id) { id wallet status assignee reportReference
    alerts { id rule evidence evidenceEvents { id type } } notes { author action text } } }"""
CASES = """query($w: ID) { cases(filter: {wallet: $w}) { nodes { id status } pageInfo { hasNextPage } } }"""
ALERTS = """query($w: ID) { alerts(filter: {wallet: $w}) { nodes { id } pageInfo { hasNextPage } } }"""


async def _case(http: httpx.AsyncClient, running: Running, case_id: str, who: str = COMPLIANCE) -> Any:
    return (await graphql(http, running, who, CASE, id=case_id))["case"]


async def _until(http: httpx.AsyncClient, running: Running, case_id: str, status: str) -> Any:
    deadline = time.monotonic() + 30
    while (case := await _case(http, running, case_id))["status"] != status:
        assert time.monotonic() < deadline, case
        await asyncio.sleep(0.2)
    return case


async def test_a_case_is_assigned_noted_and_cleared_through_commands(
        http: httpx.AsyncClient, running: Running) -> None:
    ledger = await Ledger(http, running).start()
    whale = unique("whale")
    await ledger.fund(whale, 1_000_000)
    sent = await ledger.send(whale, unique("to"), 1_000_000)
    [alert] = await wait_for_alerts(http, running, whale, "large_movement")
    case_id = alert["caseId"]
    case = await _case(http, running, case_id)
    assert (case["wallet"], case["status"]) == (whale, "open")
    assert case["alerts"][0]["evidenceEvents"] == [{"id": sent, "type": "TransferConfirmed"}]

    async def act(action: str, body: dict[str, str], who: str = COMPLIANCE) -> httpx.Response:
        return await post(http, running, f"/v1/cases/{case_id}/{action}", who, body)

    answer = await act("assign", {"assignee": "ann"})
    assert answer.status_code == 202, answer.text
    case = await _until(http, running, case_id, "investigating")
    assert case["assignee"] == "ann"
    assert (await act("note", {"note": "called the customer"})).status_code == 202
    assert (await act("clear", {"note": "salary payment"})).status_code == 202
    case = await _until(http, running, case_id, "cleared")
    assert [n["action"] for n in case["notes"]] == ["assigned", "note", "cleared"]
    assert case["notes"][1] == {"author": "officer", "action": "note", "text": "called the customer"}
    # A closed case stays closed: escalating it now is decided as a rejection.
    assert (await act("escalate", {"report_reference": "SAR-1"})).status_code == 202
    events = await read_to_end(running.stack.settings.kafka_bootstrap, topics.CASE_EVENTS)
    mine = [CASE_CODEC.decode(r.value) for rs in events.values() for r in rs if r.key == f"case:{case_id}".encode()]
    deadline = time.monotonic() + 30
    while [e.type for e in mine][-1:] != ["CaseActionRejected"]:
        assert time.monotonic() < deadline, [e.type for e in mine]
        await asyncio.sleep(0.3)
        events = await read_to_end(running.stack.settings.kafka_bootstrap, topics.CASE_EVENTS)
        mine = [CASE_CODEC.decode(r.value) for rs in events.values() for r in rs
                if r.key == f"case:{case_id}".encode()]
    assert [e.type for e in mine] == ["CaseAssigned", "CaseNoteAdded", "CaseCleared", "CaseActionRejected"]
    assert (await _case(http, running, case_id))["status"] == "cleared"

    # The wallet's next alert opens a new case.
    await ledger.fund(whale, 1_000_000)
    await ledger.send(whale, unique("to"), 1_000_000)
    deadline = time.monotonic() + 30
    while len(found := (await graphql(http, running, AUDITOR, CASES, w=whale))["cases"]["nodes"]) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert sorted(c["status"] for c in found) == ["cleared", "open"]


async def test_a_wallet_owner_never_learns_of_an_alert_or_a_case(
        http: httpx.AsyncClient, running: Running) -> None:
    ledger = await Ledger(http, running).start()
    whale = unique("whale")
    await ledger.fund(whale, 1_000_000)
    await ledger.send(whale, unique("to"), 1_000_000)
    [alert] = await wait_for_alerts(http, running, whale, "large_movement")
    unknown = str(uuid.uuid4())
    for who in (token(whale, wallets=[whale]), token("ops", roles=["operator"])):
        for query, variables in ((CASE, {"id": alert["caseId"]}), (CASES, {"w": whale}), (ALERTS, {"w": whale})):
            seen = (await raw(http, running, who, query, **variables)).json()
            if query is CASE:
                as_unknown = (await raw(http, running, who, query, id=unknown)).json()
                assert seen == as_unknown == {"data": {"case": None}}
            else:
                as_unknown = (await raw(http, running, who, query, w=unique("nobody"))).json()
                assert seen == as_unknown
                assert next(iter(seen["data"].values()))["nodes"] == []
        # Acting on the case: the same refusal as for a case that does not exist.
        here = await post(http, running, f"/v1/cases/{alert['caseId']}/note", who, {"note": "x"})
        there = await post(http, running, f"/v1/cases/{unknown}/note", who, {"note": "x"})
        assert here.status_code == there.status_code == 403
        assert here.json() == there.json()
    # The auditor reads what compliance reads.
    assert (await _case(http, running, alert["caseId"], AUDITOR))["wallet"] == whale
