"""Screening, pure: a transfer, issue or trade touching a listed wallet is refused
``sanctioned_wallet`` with the command's ordinary refusal events; anything else is decided as
before."""

from events.messages import (
    BurnTokens,
    InitiateTrade,
    InitiateTransfer,
    IssueRejected,
    IssueTokens,
    TradeFailed,
    TransferFailed,
    TransferInitiated,
)
from processor.decide import screened

LISTED = {"mallory"}


def test_a_movement_touching_a_listed_wallet_is_refused_before_any_balance_changes() -> None:
    out = InitiateTransfer(transfer_id="t", source="mallory", target="bob", asset="USDX", amount=5)
    inn = InitiateTransfer(transfer_id="t", source="bob", target="mallory", asset="USDX", amount=5)
    for command in (out, inn):
        events = screened(command, LISTED)
        assert events is not None and [type(e) for e in events] == [TransferInitiated, TransferFailed]
        assert events[1].reason == "sanctioned_wallet"  # type: ignore[union-attr]
    [issue] = screened(IssueTokens(symbol="USDX", to="mallory", amount=1), LISTED) or []
    assert isinstance(issue, IssueRejected) and issue.reason == "sanctioned_wallet"
    trade = InitiateTrade(trade_id="x", seller="bob", buyer="mallory", asset="BOND", quantity=1,
                          payment_asset="USDX", price=100)
    assert [type(e).__name__ for e in screened(trade, LISTED) or []] == ["TradeInitiated", "TradeFailed"]
    assert isinstance((screened(trade, LISTED) or [])[-1], TradeFailed)


def test_other_commands_and_unlisted_wallets_pass() -> None:
    assert screened(InitiateTransfer(transfer_id="t", source="a", target="b", asset="U", amount=1),
                    LISTED) is None
    # A burn only destroys what the wallet holds; a frozen or listed wallet is stopped elsewhere.
    assert screened(BurnTokens(wallet="mallory", asset="U", amount=1), LISTED) is None


def test_kyc_limits_count_a_wallets_debits_of_the_last_24_hours_per_asset() -> None:
    from datetime import UTC, datetime, timedelta

    from events.messages import TransferConfirmed
    from processor.limits import over_limit, track

    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    send = InitiateTransfer(transfer_id="t", source="a", target="b", asset="USDX", amount=40)
    debits = track((), [TransferConfirmed(transfer_id="t0", source="a", target="b", asset="USDX", amount=70,
                                          available_after=0, held_after=0)], t0)
    assert debits is not None
    assert over_limit(debits, {"USDX": 100}, send, t0 + timedelta(hours=1)) is not None
    assert over_limit(debits, {"USDX": 110}, send, t0 + timedelta(hours=1)) is None  # at the limit
    assert over_limit(debits, {"USDX": 100}, send, t0 + timedelta(hours=24, seconds=1)) is None
    assert over_limit(debits, {"BOND": 1}, send, t0) is None  # USDX is not limited
    assert over_limit(debits, None, send, t0) is None
    assert track(debits, [], t0) is None  # nothing debited: the snapshot keeps what it had


def test_kyc_debits_are_kept_per_asset_and_minute_counted_until_the_minute_ends() -> None:
    from datetime import UTC, datetime, timedelta

    from events.messages import TransferConfirmed
    from processor.limits import Debit, over_limit, track

    def sent(asset: str, amount: int) -> list[object]:
        return [TransferConfirmed(transfer_id="t", source="a", target="b", asset=asset, amount=amount,
                                  available_after=0, held_after=0)]

    t0 = datetime(2026, 12, 1, 10, 0, 20, tzinfo=UTC)
    debits: tuple[Debit, ...] = ()
    for i in range(500):  # a busy wallet: 500 debits within a minute and a half
        at = t0 + timedelta(milliseconds=180 * i)
        debits = track(debits, sent("USDX" if i % 5 else "BOND", 2), at) or debits
    assert len(debits) <= 4, debits  # two minutes, two assets
    assert sum(int(d.amount) for d in debits if d.asset == "USDX") == 2 * 400
    assert sum(int(d.amount) for d in debits if d.asset == "BOND") == 2 * 100
    send = InitiateTransfer(transfer_id="t", source="a", target="b", asset="USDX", amount=1)
    # The first debit (10:00:20) counts until 10:01:00 the next day, not only until 10:00:20:
    # the limit may refuse a little early, never let more through.
    day = t0 + timedelta(hours=24)
    assert over_limit(debits, {"USDX": 800}, send, day + timedelta(seconds=30)) is not None
    # 10:01:01 the next day: only the second minute's debits count.
    second = sum(int(d.amount) for d in debits if d.asset == "USDX" and d.at.minute == 2)
    assert 0 < second < 800
    assert over_limit(debits, {"USDX": second}, send, day + timedelta(seconds=41)) is not None
    assert over_limit(debits, {"USDX": second + 1}, send, day + timedelta(seconds=41)) is None
    last = t0 + timedelta(milliseconds=180 * 499)
    assert over_limit(debits, {"USDX": 800}, send, last + timedelta(hours=24, minutes=1)) is None
