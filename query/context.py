"""What every resolver gets: the database, the principal, the hub, and this request's loaders."""

from dataclasses import dataclass, field
from typing import Any

from strawberry.dataloader import DataLoader
from strawberry.types import Info

from events.keys import wallet_key
from ledgerline.auth import Principal
from query import db
from query.errors import ErrorCode, error, forbidden
from query.hub import Hub


class Loaders:
    """One set per HTTP request (cached) or per websocket connection (uncached: values change)."""

    def __init__(self, database: db.Db, *, cache: bool = True) -> None:
        def loader(fetch: Any, empty: Any) -> DataLoader[str, Any]:
            async def load(keys: list[str]) -> list[Any]:
                found = await fetch(database, keys)
                return [found.get(k, empty) for k in keys]

            return DataLoader(load_fn=load, cache=cache)

        self.asset = loader(db.assets_by_symbol, None)
        self.balances = loader(db.balances_by_wallet, [])
        self.steps = loader(db.steps_by_correlation, [])
        self.transfer = loader(db.transfers_by_id, None)
        self.trade = loader(db.trades_by_id, None)


@dataclass
class Context:
    db: db.Db
    principal: Principal | None
    loaders: Loaders
    hub: Hub | None = None
    transport: str = "http"
    # Filled by graphql-transport-ws from the connection_init payload.
    connection_params: dict[str, Any] | None = None
    extensions: dict[str, Any] = field(default_factory=dict)

    def who(self) -> Principal:
        if self.principal is None:
            raise error(ErrorCode.unauthenticated, "send a bearer token")
        return self.principal

    def scope(self) -> frozenset[str] | None:
        """The wallets this principal may see, or None for a role that sees everything."""
        p = self.who()
        return None if p.sees_everything else p.wallets

    def require_wallet(self, wallet: str) -> None:
        if not self.who().may_see_wallet(wallet):
            raise forbidden(f"wallet {wallet}")

    def may_see_any(self, *wallets: str | None) -> bool:
        scope = self.scope()
        return scope is None or any(w in scope for w in wallets if w is not None)

    def event_keys(self) -> list[str] | None:
        """The aggregates whose events this principal may read: its own wallets only."""
        scope = self.scope()
        return None if scope is None else sorted(wallet_key(w) for w in scope)


def ctx(info: Info) -> Context:
    return info.context  # type: ignore[no-any-return]
