"""The command API's composition root: the asyncpg pool, the Kafka producer, the outcome
waiters and the token verifier are made here, at start, and handed to the endpoints."""

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from command import outcomes
from command.api import (
    Box,
    CommandApi,
    Endpoint,
    Wiring,
    burn,
    command_status,
    erase,
    freeze,
    healthz,
    issue,
    metrics,
    openapi,
    readyz,
    register_asset,
    trade,
    transfer,
    unfreeze,
)
from command.cases import ACTIONS as CASE_ACTIONS
from command.cases import case_action, sanction, set_tier, unsanction
from command.errors import ApiError, Code
from command.producer import command_producer
from common.httpserver import serve
from common.kafka import uvloop_safe
from common.keyring import LocalKeyring
from common.pg import keep_session
from common.runtime import settle_heap
from common.settings import Settings, asyncpg_dsn
from common.tokens import Verified
from common.tracing import Tracing
from common.tracing import setup as setup_tracing

log = logging.getLogger("ledgerline.command_api")


def create_app(settings: Settings, tracing: Tracing | None = None) -> CommandApi:
    tokens = Verified(settings.token_keys())
    box = Box()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        dsn = asyncpg_dsn(settings.database_url)
        # Bounded: with the database away, connecting and every statement give up in time.
        bound = settings.unavailable_seconds
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10, reset=keep_session,
                                         timeout=bound, command_timeout=bound)
        producer = command_producer(settings.kafka)
        await producer.start()
        waiters = outcomes.Waiters(pool)
        await waiters.start(dsn)
        keys = LocalKeyring(Path(settings.keyring_path)) if settings.keyring_path else None
        app.state.wiring = box.wiring = Wiring(settings, pool, producer, waiters, {}, tokens, keys,
                                               tracing)
        settle_heap()
        log.info("command API ready")
        try:
            yield
        finally:
            await waiters.stop()
            await producer.stop()
            await pool.close()
            if tracing is not None:
                tracing.shutdown()

    direct = {path: Endpoint(handler, box) for path, handler in (
        ("/v1/transfers", transfer), ("/v1/trades", trade), ("/v1/burns", burn),
        ("/v1/assets", register_asset))}
    routes = [
        *(Route(path, endpoint, methods=["POST"]) for path, endpoint in direct.items()),
        Route("/v1/assets/{symbol}/issue", Endpoint(issue, box), methods=["POST"]),
        Route("/v1/wallets/{wallet}/freeze", Endpoint(freeze, box), methods=["POST"]),
        Route("/v1/wallets/{wallet}/unfreeze", Endpoint(unfreeze, box), methods=["POST"]),
        Route("/v1/wallets/{wallet}/erase", Endpoint(erase, box), methods=["POST"]),
        Route("/v1/commands/{command_id}", Endpoint(command_status, box), methods=["GET"]),
        *(Route(f"/v1/cases/{{case_id}}/{action}", Endpoint(case_action(action), box), methods=["POST"])
          for action in CASE_ACTIONS),
        Route("/v1/wallets/{wallet}/sanction", Endpoint(sanction, box), methods=["POST"]),
        Route("/v1/wallets/{wallet}/unsanction", Endpoint(unsanction, box), methods=["POST"]),
        Route("/v1/wallets/{wallet}/kyc", Endpoint(set_tier, box), methods=["POST"]),
        Route("/openapi.json", openapi),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
    ]

    async def not_found(_request: Request, _exc: Exception) -> Response:
        return ApiError(404, Code.NOT_FOUND, "no such endpoint").response()

    async def not_allowed(_request: Request, exc: Exception) -> Response:
        # The router's exception carries the Allow header RFC 9110 requires with a 405.
        allow = exc.headers if isinstance(exc, HTTPException) else None
        return ApiError(405, Code.METHOD_NOT_ALLOWED, "this endpoint does not take that method; "
                        f"it takes {(allow or {}).get('Allow', 'other methods')}",
                        headers=allow).response()

    # The compliance console (served by the GraphQL API, another origin) freezes wallets and acts
    # on cases from the browser; those routes go through Starlette, so they answer its CORS.
    console = [f"http://{host}:{settings.query_port}"
               for host in dict.fromkeys((settings.query_host, "127.0.0.1", "localhost"))]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={404: not_found, 405: not_allowed},
                    middleware=[Middleware(CORSMiddleware, allow_origins=console, allow_methods=["POST"],
                                           allow_headers=["authorization", "content-type",
                                                          "idempotency-key", "prefer"])])
    return CommandApi(app, direct)


def main(settings: Settings) -> None:
    """``ledgerline command-api``: serve the HTTP command API until a signal stops it."""
    log.info("command API on http://%s:%d", settings.command_host, settings.command_port)
    app = create_app(settings, setup_tracing(os.environ, "command-api"))
    serve(app, settings.command_host, settings.command_port,
          max_header_bytes=settings.max_header_bytes,
          **({} if uvloop_safe(settings.kafka) else {"loop": "asyncio"}))
