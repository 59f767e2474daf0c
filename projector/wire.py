"""Row values as the text Postgres parses: COPY lines and array literals, cheap to make.

asyncpg's binary encoders for ``numeric`` and ``timestamptz`` cost microseconds per value in
Python, more than the rest of a row together, and binding a list as an array costs it about half
a microsecond per element (each is checked against the collection ABCs); Postgres parses the
same values from text for a fraction of that. Money leaves as the decimal text of an ``int``
(never a float), times as the ISO 8601 text msgspec writes, so nothing is lost on the way.
"""

import re
from collections.abc import AsyncIterator, Iterable
from datetime import datetime

import msgspec

_encode = msgspec.json.Encoder().encode
#: Characters COPY's text format gives a meaning to; a value holding one is escaped.
_SPECIAL = re.compile(r"[\\\t\n\r]").search
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
NULL = "\\N"


def ts(value: datetime | None) -> str | None:
    """A timezone-aware time as ISO 8601 text (``…T…Z`` for UTC), None kept."""
    return None if value is None else _encode(value)[1:-1].decode()


def escape(value: str | None) -> str:
    """One field of a COPY text line."""
    if value is None:
        return NULL
    return value.translate(_ESCAPES) if _SPECIAL(value) else value


def fields(*values: str | None) -> tuple[str, ...]:
    """Text from outside (ids, names, JSON) as COPY text fields: checked together, escaped only
    when one of them holds a character COPY would read as a separator; None is ``\\N``."""
    if _SPECIAL("".join(filter(None, values))):
        return tuple(escape(v) for v in values)
    if None in values:
        return tuple(NULL if v is None else v for v in values)
    return values  # type: ignore[return-value]  # no None among them


def array(values: Iterable[object]) -> str:
    """An array literal of ``values`` (text, numbers, booleans; None is NULL), bound as one text
    parameter and cast by the server (``$1::text::numeric[]``)."""
    texts = [None if v is None else v if v.__class__ is str else str(v) for v in values]
    present = '",'.join(filter(None, texts))
    if '"' in present or "\\" in present:
        texts = [None if t is None else t.replace("\\", "\\\\").replace('"', '\\"') for t in texts]
    return "{" + ",".join(["NULL" if t is None else f'"{t}"' for t in texts]) + "}"


async def source(data: bytes) -> AsyncIterator[bytes]:
    """``data`` as the asynchronous iterable asyncpg's COPY reads without a thread."""
    yield data
