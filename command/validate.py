"""Request bodies -> typed values, with errors that name the offending field.

Every rule comes from :mod:`events.grammar`, the one definition of valid input.
"""

from typing import Any

import msgspec

from command.errors import ApiError, Code
from events import grammar
from events.amounts import AmountError, parse_amount


def parse_json(raw: bytes) -> dict[str, Any]:
    # Strict JSON in UTF-8 (RFC 8259): no NaN or Infinity, no other encodings, bounded depth
    # (checked before parsing: the parser recurses).
    if grammar.json_too_deep(raw):
        raise ApiError(400, Code.JSON_TOO_DEEP,
                       f"the body nests more than {grammar.JSON_MAX_DEPTH} levels deep")
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError(400, Code.MALFORMED_JSON, f"the body is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:  # msgspec decodes strings as UTF-8 and says so this way
        raise ApiError(400, Code.MALFORMED_JSON,
                       f"the body is not valid UTF-8 (byte {exc.start} of a string)") from None
    if not isinstance(body, dict):
        raise ApiError(400, Code.MALFORMED_JSON, "the body must be a JSON object")
    return body


def only(body: dict[str, Any], names: frozenset[str]) -> None:
    """Refuse a field the command does not take: a typo must not pass silently, and what the
    Idempotency-Key's request hash covers is then exactly what the command carries."""
    if not body.keys() <= names:
        extra = sorted(k for k in body if k not in names)
        name = extra[0]
        shown = name if len(name) <= 64 and grammar.text_problem(name) is None else None
        raise ApiError(422, Code.UNKNOWN_FIELD,
                       f"unknown field {name[:64]!r}; this command takes {', '.join(sorted(names))}", shown)


def field(body: dict[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    if name not in body or body[name] is None:
        if required:
            raise ApiError(422, Code.MISSING_FIELD, f"{name!r} is required", name)
        return None
    value = body[name]
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema's integer: 6.0 is 6
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise ApiError(422, Code.INVALID_FIELD, f"{name!r} must be a {kind.__name__}", name)
    return value


def wallet(body: dict[str, Any], name: str) -> str:
    return wallet_id(field(body, name, str), name)


def wallet_id(value: str, name: str = "wallet") -> str:
    if not grammar.is_wallet(value):
        raise ApiError(
            422, Code.INVALID_WALLET,
            f"{name!r} must be 1-64 letters, digits, '_', '.', '@' or '-'", name
        )
    return value


def text(body: dict[str, Any], name: str, limit: int = grammar.TEXT_LIMIT, *,
         empty: bool = False) -> str:
    """Free text: at most ``limit`` characters, no control characters or unpaired
    surrogates, and not blank unless ``empty``."""
    value: str = field(body, name, str)
    return _text(value, name, limit, empty)


def optional_text(body: dict[str, Any], name: str, limit: int = grammar.TEXT_LIMIT, *,
                  empty: bool = False) -> str | None:
    """As :func:`text`, for a field that may be left out (or null)."""
    value: str | None = field(body, name, str, required=False)
    return None if value is None else _text(value, name, limit, empty)


def _text(value: str, name: str, limit: int, empty: bool) -> str:
    if len(value) > limit:
        raise ApiError(422, Code.INVALID_FIELD, f"{name!r} is at most {limit} characters", name)
    if not empty and not value.strip():
        raise ApiError(422, Code.INVALID_FIELD, f"{name!r} must not be empty or blank", name)
    problem = grammar.text_problem(value)
    if problem is not None:
        raise ApiError(422, Code.INVALID_FIELD, f"{name!r}: {problem}", name)
    return value


def symbol(value: str, name: str = "symbol") -> str:
    if not grammar.is_symbol(value):
        raise ApiError(
            422, Code.INVALID_SYMBOL, "a symbol is 1-12 capital letters and digits, e.g. USDX", name
        )
    return value


def command_id(value: str) -> str:
    if not grammar.is_command_id(value):
        raise ApiError(422, Code.INVALID_COMMAND_ID,
                       "a command id is a lower-case UUID such as "
                       "'0d5b7c1a-3a52-4f0e-9c7e-6f2b8e1d4a90'", "command_id")
    return value


def amount(body: dict[str, Any], name: str, decimals: int) -> int:
    raw = body.get(name)
    if raw is None:
        raise ApiError(422, Code.MISSING_FIELD, f"{name!r} is required", name)
    try:
        return parse_amount(raw, decimals)
    except AmountError as exc:
        raise ApiError(422, Code(exc.code), f"{name!r}: {exc}", name) from None
