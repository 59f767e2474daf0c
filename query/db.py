"""Plain query functions over the views; the resolvers stay thin.

Every function takes a ``Db`` (an asyncpg pool, or anything with the same three methods) and
answers plain rows. Lookups by id are batched (``= ANY($1)``) so DataLoaders can call them once
per request; lists are keyset pages (``ORDER BY sort key, id`` with ``(sort key, id) > cursor``)
and take the principal's scope as a filter, so a cursor never widens what a principal sees.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

Row = dict[str, Any]


class Db(Protocol):
    async def fetch(self, query: str, *args: Any) -> list[Any]: ...
    async def fetchrow(self, query: str, *args: Any) -> Any: ...
    async def fetchval(self, query: str, *args: Any) -> Any: ...


ASSET_COLUMNS = "a.symbol, a.name, a.decimals, a.issuer, a.max_supply, a.supply, a.registered_at"


@dataclass
class Where:
    """A conjunction of SQL conditions with numbered parameters, built one condition at a time."""

    clauses: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)

    def add(self, condition: str, *values: Any) -> None:
        """``condition`` names its parameters ``{0}``, ``{1}``, … in the order of ``values``."""
        refs = []
        for value in values:
            self.args.append(value)
            refs.append(f"${len(self.args)}")
        self.clauses.append(condition.format(*refs))

    def when(self, value: Any, condition: str) -> None:
        if value is not None:
            self.add(condition, value)

    def sql(self) -> str:
        return " AND ".join(self.clauses) or "TRUE"

    def limit(self, n: int) -> str:
        self.args.append(n)
        return f"LIMIT ${len(self.args)}"


# --- lookups by id, batched for DataLoaders -------------------------------------------------

async def assets_by_symbol(db: Db, symbols: Sequence[str]) -> dict[str, Row]:
    rows = await db.fetch(f"SELECT {ASSET_COLUMNS} FROM assets a WHERE a.symbol = ANY($1)", list(symbols))
    return {r["symbol"]: dict(r) for r in rows}


async def balances_by_wallet(db: Db, wallets: Sequence[str]) -> dict[str, list[Row]]:
    rows = await db.fetch(
        f"""SELECT b.wallet, b.available, b.held, b.updated_at, {ASSET_COLUMNS}
            FROM wallet_balances b JOIN assets a ON a.symbol = b.asset
            WHERE b.wallet = ANY($1) ORDER BY b.wallet, b.asset""",
        list(wallets),
    )
    out: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        out[r["wallet"]].append(dict(r))
    return out


async def transfers_by_id(db: Db, ids: Sequence[str]) -> dict[str, Row]:
    rows = await db.fetch("SELECT * FROM transfers WHERE transfer_id = ANY($1)", list(ids))
    return {r["transfer_id"]: dict(r) for r in rows}


async def trades_by_id(db: Db, ids: Sequence[str]) -> dict[str, Row]:
    rows = await db.fetch("SELECT * FROM trades WHERE trade_id = ANY($1)", list(ids))
    return {r["trade_id"]: dict(r) for r in rows}


async def commands_by_id(db: Db, ids: Sequence[str]) -> dict[str, Row]:
    rows = await db.fetch("SELECT * FROM command_log WHERE command_id = ANY($1)", list(ids))
    return {r["command_id"]: dict(r) for r in rows}


async def steps_by_correlation(db: Db, ids: Sequence[str]) -> dict[str, list[Row]]:
    """The events of each transfer or trade, in the order they were decided."""
    # One transaction writes a transfer's debit and its credit into two partitions at one time:
    # offsets of different partitions say nothing of order, the writer's ids (counting up) do.
    rows = await db.fetch(
        """SELECT event_id, type, key, correlation_id, occurred_at FROM events
           WHERE correlation_id = ANY($1) ORDER BY occurred_at, event_id""",
        list(ids),
    )
    out: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        out[r["correlation_id"]].append(dict(r))
    return out


# --- point in time and statements -----------------------------------------------------------

_LAST_ENTRY = """
SELECT le.available_after, le.held_after, le.occurred_at FROM ledger_entries le
JOIN events ev ON ev.event_id = le.event_id
WHERE le.wallet = $1 AND le.asset = $2 AND le.occurred_at {op} $3
ORDER BY le.occurred_at DESC, ev."offset" DESC LIMIT 1
"""


async def balance_at(db: Db, wallet: str, asset: str, at: datetime, *, inclusive: bool = True) -> Row | None:
    """The wallet's last ledger entry at ``at`` (or strictly before it), None if there is none."""
    row = await db.fetchrow(_LAST_ENTRY.format(op="<=" if inclusive else "<"), wallet, asset, at)
    return None if row is None else dict(row)


