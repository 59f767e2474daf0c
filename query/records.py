"""Transfers, trades, their settlement steps, the audit trail, command outcomes, freshness."""

from datetime import datetime
from typing import Any

import strawberry
from strawberry.types import Info

from query import db
from query.context import ctx
from query.wallets import Asset, Wallet, load_asset, money


@strawberry.type(description="One event of a transfer or trade, in decision order.")
class Step:
    event_id: strawberry.ID
    type: str
    aggregate: str = strawberry.field(description="The aggregate that decided it, e.g. `wallet:alice`.")
    at: datetime

    @staticmethod
    def from_row(r: dict[str, Any]) -> "Step":
        return Step(event_id=strawberry.ID(r["event_id"]), type=r["type"], aggregate=r["key"],
                    at=r["occurred_at"])


async def _steps(info: Info, correlation_id: str) -> list[Step]:
    return [Step.from_row(r) for r in await ctx(info).loaders.steps.load(correlation_id)]


async def _amount(info: Info, symbol: str | None, units: Any) -> str | None:
    asset = await load_asset(info, symbol)
    return None if asset is None or units is None else money(units, asset.decimals)


def _units(value: Any) -> str | None:
    return None if value is None else str(int(value))


@strawberry.type
class Transfer:
    row: strawberry.Private[dict[str, Any]]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.row["transfer_id"])

    @strawberry.field(description="`initiated`, `confirmed`, then `completed` or `failed`.")
    def status(self) -> str:
        return self.row["status"]

    @strawberry.field(description="Why it failed, from the closed set of failure reasons.")
    def reason(self) -> str | None:
        return self.row["reason"]

    @strawberry.field(name="from")
    def source(self) -> str | None:
        return self.row["source"]

    @strawberry.field(name="to")
    def target(self) -> str | None:
        return self.row["target"]

    @strawberry.field(description="The sending wallet; null unless you may read it.")
    def from_wallet(self, info: Info) -> Wallet | None:
        return _wallet(info, self.row["source"])

    @strawberry.field(description="The receiving wallet; null unless you may read it.")
    def to_wallet(self, info: Info) -> Wallet | None:
        return _wallet(info, self.row["target"])

    @strawberry.field
    async def asset(self, info: Info) -> Asset | None:
        return await load_asset(info, self.row["asset"])

    @strawberry.field
    async def amount(self, info: Info) -> str | None:
        return await _amount(info, self.row["asset"], self.row["amount"])

    @strawberry.field
    def amount_units(self) -> str | None:
        return _units(self.row["amount"])

    @strawberry.field
    def memo(self) -> str | None:
        return self.row["memo"]

    @strawberry.field
    def command_id(self) -> strawberry.ID | None:
        return self.row["command_id"]

    @strawberry.field
    def initiated_at(self) -> datetime | None:
        return self.row["initiated_at"]

    @strawberry.field
    def confirmed_at(self) -> datetime | None:
        return self.row["confirmed_at"]

    @strawberry.field
    def completed_at(self) -> datetime | None:
        return self.row["completed_at"]

    @strawberry.field
    def failed_at(self) -> datetime | None:
        return self.row["failed_at"]

    @strawberry.field
    async def steps(self, info: Info) -> list[Step]:
        return await _steps(info, self.row["transfer_id"])


def _wallet(info: Info, wallet: str | None) -> Wallet | None:
    if wallet is None or not ctx(info).may_see_any(wallet):
        return None
    return Wallet(id=strawberry.ID(wallet))


