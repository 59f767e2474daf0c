"""The command API's OpenAPI 3.1 document, served at ``/openapi.json`` and kept in the repo as
``openapi.json`` (``python -m command.openapi`` rewrites it; a test fails when it drifts)."""

import json
import sys
from pathlib import Path
from typing import Any

from command.errors import Code
from command.outcomes import FINAL
from events import grammar

AMOUNT = {"type": "string", "pattern": f"^{grammar.POSITIVE_AMOUNT_PATTERN}$",
          "description": "A decimal string of ASCII digits in the asset's units, greater than "
                         "zero, e.g. \"12.50\"; never more decimal places than the asset has, "
                         "no sign, exponent or spaces.", "examples": ["12.50"]}
WALLET = {"type": "string", "pattern": f"^{grammar.WALLET_PATTERN}$", "examples": ["alice"]}
SYMBOL = {"type": "string", "pattern": f"^{grammar.SYMBOL_PATTERN}$", "examples": ["USDX"]}
_CASE = {"type": "string", "format": "uuid", "pattern": f"^{grammar.COMMAND_ID_PATTERN}$"}
_CLEAN = "No control characters (U+0000-U+001F, U+007F-U+009F) or unpaired surrogates."



def _text(limit: int, *, empty: bool = False) -> dict[str, Any]:
    pattern = grammar.TEXT_OR_EMPTY_PATTERN if empty else grammar.TEXT_PATTERN
    return {"type": "string", "minLength": 0 if empty else 1, "maxLength": limit,
            "pattern": f"^{pattern}$", "description": ("" if empty else "Not blank. ") + _CLEAN}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _body(required: list[str], **properties: Any) -> dict[str, Any]:
    # What a command takes and nothing else: an unknown field is 422 unknown_field.
    return {**_object(required, **properties), "additionalProperties": False}


_CODE = {"type": "string", "enum": [c.value for c in Code],
         "description": "Stable, machine-readable; a closed set:\n\n"
                        + "\n".join(f"- `{c.value}`: {c.description}" for c in Code)}

_ERROR = _object(["error"], error=_object(
    ["code", "message"],
    code={"$ref": "#/components/schemas/ErrorCode"},
    message={"type": "string", "description": "What is wrong, for a person."},
    field={"type": "string", "description": "The offending field, when there is one."},
    outcome={"type": "string", "enum": ["not_sent", "unknown"],
             "description": "With 503 unavailable: whether the command was certainly not sent, "
                            "or may still be appended."},
    command_id={"type": "string", "format": "uuid",
                "description": "With 503 and outcome unknown: the command that may be appended."},
))

_ACCEPTED = _object(
    ["command_id", "status"],
    command_id={"type": "string", "format": "uuid"},
    status={"type": "string", "enum": ["accepted", "pending", "confirmed", *sorted(FINAL)]},
    reason={"type": ["string", "null"], "description": "Why a command failed or was rejected."},
    transfer_id={"type": "string"},
    trade_id={"type": "string"},
    links=_object([], status={"type": "string"}),
)

_HEADERS = [
    {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string",
     "minLength": 1, "maxLength": 200, "pattern": f"^{grammar.KEY_PATTERN}$"},
     "description": "1-200 visible ASCII characters (else 400 invalid_idempotency_key). Same "
     "key and body: the same answer, and the command is applied once, however many requests "
     "race. Same key, other body: 409 idempotency_key_reused. While the first request with "
     "the key is still being sent: 409 idempotency_key_in_progress (retry)."},
    {"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string",
     "examples": ["wait=5"]}, "description": "RFC 7240 `wait=N` (N ≤ 30): answer 200 with the "
     "final outcome once the read model shows it, else 202."},
]


