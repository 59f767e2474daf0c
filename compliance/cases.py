"""Case actions: the monitor decides the commands of ``compliance.commands``.

``decide`` is pure (the case as it stands + a command -> one event). The worker around it
decides each command in one PostgreSQL transaction with its offsets: the case row (locked),
the note, the event in the outbox ``case_events``, the offset, ``NOTIFY``; then appends the
events to ``compliance.events`` (at least once, each with the command's id as its id, so a
consumer de-duplicates by it). A command id already decided (a re-sent command) is skipped.

Why the monitor and not the processor: a case is born from the monitor's alerts, in the
monitor's own transaction, so the monitor is the one writer that knows every case; giving the
processor a case aggregate would need the monitor to send it every new case first. The actions
are still commands and events in Kafka like everything else.
"""

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener

from common import failures
from common.kafka import KafkaTarget, client_options
from compliance import store
from events import codec, topics
from events.codec import Envelope
from events.compliance import (
    CASE_CODEC,
    CHANNEL,
    AddCaseNote,
    AssignCase,
    CaseActionRejected,
    CaseAssigned,
    CaseCleared,
    CaseCommand,
    CaseEscalated,
    CaseNoteAdded,
    ClearCase,
    EscalateCase,
    notify_payloads,
)
from events.deadletter import dead_letter_headers

log = logging.getLogger("ledgerline.compliance.cases")

CASES_GROUP = "ledger-compliance-cases"
FINAL = frozenset({"cleared", "escalated"})
_ACTIONS = {AssignCase: "assign", AddCaseNote: "note", ClearCase: "clear", EscalateCase: "escalate"}


@dataclass(frozen=True)
class CaseState:
    status: str
    assignee: str | None


def decide(case: CaseState | None, command: CaseCommand) -> CaseCommand:
    """The event a command makes of the case as it stands. A note may be added to a closed
    case (the file stays open to the team); nothing else changes one."""
    action = _ACTIONS.get(type(command), "unknown")
    if case is None:
        return CaseActionRejected(case_id=command.case_id, action=action, reason="unknown_case",
                                  note=command.note)
    if isinstance(command, AddCaseNote):
        return CaseNoteAdded(case_id=command.case_id, note=command.note)
    if case.status in FINAL:
        return CaseActionRejected(case_id=command.case_id, action=action, reason="case_closed",
                                  note=command.note)
    match command:
        case AssignCase():
            return CaseAssigned(case_id=command.case_id, assignee=command.assignee, note=command.note)
        case ClearCase():
            return CaseCleared(case_id=command.case_id, note=command.note)
        case EscalateCase():
            return CaseEscalated(case_id=command.case_id, report_reference=command.report_reference,
                                 note=command.note)
    return CaseActionRejected(case_id=command.case_id, action=action, reason="unknown_action",
                              note=command.note)


_CHANGES: dict[type, tuple[str | None, str]] = {
    CaseAssigned: ("investigating", "assigned"),
    CaseNoteAdded: (None, "note"),
    CaseCleared: ("cleared", "cleared"),
    CaseEscalated: ("escalated", "escalated"),
}


