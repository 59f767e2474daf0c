"""The query process: Strawberry's GraphQL on Starlette, GraphiQL in the browser at /graphql."""

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from ledgerline.auth import AuthError, authenticate
from ledgerline.settings import Settings, asyncpg_dsn
from query.schema import schema

log = logging.getLogger("ledgerline.query_api")


class LedgerGraphQL(GraphQL):  # type: ignore[misc]
    """Every operation needs a bearer token; the GraphiQL page itself does not."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(schema, subscription_protocols=("graphql-transport-ws",))
        self.settings = settings

    async def get_context(self, request: Request | WebSocket, response: Any) -> dict[str, Any]:
        return {
            "pool": request.app.state.pool,
            "principal": request.scope["ledgerline.principal"],
            "request": request,
        }

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not _wants_ide(scope):
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            try:
                scope["ledgerline.principal"] = authenticate(
                    headers.get("authorization"), self.settings.require_jwt_secret()
                )
            except AuthError as exc:
                body = {"errors": [{"message": exc.message, "extensions": {"code": exc.code}}]}
                await JSONResponse(body, status_code=exc.status)(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _wants_ide(scope: Any) -> bool:
    if scope["method"] != "GET":
        return False
    accept = next((v.decode() for k, v in scope["headers"] if k.lower() == b"accept"), "")
    query = scope.get("query_string", b"")
    return "text/html" in accept and b"query=" not in query


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        await request.app.state.pool.fetchval("SELECT 1")
    except (OSError, asyncpg.PostgresError) as exc:
        return JSONResponse({"status": "unavailable", "database": repr(exc)}, status_code=503)
    return JSONResponse({"status": "ready"})


async def metrics(_request: Request) -> Response:
    return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings) -> Starlette:
    settings.require_jwt_secret()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(
            asyncpg_dsn(settings.database_url), min_size=1, max_size=10
        )
        log.info("query API ready")
        try:
            yield
        finally:
            await app.state.pool.close()

    graphql = LedgerGraphQL(settings)
    return Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        lifespan=lifespan,
    )
