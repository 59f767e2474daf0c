"""The GraphQL schema: the entry points, each checking who may read what.

A wallet owner sees its own wallets, the transfers and trades they take part in, the events of
its own wallets and the commands it sent; the operator, compliance and auditor roles see
everything. Assets and projection freshness are reference data every principal may read.
"""

from datetime import datetime

import strawberry
from graphql import GraphQLError
from strawberry.types import ExecutionContext, Info

from query import db, pages
from query.compliance import ComplianceQuery, ComplianceSubscription
from query.context import ctx
from query.errors import ErrorCode, forbidden, invalid_argument, is_expected
from query.ids import id_arg, key_arg, name_arg, symbol_arg, wallet_arg
from query.limits import QueryGuard
from query.records import AuditEvent, CommandStatus, Freshness, PartitionLag, Trade, Transfer
from query.subscriptions import Subscription
from query.wallets import Asset, Wallet, utc

TRANSFER_STATUSES = frozenset({"initiated", "confirmed", "completed", "failed"})
TRADE_STATUSES = frozenset({"initiated", "asset_locked", "paid", "transferred", "settled", "failed"})


def _status(status: str | None, statuses: frozenset[str], what: str) -> str | None:
    if status is not None and status not in statuses:
        raise invalid_argument("filter.status", f"a {what}'s status is one of {sorted(statuses)}")
    return status


@strawberry.input(description="All given conditions must hold; `since` is inclusive, `until` exclusive.")
class TransferFilter:
    status: str | None = None
    asset: str | None = None
    wallet: strawberry.ID | None = strawberry.field(default=None, description="Sender or receiver.")
    since: datetime | None = None
    until: datetime | None = None


@strawberry.input(description="All given conditions must hold; `asset` matches either leg.")
class TradeFilter:
    status: str | None = None
    asset: str | None = None
    wallet: strawberry.ID | None = strawberry.field(default=None, description="Seller or buyer.")
    since: datetime | None = None
    until: datetime | None = None


@strawberry.input(description="The audit trail of one aggregate, one transfer or trade, or one command.")
class EventFilter:
    aggregate: str | None = strawberry.field(default=None, description="e.g. `wallet:alice`, `asset:USDX`")
    correlation_id: strawberry.ID | None = None
    command_id: strawberry.ID | None = None
    type: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _wallet_filter(info: Info, wallet: str | None) -> str | None:
    if wallet is not None:
        wallet_arg(wallet, "filter.wallet")
        ctx(info).require_wallet(wallet)
    return wallet


def _between(f: TransferFilter | TradeFilter | EventFilter) -> dict[str, datetime | None]:
    return {"since": utc(f.since, "filter.since"), "until": utc(f.until, "filter.until")}


