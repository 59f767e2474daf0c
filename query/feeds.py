"""Shared subscription streams: one execution per change for every identical subscription.

Subscribers that send the same subscription (query text, variables, operation) with the same
rights (the wallets they may see, or everything) would receive the same results, so one stream
runs for all of them and each result goes to every member. A change watched by a thousand
browser tabs is then executed once, not a thousand times, and what the members derive from a
result (its encoded payload) is computed once too (:class:`Shared`). Results are whole states
(balances, a transfer's status), so a member that joins late starts from the last one, and a
member that falls behind keeps only the latest few.
"""

import asyncio
import collections
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any

from query.context import Context

_END = object()
_BACKLOG = 16


class Shared:
    """One result of a shared stream, and what its members derive from it, computed once."""

    __slots__ = ("_derived", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self._derived: dict[str, Any] = {}

    def once(self, name: str, derive: Callable[[Any], Any]) -> Any:
        if name not in self._derived:
            self._derived[name] = derive(self.value)
        return self._derived[name]


class _Member:
    def __init__(self) -> None:
        self.pending: collections.deque[Any] = collections.deque(maxlen=_BACKLOG)
        self.ready = asyncio.Event()

    def put(self, item: Any) -> None:
        self.pending.append(item)
        self.ready.set()

    async def items(self) -> AsyncIterator[Any]:
        while True:
            await self.ready.wait()
            self.ready.clear()
            while self.pending:
                item = self.pending.popleft()
                if item is _END:
                    return
                yield item


class _Feed:
    def __init__(self, start: Callable[[], Awaitable[Any]], on_end: Callable[["_Feed"], None]) -> None:
        self.members: set[_Member] = set()
        self.last: Any = _END
        self.task = asyncio.create_task(self._pump(start, on_end))

    def _send(self, item: Any) -> None:
        for m in self.members:
            m.put(item)

    async def _pump(self, start: Callable[[], Awaitable[Any]], on_end: Callable[["_Feed"], None]) -> None:
        source = None
        try:
            source = await start()
            if not hasattr(source, "__aiter__"):  # an answer at once, not a stream
                self._send(Shared(source))
                return
            async for result in source:
                self.last = Shared(result)
                self._send(self.last)
        finally:
            on_end(self)
            if source is not None and hasattr(source, "aclose"):
                with contextlib.suppress(Exception):
                    await source.aclose()
            self._send(_END)


class Feeds:
    def __init__(self) -> None:
        self._feeds: dict[Hashable, _Feed] = {}

    def __len__(self) -> int:
        return len(self._feeds)

    @staticmethod
    def key(query: str, variables: dict[str, Any] | None, operation_name: str | None,
            context: Context) -> Hashable | None:
        """Subscriptions with equal keys get equal results; None: do not share this one."""
        if context.principal is None:
            return None
        scope = context.scope()
        rights = "*" if scope is None else tuple(sorted(scope))
        return query, json.dumps(variables or {}, sort_keys=True, default=str), operation_name, rights

    def _ended(self, key: Hashable, feed: _Feed) -> None:
        if self._feeds.get(key) is feed:
            del self._feeds[key]

    async def follow(self, key: Hashable, start: Callable[[], Awaitable[Any]]) -> AsyncIterator[Shared]:
        """The results of the stream ``key``, started with ``start()`` if nobody follows it yet."""
        feed = self._feeds.get(key)
        if feed is None or feed.task.done():
            feed = self._feeds[key] = _Feed(start, lambda f: self._ended(key, f))
        member = _Member()
        if feed.last is not _END:
            member.put(feed.last)
        feed.members.add(member)
        try:
            async for item in member.items():
                yield item
        finally:
            feed.members.discard(member)
            if not feed.members and not feed.task.done():
                feed.task.cancel()
                self._ended(key, feed)
