"""The projector's writes reach the real tables value for value: text COPY of outside text that
holds COPY's own separators, money beyond 64 bits, times to the microsecond."""

import json
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from common.settings import asyncpg_dsn
from events import codec
from events.messages import TransferConfirmed, WalletCredited
from projector import store
from projector.fold import Position, RowChanges, apply
from tests.conftest import Stack

pytestmark = pytest.mark.integration

AWKWARD = 'tab\there, line\nbreak, \\N, back\\slash, "quoted"\r'


class _RolledBack(Exception):
    pass


async def test_copied_rows_read_back_exactly(stack: Stack) -> None:
    wallet = f"w-{uuid.uuid4().hex[:8]}{AWKWARD}"
    huge = 10**30 + 7  # an 18-decimal asset's amounts do not fit 64 bits
    at = datetime(2026, 3, 4, 5, 6, 7, 891_234, tzinfo=UTC)
    event = WalletCredited(wallet=wallet, asset="USDX", amount=huge, kind="transfer",
                           reference=AWKWARD)
    env = codec.envelope(event, key=f"wallet:{wallet}", command_id=str(uuid.uuid4()),
                         principal=AWKWARD, correlation_id=None, occurred_at=at)
    changes = RowChanges()
    apply(changes, env, Position("ledger.events", 0, 0))

    conn = await asyncpg.connect(asyncpg_dsn(stack.settings.database_url))
    try:
        with pytest.raises(_RolledBack):  # nothing of this test stays in the views
            async with conn.transaction():
                await store.write_batch(conn, changes, f"test-{uuid.uuid4()}", "ledger.events",
                                        {0: (None, 1)}, swap_lock=False)
                ev = await conn.fetchrow("SELECT * FROM events WHERE event_id = $1", env.id)
                le = await conn.fetchrow("SELECT * FROM ledger_entries WHERE event_id = $1", env.id)
                bal = await conn.fetchrow("SELECT * FROM wallet_balances WHERE wallet = $1", wallet)
                raise _RolledBack
    finally:
        await conn.close()

    assert (ev["key"], ev["principal"], ev["correlation_id"], ev["occurred_at"]) == (
        f"wallet:{wallet}", AWKWARD, None, at)
    payload = json.loads(ev["payload"])
    assert (payload["wallet"], payload["reference"], payload["amount"]) == (wallet, AWKWARD, huge)
    assert (le["wallet"], le["reference"], le["delta"], le["available_after"], le["occurred_at"]) == (
        wallet, AWKWARD, huge, huge, at)
    assert (bal["available"], bal["updated_at"]) == (huge, at)


async def test_offsets_move_only_from_where_this_instance_expects_them(stack: Stack) -> None:
    projection, topic = f"test-{uuid.uuid4()}", "ledger.events"
    empty = RowChanges()
    conn = await asyncpg.connect(asyncpg_dsn(stack.settings.database_url))
    try:
        await store.write_batch(conn, empty, projection, topic, {0: (None, 5), 1: (None, 3)},
                                swap_lock=False)
        assert await store.load_offsets(conn, projection, topic) == {0: 5, 1: 3}
        # Partition 1 was created by someone else: expecting none there is stale, and nothing
        # of the batch moves, partition 0 included.
        with pytest.raises(store.OffsetConflict, match=r"\[1\]"):
            await store.write_batch(conn, empty, projection, topic, {0: (5, 9), 1: (None, 4)},
                                    swap_lock=False)
        # Expecting an offset another instance has moved on from is stale too.
        with pytest.raises(store.OffsetConflict, match=r"\[0\]"):
            await store.write_batch(conn, empty, projection, topic, {0: (4, 9)}, swap_lock=False)
        assert await store.load_offsets(conn, projection, topic) == {0: 5, 1: 3}
        await store.write_batch(conn, empty, projection, topic, {0: (5, 9), 1: (3, 4), 2: (None, 1)},
                                swap_lock=False)
        assert await store.load_offsets(conn, projection, topic) == {0: 9, 1: 4, 2: 1}
    finally:
        await conn.execute("DELETE FROM projection_offsets WHERE projection = $1", projection)
        await conn.close()


