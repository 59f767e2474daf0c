"""Set-based writes of one batch of row changes, its offsets and its NOTIFY, in one transaction.

One statement per table per batch (``INSERT … SELECT FROM unnest(…) ON CONFLICT …``), text
``COPY`` for the append-only tables. Money and times travel as text (see :mod:`projector.wire`)
and are cast by the server: no value passes through a float, and Python does the least work.

Balances are sums of changes (:mod:`projector.fold`): the balance statement adds the batch's
change to each row and returns the result, from which each ledger entry's balance after is
known before the entries are copied; a balance that would go below zero at any event refuses
the batch (:class:`NegativeBalance`), which the worker splits until that event is alone.
"""

import contextlib
from collections.abc import Iterable, Sequence

import asyncpg
from asyncpg.transaction import Transaction

from events import readmodel
from events.readmodel import (
    CHANNEL,
    COMMAND_RANK,
    FINAL_COMMAND_STATUSES,
    TRADE_RANK,
    TRANSFER_RANK,
)
from projector import chain, wire
from projector.fold import TRADE_TIMES, Row, RowChanges

#: Taken shared by every batch of the live projector, exclusively by a rebuild's swap.
SWAP_LOCK = 0x1ED6E5


class OffsetConflict(RuntimeError):
    """Another projector instance has moved this partition's offset: this batch is stale."""


class NegativeBalance(ValueError):
    """An event would take a balance below zero: the batch is refused, like a constraint."""


def _col(rows: Sequence[Row], name: str) -> str:
    """One column of ``rows`` as an array literal (see :func:`projector.wire.array`)."""
    return wire.array([r.get(name) for r in rows])


def _times(rows: Sequence[Row], name: str) -> str:
    return wire.array([wire.ts(r.get(name)) for r in rows])


def _unnest(*types: str) -> str:
    """``unnest`` over one array literal per column, bound as text and parsed by the server."""
    return f"unnest({', '.join(f'${n}::text::{t}[]' for n, t in enumerate(types, 1))})"


_ASSETS = f"""
INSERT INTO assets (symbol, name, decimals, issuer, max_supply, supply, burned, registered_at)
SELECT * FROM {_unnest("text", "text", "smallint", "text", "numeric", "numeric", "numeric",
                       "timestamptz")}
ON CONFLICT (symbol) DO NOTHING
"""

# Running sums, like balances: a burn's transaction writes the asset's SupplyReduced.
_SUPPLY = f"""
UPDATE assets SET supply = assets.supply + u.supply, burned = assets.burned + u.burned,
                  updated_at = now()
FROM {_unnest("text", "numeric", "numeric")} AS u(symbol, supply, burned)
WHERE assets.symbol = u.symbol
"""

_WALLETS = f"""
INSERT INTO wallets (wallet, first_seen_at)
SELECT * FROM {_unnest("text", "timestamptz")}
ON CONFLICT (wallet) DO UPDATE SET first_seen_at = LEAST(wallets.first_seen_at, EXCLUDED.first_seen_at)
WHERE EXCLUDED.first_seen_at < wallets.first_seen_at
"""

# Freezes of one wallet come from one partition, in order: the last one in a batch is current.
_FREEZES = f"""
UPDATE wallets SET frozen = u.frozen, freeze_reason = u.reason, frozen_changed_at = u.at,
                   updated_at = now()
FROM {_unnest("text", "boolean", "text", "timestamptz")} AS u(wallet, frozen, reason, at)
WHERE wallets.wallet = u.wallet
"""

# The batch's change added to each balance; the results come back. Not an upsert: PostgreSQL
# checks a row's CHECK constraints before ON CONFLICT, so a change below zero would be refused
# even where the balance covers it. The wallet's partition has one writer (the offsets are
# fenced first), so nothing inserts the same row in between.
_BALANCES = f"""
WITH u AS (SELECT * FROM {_unnest("text", "text", "numeric", "numeric", "timestamptz")}
           AS u(wallet, asset, available, held, updated_at)),
moved AS (
    UPDATE wallet_balances b SET available = b.available + u.available, held = b.held + u.held,
                                 updated_at = u.updated_at
    FROM u WHERE b.wallet = u.wallet AND b.asset = u.asset
    RETURNING b.wallet, b.asset, b.available, b.held
), added AS (
    INSERT INTO wallet_balances (wallet, asset, available, held, updated_at)
    SELECT * FROM u WHERE NOT EXISTS (
        SELECT 1 FROM wallet_balances b WHERE b.wallet = u.wallet AND b.asset = u.asset)
    RETURNING wallet, asset, available, held
)
SELECT wallet, asset, available::text, held::text FROM moved
UNION ALL SELECT wallet, asset, available::text, held::text FROM added
"""

