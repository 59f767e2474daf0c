"""Poison: records that cannot be decoded or applied go to ``ledger.dlq`` with their error and
source position, the records behind them are applied, and ``ledgerline dlq`` lists and re-drives
them with the documented semantics."""

import asyncio
import json
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from common.kafka import client_options
from common.settings import asyncpg_dsn
from events import codec, topics
from events.keys import asset_key, wallet_key
from events.messages import AssetRegistered, TransferInitiated, WalletCredited
from projector import dlq
from tests.conftest import Running, token, unique, unique_symbol
from tests.e2e.helpers import graphql

pytestmark = pytest.mark.integration

PARTITION = 0


@pytest.fixture
async def pool(running: Running) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(asyncpg_dsn(running.stack.settings.database_url), min_size=1, max_size=4)
    yield p
    await p.close()


def _credit(wallet: str, asset: str, amount: int) -> bytes:
    event = WalletCredited(wallet=wallet, asset=asset, amount=amount, kind="issue",
                           reference=str(uuid.uuid4()))
    return codec.encode(codec.envelope(event, key=wallet_key(wallet), command_id=str(uuid.uuid4()),
                                       principal="test"))


async def _send(bootstrap: str, records: list[tuple[str, bytes, list[tuple[str, bytes]] | None]],
                topic: str = topics.EVENTS) -> list[int]:
    producer = AIOKafkaProducer(**client_options(bootstrap), acks="all", enable_idempotence=True,
                                linger_ms=20)
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key=key.encode(), partition=PARTITION,
                                    headers=headers or [])
                for key, value, headers in records]
        return [(await s).offset for s in sent]
    finally:
        await producer.stop()


async def _eventually(probe: Any, seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = await probe()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)


