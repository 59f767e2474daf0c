"""``ledgerline audit --verify-chain``: the hash chain checked in Kafka and in PostgreSQL.

1. Reads ``ledger.anchors`` and checks every checkpoint's signature with the trusted public
   keys; a checkpoint that fails is named (``BROKEN ledger.anchors[0]@N``).
2. Reads ``ledger.events`` (read_committed) up to the end offsets taken at the start and walks
   every chain (:mod:`processor.verify`). A re-driven event (``ledgerline dlq redrive``) is not
   a step of its chain: it must be a copy of the record at its original position.
3. Reads the ``events`` table in position order and walks the chains again from the rows.

Prints one ``BROKEN`` line per record that breaks a chain, in log order, so the first one is
where the tampering starts, and a summary; exits 1 on any break.
"""

import asyncio
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common.kafka import client_options
from common.topic_reader import partitions_of
from events import chain, topics
from events.readmodel import PROJECTION
from processor.chain import key_id
from processor.verify import Break, Entry, Verifier, content_or_problem

_ORIGINAL = "original_position"  # projector/dlq.py writes it on a re-driven record
_SHOWN = 50


def public_keys(paths: Iterable[str | Path]) -> dict[str, Ed25519PublicKey]:
    """The trusted public keys (PEM files), by key id."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{path} does not hold an Ed25519 public key")
        keys[key_id(key)] = key
    return keys


async def _consumer(bootstrap: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(**client_options(bootstrap), enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    return consumer


async def _records(bootstrap: str, topic: str, start: dict[int, int],
                   until: dict[int, int] | None = None, ends_out: dict[int, int] | None = None) -> Any:
    """Every committed record of ``topic`` from ``start`` (default 0) to ``until`` or the end
    offsets taken first (put in ``ends_out``), each partition in log order."""
    tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
    if not tps:
        return
    consumer = await _consumer(bootstrap)
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            ends[tp] = min(ends[tp], (until or {}).get(tp.partition, ends[tp]))
            if ends_out is not None:
                ends_out[tp.partition] = max(ends[tp], start.get(tp.partition, 0))
            consumer.seek(tp, start.get(tp.partition, 0))
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            for tp, records in (await consumer.getmany(timeout_ms=500, max_records=20_000)).items():
                for r in records:
                    if r.offset < ends[tp]:
                        yield r
    finally:
        await consumer.stop()


def _entry(where: str, partition: int, offset: int, value: bytes | None,
           headers: Any) -> Entry:
    content, problem = content_or_problem(value)
    try:
        link = chain.read_headers(headers)
    except ValueError as exc:
        link, problem = None, str(exc)
    return Entry(where, partition, offset, link, content, problem)


def _original(headers: Any) -> tuple[int, int] | None:
    """Where a re-driven event stood first (None for any other record)."""
    for name, value in headers or ():
        if name == _ORIGINAL:
            try:
                t, partition, offset = value.decode(errors="replace").rsplit(":", 2)
                return (int(partition), int(offset)) if t == topics.EVENTS else None
            except ValueError:
                return None
    return None


def _digest(entry: Entry) -> bytes | None:
    if entry.content is None or entry.link is None:
        return None
    return chain.link(entry.link.writer, entry.partition, entry.link.seq, entry.link.prev, entry.content)


class Report:
    def __init__(self, print_line: Callable[[str], None]) -> None:
        self.print = print_line
        self.broken = 0

    def breaks(self, source: str, breaks: list[Break]) -> None:
        self.broken += len(breaks)
        for b in breaks[:_SHOWN]:
            self.print(f"BROKEN {b.where}: {b.reason}")
        if len(breaks) > _SHOWN:
            self.print(f"BROKEN and {len(breaks) - _SHOWN} more in {source}")
        firsts: dict[int, Break] = {}
        for b in breaks:
            firsts.setdefault(b.partition, b)
        for p, b in sorted(firsts.items()):
            self.print(f"{source}: partition {p} first breaks at {b.where}")


async def _anchors(bootstrap: str, keys: dict[str, Ed25519PublicKey], report: Report,
                   verifiers: list[Verifier]) -> int:
    count = 0
    async for r in _records(bootstrap, topics.ANCHORS, {}):
        where = f"{topics.ANCHORS}[{r.partition}]@{r.offset}"
        count += 1
        try:
            anchor = chain.decode_anchor(r.value or b"")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            report.breaks(topics.ANCHORS, [Break(r.partition, r.offset, where,
                                                 f"not a checkpoint: {exc}")])
            continue
        if not all([v.pin(anchor, where) for v in verifiers]):
            report.breaks(topics.ANCHORS, [Break(r.partition, r.offset, where,
                                                 "its signature does not verify with any trusted "
                                                 "key: a forged checkpoint")])
    return count


async def _kafka(bootstrap: str, v: Verifier, start: dict[int, int],
                 until: dict[int, int]) -> tuple[list[Break], dict[int, int], dict[int, int]]:
    """The breaks in the log, the offsets read up to, and the offset after each partition's last
    record (transaction markers take offsets too: a caught-up projector stops there)."""
    copies: list[tuple[Entry, tuple[int, int]]] = []
    last: dict[int, int] = {}

    def take(r: Any, only: set[tuple[str, int]] | None = None) -> None:
        e = _entry(f"{topics.EVENTS}[{r.partition}]@{r.offset}", r.partition, r.offset, r.value,
                   r.headers)
        last[r.partition] = r.offset + 1
        if only is not None and (e.link is None or (e.link.writer, e.partition) not in only):
            return
        original = _original(r.headers)
        if original is not None:
            copies.append((e, original))
        else:
            v.add(e)

    ends: dict[int, int] = {}
    async for r in _records(bootstrap, topics.EVENTS, start, until, ends):
        take(r)
    # While one writer's transaction is open, another's committed one may stand partly beyond
    # the end offsets read (they end at the first open transaction): read on for the chains
    # whose last records still wait for their signature.
    for _ in range(5):
        pending = v.pending()
        if until or not pending:
            break
        more: dict[int, int] = {}
        async for r in _records(bootstrap, topics.EVENTS, ends, None, more):
            take(r, pending)
        if more == ends:
            break
        ends = more
    breaks = v.finish()
    broken = {(b.partition, b.offset) for b in breaks}
    if copies:
        consumer = await _consumer(bootstrap)
        try:
            for e, (partition, offset) in copies:
                tp = TopicPartition(topics.EVENTS, partition)
                consumer.assign([tp])
                consumer.seek(tp, offset)
                found = (await consumer.getmany(tp, timeout_ms=5000, max_records=1)).get(tp, [])
                same = bool(found) and found[0].offset == offset and (partition, offset) not in broken
                if same:
                    o = _entry("", partition, offset, found[0].value, found[0].headers)
                    same = _digest(o) is not None and _digest(o) == _digest(e)
                if not same:
                    breaks.append(Break(e.partition, e.offset, e.where,
                                        f"a re-driven event that is not a copy of the verified "
                                        f"record at {topics.EVENTS}[{partition}]@{offset}"))
        finally:
            await consumer.stop()
    return sorted(breaks), ends, last


_ROWS = """
SELECT event_id, type, version, key, command_id, correlation_id, principal, occurred_at,
       payload::text AS payload, partition, "offset", chain_writer, chain_seq, chain_prev, chain_sig
