"""The hash chain against the real pipeline: what the processor wrote verifies in Kafka and in
PostgreSQL; an event row edited by a superuser, and a forged record in ``ledger.events``, are
each named by ``ledgerline audit --verify-chain``, which then exits 1; the roles of the views
can neither update nor delete the audit trail, and a rebuild keeps that guard.

All tests share one broker and one database: the checks of an untouched log verify the range of
offsets this module's own traffic wrote (``--from``/``--to``), so records other tests produce
straight to ``ledger.events`` (poison, forgeries, this module's included) never make them fail,
whatever the order; an edited row is put back.
"""

import asyncio
import uuid
from dataclasses import dataclass

import asyncpg
import httpx
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from common.kafka import client_options
from events import chain, codec, topics
from events.messages import WalletFrozen
from ledgerline.stack.anchor_key import PUBLIC_FILE
from processor.outbox import Partitioner
from projector import shadow
from tests.conftest import Running, token, unique, unique_symbol
from tests.e2e.helpers import new_asset, post
from tests.integration.chain_support import end_offsets, scope, verify
from tests.integration.projector_support import caught_up

pytestmark = pytest.mark.integration


@dataclass
class Segment:
    running: Running
    before: dict[int, int]
    after: dict[int, int]
    alice: str
    bob: str
    cash: str

    def scope(self) -> list[str]:
        return scope(self.before, self.after)


def _first_break(out: str, partition: int) -> int:
    """The offset ``audit --verify-chain`` names as the first break of the events table's
    ``partition``."""
    marker = f"events table: partition {partition} first breaks at events row {topics.EVENTS}[{partition}]@"
    [line] = [x for x in out.splitlines() if x.startswith(marker)]
    return int(line[len(marker):].split()[0])


async def _pool(running: Running) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(running.stack.infra.database_url, min_size=1,
                                                   max_size=2)
    return pool


@pytest.fixture(scope="module")
async def chained(running: Running) -> Segment:
    """An issue and two transfers, and the range of ledger.events they were written to."""
    bootstrap = running.stack.settings.kafka_bootstrap
    before = await end_offsets(bootstrap)
    cash, alice, bob = unique_symbol(), unique("alice"), unique("bob")
    issuer = token("treasury", roles=["issuer"], assets=[cash])
    operator = token("ops", roles=["operator"])
    async with httpx.AsyncClient(timeout=30) as http:
        await new_asset(http, running, issuer, cash)
        answer = await post(http, running, f"/v1/assets/{cash}/issue", issuer,
                            {"to": alice, "amount": "100.00"})
        assert answer.json()["status"] == "completed", answer.text
        for amount in ("10.00", "5.00"):
            answer = await post(http, running, "/v1/transfers", operator,
                                {"from": alice, "to": bob, "asset": cash, "amount": amount})
            assert answer.json()["status"] == "completed", answer.text
    pool = await _pool(running)
    try:
        await caught_up(pool, bootstrap)
    finally:
        await pool.close()
    return Segment(running, before, await end_offsets(bootstrap), alice, bob, cash)


async def test_what_the_pipeline_wrote_verifies_in_kafka_and_in_the_table(chained: Segment) -> None:
    code, out = await verify(chained.running, *chained.scope())
    assert code == 0, out
    assert "BROKEN" not in out
    lines = out.splitlines()
    [kafka] = [line for line in lines if line.startswith(f"{topics.EVENTS}: ")]
    records, signed = int(kafka.split()[1]), int(kafka.split(", ")[1].split()[0])
    assert records >= 8 and signed >= 3, out  # every transaction signs its records
    [table] = [line for line in lines if line.startswith("events table: ")]
    assert int(table.split()[2]) == records, out
    [anchors] = [line for line in lines if line.startswith(f"{topics.ANCHORS}: ")]
    assert int(anchors.split()[1]) >= 1 and anchors.split()[1] == anchors.split()[3], out
    assert lines[-1] == "verify-chain: 0 broken: every chain holds"
    # The checkpoints an operator copies off-site, and the key to check them with.
    home = chained.running.stack.home
    assert (home / "anchors.jsonl").read_text().count("\n") >= 1
    assert (home / PUBLIC_FILE).read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


