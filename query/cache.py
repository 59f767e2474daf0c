"""Least-recently-used caches bounded in bytes, for what is remembered by query text.

A count of entries does not bound memory when a client chooses the entries: 256 parsed
documents of 64 KiB queries took the process from 64 MB to 521 MB. Each entry here is charged an
estimate of its size, and the oldest go once the budget is spent; an entry larger than the whole
budget is not kept at all.
"""

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

from graphql import DocumentNode

V = TypeVar("V")

MISSING: Any = object()

# Measured with tracemalloc on graphql-core 3.3 documents: at most ~550 bytes per token (token,
# location and AST node), beside the texts the nodes hold (at most the query's length again).
TOKEN_BYTES = 600


class ByteLRU(Generic[V]):
    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> V:
        """The value, or :data:`MISSING` (a cached value may itself be None)."""
        item = self._items.get(key)
        if item is None:
            return MISSING
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: Hashable, value: V, size: int) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= old[1]
        if size > self.budget:
            return
        self._items[key] = (value, size)
        self.size += size
        while self.size > self.budget:
            _, (_, dropped) = self._items.popitem(last=False)
            self.size -= dropped


def tokens(document: DocumentNode) -> int:
    """The number of tokens of a parsed document (they are linked from its location)."""
    count, token = 0, document.loc.start_token if document.loc else None
    while token is not None:
        count += 1
        token = token.next
    return count


def document_bytes(query: str, document: DocumentNode) -> int:
    """An upper estimate of what keeping ``document`` (and ``query`` as its key) costs."""
    return 2 * len(query) + TOKEN_BYTES * tokens(document)
