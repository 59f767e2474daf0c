"""Request bodies -> typed values, with errors that name the offending field."""

from typing import Any

import msgspec

from command.errors import ApiError
from events import grammar
from events.amounts import AmountError, parse_amount


def parse_json(raw: bytes) -> dict[str, Any]:
    # Strict JSON in UTF-8 (RFC 8259): no NaN or Infinity, no other encodings.
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "the body must be a JSON object")
    return body


def field(body: dict[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    if name not in body or body[name] is None:
        if required:
            raise ApiError(422, "missing_field", f"{name!r} is required", name)
        return None
    value = body[name]
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise ApiError(422, "invalid_field", f"{name!r} must be a {kind.__name__}", name)
    return value


def wallet(body: dict[str, Any], name: str) -> str:
    return wallet_id(field(body, name, str), name)


def wallet_id(value: str, name: str = "wallet") -> str:
    if not grammar.is_wallet(value):
        raise ApiError(
            422, "invalid_wallet", f"{name!r} must be 1-64 letters, digits, '_', '.', '@' or '-'", name
        )
    return value


def text(body: dict[str, Any], name: str, limit: int = 280) -> str:
    value: str = field(body, name, str)
    if not value.strip() or len(value) > limit:
        raise ApiError(422, "invalid_field", f"{name!r} must be 1-{limit} characters", name)
    return value


def symbol(value: str, name: str = "symbol") -> str:
    if not grammar.is_symbol(value):
        raise ApiError(
            422, "invalid_symbol", "a symbol is 1-12 capital letters and digits, e.g. USDX", name
        )
    return value


def amount(body: dict[str, Any], name: str, decimals: int) -> int:
    raw = body.get(name)
    if raw is None:
        raise ApiError(422, "missing_field", f"{name!r} is required", name)
    try:
        return parse_amount(raw, decimals)
    except AmountError as exc:
        raise ApiError(422, exc.code, f"{name!r}: {exc}", name) from None
