"""Assets, wallets and their money: balances now, at a point in time, and statements.

Money is a decimal string in the asset's units (``"12.50"``) with the whole base units beside it
as a string (``"1250"``): 18-decimal amounts overflow GraphQL's Int and a float would round.
"""

from datetime import UTC, datetime
from typing import Annotated, Any, overload

import strawberry
from strawberry.types import Info

from events.amounts import format_amount
from query import db, pages
from query.context import ctx
from query.errors import invalid_argument
from query.ids import symbol_arg


def money(units: Any, decimals: int) -> str:
    return format_amount(int(units), decimals)


@overload
def utc(at: datetime, field: str = "at") -> datetime: ...
@overload
def utc(at: None, field: str = "at") -> None: ...
def utc(at: datetime | None, field: str = "at") -> datetime | None:
    """``at`` in UTC; times without a zone are read as UTC. A time that has no UTC equivalent
    (``0001-01-01T00:00:00+14:00`` is in year 0) is an argument error, not a database error."""
    if at is None:
        return None
    if at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    try:
        return at.astimezone(UTC)
    except OverflowError:
        raise invalid_argument(field, f"{at.isoformat()} is outside the range of times") from None


@strawberry.type
class Asset:
    symbol: str
    name: str
    decimals: int
    issuer: str
    supply: str
    supply_units: str
    max_supply: str | None
    max_supply_units: str | None
    registered_at: datetime

    @staticmethod
    def from_row(r: dict[str, Any]) -> "Asset":
        d, cap = r["decimals"], r["max_supply"]
        return Asset(
            symbol=r["symbol"], name=r["name"], decimals=d, issuer=r["issuer"],
            supply=money(r["supply"], d), supply_units=str(int(r["supply"])),
            max_supply=None if cap is None else money(cap, d),
            max_supply_units=None if cap is None else str(int(cap)),
            registered_at=r["registered_at"],
        )


async def load_asset(info: Info, symbol: str | None) -> Asset | None:
    if symbol is None:
        return None
    row = await ctx(info).loaders.asset.load(symbol)
    return None if row is None else Asset.from_row(row)


@strawberry.type
class Balance:
    asset: Asset
    available: str
    held: str
    available_units: str
    held_units: str
    updated_at: datetime | None

    @staticmethod
    def from_row(r: dict[str, Any], available: Any = None, held: Any = None) -> "Balance":
        """From a balance row joined with its asset, or an asset row and two amounts."""
        a = int(r["available"] if available is None else available)
        h = int(r["held"] if held is None else held)
        d = r["decimals"]
        return Balance(asset=Asset.from_row(r), available=money(a, d), held=money(h, d),
                       available_units=str(a), held_units=str(h), updated_at=r.get("updated_at"))


@strawberry.type
class StatementEntry:
    event_id: strawberry.ID
    at: datetime
    kind: str = strawberry.field(description="What moved the balance, e.g. `transfer_out`, `issue_in`.")
    reference: str = strawberry.field(description="The transfer, trade or issue it belongs to.")
    amount: str = strawberry.field(description="The signed change of the available balance.")
    amount_units: str
    available_after: str
    held_after: str
    available_after_units: str
    held_after_units: str

    @staticmethod
    def from_row(r: dict[str, Any], d: int) -> "StatementEntry":
        return StatementEntry(
            event_id=strawberry.ID(r["event_id"]), at=r["occurred_at"], kind=r["kind"],
            reference=r["reference"], amount=money(r["delta"], d), amount_units=str(int(r["delta"])),
            available_after=money(r["available_after"], d), held_after=money(r["held_after"], d),
            available_after_units=str(int(r["available_after"])),
            held_after_units=str(int(r["held_after"])),
        )


@strawberry.type(description="Ledger entries oldest first, each with the balance after it.")
class Statement(pages.Connection[StatementEntry]):
    opening: Balance = strawberry.field(description="The balance just before `from`.")


@strawberry.type(description="A wallet: only its owner and the roles that see everything may read it.")
class Wallet:
    id: strawberry.ID

    @strawberry.field
    async def balances(self, info: Info) -> list[Balance]:
        ctx(info).require_wallet(self.id)
        return [Balance.from_row(r) for r in await ctx(info).loaders.balances.load(self.id)]

    @strawberry.field(description="The balance in one asset; null if the wallet never held it.")
    async def balance(self, info: Info, asset: str) -> Balance | None:
        ctx(info).require_wallet(self.id)
        symbol = symbol_arg(asset)
        rows = await ctx(info).loaders.balances.load(self.id)
        return next((Balance.from_row(r) for r in rows if r["symbol"] == symbol), None)

    @strawberry.field(description="The balance as it was at `at`, from the ledger entries.")
    async def balance_at(self, info: Info, asset: str, at: datetime) -> Balance:
        ctx(info).require_wallet(self.id)
        asset_row = await _asset_row(info, asset)
        entry = await db.balance_at(ctx(info).db, self.id, asset_row["symbol"], utc(at, "at"))
        return _point(asset_row, entry)

    @strawberry.field(description="Ledger entries in `[from, to)`, oldest first, with running balances.")
    async def statement(
        self, info: Info, asset: str,
        start: Annotated[datetime | None, strawberry.argument(name="from")] = None,
        end: Annotated[datetime | None, strawberry.argument(name="to")] = None,
        first: int | None = None, after: str | None = None,
    ) -> Statement:
        c = ctx(info)
        c.require_wallet(self.id)
        size = pages.page_size(first)
        position = pages.decode("statement", after, datetime, int)
        asset_row = await _asset_row(info, asset)
        symbol, d = asset_row["symbol"], asset_row["decimals"]
        start, end = utc(start, "from"), utc(end, "to")
        rows = await db.statement(c.db, self.id, symbol, start, end, position, size + 1)
        opening = None
        if start is not None:
            opening = await db.balance_at(c.db, self.id, symbol, start, inclusive=False)
        page = pages.connection(rows, size, after, lambda r: StatementEntry.from_row(r, d),
                                lambda r: pages.encode("statement", r["occurred_at"], r["offset"]))
        return Statement(edges=page.edges, page_info=page.page_info, opening=_point(asset_row, opening))


async def _asset_row(info: Info, asset: str) -> dict[str, Any]:
    row = await ctx(info).loaders.asset.load(symbol_arg(asset))
    if row is None:
        raise invalid_argument("asset", f"no asset is registered as {asset!r}")
    return row


def _point(asset_row: dict[str, Any], entry: dict[str, Any] | None) -> Balance:
    if entry is None:
        return Balance.from_row({**asset_row, "updated_at": None}, 0, 0)
    return Balance.from_row({**asset_row, "updated_at": entry["occurred_at"]},
                            entry["available_after"], entry["held_after"])
