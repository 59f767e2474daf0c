"""KYC limits, pure: a wallet's debits of the last 24 hours (kept in its snapshot) and whether a
new debit would take one asset over the wallet's tier limit.

Time is the command's ``occurred_at`` (stamped by the command API), so deciding the same
commands again gives the same answers.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import msgspec

from events.messages import (
    Command,
    InitiateTrade,
    InitiateTransfer,
    PaymentReceived,
    TokensBurned,
    TradeAssetLocked,
    TransferConfirmed,
)

WINDOW = timedelta(hours=24)
#: Debits are kept summed per asset and minute, so a wallet's snapshot stays bounded however
#: busy the wallet (it is written whole with every transaction that touches the wallet).
BUCKET = timedelta(minutes=1)


class Debit(msgspec.Struct, frozen=True, array_like=True):
    at: datetime
    asset: str
    amount: str  # decimal digits: amounts may overflow what JSON numbers keep exactly


def debits_of(events: Sequence[object], at: datetime) -> list[Debit]:
    """The debits among a decision's events."""
    out = []
    for e in events:
        match e:
            case TransferConfirmed() | TokensBurned():
                out.append(Debit(at, e.asset, str(e.amount)))
            case TradeAssetLocked():
                out.append(Debit(at, e.asset, str(e.quantity)))
            case PaymentReceived():
                out.append(Debit(at, e.payment_asset, str(e.price)))
    return out


def recent(debits: Sequence[Debit], now: datetime) -> tuple[Debit, ...]:
    return tuple(d for d in debits if d.at > now - WINDOW)


def over_limit(debits: Sequence[Debit], limits: Mapping[str, int] | None, command: Command,
               now: datetime) -> str | None:
    """Why ``command`` would exceed the wallet's limit (None: it would not, or is not limited).
    Transfers and the seller's side of a trade are screened; follow-ups finish what was decided."""
    match command:
        case InitiateTransfer():
            asset, amount = command.asset, command.amount
        case InitiateTrade():
            asset, amount = command.asset, command.quantity
        case _:
            return None
    limit = None if limits is None else limits.get(asset)
    if limit is None:
        return None
    spent = sum(int(d.amount) for d in recent(debits, now) if d.asset == asset)
    if spent + amount > limit:
        return f"{spent} of {limit} {asset} already sent in 24 hours; {amount} more is over the limit"
    return None


def track(debits: tuple[Debit, ...], events: Sequence[object], at: datetime) -> tuple[Debit, ...] | None:
    """A wallet's debits after a decision (older than 24 hours dropped); None: unchanged.

    A debit is kept as made at the end of its minute and added to a debit of the same asset
    already kept there: it then counts toward the 24 hours up to a minute longer than it
    happened, never shorter, so a limit may refuse up to a minute early at the window's edge and
    never lets more through. A busy wallet keeps at most one entry per asset and minute instead
    of one per debit (a hot wallet's snapshot would otherwise grow with its day)."""
    new = debits_of(events, at)
    if not new:
        return None
    kept = list(recent(debits, at))
    for debit in new:
        end = _minute_end(debit.at)
        merged = False
        for i in range(len(kept) - 1, -1, -1):  # this minute's entries are the last ones
            if kept[i].at != end:
                break
            if kept[i].asset == debit.asset:
                kept[i] = Debit(end, debit.asset, str(int(kept[i].amount) + int(debit.amount)))
                merged = True
                break
        if not merged:
            kept.append(Debit(end, debit.asset, debit.amount))
    return tuple(kept)


def _minute_end(at: datetime) -> datetime:
    start = at.replace(second=0, microsecond=0)
    return start if start == at else start + BUCKET
