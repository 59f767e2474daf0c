"""The HTTP command API: validate, authorise, append the command to Kafka, answer.

An answer is given only once the command is in Kafka (``acks=all``, idempotent producer).
``Prefer: wait=N`` answers with the final outcome once the read model shows it.

A command without ``Idempotency-Key`` touches no database on its way in: asset decimals are
cached, a bearer token's signature is checked once per token (its expiry on every use), and a
waiting request is woken by the projector's NOTIFY. See :mod:`command.producer` for how the
producer batches under load without adding latency at low load. A command with one reserves
the key in PostgreSQL before it is sent (:mod:`command.idempotency`).

Every refusal is an :class:`~command.errors.ApiError` with a code of the closed
:class:`~command.errors.Code` set; every input rule is :mod:`events.grammar`'s.
"""

import asyncio
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
from aiokafka import AIOKafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from command import availability, idempotency, outcomes, validate
from command.errors import ApiError, Code
from command.ids import name_id, random_id
from command.openapi import render as render_openapi
from common.auth import AuthError, Principal
from common.failures import TRANSIENT
from common.keyring import Erased, KeyStore, seal
from common.settings import Settings
from common.tokens import Verified
from common.tracing import Tracing
from events import codec, grammar, topics
from events.amounts import AmountError
from events.keys import asset_key, wallet_key
from events.messages import (
    BurnTokens,
    EraseWalletData,
    FreezeWallet,
    InitiateTrade,
    InitiateTransfer,
    IssueTokens,
    Message,
    RegisterAsset,
    UnfreezeWallet,
)

log = logging.getLogger("ledgerline.command_api")

_IDEMPOTENCY_NS = uuid.UUID("0d5b7c1a-3a52-4f0e-9c7e-6f2b8e1d4a90")
_OTHER_CHARSET = re.compile(r"charset\s*=\s*(?!\"?utf-8\"?\s*(?:;|$))", re.IGNORECASE)
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)")
_json = msgspec.json.Encoder()


@dataclass
class Wiring:
    settings: Settings
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    waiters: outcomes.Waiters
    decimals: dict[str, int]
    tokens: Verified
    #: Wallets' data keys, to seal memos (None: memos go to the log in clear).
    keys: KeyStore | None = None
    #: Spans of requests, sends and waits (None: tracing is off; see common.tracing).
    tracing: Tracing | None = None


@dataclass(slots=True)
class Call:
    """One request as a handler sees it: the caller, and the headers read once into a dict."""

    request: Request
    w: Wiring
    principal: Principal
    headers: dict[str, str]


def _headers(request: Request) -> dict[str, str]:
    # ASGI header names are lower case; where a name repeats, the first wins (as Starlette's).
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(request.scope["headers"])}


def _json_response(content: dict[str, Any], status_code: int = 200) -> Response:
    # The bytes JSONResponse would send (compact, UTF-8), encoded by msgspec.
    return Response(_json.encode(content), status_code=status_code, media_type="application/json")