async def test_an_event_row_edited_by_a_superuser_is_named(chained: Segment) -> None:
    admin = await asyncpg.connect(chained.running.stack.infra.admin_url)
    try:
        row = await admin.fetchrow(
            "SELECT event_id, partition, \"offset\", payload::text AS payload FROM events "
            "WHERE type = 'WalletCredited' AND key = $1 ORDER BY \"offset\" LIMIT 1",
            f"wallet:{chained.bob}")
        assert row is not None
        # An attacker with the superuser's rights goes around the append-only guard.
        await admin.execute("SET ledgerline.rewrite = 'allowed'")
        await admin.execute("UPDATE events SET payload = jsonb_set(payload, '{amount}', "
                            "to_jsonb((payload->>'amount')::numeric * 10)) WHERE event_id = $1",
                            row["event_id"])
        try:
            code, out = await verify(chained.running, *chained.scope())
        finally:
            await admin.execute("UPDATE events SET payload = $2::jsonb WHERE event_id = $1",
                                row["event_id"], row["payload"])
    finally:
        await admin.close()
    assert code == 1, out
    where = f"events row {topics.EVENTS}[{row['partition']}]@{row['offset']}"
    assert f"BROKEN {where}: " in out
    # The records its transaction wrote before it may be named too: the transaction's signature,
    # on the edited record, no longer confirms them (how many depends on how commands batched).
    first = _first_break(out, row["partition"])
    assert chained.before[row["partition"]] <= first <= row["offset"], out
    [kafka] = [line for line in out.splitlines() if line.startswith(f"{topics.EVENTS}: ")]
    assert kafka.endswith(" 0 broken"), out  # the log itself is intact
    assert "the chain is BROKEN" in out.splitlines()[-1]


@pytest.mark.parametrize("tampering", ["delete", "reorder"])
async def test_a_row_deleted_or_rows_reordered_by_a_superuser_are_named(chained: Segment,
                                                                       tampering: str) -> None:
    admin = await asyncpg.connect(chained.running.stack.infra.admin_url)
    try:
        first, second = await admin.fetch(
            "SELECT * FROM events WHERE type = 'WalletCredited' AND key = $1 ORDER BY \"offset\" "
            "LIMIT 2", f"wallet:{chained.bob}")  # the fixture's two transfers
        assert first["offset"] < chained.after[first["partition"]]
        assert first["partition"] == second["partition"]
        after_first = await admin.fetchval(  # the next record of the same chain
            "SELECT \"offset\" FROM events WHERE partition = $1 AND chain_writer = $2 "
            "AND \"offset\" > $3 ORDER BY \"offset\" LIMIT 1", first["partition"],
            first["chain_writer"], first["offset"])
        await admin.execute("SET ledgerline.rewrite = 'allowed'")
        swap = ("UPDATE events SET \"offset\" = CASE event_id WHEN $1 THEN $4::bigint ELSE $3::bigint "
                "END WHERE event_id IN ($1, $2)")
        if tampering == "delete":
            await admin.execute("DELETE FROM events WHERE event_id = $1", first["event_id"])
        else:
            await admin.execute(swap, first["event_id"], second["event_id"], first["offset"],
                                second["offset"])
        try:
            code, out = await verify(chained.running, *chained.scope())
        finally:
            if tampering == "delete":
                columns = ", ".join(f'"{c}"' for c in first.keys())
                await admin.execute(
                    f"INSERT INTO events ({columns}) SELECT * FROM jsonb_populate_record("
                    "NULL::events, $1::jsonb)", msgspec.json.encode(
                        {k: (f"\\x{v.hex()}" if isinstance(v, bytes) else
                             msgspec.json.decode(v) if k == "payload" else v)
                         for k, v in first.items()}).decode())
            else:
                await admin.execute(swap, first["event_id"], second["event_id"], second["offset"],
                                    first["offset"])
        restored = await admin.fetchval("SELECT count(*) FROM events WHERE event_id = $1 AND "
                                        "\"offset\" = $2", first["event_id"], first["offset"])
    finally:
        await admin.close()
    assert restored == 1
    assert code == 1, out
    p = first["partition"]
    # Deleted: the chain breaks at the next row of the chain. Reordered: at the first position,
    # where the later record now stands.
    at = after_first if tampering == "delete" else first["offset"]
    named = f"events row {topics.EVENTS}[{p}]@{at}"
    assert f"BROKEN {named}: " in out, out
    # Earlier records of the same signed transaction may be named too (see the edit test).
    assert chained.before[p] <= _first_break(out, p) <= at, out
    [kafka] = [line for line in out.splitlines() if line.startswith(f"{topics.EVENTS}: ")]
    assert kafka.endswith(" 0 broken"), out


