"""The GraphQL schema. Money is a decimal string in the asset's units, with raw base units
beside it (as strings: 18-decimal amounts overflow GraphQL's Int)."""

from datetime import datetime
from decimal import Decimal
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from events.amounts import format_amount
from ledgerline.auth import Principal
from query import db


def _units(value: Decimal | int | None) -> int | None:
    return None if value is None else int(value)


def _forbidden(what: str) -> GraphQLError:
    return GraphQLError(f"you may not read {what}", extensions={"code": "FORBIDDEN"})


@strawberry.type
class Asset:
    symbol: str
    name: str
    decimals: int
    issuer: str
    supply: str
    supply_units: str
    max_supply: str | None

    @staticmethod
    def from_row(r: dict[str, Any]) -> "Asset":
        d = r["decimals"]
        cap = _units(r["max_supply"])
        return Asset(
            symbol=r["symbol"], name=r["name"], decimals=d, issuer=r["issuer"],
            supply=format_amount(int(r["supply"]), d), supply_units=str(int(r["supply"])),
            max_supply=None if cap is None else format_amount(cap, d),
        )


@strawberry.type
class Balance:
    asset: Asset
    available: str
    held: str
    available_units: str
    held_units: str
    updated_at: datetime


@strawberry.type
class Wallet:
    id: strawberry.ID

    @strawberry.field
    async def balances(self, info: Info) -> list[Balance]:
        rows = await db.balances(info.context["pool"], str(self.id))
        out = []
        for r in rows:
            d = r["decimals"]
            available, held = int(r["available"]), int(r["held"])
            out.append(Balance(
                asset=Asset.from_row(r), available=format_amount(available, d),
                held=format_amount(held, d), available_units=str(available),
                held_units=str(held), updated_at=r["updated_at"],
            ))
        return out


@strawberry.type
class Transfer:
    id: strawberry.ID
    status: str
    reason: str | None
    source: str | None = strawberry.field(name="from")
    target: str | None = strawberry.field(name="to")
    asset: str | None
    amount: str | None
    amount_units: str | None
    memo: str | None
    initiated_at: datetime | None
    confirmed_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None


@strawberry.type
class Trade:
    id: strawberry.ID
    status: str
    reason: str | None


@strawberry.type
class CommandStatus:
    id: strawberry.ID
    type: str | None
    status: str
    reason: str | None
    correlation_id: str | None
    updated_at: datetime


def _principal(info: Info) -> Principal:
    return info.context["principal"]  # type: ignore[no-any-return]


@strawberry.type
class Query:
    @strawberry.field(description="A wallet and its balances; owners see only their own wallets.")
    def wallet(self, info: Info, id: strawberry.ID) -> Wallet:
        if not _principal(info).may_see_wallet(str(id)):
            raise _forbidden(f"wallet {id}")
        return Wallet(id=id)

    @strawberry.field
    async def transfer(self, info: Info, id: strawberry.ID) -> Transfer | None:
        r = await db.transfer(info.context["pool"], str(id))
        if r is None:
            return None
        p = _principal(info)
        if not (p.sees_everything or {r["source"], r["target"]} & p.wallets):
            raise _forbidden(f"transfer {id}")
        amount = _units(r["amount"])
        d = r["decimals"]
        return Transfer(
            id=strawberry.ID(r["transfer_id"]), status=r["status"], reason=r["reason"],
            source=r["source"], target=r["target"], asset=r["asset"],
            amount=None if amount is None or d is None else format_amount(amount, d),
            amount_units=None if amount is None else str(amount), memo=r["memo"],
            initiated_at=r["initiated_at"], confirmed_at=r["confirmed_at"],
            completed_at=r["completed_at"], failed_at=r["failed_at"],
        )

    @strawberry.field
    async def trade(self, info: Info, id: strawberry.ID) -> Trade | None:
        r = await db.trade(info.context["pool"], str(id))
        if r is None:
            return None
        p = _principal(info)
        if not (p.sees_everything or {r["seller"], r["buyer"]} & p.wallets):
            raise _forbidden(f"trade {id}")
        return Trade(id=strawberry.ID(r["trade_id"]), status=r["status"], reason=r["reason"])

    @strawberry.field
    async def asset(self, info: Info, symbol: str) -> Asset | None:
        r = await db.asset(info.context["pool"], symbol)
        return None if r is None else Asset.from_row(r)

    @strawberry.field
    async def assets(self, info: Info) -> list[Asset]:
        return [Asset.from_row(r) for r in await db.assets(info.context["pool"])]

    @strawberry.field
    async def command_status(self, info: Info, id: strawberry.ID) -> CommandStatus | None:
        r = await db.command(info.context["pool"], str(id))
        if r is None:
            return None
        p = _principal(info)
        if not (p.sees_everything or r["principal"] == p.sub):
            raise _forbidden(f"command {id}")
        return CommandStatus(id=strawberry.ID(r["command_id"]), type=r["type"], status=r["status"],
                             reason=r["reason"], correlation_id=r["correlation_id"],
                             updated_at=r["updated_at"])


schema = strawberry.Schema(query=Query)
