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