async def test_a_forged_record_in_ledger_events_is_named(chained: Segment) -> None:
    running = chained.running
    bootstrap = running.stack.settings.kafka_bootstrap
    start = await end_offsets(bootstrap)
    partition = Partitioner(sorted(start)).partition(f"wallet:{chained.alice}".encode())
    # The forger reads the head of the chain alice's events are in, and extends it correctly:
    # the right writer, the next seq, the right prev. Only the signature is beyond reach.
    consumer = AIOKafkaConsumer(**client_options(bootstrap), isolation_level="read_committed",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topics.EVENTS, partition)
        consumer.assign([tp])
        consumer.seek(tp, chained.before.get(partition, 0))
        last, writer = {}, None  # the last record of each chain; the chain alice's debits are in
        while await consumer.position(tp) < start[partition]:
            for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                link = chain.read_headers(record.headers)
                if record.offset < start[partition] and link is not None:
                    last[link.writer] = (link, chain.content(record.value))
                    if chain.content(record.value).key == f"wallet:{chained.alice}":
                        writer = link.writer
    finally:
        await consumer.stop()
    assert writer is not None
    link, content = last[writer]
    head = chain.link(link.writer, partition, link.seq, link.prev, content)
    victim = unique("victim")
    forged = codec.encode(codec.envelope(WalletFrozen(wallet=victim, reason="forged"),
                                         key=f"wallet:{victim}", command_id=str(uuid.uuid4()),
                                         principal="ops"))
    producer = AIOKafkaProducer(**client_options(bootstrap), acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(topics.EVENTS, forged, key=f"wallet:{victim}".encode(),
                                            partition=partition,
                                            headers=chain.headers(link.writer, link.seq + 1, head))
    finally:
        await producer.stop()
    # The writer goes on from its real head: the chain forks at the forged record.
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await post(http, running, "/v1/transfers", token("ops", roles=["operator"]),
                            {"from": chained.alice, "to": chained.bob, "asset": chained.cash,
                             "amount": "1.00"})
        assert answer.json()["status"] == "completed", answer.text
    pool = await _pool(running)
    try:
        await caught_up(pool, bootstrap)
    finally:
        await pool.close()
    code, out = await verify(running, *[a for p, o in sorted(start.items())
                                        for a in ("--from", f"{p}:{o}")])
    assert code == 1, out
    named = f"{topics.EVENTS}[{partition}]@{sent.offset}"
    assert f"BROKEN {named}: " in out
    assert f"{topics.EVENTS}: partition {partition} first breaks at {named}" in out
    # The projector stored it like any other event; the table names it too.
    assert f"events table: partition {partition} first breaks at events row {named}" in out
    assert sum(line.startswith("BROKEN ") for line in out.splitlines()) == 2, out


@pytest.mark.parametrize("table", ["events", "ledger_entries"])
async def test_the_roles_of_the_views_cannot_rewrite_the_audit_trail(running: Running,
                                                                    table: str) -> None:
    app = await asyncpg.connect(running.stack.infra.database_url)  # the projector's, the APIs' role
    admin = await asyncpg.connect(running.stack.infra.admin_url)
    try:
        key = await app.fetchval(f"SELECT event_id FROM {table} LIMIT 1")
        assert key is not None
        for conn in (app, admin):  # the superuser too, without the migrations' setting
            for statement in (f"UPDATE {table} SET event_id = event_id WHERE event_id = $1",
                              f"DELETE FROM {table} WHERE event_id = $1"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                    await conn.execute(statement, key)
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(f"TRUNCATE {table}")
        assert await app.fetchval(f"SELECT count(*) FROM {table} WHERE event_id = $1", key) == 1
        async with admin.transaction():  # the reporting role reads views only
            await admin.execute("SET LOCAL ROLE ledgerline_reporting")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await admin.execute(f"DELETE FROM ledger.{table}")
    finally:
        await app.close()
        await admin.close()


async def test_a_rebuild_builds_tables_with_the_same_guard(running: Running) -> None:
    conn = await asyncpg.connect(running.stack.infra.database_url)
    try:
        await shadow.create_shadow(conn)
        try:
            guarded = await conn.fetch(
                "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 "
                "AND NOT t.tgisinternal ORDER BY 1, 2", shadow.SHADOW)
            await conn.execute(f"INSERT INTO {shadow.SHADOW}.ledger_entries SELECT * FROM "
                               "ledger_entries LIMIT 1")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(f"DELETE FROM {shadow.SHADOW}.ledger_entries")
        finally:
            await shadow.drop_shadow(conn)
    finally:
        await conn.close()
    assert [tuple(r) for r in guarded] == [
        ("events", "events_append_only"), ("events", "events_no_truncate"),
        ("ledger_entries", "ledger_entries_append_only"),
        ("ledger_entries", "ledger_entries_no_truncate")]


async def test_an_idle_writer_checkpoints_its_last_heads(chained: Segment) -> None:
    """The last batch's heads reach a signed checkpoint (file and topic) though no batch follows."""
    conn = await asyncpg.connect(chained.running.stack.infra.database_url)
    try:
        writer, partition, seq = await conn.fetchrow(
            "SELECT chain_writer, partition, chain_seq FROM events WHERE key = $1 "
            "ORDER BY \"offset\" DESC LIMIT 1", f"wallet:{chained.bob}")
    finally:
        await conn.close()
    path = chained.running.stack.home / "anchors.jsonl"
    deadline = asyncio.get_running_loop().time() + 40  # LEDGERLINE_ANCHOR_EVERY_SECONDS: 10
    while True:
        anchors = [chain.decode_anchor(line.encode()) for line in path.read_text().splitlines()]
        if any(a.writer == writer and a.heads.get(str(partition), (0, ""))[0] >= seq
               for a in anchors):
            break
        assert asyncio.get_running_loop().time() < deadline, anchors[-3:]
        await asyncio.sleep(0.5)
    line = path.read_text().splitlines()[-1]
    anchor = chain.decode_anchor(line.encode())
    assert anchor.writer.startswith("ledger-processor-tx-") and anchor.heads
    assert msgspec.json.decode(line)["signature"] == anchor.signature and len(anchor.signature) == 128
