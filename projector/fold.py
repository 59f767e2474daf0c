"""Pure projection: a batch of decoded events becomes one set of row changes per table.

Rows from the same batch are merged here, and merged again with what the table holds by the
upserts in :mod:`projector.store`, with the same rules: a status only moves forward (by rank),
and a column once known is never blanked. Those rules make the views independent of the order
in which partitions are applied, so several projector instances give the same tables as one.

Balances are the running sum of each event's change (to available, to held), in the order of
the wallet's events partition: a credit is written by the payer's transaction, which does not
know the payee's balance (docs/processor.md, "The live path"). The fold sums the changes of a
batch per wallet; the store adds the balance the table held before the batch, so each
``ledger_entries`` row gets the balance after its event, the same whatever the batching.

A transfer is completed, and a trade settled, only once both halves are in the views: the payer's
debit and the payee's credit live in two partitions, written by one transaction but applied by
the projector whenever each partition's batch comes.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from events.codec import Envelope
from events.messages import (
    AssetRegistered,
    AssetRegistrationRejected,
    AssetTransferred,
    BurnFailed,
    FreezeRejected,
    IssueRejected,
    PaymentReceived,
    SupplyReduced,
    TokensBurned,
    TokensIssued,
    TradeAssetLocked,
    TradeAssetReleased,
    TradeFailed,
    TradeInitiated,
    TradeSettled,
    TradeTerms,
    TransferConfirmed,
    TransferFailed,
    TransferInitiated,
    WalletCredited,
    WalletDataErased,
    WalletFrozen,
    WalletUnfrozen,
)
from events.readmodel import COMMAND_RANK, TRADE_RANK, TRANSFER_RANK

# What a credit of each kind finishes: the command status it reaches. A transfer's and a trade's
# final status also needs the other partition's half (see _transfer and _trade).
_CREDIT_STATUS = {"issue": "completed", "transfer": "confirmed", "trade_payment": "confirmed",
                  "trade_delivery": "confirmed"}

Row = dict[str, Any]


@dataclass(frozen=True)
class Position:
    topic: str
    partition: int
    offset: int


@dataclass
class RowChanges:
    """One batch's changes. ``balances`` holds each (wallet, asset)'s change over the batch,
    ``entries`` the change up to and including each event (``available_change``,
    ``held_change``): the store adds the balance before the batch to both."""

    assets: dict[str, Row] = field(default_factory=dict)
    supply: dict[str, Row] = field(default_factory=dict)
    wallets: dict[str, Row] = field(default_factory=dict)
    freezes: dict[str, Row] = field(default_factory=dict)
    balances: dict[tuple[str, str], Row] = field(default_factory=dict)
    transfers: dict[str, Row] = field(default_factory=dict)
    trades: dict[str, Row] = field(default_factory=dict)
    commands: dict[str, Row] = field(default_factory=dict)
    burns: dict[str, set[str]] = field(default_factory=dict)  # command -> halves in this batch
    entries: list[Row] = field(default_factory=list)
    events: list[Row] = field(default_factory=list)
    # Positions of the batch the projector dead-lettered, and positions of earlier dead letters
    # whose re-driven record is now applied (written by the worker, not folded from events).
    dead_letters: list[Row] = field(default_factory=list)
    resolved: list[Position] = field(default_factory=list)
    # Wallets whose personal data was erased: their memos in the views are blanked.
    erased: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events)


def merge(old: Row | None, new: Row, rank_column: str = "status_rank") -> Row:
    """Combine two partial rows: known values win over ``None``; the higher status rank wins."""
    if old is None:
        return new
    merged = old.copy()
    for k, v in new.items():
        if v is not None or k not in merged:
            merged[k] = v
    if rank_column in old and old[rank_column] >= new.get(rank_column, 0):
        merged["status"], merged[rank_column] = old["status"], old[rank_column]
        merged["reason"] = old.get("reason") if old.get("reason") is not None else new.get("reason")
    return merged


def _put(table: dict[Any, Row], key: Any, row: Row) -> None:
    table[key] = merge(table.get(key), row)


def _transfer(changes: RowChanges, transfer_id: str, status: str, **columns: Any) -> str:
    """Merge into the transfer's row; returns its status after."""
    row: Row = {
        "transfer_id": transfer_id,
        "command_id": None,
        "source": None,
        "target": None,
        "asset": None,
        "amount": None,
        "memo": None,
        "status": status,
        "status_rank": TRANSFER_RANK[status],
        "reason": None,
        "initiated_at": None,
        "confirmed_at": None,
        "completed_at": None,
        "failed_at": None,
    }
    row.update(columns)
    _put(changes.transfers, transfer_id, row)
    merged = changes.transfers[transfer_id]
    if merged["confirmed_at"] is not None and merged["completed_at"] is not None:
        # the debit's half and the credit's half are both here (the store's upsert does the same)
        merged["status"], merged["status_rank"] = "completed", TRANSFER_RANK["completed"]
    return str(merged["status"])


