"""The deciders, flow by flow, driven through the pure in-memory loop."""

from typing import get_args

import pytest

from events.messages import (
    ApplyBurn,
    ApplyCredit,
    ApplySettlement,
    BurnFailed,
    BurnTokens,
    CreditWallet,
    FreezeWallet,
    InitiateTrade,
    InitiateTransfer,
    IssueTokens,
    PaymentReceived,
    ReduceSupply,
    ReleaseTradeAsset,
    SettleTrade,
    SupplyReduced,
    TokensBurned,
    TradeAssetLocked,
    TradeAssetReleased,
    TradeFailed,
    TradeInitiated,
    TransferFailed,
    UnfreezeWallet,
    WalletCredited,
    WalletFrozen,
    WalletUnfrozen,
)
from events.reasons import REASONS, Reason
from processor.decide import Balance, WalletState, decide
from tests.unit.driver import Ledger, funded


def trade(quantity: int = 3, price: int = 300, **kw: str) -> InitiateTrade:
    terms = {"trade_id": "t1", "seller": "sam", "buyer": "bea", "asset": "BOND",
             "payment_asset": "USDX", **kw}
    return InitiateTrade(quantity=quantity, price=price, **terms)


def balances(ledger: Ledger, wallet: str) -> dict[str, tuple[int, int]]:
    return {a: (b.available, b.held) for a, b in ledger.wallet(wallet).balances.items()}


def types(ledger: Ledger) -> list[str]:
    return [type(d.event).__name__ for d in ledger.decided]


def test_reasons_are_a_documented_closed_set() -> None:
    assert set(get_args(Reason)) == set(REASONS)
    assert all(REASONS.values())


def test_trade_settles_in_two_decisions_and_moves_both_legs() -> None:
    ledger = funded(sam={"BOND": 10}, bea={"USDX": 1000})
    start = len(ledger.decided)
    ledger.submit("wallet:sam", trade())

    [locked] = [e for e in ledger.deliver(ledger.inbox[0]) if isinstance(e, TradeAssetLocked)]
    assert (locked.available_after, locked.held_after) == (7, 3)
    assert balances(ledger, "sam")["BOND"] == (7, 3)
    [pay] = ledger.inbox
    assert pay.key == "wallet:bea"

    # The payment decides the settlement: the buyer takes the asset at once, and the seller's
    # side is written for the seller (keyed to it) in the same decision.
    paid, delivery = ledger.deliver(pay)
    assert isinstance(paid, PaymentReceived) and paid.available_after == 700
    assert isinstance(delivery, WalletCredited) and (delivery.wallet, delivery.kind) == (
        "bea", "trade_delivery")
    assert balances(ledger, "bea") == {"USDX": (700, 0), "BOND": (3, 0)}
    seller_side = [(d.key, type(d.event).__name__) for d in ledger.decided[start + 3:start + 6]]
    assert seller_side == [("wallet:sam", "AssetTransferred"), ("wallet:sam", "WalletCredited"),
                           ("wallet:sam", "TradeSettled")]
    [settle] = ledger.inbox
    assert settle.key == "wallet:sam" and isinstance(settle.command, ApplySettlement)
    assert balances(ledger, "sam")["BOND"] == (7, 3)  # the seller's state: not yet

    assert ledger.deliver(settle) == []  # decides nothing, brings the state up to date
    assert ledger.wallet("sam").holds == {}
    assert not ledger.inbox

    assert types(ledger)[start:] == [
        "TradeInitiated", "TradeAssetLocked", "PaymentReceived", "AssetTransferred",
        "WalletCredited", "TradeSettled", "WalletCredited",
    ]
    assert balances(ledger, "sam") == {"BOND": (7, 0), "USDX": (300, 0)}
    assert balances(ledger, "bea") == {"USDX": (700, 0), "BOND": (3, 0)}


def test_a_transfer_writes_the_payees_credit_with_the_debit() -> None:
    ledger = funded(ann={"USDX": 100}, bob={"USDX": 1})
    start = len(ledger.decided)
    ledger.submit("wallet:ann", InitiateTransfer(transfer_id="x", source="ann", target="bob",
                                                 asset="USDX", amount=40))
    ledger.deliver(ledger.inbox[0])
    written = [(d.key, type(d.event).__name__) for d in ledger.decided[start:]]
    assert written == [("wallet:ann", "TransferInitiated"), ("wallet:ann", "TransferConfirmed"),
                       ("wallet:bob", "WalletCredited")]
    [apply] = ledger.inbox
    assert apply.command == ApplyCredit(wallet="bob", asset="USDX", amount=40, kind="transfer",
                                        reference="x")
    assert ledger.deliver(apply) == []
    assert balances(ledger, "bob") == {"USDX": (41, 0)}


