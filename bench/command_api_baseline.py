"""The baseline server for ``bench.command_api``: ``POST /v1/transfers`` done the plain way.

The same work a transfer cannot skip — the bearer token's signature, the body's JSON, the
checks, one envelope appended to ``ledger.commands`` with ``acks=all`` by an idempotent
producer before answering, ``Prefer: wait=N`` through the same LISTEN-woken waiters — with no
tuning: a default producer (``linger_ms=0``, one produce-and-wait per request), the token
verified on every request, the standard library's JSON. ``python -m bench.command_api_baseline PORT``.
"""

import contextlib
import json
import re
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import uvicorn
from aiokafka import AIOKafkaProducer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from command import outcomes, validate
from command.errors import ApiError, Code
from common.auth import AuthError, authenticate
from common.kafka import client_options
from common.settings import Settings, asyncpg_dsn, load
from events import codec, topics
from events.keys import wallet_key
from events.messages import InitiateTransfer

_NS = uuid.UUID("0d5b7c1a-3a52-4f0e-9c7e-6f2b8e1d4a90")
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)")


def create_app(settings: Settings) -> Starlette:
    keys = settings.token_keys()
    decimals: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        dsn = asyncpg_dsn(settings.database_url)
        app.state.pool = await asyncpg.create_pool(dsn, min_size=1, max_size=10)
        app.state.producer = AIOKafkaProducer(**client_options(settings.kafka), acks="all",
                                              enable_idempotence=True)
        await app.state.producer.start()
        app.state.waiters = outcomes.Waiters(app.state.pool)
        await app.state.waiters.start(dsn)
        yield
        await app.state.waiters.stop()
        await app.state.producer.stop()
        await app.state.pool.close()

    async def transfer(request: Request) -> Response:
        try:
            principal = authenticate(request.headers.get("authorization"), keys)
            body = validate.parse_json(await request.body())
            source, target = validate.wallet(body, "from"), validate.wallet(body, "to")
            symbol = validate.symbol(validate.field(body, "asset", str), "asset")
            if symbol not in decimals:
                found = await request.app.state.pool.fetchval(
                    "SELECT decimals FROM assets WHERE symbol = $1", symbol)
                if found is None:
                    raise ApiError(422, Code.UNKNOWN_ASSET, f"no asset {symbol!r}", "asset")
                decimals[symbol] = found
            amount = validate.amount(body, "amount", decimals[symbol])
            if not principal.may_debit(source):
                raise ApiError(403, Code.FORBIDDEN, f"you may not move funds out of {source!r}", "from")
        except AuthError as exc:
            return ApiError(exc.status, Code(exc.code), exc.message).response()
        except ApiError as exc:
            return exc.response()
        command_id = codec.new_id()
        transfer_id = str(uuid.uuid5(_NS, command_id))
        message = InitiateTransfer(transfer_id=transfer_id, source=source, target=target, asset=symbol,
                                   amount=amount, memo=validate.field(body, "memo", str, required=False))
        env = codec.envelope(message, key=wallet_key(source), command_id=command_id, id=command_id,
                             principal=principal.sub, correlation_id=transfer_id)
        await request.app.state.producer.send_and_wait(topics.COMMANDS, codec.encode(env),
                                                       key=wallet_key(source).encode())
        accepted = {"command_id": command_id, "status": "accepted", "transfer_id": transfer_id,
                    "links": {"status": f"/v1/commands/{command_id}"}}
        match = _PREFER_WAIT.search(request.headers.get("prefer", ""))
        if match is None:
            return JSONResponse(accepted, status_code=202)
        outcome = await request.app.state.waiters.wait_final(command_id, float(match.group(1)))
        if outcome is None or outcome["status"] not in outcomes.FINAL:
            return JSONResponse(accepted, status_code=202)
        return Response(json.dumps({**accepted, "status": outcome["status"], "reason": outcome["reason"]}),
                        media_type="application/json")

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/v1/transfers", transfer, methods=["POST"]),
                             Route("/healthz", healthz)], lifespan=lifespan)


if __name__ == "__main__":
    uvicorn.run(create_app(load()), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False, lifespan="on")
