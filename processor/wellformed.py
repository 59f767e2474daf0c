"""What a command must be before it is decided: the edges' input grammar (:mod:`events.grammar`)
checked again by the processor, for records produced straight to ``ledger.commands``.

Pure. :func:`refusal` says why a command is malformed (a reason of the closed set, and a detail
that becomes the dead-letter error of a malformed follow-up), and the deciders turn that into
the command's ordinary refusal event. Whatever a
refusal event repeats of the command goes through :func:`shown` and :func:`shown_units`, so a
refusal is itself something the views can hold: the point is that nothing the processor writes
is refused by PostgreSQL further down (NUL in text, money beyond ``NUMERIC(78,0)``).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from events import grammar
from events.keys import asset_key, wallet_key
from events.messages import (
    ApplyBurn,
    ApplyCredit,
    ApplySettlement,
    BurnTokens,
    Command,
    CreditWallet,
    EraseWalletData,
    FreezeWallet,
    InitiateTrade,
    InitiateTransfer,
    IssueTokens,
    PayForTrade,
    ReduceSupply,
    RegisterAsset,
    ReleaseTradeAsset,
    SettleTrade,
    UnfreezeWallet,
)
from events.reasons import Reason

MAX_DECIMALS = 18
#: Envelope fields (ids, key, principal) are written to text columns as they are.
ENVELOPE_LIMIT = 200


@dataclass(frozen=True)
class Refusal:
    reason: Reason
    detail: str


# A check is (field, test, reason, what the field must be). Tests are cheap booleans on the
# decoded value (msgspec has already checked the types); the refusal is only built on failure.
Check = tuple[str, Callable[[Any], object], Reason, str]

_WALLET = grammar.WALLET_ID.fullmatch
_SYMBOL = grammar.SYMBOL.fullmatch
_REFERENCE = grammar.REFERENCE.fullmatch


def _units(v: Any) -> bool:
    return type(v) is int and 0 < v <= grammar.MAX_UNITS


def _decimals(v: Any) -> bool:
    return type(v) is int and 0 <= v <= MAX_DECIMALS


def _text(limit: int, *, empty: bool = False, optional: bool = False) -> Callable[[Any], bool]:
    def test(v: Any) -> bool:
        return (optional and v is None) or grammar.is_text(v, limit, empty=empty)
    return test


def _wallet(name: str) -> Check:
    return name, _WALLET, "invalid_wallet", "is not a wallet id"


def _symbol(name: str) -> Check:
    return name, _SYMBOL, "invalid_symbol", "is not a symbol"


def _amount(name: str) -> Check:
    return name, _units, "invalid_amount", "is not between 1 and 10^78 - 1 base units"


_TERMS: tuple[Check, ...] = (
    ("trade_id", _REFERENCE, "invalid_command", "is not a valid id"), _wallet("seller"),
    _wallet("buyer"), _symbol("asset"), _amount("quantity"), _symbol("payment_asset"),
    _amount("price"))
_REASON: Check = ("reason", _text(grammar.TEXT_LIMIT), "invalid_text", "")

# Per command type, its fields in the order they are checked: identities before contents.
CHECKS: dict[type, tuple[Check, ...]] = {
    RegisterAsset: (_symbol("symbol"), _wallet("issuer"),
                    ("name", _text(grammar.NAME_LIMIT), "invalid_text", ""),
                    ("decimals", _decimals, "invalid_decimals", f"is not 0-{MAX_DECIMALS}"),
                    ("max_supply", lambda v: v is None or _units(v), "invalid_amount",
                     "is not between 1 and 10^78 - 1 base units")),
    IssueTokens: (_symbol("symbol"), _wallet("to"), _amount("amount")),
    InitiateTransfer: (("transfer_id", _REFERENCE, "invalid_command", "is not a valid id"),
                       _wallet("source"), _wallet("target"), _symbol("asset"), _amount("amount"),
                       # A blank memo is as good as none, and harmless to store.
                       ("memo", lambda v: v is None or grammar.is_memo(v), "invalid_text", "")),
    CreditWallet: (_wallet("wallet"), _symbol("asset"), _amount("amount"),
                   ("reference", _REFERENCE, "invalid_command", "is not a valid id")),
    ApplyCredit: (_wallet("wallet"), _symbol("asset"), _amount("amount"),
                  ("reference", _REFERENCE, "invalid_command", "is not a valid id")),
    ApplySettlement: _TERMS,
    ApplyBurn: (_symbol("symbol"), _wallet("wallet"), _amount("amount")),
    BurnTokens: (_wallet("wallet"), _symbol("asset"), _amount("amount")),
    ReduceSupply: (_symbol("symbol"), _wallet("wallet"), _amount("amount")),
    FreezeWallet: (_wallet("wallet"), _REASON),
    UnfreezeWallet: (_wallet("wallet"), _REASON),
    EraseWalletData: (_wallet("wallet"),),
    InitiateTrade: _TERMS,
    PayForTrade: _TERMS,
    SettleTrade: _TERMS,
    ReleaseTradeAsset: _TERMS,
}

# The aggregate that decides each command type: the key its record must carry.
_DECIDED_BY: dict[type, Callable[[Any], str]] = {
    RegisterAsset: lambda c: asset_key(c.symbol),
    IssueTokens: lambda c: asset_key(c.symbol),
    ReduceSupply: lambda c: asset_key(c.symbol),
    InitiateTransfer: lambda c: wallet_key(c.source),
    CreditWallet: lambda c: wallet_key(c.wallet),
    ApplyCredit: lambda c: wallet_key(c.wallet),
    ApplySettlement: lambda c: wallet_key(c.seller),  # the seller's side of a settlement
    ApplyBurn: lambda c: asset_key(c.symbol),
    BurnTokens: lambda c: wallet_key(c.wallet),
    FreezeWallet: lambda c: wallet_key(c.wallet),
    UnfreezeWallet: lambda c: wallet_key(c.wallet),
    EraseWalletData: lambda c: wallet_key(c.wallet),
    InitiateTrade: lambda c: wallet_key(c.seller),  # the seller locks the asset
    PayForTrade: lambda c: wallet_key(c.buyer),
    SettleTrade: lambda c: wallet_key(c.seller),
    ReleaseTradeAsset: lambda c: wallet_key(c.seller),
}


def aggregate_key(command: Command) -> str:
    """The aggregate that must decide ``command``: the key its record must carry."""
    return _DECIDED_BY[type(command)](command)


def refusal(command: Command, key: str | None = None) -> Refusal | None:
    """Why ``command`` may not be decided as it is, or None; with ``key``, the record's key
    must also be the aggregate the command is for."""
    for name, test, reason, what in CHECKS[type(command)]:
        value = getattr(command, name)
        if not test(value):
            return Refusal(reason, _detail(name, value, what))
    if key is not None and key != aggregate_key(command):
        return Refusal("invalid_command", f"the record key {_repr(key)} is not "
                                          f"{aggregate_key(command)!r}, which decides this command")
    return None


def _detail(name: str, value: Any, what: str) -> str:
    if what:
        return f"{name} {_repr(value)} {what}"
    problem = grammar.text_problem(value) if isinstance(value, str) else None
    return f"{name}: {problem or 'must not be blank, nor too long'}"


def envelope_problem(**fields: str | None) -> str | None:
    """Why envelope fields (ids, key, principal) cannot be written as they are, or None."""
    for name, value in fields.items():
        if value is None:
            continue
        if not value or len(value) > ENVELOPE_LIMIT:
            return f"envelope field {name} must be 1-{ENVELOPE_LIMIT} characters"
        problem = grammar.text_problem(value)
        if problem is not None:
            return f"envelope field {name}: {problem}"
    return None


def shown(value: str, limit: int = 128) -> str:
    """``value`` if the views can hold it as it is; else its first ``limit`` characters with
    every character that is not printable ASCII escaped (``\\x00``, ``\\ud800``)."""
    if len(value) <= limit and grammar.text_problem(value) is None:
        return value
    return ascii(value[:limit])[1:-1]


def shown_units(value: int) -> int:
    """``value`` if a ``NUMERIC(78,0)`` column can hold it, else 0 (the refusal says why)."""
    return value if -grammar.MAX_UNITS <= value <= grammar.MAX_UNITS else 0


def _repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
