"""The command API's OpenAPI 3.1 document, served at ``/openapi.json`` and kept in the repo as
``openapi.json`` (``python -m command.openapi`` rewrites it; a test fails when it drifts)."""

import json
import sys
from pathlib import Path
from typing import Any

from command.outcomes import FINAL

AMOUNT = {"type": "string", "pattern": r"^\d+(\.\d+)?$",
          "description": "A decimal string in the asset's units, e.g. \"12.50\"; never more "
                         "decimal places than the asset has.", "examples": ["12.50"]}
WALLET = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$", "examples": ["alice"]}
SYMBOL = {"type": "string", "pattern": r"^[A-Z][A-Z0-9]{0,11}$", "examples": ["USDX"]}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


_ERROR = _object(["error"], error=_object(
    ["code", "message"],
    code={"type": "string", "description": "Stable, machine-readable; see the README's list."},
    message={"type": "string", "description": "What is wrong, for a person."},
    field={"type": "string", "description": "The offending field, when there is one."},
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
     "maxLength": 200}, "description": "Same key and body: the same answer, applied once. "
     "Same key, other body: 409 idempotency_key_reused."},
    {"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string",
     "examples": ["wait=5"]}, "description": "RFC 7240 `wait=N` (N ≤ 30): answer 200 with the "
     "final outcome once the read model shows it, else 202."},
]


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "Malformed JSON", 401: "Missing, malformed, expired or wrongly signed token",
            403: "The token's principal may not do this", 404: "Unknown resource",
            409: "Conflict (asset exists, idempotency key reused)", 413: "Body too large",
            415: "Body is not application/json", 422: "A field is missing or invalid",
            503: "The broker or the database is unavailable: retry after Retry-After; "
                 "error.outcome says whether the command was not_sent or its outcome is unknown"}
    ref = {"$ref": "#/components/schemas/Error"}
    return {str(s): {"description": text[s], "content": {"application/json": {"schema": ref}}}
            for s in statuses}


def _command(summary: str, body: dict[str, Any], who: str, *,
             path_params: tuple[str, ...] = ()) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Accepted"}
    params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
              for p in path_params]
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
            **_errors(400, 401, 403, 404, 409, 413, 415, 422, 503),
        },
    }}


def document() -> dict[str, Any]:
    nullable_amount = {**AMOUNT, "type": ["string", "null"]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Ledgerline command API", "version": "1"},
        "security": [{"bearer": []}],
        "paths": {
            "/v1/assets": _command("Register an asset", _object(
                ["symbol", "name", "decimals", "issuer"], symbol=SYMBOL, name={"type": "string"},
                decimals={"type": "integer", "minimum": 0, "maximum": 18}, issuer=WALLET,
                max_supply=nullable_amount), "operator or issuer"),
            "/v1/assets/{symbol}/issue": _command("Issue tokens of an asset to a wallet", _object(
                ["to", "amount"], to=WALLET, amount=AMOUNT), "the asset's issuer",
                path_params=("symbol",)),
            "/v1/transfers": _command("Transfer between wallets", _object(
                ["from", "to", "asset", "amount"], **{"from": WALLET}, to=WALLET, asset=SYMBOL,
                amount=AMOUNT, memo={"type": "string", "maxLength": 280}),
                "the owner of `from`, or an operator"),
            "/v1/trades": _command("Settle a trade, delivery versus payment", _object(
                ["seller", "buyer", "asset", "quantity", "payment_asset", "price"], seller=WALLET,
                buyer=WALLET, asset=SYMBOL, quantity=AMOUNT, payment_asset=SYMBOL,
                price={**AMOUNT, "description": "The whole payment for `quantity`."}),
                "an operator, or the owner of both wallets"),
            "/v1/burns": _command("Burn tokens from a wallet", _object(
                ["wallet", "asset", "amount"], wallet=WALLET, asset=SYMBOL, amount=AMOUNT),
                "the wallet's owner, or an operator"),
            "/v1/wallets/{wallet}/freeze": _command("Freeze a wallet (its debits fail)", _object(
                ["reason"], reason={"type": "string"}), "compliance", path_params=("wallet",)),
            "/v1/wallets/{wallet}/unfreeze": _command("Unfreeze a wallet", _object(
                ["reason"], reason={"type": "string"}), "compliance", path_params=("wallet",)),
            "/v1/commands/{command_id}": {"get": {
                "summary": "A command's outcome as the read model shows it",
                "description": "Who may: the command's sender, operator, compliance, auditor.",
                "parameters": [{"name": "command_id", "in": "path", "required": True,
                                "schema": {"type": "string", "format": "uuid"}}],
                "responses": {"200": {"description": "The outcome", "content": {
                    "application/json": {"schema": _object(
                        ["command_id", "status"], command_id={"type": "string"},
                        type={"type": ["string", "null"]}, status={"type": "string"},
                        reason={"type": ["string", "null"]},
                        correlation_id={"type": ["string", "null"]},
                        updated_at={"type": "string", "format": "date-time"})}}},
                    **_errors(401, 404, 422)},
            }},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
            "schemas": {"Error": _ERROR, "Accepted": _ACCEPTED},
        },
    }


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "openapi.json")
    target.write_text(render())
    print(f"wrote {target}")
