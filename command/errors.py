"""The one error shape of the command API: ``{"error": {"code", "message", "field"?}}``, and the
closed set of codes it answers with.

A code is part of the API's contract (clients branch on it; ``openapi.json`` lists the set):
add members freely, never rename or remove one.
"""

from collections.abc import Mapping
from enum import StrEnum

from starlette.responses import JSONResponse


class Code(StrEnum):
    """Every ``error.code`` the command API answers with, each with what it means."""

    description: str

    def __new__(cls, value: str, description: str = "") -> "Code":
        member = str.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member

    # 400: the request itself cannot be read
    MALFORMED_JSON = "malformed_json", "The body is not a JSON object in valid UTF-8."
    JSON_TOO_DEEP = "json_too_deep", "The body nests arrays or objects more than 32 levels deep."
    INCOMPLETE_BODY = "incomplete_body", "The client went away before the body ended."
    INVALID_IDEMPOTENCY_KEY = ("invalid_idempotency_key",
                               "Idempotency-Key must be 1-200 visible ASCII characters.")
    # 401, 403: who is asking
    UNAUTHENTICATED = "unauthenticated", "No 'Authorization: Bearer <token>' header."
    INVALID_TOKEN = ("invalid_token", "The token is malformed, wrongly signed, or one of its "
                     "claims has the wrong type or is out of range; the message says which.")
    TOKEN_EXPIRED = "token_expired", "The token's 'exp' has passed."
    FORBIDDEN = "forbidden", "The token's principal may not do this."
    # 404, 405
    NOT_FOUND = "not_found", "No such endpoint."
    UNKNOWN_ASSET = "unknown_asset", "No asset is registered under that symbol."
    UNKNOWN_COMMAND = ("unknown_command", "No outcome visible to you for that command id (it may "
                       "be in flight, unknown, or someone else's: the answer is the same).")
    METHOD_NOT_ALLOWED = "method_not_allowed", "The endpoint does not take that method; see Allow."
    # 409: conflicts with what exists
    ASSET_EXISTS = "asset_exists", "An asset with that symbol is already registered."
    IDEMPOTENCY_KEY_REUSED = ("idempotency_key_reused",
                              "The Idempotency-Key was used before with a different request.")
    IDEMPOTENCY_KEY_IN_PROGRESS = ("idempotency_key_in_progress", "A request with the same "
                                   "Idempotency-Key is still being sent; retry after Retry-After.")
    # 413, 415, 431
    BODY_TOO_LARGE = "body_too_large", "The body is larger than the configured limit."
    UNSUPPORTED_MEDIA_TYPE = ("unsupported_media_type",
                              "The body must be sent as 'application/json' (UTF-8).")
    HEADERS_TOO_LARGE = ("headers_too_large", "The request line and headers are larger than "
                         "the configured limit (answered before the request reaches the API).")
    # 422: a field is missing or invalid; ``field`` names it
    MISSING_FIELD = "missing_field", "A required field is missing or null."
    UNKNOWN_FIELD = "unknown_field", "The body has a field the command does not take."
    INVALID_FIELD = ("invalid_field", "A field has the wrong type, is empty, too long, or holds "
                     "control characters or unpaired surrogates.")
    INVALID_WALLET = "invalid_wallet", "A wallet id is 1-64 of A-Z a-z 0-9 _ . @ -, starting alphanumeric."
    INVALID_SYMBOL = "invalid_symbol", "A symbol is 1-12 capital letters and digits, starting with a letter."
    INVALID_AMOUNT = ("invalid_amount", "An amount is a string of ASCII digits with an optional "
                      "fraction, greater than zero.")
    TOO_MANY_DECIMALS = "too_many_decimals", "The amount has more decimal places than the asset."
    INVALID_DECIMALS = "invalid_decimals", "An asset has 0 to 18 decimals."
    INVALID_COMMAND_ID = "invalid_command_id", "A command id is a lower-case UUID with hyphens."
    SAME_WALLET = "same_wallet", "'from' and 'to' (or 'seller' and 'buyer') must differ."
    SAME_ASSET = "same_asset", "'asset' and 'payment_asset' must differ."
    # 5xx
    UNAVAILABLE = ("unavailable", "Kafka or the database is unreachable; nothing was decided. "
                   "Retry (with the same Idempotency-Key) after Retry-After.")
    INTERNAL_ERROR = "internal_error", "The request failed on our side; retry later."


class ApiError(Exception):
    """A request the API refuses; ``code`` is stable, ``message`` says what is wrong."""

    def __init__(self, status: int, code: Code, message: str, field: str | None = None, *,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = Code(code)
        self.message = message
        self.field = field
        self.headers = headers

    def response(self) -> JSONResponse:
        body: dict[str, str] = {"code": self.code.value, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return JSONResponse({"error": body}, status_code=self.status, headers=self.headers)