async def _body(call: Call) -> dict[str, Any]:
    limit = call.w.settings.max_body_bytes
    media, _, params = call.headers.get("content-type", "").partition(";")
    if media.strip().lower() != "application/json":
        raise ApiError(415, Code.UNSUPPORTED_MEDIA_TYPE, "send the body as 'application/json'")
    if params and _OTHER_CHARSET.search(params):
        # JSON is UTF-8 (RFC 8259); a body declared otherwise would be read as something else.
        raise ApiError(415, Code.UNSUPPORTED_MEDIA_TYPE, "JSON bodies are UTF-8; drop the charset "
                       "or say charset=utf-8")
    declared = call.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, Code.BODY_TOO_LARGE, f"the body is larger than {limit} bytes")
    chunks, size, more = [], 0, True
    receive = call.request.receive  # not Request.stream(): an async generator costs more here
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, Code.INCOMPLETE_BODY, "the client went away before the body ended")
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            raise ApiError(413, Code.BODY_TOO_LARGE, f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return validate.parse_json(chunks[0] if len(chunks) == 1 else b"".join(chunks))


async def _asset_decimals(w: Wiring, symbol: str, name: str, status: int = 422) -> int:
    # Decimals never change once an asset is registered, so a positive answer is cached for good.
    cached = w.decimals.get(symbol)
    if cached is not None:
        return cached
    decimals = await w.pool.fetchval("SELECT decimals FROM assets WHERE symbol = $1", symbol)
    if decimals is None:
        raise ApiError(status, Code.UNKNOWN_ASSET, f"no asset {symbol!r} is registered", name)
    w.decimals[symbol] = decimals
    return int(decimals)


def _wait_seconds(call: Call) -> float:
    prefer = call.headers.get("prefer")
    match = None if prefer is None else _PREFER_WAIT.search(prefer)
    return 0.0 if match is None else min(float(match.group(1)), call.w.settings.max_wait_seconds)


def _command_id(call: Call) -> str:
    key = call.headers.get("idempotency-key")
    if key is None:
        return random_id()
    if not grammar.is_idempotency_key(key):
        raise ApiError(400, Code.INVALID_IDEMPOTENCY_KEY,
                       "Idempotency-Key must be 1-200 visible ASCII characters")
    return name_id(_IDEMPOTENCY_NS, f"{call.principal.sub}\n{key}")


def _created_id(call: Call, command_id: str, kind: str) -> str:
    """The id of what a command creates (a transfer, a trade): made from the command id when a
    retry must find the same one (the request has an Idempotency-Key), else simply fresh."""
    if "idempotency-key" in call.headers:
        return name_id(_IDEMPOTENCY_NS, f"{kind}{command_id}")
    return random_id()


async def _submit(call: Call, message: Message, key: str, extra: dict[str, str], route: str,
                  body: dict[str, Any], check: Callable[[], Awaitable[None]] | None = None,
                  ) -> Response:
    """Send the command and answer. ``check``, if given, is a refusal that depends on the read
    model (an asset that exists): for a request with an Idempotency-Key it runs only once the
    key is this request's, so a retry of a command that went through gets its first answer."""
    w = call.w
    command_id = extra.pop("command_id")
    accepted = {"command_id": command_id, "status": "accepted", **extra,
                "links": {"status": f"/v1/commands/{command_id}"}}
    env = codec.envelope(message, key=key, command_id=command_id, id=command_id,
                         principal=call.principal.sub,
                         correlation_id=extra.get("transfer_id") or extra.get("trade_id"))
    record = codec.encode(env)
    replayable = "idempotency-key" in call.headers
    if replayable:
        # The key is reserved before anything reaches Kafka: of concurrent requests with one
        # key, one sends; the others get its answer (same body) or a 409 (another body).
        first = await idempotency.claim(w.pool, command_id, call.principal.sub,
                                        _hash(route, body), accepted)
        if first is not None:
            return await _answer(call, first)
    if check is not None:
        try:
            await check()
        except BaseException:
            if replayable:
                await _quietly(idempotency.release(w.pool, command_id))
            raise
    wait = _wait_seconds(call)
    if wait <= 0:
        await _append(call, key, record, command_id, replayable)
        return _json_response(accepted, 202)
    # Watched before it is sent, so the notification of its outcome cannot be missed. An id
    # made from an Idempotency-Key may have been sent (and decided) before, so its outcome is
    # read first; a fresh id cannot be in the read model before a notification names it.
    with w.waiters.watch(command_id) as watch:
        await _append(call, key, record, command_id, replayable)
        if w.tracing is None:
            return _outcome(accepted, await watch.final(wait, read_first=replayable))
        with w.tracing.span("wait for outcome", **{"ledgerline.command_id": command_id}) as span:
            response = _outcome(accepted, await watch.final(wait, read_first=replayable))
            span.set_attribute("ledgerline.answer_status", response.status_code)
            return response


async def _quietly(step: Awaitable[None]) -> None:
    # Bookkeeping after a failure must not hide the failure; a reservation it leaves behind
    # goes stale and is taken over by a retry.
    try:
        await step
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("could not update an idempotency key: %r", exc)


async def _append(call: Call, key: str, record: bytes, command_id: str, replayable: bool) -> None:
    """The command into Kafka (acknowledged by all in-sync replicas), then, for a request with
    an Idempotency-Key, its key marked sent (or, when the send failed, free again or "unknown":
    see :mod:`command.idempotency`). Bounded: see :mod:`command.availability`."""
    pool, tracing = call.w.pool, call.w.tracing
    try:
        if tracing is None:
            await availability.append(call.w.producer, topics.COMMANDS, record, key.encode(), command_id,
                                      call.w.settings.unavailable_seconds)
        else:
            with tracing.sending(topics.COMMANDS, key.encode()) as sending:
                sending.delivered(await availability.append(
                    call.w.producer, topics.COMMANDS, record, key.encode(), command_id,
                    call.w.settings.unavailable_seconds, sending.headers))
    except BaseException:
        if replayable:
            if availability.handed() is None:
                # Not handed to the producer: nothing can reach Kafka; the key is free again.
                await _quietly(idempotency.release(pool, command_id))
            else:
                # The broker may have it: only a retry with the same id may send it again.
                await _quietly(idempotency.unknown(pool, command_id))
        raise
    if replayable:
        await _quietly(idempotency.sent(pool, command_id))


async def _answer(call: Call, accepted: dict[str, Any]) -> Response:
    wait = _wait_seconds(call)
    if wait <= 0:
        return _json_response(accepted, 202)
    return _outcome(accepted, await call.w.waiters.wait_final(accepted["command_id"], wait))


def _outcome(accepted: dict[str, Any], outcome: dict[str, Any] | None) -> Response:
    if outcome is None or outcome["status"] not in outcomes.FINAL:
        pending = {**accepted, "status": "accepted" if outcome is None else outcome["status"]}
        return _json_response(pending, 202)
    return _json_response({**accepted, "status": outcome["status"], "reason": outcome["reason"]})


_ASSET_FIELDS = frozenset({"symbol", "name", "decimals", "issuer", "max_supply"})
_ISSUE_FIELDS = frozenset({"to", "amount"})
_TRANSFER_FIELDS = frozenset({"from", "to", "asset", "amount", "memo"})
_TRADE_FIELDS = frozenset({"seller", "buyer", "asset", "quantity", "payment_asset", "price"})
_BURN_FIELDS = frozenset({"wallet", "asset", "amount"})
_FREEZE_FIELDS = frozenset({"reason"})


def _hash(route: str, body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([route, body], sort_keys=True).encode()).hexdigest()


async def register_asset(call: Call) -> Response:
    body = await _body(call)
    validate.only(body, _ASSET_FIELDS)
    symbol = validate.symbol(validate.field(body, "symbol", str))
    name = validate.text(body, "name", grammar.NAME_LIMIT)
    decimals = validate.field(body, "decimals", int)
    if not 0 <= decimals <= 18:
        raise ApiError(422, Code.INVALID_DECIMALS, "'decimals' must be between 0 and 18", "decimals")
    issuer = validate.wallet(body, "issuer")
    max_supply = None
    if body.get("max_supply") is not None:
        max_supply = validate.amount(body, "max_supply", decimals)
    if not call.principal.may_register_assets():
        raise ApiError(403, Code.FORBIDDEN, "registering an asset needs the operator or issuer role")

    async def not_taken() -> None:
        if await call.w.pool.fetchval("SELECT 1 FROM assets WHERE symbol = $1", symbol):
            raise ApiError(409, Code.ASSET_EXISTS, f"asset {symbol!r} is already registered", "symbol")

    message = RegisterAsset(symbol=symbol, name=name, decimals=decimals, issuer=issuer,
                            max_supply=max_supply)
    extra = {"command_id": _command_id(call), "symbol": symbol}
    return await _submit(call, message, asset_key(symbol), extra, "assets", body, not_taken)


async def issue(call: Call) -> Response:
    symbol = validate.symbol(call.request.path_params["symbol"])
    body = await _body(call)
    validate.only(body, _ISSUE_FIELDS)
    decimals = await _asset_decimals(call.w, symbol, "symbol", status=404)
    to = validate.wallet(body, "to")
    amount = validate.amount(body, "amount", decimals)
    if not call.principal.may_issue(symbol):
        raise ApiError(403, Code.FORBIDDEN, f"only the issuer of {symbol} may issue it")
    message = IssueTokens(symbol=symbol, to=to, amount=amount)
    extra = {"command_id": _command_id(call)}
    return await _submit(call, message, asset_key(symbol), extra, f"issue/{symbol}", body)


async def transfer(call: Call) -> Response:
    body = await _body(call)
    validate.only(body, _TRANSFER_FIELDS)
    source = validate.wallet(body, "from")
    target = validate.wallet(body, "to")
    symbol = validate.symbol(validate.field(body, "asset", str), "asset")
    memo = validate.optional_text(body, "memo", empty=True)
    decimals = await _asset_decimals(call.w, symbol, "asset")
    amount = validate.amount(body, "amount", decimals)
    if source == target:
        raise ApiError(422, Code.SAME_WALLET, "'from' and 'to' must be different wallets", "to")
    if not call.principal.may_debit(source):
        raise ApiError(403, Code.FORBIDDEN, f"you may not move funds out of wallet {source!r}", "from")
    if memo and call.w.keys is not None:
        try:
            memo = await asyncio.to_thread(seal, call.w.keys, source, memo)
        except Erased:
            raise ApiError(422, Code.INVALID_FIELD, f"wallet {source!r}'s personal data was erased: "
                           "no memo can be stored for it", "memo") from None
    command_id = _command_id(call)
    transfer_id = _created_id(call, command_id, "")
    message = InitiateTransfer(transfer_id=transfer_id, source=source, target=target,
                               asset=symbol, amount=amount, memo=memo)
    extra = {"command_id": command_id, "transfer_id": transfer_id}
    return await _submit(call, message, wallet_key(source), extra, "transfers", body)


async def trade(call: Call) -> Response:
    body = await _body(call)
    validate.only(body, _TRADE_FIELDS)
    seller = validate.wallet(body, "seller")
    buyer = validate.wallet(body, "buyer")
    symbol = validate.symbol(validate.field(body, "asset", str), "asset")
    payment = validate.symbol(validate.field(body, "payment_asset", str), "payment_asset")
    if seller == buyer:
        raise ApiError(422, Code.SAME_WALLET, "'seller' and 'buyer' must be different wallets",
                       "buyer")
    if symbol == payment:
        raise ApiError(422, Code.SAME_ASSET, "'asset' and 'payment_asset' must differ", "payment_asset")
    quantity = validate.amount(body, "quantity", await _asset_decimals(call.w, symbol, "asset"))
    # price is the whole payment for quantity, in payment_asset: no rounding of a unit price.
    price = validate.amount(body, "price", await _asset_decimals(call.w, payment, "payment_asset"))
    # A trade debits both wallets: the seller's asset and the buyer's payment. One party's token
    # cannot consent for the other's wallet (a buyer alone could take an asset at a price of its
    # choosing), so the caller must be able to debit both: an operator (a venue that matched the
    # two orders) or the owner of both wallets.
    for name, wallet in (("seller", seller), ("buyer", buyer)):
        if not call.principal.may_debit(wallet):
            raise ApiError(403, Code.FORBIDDEN, f"you may not trade for wallet {wallet!r}", name)
    command_id = _command_id(call)
    trade_id = _created_id(call, command_id, "trade\n")
    message = InitiateTrade(trade_id=trade_id, seller=seller, buyer=buyer, asset=symbol,
                            quantity=quantity, payment_asset=payment, price=price)
    extra = {"command_id": command_id, "trade_id": trade_id}
    return await _submit(call, message, wallet_key(seller), extra, "trades", body)


async def burn(call: Call) -> Response:
    body = await _body(call)
    validate.only(body, _BURN_FIELDS)
    wallet = validate.wallet(body, "wallet")
    symbol = validate.symbol(validate.field(body, "asset", str), "asset")
    amount = validate.amount(body, "amount", await _asset_decimals(call.w, symbol, "asset"))
    if not call.principal.may_debit(wallet):
        raise ApiError(403, Code.FORBIDDEN, f"you may not burn from wallet {wallet!r}", "wallet")
    message = BurnTokens(wallet=wallet, asset=symbol, amount=amount)
    extra = {"command_id": _command_id(call)}
    return await _submit(call, message, wallet_key(wallet), extra, "burns", body)


async def _set_frozen(call: Call, frozen: bool) -> Response:
    wallet = validate.wallet_id(call.request.path_params["wallet"])
    body = await _body(call)
    validate.only(body, _FREEZE_FIELDS)
    reason = validate.text(body, "reason")
    if not call.principal.may_freeze():
        raise ApiError(403, Code.FORBIDDEN, "freezing or unfreezing a wallet needs the compliance role")
    message = (FreezeWallet if frozen else UnfreezeWallet)(wallet=wallet, reason=reason)
    extra = {"command_id": _command_id(call)}
    route = f"wallets/{wallet}/{'freeze' if frozen else 'unfreeze'}"
    return await _submit(call, message, wallet_key(wallet), extra, route, body)


async def freeze(call: Call) -> Response:
    return await _set_frozen(call, frozen=True)


async def unfreeze(call: Call) -> Response:
    return await _set_frozen(call, frozen=False)


async def erase(call: Call) -> Response:
    """Crypto-shredding: the wallet's data key is destroyed before anything else, so its memos are
    unreadable everywhere at once; the command then tells the views to forget what they show."""
    wallet = validate.wallet_id(call.request.path_params["wallet"])
    body = await _body(call)
    validate.only(body, _FREEZE_FIELDS)
    validate.text(body, "reason")
    if not call.principal.may_freeze():
        raise ApiError(403, Code.FORBIDDEN, "erasing a wallet's personal data needs the compliance role")
    if call.w.keys is None:
        raise ApiError(503, Code.UNAVAILABLE, "no key store is configured (LEDGERLINE_KEYRING)")
    await asyncio.to_thread(call.w.keys.destroy, wallet)
    extra = {"command_id": _command_id(call)}
    return await _submit(call, EraseWalletData(wallet=wallet), wallet_key(wallet), extra,
                         f"wallets/{wallet}/erase", body)


async def command_status(call: Call) -> Response:
    command_id = validate.command_id(call.request.path_params["command_id"])
    # Someone else's command is as unknown as a missing one: the statement that reads it filters
    # by who may see it, so both take the same path and get the same answer.
    principal = call.principal
    outcome = await outcomes.read_visible(call.w.pool, command_id, principal.sub,
                                          sees_everything=principal.sees_everything)
    if outcome is None:
        raise ApiError(404, Code.UNKNOWN_COMMAND,
                       f"no outcome for command {command_id} yet; it may still be in flight")
    return JSONResponse({
        "command_id": command_id,
        "type": outcome["type"],
        "status": outcome["status"],
        "reason": outcome["reason"],
        "correlation_id": outcome["correlation_id"],
        "updated_at": outcome["updated_at"].isoformat(),
    })


Handler = Callable[[Call], Awaitable[Response]]

class Box:
    """Where the lifespan puts the wiring for the endpoints to find."""

    wiring: Wiring


class Endpoint:
    """A command endpoint as a plain ASGI app. Every refusal becomes the API's error shape
    right here, and so does a crash: nothing above has to wrap the request."""

    def __init__(self, handler: Handler, box: Box) -> None:
        self.handler = handler
        self.box = box

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.answer(Request(scope, receive))
        await response(scope, receive, send)

    async def answer(self, request: Request) -> Response:
        tracing = self.box.wiring.tracing
        if tracing is None:
            return await self._answer(request, _headers(request))
        headers = _headers(request)
        route = request.scope.get("route")
        with tracing.serving(request.method, getattr(route, "path", request.url.path), headers) as span:
            response = await self._answer(request, headers)
            span.set_attribute("http.response.status_code", response.status_code)
            return response

    async def _answer(self, request: Request, headers: dict[str, str]) -> Response:
        w = self.box.wiring
        availability.begin()
        try:
            principal = w.tokens.authenticate(headers.get("authorization"))
            return await availability.bounded(self.handler(Call(request, w, principal, headers)),
                                              w.settings.unavailable_seconds)
        except AuthError as exc:
            return ApiError(exc.status, Code(exc.code), exc.message).response()
        except ApiError as exc:
            return exc.response()
        except AmountError as exc:
            return ApiError(422, Code(exc.code), str(exc)).response()
        except TRANSIENT as exc:  # the broker or the database is away: 503, never a 500
            log.warning("%s %s: unavailable: %r", request.method, request.url.path, exc)
            return availability.unavailable(exc).response()
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return ApiError(500, Code.INTERNAL_ERROR,
                            "the request failed on our side; retry later").response()


class CommandApi:
    """The ASGI app. ``POST`` to a command endpoint without path parameters (the busiest ones)
    goes straight to its handler; anything else through Starlette's router and middleware,
    which would otherwise cost about a tenth of such a request's time."""

    def __init__(self, app: Starlette, direct: dict[str, Endpoint]) -> None:
        self.app = app
        self.direct = direct

    @property
    def routes(self) -> list[Any]:
        return self.app.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.direct.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def openapi(_request: Request) -> Response:
    return Response(render_openapi(), media_type="application/json")


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    w: Wiring = request.app.state.wiring
    try:
        await w.pool.fetchval("SELECT 1", timeout=2)
    except TRANSIENT as exc:
        return JSONResponse({"status": "unavailable", "database": repr(exc)}, status_code=503)
    if not await availability.kafka_ready(w.producer):
        return JSONResponse({"status": "unavailable", "kafka": "no broker reachable"}, status_code=503)
    return JSONResponse({"status": "ready"})


async def metrics(_request: Request) -> Response:
    return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)