_RANKED = """
status = CASE WHEN EXCLUDED.status_rank > {t}.status_rank THEN EXCLUDED.status ELSE {t}.status END,
reason = CASE WHEN EXCLUDED.status_rank > {t}.status_rank
              THEN COALESCE(EXCLUDED.reason, {t}.reason) ELSE COALESCE({t}.reason, EXCLUDED.reason) END,
status_rank = GREATEST(EXCLUDED.status_rank, {t}.status_rank),
updated_at = now()
"""

_TRANSFER_COLUMNS = (
    "command_id", "source", "target", "asset", "amount", "memo",
    "initiated_at", "confirmed_at", "completed_at", "failed_at",
)

# Final only once both halves are in: the table's or the batch's time of each (see fold).
_BOTH_HALVES = """
status = CASE WHEN {done} THEN '{final}' WHEN EXCLUDED.status_rank > {t}.status_rank
              THEN EXCLUDED.status ELSE {t}.status END,
reason = CASE WHEN EXCLUDED.status_rank > {t}.status_rank
              THEN COALESCE(EXCLUDED.reason, {t}.reason) ELSE COALESCE({t}.reason, EXCLUDED.reason) END,
status_rank = CASE WHEN {done} THEN {rank} ELSE GREATEST(EXCLUDED.status_rank, {t}.status_rank) END,
updated_at = now()
"""


def _both(t: str, one: str, other: str, final: str, rank: int) -> str:
    done = " AND ".join(f"COALESCE({t}.{c}, EXCLUDED.{c}) IS NOT NULL" for c in (one, other))
    return _BOTH_HALVES.format(t=t, done=done, final=final, rank=rank)


_TRANSFERS = f"""
INSERT INTO transfers (transfer_id, command_id, source, target, asset, amount, memo, status,
                       status_rank, reason, initiated_at, confirmed_at, completed_at, failed_at)
SELECT * FROM {_unnest("text", "text", "text", "text", "text", "numeric", "text", "text", "smallint", "text",
                       "timestamptz", "timestamptz", "timestamptz", "timestamptz")}
ON CONFLICT (transfer_id) DO UPDATE SET
{", ".join(f"{c} = COALESCE(transfers.{c}, EXCLUDED.{c})" for c in _TRANSFER_COLUMNS)},
{_both("transfers", "confirmed_at", "completed_at", "completed", TRANSFER_RANK["completed"])}
RETURNING command_id, status
"""

_TRADE_COLUMNS = (
    "command_id", "seller", "buyer", "asset", "quantity", "payment_asset", "price", "failed_party",
    *TRADE_TIMES,
)

_TRADES = f"""
INSERT INTO trades (trade_id, {", ".join(_TRADE_COLUMNS)}, status, status_rank, reason)
SELECT * FROM {_unnest("text", "text", "text", "text", "text", "numeric", "text", "numeric", "text",
                       *["timestamptz"] * len(TRADE_TIMES), "text", "smallint", "text")}
ON CONFLICT (trade_id) DO UPDATE SET
{", ".join(f"{c} = COALESCE(trades.{c}, EXCLUDED.{c})" for c in _TRADE_COLUMNS)},
{_both("trades", "transferred_at", "settled_at", "settled", TRADE_RANK["settled"])}
RETURNING command_id, status
"""

_COMMANDS = f"""
INSERT INTO command_log (command_id, type, principal, correlation_id, status, status_rank,
                         reason, created_at)
SELECT * FROM {_unnest("text", "text", "text", "text", "text", "smallint", "text", "timestamptz")}
ON CONFLICT (command_id) DO UPDATE SET
type = COALESCE(command_log.type, EXCLUDED.type),
correlation_id = COALESCE(command_log.correlation_id, EXCLUDED.correlation_id),
created_at = LEAST(command_log.created_at, EXCLUDED.created_at),
{_RANKED.format(t="command_log")}
"""

