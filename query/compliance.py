"""Alerts and cases, for the ``compliance`` and ``auditor`` roles alone.

Anyone else — a wallet owner above all, but also an operator — is answered exactly as if there
were no alerts and no cases: an empty list, a null case, a subscription that never says
anything. Never ``FORBIDDEN``: a refusal on a case id would confirm that the id exists, and a
wallet owner must never learn that one of its wallets is under review (tipping-off).
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Iterator, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import strawberry
from strawberry.types import Info

from common.auth import Principal
from common.listen import Listener
from events.compliance import CASE_STATUSES, CHANNEL, SEVERITIES, evidence_sql
from query import pages
from query.context import Context, ctx
from query.db import Db, Row, Where
from query.errors import invalid_argument
from query.ids import id_arg, name_arg, wallet_arg
from query.records import AuditEvent
from query.wallets import utc

log = logging.getLogger("ledgerline.query.compliance")

ROLES = frozenset({"compliance", "auditor"})


def may_see_alerts(principal: Principal) -> bool:
    return bool(principal.roles & ROLES)


def _allowed(info: Info) -> bool:
    return may_see_alerts(ctx(info).who())


# --- queries --------------------------------------------------------------------------------

ALERT_COLUMNS = f"""a.alert_id, a.rule, a.rule_version, a.wallet, a.asset, a.severity,
    {evidence_sql("a")} AS evidence, a.window_start, a.window_end, a.raised_at, a.case_id, c.status"""


async def alerts_by_id(db: Db, ids: Sequence[str]) -> dict[str, Row]:
    rows = await db.fetch(f"SELECT {ALERT_COLUMNS} FROM compliance.alerts a "
                          "LEFT JOIN compliance.cases c USING (case_id) WHERE a.alert_id = ANY($1::text[])",
                          list(ids))
    return {r["alert_id"]: dict(r) for r in rows}


async def alert_page(db: Db, *, status: str | None, rule: str | None, wallet: str | None,
                     severity: str | None, case_id: str | None, since: datetime | None,
                     until: datetime | None, after: tuple[datetime, str] | None, limit: int) -> list[Row]:
    """Alerts, newest (event time) first."""
    w = Where()
    w.when(status, "c.status = {0}")
    w.when(rule, "a.rule = {0}")
    w.when(wallet, "a.wallet = {0}")
    w.when(severity, "a.severity = {0}")
    w.when(case_id, "a.case_id = {0}")
    w.when(since, "a.window_end >= {0}")
    w.when(until, "a.window_end < {0}")
    if after is not None:
        w.add("(a.window_end, a.alert_id) < ({0}, {1})", *after)
    rows = await db.fetch(
        f"""SELECT {ALERT_COLUMNS} FROM compliance.alerts a LEFT JOIN compliance.cases c USING (case_id)
            WHERE {w.sql()} ORDER BY a.window_end DESC, a.alert_id DESC {w.limit(limit)}""", *w.args)
    return [dict(r) for r in rows]


async def case_page(db: Db, *, status: str | None, wallet: str | None, assignee: str | None,
                    after: tuple[datetime, str] | None, limit: int) -> list[Row]:
    w = Where()
    w.when(status, "status = {0}")
    w.when(wallet, "wallet = {0}")
    w.when(assignee, "assignee = {0}")
    if after is not None:
        w.add("(opened_at, case_id) < ({0}, {1})", *after)
    rows = await db.fetch(f"SELECT * FROM compliance.cases WHERE {w.sql()} "
                          f"ORDER BY opened_at DESC, case_id DESC {w.limit(limit)}", *w.args)
    return [dict(r) for r in rows]


async def events_by_id(db: Db, ids: Sequence[str]) -> list[Row]:
    rows = await db.fetch("SELECT * FROM events WHERE event_id = ANY($1::text[]) "
                          "ORDER BY occurred_at, event_id", list(ids))
    return [dict(r) for r in rows]


# --- types ----------------------------------------------------------------------------------


@strawberry.type(description="A rule's finding on one wallet and asset, with the events that are "
                             "its evidence.")
class Alert:
    id: strawberry.ID
    rule: str
    rule_version: str = strawberry.field(description="The version of the rules file that raised it.")
    wallet: strawberry.ID
    asset: str
    severity: str
    status: str | None = strawberry.field(description="Its case's status.")
    case_id: strawberry.ID | None
    evidence: list[strawberry.ID] = strawberry.field(description="Ids of the events in `ledger.events`.")
    window_start: datetime = strawberry.field(description="Event time of the first evidence.")
    window_end: datetime = strawberry.field(description="Event time the rule fired at.")
    raised_at: datetime = strawberry.field(description="When the monitor wrote it (wall clock).")

    @staticmethod
    def from_row(r: Row) -> "Alert":
        return Alert(id=strawberry.ID(r["alert_id"]), rule=r["rule"], rule_version=r["rule_version"],
                     wallet=strawberry.ID(r["wallet"]), asset=r["asset"], severity=r["severity"],
                     status=r["status"], case_id=r["case_id"], evidence=list(r["evidence"]),
                     window_start=r["window_start"], window_end=r["window_end"], raised_at=r["raised_at"])

    @strawberry.field(description="The evidence events as recorded (those the views hold).")
    async def evidence_events(self, info: Info) -> list[AuditEvent]:
        return [AuditEvent.from_row(r) for r in await events_by_id(ctx(info).db, list(self.evidence))]


@strawberry.type
class CaseNote:
    id: strawberry.ID
    author: str
    action: str
    text: str
    at: datetime


@strawberry.type(description="A wallet's alerts under review: `open → investigating → cleared | escalated`.")
class Case:
    id: strawberry.ID
    wallet: strawberry.ID
    status: str
    assignee: str | None
    report_reference: str | None = strawberry.field(description="Set when escalated.")
    opened_at: datetime
    updated_at: datetime

    @staticmethod
    def from_row(r: Row) -> "Case":
        return Case(id=strawberry.ID(r["case_id"]), wallet=strawberry.ID(r["wallet"]), status=r["status"],
                    assignee=r["assignee"], report_reference=r["report_reference"],
                    opened_at=r["opened_at"], updated_at=r["updated_at"])

    @strawberry.field(description="Its alerts, newest first.")
    async def alerts(self, info: Info) -> list[Alert]:
        rows = await alert_page(ctx(info).db, status=None, rule=None, wallet=None, severity=None,
                                case_id=str(self.id), since=None, until=None, after=None, limit=500)
        return [Alert.from_row(r) for r in rows]

    @strawberry.field(description="Actions and notes, oldest first.")
    async def notes(self, info: Info) -> list[CaseNote]:
        rows = await ctx(info).db.fetch(
            "SELECT * FROM compliance.case_notes WHERE case_id = $1 ORDER BY at, note_id", str(self.id))
        return [CaseNote(id=strawberry.ID(r["note_id"]), author=r["author"], action=r["action"],
                         text=r["text"], at=r["at"]) for r in rows]


@strawberry.input(description="All given conditions must hold; times are event times, `since` inclusive.")
class AlertFilter:
    status: str | None = strawberry.field(default=None, description="The case's status.")
    rule: str | None = None
    wallet: strawberry.ID | None = None
    severity: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@strawberry.input
class CaseFilter:
    status: str | None = None
    wallet: strawberry.ID | None = None
    assignee: str | None = None


def _one_of(value: str | None, allowed: Sequence[str], field: str) -> str | None:
    if value is not None and value not in allowed:
        raise invalid_argument(field, f"one of {list(allowed)}")
    return value


def _empty(after: str | None) -> pages.Connection[Any]:
    """What a principal with no alerts in sight gets: the page of an empty list."""
    return pages.connection([], 0, after, lambda r: r, lambda r: "")


@strawberry.type
class ComplianceQuery:
    @strawberry.field(description="Alerts, newest first. Only the compliance and auditor roles see any.")
    async def alerts(self, info: Info, first: int | None = None, after: str | None = None,
                     filter: AlertFilter | None = None) -> pages.Connection[Alert]:
        f = filter or AlertFilter()
        size = pages.page_size(first)
        position = pages.decode("alerts", after, datetime, str)
        status = _one_of(f.status, CASE_STATUSES, "filter.status")
        severity = _one_of(f.severity, SEVERITIES, "filter.severity")
        if not _allowed(info):
            return _empty(after)
        rows = await alert_page(
            ctx(info).db, status=status, rule=None if f.rule is None else name_arg(f.rule, "filter.rule"),
            wallet=None if f.wallet is None else wallet_arg(f.wallet, "filter.wallet"), severity=severity,
            case_id=None, since=utc(f.since, "filter.since"), until=utc(f.until, "filter.until"),
            after=position, limit=size + 1)
        return pages.connection(rows, size, after, Alert.from_row,
                                lambda r: pages.encode("alerts", r["window_end"], r["alert_id"]))

    @strawberry.field(description="A case; null if there is none you may read.")
    async def case(self, info: Info, id: strawberry.ID) -> Case | None:
        case_id = id_arg(id)
        if not _allowed(info):
            return None
        row = await ctx(info).db.fetchrow("SELECT * FROM compliance.cases WHERE case_id = $1", case_id)
        return None if row is None else Case.from_row(dict(row))

    @strawberry.field(description="Cases, newest first. Only the compliance and auditor roles see any.")
    async def cases(self, info: Info, first: int | None = None, after: str | None = None,
                    filter: CaseFilter | None = None) -> pages.Connection[Case]:
        f = filter or CaseFilter()
        size = pages.page_size(first)
        position = pages.decode("cases", after, datetime, str)
        status = _one_of(f.status, CASE_STATUSES, "filter.status")
        if not _allowed(info):
            return _empty(after)
        rows = await case_page(
            ctx(info).db, status=status,
            wallet=None if f.wallet is None else wallet_arg(f.wallet, "filter.wallet"),
            assignee=None if f.assignee is None else name_arg(f.assignee, "filter.assignee"),
            after=position, limit=size + 1)
        return pages.connection(rows, size, after, Case.from_row,
                                lambda r: pages.encode("cases", r["opened_at"], r["case_id"]))


# --- subscription ---------------------------------------------------------------------------


class AlertFeed:
    """One LISTEN on the monitor's channel per process, fanned out to every ``alertRaised``
    subscriber. Each notification is read once (one query for all subscribers)."""

    def __init__(self, dsn: str, database: Db) -> None:
        self.db = database
        self.listener = Listener(dsn, self._notified, application_name="ledgerline-query-alerts",
                                 channel=CHANNEL)
        self._queues: set[asyncio.Queue[Row]] = set()
        self._started: asyncio.Task[None] | None = None
        self._reads: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen from the start, so the first subscriber misses nothing while it connects."""
        self._started = asyncio.create_task(self.listener.start())
        await asyncio.shield(self._started)

    async def stop(self) -> None:
        await self.listener.stop()

    @contextlib.contextmanager
    def _subscribed(self) -> Iterator[asyncio.Queue[Row]]:
        queue: asyncio.Queue[Row] = asyncio.Queue(maxsize=1000)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)

    async def follow(self) -> AsyncGenerator[Row, None]:
        with self._subscribed() as queue:
            if self._started is None:
                self._started = asyncio.create_task(self.listener.start())
            await asyncio.shield(self._started)
            while True:
                yield await queue.get()

    def _notified(self, payload: str) -> None:
        try:
            ids = [i for i in json.loads(payload).get("alerts", []) if isinstance(i, str)]
        except (ValueError, AttributeError):
            return
        if ids and self._queues:
            task = asyncio.get_running_loop().create_task(self._read(ids))
            self._reads.add(task)
            task.add_done_callback(self._reads.discard)

    async def _read(self, ids: list[str]) -> None:
        try:
            rows = await alerts_by_id(self.db, ids)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("cannot read raised alerts (%s)", exc)
            return
        for alert_id in ids:
            row = rows.get(alert_id)
            if row is None:
                continue
            for queue in list(self._queues):
                with contextlib.suppress(asyncio.QueueFull):  # a stalled client misses alerts
                    queue.put_nowait(row)


def _feed(c: Context) -> AlertFeed:
    feed = c.alerts
    if not isinstance(feed, AlertFeed):
        raise RuntimeError("alertRaised needs the process's alert feed")
    return feed


@strawberry.type
class ComplianceSubscription:
    @strawberry.subscription(description="Each alert as the monitor raises it (a fan-in alert again "
                                         "when its window grows). Only the compliance and auditor "
                                         "roles hear any.")
    async def alert_raised(self, info: Info, wallet: strawberry.ID | None = None
                           ) -> AsyncGenerator[Alert, None]:
        c = ctx(info)
        only = None if wallet is None else wallet_arg(wallet, "wallet")
        allowed = may_see_alerts(c.who())
        async for row in _feed(c).follow():
            if allowed and (only is None or row["wallet"] == only):
                yield Alert.from_row(row)

