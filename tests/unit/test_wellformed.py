"""Commands the API would have refused, produced straight to Kafka: the deciders refuse them with
their ordinary refusal events and a reason, change no balance, and repeat only what the views
can hold."""

from typing import Any

import pytest

from events.grammar import MAX_UNITS
from events.messages import (
    AssetRegistrationRejected,
    BurnFailed,
    BurnTokens,
    CreditWallet,
    FreezeRejected,
    FreezeWallet,
    InitiateTrade,
    InitiateTransfer,
    IssueRejected,
    IssueTokens,
    PayForTrade,
    RegisterAsset,
    TradeFailed,
    TradeInitiated,
    TransferFailed,
    TransferInitiated,
    UnfreezeWallet,
)
from processor.decide import decide
from processor.wellformed import envelope_problem, refusal, shown, shown_units
from tests.unit.driver import funded


def transfer(**kw: Any) -> InitiateTransfer:
    fields = {"transfer_id": "x1", "source": "alice", "target": "bob", "asset": "USDX", "amount": 5,
              **kw}
    return InitiateTransfer(**fields)


def register(**kw: Any) -> RegisterAsset:
    return RegisterAsset(**{"symbol": "CASH", "name": "Cash", "decimals": 2, "issuer": "treasury",
                            **kw})


@pytest.mark.parametrize(("command", "reason"), [
    (transfer(memo="lunch\x00"), "invalid_text"),
    (transfer(memo="line\nbreak"), "invalid_text"),
    (transfer(memo="x" * 281), "invalid_text"),
    (transfer(target="bob\n"), "invalid_wallet"),
    (transfer(target="bob\x00"), "invalid_wallet"),
    (transfer(target=""), "invalid_wallet"),
    (transfer(asset="usdx"), "invalid_symbol"),
    (transfer(asset="USDX\u200b"), "invalid_symbol"),
    (transfer(amount=0), "invalid_amount"),
    (transfer(amount=-5), "invalid_amount"),
    (transfer(amount=10**78), "invalid_amount"),
    (transfer(transfer_id="x\x001"), "invalid_command"),
    (register(name="Ca\x00sh"), "invalid_text"),
    (register(name="x" * 201), "invalid_text"),
    (register(symbol="CA$H"), "invalid_symbol"),
    (register(issuer="tre asury"), "invalid_wallet"),
    (register(decimals=19), "invalid_decimals"),
    (register(decimals=-1), "invalid_decimals"),
    (register(max_supply=0), "invalid_amount"),
    (register(max_supply=10**80), "invalid_amount"),
    (IssueTokens(symbol="USDX", to="al\u202eice", amount=1), "invalid_wallet"),
    (IssueTokens(symbol="USDX", to="alice", amount=MAX_UNITS + 1), "invalid_amount"),
    (BurnTokens(wallet="alice", asset="USDX", amount=-1), "invalid_amount"),
    (FreezeWallet(wallet="alice", reason="sanctions\x1b[31m"), "invalid_text"),
    (UnfreezeWallet(wallet="alice", reason=""), "invalid_text"),
])
def test_malformed_commands_are_refused_with_a_reason(command: Any, reason: str) -> None:
    found = refusal(command)
    assert found is not None and found.reason == reason, found


def test_what_the_api_accepts_is_well_formed() -> None:
    for command in (transfer(memo="für Ümit 🎉 שלום"), transfer(memo=None), transfer(memo=""),
                    transfer(memo="  "), register(),
                    register(decimals=18, max_supply=MAX_UNITS, name="Ünïcode ✓"),
                    IssueTokens(symbol="USDX", to="a.b@c-d_e", amount=MAX_UNITS),
                    FreezeWallet(wallet="alice", reason="court order 12/3")):
        assert refusal(command) is None, command


def test_a_nul_memo_transfer_fails_and_moves_nothing() -> None:
    ledger = funded(alice={"USDX": 100})
    before = len(ledger.decided)
    ledger.submit("wallet:alice", transfer(memo="lunch\x00", amount=40))
    ledger.drain()
    events = [d.event for d in ledger.decided[before:]]
    assert [type(e) for e in events] == [TransferInitiated, TransferFailed]
    initiated, failed = events
    assert isinstance(initiated, TransferInitiated) and isinstance(failed, TransferFailed)
    # The sender's own transfer row stays whole: from, to, amount; only the memo is left out.
    assert (initiated.source, initiated.target, initiated.amount, initiated.memo) == (
        "alice", "bob", 40, None)
    assert failed.reason == "invalid_text"
    assert ledger.wallet("alice").balance("USDX").available == 100
    assert ledger.wallet("bob").balance("USDX").available == 0