def _changes(*envs: codec.Envelope) -> RowChanges:
    changes = RowChanges()
    for n, env in enumerate(envs):
        apply(changes, env, Position("ledger.events", 0, n))
    return changes


async def test_balances_are_running_sums_across_batches_and_refused_below_zero_at_any_event(
    stack: Stack,
) -> None:
    wallet, payee = f"sum-{uuid.uuid4().hex[:8]}", f"sum-{uuid.uuid4().hex[:8]}"

    def credit(amount: int) -> codec.Envelope:
        return codec.envelope(WalletCredited(wallet=wallet, asset="USDX", amount=amount,
                                             kind="issue", reference="USDX"),
                              key=f"wallet:{wallet}", command_id=str(uuid.uuid4()), principal="p")

    def debit(amount: int, decided_as: int) -> codec.Envelope:
        # decided_as: what the wallet's processor held after it, not counting a credit it had
        # not applied yet; the views must not take it.
        return codec.envelope(TransferConfirmed(
            transfer_id=str(uuid.uuid4()), source=wallet, target=payee, asset="USDX",
            amount=amount, available_after=decided_as, held_after=0),
            key=f"wallet:{wallet}", command_id=str(uuid.uuid4()), principal="p")

    projection, topic = f"test-{uuid.uuid4()}", "ledger.events"
    later = [credit(5), debit(4, 6), credit(7)]
    conn = await asyncpg.connect(asyncpg_dsn(stack.settings.database_url))
    try:
        with pytest.raises(_RolledBack):
            async with conn.transaction():
                await store.write_batch(conn, _changes(credit(10)), projection, topic,
                                        {0: (None, 1)}, swap_lock=False)
                await store.write_batch(conn, _changes(*later), projection, topic,
                                        {0: (1, 4)}, swap_lock=False)
                entries = await conn.fetch(
                    "SELECT event_id, delta, available_after FROM ledger_entries WHERE wallet = $1",
                    wallet)
                balance = await conn.fetchval(
                    "SELECT available FROM wallet_balances WHERE wallet = $1", wallet)
                # Below zero at one event, though the batch ends above it: refused, nothing kept.
                with pytest.raises(store.NegativeBalance, match="would be negative"):
                    await store.write_batch(conn, _changes(debit(30, 0), credit(40)), projection,
                                            topic, {0: (4, 6)}, swap_lock=False)
                after_refusal = await conn.fetchval(
                    "SELECT available FROM wallet_balances WHERE wallet = $1", wallet)
                raise _RolledBack
    finally:
        await conn.execute("DELETE FROM projection_offsets WHERE projection = $1", projection)
        await conn.close()
    by_event = {r["event_id"]: (int(r["delta"]), int(r["available_after"])) for r in entries}
    assert [by_event[e.id] for e in later] == [(5, 15), (-4, 11), (7, 18)]
    assert balance == after_refusal == 18


async def test_notifications_go_with_the_commit_in_order_and_byte_for_byte(stack: Stack) -> None:
    # The batch's NOTIFYs travel in the COMMIT's own query, as literals: text that means something
    # to SQL (quotes, backslashes) must arrive as it was written, in order, and only on commit.
    dsn = asyncpg_dsn(stack.settings.database_url)
    heard: list[str] = []
    listener = await asyncpg.connect(dsn)
    conn = await asyncpg.connect(dsn)
    payloads = [json.dumps({"wallets": [AWKWARD, "it's"]}), "back\\slash 'and' E'quote'", "3"]
    try:
        await listener.add_listener(store.CHANNEL, lambda *args: heard.append(args[3]))
        with pytest.raises(_RolledBack):
            async with store._Transaction(conn, swap_lock=True) as transaction:
                transaction.notifications = ["never sent"]
                raise _RolledBack
        assert not conn.is_in_transaction()
        async with store._Transaction(conn, swap_lock=True) as transaction:
            transaction.notifications = payloads
        assert not conn.is_in_transaction()
        for _ in range(100):
            if len(heard) >= len(payloads):
                break
            await listener.execute("SELECT 1")
    finally:
        await listener.close()
        await conn.close()
    assert heard == payloads
