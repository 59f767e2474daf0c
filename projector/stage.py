"""Staging tables: a batch's rows for one upsert, loaded by text COPY, read by ``INSERT … SELECT``.

Binding a batch as one array per column costs Python about half a microsecond per value in
asyncpg (each element is checked against the collection ABCs); a text COPY line costs a fraction
of that per row. Each writing connection keeps one temporary table per upserted view
(``ON COMMIT DELETE ROWS``: empty outside a transaction, rolled back with it). Their columns are
declared here, beside the statements that read them, so they always match the running code.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from projector import wire

_CONVERT: dict[str, Callable[[Any], str | None]] = {
    "numeric": wire.money, "timestamptz": wire.ts, "smallint": str, "integer": str}


@dataclass(frozen=True)
class Stage:
    """The staging table for upserts into ``table``: ``columns`` are (name, SQL type) pairs."""

    table: str
    columns: tuple[tuple[str, str], ...]
    _free: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_free", tuple(n for n, t in self.columns if t == "text"))

    @property
    def name(self) -> str:
        return f"stage_{self.table}"

    @property
    def names(self) -> str:
        return ", ".join(n for n, _ in self.columns)

    def ddl(self) -> str:
        cols = ", ".join(f"{n} {t}" for n, t in self.columns)
        return f"CREATE TEMP TABLE IF NOT EXISTS {self.name} ({cols}) ON COMMIT DELETE ROWS"

    def lines(self, rows: Iterable[dict[str, Any]]) -> bytes:
        """COPY text of ``rows``; text columns are escaped only for a row that needs it."""
        plan = [(n, _CONVERT.get(t)) for n, t in self.columns]  # None: text as it is
        free = self._free
        out = []
        for r in rows:
            values: list[str] = []
            if wire.needs_escape("".join(filter(None, [r[n] for n in free]))):
                for n, conv in plan:
                    v = r[n]
                    values.append(wire.NULL if v is None else wire.escape(v) if conv is None
                                  else conv(v) or "")
            else:
                for n, conv in plan:
                    v = r[n]
                    values.append(wire.NULL if v is None else v if conv is None else conv(v) or "")
            out.append("\t".join(values))
        out.append("")
        return "\n".join(out).encode()


async def create(conn: asyncpg.Connection, stages: Sequence[Stage]) -> None:
    """Make sure this session has the staging tables (a no-op once it has)."""
    await conn.execute(";".join(s.ddl() for s in stages))


async def load(conn: asyncpg.Connection, stage: Stage, rows: Iterable[dict[str, Any]]) -> None:
    await conn.copy_to_table(stage.name, source=wire.source(stage.lines(rows)),
                             columns=[n for n, _ in stage.columns], format="text")