_STATUS_TEXT = {
    400: "Malformed JSON or invalid UTF-8 (malformed_json), nested too deep (json_too_deep), an "
         "invalid Idempotency-Key, or a body cut short",
    401: "Missing, malformed, expired or wrongly signed token, or a claim of the wrong type or "
         "range",
    403: "The token's principal may not do this",
    404: "Unknown resource",
    405: "Method not allowed; the Allow header lists the methods",
    409: "Conflict: the asset exists, the Idempotency-Key was used with another body, or its "
         "first request is still being sent",
    413: "Body too large",
    415: "Body is not application/json",
    422: "A field is missing, unknown or invalid; `field` names it",
    431: "Request line and headers larger than the limit (32 KiB by default)",
    503: "Kafka or the database is unavailable: retry after Retry-After, with the same "
         "Idempotency-Key. `outcome` says whether the command was certainly not sent "
         "(not_sent) or may still be appended (unknown, with its command_id)",
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}}


def _errors(*statuses: int) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Error"}
    answers: dict[str, Any] = {}
    for s in statuses:
        answers[str(s)] = {"description": _STATUS_TEXT[s],
                           "content": {"application/json": {"schema": ref}}}
        if s == 405:
            answers[str(s)]["headers"] = {"Allow": {"schema": {"type": "string"}}}
        if s in (409, 503):
            answers[str(s)]["headers"] = _RETRY_AFTER
    return answers


def _command(summary: str, body: dict[str, Any], who: str, *,
             path_params: tuple[tuple[str, dict[str, Any]], ...] = ()) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Accepted"}
    params = [{"name": p, "in": "path", "required": True, "schema": schema}
              for p, schema in path_params]
    return {"post": {
        "summary": summary,
        "description": f"Who may: {who}.",
        "parameters": params + _HEADERS,
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {
            "200": {"description": "Final outcome (with Prefer: wait)",
                    "content": {"application/json": {"schema": ref}}},
            "202": {"description": "Accepted: the command is in Kafka",
                    "content": {"application/json": {"schema": ref}}},
            **_errors(400, 401, 403, 404, 405, 409, 413, 415, 422, 431, 503),
        },
    }}