# A re-driven record that fails again replaces its first letter: one row per position.
_DEAD_LETTERS = f"""
INSERT INTO dead_letters (topic, partition, "offset", cause, type, key, error, appended_at)
SELECT * FROM {_unnest("text", "int", "bigint", "text", "text", "text", "text", "timestamptz")}
ON CONFLICT (topic, partition, "offset") DO UPDATE SET
cause = EXCLUDED.cause, type = EXCLUDED.type, key = EXCLUDED.key, error = EXCLUDED.error,
appended_at = EXCLUDED.appended_at, updated_at = now()
"""

# A wallet's personal data erased: what the views show of its memos goes too (after this batch's
# upserts, so a memo written in the same batch goes as well).
_ERASE_MEMOS = """
UPDATE transfers SET memo = $2
WHERE source = ANY($1::text::text[]) AND memo IS NOT NULL AND memo <> '' AND memo <> $2
"""

_RESOLVED = f"""
DELETE FROM dead_letters d USING {_unnest("text", "int", "bigint")} AS u(topic, partition, o)
WHERE d.topic = u.topic AND d.partition = u.partition AND d."offset" = u.o
"""

# The commands whose transfer or trade just became final (both halves in): their own events
# only ever say "confirmed". Returns the ones this batch made final.
_FINISHED = f"""
UPDATE command_log c SET status = u.status, status_rank = {COMMAND_RANK["completed"]}, updated_at = now()
FROM unnest($1::text[], $2::text[]) AS u(command_id, status)
WHERE c.command_id = u.command_id AND c.status_rank < {COMMAND_RANK["completed"]}
RETURNING c.command_id
"""

# Burns with one half in this batch whose other half the views already hold.
_BURNED = f"""
UPDATE command_log c SET status = 'completed', status_rank = {COMMAND_RANK["completed"]},
                         updated_at = now()
WHERE c.command_id = ANY($1::text[]) AND c.status_rank < {COMMAND_RANK["completed"]}
  AND (SELECT count(DISTINCT e.type) FROM events e WHERE e.command_id = c.command_id
       AND e.type IN ('TokensBurned', 'SupplyReduced')) = 2
RETURNING c.command_id
"""

# Append-only tables are loaded with COPY. COPY cannot skip conflicts, and needs not: the offsets
# are moved (and fenced) first in the same transaction, so no record is ever written twice.
_ENTRY_COLUMNS = ("event_id", "wallet", "asset", "delta", "available_after", "held_after", "kind",
                  "reference", "occurred_at")
_EVENT_COLUMNS = ("event_id", "type", "version", "key", "command_id", "correlation_id", "principal",
                  "occurred_at", "topic", "partition", "offset", "payload",
                  "chain_writer", "chain_seq", "chain_prev", "chain_sig")

# Every partition of a batch moved in one statement: each row only from the offset this instance
# expects (an update) or, where it expects none, created (an insert that loses to a concurrent
# one). Fewer rows moved than partitions given means another instance got there first.
_OFFSETS = """
WITH u AS (SELECT * FROM unnest($3::int[], $4::bigint[], $5::bigint[]) AS u(partition, expected, next)),
moved AS (
    UPDATE projection_offsets o SET next_offset = u.next, updated_at = now() FROM u
    WHERE o.projection = $1 AND o.topic = $2 AND o.partition = u.partition
      AND o.next_offset = u.expected
    RETURNING o.partition
), created AS (
    INSERT INTO projection_offsets (projection, topic, partition, next_offset)
    SELECT $1, $2, u.partition, u.next FROM u WHERE u.expected IS NULL
    ON CONFLICT DO NOTHING
    RETURNING partition
)
SELECT array_agg(partition) FROM (SELECT partition FROM moved UNION ALL SELECT partition FROM created) m
"""


