"""The monitor's SQL: offsets, rule state, alerts and cases, in schema ``compliance`` (or a
backtest's shadow copy of it).

A batch is one transaction: the partition offsets move first, each only if the stored offset is
the one this instance expects (otherwise :class:`OffsetConflict` rolls everything back), then
what changed in the rules' state, the alerts and their cases, then ``NOTIFY``. So the alerts of
a record are written exactly once, whatever crashes in between.

The state is rows, not documents: each movement a window holds is a row of ``state_entries``
(added when it enters, deleted when it leaves the longest window), and a payer's small
``fired`` map a row of ``state``. A batch writes only the rows it changed, each kind with one
statement over arrays (``unnest``), so its cost follows the batch, not the size of the windows.
"""

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg
import msgspec

from compliance.evaluate import Changes, Entry, State
from events.compliance import ACTIVE_CASE_STATUSES, CHANNEL, AlertRaised, notify_payloads

SCHEMA = "compliance"
_CASES = uuid.UUID("0b0f6d57-92a4-4a5e-8f5e-3f1f5a2c9d01")


class OffsetConflict(RuntimeError):
    """Another instance moved a partition's offset: re-read the offsets and seek."""


@dataclass
class Written:
    """What a batch added: alerts new to the table (to publish) and the cases they opened."""

    alerts: list[AlertRaised] = field(default_factory=list)
    cases: list[str] = field(default_factory=list)


def case_id_for(alert_id: str) -> str:
    """The case a wallet's first alert opens is named after that alert: a replay names it alike."""
    return str(uuid.uuid5(_CASES, alert_id))


async def load_offsets(conn: asyncpg.Connection, topic: str, schema: str = SCHEMA) -> dict[int, int]:
    rows = await conn.fetch(f"SELECT partition, next_offset FROM {schema}.offsets WHERE topic = $1", topic)
    return {r["partition"]: r["next_offset"] for r in rows}


async def load_state(conn: asyncpg.Connection, schema: str = SCHEMA) -> State:
    fired = await conn.fetch(f"SELECT key, slot FROM {schema}.state")
    entries = await conn.fetch(f"SELECT key, event_id, at, amount, counterparty FROM {schema}.state_entries")
    return State.restored(((r["key"], r["slot"]) for r in fired),
                          (Entry(r["key"], r["event_id"], r["at"], int(r["amount"]), r["counterparty"])
                           for r in entries))


async def write_batch(conn: asyncpg.Connection, topic: str,
                      offsets: Mapping[int, tuple[int | None, int]],
                      changes: Changes, alerts: Sequence[AlertRaised],
                      schema: str = SCHEMA, notify: bool = True) -> Written:
    """Offsets (partition -> (expected, next)), the state's changes, alerts; one transaction.
    Raises :class:`OffsetConflict` when an offset is not the expected one."""
    async with conn.transaction():
        await _move_offsets(conn, topic, offsets, schema)
        await _write_state(conn, changes, schema)
        merged = merge_alerts(alerts)
        written = await _write_alerts(conn, merged, schema)
        if notify and merged:
            await conn.execute(
                "SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS n(p, i) ORDER BY i",
                CHANNEL, list(notify_payloads(sorted(a.id for a in merged), written.cases)))
    return written


def merge_alerts(alerts: Sequence[AlertRaised]) -> list[AlertRaised]:
    """One alert per id, in order of first appearance: a fan-in window's alert raised again in
    the batch with new evidence is one alert with the evidence of all."""
    first: dict[str, AlertRaised] = {}
    evidence: dict[str, set[str]] = {}
    for a in alerts:
        was = first.get(a.id)
        if was is None:
            first[a.id] = a
        else:
            evidence.setdefault(a.id, set(was.evidence)).update(a.evidence)
            if a.window_end > was.window_end:
                first[a.id] = msgspec.structs.replace(was, window_end=a.window_end)
    return [a if a.id not in evidence
            else msgspec.structs.replace(a, evidence=tuple(sorted(evidence[a.id]))) for a in first.values()]


async def _move_offsets(conn: asyncpg.Connection, topic: str,
                        offsets: Mapping[int, tuple[int | None, int]], schema: str) -> None:
    for partition, (expected, nxt) in sorted(offsets.items()):
        if expected is None:
            done = await conn.fetchval(
                f"INSERT INTO {schema}.offsets (topic, partition, next_offset) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING RETURNING 1", topic, partition, nxt)
        else:
            done = await conn.fetchval(
                f"UPDATE {schema}.offsets SET next_offset = $3, updated_at = now() "
                "WHERE topic = $1 AND partition = $2 AND next_offset = $4 RETURNING 1",
                topic, partition, nxt, expected)
        if done is None:
            raise OffsetConflict(f"{topic}[{partition}] is not at {expected}")


