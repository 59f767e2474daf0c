"""``ledgerline audit``: conservation per asset from the event history, then the views against it.

1. Reads ``ledger.events`` (read_committed) from offset 0 to the end offsets taken at the start,
   and checks every asset's books (:mod:`processor.books`) at that cut. A debit's transaction
   writes its credit too, into another partition; the broker marks a transaction committed
   partition by partition, so a cut taken in that moment may hold the credit without the debit.
   The audit then reads on to newer end offsets, where the debit is, before it judges.
2. Waits (``--wait``) until the projector has applied at least those events, reads its offsets,
   ``wallet_balances`` and ``assets`` in one repeatable-read snapshot, reads on in Kafka up to
   exactly the projector's offsets, and compares balance by balance and asset by asset.
3. Counts, in the same snapshot, the records of ``ledger.events`` the projector dead-lettered
   (``dead_letters``): each is an event the views lack, whether or not it moves a balance.

Prints a report, one line per asset, a ``MISMATCH`` line per difference and a ``DEAD LETTERS``
line if the projector dead-lettered anything; exits 1 on any.
"""

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from common.kafka import KafkaTarget, client_options
from events import codec, topics
from events.amounts import format_amount
from events.codec import DecodeError
from events.readmodel import PROJECTION
from processor.books import Books

#: How many times the audit reads on past a cut that holds a credit without its debit.
CUT_RETRIES = 5


class AuditError(RuntimeError):
    """The audit could not read what it needs (no events topic, a partition that never ends)."""


class EventReader:
    """Folds ``ledger.events`` into :class:`Books`, partition by partition, up to given offsets."""

    def __init__(self, bootstrap: KafkaTarget) -> None:
        self.bootstrap = bootstrap
        self.consumer = AIOKafkaConsumer(
            **client_options(bootstrap), enable_auto_commit=False,
            isolation_level="read_committed", auto_offset_reset="earliest",
        )
        self.books = Books()
        self.undecodable: list[str] = []
        self.last: dict[int, int] = {}  # per partition: the offset after the last record folded
        self._buffer: dict[TopicPartition, list[Any]] = defaultdict(list)
        self._tps: list[TopicPartition] = []

    async def start(self) -> None:
        admin = AIOKafkaAdminClient(**client_options(self.bootstrap))
        await admin.start()
        try:
            [described] = await admin.describe_topics([topics.EVENTS])
        finally:
            await admin.close()
        partitions = [p["partition"] for p in described.get("partitions") or []]
        if described.get("error_code") or not partitions:
            raise AuditError(f"the topic {topics.EVENTS} does not exist")
        self._tps = [TopicPartition(topics.EVENTS, p) for p in sorted(partitions)]
        await self.consumer.start()
        self.consumer.assign(self._tps)
        await self.consumer.seek_to_beginning(*self._tps)
        self.last = {tp.partition: 0 for tp in self._tps}

    async def stop(self) -> None:
        await self.consumer.stop()

    async def end_offsets(self) -> dict[int, int]:
        ends = await self.consumer.end_offsets(self._tps)
        return {tp.partition: offset for tp, offset in ends.items()}

    async def advance_to(self, targets: dict[int, int], give_up_after: float = 60.0) -> None:
        """Fold every record below each partition's target offset, and none beyond it."""
        pending = [tp for tp in self._tps if self.last[tp.partition] < targets.get(tp.partition, 0)]
        deadline = time.monotonic() + give_up_after
        while pending:
            for tp in list(pending):
                if await self._fold_buffered(tp, targets[tp.partition]):
                    pending.remove(tp)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise AuditError(f"could not read {pending} up to {targets} in {give_up_after:.0f}s")
            batch = await self.consumer.getmany(*pending, timeout_ms=500, max_records=10_000)
            for tp, records in batch.items():
                self._buffer[tp].extend(records)

    async def _fold_buffered(self, tp: TopicPartition, target: int) -> bool:
        buffer = self._buffer[tp]
        while buffer and buffer[0].offset < target:
            self._fold(buffer.pop(0))
        return bool(buffer) or await self.consumer.position(tp) >= target

    def _fold(self, record: Any) -> None:
        try:
            self.books.add(codec.decode(record.value))
        except DecodeError as exc:
            self.undecodable.append(f"{record.partition}@{record.offset}: {exc}")
        self.last[record.partition] = record.offset + 1


