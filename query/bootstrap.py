"""The GraphQL API's composition root: the database pool, the LISTEN hub and the GraphQL view
are made here, at start, and handed to the app."""

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from common.httpserver import serve
from common.runtime import settle_heap
from common.settings import Settings, asyncpg_dsn
from query import graphiql
from query.app import MAX_BODY_BYTES, LedgerGraphQL, QueryApp, healthz, metrics, readyz
from query.compliance import AlertFeed
from query.console_app import routes as console_routes
from query.hub import Hub
from query.pool import Pool

log = logging.getLogger("ledgerline.query_api")

APPLICATION_NAME = "ledgerline-query"  # how its connections show in pg_stat_activity


def create_app(settings: Settings) -> QueryApp:
    settings.token_keys()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        dsn = asyncpg_dsn(settings.database_url)
        # Bounded: with the database away, connecting and every statement give up in time.
        bound = settings.unavailable_seconds
        app.state.pool = await Pool(dsn, min_size=2, max_size=10, timeout=bound,
                                    command_timeout=bound,
                                    server_settings={"application_name": APPLICATION_NAME}).start()
        app.state.hub = Hub(dsn, app.state.pool)
        app.state.alerts = AlertFeed(dsn, app.state.pool)
        try:
            await app.state.hub.start()
            await app.state.alerts.start()
            settle_heap()
            log.info("query API ready")
            yield
        finally:
            await app.state.alerts.stop()
            await app.state.hub.stop()
            await app.state.pool.close()

    graphql = LedgerGraphQL(settings)
    return QueryApp(Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            *console_routes(settings),
            *([Mount(graphiql.PREFIX.rstrip("/"), StaticFiles(directory=graphiql.default_dir()))]
              if graphiql.default_dir().is_dir() else []),
        ],
        lifespan=lifespan,
    ), graphql)


def main(settings: Settings) -> None:
    """``ledgerline query-api``: serve GraphQL (and GraphiQL) until a signal stops it."""
    log.info("GraphQL API on http://%s:%d/graphql", settings.query_host, settings.query_port)
    # Subscription messages are small states sent to many sockets: compressing each one for
    # each socket costs more CPU than the bytes it saves. A message from a client may be as
    # large as a request body, no larger (uvicorn's default, 16 MiB, let one block the loop).
    serve(create_app(settings), settings.query_host, settings.query_port,
          max_header_bytes=settings.max_header_bytes, ws_per_message_deflate=False,
          ws_max_size=MAX_BODY_BYTES)