def document() -> dict[str, Any]:
    nullable_amount = {**AMOUNT, "type": ["string", "null"]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Ledgerline command API", "version": "1"},
        "security": [{"bearer": []}],
        "paths": {
            "/v1/assets": _command("Register an asset", _body(
                ["symbol", "name", "decimals", "issuer"], symbol=SYMBOL,
                name=_text(grammar.NAME_LIMIT),
                decimals={"type": "integer", "minimum": 0, "maximum": 18}, issuer=WALLET,
                max_supply=nullable_amount), "operator or issuer"),
            "/v1/assets/{symbol}/issue": _command("Issue tokens of an asset to a wallet", _body(
                ["to", "amount"], to=WALLET, amount=AMOUNT), "the asset's issuer",
                path_params=(("symbol", SYMBOL),)),
            "/v1/transfers": _command("Transfer between wallets", {**_body(
                ["from", "to", "asset", "amount"], **{"from": WALLET}, to=WALLET, asset=SYMBOL,
                amount=AMOUNT,
                memo={**_text(grammar.TEXT_LIMIT, empty=True), "type": ["string", "null"]}),
                "description": "`from` and `to` must differ (422 same_wallet)."},
                "the owner of `from`, or an operator"),
            "/v1/trades": _command("Settle a trade, delivery versus payment", _body(
                ["seller", "buyer", "asset", "quantity", "payment_asset", "price"], seller=WALLET,
                buyer=WALLET, asset=SYMBOL, quantity=AMOUNT, payment_asset=SYMBOL,
                price={**AMOUNT, "description": "The whole payment for `quantity`."}),
                "an operator, or the owner of both wallets; `seller` and `buyer` must differ "
                "(422 same_wallet), and so must `asset` and `payment_asset` (422 same_asset)"),
            "/v1/burns": _command("Burn tokens from a wallet", _body(
                ["wallet", "asset", "amount"], wallet=WALLET, asset=SYMBOL, amount=AMOUNT),
                "the wallet's owner, or an operator"),
            "/v1/wallets/{wallet}/freeze": _command("Freeze a wallet (its debits fail)", _body(
                ["reason"], reason=_text(grammar.TEXT_LIMIT)), "compliance",
                path_params=(("wallet", WALLET),)),
            "/v1/wallets/{wallet}/unfreeze": _command("Unfreeze a wallet", _body(
                ["reason"], reason=_text(grammar.TEXT_LIMIT)), "compliance",
                path_params=(("wallet", WALLET),)),
            "/v1/wallets/{wallet}/sanction": _command(
                "Put a wallet on the sanctions list (movements touching it fail sanctioned_wallet)",
                _body(["reason"], reason=_text(grammar.TEXT_LIMIT)), "compliance",
                path_params=(("wallet", WALLET),)),
            "/v1/wallets/{wallet}/unsanction": _command("Take a wallet off the sanctions list", _body(
                ["reason"], reason=_text(grammar.TEXT_LIMIT)), "compliance",
                path_params=(("wallet", WALLET),)),
            "/v1/wallets/{wallet}/kyc": _command(
                "Set a wallet's KYC tier and its 24 h outgoing limits (over them: limit_exceeded)",
                _body(["tier", "daily_limits"], tier=_text(40), daily_limits={
                    "type": "object", "maxProperties": 100, "additionalProperties": AMOUNT,
                    "propertyNames": {"pattern": f"^{grammar.SYMBOL_PATTERN}$"},
                    "description": "asset symbol -> the most the wallet may send in any 24 hours"}),
                "compliance", path_params=(("wallet", WALLET),)),
            "/v1/cases/{case_id}/assign": _command("Take a case on: investigating, with an assignee", _body(
                ["assignee"], assignee=_text(100), note=_text(grammar.TEXT_LIMIT, empty=True)),
                "compliance", path_params=(("case_id", _CASE),)),
            "/v1/cases/{case_id}/note": _command("Add a note to a case", _body(
                ["note"], note=_text(grammar.TEXT_LIMIT)), "compliance", path_params=(("case_id", _CASE),)),
            "/v1/cases/{case_id}/clear": _command("Close a case as cleared", _body(
                ["note"], note=_text(grammar.TEXT_LIMIT)), "compliance", path_params=(("case_id", _CASE),)),
            "/v1/cases/{case_id}/escalate": _command("Close a case as escalated, with a report reference",
                _body(["report_reference"], report_reference=_text(100),
                      note=_text(grammar.TEXT_LIMIT, empty=True)),
                "compliance", path_params=(("case_id", _CASE),)),
            "/v1/wallets/{wallet}/erase": _command(
                "Erase a wallet's personal data (its memos): its data key is destroyed at once, "
                "the log keeps only ciphertext, balances are unchanged", _body(
                    ["reason"], reason=_text(grammar.TEXT_LIMIT)), "compliance",
                path_params=(("wallet", WALLET),)),
            "/v1/commands/{command_id}": {"get": {
                "summary": "A command's outcome as the read model shows it",
                "description": "Who may: the command's sender, operator, compliance, auditor. "
                               "Someone else's command answers exactly as an unknown one (404).",
                "parameters": [{"name": "command_id", "in": "path", "required": True,
                                "schema": {"type": "string", "format": "uuid",
                                           "pattern": f"^{grammar.COMMAND_ID_PATTERN}$"}}],
                "responses": {"200": {"description": "The outcome", "content": {
                    "application/json": {"schema": _object(
                        ["command_id", "status"], command_id={"type": "string"},
                        type={"type": ["string", "null"]}, status={"type": "string"},
                        reason={"type": ["string", "null"]},
                        correlation_id={"type": ["string", "null"]},
                        updated_at={"type": "string", "format": "date-time"})}}},
                    **_errors(401, 404, 405, 422, 431, 503)},
            }},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
            "schemas": {"Error": _ERROR, "ErrorCode": _CODE, "Accepted": _ACCEPTED},
        },
    }


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "openapi.json")
    target.write_text(render())
    print(f"wrote {target}")
