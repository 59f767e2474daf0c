"""Dead letters: read them from ``ledger.dlq``, list them, and re-drive them once fixed.

A dead letter is the failed record's key and value, with headers naming the error and the
record's position (``source_topic``/``source_partition``/``source_offset``).

Re-driving sends the record again to its source topic and partition, with two headers:
``redriven_from`` (the letter's own position) and ``original_position`` (where the record first
stood). What that means depends on the topic:

- ``ledger.commands``: the command is decided again. The processor drops a command id it has
  already decided, so a re-driven command takes effect at most once.
- ``ledger.events``: the same event (same id) is appended again; ``ledger.events`` then holds
  it twice. The projector applies a re-driven event as if it stood at its original position
  (that is the position the ``events`` view records), and skips it if the views already hold
  its id — which is what happens when a rebuild, after the fix, applied the original in place.
  Events carry balances *after* the change, so applying one late would move a balance back if a
  later event of the same wallet had already been applied: a re-drive of an event whose
  aggregate has later events in the views is refused (``--force`` overrides); for those the fix
  is ``ledgerline rebuild``, which replays the original where it stands.

Each re-drive is recorded in ``dlq_redrives`` in the same database transaction that waits for
the broker's acknowledgement, so a second re-drive skips it; should the tool die between the
acknowledgement and the commit, the copy may be sent twice, and the two rules above make the
second copy a no-op.
"""

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from common.kafka import KafkaTarget, client_options
from common.topic_reader import read_to_end
from events import chain, codec, topics
from projector.fold import Position

REDRIVEN_FROM = "redriven_from"
ORIGINAL_POSITION = "original_position"


def _position_text(p: Position) -> str:
    return f"{p.topic}:{p.partition}:{p.offset}"


def _parse_position(text: str) -> Position:
    topic, partition, offset = text.rsplit(":", 2)
    return Position(topic, int(partition), int(offset))


def original_header(position: Position) -> tuple[str, bytes]:
    return ORIGINAL_POSITION, _position_text(position).encode()


def original_position(headers: Iterable[tuple[str, bytes]] | None) -> Position | None:
    """Where a re-driven record first stood; ``None`` for a record that was never re-driven."""
    for name, value in headers or ():
        if name == ORIGINAL_POSITION:
            try:
                return _parse_position(value.decode())
            except ValueError:
                return None
    return None


@dataclass(frozen=True)
class Letter:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    error: str
    source: Position
    original: Position | None
    # The failed record's hash chain headers, carried so a re-drive keeps its link
    # (docs/audit.md: a re-driven event is checked against the record it copies).
    link: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def where(self) -> Position:
        """The position the failed record stood at first (itself, unless it was a re-drive)."""
        return self.original or self.source

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @property
    def type(self) -> str:
        try:
            return codec.decode(self.value).type
        except ValueError:
            return "?"


def _letter(record: Any) -> Letter:  # an aiokafka ConsumerRecord (no type hints)
    headers = {k: v.decode(errors="replace") for k, v in getattr(record, "headers", ()) or ()}
    return Letter(
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        key=record.key,
        value=record.value,
        error=headers.get("error", ""),
        source=Position(headers.get("source_topic", "?"), int(headers.get("source_partition", -1)),
                        int(headers.get("source_offset", -1))),
        original=original_position(getattr(record, "headers", ())),
        link=chain_headers(getattr(record, "headers", ())),
    )


def chain_headers(headers: Iterable[tuple[str, bytes]] | None) -> list[tuple[str, bytes]]:
    return [(k, v) for k, v in headers or () if k in chain.NAMES]


async def read_letters(bootstrap: KafkaTarget) -> list[Letter]:
    """Every dead letter in ``ledger.dlq``, oldest first per partition."""
    read = await read_to_end(bootstrap, topics.DLQ)
    return [_letter(r) for p in sorted(read) for r in read[p]]


async def redriven(pool: asyncpg.Pool) -> dict[tuple[int, int], datetime]:
    rows = await pool.fetch("SELECT dlq_partition, dlq_offset, redriven_at FROM public.dlq_redrives")
    return {(r[0], r[1]): r[2] for r in rows}


