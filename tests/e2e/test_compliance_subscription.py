"""``alertRaised`` over graphql-transport-ws: the compliance role hears an alert as it is
raised; a wallet owner subscribed alike hears nothing."""

import asyncio
import json

import httpx
import pytest

from tests.conftest import Running, token, unique
from tests.e2e.compliance_support import COMPLIANCE, Ledger
from tests.e2e.gql import session, subscribe

pytestmark = pytest.mark.e2e

SUB = "subscription($w: ID) { alertRaised(wallet: $w) { id rule wallet status evidence } }"


async def test_alert_raised_reaches_compliance_and_not_the_owner(http: httpx.AsyncClient,
                                                                  running: Running) -> None:
    ledger = await Ledger(http, running).start()
    whale = unique("whale")
    await ledger.fund(whale, 1_000_000)
    async with session(running, COMPLIANCE) as officer, session(running, token(whale, wallets=[whale])) as owner:
        await subscribe(officer, "1", SUB, w=whale)
        await subscribe(owner, "1", SUB, w=whale)
        await asyncio.sleep(0.5)  # both subscriptions are listening
        sent = await ledger.send(whale, unique("to"), 1_000_000)
        message = json.loads(await asyncio.wait_for(officer.recv(), 30))
        assert message["type"] == "next", message
        alert = message["payload"]["data"]["alertRaised"]
        assert (alert["rule"], alert["wallet"], alert["status"], alert["evidence"]) == (
            "large_movement", whale, "open", [sent])
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(owner.recv(), 2)
