"""Traces end to end: one transfer through a real broker and a real PostgreSQL is one trace —
the command API's request and its send, the processor's debit and the payee's credit, the
projector's commit of their events, the compliance monitor's evaluation of them and the
``Prefer: wait`` answer — with the Kafka attributes on each span and every batch span linked to
the commands it served.

The command API, the processor, the projector and the monitor run in this test's process, on a broker and a
database of their own (the session's stack has its own processor, which would decide these
commands too), all handing their spans to one in-memory exporter."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from command.bootstrap import create_app
from common.kafka import client_options
from common.settings import Settings, asyncpg_dsn
from common.tracing import Tracing
from compliance import rules
from compliance.worker import MonitorWorker
from events import topics
from processor.worker import Processor
from projector.worker import SESSION, Projector
from tests.conftest import SECRET, own_infra, token, unique, unique_symbol

pytestmark = pytest.mark.integration

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@dataclass
class Traced:
    settings: Settings
    exporter: InMemorySpanExporter
    http: httpx.AsyncClient

    async def post(self, path: str, auth: str, body: dict[str, Any], **headers: str) -> httpx.Response:
        return await self.http.post(path, json=body, headers={
            "Authorization": f"Bearer {auth}", "Prefer": "wait=20", **headers})


@pytest.fixture(scope="module")
def own_stack() -> Iterator[Settings]:
    _, settings, infra = own_infra("ledgerline-tracing-test-")
    try:
        yield replace(settings, jwt_secret=SECRET, keyring_path=None)
    finally:
        infra.stop()


@pytest.fixture
async def traced(own_stack: Settings) -> AsyncIterator[Traced]:
    exporter = InMemorySpanExporter()
    tracing = Tracing(SimpleSpanProcessor(exporter))
    settings = own_stack
    stop = asyncio.Event()
    pool = await asyncpg.create_pool(asyncpg_dsn(settings.database_url), min_size=1, max_size=3,
                                     server_settings=SESSION)
    workers = [
        asyncio.create_task(Processor(settings.kafka, session_timeout_ms=6_000, tracing=tracing).run(stop)),
        asyncio.create_task(Projector(settings.kafka, pool, tracing=tracing).run(stop)),
    ]
    alerts = AIOKafkaProducer(**client_options(settings.kafka), acks="all", enable_idempotence=True)
    await alerts.start()
    workers.append(asyncio.create_task(
        MonitorWorker(settings.kafka, pool, rules.load(), alerts, tracing=tracing).run(stop)))
    api = create_app(settings, tracing)
    try:
        async with api.app.router.lifespan_context(api.app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=api), base_url="http://command-api", timeout=30) as http:
            yield Traced(settings, exporter, http)
    finally:
        stop.set()
        for worker in workers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker, 30)
        await alerts.stop()
        await pool.close()
        tracing.shutdown()


def _spans(exporter: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.context is not None
            and s.context.trace_id == trace_id]


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def _parent_of(child: ReadableSpan, parent: ReadableSpan) -> bool:
    return (child.parent is not None and parent.context is not None
            and child.parent.span_id == parent.context.span_id)


async def test_one_transfer_is_one_trace_from_the_request_to_the_projector_commit(traced: Traced) -> None:
    symbol, alice, bob = unique_symbol(), unique("alice"), unique("bob")
    issuer = token("treasury", roles=["issuer"], assets=[symbol])
    registered = await traced.post("/v1/assets", issuer, {
        "symbol": symbol, "name": "Traced", "decimals": 2, "issuer": "treasury", "max_supply": None})
    assert registered.json()["status"] == "completed", registered.text
    issued = await traced.post(f"/v1/assets/{symbol}/issue", issuer, {"to": alice, "amount": "100.00"})
    assert issued.json()["status"] == "completed", issued.text

    sent = await traced.post("/v1/transfers", token(alice, wallets=[alice]),
                             {"from": alice, "to": bob, "asset": symbol, "amount": "40.00"},
                             traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
    assert sent.status_code == 200 and sent.json()["status"] == "completed", sent.text

    # The payee's processor decides its ApplyCredit, and the projector ends its commit's spans,
    # a moment after the answer: wait for them.
    trace_id = int(CLIENT_TRACE, 16)
    wanted = {"POST /v1/transfers", "send ledger.commands", "decide InitiateTransfer",
              "decide ApplyCredit", "project ledger.events", "monitor ledger.events",
              "wait for outcome"}
    deadline = time.monotonic() + 15
    while not wanted <= {s.name for s in _spans(traced.exporter, trace_id)}:
        assert time.monotonic() < deadline, [s.name for s in _spans(traced.exporter, trace_id)]
        await asyncio.sleep(0.1)
    spans = _spans(traced.exporter, trace_id)

    request = _one(spans, "POST /v1/transfers")
    assert request.kind == SpanKind.SERVER and request.parent is not None
    assert request.parent.span_id == int(CLIENT_SPAN, 16)  # the caller's trace, continued
    assert request.attributes is not None and request.attributes["http.response.status_code"] == 200

    send = _one(spans, "send ledger.commands")
    assert send.kind == SpanKind.PRODUCER and _parent_of(send, request)
    assert send.attributes is not None
    assert send.attributes["messaging.system"] == "kafka"
    assert send.attributes["messaging.destination.name"] == topics.COMMANDS
    assert send.attributes["messaging.kafka.message.key"] == f"wallet:{alice}"
    assert isinstance(send.attributes["messaging.kafka.offset"], int)

    debit = _one(spans, "decide InitiateTransfer")
    assert _parent_of(debit, send)
    assert debit.attributes is not None
    assert debit.attributes["messaging.system"] == "kafka"
    assert debit.attributes["messaging.destination.name"] == topics.COMMANDS
    assert debit.attributes["messaging.consumer.group.name"] == topics.PROCESSOR_GROUP
    assert debit.attributes["messaging.kafka.offset"] == send.attributes["messaging.kafka.offset"]
    assert (debit.attributes["messaging.kafka.destination.partition"]
            == send.attributes["messaging.kafka.destination.partition"])

    # The credit is written by the debit's transaction, and the payee's processor takes it in
    # from the ApplyCredit follow-up the debit's span context travelled with.
    credit = _one(spans, "decide ApplyCredit")
    assert _parent_of(credit, debit)
    assert credit.attributes is not None
    assert credit.attributes["messaging.kafka.message.key"] == f"wallet:{bob}"

    # The projector's commit of the transfer's events (the debit's and the payee's credit),
    # in one commit or two.
    projected = [s for s in spans if s.name == "project ledger.events"]
    assert projected and all(_parent_of(p, debit) for p in projected)
    for p in projected:
        assert p.attributes is not None
        assert p.attributes["messaging.destination.name"] == topics.EVENTS
        assert p.attributes["messaging.consumer.group.name"] == topics.PROJECTOR_GROUP

    # The compliance monitor's evaluation of the same events, in the same trace.
    evaluated = [s for s in spans if s.name == "monitor ledger.events"]
    assert evaluated and all(_parent_of(e, debit) for e in evaluated)
    for e in evaluated:
        assert e.attributes is not None
        assert e.attributes["messaging.consumer.group.name"] == topics.COMPLIANCE_GROUP

    waited = _one(spans, "wait for outcome")
    assert _parent_of(waited, request)
    # The answer waits for the projector's commit of the transfer's outcome: that commit began
    # before the answer. (Its span may end a moment after: the NOTIFY that wakes the waiter is
    # sent with the COMMIT, before the projector's own await returns.)
    assert waited.end_time is not None and any(
        p.start_time is not None and p.start_time <= waited.end_time for p in projected)

    # Each processor transaction and projector commit is a span of its own, linked to the
    # spans of the commands (and events) it served, which link back to it.
    everything = traced.exporter.get_finished_spans()
    batches = {s.context.span_id: s for s in everything if s.context is not None
               and s.name in ("process ledger.commands", "commit ledger.events",
                              "evaluate ledger.events")}
    for served in (debit, credit, *projected, *evaluated):
        (link,) = served.links
        batch = batches[link.context.span_id]
        assert any(b.context.trace_id == trace_id for b in batch.links)
        assert batch.attributes is not None and batch.attributes["messaging.system"] == "kafka"
        assert batch.attributes["messaging.batch.message_count"] >= 1