# created_at is when the trade was initiated; then one time per settlement step.
TRADE_TIMES = ("created_at", "asset_locked_at", "paid_at", "transferred_at", "settled_at",
               "failed_at", "released_at")


def _trade(changes: RowChanges, trade_id: str, status: str, terms: TradeTerms | None = None,
           **columns: Any) -> str:
    """Merge into the trade's row; returns its status after."""
    row: Row = {
        "trade_id": trade_id,
        "command_id": None,
        "seller": None,
        "buyer": None,
        "asset": None,
        "quantity": None,
        "payment_asset": None,
        "price": None,
        "status": status,
        "status_rank": TRADE_RANK[status],
        "reason": None,
        "failed_party": None,
        **dict.fromkeys(TRADE_TIMES),
    }
    if terms is not None:
        # Every trade event carries the terms, so the row is whole whichever partition comes first.
        row.update(seller=terms.seller, buyer=terms.buyer, asset=terms.asset,
                   quantity=terms.quantity, payment_asset=terms.payment_asset, price=terms.price)
    row.update(columns)
    _put(changes.trades, trade_id, row)
    merged = changes.trades[trade_id]
    if merged["transferred_at"] is not None and merged["settled_at"] is not None:
        # the seller's half (delivery, payment) and the buyer's (payment, delivery) are both here
        merged["status"], merged["status_rank"] = "settled", TRADE_RANK["settled"]
    return str(merged["status"])


def _command(
    changes: RowChanges,
    env: Envelope,
    status: str,
    reason: str | None = None,
    command_type: str | None = None,
) -> None:
    row: Row = {
        "command_id": env.command_id,
        "type": command_type,
        "principal": env.principal,
        "correlation_id": env.correlation_id,
        "status": status,
        "status_rank": COMMAND_RANK[status],
        "reason": reason,
        "created_at": env.occurred_at,
    }
    # The earliest time wins, as in the upsert (LEAST): batches must not change the answer.
    earlier = changes.commands.get(env.command_id)
    if earlier is not None and earlier["created_at"] < row["created_at"]:
        row["created_at"] = earlier["created_at"]
    _put(changes.commands, env.command_id, row)


def _seen(changes: RowChanges, wallet: str, at: datetime) -> None:
    first = changes.wallets.get(wallet)
    if first is None or at < first["first_seen_at"]:
        changes.wallets[wallet] = {"wallet": wallet, "first_seen_at": at}


def _balance(
    changes: RowChanges, wallet: str, asset: str, available: int, held: int, at: datetime
) -> tuple[int, int]:
    """Add one event's change to the batch's change of ``(wallet, asset)``; return the sum."""
    # One wallet's events come from one partition, in order: the sum is in that order.
    row = changes.balances.get((wallet, asset))
    if row is None:
        row = changes.balances[(wallet, asset)] = {"wallet": wallet, "asset": asset,
                                                   "available": 0, "held": 0}
    row["available"] += available
    row["held"] += held
    row["updated_at"] = at
    _seen(changes, wallet, at)
    return row["available"], row["held"]