@dataclass
class Views:
    offsets: dict[int, int]
    balances: dict[tuple[str, str], tuple[int, int]]
    assets: dict[str, tuple[int, int]]
    dead_letters: int = 0
    first_dead_letter: str = ""


async def read_views(conn: asyncpg.Connection) -> Views:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        offsets = await conn.fetch(
            "SELECT partition, next_offset FROM projection_offsets WHERE projection = $1 AND topic = $2",
            PROJECTION, topics.EVENTS,
        )
        balances = await conn.fetch("SELECT wallet, asset, available, held FROM wallet_balances")
        assets = await conn.fetch("SELECT symbol, supply, burned FROM assets")
        dead = await conn.fetchval("SELECT count(*) FROM dead_letters")
        first = await conn.fetchrow(
            'SELECT topic, partition, "offset", type, error FROM dead_letters '
            'ORDER BY appended_at, partition, "offset" LIMIT 1')
    return Views(
        offsets={r["partition"]: r["next_offset"] for r in offsets},
        balances={(r["wallet"], r["asset"]): (int(r["available"]), int(r["held"])) for r in balances},
        assets={r["symbol"]: (int(r["supply"]), int(r["burned"])) for r in assets},
        dead_letters=dead,
        first_dead_letter="" if first is None else
        f"{first['topic']}[{first['partition']}]@{first['offset']} ({first['type'] or 'undecodable'}): "
        f"{first['error'][:200]}",
    )


class Report:
    def __init__(self, print_line: Callable[[str], None],
                 assets: frozenset[str] | None = None) -> None:
        self.print = print_line
        self.assets = assets  # None: every asset
        self.mismatches = 0
        self.dead_letters = 0

    def covers(self, symbol: str) -> bool:
        return self.assets is None or symbol in self.assets

    def mismatch(self, text: str) -> None:
        self.mismatches += 1
        self.print(f"MISMATCH {text}")

    def dead_lettered(self, views: Views) -> None:
        self.dead_letters = views.dead_letters
        if views.dead_letters:
            records = "record" if views.dead_letters == 1 else "records"
            # One line, whatever the stored error holds (PostgreSQL's have a DETAIL line).
            first = " ".join(str(views.first_dead_letter).split())
            self.print(f"DEAD LETTERS {views.dead_letters} {records} of {topics.EVENTS} could not be "
                       f"applied and are missing from the views, e.g. {first}; "
                       "see `ledgerline dlq list`, then `ledgerline dlq redrive` or, once the "
                       "projector is fixed, `ledgerline rebuild`")

    def failed(self) -> bool:
        return bool(self.mismatches or self.dead_letters)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                             enumerate(zip(r, widths, strict=True))) for r in rows]


def conservation(books: Books, report: Report) -> None:
    report.print("conservation per asset: issued - burned = in wallets + in flight")
    rows = [["asset", "issued", "burned", "in wallets", "in flight", "supply", "result"]]
    problems: list[str] = []
    holdings = books.holdings()
    for symbol in sorted(filter(report.covers, books.assets)):
        a = books.assets[symbol]
        found = books.check(symbol)
        problems += [f"{symbol}: {p}" for p in found]
        amounts = (a.issued, a.burned, holdings.get(symbol, 0), a.in_flight(), a.supply)
        rows.append([symbol, *(format_amount(v, a.decimals) for v in amounts),
                     "ok" if not found else "MISMATCH"])
    for line in _table(rows):
        report.print(line)
    if report.assets is not None:
        problems += [f"{symbol}: no event names this asset"
                     for symbol in sorted(report.assets - set(books.assets))]
    problems += [p for p, asset in zip(books.problems, books.problem_assets, strict=True)
                 if report.covers(asset)]
    for problem in problems:
        report.mismatch(problem)


