"""The graphql-transport-ws handler: authentication at ``connection_init`` and shared streams."""

from collections.abc import Hashable
from typing import Any

from graphql import GraphQLError, OperationDefinitionNode, OperationType
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
    _OperationStreamClosed,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    CompleteMessage,
    ConnectionInitMessage,
)
from strawberry.types.execution import PreExecutionError

from ledgerline.auth import AuthError
from query.context import Context
from query.feeds import Feeds
from query.limits import MAX_TOKENS, parse_cached
from query.tokens import Verified


class TransportWS(BaseGraphQLTransportWSHandler[Context, None]):
    """Authenticates at ``connection_init``: no valid token, no connection (close 4403)."""

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        payload = message.get("payload") or {}
        if isinstance(payload, dict) and not self.connection_init_received:
            token = payload.get("Authorization") or payload.get("authorization")
            try:
                tokens: Verified = self.view.tokens  # type: ignore[attr-defined]
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
        feeds: Feeds = self.view.feeds  # type: ignore[attr-defined]

        def start() -> Any:
            return self.schema.stream(operation.query, variable_values=operation.variables,
                                      context_value=self.context, root_value=self.root_value,
                                      operation_name=operation.operation_name)

        try:
            first = True
            async for result in feeds.follow(key, start):
                if first and isinstance(result, PreExecutionError):
                    await self._handle_pre_execution_error(operation, result)
                    return
                await operation.send_next(result)
                first = False
            await operation.send_operation_message(CompleteMessage(id=operation.id, type="complete"))
        except _OperationStreamClosed:
            return


def _feed_key(operation: Operation[Context, None], context: Context) -> Hashable | None:
    try:
        document = parse_cached(operation.query, MAX_TOKENS)
    except GraphQLError:
        return None
    kinds = {d.operation for d in document.definitions if isinstance(d, OperationDefinitionNode)}
    if kinds != {OperationType.SUBSCRIPTION}:
        return None
    return Feeds.key(operation.query, operation.variables, operation.operation_name, context)
