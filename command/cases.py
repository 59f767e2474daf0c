"""Case actions of the compliance team: ``POST /v1/cases/{case_id}/{assign|note|clear|escalate}``.

Each is a command appended to ``compliance.commands`` (keyed ``case:<id>``) for the compliance
monitor to decide, like any other command: the answer is ``202`` once the command is in Kafka;
the case's new state (or a ``CaseActionRejected``) shows in GraphQL ``case(id)`` once decided.
Only the compliance role may act; anyone else gets the same 403 whether or not the case exists,
so the endpoint tells nobody that a case exists.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response

from command import availability, validate
from command.api import Call, _asset_decimals, _body, _command_id, _json_response
from command.errors import ApiError, Code
from events import codec, grammar, topics
from events.compliance import (
    AddCaseNote,
    AssignCase,
    CaseCommand,
    ClearCase,
    EscalateCase,
    WalletSanctioned,
    WalletTierSet,
    WalletUnsanctioned,
)
from events.keys import wallet_key

ACTIONS = ("assign", "note", "clear", "escalate")
_FIELDS = {
    "assign": frozenset({"assignee", "note"}),
    "note": frozenset({"note"}),
    "clear": frozenset({"note"}),
    "escalate": frozenset({"report_reference", "note"}),
}


def _message(action: str, case_id: str, body: dict[str, Any]) -> CaseCommand:
    if action == "assign":
        return AssignCase(case_id=case_id, assignee=validate.text(body, "assignee", 100),
                          note=validate.optional_text(body, "note") or "")
    if action == "note":
        return AddCaseNote(case_id=case_id, note=validate.text(body, "note"))
    if action == "clear":
        return ClearCase(case_id=case_id, note=validate.text(body, "note"))
    return EscalateCase(case_id=case_id, report_reference=validate.text(body, "report_reference", 100),
                        note=validate.optional_text(body, "note") or "")


def case_action(action: str) -> Callable[[Call], Awaitable[Response]]:
    """The handler of ``POST /v1/cases/{case_id}/<action>``."""
    async def handler(call: Call) -> Response:
        return await _act(call, action)

    return handler


async def _act(call: Call, action: str) -> Response:
    case_id = call.request.path_params["case_id"]
    if "compliance" not in call.principal.roles:
        raise ApiError(403, Code.FORBIDDEN, "case actions need the compliance role")
    if not grammar.is_command_id(case_id):
        raise ApiError(404, Code.NOT_FOUND, "a case id is a lower-case UUID")
    body = await _body(call)
    validate.only(body, _FIELDS[action])
    message = _message(action, case_id, body)
    command_id = _command_id(call)
    env = codec.envelope(message, key=f"case:{case_id}", command_id=command_id, id=command_id,
                         principal=call.principal.sub, correlation_id=case_id)
    await availability.append(call.w.producer, topics.CASE_COMMANDS, codec.encode(env),
                              f"case:{case_id}".encode(), command_id, call.w.settings.unavailable_seconds)
    return _json_response({"command_id": command_id, "status": "accepted", "case_id": case_id}, 202)


async def _sanction(call: Call, listed: bool) -> Response:
    """The change is the fact: appended to the compacted ``compliance.sanctions`` that every
    processor holds, and in force there once it has read it (a few milliseconds later)."""
    wallet = validate.wallet_id(call.request.path_params["wallet"])
    body = await _body(call)
    validate.only(body, frozenset({"reason"}))
    reason = validate.text(body, "reason")
    if "compliance" not in call.principal.roles:
        raise ApiError(403, Code.FORBIDDEN, "the sanctions list needs the compliance role")
    command_id = _command_id(call)
    message = (WalletSanctioned if listed else WalletUnsanctioned)(wallet=wallet, reason=reason)
    env = codec.envelope(message, key=wallet_key(wallet), command_id=command_id, principal=call.principal.sub)
    await availability.append(call.w.producer, topics.SANCTIONS, codec.encode(env), env.key.encode(),
                              command_id, call.w.settings.unavailable_seconds)
    return _json_response({"command_id": command_id, "status": "accepted", "wallet": wallet}, 202)


async def sanction(call: Call) -> Response:
    return await _sanction(call, listed=True)


async def unsanction(call: Call) -> Response:
    return await _sanction(call, listed=False)


async def set_tier(call: Call) -> Response:
    """``POST /v1/wallets/{wallet}/kyc``: the wallet's KYC tier and, per asset, the most it may
    send in any 24 hours (decimal strings in the asset's units), onto the compacted
    ``compliance.kyc`` every processor holds. The latest tier of a wallet replaces the last."""
    wallet = validate.wallet_id(call.request.path_params["wallet"])
    body = await _body(call)
    validate.only(body, frozenset({"tier", "daily_limits"}))
    tier = validate.text(body, "tier", 40)
    limits = validate.field(body, "daily_limits", dict)
    if len(limits) > 100:
        raise ApiError(422, Code.INVALID_FIELD, "at most 100 assets", "daily_limits")
    if "compliance" not in call.principal.roles:
        raise ApiError(403, Code.FORBIDDEN, "KYC tiers need the compliance role")
    units = {}
    for asset in limits:
        symbol = validate.symbol(asset, "daily_limits")
        decimals = await _asset_decimals(call.w, symbol, "daily_limits")
        units[symbol] = str(validate.amount(limits, asset, decimals))
    command_id = _command_id(call)
    env = codec.envelope(WalletTierSet(wallet=wallet, tier=tier, daily_limits=units), key=wallet_key(wallet),
                         command_id=command_id, principal=call.principal.sub)
    await availability.append(call.w.producer, topics.KYC, codec.encode(env), env.key.encode(),
                              command_id, call.w.settings.unavailable_seconds)
    return _json_response({"command_id": command_id, "status": "accepted", "wallet": wallet}, 202)