def compare(books: Books, views: Views, report: Report) -> None:
    report.print("views at the projector's offsets "
                 f"{dict(sorted(views.offsets.items()))}: wallet_balances and assets")
    decimals = {s: a.decimals for s, a in books.assets.items()}

    def fmt(asset: str, pair: tuple[int, int] | None) -> str:
        if pair is None:
            return "no row"
        d = decimals.get(asset, 0)
        return f"available {format_amount(pair[0], d)} held {format_amount(pair[1], d)}"

    rows = [["asset", "events: in wallets", "view: in wallets", "events: supply", "view: supply",
             "result"]]
    view_totals: dict[str, int] = defaultdict(int)
    for (_, asset), (available, held) in views.balances.items():
        view_totals[asset] += available + held
    differing: dict[str, list[str]] = defaultdict(list)
    for key in sorted(k for k in set(views.balances) | set(books.balances) if report.covers(k[1])):
        ours, theirs = books.balances.get(key), views.balances.get(key)
        if ours != theirs and not (theirs is None and ours == (0, 0)):
            differing[key[1]].append(f"{key[1]}: wallet {key[0]}: wallet_balances shows "
                                     f"{fmt(key[1], theirs)}, the events give {fmt(key[1], ours)}")
    holdings = books.holdings()
    for symbol in sorted(filter(report.covers, set(books.assets) | set(views.assets)
                                | set(view_totals))):
        a = books.assets.get(symbol)
        d = decimals.get(symbol, 0)
        ours_supply = None if a is None else (a.supply, a.supply_burned)
        theirs_supply = views.assets.get(symbol)
        ok = ours_supply == theirs_supply and holdings.get(symbol, 0) == view_totals.get(symbol, 0) \
            and not differing[symbol]
        rows.append([symbol, format_amount(holdings.get(symbol, 0), d),
                     format_amount(view_totals.get(symbol, 0), d),
                     "-" if a is None else format_amount(a.supply, d),
                     "no row" if theirs_supply is None else format_amount(theirs_supply[0], d),
                     "ok" if ok else "MISMATCH"])
        if ours_supply != theirs_supply:
            differing[symbol].append(
                f"{symbol}: assets shows supply/burned {theirs_supply}, the events give {ours_supply}")
    for line in _table(rows):
        report.print(line)
    for symbol in sorted(differing):
        shown = differing[symbol]
        for text in shown[:20]:
            report.mismatch(text)
        if len(shown) > 20:
            report.mismatch(f"{symbol}: and {len(shown) - 20} more differing rows")


async def audit(bootstrap: KafkaTarget, dsn: str | None, *, wait: float,
                print_line: Callable[[str], None] = print,
                assets: frozenset[str] | None = None) -> int:
    """Run the audit; the exit code: 0 if everything adds up, 1 on any mismatch.

    ``assets`` limits the conservation and view checks to those symbols (the whole log is
    still read: a wallet's balance in one asset is the sum of its whole history). Dead-lettered
    records are counted whatever the scope: the views lack them, whichever asset they name."""
    report = Report(print_line, assets)
    reader = EventReader(bootstrap)
    try:
        await reader.start()
        ends = await reader.end_offsets()
        await reader.advance_to(ends)
        for _ in range(CUT_RETRIES):
            if not reader.books.credits_ahead():
                break
            ends = await reader.end_offsets()
            await reader.advance_to(ends)
        report.print(f"ledgerline audit: {reader.books.events} events read from {topics.EVENTS} "
                     f"({len(ends)} partitions, end offsets {dict(sorted(ends.items()))})")
        if reader.undecodable:
            report.print(f"warning: {len(reader.undecodable)} records could not be decoded and "
                         f"were left out, e.g. {reader.undecodable[0]}")
        conservation(reader.books, report)
        if dsn is not None:
            await _check_views(reader, dsn, wait, report)
    finally:
        await reader.stop()
    checked = len([s for s in reader.books.assets if report.covers(s)])
    verdict = "everything adds up" if report.mismatches == 0 else "the ledger does NOT add up"
    if report.dead_letters:
        verdict += f"; the views lack {report.dead_letters} dead-lettered records"
    noun = "mismatch" if report.mismatches == 1 else "mismatches"
    report.print(f"audit: {checked} assets, {report.mismatches} {noun}, {report.dead_letters} "
                 f"dead letters: {verdict}")
    return 1 if report.failed() else 0


async def _check_views(reader: EventReader, dsn: str, wait: float, report: Report) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + wait
        while True:
            views = await read_views(conn)
            behind = {p: (views.offsets.get(p, 0), last) for p, last in reader.last.items()
                      if views.offsets.get(p, 0) < last}
            if not behind:
                break
            if time.monotonic() > deadline:
                report.mismatch(f"the views are behind the events after {wait:.0f}s "
                                f"(partition: (projector, events) {behind}); not compared")
                return
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    await reader.advance_to(views.offsets)
    compare(reader.books, views, report)
    report.dead_lettered(views)
