"""What every resolver gets: the database, the principal, the hub, and this request's loaders."""

from dataclasses import dataclass, field
from typing import Any, ClassVar

from strawberry.dataloader import DataLoader
from strawberry.types import Info

from events.keys import wallet_key
from ledgerline.auth import Principal
from query import db
from query.errors import ErrorCode, error, forbidden
from query.hub import Hub


class Loaders:
    """One set per HTTP request (cached) or per websocket connection (uncached: values change).
    Each loader is made on first use: most requests need one or two of them."""

    _FETCH: ClassVar[dict[str, tuple[Any, Any]]] = {
        "asset": (db.assets_by_symbol, None),
        "balances": (db.balances_by_wallet, []),
        "steps": (db.steps_by_correlation, []),
        "transfer": (db.transfers_by_id, None),
        "trade": (db.trades_by_id, None),
    }

    def __init__(self, database: db.Db, *, cache: bool = True) -> None:
        self._db = database
        self._cache = cache

    def __getattr__(self, name: str) -> DataLoader[str, Any]:
        if name not in self._FETCH:
            raise AttributeError(name)
        fetch, empty = self._FETCH[name]
        database = self._db

        async def load(keys: list[str]) -> list[Any]:
            found = await fetch(database, keys)
            return [found.get(k, empty) for k in keys]

        loader: DataLoader[str, Any] = DataLoader(load_fn=load, cache=self._cache)
        setattr(self, name, loader)  # found directly from now on
        return loader


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
