"""Checks on ids that arrive as arguments: a malformed id is a clear error, not a query."""

import re

from events import grammar
from query.errors import invalid_argument

# Transfer, trade, command and event ids (UUIDs today), aggregate keys such as ``wallet:alice``.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}")
_KEY = re.compile(rf"wallet:{grammar.WALLET_PATTERN}|asset:{grammar.SYMBOL_PATTERN}")
# Event types (``TransferInitiated``) and other names the API matches exactly.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def wallet_arg(value: str, field: str = "id") -> str:
    if not grammar.is_wallet(value):
        raise invalid_argument(field, f"{value[:80]!r} is not a wallet id")
    return value


def symbol_arg(value: str, field: str = "asset") -> str:
    if not grammar.is_symbol(value):
        raise invalid_argument(field, f"{value[:80]!r} is not an asset symbol")
    return value


def is_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def id_arg(value: str, field: str = "id") -> str:
    if not _ID.fullmatch(value):
        raise invalid_argument(field, f"{value[:80]!r} is not a valid id")
    return value


def key_arg(value: str, field: str = "aggregate") -> str:
    if not _KEY.fullmatch(value):
        raise invalid_argument(field, f"{value[:80]!r} is not an aggregate such as 'wallet:alice'")
    return value


def name_arg(value: str, field: str) -> str:
    if not _NAME.fullmatch(value):
        raise invalid_argument(field, f"{value[:80]!r} is not a name such as 'TransferInitiated'")
    return value
