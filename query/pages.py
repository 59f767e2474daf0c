"""Relay cursor pagination: ``first``/``after``, edges, ``pageInfo``; cursors are only positions.

A cursor is the sort key of the last row seen (opaque: base64 of a small JSON list tagged with
the list it belongs to). It carries no filter and no scope: every page re-applies the filters
and the principal's scope, so a cursor taken from one list or forged by hand cannot widen what
a principal sees, only say where to continue.
"""

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import strawberry

from events import grammar
from query.errors import ErrorCode, error

MAX_PAGE = 100
DEFAULT_PAGE = 20
MAX_KEY = 128  # the longest id a cursor may hold

T = TypeVar("T")


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo

    @strawberry.field(description="The nodes of `edges`, for clients that need no cursors.")
    def nodes(self) -> list[T]:
        return [e.node for e in self.edges]


def page_size(first: int | None) -> int:
    if first is None:
        return DEFAULT_PAGE
    if first < 0:
        raise error(ErrorCode.invalid_argument, "`first` must not be negative", field="first")
    if first > MAX_PAGE:
        raise error(ErrorCode.page_too_large, f"`first` may be at most {MAX_PAGE}; page with `after`",
                    field="first", maximum=MAX_PAGE)
    return first


def encode(kind: str, *key: datetime | str | int) -> str:
    values = [v.isoformat() if isinstance(v, datetime) else v for v in key]
    return base64.urlsafe_b64encode(json.dumps([kind, *values]).encode()).decode()


def decode(kind: str, cursor: str | None, *types: type) -> tuple[Any, ...] | None:
    """The sort key in ``cursor``, checked against the list's ``kind`` and key ``types``."""
    if cursor is None:
        return None
    try:
        if len(cursor) > 512:
            raise ValueError("too long")
        raw = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        if not isinstance(raw, list) or raw[:1] != [kind] or len(raw) != len(types) + 1:
            raise ValueError("not a cursor of this list")
        return tuple(_typed(v, t) for v, t in zip(raw[1:], types, strict=True))
    except (ValueError, TypeError, UnicodeError, binascii.Error):
        raise error(ErrorCode.invalid_cursor, f"`after` is not a cursor of the {kind} list",
                    field="after") from None


def _typed(value: Any, kind: type) -> Any:
    """A cursor is the client's input like any other: hand-made ones hold NUL characters,
    offsets of 10**30 and times in year 0, which the database would refuse with an error."""
    if kind is datetime and isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("naive time")
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise ValueError("a time out of range") from None
    if kind is str and type(value) is str and len(value) <= MAX_KEY and grammar.text_problem(value) is None:
        return value
    if kind is int and type(value) is int and -(2**63) <= value < 2**63:
        return value
    raise ValueError(f"{value!r:.80} is not a {kind.__name__} of a cursor")


def connection(rows: Sequence[Any], size: int, after: str | None, node: Callable[[Any], T],
               cursor: Callable[[Any], str]) -> Connection[T]:
    """``rows`` were fetched with ``LIMIT size + 1``: the extra row only says there is more."""
    page = rows[:size]
    edges = [Edge(cursor=cursor(r), node=node(r)) for r in page]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(rows) > size,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )
