"""Subscriptions over graphql-transport-ws, pushed by the projector's NOTIFY through the hub.

Each stream answers the current state first, then every change; a transfer's or trade's stream
ends after its final status. Access is checked with the principal from ``connection_init``.
"""

from collections.abc import AsyncGenerator
from typing import Any

import strawberry
from strawberry.types import Info

from query.context import Context, ctx
from query.hub import FETCHERS, Hub
from query.ids import id_arg, wallet_arg
from query.records import Trade, Transfer
from query.wallets import Balance

FINAL_TRANSFER = frozenset({"completed", "failed"})
FINAL_TRADE = frozenset({"settled", "failed"})


@strawberry.type
class WalletBalances:
    wallet: strawberry.ID
    balances: list[Balance]


def _hub(c: Context) -> Hub:
    if c.hub is None:
        raise RuntimeError("subscriptions need the process's hub")
    return c.hub


async def _follow(c: Context, kind: str, key: str) -> AsyncGenerator[Any, None]:
    """The row now, then each time the projection changes it."""
    with _hub(c).watch(kind, key) as box:
        yield (await FETCHERS[kind](c.db, [key])).get(key)
        while True:
            yield await box.get()


@strawberry.type
class Subscription:
    @strawberry.subscription(description="A wallet's balances now, then after every change.")
    async def wallet_balances(self, info: Info,
                              wallet: strawberry.ID) -> AsyncGenerator[WalletBalances, None]:
        c = ctx(info)
        c.require_wallet(wallet_arg(wallet, "wallet"))
        last = None
        async for rows in _follow(c, "wallets", wallet):
            state = [(r["symbol"], r["available"], r["held"]) for r in rows or ()]
            if state != last:
                last = state
                yield WalletBalances(wallet=wallet, balances=[Balance.from_row(r) for r in rows or ()])

    @strawberry.subscription(description="A transfer's status now and at each change; ends when final.")
    async def transfer_status(self, info: Info, id: strawberry.ID) -> AsyncGenerator[Transfer, None]:
        async for row in _statuses(ctx(info), "transfers", id_arg(id), ("source", "target")):
            yield Transfer(row=row)
            if row["status"] in FINAL_TRANSFER:
                return

    @strawberry.subscription(description="A trade's status now and at each change; ends when final.")
    async def trade_status(self, info: Info, id: strawberry.ID) -> AsyncGenerator[Trade, None]:
        async for row in _statuses(ctx(info), "trades", id_arg(id), ("seller", "buyer")):
            yield Trade(row=row)
            if row["status"] in FINAL_TRADE:
                return


async def _statuses(c: Context, kind: str, key: str, parties: tuple[str, str]) -> AsyncGenerator[Any, None]:
    """Someone else's transfer or trade streams as an unknown one does: nothing, so a
    subscription cannot tell whether an id exists."""
    c.who()
    last = None
    async for row in _follow(c, kind, key):
        if row is None or not c.may_see_any(*(row[p] for p in parties)):
            continue
        if (row["status"], row["reason"]) == last:
            continue
        last = row["status"], row["reason"]
        yield row
