"""Row values as the text Postgres parses: COPY lines and array elements, cheap to make.

asyncpg's binary encoders for ``numeric`` and ``timestamptz`` cost microseconds per value in
Python, more than the rest of a row together; Postgres parses the same values from text for a
fraction of that. Money leaves as the decimal text of an ``int`` (never a float), times as the
ISO 8601 text msgspec writes, so nothing is lost on the way.
"""

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode
#: Characters COPY's text format gives a meaning to; a value holding one is escaped.
_SPECIAL = re.compile(r"[\\\t\n\r]").search
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
NULL = "\\N"


def ts(value: datetime | None) -> str | None:
    """A timezone-aware time as ISO 8601 text (``…T…Z`` for UTC), None kept."""
    return None if value is None else _encode(value)[1:-1].decode()


def money(value: int | None) -> str | None:
    return None if value is None else str(value)


def escape(value: str | None) -> str:
    """One field of a COPY text line."""
    if value is None:
        return NULL
    return value.translate(_ESCAPES) if _SPECIAL(value) else value


def copy_lines(rows: Iterable[Sequence[Any]], free: Sequence[int]) -> bytes:
    """COPY text format for ``rows`` of ``str``/``int``/None values.

    Only the columns at indexes ``free`` may hold text from outside (ids, names, JSON): each row
    is checked once for a character COPY would read as a separator, and escaped only if it has
    one. The other columns are numbers, ISO times or fixed words, safe as they are.
    """
    lines = []
    for row in rows:
        fields = [NULL if v is None else v if v.__class__ is str else str(v) for v in row]
        if _SPECIAL("".join([row[i] or "" for i in free])):
            for i in free:
                fields[i] = escape(row[i])
        lines.append("\t".join(fields))
    lines.append("")
    return "\n".join(lines).encode()