@strawberry.type
class Query(ComplianceQuery):
    @strawberry.field(description="A wallet; only its owner and the roles that see everything may read it.")
    def wallet(self, info: Info, id: strawberry.ID) -> Wallet | None:
        ctx(info).require_wallet(wallet_arg(id))
        return Wallet(id=id)

    # Someone else's transfer, trade or command is answered as an unknown one (null), never as
    # forbidden: the answer must not tell whether an id exists.

    @strawberry.field(description="A transfer you send or receive; null if there is none you may read.")
    async def transfer(self, info: Info, id: strawberry.ID) -> Transfer | None:
        row = await ctx(info).loaders.transfer.load(id_arg(id))
        if row is None or not ctx(info).may_see_any(row["source"], row["target"]):
            return None
        return Transfer(row=row)

    @strawberry.field(description="A trade you sell or buy in, with every settlement step; "
                                  "null if there is none you may read.")
    async def trade(self, info: Info, id: strawberry.ID) -> Trade | None:
        row = await ctx(info).loaders.trade.load(id_arg(id))
        if row is None or not ctx(info).may_see_any(row["seller"], row["buyer"]):
            return None
        return Trade(row=row)

    @strawberry.field(description="Transfers, newest first.")
    async def transfers(self, info: Info, first: int | None = None, after: str | None = None,
                        filter: TransferFilter | None = None) -> pages.Connection[Transfer]:
        f = filter or TransferFilter()
        size = pages.page_size(first)
        position = pages.decode("transfers", after, datetime, str)
        rows = await db.transfers(
            ctx(info).db, scope=ctx(info).scope(), status=_status(f.status, TRANSFER_STATUSES, "transfer"),
            asset=None if f.asset is None else symbol_arg(f.asset, "filter.asset"),
            wallet=_wallet_filter(info, f.wallet), **_between(f),
            after=position, limit=size + 1,
        )
        return pages.connection(rows, size, after, lambda r: Transfer(row=r),
                                lambda r: pages.encode("transfers", r["initiated_at"], r["transfer_id"]))

    @strawberry.field(description="Trades, newest first.")
    async def trades(self, info: Info, first: int | None = None, after: str | None = None,
                     filter: TradeFilter | None = None) -> pages.Connection[Trade]:
        f = filter or TradeFilter()
        size = pages.page_size(first)
        position = pages.decode("trades", after, datetime, str)
        rows = await db.trades(
            ctx(info).db, scope=ctx(info).scope(), status=_status(f.status, TRADE_STATUSES, "trade"),
            asset=None if f.asset is None else symbol_arg(f.asset, "filter.asset"),
            wallet=_wallet_filter(info, f.wallet), **_between(f),
            after=position, limit=size + 1,
        )
        return pages.connection(rows, size, after, lambda r: Trade(row=r),
                                lambda r: pages.encode("trades", r["created_at"], r["trade_id"]))

    @strawberry.field(description="The audit trail, oldest first. Owners see their own wallets' events.")
    async def events(self, info: Info, first: int | None = None, after: str | None = None,
                     filter: EventFilter | None = None) -> pages.Connection[AuditEvent]:
        f = filter or EventFilter()
        size = pages.page_size(first)
        position = pages.decode("events", after, datetime, str)
        c = ctx(info)
        keys = c.event_keys()
        if f.aggregate is not None:
            key_arg(f.aggregate, "filter.aggregate")
            if keys is not None and f.aggregate not in keys:
                raise forbidden(f"the events of {f.aggregate}")
        rows = await db.events(
            c.db, scope_keys=keys, aggregate=f.aggregate,
            correlation_id=None if f.correlation_id is None
            else id_arg(f.correlation_id, "filter.correlationId"),
            command_id=None if f.command_id is None else id_arg(f.command_id, "filter.commandId"),
            type_=None if f.type is None else name_arg(f.type, "filter.type"), **_between(f),
            after=position, limit=size + 1,
        )
        return pages.connection(rows, size, after, AuditEvent.from_row,
                                lambda r: pages.encode("events", r["occurred_at"], r["event_id"]))

    @strawberry.field(description="Registered assets, by symbol.")
    async def assets(self, info: Info, first: int | None = None,
                     after: str | None = None) -> pages.Connection[Asset]:
        ctx(info).who()
        size = pages.page_size(first)
        position = pages.decode("assets", after, str)
        rows = await db.assets(ctx(info).db, after=None if position is None else position[0], limit=size + 1)
        return pages.connection(rows, size, after, Asset.from_row,
                                lambda r: pages.encode("assets", r["symbol"]))

    @strawberry.field
    async def asset(self, info: Info, symbol: str) -> Asset | None:
        ctx(info).who()
        row = await ctx(info).loaders.asset.load(symbol_arg(symbol, "symbol"))
        return None if row is None else Asset.from_row(row)

    @strawberry.field(description="What became of a command you sent; null until the projection has "
                                  "it, and for a command someone else sent.")
    async def command_status(self, info: Info, id: strawberry.ID) -> CommandStatus | None:
        c = ctx(info)
        row = (await db.commands_by_id(c.db, [id_arg(id)])).get(id)
        if row is None or not c.may_see_command(row):
            return None
        return CommandStatus.from_row(row)

    @strawberry.field(description="How far behind the event log the views are, per partition.")
    async def freshness(self, info: Info) -> Freshness:
        ctx(info).who()
        return Freshness(partitions=[PartitionLag.from_row(r) for r in await db.freshness(ctx(info).db)])


class LedgerSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None) -> None:
        # Refusals the client caused are answered, not logged with a traceback.
        unexpected = [e for e in errors if not is_expected(e)]
        if unexpected:
            super().process_errors(unexpected, execution_context)


@strawberry.type(name="Subscription")
class Subscriptions(Subscription, ComplianceSubscription):
    pass


schema = LedgerSchema(
    query=Query,
    subscription=Subscriptions,
    types=[ErrorCode],
    extensions=[QueryGuard],
)