def test_older_follow_ups_are_still_decided_as_before() -> None:
    ledger = funded(bob={"USDX": 1}, sam={"BOND": 10})
    ledger.submit("wallet:bob", CreditWallet(wallet="bob", asset="USDX", amount=40,
                                             kind="transfer", reference="x"))
    [credited] = ledger.deliver(ledger.inbox[0])
    assert credited == WalletCredited(wallet="bob", asset="USDX", amount=40, kind="transfer",
                                      reference="x")
    assert balances(ledger, "bob") == {"USDX": (41, 0)}
    # A trade paid for under the three-step flow: the seller settles, the buyer's asset follows.
    ledger.submit("wallet:sam", trade())
    ledger.deliver(ledger.inbox[0])
    ledger.inbox.clear()  # the PayForTrade: this buyer paid before the upgrade
    terms = {k: getattr(trade(), k) for k in SettleTrade.__struct_fields__}
    ledger.submit("wallet:sam", SettleTrade(**terms))
    assert types_of(ledger.deliver(ledger.inbox[0])) == [
        "AssetTransferred", "WalletCredited", "TradeSettled"]
    assert balances(ledger, "sam") == {"BOND": (7, 0), "USDX": (300, 0)}
    ledger.drain()
    assert balances(ledger, "bea") == {"BOND": (3, 0)}


def types_of(events: list[object]) -> list[str]:
    return [type(e).__name__ for e in events]


@pytest.mark.parametrize(
    ("seller", "buyer", "frozen", "reason", "party"),
    [
        ({"BOND": 2}, {"USDX": 1000}, None, "insufficient_funds", "seller"),
        ({"BOND": 10}, {"USDX": 299}, None, "insufficient_funds", "buyer"),
        ({"BOND": 10}, {"USDX": 1000}, "sam", "wallet_frozen", "seller"),
        ({"BOND": 10}, {"USDX": 1000}, "bea", "wallet_frozen", "buyer"),
    ],
)
def test_failed_trade_leaves_both_wallets_as_they_were(
    seller: dict[str, int], buyer: dict[str, int], frozen: str | None, reason: str, party: str
) -> None:
    ledger = funded(sam=seller, bea=buyer)
    if frozen:
        ledger.submit(f"wallet:{frozen}", FreezeWallet(wallet=frozen, reason="inquiry"))
        ledger.drain()
    before = ledger.wallet("sam"), ledger.wallet("bea")
    start = len(ledger.decided)
    ledger.submit("wallet:sam", trade())
    ledger.drain()

    [failed] = [d.event for d in ledger.decided[start:] if isinstance(d.event, TradeFailed)]
    assert (failed.party, failed.reason) == (party, reason)
    released = [d.event for d in ledger.decided[start:] if isinstance(d.event, TradeAssetReleased)]
    assert len(released) == (1 if party == "buyer" else 0)
    assert (ledger.wallet("sam"), ledger.wallet("bea")) == before


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (trade(quantity=0), "invalid_amount"),
        (trade(price=0), "invalid_amount"),
        (trade(buyer="sam"), "same_wallet"),
        (trade(payment_asset="BOND"), "same_asset"),
    ],
)
def test_trade_refused_by_the_seller_locks_nothing(command: InitiateTrade, reason: str) -> None:
    ledger = funded(sam={"BOND": 10})
    events = decide(ledger.wallet("sam"), command)
    assert [type(e) for e in events] == [TradeInitiated, TradeFailed]
    assert isinstance(events[1], TradeFailed) and events[1].reason == reason


def test_a_trade_locked_and_paid_settles_even_if_the_seller_is_frozen_meanwhile() -> None:
    ledger = funded(sam={"BOND": 10}, bea={"USDX": 1000})
    ledger.submit("wallet:sam", trade())
    ledger.deliver(ledger.inbox[0])  # locked
    ledger.deliver(ledger.submit("wallet:sam", FreezeWallet(wallet="sam", reason="late")))
    ledger.drain()
    assert balances(ledger, "sam") == {"BOND": (7, 0), "USDX": (300, 0)}
    assert balances(ledger, "bea")["BOND"] == (3, 0)


def test_settle_or_release_without_a_lock_is_refused_as_poison() -> None:
    ledger = funded(sam={"BOND": 10})
    terms = {k: getattr(trade(), k) for k in SettleTrade.__struct_fields__}
    with pytest.raises(ValueError, match="holds None"):
        decide(ledger.wallet("sam"), SettleTrade(**terms))
    with pytest.raises(ValueError, match="holds None"):
        decide(ledger.wallet("sam"), ReleaseTradeAsset(**terms, reason="insufficient_funds"))