async def _cli(running: Running, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ledgerline", *args, env=running.stack.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode() + err.decode()


async def test_poison_goes_to_the_dlq_and_the_records_behind_are_applied(
    running: Running, pool: asyncpg.Pool
) -> None:
    bootstrap = running.stack.settings.kafka_bootstrap
    symbol, negative, good = unique_symbol(), unique("neg"), unique("good")
    unknown = json.dumps({
        "id": str(uuid.uuid4()), "type": "WalletTeleported", "version": 1, "key": wallet_key(good),
        "command_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC).isoformat(),
        "principal": "test", "payload": {}}).encode()
    registered = codec.envelope(AssetRegistered(symbol=symbol, name="x", decimals=0, issuer="t"),
                                key=asset_key(symbol), command_id=str(uuid.uuid4()), principal="t")
    garbage_at, negative_at, unknown_at, *_ = await _send(bootstrap, [
        (wallet_key(unique("junk")), b"\x00 this is not an envelope {", None),
        (wallet_key(negative), _credit(negative, symbol, -5), None),
        (wallet_key(good), unknown, None),
        (asset_key(symbol), codec.encode(registered), None),
        (wallet_key(good), _credit(good, symbol, 10), None),
    ])

    # The records behind the poison are applied.
    assert await _eventually(lambda: pool.fetchval(
        "SELECT available FROM wallet_balances WHERE wallet = $1 AND asset = $2", good, symbol)) == 10
    assert await pool.fetchval("SELECT count(*) FROM assets WHERE symbol = $1", symbol) == 1
    assert await pool.fetchval("SELECT count(*) FROM wallet_balances WHERE wallet = $1", negative) == 0

    async def ours() -> dict[int, dlq.Letter]:
        return {x.source.offset: x for x in await dlq.read_letters(bootstrap)
                if x.source.topic == topics.EVENTS and x.source.partition == PARTITION
                and x.source.offset in (garbage_at, negative_at, unknown_at)}

    letters = await _eventually(lambda: _nonempty_when_three(ours))
    assert set(letters) == {garbage_at, negative_at, unknown_at}
    assert "not an envelope" in letters[garbage_at].error
    assert "negative" in letters[negative_at].error  # the table's CHECK, or the store's own
    assert "unknown message type 'WalletTeleported'" in letters[unknown_at].error
    assert letters[garbage_at].value == b"\x00 this is not an envelope {"

    code, listed = await _cli(running, "dlq", "list", "--json")
    assert code == 0, listed
    rows = {json.loads(line)["source"]: json.loads(line) for line in listed.splitlines()
            if line.startswith("{")}
    row = rows.get(f"{topics.EVENTS}:{PARTITION}:{unknown_at}")
    assert row is not None, listed
    assert row["type"] == "?" and "WalletTeleported" in row["error"] and row["redriven_at"] is None
    assert row["time"].startswith(str(datetime.now(UTC).year))

    # Re-driving a record that is still poison: sent once, dead-lettered again at its original
    # position; a second re-drive of the same letter sends nothing.
    garbage = letters[garbage_at]
    code, out = await _cli(running, "dlq", "redrive", f"{garbage.partition}:{garbage.offset}")
    assert code == 0 and "redriven" in out, out
    code, out = await _cli(running, "dlq", "redrive", f"{garbage.partition}:{garbage.offset}")
    assert code == 0 and "skipped" in out and "already re-driven" in out, out
    again = await _eventually(lambda: _letters_from(bootstrap, garbage_at))
    assert len(again) == 1 and again[0].source.offset > garbage_at, again

    # An event of a wallet whose later events are in the views is refused: a rebuild is the fix.
    await _send(bootstrap, [(wallet_key(negative), _credit(negative, symbol, 3), None)])
    assert await _eventually(lambda: pool.fetchval(
        "SELECT available FROM wallet_balances WHERE wallet = $1", negative)) == 3
    letter = letters[negative_at]
    code, out = await _cli(running, "dlq", "redrive", f"{letter.partition}:{letter.offset}")
    assert code == 1 and "refused" in out and "rebuild" in out, out


async def _nonempty_when_three(probe: Any) -> Any:
    found = await probe()
    return found if len(found) == 3 else None


async def _letters_from(bootstrap: str, original_offset: int) -> list[dlq.Letter]:
    return [x for x in await dlq.read_letters(bootstrap)
            if x.original is not None and x.original.offset == original_offset
            and x.original.partition == PARTITION and x.original.topic == topics.EVENTS]


async def test_a_redriven_event_applies_once_at_its_original_position(
    running: Running, pool: asyncpg.Pool
) -> None:
    bootstrap = running.stack.settings.kafka_bootstrap
    symbol, wallet = unique_symbol(), unique("late")
    # A position of ledger.events that no view holds: a record that was dead-lettered.
    (hole,) = await _send(bootstrap, [(wallet_key(wallet), b"not json", None)])
    assert await _eventually(lambda: _letters_at(bootstrap, hole))
    # The letter an older projector would have written for a valid event it could not apply.
    value = _credit(wallet, symbol, 7)
    headers = [("error", b"unknown message type"), ("source_topic", topics.EVENTS.encode()),
               ("source_partition", str(PARTITION).encode()), ("source_offset", str(hole).encode())]
    (letter_at,) = await _send(bootstrap, [(wallet_key(wallet), value, headers)], topic=topics.DLQ)

    assert await _dead_letter_at(pool, hole) is not None
    code, out = await _cli(running, "dlq", "redrive", f"{PARTITION}:{letter_at}")
    assert code == 0 and "redriven" in out, out
    assert await _eventually(lambda: pool.fetchval(
        "SELECT available FROM wallet_balances WHERE wallet = $1", wallet)) == 7
    # Applied at its original position, the event is no longer missing from the views.
    assert await _dead_letter_at(pool, hole) is None
    event_id = codec.decode(value).id
    position = await pool.fetchrow('SELECT partition, "offset" FROM events WHERE event_id = $1', event_id)
    assert tuple(position) == (PARTITION, hole)

    # A second copy (a re-drive that died before recording itself) changes nothing.
    (copy_at,) = await _send(bootstrap, [(wallet_key(wallet), value, [
        (dlq.REDRIVEN_FROM, f"{topics.DLQ}:{PARTITION}:{letter_at}".encode()),
        (dlq.ORIGINAL_POSITION, f"{topics.EVENTS}:{PARTITION}:{hole}".encode())])])
    await _eventually(lambda: _applied_past(pool, copy_at))
    assert await pool.fetchval("SELECT count(*) FROM ledger_entries WHERE event_id = $1", event_id) == 1
    assert await pool.fetchval("SELECT count(*) FROM events WHERE event_id = $1", event_id) == 1


async def _letters_at(bootstrap: str, offset: int) -> list[dlq.Letter]:
    return [x for x in await dlq.read_letters(bootstrap)
            if x.source.topic == topics.EVENTS and x.source.partition == PARTITION
            and x.source.offset == offset]


async def _applied_past(pool: asyncpg.Pool, offset: int) -> bool:
    stored = await pool.fetchval(
        "SELECT next_offset FROM ledger.projection_offsets WHERE projection = 'views' "
        "AND topic = $1 AND partition = $2", topics.EVENTS, PARTITION)
    return stored is not None and stored > offset


async def _dead_letter_at(pool: asyncpg.Pool, offset: int) -> Any:
    return await pool.fetchrow('SELECT * FROM dead_letters WHERE topic = $1 AND partition = $2 '
                               'AND "offset" = $3', topics.EVENTS, PARTITION, offset)


def _scrape(port: int) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], int, Any]:
    """The projector's metric samples, and its /healthz status and body."""
    base = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(base + "/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    with urllib.request.urlopen(base + "/healthz", timeout=5) as answer:
        return samples, answer.status, json.loads(answer.read())


REFUSED = ("ledgerline_projector_dead_letters_total",
           (("projection", "views"), ("reason", "refused_by_database"), ("topic", topics.EVENTS)))
STORED = ("ledgerline_projection_dead_letters", (("projection", "views"),))
FRESHNESS = "{ freshness { deadLetters } }"


async def test_a_dead_letter_shows_in_metrics_health_graphql_and_audit(
    running: Running, pool: asyncpg.Pool
) -> None:
    """The hostile-input issue as the projector met it: a transfer with a NUL memo, written to
    the event log by a processor that did not check it. PostgreSQL refuses the NUL, the record
    is dead-lettered, and every place an operator looks says so."""
    settings = running.stack.settings
    port = settings.projector_metrics_port
    before, _, _ = await asyncio.to_thread(_scrape, port)
    alice, bob = unique("alice"), unique("bob")
    initiated = TransferInitiated(transfer_id=str(uuid.uuid4()), source=alice, target=bob,
                                  asset=unique_symbol(), amount=5, memo="lunch\x00")
    value = codec.encode(codec.envelope(initiated, key=wallet_key(alice),
                                        command_id=str(uuid.uuid4()), principal="test"))
    (at,) = await _send(settings.kafka_bootstrap, [(wallet_key(alice), value, None)])

    row = await _eventually(lambda: _dead_letter_at(pool, at))
    assert row is not None
    assert (row["cause"], row["type"], row["key"]) == (
        "refused_by_database", "TransferInitiated", wallet_key(alice))
    assert "0x00" in row["error"] or "\\u0000" in row["error"], row["error"]
    stored = await pool.fetchval("SELECT count(*) FROM dead_letters")

    after, status, health = await asyncio.to_thread(_scrape, port)
    assert after[REFUSED] == before.get(REFUSED, 0) + 1
    assert after[STORED] == stored
    # Degraded, not down: still 200, so nothing restarts a projector that is doing its work.
    assert status == 200 and health["status"] == "degraded" and health["dead_letters"] == stored

    async with httpx.AsyncClient(timeout=30) as http:
        data = await graphql(http, running, token("ops", roles=["operator"]), FRESHNESS)
    assert data["freshness"]["deadLetters"] == stored

    code, out = await _cli(running, "audit", "--wait", "30")
    assert code == 1, out
    [line] = [x for x in out.splitlines() if x.startswith("DEAD LETTERS")]
    assert line.startswith(f"DEAD LETTERS {stored} record") and "ledgerline dlq list" in line, out
    if not any(x.startswith("MISMATCH") for x in out.splitlines()):
        # Other tests of the session may have left mismatches of their own behind; without them
        # the summary names the dead letters as the one thing wrong.
        assert out.splitlines()[-1].endswith(f"the views lack {stored} dead-lettered records"), out