async def load_offsets(conn: asyncpg.Connection, projection: str, topic: str) -> dict[int, int]:
    rows = await conn.fetch(
        "SELECT partition, next_offset FROM projection_offsets WHERE projection = $1 AND topic = $2",
        projection,
        topic,
    )
    return {r["partition"]: r["next_offset"] for r in rows}


async def dead_letter_count(conn: asyncpg.Connection) -> int:
    """Records of the event log the projector could not apply (rows of ``dead_letters``)."""
    count: int = await conn.fetchval("SELECT count(*) FROM dead_letters")
    return count


async def write_batch(
    conn: asyncpg.Connection,
    changes: RowChanges,
    projection: str,
    topic: str,
    offsets: dict[int, tuple[int | None, int]],
    *,
    swap_lock: bool = True,
) -> None:
    """Write ``changes`` and move each partition's offset from ``expected`` to ``next``.

    ``offsets`` maps partition -> (expected stored offset or None for none yet, next offset).
    Raises :class:`OffsetConflict` (and rolls back) when a stored offset is not the expected one.
    """
    async with _Transaction(conn, swap_lock) as transaction:
        partitions = sorted(offsets)
        moved = await conn.fetchval(_OFFSETS, projection, topic, partitions,
                                    [offsets[p][0] for p in partitions],
                                    [offsets[p][1] for p in partitions])
        stale = sorted(set(partitions) - set(moved or ()))
        if stale:
            raise OffsetConflict(", ".join(
                f"{topic}[{p}] no longer stored at {offsets[p][0]}" if offsets[p][0] is not None
                else f"{topic}[{p}] stored since this instance read it" for p in stale))
        finished = await _write_rows(conn, changes)
        transaction.notifications = list(_notifications(changes, finished))


class _Transaction:
    """A batch's transaction, in two round trips fewer than ``conn.transaction()`` and a
    statement each for the swap lock and the NOTIFYs: the lock goes with ``BEGIN``, the NOTIFYs
    (delivered at commit, in order) with ``COMMIT``, each pair as one simple query. A batch is
    otherwise about a dozen round trips, each of which waits for a core on a busy machine (live
    batches are small: see docs/projector.md, "What a batch costs"). Inside a transaction the
    caller holds (tests, a rebuild), a savepoint and separate statements, as before."""

    def __init__(self, conn: asyncpg.Connection, swap_lock: bool) -> None:
        self.conn = conn
        self.lock = f"SELECT pg_advisory_xact_lock_shared({SWAP_LOCK:d})" if swap_lock else None
        self.notifications: list[str] = []
        self.nested: Transaction | None = None

    async def __aenter__(self) -> "_Transaction":
        if self.conn.is_in_transaction():
            self.nested = self.conn.transaction()
            await self.nested.start()
            if self.lock:
                await self.conn.execute(self.lock)
        else:
            await self.conn.execute(f"BEGIN; {self.lock}" if self.lock else "BEGIN")
        return self

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            await self._rollback()
            return
        notify = _notify_statement(self.notifications)
        try:
            if self.nested is not None:
                if notify:
                    await self.conn.execute(notify)
                await self.nested.commit()
            else:
                await self.conn.execute(f"{notify}; COMMIT" if notify else "COMMIT")
        except BaseException:
            await self._rollback()
            raise

    async def _rollback(self) -> None:
        if self.nested is not None:
            if not self.conn.is_closed():
                await self.nested.rollback()
            return
        # A failed statement leaves the transaction aborted; a failed COMMIT has ended it (then
        # ROLLBACK only warns). A connection that cannot take ROLLBACK (closed, or a statement
        # cancelled mid-way) is reset or dropped by the pool it goes back to.
        if not self.conn.is_closed():
            with contextlib.suppress(asyncpg.InterfaceError, asyncpg.PostgresError, OSError):
                await self.conn.execute("ROLLBACK")


def _literal(text: str) -> str:
    """A SQL string literal, in the escape syntax (``E'…'``), which reads the same whatever
    ``standard_conforming_strings`` says."""
    if "\x00" in text:
        raise ValueError("a NOTIFY payload cannot hold a NUL character")
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _notify_statement(payloads: list[str]) -> str:
    """The NOTIFYs of a batch, in order, as one statement without parameters."""
    if not payloads:
        return ""
    array = ", ".join(map(_literal, payloads))
    return (f"SELECT pg_notify({_literal(CHANNEL)}, n) FROM unnest(ARRAY[{array}]::text[]) "
            "WITH ORDINALITY AS t(n, i) ORDER BY i")