@strawberry.type(description="A delivery-versus-payment trade: all legs settle or none.")
class Trade:
    row: strawberry.Private[dict[str, Any]]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.row["trade_id"])

    @strawberry.field
    def status(self) -> str:
        return self.row["status"]

    @strawberry.field
    def reason(self) -> str | None:
        return self.row["reason"]

    @strawberry.field
    def seller(self) -> str | None:
        return self.row["seller"]

    @strawberry.field
    def buyer(self) -> str | None:
        return self.row["buyer"]

    @strawberry.field
    async def asset(self, info: Info) -> Asset | None:
        return await load_asset(info, self.row["asset"])

    @strawberry.field
    async def quantity(self, info: Info) -> str | None:
        return await _amount(info, self.row["asset"], self.row["quantity"])

    @strawberry.field
    def quantity_units(self) -> str | None:
        return _units(self.row["quantity"])

    @strawberry.field
    async def payment_asset(self, info: Info) -> Asset | None:
        return await load_asset(info, self.row["payment_asset"])

    @strawberry.field(description="What the buyer pays, in the payment asset.")
    async def price(self, info: Info) -> str | None:
        return await _amount(info, self.row["payment_asset"], self.row["price"])

    @strawberry.field
    def price_units(self) -> str | None:
        return _units(self.row["price"])

    @strawberry.field
    def command_id(self) -> strawberry.ID | None:
        return self.row["command_id"]

    @strawberry.field
    def created_at(self) -> datetime | None:
        return self.row["created_at"]

    @strawberry.field
    def updated_at(self) -> datetime:
        return self.row["updated_at"]

    @strawberry.field(description="Every settlement step: lock, payment, delivery, or the failure.")
    async def steps(self, info: Info) -> list[Step]:
        return await _steps(info, self.row["trade_id"])


@strawberry.type(description="One event of the audit trail, with its position in Kafka.")
class AuditEvent:
    id: strawberry.ID
    type: str
    version: int
    aggregate: str
    command_id: strawberry.ID
    correlation_id: strawberry.ID | None
    principal: str
    occurred_at: datetime
    topic: str
    partition: int
    offset: str = strawberry.field(description="A 64-bit offset, as a string.")
    payload: str = strawberry.field(description="The event as recorded, JSON; amounts in base units.")

    @staticmethod
    def from_row(r: dict[str, Any]) -> "AuditEvent":
        return AuditEvent(
            id=strawberry.ID(r["event_id"]), type=r["type"], version=r["version"], aggregate=r["key"],
            command_id=strawberry.ID(r["command_id"]), correlation_id=r["correlation_id"],
            principal=r["principal"], occurred_at=r["occurred_at"], topic=r["topic"],
            partition=r["partition"], offset=str(r["offset"]), payload=r["payload"],
        )


@strawberry.type
class CommandStatus:
    id: strawberry.ID
    type: str | None
    status: str = strawberry.field(
        description="`pending`, `confirmed`, then `completed`, `failed` or `rejected`."
    )
    reason: str | None
    correlation_id: strawberry.ID | None
    created_at: datetime | None
    updated_at: datetime

    @staticmethod
    def from_row(r: dict[str, Any]) -> "CommandStatus":
        return CommandStatus(id=strawberry.ID(r["command_id"]), type=r["type"], status=r["status"],
                             reason=r["reason"], correlation_id=r["correlation_id"],
                             created_at=r["created_at"], updated_at=r["updated_at"])


@strawberry.type
class PartitionLag:
    projection: str
    topic: str
    partition: int
    next_offset: str
    end_offset: str
    records_behind: str
    seconds_behind: float
    updated_at: datetime

    @staticmethod
    def from_row(r: dict[str, Any]) -> "PartitionLag":
        return PartitionLag(projection=r["projection"], topic=r["topic"], partition=r["partition"],
                            next_offset=str(r["next_offset"]), end_offset=str(r["end_offset"]),
                            records_behind=str(r["records_behind"]),
                            seconds_behind=float(r["seconds_behind"]), updated_at=r["updated_at"])


@strawberry.type(description="How far the views are behind the event log, per partition.")
class Freshness:
    partitions: list[PartitionLag]

    @strawberry.field
    def records_behind(self) -> str:
        return str(sum(int(p.records_behind) for p in self.partitions))

    @strawberry.field
    def max_seconds_behind(self) -> float:
        return max((p.seconds_behind for p in self.partitions), default=0.0)

    @strawberry.field(description="Records of the event log the views lack because the projector "
                                  "could not apply them (dead-lettered: see `ledgerline dlq list`); "
                                  "0 when none.")
    async def dead_letters(self, info: Info) -> int:
        return await db.dead_letter_count(ctx(info).db)