FROM events WHERE topic = $1 AND "offset" >= COALESCE(($2::jsonb ->> partition::text)::bigint, 0)
  AND "offset" < COALESCE(($3::jsonb ->> partition::text)::bigint, 9223372036854775807)
ORDER BY partition, "offset"
"""


def _json(positions: dict[int, int]) -> str:
    return msgspec.json.encode({str(p): o for p, o in positions.items()}).decode()


_OWED = ("SELECT partition, next_offset FROM projection_offsets WHERE projection = $1 "
         "AND topic = $2")


async def _database(dsn: str, v: Verifier, start: dict[int, int], until: dict[int, int],
                    last: dict[int, int], kafka: Verifier, wait: float,
                    print_line: Callable[[str], None]) -> tuple[list[Break], int]:
    """The breaks in the table, read up to where the log was read (``until``), once the
    projector has applied every record read (``last``)."""
    conn = await asyncpg.connect(dsn)
    rows = 0
    try:
        deadline = time.monotonic() + wait
        while True:
            owed = {p: o for p, o in await conn.fetch(_OWED, PROJECTION, topics.EVENTS)}
            behind = {p: (owed.get(p, 0), o) for p, o in last.items() if owed.get(p, 0) < o}
            if not behind or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        if behind:
            # Where the projector stopped, a transaction's records may be there in part:
            # their signature is not asked for; the log's verification covers them.
            print_line(f"events table: the projector is behind the log after {wait:.0f}s "
                       f"(partition: (projector, log) {behind}); its last records are checked "
                       "for their links only")
            v.tail_pending = True
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            # The table trails the log: a checkpointed head is owed only once the projector's
            # offset has passed where that record stands in Kafka.
            v.owed = {p: o for p, o in await conn.fetch(_OWED, PROJECTION, topics.EVENTS)}
            v.pinned_at = kafka.pinned_offsets()
            until = {p: min(o, v.owed.get(p, 0)) for p, o in until.items()}
            async for r in conn.cursor(_ROWS, topics.EVENTS, _json(start), _json(until),
                                       prefetch=5000):
                rows += 1
                where = f"events row {topics.EVENTS}[{r['partition']}]@{r['offset']}"
                problem = None
                try:
                    content: chain.Content | None = chain.Content(
                        id=r["event_id"], type=r["type"], version=r["version"], key=r["key"],
                        command_id=r["command_id"], correlation_id=r["correlation_id"],
                        occurred_at=r["occurred_at"], principal=r["principal"],
                        payload=msgspec.json.decode(r["payload"]))
                except msgspec.DecodeError as exc:
                    content, problem = None, f"payload unreadable: {exc}"
                link = None
                if r["chain_writer"] is not None:
                    if r["chain_seq"] is None or r["chain_prev"] is None or len(r["chain_prev"]) != 32:
                        problem = "malformed chain columns"
                    else:
                        link = chain.Link(r["chain_writer"], r["chain_seq"], bytes(r["chain_prev"]),
                                          None if r["chain_sig"] is None else bytes(r["chain_sig"]))
                v.add(Entry(where, r["partition"], r["offset"], link, content, problem))
    finally:
        await conn.close()
    breaks = v.finish()
    # Rows removed from (or rewritten at) the end of a chain break no link: the log's head,
    # where the projector has applied it, must be the table's head too.
    owed, table = v.owed or {}, v.heads()
    for (writer, partition), (seq, head, e) in sorted(kafka.heads().items()):
        if e.offset >= owed.get(partition, 0):
            continue
        found = table.get((writer, partition))
        if found is None or found[0] != seq or found[1] != head:
            ends = f"seq {found[0]} at {found[2].where}" if found else "nowhere"
            breaks.append(Break(partition, found[2].offset + 1 if found else 0,
                                found[2].where if found else f"events rows of partition {partition}",
                                f"the chain of {writer} ends at {ends}, in the log at seq {seq} "
                                f"({e.where}), which the projector has applied: rows removed or "
                                "rewritten"))
    # Nor do rows removed from the start of what was read: the table's first link of every
    # chain must be the log's.
    firsts = v.firsts()
    for (writer, partition), (seq, head, e) in sorted(kafka.firsts().items()):
        if e.offset >= owed.get(partition, 0):
            continue
        found = firsts.get((writer, partition))
        if found is not None and (found[0], found[1]) != (seq, head):
            breaks.append(Break(partition, found[2].offset, found[2].where,
                                f"the chain of {writer} starts here at seq {found[0]}, in the log "
                                f"at seq {seq} ({e.where}): rows removed or rewritten before it"))
    return sorted(set(breaks)), rows


async def verify_chain(bootstrap: str, dsn: str | None, keys: dict[str, Ed25519PublicKey], *,
                       start: dict[int, int] | None = None, until: dict[int, int] | None = None,
                       wait: float = 30.0, print_line: Callable[[str], None] = print) -> int:
    """Verify; the exit code: 0 if every chain holds, 1 on any break. ``start``, ``until``:
    verify only these offsets of ``ledger.events`` (partition -> offset; ``until`` exclusive),
    instead of all of it."""
    start, until = start or {}, until or {}
    report = Report(print_line)
    fingerprints = ", ".join(sorted(keys)) or "none"
    print_line(f"ledgerline audit --verify-chain: trusted keys {fingerprints}"
               + (f"; from offsets {dict(sorted(start.items()))}" if start else "")
               + (f"; to offsets {dict(sorted(until.items()))}" if until else ""))
    mid_log = frozenset(p for p, o in start.items() if o > 0)
    kafka = Verifier(keys, scoped=mid_log, bounded=bool(until))
    table = Verifier(keys, scoped=mid_log, bounded=bool(until))
    verifiers = [kafka] if dsn is None else [kafka, table]
    anchors = await _anchors(bootstrap, keys, report, verifiers)
    print_line(f"{topics.ANCHORS}: {anchors} checkpoints, {kafka.anchors} verified")
    breaks, read_to, last = await _kafka(bootstrap, kafka, start, until)
    report.breaks(topics.EVENTS, breaks)
    print_line(f"{topics.EVENTS}: {kafka.records} records in {len(kafka.chains)} chains, "
               f"{kafka.confirmed} signed transactions, {kafka.legacy} from before the chain, "
               f"{len(breaks)} broken")
    if dsn is not None:
        breaks, rows = await _database(dsn, table, start, read_to, last, kafka, wait, print_line)
        report.breaks("events table", breaks)
        print_line(f"events table: {rows} rows in {len(table.chains)} chains, "
                   f"{table.legacy} from before the chain, {len(breaks)} broken")
    verdict = "every chain holds" if report.broken == 0 else "the chain is BROKEN"
    print_line(f"verify-chain: {report.broken} broken: {verdict}")
    return 1 if report.broken else 0