def _freeze(changes: RowChanges, wallet: str, frozen: bool, reason: str, at: datetime) -> None:
    changes.freezes[wallet] = {"wallet": wallet, "frozen": frozen, "freeze_reason": reason,
                               "frozen_changed_at": at}
    _seen(changes, wallet, at)


def _supply(changes: RowChanges, symbol: str, supply: int, burned: int) -> None:
    """Add one event's change to the asset's supply and burned total: running sums, like
    balances, since a burn's transaction writes the asset's ``SupplyReduced``."""
    row = changes.assets.get(symbol) or changes.supply.setdefault(
        symbol, {"symbol": symbol, "supply": 0, "burned": 0})
    row["supply"] += supply
    row["burned"] += burned


def _burn_half(changes: RowChanges, env: Envelope) -> str:
    """A burn's two halves, the wallet's debit and the asset's supply, live in two partitions:
    the command is final once both are in the views. Returns its status after this half."""
    halves = changes.burns.setdefault(env.command_id, set())
    halves.add(env.type)
    return "completed" if len(halves) == 2 else "confirmed"


def _entry(changes: RowChanges, env: Envelope, wallet: str, asset: str, available: int,
           held: int, kind: str, reference: str) -> None:
    """One balance change: ``available`` and ``held`` are what the event adds to each."""
    available_change, held_change = _balance(changes, wallet, asset, available, held,
                                             env.occurred_at)
    changes.entries.append(
        {
            "event_id": env.id,
            "wallet": wallet,
            "asset": asset,
            "delta": available + held,
            "available_change": available_change,
            "held_change": held_change,
            "kind": kind,
            "reference": reference,
            "occurred_at": env.occurred_at,
        }
    )


def apply(changes: RowChanges, env: Envelope, position: Position, *, memo: str | None = None) -> None:
    """Fold one event into ``changes``. Raises ``ValueError`` if the event cannot apply.
    ``memo``: a transfer's memo in clear, when the event carries it sealed (the audit trail keeps
    what the log holds)."""
    e = env.payload
    at = env.occurred_at
    # Most frequent first: each case is an isinstance check (through ABCMeta for msgspec Structs).
    match e:
        case TransferInitiated():
            _transfer(changes, e.transfer_id, "initiated", command_id=env.command_id,
                      source=e.source, target=e.target, asset=e.asset, amount=e.amount,
                      memo=e.memo if memo is None else memo, initiated_at=at)
            _command(changes, env, "pending", command_type="InitiateTransfer")
        case TransferConfirmed():
            status = _transfer(changes, e.transfer_id, "confirmed", confirmed_at=at)
            _entry(changes, env, e.source, e.asset, -e.amount, 0, "transfer_out", e.transfer_id)
            _command(changes, env, _final(status, "completed"))
        case TransferFailed():
            _transfer(changes, e.transfer_id, "failed", reason=e.reason, failed_at=at)
            _command(changes, env, "failed", e.reason)
        case WalletCredited():
            _entry(changes, env, e.wallet, e.asset, e.amount, 0, f"{e.kind}_in", e.reference)
            status = _CREDIT_STATUS[e.kind]
            if e.kind == "transfer":
                status = _final(_transfer(changes, e.reference, "confirmed", completed_at=at),
                                "completed")
            elif e.kind == "trade_delivery":
                status = _final(_trade(changes, e.reference, "paid", settled_at=at), "settled")
            _command(changes, env, status)
        case AssetRegistered():
            changes.assets[e.symbol] = {
                "symbol": e.symbol,
                "name": e.name,
                "decimals": e.decimals,
                "issuer": e.issuer,
                "max_supply": e.max_supply,
                "supply": 0,
                "burned": 0,
                "registered_at": at,
            }
            _command(changes, env, "completed", command_type="RegisterAsset")
        case AssetRegistrationRejected():
            _command(changes, env, "rejected", e.reason, command_type="RegisterAsset")
        case TokensIssued():
            _supply(changes, e.symbol, e.amount, 0)
            _command(changes, env, "pending", command_type="IssueTokens")
        case IssueRejected():
            _command(changes, env, "rejected", e.reason, command_type="IssueTokens")
        case TradeTerms():
            _apply_trade(changes, env, e)
        case TokensBurned():
            _entry(changes, env, e.wallet, e.asset, -e.amount, 0, "burn", env.command_id)
            _command(changes, env, _burn_half(changes, env), command_type="BurnTokens")
        case BurnFailed():
            _command(changes, env, "failed", e.reason, command_type="BurnTokens")
        case SupplyReduced():
            _supply(changes, e.symbol, -e.amount, e.amount)
            _command(changes, env, _burn_half(changes, env))
        case WalletFrozen():
            _freeze(changes, e.wallet, True, e.reason, at)
            _command(changes, env, "completed", command_type="FreezeWallet")
        case WalletUnfrozen():
            _freeze(changes, e.wallet, False, e.reason, at)
            _command(changes, env, "completed", command_type="UnfreezeWallet")
        case WalletDataErased():
            changes.erased.append(e.wallet)
            _command(changes, env, "completed", command_type="EraseWalletData")
        case FreezeRejected():
            _command(changes, env, "rejected", e.reason,
                     command_type="FreezeWallet" if e.freeze else "UnfreezeWallet")
        case _:
            raise ValueError(f"the projector does not know how to apply {env.type}")
    changes.events.append(
        {
            "event_id": env.id,
            "type": env.type,
            "version": env.version,
            "key": env.key,
            "command_id": env.command_id,
            "correlation_id": env.correlation_id,
            "principal": env.principal,
            "occurred_at": at,
            "topic": position.topic,
            "partition": position.partition,
            "offset": position.offset,
            "payload": msgspec.json.encode(e).decode(),
        }
    )