async def _write_rows(conn: asyncpg.Connection, c: RowChanges) -> list[str]:
    """Write the rows; returns the commands this batch made final through their transfer, trade
    or burn's other half, already in the views."""
    if c.assets:
        rows = list(c.assets.values())
        await conn.execute(
            _ASSETS, _col(rows, "symbol"), _col(rows, "name"), _col(rows, "decimals"),
            _col(rows, "issuer"), _col(rows, "max_supply"), _col(rows, "supply"),
            _col(rows, "burned"), _times(rows, "registered_at"),
        )
    if c.supply:
        rows = list(c.supply.values())
        await conn.execute(_SUPPLY, _col(rows, "symbol"), _col(rows, "supply"),
                           _col(rows, "burned"))
    if c.wallets:
        rows = list(c.wallets.values())
        await conn.execute(_WALLETS, _col(rows, "wallet"), _times(rows, "first_seen_at"))
    if c.freezes:
        rows = list(c.freezes.values())
        await conn.execute(_FREEZES, _col(rows, "wallet"), _col(rows, "frozen"),
                           _col(rows, "freeze_reason"), _times(rows, "frozen_changed_at"))
    if c.balances:
        rows = list(c.balances.values())
        balances = await conn.fetch(
            _BALANCES, _col(rows, "wallet"), _col(rows, "asset"), _col(rows, "available"),
            _col(rows, "held"), _times(rows, "updated_at"),
        )
        _entries_after(c, balances)
    finished: dict[str, str] = {}
    if c.transfers:
        rows = list(c.transfers.values())
        finished.update(await _final_commands(conn, (
            _TRANSFERS, _col(rows, "transfer_id"), _col(rows, "command_id"), _col(rows, "source"),
            _col(rows, "target"), _col(rows, "asset"), _col(rows, "amount"),
            _col(rows, "memo"), _col(rows, "status"), _col(rows, "status_rank"),
            _col(rows, "reason"), _times(rows, "initiated_at"), _times(rows, "confirmed_at"),
            _times(rows, "completed_at"), _times(rows, "failed_at"),
        ), "completed"))
    if c.erased:
        await conn.execute(_ERASE_MEMOS, wire.array(c.erased), readmodel.MEMO_ERASED)
    if c.trades:
        rows = list(c.trades.values())
        finished.update(await _final_commands(conn, (
            _TRADES, _col(rows, "trade_id"),
            *(_times(rows, n) if n in TRADE_TIMES else _col(rows, n)
              for n in _TRADE_COLUMNS),
            _col(rows, "status"), _col(rows, "status_rank"), _col(rows, "reason"),
        ), "settled"))
    if c.commands:
        rows = list(c.commands.values())
        await conn.execute(
            _COMMANDS, _col(rows, "command_id"), _col(rows, "type"), _col(rows, "principal"),
            _col(rows, "correlation_id"), _col(rows, "status"), _col(rows, "status_rank"),
            _col(rows, "reason"), _times(rows, "created_at"),
        )
    if c.resolved:
        await conn.execute(_RESOLVED, wire.array(p.topic for p in c.resolved),
                           wire.array(p.partition for p in c.resolved),
                           wire.array(p.offset for p in c.resolved))
    if c.dead_letters:
        rows = c.dead_letters
        await conn.execute(
            _DEAD_LETTERS, _col(rows, "topic"), _col(rows, "partition"), _col(rows, "offset"),
            _col(rows, "cause"), _col(rows, "type"), _col(rows, "key"), _col(rows, "error"),
            _times(rows, "appended_at"),
        )
    made_final: list[str] = []
    # Mostly both halves come in one batch, and the batch's own rows made the command final.
    ids = sorted(i for i in finished if i not in c.commands
                 or c.commands[i]["status"] not in FINAL_COMMAND_STATUSES)
    if ids:
        made_final = [r[0] for r in await conn.fetch(_FINISHED, ids, [finished[i] for i in ids])]
    if c.entries:
        await _copy(conn, "ledger_entries", _ENTRY_COLUMNS, _entry_lines(c.entries))
    if c.events:
        await _copy(conn, "events", _EVENT_COLUMNS, _event_lines(c.events))
    halves = [k for k, h in c.burns.items() if len(h) == 1]
    if halves:  # after the events are in, this batch's half among them
        made_final += [r[0] for r in await conn.fetch(_BURNED, halves)]
    return made_final