async def apply(conn: asyncpg.Connection, cmd: Envelope, schema: str = store.SCHEMA) -> Envelope | None:
    """Decide one command and write what it changes (in the caller's transaction); None when
    its id was decided before."""
    command = cmd.payload
    assert isinstance(command, CaseCommand)
    if await conn.fetchval(f"SELECT 1 FROM {schema}.case_events WHERE event_id = $1", cmd.command_id):
        return None
    row = await conn.fetchrow(f"SELECT status, assignee FROM {schema}.cases WHERE case_id = $1 FOR UPDATE",
                              command.case_id)
    event = decide(None if row is None else CaseState(row["status"], row["assignee"]), command)
    env = codec.envelope(event, key=cmd.key, command_id=cmd.command_id, id=cmd.command_id,
                         principal=cmd.principal, correlation_id=command.case_id, occurred_at=cmd.occurred_at)
    if not isinstance(event, CaseActionRejected):
        status, action = _CHANGES[type(event)]
        await conn.execute(
            f"UPDATE {schema}.cases SET status = coalesce($2, status), assignee = coalesce($3, assignee), "
            "report_reference = coalesce($4, report_reference), updated_at = now() WHERE case_id = $1",
            command.case_id, status, getattr(event, "assignee", None),
            getattr(event, "report_reference", None))
        said = {"assigned": f"assigned to {getattr(event, 'assignee', '')}",
                "escalated": f"escalated: {getattr(event, 'report_reference', '')}"}
        text = event.note or said.get(action, "")
        await conn.execute(
            f"INSERT INTO {schema}.case_notes (case_id, note_id, author, action, text, at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            command.case_id, cmd.command_id, cmd.principal, action, text, cmd.occurred_at)
    await conn.execute(f"INSERT INTO {schema}.case_events (event_id, case_id, record) VALUES ($1, $2, $3)",
                       env.id, command.case_id, codec.encode(env))
    return env


class _Seek(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka has no type hints
    def __init__(self, worker: "CaseWorker") -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.worker.seek_to_stored()


class CaseWorker:
    """Consumes ``compliance.commands`` (its own group), decides, appends ``compliance.events``."""

    def __init__(self, bootstrap: KafkaTarget, pool: asyncpg.Pool, producer: AIOKafkaProducer,
                 group_instance_id: str | None = None) -> None:
        self.pool = pool
        self.producer = producer
        self.consumer = AIOKafkaConsumer(
            **client_options(bootstrap), group_id=CASES_GROUP, enable_auto_commit=False,
            group_instance_id=group_instance_id,  # static membership (common.settings)
            isolation_level="read_committed", auto_offset_reset="earliest",
            session_timeout_ms=6_000, heartbeat_interval_ms=1_000)

    async def seek_to_stored(self) -> None:
        async with self.pool.acquire() as conn:
            stored = await store.load_offsets(conn, topics.CASE_COMMANDS)
        for tp in self.consumer.assignment():
            if tp.partition in stored:
                self.consumer.seek(tp, stored[tp.partition])
            else:
                await self.consumer.seek_to_beginning(tp)

    async def run(self, stop: asyncio.Event) -> None:
        self.consumer.subscribe([topics.CASE_COMMANDS], listener=_Seek(self))
        await self.consumer.start()
        backoff = failures.Backoff()
        unpublished = True  # outcomes a crash left unpublished
        reread = False  # the positions must be read back from the database before going on
        try:
            while not stop.is_set():
                if reread or unpublished:
                    # Database work itself: the database may still be away.
                    try:
                        if reread:
                            await self.seek_to_stored()
                            reread = False
                        await self.publish()
                        unpublished = False
                    except failures.TRANSIENT as exc:
                        log.warning("transient failure (%r); retrying", exc)
                        await backoff.sleep()
                        continue
                batches = await self.consumer.getmany(timeout_ms=200, max_records=500)
                try:
                    for records in batches.values():
                        for record in records:
                            await self._one(record)
                    if batches:
                        await self.publish()
                    backoff.reset()
                except failures.TRANSIENT as exc:
                    log.warning("transient failure (%r); seeking back and retrying", exc)
                    await backoff.sleep()
                    reread = True
        finally:
            await self.consumer.stop()

    async def _one(self, record: Any) -> None:
        try:
            cmd = CASE_CODEC.decode(record.value)
            if not isinstance(cmd.payload, (AssignCase, AddCaseNote, ClearCase, EscalateCase)):
                raise codec.DecodeError(f"{cmd.type} is not a case command")
        except codec.DecodeError as exc:
            log.warning("dead-lettering %s[%s]@%s: %s", record.topic, record.partition, record.offset, exc)
            headers = dead_letter_headers(str(exc), record.topic, record.partition, record.offset)
            await (await self.producer.send(topics.DLQ, record.value, key=record.key, headers=headers))
            cmd = None
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO {store.SCHEMA}.offsets (topic, partition, next_offset) VALUES ($1, $2, $3) "
                "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, "
                "updated_at = now()", record.topic, record.partition, record.offset + 1)
            if cmd is not None and (event := await apply(conn, cmd)) is not None:
                for payload in notify_payloads([], [event.correlation_id or ""]):
                    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)

    async def publish(self) -> None:
        async with self.pool.acquire() as conn:
            while rows := await conn.fetch(
                    f"SELECT event_id, case_id, record FROM {store.SCHEMA}.case_events WHERE NOT published "
                    "ORDER BY event_id LIMIT 500"):
                sends = [await self.producer.send(topics.CASE_EVENTS, bytes(r["record"]),
                                                  key=f"case:{r['case_id']}".encode()) for r in rows]
                for sent in sends:
                    await sent
                await conn.execute(f"UPDATE {store.SCHEMA}.case_events SET published = true "
                                   "WHERE event_id = ANY($1::text[])", [r["event_id"] for r in rows])