def test_frozen_wallet_cannot_be_debited_but_is_credited_and_unfreezes() -> None:
    ledger = funded(alice={"USDX": 100})
    [frozen] = ledger.deliver(ledger.submit("wallet:alice", FreezeWallet(wallet="alice",
                                                                          reason="court order")))
    assert frozen == WalletFrozen(wallet="alice", reason="court order")

    send = InitiateTransfer(transfer_id="x1", source="alice", target="bob", asset="USDX", amount=5)
    [_, failed] = ledger.deliver(ledger.submit("wallet:alice", send))
    assert isinstance(failed, TransferFailed) and failed.reason == "wallet_frozen"
    [burn_failed] = ledger.deliver(ledger.submit(
        "wallet:alice", BurnTokens(wallet="alice", asset="USDX", amount=1)))
    assert isinstance(burn_failed, BurnFailed) and burn_failed.reason == "wallet_frozen"

    ledger.submit("asset:USDX", IssueTokens(symbol="USDX", to="alice", amount=10))
    ledger.drain()
    assert balances(ledger, "alice") == {"USDX": (110, 0)}

    [thawed] = ledger.deliver(ledger.submit("wallet:alice", UnfreezeWallet(wallet="alice",
                                                                           reason="lifted")))
    assert isinstance(thawed, WalletUnfrozen)
    ledger.submit("wallet:alice", send)
    ledger.drain()
    assert balances(ledger, "alice") == {"USDX": (105, 0)}
    assert balances(ledger, "bob") == {"USDX": (5, 0)}


def test_a_burn_writes_the_supply_reduction_with_the_debit() -> None:
    ledger = funded(alice={"USDX": 100})
    start = len(ledger.decided)
    [burned] = ledger.deliver(ledger.submit("wallet:alice", BurnTokens(wallet="alice",
                                                                       asset="USDX", amount=40)))
    assert isinstance(burned, TokensBurned) and burned.available_after == 60
    written = [(d.key, d.event) for d in ledger.decided[start:]]
    assert written[1] == ("asset:USDX", SupplyReduced(symbol="USDX", wallet="alice", amount=40))
    [apply] = ledger.inbox
    assert apply.key == "asset:USDX" and apply.command == ApplyBurn(
        symbol="USDX", wallet="alice", amount=40)
    asset = ledger.asset("USDX")
    assert asset is not None and (asset.supply, asset.burned) == (100, 0)  # not taken yet
    assert ledger.deliver(apply) == []
    asset = ledger.asset("USDX")
    assert asset is not None and (asset.supply, asset.burned) == (60, 40)


def test_a_reduce_supply_of_an_older_log_is_decided_as_before() -> None:
    ledger = funded(alice={"USDX": 100})
    [reduced] = ledger.deliver(ledger.submit("asset:USDX", ReduceSupply(
        symbol="USDX", wallet="alice", amount=40)))
    assert reduced == SupplyReduced(symbol="USDX", wallet="alice", amount=40)
    asset = ledger.asset("USDX")
    assert asset is not None and (asset.supply, asset.burned) == (60, 40)


@pytest.mark.parametrize(("amount", "reason"), [(101, "insufficient_funds"), (0, "invalid_amount")])
def test_burn_beyond_the_balance_fails(amount: int, reason: str) -> None:
    ledger = funded(alice={"USDX": 100})
    [failed] = ledger.deliver(ledger.submit("wallet:alice", BurnTokens(wallet="alice",
                                                                       asset="USDX", amount=amount)))
    assert isinstance(failed, BurnFailed) and failed.reason == reason
    assert ledger.inbox == [] and balances(ledger, "alice") == {"USDX": (100, 0)}


def test_reducing_the_supply_below_zero_is_poison() -> None:
    ledger = funded(alice={"USDX": 5})
    with pytest.raises(ValueError, match="cannot reduce"):
        decide(ledger.asset("USDX"), ReduceSupply(symbol="USDX", wallet="alice", amount=6))
    with pytest.raises(TypeError):
        decide(None, ReduceSupply(symbol="NOPE", wallet="alice", amount=1))


def test_a_redelivered_request_changes_nothing() -> None:
    ledger = funded(alice={"USDX": 100})
    send = ledger.submit("wallet:alice", InitiateTransfer(
        transfer_id="x1", source="alice", target="bob", asset="USDX", amount=5))
    ledger.drain()
    snapshots, decided = dict(ledger.snapshots), len(ledger.decided)
    for request in list(ledger.delivered):
        assert ledger.deliver(request) == []
    assert ledger.snapshots == snapshots and len(ledger.decided) == decided
    assert ledger.inbox == [] and send in ledger.delivered
    assert ledger.wallet("alice").balances == {"USDX": Balance(95, 0)}
    assert ledger.wallet("bob") == WalletState(balances={"USDX": Balance(5, 0)})
