"""The query process: Strawberry's GraphQL on Starlette, GraphiQL in the browser at /graphql.

The GraphiQL page is static and needs no token (see :mod:`query.graphiql`); every operation
needs a bearer token: in the ``Authorization`` header over HTTP, in the
``connection_init`` payload (``{"Authorization": "Bearer …"}``) over graphql-transport-ws, the
only websocket protocol offered. A request may name the command it just sent in
``X-After-Command``; the answer then waits (at most ``AFTER_COMMAND_SECONDS``) until the
projection shows that command's outcome, and says in ``extensions.afterCommand`` whether it did.
"""

import json
import logging
from datetime import timedelta
from typing import Any

import asyncpg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.types import ExecutionResult

from common.auth import AuthError, Principal
from common.settings import Settings
from common.tokens import Verified
from events.readmodel import FINAL_COMMAND_STATUSES
from query import graphiql, post
from query.context import Context, Loaders
from query.errors import ErrorCode, coded
from query.feeds import Feeds
from query.hub import wait_for_command
from query.ids import is_id
from query.schema import schema
from query.ws import TransportWS

log = logging.getLogger("ledgerline.query_api")

AFTER_COMMAND_SECONDS = 5.0
MAX_BODY_BYTES = 64 * 1024


class LedgerGraphQL(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWS

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            schema, subscription_protocols=("graphql-transport-ws",), allow_queries_via_get=False,
            connection_init_wait_timeout=timedelta(seconds=10), max_subscriptions_per_connection=50,
        )
        self.settings = settings
        self.tokens = Verified(settings.token_keys())
        self.feeds = Feeds()
        self.ide = HTMLResponse(graphiql.page())

    def decode_json(self, data: str | bytes) -> object:
        """Websocket messages (and GET parameters) decode as POST bodies do; what is not JSON
        is Strawberry's ``JSONDecodeError``, answered by closing the socket with 4400. The server
        refuses larger websocket messages already (``ws_max_size``); this holds under any server."""
        if len(data) > MAX_BODY_BYTES:
            raise json.JSONDecodeError(f"a message may be at most {MAX_BODY_BYTES} bytes", "", 0)
        try:
            return post.decode(data)
        except post.NotJSON as exc:
            raise json.JSONDecodeError(str(exc), "", 0) from None

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        state = request.app.state
        if isinstance(request, WebSocket):
            return Context(db=state.pool, principal=None, hub=state.hub,
                           loaders=Loaders(state.pool, cache=False), transport="websocket",
                           alerts=state.alerts)
        c = await _http_context(state, request.scope["ledgerline.principal"],
                                request.headers.get("x-after-command"))
        request.state.ledgerline_context = c
        return c

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        answer: GraphQLHTTPResponse = {"data": result.data}
        if result.errors:
            answer["errors"] = [coded(e).formatted for e in result.errors]
        c = getattr(request.state, "ledgerline_context", None)
        extensions = {**(result.extensions or {}), **(c.extensions if c else {})}
        if extensions:
            answer["extensions"] = extensions
        return answer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and _wants_ide(scope):
            # A static page, the same for everyone: no token needed to open it. Its queries
            # carry the token set in its headers pane, and are checked like any other.
            await self.ide(scope, receive, send)
            return
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            checked = _check_http(headers, self.tokens)
            if isinstance(checked, Response):
                await checked(scope, receive, send)
                return
            scope["ledgerline.principal"] = checked
            if scope["method"] == "POST":
                try:
                    await self._post(scope, receive, send, headers, checked)
                except post.Refused as refused:
                    await post.respond(send, refused.status, refused.body())
                return
        await super().__call__(scope, receive, send)

    async def _post(self, scope: Any, receive: Any, send: Any, headers: dict[str, str],
                    principal: Principal) -> None:
        """A query over HTTP POST, straight to graphql-core (see :mod:`query.post`)."""
        if "application/json" not in headers.get("content-type", ""):
            raise post.Refused(415, ErrorCode.invalid_query, "send the query as application/json")
        raw = await post.read_body(receive, MAX_BODY_BYTES)
        if raw is None:
            return  # the client went away
        try:
            body = post.decode(raw)
        except post.NotJSON as exc:
            raise post.Refused(400, ErrorCode.invalid_query, f"the body is not JSON: {exc}") from None
        query, variables, name = post.operation(body)
        context = await _http_context(scope["app"].state, principal, headers.get("x-after-command"))
        try:
            result = await post.run(query, variables, name, context)
        except CannotGetOperationTypeError as exc:
            raise post.Refused(400, ErrorCode.invalid_query, exc.as_http_error_reason()) from None
        await post.respond(send, 200, post.answer(result, context.extensions))


async def _http_context(state: Any, principal: Principal, after_command: str | None) -> Context:
    c = Context(db=state.pool, principal=principal, hub=state.hub, loaders=Loaders(state.pool))
    if after_command is not None:
        c.extensions["afterCommand"] = await _after_command(c, after_command)
    return c


def _refusal(status: int, code: ErrorCode | str, message: str) -> Response:
    return JSONResponse(post.Refused(status, code, message).body(), status)


def _check_http(headers: dict[str, str], tokens: Verified) -> Principal | Response:
    """The caller, or the answer that refuses the request before GraphQL sees it."""
    try:
        principal = tokens.authenticate(headers.get("authorization"))
    except AuthError as exc:
        return _refusal(exc.status, exc.code, exc.message)
    length = headers.get("content-length", "0")
    if not length.isdigit() or int(length) > MAX_BODY_BYTES:
        return _refusal(413, ErrorCode.query_too_long,
                        f"the request body may be at most {MAX_BODY_BYTES} bytes")
    command_id = headers.get("x-after-command")
    if command_id is not None and not is_id(command_id):
        return _refusal(400, ErrorCode.invalid_argument, "X-After-Command must be a command id")
    return principal


async def _after_command(c: Context, command_id: str) -> dict[str, Any]:
    assert c.hub is not None and c.principal is not None
    row = await wait_for_command(c.hub, c.db, command_id, AFTER_COMMAND_SECONDS, c.may_see_command)
    caught_up = row is not None and row["status"] in FINAL_COMMAND_STATUSES
    answer: dict[str, Any] = {"id": command_id, "caughtUp": caught_up}
    if row is not None:
        answer["status"] = row["status"]
    return answer


def _wants_ide(scope: Any) -> bool:
    if scope["method"] != "GET":
        return False
    accept = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"accept"), "")
    query = scope.get("query_string", b"")
    return "text/html" in accept and b"query=" not in query


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        await request.app.state.pool.fetchval("SELECT 1")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return JSONResponse({"status": "unavailable", "database": repr(exc)}, status_code=503)
    if not request.app.state.hub.connected.is_set():
        return JSONResponse({"status": "unavailable", "listener": "reconnecting"}, status_code=503)
    return JSONResponse({"status": "ready"})


async def metrics(_request: Request) -> Response:
    return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)


class QueryApp:
    """The Starlette app, with ``POST /graphql`` handed straight to the GraphQL view: its route
    lookup and middleware stack cost a tenth of a balance lookup, and the view answers its own
    errors. Everything else (GET, GraphiQL, websockets, health, metrics) goes through Starlette."""

    def __init__(self, app: Starlette, graphql: LedgerGraphQL) -> None:
        self.app, self.graphql = app, graphql

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/graphql":
            scope["app"] = self.app
            await self.graphql(scope, receive, send)
        else:
            await self.app(scope, receive, send)