async def _write_state(conn: asyncpg.Connection, changes: Changes, schema: str) -> None:
    if changes.removed:
        keys, ids = zip(*sorted(changes.removed), strict=True)
        await conn.execute(
            f"DELETE FROM {schema}.state_entries e USING unnest($1::text[], $2::text[]) AS g(key, event_id) "
            "WHERE e.key = g.key AND e.event_id = g.event_id", list(keys), list(ids))
    if changes.added:
        added = list(changes.added.values())
        await conn.execute(
            f"INSERT INTO {schema}.state_entries (key, event_id, at, amount, counterparty) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[]) "
            "ON CONFLICT (key, event_id) DO NOTHING",
            [e.key for e in added], [e.event_id for e in added], [e.at for e in added],
            [str(e.amount) for e in added], [e.counterparty for e in added])
    kept = {k: v.decode() for k, v in changes.slots.items() if v is not None}
    gone = [k for k, v in changes.slots.items() if v is None]
    if kept:
        await conn.execute(
            f"INSERT INTO {schema}.state (key, slot) SELECT * FROM unnest($1::text[], $2::text[]) "
            "ON CONFLICT (key) DO UPDATE SET slot = EXCLUDED.slot", list(kept), list(kept.values()))
    if gone:
        await conn.execute(f"DELETE FROM {schema}.state WHERE key = ANY($1::text[])", gone)


async def _write_alerts(conn: asyncpg.Connection, alerts: Sequence[AlertRaised], schema: str) -> Written:
    """New alerts join their wallet's active case (opening one if there is none); an alert
    raised again (a fan-in window that grew) only gains evidence: rows of ``alert_evidence``,
    all of a batch in one statement, never a rewrite of the row's growing array.
    New alerts are rare next to events, so a statement or two per new alert costs little."""
    written = Written()
    if not alerts:
        return written
    known = {r[0] for r in await conn.fetch(
        f"SELECT alert_id FROM {schema}.alerts WHERE alert_id = ANY($1::text[])", [a.id for a in alerts])}
    grown = [a for a in alerts if a.id in known]
    if grown:
        pairs = [(a.id, e) for a in grown for e in a.evidence]
        await conn.execute(
            f"INSERT INTO {schema}.alert_evidence (alert_id, event_id) "
            "SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
            [p[0] for p in pairs], [p[1] for p in pairs])
        await conn.execute(
            f"UPDATE {schema}.alerts a SET window_end = g.window_end "
            "FROM unnest($1::text[], $2::timestamptz[]) AS g(alert_id, window_end) "
            "WHERE a.alert_id = g.alert_id AND a.window_end < g.window_end",
            [a.id for a in grown], [a.window_end for a in grown])
    for a in alerts:
        if a.id in known:
            continue
        # FOR SHARE: a case being closed meanwhile is waited for, then seen closed.
        case = await conn.fetchval(
            f"SELECT case_id FROM {schema}.cases WHERE wallet = $1 AND status = ANY($2::text[]) FOR SHARE",
            a.wallet, list(ACTIVE_CASE_STATUSES))
        if case is None:
            case = case_id_for(a.id)
            await conn.execute(
                f"INSERT INTO {schema}.cases (case_id, wallet, opened_at) VALUES ($1, $2, $3)",
                case, a.wallet, a.window_end)
            written.cases.append(case)
        await conn.execute(
            f"INSERT INTO {schema}.alerts (alert_id, rule, rule_version, signature, wallet, asset, "
            "severity, evidence, window_start, window_end, case_id) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            a.id, a.rule, a.rule_version, a.signature, a.wallet, a.asset, a.severity, sorted(a.evidence),
            a.window_start, a.window_end, case)
        written.alerts.append(_with_case(a, case))
    return written


def _with_case(a: AlertRaised, case: str) -> AlertRaised:
    return msgspec.structs.replace(a, case_id=case)


async def unpublished(conn: asyncpg.Connection, schema: str = SCHEMA) -> list[AlertRaised]:
    rows = await conn.fetch(
        f"SELECT * FROM {schema}.alerts WHERE NOT published ORDER BY window_end, alert_id LIMIT 1000")
    return [alert_from_row(r) for r in rows]


async def mark_published(conn: asyncpg.Connection, ids: Sequence[str], schema: str = SCHEMA) -> None:
    await conn.execute(f"UPDATE {schema}.alerts SET published = true WHERE alert_id = ANY($1::text[])",
                       list(ids))


def alert_from_row(r: Mapping[str, object]) -> AlertRaised:
    evidence = r["evidence"]
    assert isinstance(evidence, list)
    return AlertRaised(
        id=str(r["alert_id"]), rule=str(r["rule"]), rule_version=str(r["rule_version"]),
        wallet=str(r["wallet"]), asset=str(r["asset"]), severity=str(r["severity"]),
        evidence=tuple(evidence), window_start=r["window_start"],  # type: ignore[arg-type]
        window_end=r["window_end"], case_id=None if r["case_id"] is None else str(r["case_id"]),  # type: ignore[arg-type]
        signature=str(r["signature"]),
    )