def test_a_nul_asset_name_is_rejected_and_the_symbol_stays_free() -> None:
    ledger = funded()
    ledger.submit("asset:CASH", register(name="Ca\x00sh"))
    ledger.drain()
    assert isinstance(ledger.decided[-1].event, AssetRegistrationRejected)
    assert ledger.decided[-1].event.reason == "invalid_text"
    assert ledger.asset("CASH") is None
    ledger.submit("asset:CASH", register())
    ledger.drain()
    assert ledger.asset("CASH") is not None


def test_refusals_repeat_only_what_the_views_can_hold() -> None:
    [initiated, failed] = decide(None, transfer(target="b\x00b", asset="X\ud800", amount=10**90))
    assert isinstance(initiated, TransferInitiated) and isinstance(failed, TransferFailed)
    assert (initiated.target, initiated.asset, initiated.amount) == ("b\\x00b", "X\\ud800", 0)
    assert failed.reason == "invalid_wallet"
    [rejected] = decide(None, IssueTokens(symbol="US\x00", to="alice", amount=-(10**100)))
    assert isinstance(rejected, IssueRejected) and (rejected.symbol, rejected.amount) == ("US\\x00", 0)
    [burn] = decide(None, BurnTokens(wallet="alice", asset="USDX", amount=0))
    assert isinstance(burn, BurnFailed) and burn.reason == "invalid_amount"
    [frozen] = decide(None, FreezeWallet(wallet="alice", reason="\x00"))
    assert frozen == FreezeRejected(wallet="alice", freeze=True, reason="invalid_text")
    trade = InitiateTrade(trade_id="t1", seller="sam", buyer="bea\t", asset="BOND", quantity=1,
                          payment_asset="USDX", price=10**79)
    [initiated_trade, failed_trade] = decide(None, trade)
    assert isinstance(initiated_trade, TradeInitiated) and isinstance(failed_trade, TradeFailed)
    assert (failed_trade.buyer, failed_trade.price, failed_trade.reason) == ("bea\\t", 0,
                                                                           "invalid_wallet")
    assert shown("x" * 500) == "x" * 128 and shown_units(-7) == -7


def test_the_record_key_must_be_the_deciding_aggregate() -> None:
    # Decided under bob's state, a debit of alice would use the wrong balance.
    found = refusal(transfer(), key="wallet:bob")
    assert found is not None and found.reason == "invalid_command"
    assert refusal(transfer(), key="wallet:alice") is None
    [_, failed] = decide(None, transfer(), "wallet:bob")
    assert isinstance(failed, TransferFailed) and failed.reason == "invalid_command"


def test_a_malformed_follow_up_is_poison() -> None:
    # Follow-ups come from the processor itself; a malformed one was forged: dead-lettered.
    with pytest.raises(ValueError, match="malformed CreditWallet"):
        decide(None, CreditWallet(wallet="bob", asset="USDX", amount=10**78, kind="issue",
                                  reference="USDX"))
    with pytest.raises(ValueError, match="malformed PayForTrade"):
        decide(None, PayForTrade(trade_id="t\x00", seller="sam", buyer="bea", asset="BOND",
                                 quantity=1, payment_asset="USDX", price=1))


def test_no_supply_beyond_what_the_views_can_hold() -> None:
    ledger = funded(alice={"USDX": MAX_UNITS})
    ledger.submit("asset:USDX", IssueTokens(symbol="USDX", to="bob", amount=1))
    ledger.drain()
    rejected = ledger.decided[-1].event
    assert isinstance(rejected, IssueRejected) and rejected.reason == "supply_cap_exceeded"


@pytest.mark.parametrize(("fields", "expected"), [
    ({"key": "wallet:alice", "principal": "ops", "correlation_id": None}, None),
    ({"key": "wallet:al\x00ice"}, "envelope field key: control character U+0000"),
    ({"principal": ""}, "envelope field principal must be 1-200 characters"),
    ({"command_id": "c" * 201}, "envelope field command_id must be 1-200 characters"),
])
def test_envelope_fields_must_be_storable(fields: dict[str, Any], expected: str | None) -> None:
    found = envelope_problem(**fields)
    assert found == expected or (expected is not None and found is not None
                                 and found.startswith(expected)), found