async def statement(db: Db, wallet: str, asset: str, start: datetime | None, end: datetime | None,
                    after: tuple[datetime, int] | None, limit: int) -> list[Row]:
    w = Where()
    w.add("le.wallet = {0} AND le.asset = {1}", wallet, asset)
    w.when(start, "le.occurred_at >= {0}")
    w.when(end, "le.occurred_at < {0}")
    if after is not None:
        w.add('(le.occurred_at, ev."offset") > ({0}, {1})', *after)
    rows = await db.fetch(
        f"""SELECT le.*, ev."offset" FROM ledger_entries le JOIN events ev ON ev.event_id = le.event_id
            WHERE {w.sql()} ORDER BY le.occurred_at, ev."offset" {w.limit(limit)}""",
        *w.args,
    )
    return [dict(r) for r in rows]


# --- pages ----------------------------------------------------------------------------------

def _scope(w: Where, scope: frozenset[str] | None, *columns: str) -> None:
    """Only rows one of ``scope``'s wallets takes part in (None: a role that sees everything)."""
    if scope is not None:
        either = " OR ".join(f"{c} = ANY({{0}})" for c in columns)
        w.add(f"({either})", sorted(scope))


async def transfers(db: Db, *, scope: frozenset[str] | None, status: str | None, asset: str | None,
                    wallet: str | None, since: datetime | None, until: datetime | None,
                    after: tuple[datetime, str] | None, limit: int) -> list[Row]:
    """Newest first. A transfer is listed once its initiation is projected."""
    return await _newest_first(db, "transfers", "transfer_id", "initiated_at", ("source", "target"),
                               ("asset",), scope=scope, status=status, asset=asset, wallet=wallet,
                               since=since, until=until, after=after, limit=limit)


async def trades(db: Db, *, scope: frozenset[str] | None, status: str | None, asset: str | None,
                 wallet: str | None, since: datetime | None, until: datetime | None,
                 after: tuple[datetime, str] | None, limit: int) -> list[Row]:
    """Newest first; ``asset`` matches either leg."""
    return await _newest_first(db, "trades", "trade_id", "created_at", ("seller", "buyer"),
                               ("asset", "payment_asset"), scope=scope, status=status, asset=asset,
                               wallet=wallet, since=since, until=until, after=after, limit=limit)


async def _newest_first(db: Db, table: str, key: str, at: str, parties: tuple[str, ...],
                        assets: tuple[str, ...], *, scope: frozenset[str] | None,
                        status: str | None, asset: str | None, wallet: str | None,
                        since: datetime | None, until: datetime | None,
                        after: tuple[datetime, str] | None, limit: int) -> list[Row]:
    """A page of transfers or trades (``table``, id column ``key``, time column ``at``): those of
    ``scope``, filtered, newest first, after the cursor ``after``. ``wallet`` matches any of
    ``parties``, ``asset`` any of ``assets``."""
    def either(columns: tuple[str, ...]) -> str:
        return "(" + " OR ".join(f"t.{c} = {{0}}" for c in columns) + ")"

    w = Where([f"t.{at} IS NOT NULL"])
    _scope(w, scope, *(f"t.{c}" for c in parties))
    w.when(status, "t.status = {0}")
    w.when(asset, either(assets))
    w.when(wallet, either(parties))
    w.when(since, f"t.{at} >= {{0}}")
    w.when(until, f"t.{at} < {{0}}")
    if after is not None:
        w.add(f"(t.{at}, t.{key}) < ({{0}}, {{1}})", *after)
    rows = await db.fetch(
        f"""SELECT t.* FROM {table} t WHERE {w.sql()}
            ORDER BY t.{at} DESC, t.{key} DESC {w.limit(limit)}""",
        *w.args,
    )
    return [dict(r) for r in rows]


async def events(db: Db, *, scope_keys: list[str] | None, aggregate: str | None,
                 correlation_id: str | None, command_id: str | None, type_: str | None,
                 since: datetime | None, until: datetime | None,
                 after: tuple[datetime, str] | None, limit: int) -> list[Row]:
    """The audit trail, oldest first."""
    w = Where()
    if scope_keys is not None:
        w.add("e.key = ANY({0})", scope_keys)
    w.when(aggregate, "e.key = {0}")
    w.when(correlation_id, "e.correlation_id = {0}")
    w.when(command_id, "e.command_id = {0}")
    w.when(type_, "e.type = {0}")
    w.when(since, "e.occurred_at >= {0}")
    w.when(until, "e.occurred_at < {0}")
    if after is not None:
        w.add("(e.occurred_at, e.event_id) > ({0}, {1})", *after)
    rows = await db.fetch(
        f"""SELECT e.* FROM events e WHERE {w.sql()}
            ORDER BY e.occurred_at, e.event_id {w.limit(limit)}""",
        *w.args,
    )
    return [dict(r) for r in rows]


async def assets(db: Db, *, after: str | None, limit: int) -> list[Row]:
    w = Where()
    w.when(after, "a.symbol > {0}")
    rows = await db.fetch(
        f"SELECT {ASSET_COLUMNS} FROM assets a WHERE {w.sql()} ORDER BY a.symbol {w.limit(limit)}",
        *w.args,
    )
    return [dict(r) for r in rows]


async def freshness(db: Db) -> list[Row]:
    rows = await db.fetch(
        "SELECT * FROM projection_lag ORDER BY projection, topic, partition"
    )
    return [dict(r) for r in rows]


async def dead_letter_count(db: Db) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM dead_letters")
    return count
