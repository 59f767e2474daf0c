"""What a command must be before it is decided: the edges' input grammar (:mod:`events.grammar`)
checked again by the processor, for records produced straight to ``ledger.commands``.

Pure. :func:`refusal` says why a command is malformed (a reason of the closed set and a detail
for the log), and the deciders turn that into the command's ordinary refusal event. Whatever a
refusal event repeats of the command goes through :func:`shown` and :func:`shown_units`, so a
refusal is itself something the views can hold: the point is that nothing the processor writes
is refused by PostgreSQL further down (NUL in text, money beyond ``NUMERIC(78,0)``).
"""

from dataclasses import dataclass
from typing import Any

from events import grammar
from events.keys import asset_key, wallet_key
from events.messages import (
    BurnTokens,
    Command,
    CreditWallet,
    FreezeWallet,
    InitiateTransfer,
    IssueTokens,
    PayForTrade,
    ReduceSupply,
    RegisterAsset,
    TradeTerms,
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


def _wallet(name: str, v: Any) -> Refusal | None:
    ok = grammar.is_wallet(v)
    return None if ok else Refusal("invalid_wallet", f"{name} {_repr(v)} is not a wallet id")


def _symbol(name: str, v: Any) -> Refusal | None:
    ok = grammar.is_symbol(v)
    return None if ok else Refusal("invalid_symbol", f"{name} {_repr(v)} is not a symbol")


def _reference(name: str, v: Any) -> Refusal | None:
    ok = grammar.is_reference(v)
    return None if ok else Refusal("invalid_command", f"{name} {_repr(v)} is not a valid id")


def _units(name: str, v: Any) -> Refusal | None:
    if grammar.is_units(v):
        return None
    return Refusal("invalid_amount", f"{name} {_repr(v)} is not between 1 and 10^78 - 1 base units")


def _text(limit: int, *, empty: bool = False) -> Any:
    def check(name: str, v: Any) -> Refusal | None:
        if grammar.is_text(v, limit, empty=empty):
            return None
        problem = grammar.text_problem(v) if isinstance(v, str) else None
        return Refusal("invalid_text", f"{name}: {problem or f'must be 1-{limit} characters'}")
    return check


def _optional(check: Any) -> Any:
    return lambda name, v: None if v is None else check(name, v)


def _decimals(name: str, v: Any) -> Refusal | None:
    ok = type(v) is int and 0 <= v <= MAX_DECIMALS
    return None if ok else Refusal("invalid_decimals", f"{name} {_repr(v)} is not 0-{MAX_DECIMALS}")


_TERMS = (("trade_id", _reference), ("seller", _wallet), ("buyer", _wallet), ("asset", _symbol),
          ("quantity", _units), ("payment_asset", _symbol), ("price", _units))

# Per command type, its fields in the order they are checked: identities before contents.
FIELDS: dict[type, tuple[tuple[str, Any], ...]] = {
    RegisterAsset: (("symbol", _symbol), ("issuer", _wallet), ("name", _text(grammar.NAME_LIMIT)),
                    ("decimals", _decimals), ("max_supply", _optional(_units))),
    IssueTokens: (("symbol", _symbol), ("to", _wallet), ("amount", _units)),
    InitiateTransfer: (("transfer_id", _reference), ("source", _wallet), ("target", _wallet),
                       ("asset", _symbol), ("amount", _units),
                       # A blank memo is as good as none, and harmless to store.
                       ("memo", _optional(_text(grammar.TEXT_LIMIT, empty=True)))),
    CreditWallet: (("wallet", _wallet), ("asset", _symbol), ("amount", _units),
                   ("reference", _reference)),
    BurnTokens: (("wallet", _wallet), ("asset", _symbol), ("amount", _units)),
    ReduceSupply: (("symbol", _symbol), ("wallet", _wallet), ("amount", _units)),
    FreezeWallet: (("wallet", _wallet), ("reason", _text(grammar.TEXT_LIMIT))),
    UnfreezeWallet: (("wallet", _wallet), ("reason", _text(grammar.TEXT_LIMIT))),
}


def aggregate_key(command: Command) -> str:
    """The aggregate that must decide ``command``: the key its record must carry."""
    match command:
        case RegisterAsset() | IssueTokens() | ReduceSupply():
            return asset_key(command.symbol)
        case InitiateTransfer():
            return wallet_key(command.source)
        case CreditWallet() | BurnTokens() | FreezeWallet() | UnfreezeWallet():
            return wallet_key(command.wallet)
        case PayForTrade():
            return wallet_key(command.buyer)
        case TradeTerms():  # InitiateTrade, SettleTrade, ReleaseTradeAsset: the seller decides
            return wallet_key(command.seller)
    raise TypeError(f"no aggregate for {type(command).__name__}")


def refusal(command: Command, key: str | None = None) -> Refusal | None:
    """Why ``command`` may not be decided as it is, or None; with ``key``, the record's key
    must also be the aggregate the command is for."""
    checks = _TERMS if isinstance(command, TradeTerms) else FIELDS[type(command)]
    for name, check in checks:
        found: Refusal | None = check(name, getattr(command, name))
        if found is not None:
            return found
    if key is not None and key != aggregate_key(command):
        return Refusal("invalid_command", f"the record key {_repr(key)} is not "
                                          f"{aggregate_key(command)!r}, which decides this command")
    return None


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
