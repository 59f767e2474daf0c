"""Pure projection: a batch of decoded events becomes one set of row changes per table.

Rows from the same batch are merged here, and merged again with what the table holds by the
upserts in :mod:`projector.store`, with the same rules: a status only moves forward (by rank),
and a column once known is never blanked. Those rules make the views independent of the order
in which partitions are applied, so several projector instances give the same tables as one.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from events.codec import Envelope
from events.messages import (
    AssetRegistered,
    AssetRegistrationRejected,
    IssueRejected,
    TokensIssued,
    TransferConfirmed,
    TransferFailed,
    TransferInitiated,
    WalletCredited,
)

TRANSFER_RANK = {"initiated": 1, "confirmed": 2, "completed": 3, "failed": 3}
COMMAND_RANK = {"pending": 1, "confirmed": 2, "completed": 3, "failed": 3, "rejected": 3}
FINAL_COMMAND_STATUSES = frozenset(s for s, rank in COMMAND_RANK.items() if rank == 3)

Row = dict[str, Any]


@dataclass(frozen=True)
class Position:
    topic: str
    partition: int
    offset: int


@dataclass
class RowChanges:
    assets: dict[str, Row] = field(default_factory=dict)
    supply: dict[str, int] = field(default_factory=dict)
    balances: dict[tuple[str, str], Row] = field(default_factory=dict)
    transfers: dict[str, Row] = field(default_factory=dict)
    commands: dict[str, Row] = field(default_factory=dict)
    entries: list[Row] = field(default_factory=list)
    events: list[Row] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events)


def merge(old: Row | None, new: Row, rank_column: str = "status_rank") -> Row:
    """Combine two partial rows: known values win over ``None``; the higher status rank wins."""
    if old is None:
        return new
    merged = {k: (v if v is not None else old.get(k)) for k, v in new.items()}
    for k, v in old.items():
        merged.setdefault(k, v)
    if rank_column in old and old[rank_column] >= new.get(rank_column, 0):
        merged["status"], merged[rank_column] = old["status"], old[rank_column]
        merged["reason"] = old.get("reason") if old.get("reason") is not None else new.get("reason")
    return merged


def _put(table: dict[Any, Row], key: Any, row: Row) -> None:
    table[key] = merge(table.get(key), row)


def _transfer(changes: RowChanges, transfer_id: str, status: str, **columns: Any) -> None:
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


def _balance(
    changes: RowChanges, wallet: str, asset: str, available: int, held: int, at: datetime
) -> None:
    # Refused here, per event, not by the table's CHECK: only a batch's last balance reaches the
    # table, so the constraint alone would let the answer depend on how events were batched.
    if available < 0 or held < 0:
        raise ValueError(f"balance of {wallet} in {asset} would be negative "
                         f"(available {available}, held {held})")
    # One wallet's events come from one partition, in order: the last one in a batch is current.
    changes.balances[(wallet, asset)] = {
        "wallet": wallet,
        "asset": asset,
        "available": available,
        "held": held,
        "updated_at": at,
    }


def _entry(changes: RowChanges, env: Envelope, wallet: str, asset: str, delta: int,
           available: int, held: int, kind: str, reference: str) -> None:
    changes.entries.append(
        {
            "event_id": env.id,
            "wallet": wallet,
            "asset": asset,
            "delta": delta,
            "available_after": available,
            "held_after": held,
            "kind": kind,
            "reference": reference,
            "occurred_at": env.occurred_at,
        }
    )


def apply(changes: RowChanges, env: Envelope, position: Position) -> None:
    """Fold one event into ``changes``. Raises ``ValueError`` if the event cannot apply."""
    e = env.payload
    at = env.occurred_at
    match e:
        case AssetRegistered():
            changes.assets[e.symbol] = {
                "symbol": e.symbol,
                "name": e.name,
                "decimals": e.decimals,
                "issuer": e.issuer,
                "max_supply": e.max_supply,
                "supply": 0,
                "registered_at": at,
            }
            _command(changes, env, "completed", command_type="RegisterAsset")
        case AssetRegistrationRejected():
            _command(changes, env, "rejected", e.reason, command_type="RegisterAsset")
        case TokensIssued():
            registered = changes.assets.get(e.symbol)
            if registered is not None:
                registered["supply"] = e.supply_after
            else:
                changes.supply[e.symbol] = e.supply_after
            _command(changes, env, "pending", command_type="IssueTokens")
        case IssueRejected():
            _command(changes, env, "rejected", e.reason, command_type="IssueTokens")
        case TransferInitiated():
            _transfer(changes, e.transfer_id, "initiated", command_id=env.command_id,
                      source=e.source, target=e.target, asset=e.asset, amount=e.amount,
                      memo=e.memo, initiated_at=at)
            _command(changes, env, "pending", command_type="InitiateTransfer")
        case TransferConfirmed():
            _transfer(changes, e.transfer_id, "confirmed", confirmed_at=at)
            _balance(changes, e.source, e.asset, e.available_after, e.held_after, at)
            _entry(changes, env, e.source, e.asset, -e.amount, e.available_after, e.held_after,
                   "transfer_out", e.transfer_id)
            _command(changes, env, "confirmed")
        case TransferFailed():
            _transfer(changes, e.transfer_id, "failed", reason=e.reason, failed_at=at)
            _command(changes, env, "failed", e.reason)
        case WalletCredited():
            _balance(changes, e.wallet, e.asset, e.available_after, e.held_after, at)
            _entry(changes, env, e.wallet, e.asset, e.amount, e.available_after, e.held_after,
                   f"{e.kind}_in", e.reference)
            if e.kind == "transfer":
                _transfer(changes, e.reference, "completed", completed_at=at)
            _command(changes, env, "completed")
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