async def _final_commands(conn: asyncpg.Connection, statement: tuple[str, ...],
                          final: str) -> dict[str, str]:
    """Run a transfers or trades upsert; the commands of the rows that are now ``final``."""
    return {r["command_id"]: final for r in await conn.fetch(*statement)
            if r["status"] == final and r["command_id"] is not None}


def _entries_after(c: RowChanges, balances: list[asyncpg.Record]) -> None:
    """Each entry's balance after its event: the balance before the batch (the returned one
    less the batch's change) plus the change up to the event; refused below zero."""
    before = {}
    for wallet, asset, available, held in balances:
        change = c.balances[(wallet, asset)]
        before[(wallet, asset)] = (int(available) - change["available"], int(held) - change["held"])
    for e in c.entries:
        available, held = before[(e["wallet"], e["asset"])]
        e["available_after"] = available + e["available_change"]
        e["held_after"] = held + e["held_change"]
        if e["available_after"] < 0 or e["held_after"] < 0:
            raise NegativeBalance(
                f"balance of {e['wallet']} in {e['asset']} would be negative at event "
                f"{e['event_id']} (available {e['available_after']}, held {e['held_after']})")


async def _copy(conn: asyncpg.Connection, table: str, columns: Sequence[str], lines: list[str]) -> None:
    await conn.copy_to_table(table, source=wire.source("".join(lines).encode()), columns=columns,
                             format="text")


# One f-string per row: the cheapest way Python has to write them. Numbers, times and the
# projector's own words (kind) are written as they are; text from outside goes through fields().
def _entry_lines(entries: list[Row]) -> list[str]:
    lines = []
    for r in entries:
        event_id, wallet, asset, reference = wire.fields(r["event_id"], r["wallet"], r["asset"],
                                                         r["reference"])
        lines.append(f"{event_id}\t{wallet}\t{asset}\t{r['delta']}\t{r['available_after']}\t"
                     f"{r['held_after']}\t{r['kind']}\t{reference}\t{wire.ts(r['occurred_at'])}\n")
    return lines


def _event_lines(events: list[Row]) -> list[str]:
    lines = []
    for r in events:
        event_id, type_, key, command, correlation, principal, topic, payload = wire.fields(
            r["event_id"], r["type"], r["key"], r["command_id"], r["correlation_id"],
            r["principal"], r["topic"], r["payload"])
        # The hash chain's fields (projector.chain); rows folded without them have none.
        writer = r.get("chain_writer")
        link = "\\N\t\\N\t\\N\t\\N" if writer is None else (
            f"{wire.escape(writer)}\t{r['chain_seq']}\t{chain.bytea(r['chain_prev'])}\t"
            f"{chain.bytea(r['chain_sig'])}")
        lines.append(f"{event_id}\t{type_}\t{r['version']}\t{key}\t{command}\t{correlation}\t"
                     f"{principal}\t{wire.ts(r['occurred_at'])}\t{topic}\t{r['partition']}\t"
                     f"{r['offset']}\t{payload}\t{link}\n")
    return lines


def _notifications(c: RowChanges, finished: list[str]) -> Iterable[str]:
    """What changed, for listeners: final command ids, wallets, transfers, trades."""
    final = [k for k, r in c.commands.items() if r["status"] in FINAL_COMMAND_STATUSES]
    final += finished  # none of them final in the batch's own rows: those only say confirmed
    yield from readmodel.payloads("commands", final)
    yield from readmodel.payloads("wallets", sorted({w for w, _ in c.balances} | set(c.freezes)))
    yield from readmodel.payloads("transfers", list(c.transfers))
    yield from readmodel.payloads("trades", list(c.trades))
