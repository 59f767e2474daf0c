"""The graphql-transport-ws handler: authentication at ``connection_init`` and shared streams."""

import json
from collections.abc import Hashable
from typing import Any

import msgspec
from graphql import GraphQLError, OperationDefinitionNode, OperationType
from starlette.websockets import WebSocketDisconnect
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
    _OperationStreamClosed,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    CompleteMessage,
    ConnectionInitMessage,
)
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError

from common.auth import AuthError
from common.tokens import Verified
from query.context import Context
from query.feeds import Feeds
from query.limits import MAX_TOKENS, MAX_VARIABLE_DEPTH, nesting, parse_cached

_encode = msgspec.json.Encoder().encode


class TransportWS(BaseGraphQLTransportWSHandler[Context, None]):
    """Authenticates at ``connection_init``: no valid token, no connection (close 4403)."""

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        payload = message.get("payload") or {}
        if isinstance(payload, dict) and not self.connection_init_received:
            token = payload.get("Authorization") or payload.get("authorization")
            try:
                tokens: Verified = self.view.tokens  # type: ignore[attr-defined]  # the view is LedgerGraphQL
                self.context.principal = tokens.authenticate(token if isinstance(token, str) else None)
            except AuthError as exc:
                self.connection_init_received = True
                if self.connection_init_timeout_task:
                    self.connection_init_timeout_task.cancel()
                await self.websocket.close(code=4403, reason=f"{exc.code}: {exc.message}"[:120])
                return
        await super().handle_connection_init(message)

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        """Identical subscriptions with identical rights share one stream (see :mod:`query.feeds`)."""
        key = _feed_key(operation, self.context)
        if key is None:
            await super().run_operation(operation)
            return
        feeds: Feeds = self.view.feeds  # type: ignore[attr-defined]  # the view is LedgerGraphQL

        def start() -> Any:
            return self.schema.stream(operation.query, variable_values=operation.variables,
                                      context_value=self.context, root_value=self.root_value,
                                      operation_name=operation.operation_name)

        try:
            first = True
            head = f'{{"id":{json.dumps(operation.id)},"type":"next","payload":'
            async for shared in feeds.follow(key, start):
                if first and isinstance(shared.value, PreExecutionError):
                    await self._handle_pre_execution_error(operation, shared.value)
                    return
                await self._send_text(operation, head + shared.once("next", _next_payload) + "}")
                first = False
            await operation.send_operation_message(CompleteMessage(id=operation.id, type="complete"))
        except _OperationStreamClosed:
            return

    async def _send_text(self, operation: Operation[Context, None], text: str) -> None:
        """A ``next`` message already encoded: a change seen by a thousand subscribers of one
        feed is encoded once, each of them gets only its operation id put in front."""
        if operation.completed:
            return
        try:
            await self.websocket.ws.send_text(text)  # type: ignore[attr-defined]  # Starlette's WebSocket under the adapter
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc


def _next_payload(result: ExecutionResult) -> str:
    """The payload of a ``next`` message, as Strawberry's ``Operation.send_next`` builds it."""
    payload: dict[str, Any] = {"data": result.data}
    if result.errors:
        payload["errors"] = [e.formatted for e in result.errors]
    if result.extensions:
        payload["extensions"] = result.extensions
    return _encode(payload).decode()


def _feed_key(operation: Operation[Context, None], context: Context) -> Hashable | None:
    try:
        document = parse_cached(operation.query, MAX_TOKENS)
    except GraphQLError:
        return None
    kinds = {d.operation for d in document.definitions if isinstance(d, OperationDefinitionNode)}
    if kinds != {OperationType.SUBSCRIPTION} or nesting(operation.variables) > MAX_VARIABLE_DEPTH:
        return None  # not shared; variables nested too deeply are refused when it runs
    return Feeds.key(operation.query, operation.variables, operation.operation_name, context)
