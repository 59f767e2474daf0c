"""What every resolver gets: the database, the principal, the hub, and this request's loaders."""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from strawberry.types import Info

from common.auth import Principal
from events.keys import wallet_key
from query import db
from query.errors import ErrorCode, error, forbidden
from query.hub import Hub


class Loader:
    """A DataLoader: the keys asked for while the resolvers of one step run are fetched together,
    in one call, once those resolvers are all waiting. Lighter than Strawberry's (one task per
    batch and nothing else), which matters on a lookup of one row."""

    __slots__ = ("_batch", "_cache", "_fetch", "_task")

    def __init__(self, fetch: Callable[[list[str]], Awaitable[list[Any]]], *, cache: bool = True) -> None:
        self._fetch = fetch
        self._cache: dict[str, asyncio.Future[Any]] | None = {} if cache else None
        self._batch: list[tuple[str, asyncio.Future[Any]]] | None = None
        self._task: asyncio.Task[None] | None = None  # the running fetch: held, so it is not collected

    def load(self, key: str) -> "asyncio.Future[Any]":
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self._batch is None:
            self._batch = []
            # Its first step runs after the callbacks already scheduled: the other resolvers of
            # this step, which add their keys to the batch before it is taken.
            self._task = loop.create_task(self._dispatch())
        self._batch.append((key, future))
        if self._cache is not None:
            self._cache[key] = future
        return future

    async def _dispatch(self) -> None:
        batch, self._batch = self._batch or [], None
        try:
            values = await self._fetch([key for key, _ in batch])
        except BaseException as exc:
            for key, future in batch:
                if self._cache is not None:
                    self._cache.pop(key, None)
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), value in zip(batch, values, strict=True):
            if not future.done():
                future.set_result(value)


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

    def __getattr__(self, name: str) -> Loader:
        if name not in self._FETCH:
            raise AttributeError(name)
        fetch, empty = self._FETCH[name]
        database = self._db

        async def load(keys: list[str]) -> list[Any]:
            found = await fetch(database, keys)
            return [found.get(k, empty) for k in keys]

        loader = Loader(load, cache=self._cache)
        setattr(self, name, loader)  # found directly from now on
        return loader


@dataclass
class Context:
    db: db.Db
    principal: Principal | None
    loaders: Loaders
    hub: Hub | None = None
    alerts: Any = None  # the compliance alert feed (query.compliance.AlertFeed), for alertRaised
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

    def may_see_command(self, row: dict[str, Any]) -> bool:
        """Commands are the sender's own: others' are answered as unknown, never as forbidden,
        so an id cannot be probed for existence (the command API answers 404 for both too)."""
        p = self.who()
        return p.sees_everything or row["principal"] == p.sub

    def event_keys(self) -> list[str] | None:
        """The aggregates whose events this principal may read: its own wallets only."""
        scope = self.scope()
        return None if scope is None else sorted(wallet_key(w) for w in scope)


def ctx(info: Info) -> Context:
    return info.context