def render(letters: Sequence[Letter], done: dict[tuple[int, int], datetime], *, as_json: bool) -> str:
    if as_json:
        return "\n".join(json.dumps({
            "dlq": f"{x.partition}:{x.offset}", "time": x.time.isoformat(),
            "source": _position_text(x.source),
            "original": None if x.original is None else _position_text(x.original),
            "type": x.type, "key": None if x.key is None else x.key.decode(errors="replace"),
            "error": x.error,
            "redriven_at": None if (x.partition, x.offset) not in done
            else done[(x.partition, x.offset)].isoformat(),
        }) for x in letters)
    if not letters:
        return "no dead letters"
    lines = [f"{'DLQ':<10} {'TIME (UTC)':<19} {'SOURCE':<24} {'TYPE':<20} {'REDRIVEN':<8}  ERROR"]
    for x in letters:
        lines.append(
            f"{x.partition}:{x.offset:<8} {x.time:%Y-%m-%d %H:%M:%S} {_position_text(x.where):<24} "
            f"{x.type[:20]:<20} {'yes' if (x.partition, x.offset) in done else 'no':<8}  {x.error}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Outcome:
    letter: Letter
    status: str  # "redriven", "skipped", "refused", "would redrive"
    detail: str = ""


_LATER_EVENT = """
SELECT min("offset") FROM events
WHERE key = $1 AND topic = $2 AND partition = $3 AND "offset" > $4
"""

_CLAIM = """
INSERT INTO public.dlq_redrives (dlq_partition, dlq_offset, source_topic, source_partition,
                                 source_offset)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING dlq_offset
"""


async def redrive(bootstrap: KafkaTarget, pool: asyncpg.Pool, selected: set[tuple[int, int]] | None, *,
                  force: bool = False, dry_run: bool = False) -> list[Outcome]:
    """Send the selected dead letters (all when ``selected`` is None) back to their topic."""
    letters = [x for x in await read_letters(bootstrap)
               if selected is None or (x.partition, x.offset) in selected]
    done = await redriven(pool)
    outcomes: list[Outcome] = []
    producer = AIOKafkaProducer(**client_options(bootstrap), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for letter in letters:
            outcomes.append(await _redrive_one(producer, pool, letter, done, force, dry_run))
    finally:
        await producer.stop()
    return outcomes


async def _redrive_one(producer: AIOKafkaProducer, pool: asyncpg.Pool, letter: Letter,
                       done: dict[tuple[int, int], datetime], force: bool, dry_run: bool) -> Outcome:
    me = (letter.partition, letter.offset)
    if me in done:
        return Outcome(letter, "skipped", f"already re-driven at {done[me]:%Y-%m-%d %H:%M:%S}")
    where = letter.where
    if where.topic not in (topics.EVENTS, topics.COMMANDS) or where.partition < 0:
        return Outcome(letter, "refused", "the letter does not name a ledger topic and partition")
    if where.topic == topics.EVENTS and not force and letter.key is not None:
        later = await pool.fetchval(_LATER_EVENT, letter.key.decode(errors="replace"), where.topic,
                                    where.partition, where.offset)
        if later is not None:
            return Outcome(letter, "refused",
                           f"a later event of {letter.key.decode(errors='replace')} (offset {later}) "
                           "is already in the views; fix the projector and run `ledgerline rebuild`, "
                           "or use --force")
    if dry_run:
        return Outcome(letter, "would redrive")
    headers = [(REDRIVEN_FROM, f"{topics.DLQ}:{letter.partition}:{letter.offset}".encode()),
               original_header(where), *letter.link]
    async with pool.acquire() as conn, conn.transaction():
        claimed = await conn.fetchval(_CLAIM, letter.partition, letter.offset, where.topic,
                                      where.partition, where.offset)
        if claimed is None:
            return Outcome(letter, "skipped", "re-driven meanwhile by someone else")
        sent = await producer.send_and_wait(where.topic, letter.value, key=letter.key,
                                            partition=where.partition, headers=headers)
        await conn.execute(
            "UPDATE public.dlq_redrives SET redriven_offset = $3 "
            "WHERE dlq_partition = $1 AND dlq_offset = $2", letter.partition, letter.offset, sent.offset)
    return Outcome(letter, "redriven", f"to {where.topic}[{where.partition}]@{sent.offset}")
