"""The pure projection of the new flows: trades, burns, freezes, and order independence."""

from itertools import groupby
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from events.codec import Envelope
from events.messages import (
    BurnTokens,
    FreezeWallet,
    InitiateTrade,
    InitiateTransfer,
    UnfreezeWallet,
)
from events.readmodel import FINAL_COMMAND_STATUSES
from projector.fold import Position, RowChanges, apply
from tests.unit.driver import envelopes, funded


def fold(envs: list[Envelope]) -> RowChanges:
    changes = RowChanges()
    for n, env in enumerate(envs):
        apply(changes, env, Position("ledger.events", 0, n))
    return changes


def trade_events(buyer_has: int) -> list[Envelope]:
    ledger = funded(sam={"BOND": 10}, bea={"USDX": buyer_has})
    skip = len(ledger.decided)
    ledger.submit("wallet:sam", InitiateTrade(trade_id="t1", seller="sam", buyer="bea",
                                              asset="BOND", quantity=3, payment_asset="USDX",
                                              price=300))
    ledger.drain()
    return envelopes(ledger, skip=skip)


def test_a_settled_trade_is_final_only_with_the_buyers_credit() -> None:
    events = trade_events(1000)
    before_credit = fold(events[:-1])
    assert before_credit.trades["t1"]["status"] == "transferred"
    assert before_credit.commands["cmd"]["status"] == "confirmed"

    changes = fold(events)
    trade = changes.trades["t1"]
    assert trade["status"] == "settled" and trade["reason"] is None
    assert all(trade[c] is not None for c in ("created_at", "asset_locked_at", "paid_at",
                                              "transferred_at", "settled_at"))
    assert (trade["seller"], trade["buyer"], trade["quantity"], trade["price"]) == ("sam", "bea", 3, 300)
    assert changes.commands["cmd"]["status"] == "settled"
    assert changes.commands["cmd"]["type"] == "InitiateTrade"
    # Changes over the batch: the store adds what each balance was before it.
    balances = {k: (r["available"], r["held"]) for k, r in changes.balances.items()}
    assert balances == {("sam", "BOND"): (-3, 0), ("sam", "USDX"): (300, 0),
                        ("bea", "USDX"): (-300, 0), ("bea", "BOND"): (3, 0)}
    kinds = [(e["wallet"], e["kind"], e["delta"]) for e in changes.entries]
    assert kinds == [("sam", "trade_lock", 0), ("bea", "trade_payment_out", -300),
                     ("sam", "trade_delivery_out", -3), ("sam", "trade_payment_in", 300),
                     ("bea", "trade_delivery_in", 3)]


def test_a_buyer_failure_is_final_only_once_the_lock_is_released() -> None:
    events = trade_events(10)
    assert [e.type for e in events] == ["TradeInitiated", "TradeAssetLocked", "TradeFailed",
                                        "TradeAssetReleased"]
    assert fold(events[:-1]).commands["cmd"]["status"] == "confirmed"
    changes = fold(events)
    assert changes.commands["cmd"]["status"] == "failed"
    assert changes.commands["cmd"]["reason"] == "insufficient_funds"
    trade = changes.trades["t1"]
    assert (trade["status"], trade["reason"], trade["failed_party"]) == (
        "failed", "insufficient_funds", "buyer")
    assert trade["released_at"] is not None and trade["paid_at"] is None
    assert changes.balances[("sam", "BOND")] | {"updated_at": None} == {
        "wallet": "sam", "asset": "BOND", "available": 0, "held": 0, "updated_at": None}


def _final(rows: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    return {k: (r["status"], r["reason"]) for k, r in rows.items()}


@settings(max_examples=40, deadline=None)
@given(data=st.data(), buyer_has=st.sampled_from([10, 1000]))
def test_trade_rows_do_not_depend_on_the_order_partitions_are_applied(
    data: st.DataObject, buyer_has: int
) -> None:
    events = trade_events(buyer_has)
    partitions = [list(g) for _, g in groupby(sorted(events, key=lambda e: e.key),
                                              key=lambda e: e.key)]
    # Interleave the partitions at random, each one's events in their own order.
    order = data.draw(st.permutations([n for n, p in enumerate(partitions) for _ in p]))
    cursors = [iter(p) for p in partitions]
    shuffled = [next(cursors[n]) for n in order]
    expected, got = fold(events), fold(shuffled)
    assert _final(got.trades) == _final(expected.trades)
    assert _final(got.commands) == _final(expected.commands)
    assert got.commands["cmd"]["status"] in FINAL_COMMAND_STATUSES
    assert got.trades["t1"] | {"updated_at": None} == expected.trades["t1"] | {"updated_at": None}


def test_a_transfer_is_completed_only_with_both_halves_whichever_partition_comes_first() -> None:
    ledger = funded(ann={"USDX": 100})
    skip = len(ledger.decided)
    ledger.submit("wallet:ann", InitiateTransfer(transfer_id="x", source="ann", target="bob",
                                                 asset="USDX", amount=40))
    ledger.drain()
    initiated, confirmed, credited = envelopes(ledger, "pay", skip)
    assert credited.key == "wallet:bob"
    credit_first = fold([credited])
    assert credit_first.transfers["x"]["status"] == "confirmed"
    assert credit_first.commands["pay"]["status"] == "confirmed"
    debit_first = fold([initiated, confirmed])
    assert debit_first.commands["pay"]["status"] == "confirmed"
    for order in ([initiated, confirmed, credited], [credited, initiated, confirmed]):
        both = fold(order)
        assert both.transfers["x"]["status"] == "completed"
        assert both.commands["pay"]["status"] == "completed"


def test_burn_and_freeze_rows() -> None:
    ledger = funded(alice={"USDX": 100})
    skip = len(ledger.decided)
    ledger.submit("wallet:alice", BurnTokens(wallet="alice", asset="USDX", amount=40))
    ledger.drain()
    burn = fold(envelopes(ledger, "burn", skip))
    # Changes over the batch: the store adds them to the asset's row.
    assert burn.supply == {"USDX": {"symbol": "USDX", "supply": -40, "burned": 40}}
    assert burn.commands["burn"]["status"] == "completed"  # both halves in this batch
    debit, reduced = envelopes(ledger, "burn", skip)
    assert (debit.key, reduced.key) == ("wallet:alice", "asset:USDX")
    assert fold([reduced]).commands["burn"]["status"] == "confirmed"
    assert fold([debit]).commands["burn"]["status"] == "confirmed"
    assert burn.commands["burn"]["type"] == "BurnTokens"
    # The change within the batch; the store adds the balance before the batch (100).
    assert [(e["kind"], e["delta"], e["available_change"]) for e in burn.entries] == [("burn", -40, -40)]

    skip = len(ledger.decided)
    ledger.submit("wallet:alice", FreezeWallet(wallet="alice", reason="inquiry"))
    ledger.submit("wallet:alice", UnfreezeWallet(wallet="alice", reason="cleared"))
    ledger.drain()
    freeze = fold(envelopes(ledger, "freeze", skip))
    row = freeze.freezes["alice"]
    assert (row["frozen"], row["freeze_reason"]) == (False, "cleared")
    assert set(freeze.wallets) == {"alice"}
    assert fold(envelopes(ledger, "freeze", skip)[:1]).freezes["alice"]["frozen"] is True
