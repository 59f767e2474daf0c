"""Idempotency: the same command three times -> applied once, also across a processor restart;
the same Idempotency-Key with another body -> 409 ``idempotency_key_reused``."""

import asyncio
import os
import signal
import uuid

import httpx
import pytest

from tests.conftest import Running, token
from tests.e2e.helpers import balances, funded_alice, post
from tests.integration.ledger import (
    Workload,
    assert_decided_once,
    facts,
    produce,
    read_events,
    unique_wallets,
    wait_decided,
)
from tests.integration.processes import own_processors, wait_for_log

pytestmark = pytest.mark.integration


async def test_the_same_envelope_three_times_straight_to_kafka_is_decided_once(running: Running) -> None:
    bootstrap = running.stack.infra.bootstrap
    source, target = unique_wallets("idem", 2)
    workload = Workload.build([source, target], transfers=0, seed=1, cash=1_000)
    with own_processors(running, "idempotency") as procs:
        first = procs.start("idempotency-1")
        await produce(bootstrap, workload.setup)
        await wait_decided(bootstrap, workload)
        # Twice at once (one batch), decided, then the processor dies ...
        repeated = workload.transfer(source, target, 100)
        await produce(bootstrap, [repeated, repeated])
        await wait_decided(bootstrap, workload)
        await wait_for_log(first, f"duplicate command {repeated.id}")
        os.kill(first.pid, signal.SIGKILL)
        first.popen.wait()
        # ... and a third time while it is down; a later command on the same wallet shows when
        # the restarted processor has passed the repeat.
        later = workload.transfer(source, target, 1)
        await produce(bootstrap, [repeated, later])
        second = procs.start("idempotency-2")
        f = await wait_decided(bootstrap, workload)
        await wait_for_log(second, f"duplicate command {repeated.id}")

    assert_decided_once(f, workload)
    transfer_id = repeated.correlation_id
    assert transfer_id is not None
    assert (f.initiated[transfer_id], f.confirmed[transfer_id]) == (1, 100)
    cash = workload.cash
    assert (f.balances[(source, cash)], f.balances[(target, cash)]) == ((899, 0), (1_101, 0))


async def test_the_same_idempotency_key_three_times_over_http_applies_once(
    http: httpx.AsyncClient, running: Running
) -> None:
    symbol, alice, bob, _, alice_token = await funded_alice(http, running, "100.00")
    body = {"from": alice, "to": bob, "asset": symbol, "amount": "10.00"}
    key = str(uuid.uuid4())

    # Two at once (both may pass the API's own check and reach Kafka) ...
    answers = list(await asyncio.gather(*(
        post(http, running, "/v1/transfers", alice_token, body, **{"Idempotency-Key": key})
        for _ in range(2)
    )))
    # ... and the third after the processor was killed and restarted.
    services = running.services
    services.children["processor"].send_signal(signal.SIGKILL)
    services.children["processor"].wait()
    services.start_one("processor")
    answers.append(await post(http, running, "/v1/transfers", alice_token, body,
                              **{"Idempotency-Key": key}))

    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    assert {(a.json()["command_id"], a.json()["transfer_id"], a.json()["status"]) for a in answers} == {
        (answers[0].json()["command_id"], answers[0].json()["transfer_id"], "completed")}
    auditor = token("auditor", roles=["auditor"])
    assert await balances(http, running, auditor, alice) == {symbol: ("90.00", "0.00")}
    assert await balances(http, running, auditor, bob) == {symbol: ("10.00", "0.00")}
    f = facts(await read_events(running.stack.infra.bootstrap), {symbol})
    assert f.initiated[answers[0].json()["transfer_id"]] == 1


async def test_the_same_idempotency_key_with_another_body_is_rejected(
    http: httpx.AsyncClient, running: Running
) -> None:
    symbol, alice, bob, _, alice_token = await funded_alice(http, running, "100.00")
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"from": alice, "to": bob, "asset": symbol, "amount": "10.00"}

    first = await post(http, running, "/v1/transfers", alice_token, body, **key)
    reused = await post(http, running, "/v1/transfers", alice_token, {**body, "amount": "20.00"}, **key)

    assert first.status_code == 200 and first.json()["status"] == "completed", first.text
    assert reused.status_code == 409, reused.text
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    auditor = token("auditor", roles=["auditor"])
    assert await balances(http, running, auditor, alice) == {symbol: ("90.00", "0.00")}