def _final(status: str, final: str) -> str:
    """The command's status once its transfer's or trade's row is ``final`` (both halves in)."""
    return final if status == final else "confirmed"


def _apply_trade(changes: RowChanges, env: Envelope, e: TradeTerms) -> None:
    at = env.occurred_at
    match e:
        case TradeInitiated():
            _trade(changes, e.trade_id, "initiated", e, command_id=env.command_id, created_at=at)
            _command(changes, env, "pending", command_type="InitiateTrade")
        case TradeAssetLocked():
            _trade(changes, e.trade_id, "asset_locked", e, asset_locked_at=at)
            _entry(changes, env, e.seller, e.asset, -e.quantity, e.quantity, "trade_lock",
                   e.trade_id)
            _command(changes, env, "confirmed")
        case PaymentReceived():
            _trade(changes, e.trade_id, "paid", e, paid_at=at)
            _entry(changes, env, e.buyer, e.payment_asset, -e.price, 0, "trade_payment_out",
                   e.trade_id)
            _command(changes, env, "confirmed")
        case TradeFailed():
            _trade(changes, e.trade_id, "failed", e, reason=e.reason, failed_party=e.party,
                   failed_at=at)
            # A buyer's failure is final only once the seller's lock is released.
            if e.party == "seller":
                _command(changes, env, "failed", e.reason)
            else:
                _command(changes, env, "confirmed")
        case TradeAssetReleased():
            _trade(changes, e.trade_id, "failed", e, reason=e.reason, released_at=at)
            _entry(changes, env, e.seller, e.asset, e.quantity, -e.quantity, "trade_release",
                   e.trade_id)
            _command(changes, env, "failed", e.reason)
        case AssetTransferred():
            status = _trade(changes, e.trade_id, "transferred", e, transferred_at=at)
            _entry(changes, env, e.seller, e.asset, 0, -e.quantity, "trade_delivery_out",
                   e.trade_id)
            _command(changes, env, _final(status, "settled"))
        case TradeSettled():
            _trade(changes, e.trade_id, "transferred", e)
            _command(changes, env, "confirmed")
        case _:
            raise ValueError(f"the projector does not know how to apply {env.type}")
