"""A query over HTTP POST, from the request bytes straight to graphql-core and back.

Strawberry's HTTP view and its ``Schema.execute`` build, per request, an execution context, an
extension runner with a context manager per hook, and a middleware manager: together they cost
more than the balance lookup they serve. This path does the same steps without them: the parse,
the limits and the validation are remembered by query text (:mod:`query.limits`), the operation
runs on graphql-core with the same context the resolvers always get, errors get their codes
(:func:`query.errors.coded`) and unexpected ones are logged as the schema logs them, and the
answer is encoded once with msgspec. GET, GraphiQL and websockets still go through Strawberry.
"""

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec
from graphql import (
    ExecutionResult,
    GraphQLError,
    OperationDefinitionNode,
    execute,
)
from strawberry.execution.is_awaitable import optimized_is_awaitable
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.types.graphql import OperationType

from query.direct import resolver_for
from query.errors import ErrorCode, classification, coded, is_expected
from query.limits import MAX_TOKENS, parse_cached, refusal
from query.plan import Plans
from query.schema import schema

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class NotJSON(ValueError):
    """The bytes are not JSON: malformed, not UTF-8, or nested too deeply to decode."""


def decode(raw: bytes | str) -> Any:
    """JSON from a client. msgspec refuses invalid UTF-8 and unpaired surrogates (``"\\ud800"``);
    a document nested deeper than the interpreter's recursion limit raises ``RecursionError``,
    which is the client's fault like any other malformed body."""
    try:
        return _decode(raw)
    except RecursionError:
        raise NotJSON("the JSON nests too deeply") from None
    except ValueError as exc:  # msgspec's DecodeError, UnicodeDecodeError
        raise NotJSON(str(exc)) from None
_plans = Plans(schema._schema, lambda field: resolver_for(schema, field))
_JSON = [(b"content-type", b"application/json")]


class Refused(Exception):  # an answer, not a failure
    """The request is answered with an HTTP error status and one coded error."""

    def __init__(self, status: int, code: ErrorCode | str, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.code = code if isinstance(code, str) else code.value

    def body(self) -> dict[str, Any]:
        return {"errors": [{"message": self.message, "extensions": {
            "code": self.code, "classification": classification(self.code)}}]}


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, None if the client went away; over ``limit`` bytes is refused."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Refused(413, ErrorCode.query_too_long, f"the request body may be at most {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def operation(body: Any) -> tuple[str, dict[str, Any] | None, str | None]:
    """The query, variables and operation name of a request body (already JSON-decoded)."""
    if not isinstance(body, dict):
        raise Refused(400, ErrorCode.invalid_query, "send one operation, not a batch")
    query, variables, name = body.get("query"), body.get("variables"), body.get("operationName")
    if not (isinstance(query, str) and isinstance(variables, dict | None) and isinstance(name, str | None)):
        raise Refused(400, ErrorCode.invalid_query,
                      "`query` must be a string, `variables` an object, `operationName` a string")
    if not query:
        raise Refused(400, ErrorCode.invalid_query, "the request has no `query`")
    return query, variables, name


async def run(query: str, variables: dict[str, Any] | None, operation_name: str | None,
              context: Any) -> ExecutionResult:
    """The operation's result, errors coded; the same answer Strawberry's execute would give."""
    try:
        document = parse_cached(query, MAX_TOKENS)
    except GraphQLError as syntax:
        return _failed([syntax])
    except Exception as exc:  # as Strawberry does: answered, and logged
        return _failed([GraphQLError(str(exc), original_error=exc)])
    chosen = _operation(document.definitions, operation_name)
    if chosen is None:
        raise CannotGetOperationTypeError(operation_name)
    # Strawberry runs the first operation of a document when none is named: so does this path.
    name = operation_name if operation_name is not None else chosen.name.value if chosen.name else None
    refused = refusal(document, query, name, variables, OperationType(chosen.operation.value),
                      True, schema._schema)
    if refused:
        return _failed(refused)
    try:
        plan = _plans.get(query, name, document)
        if plan is not None:
            result = await plan.run(context, variables)
        else:
            executed = execute(schema._schema, document, context_value=context, variable_values=variables,
                               operation_name=name, is_awaitable=optimized_is_awaitable)  # type: ignore[arg-type]  # a TypeGuard'd callable where graphql-core wants a plain one
            result = await executed if optimized_is_awaitable(executed) else executed  # type: ignore[misc,assignment]  # as above
    except Exception as exc:  # as Strawberry does: answered, and logged
        return _failed([GraphQLError(str(exc), original_error=exc)])
    assert isinstance(result, ExecutionResult)
    if result.errors:
        result.errors = _coded(result.errors)
    return result


def _operation(definitions: Any, name: str | None) -> OperationDefinitionNode | None:
    for d in definitions:
        if isinstance(d, OperationDefinitionNode) and (name is None or (d.name and d.name.value == name)):
            return d
    return None


def _failed(errors: list[GraphQLError]) -> ExecutionResult:
    return ExecutionResult(data=None, errors=_coded(errors))


def _coded(errors: list[GraphQLError]) -> list[GraphQLError]:
    unexpected = [e for e in errors if not is_expected(e)]
    if unexpected:
        schema.process_errors(unexpected)
    return [coded(e) for e in errors]


def answer(result: ExecutionResult, extensions: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"data": result.data}
    if result.errors:
        out["errors"] = [e.formatted for e in result.errors]
    if extensions:
        out["extensions"] = extensions
    return out


async def respond(send: Send, status: int, body: dict[str, Any]) -> None:
    encoded = _encode(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON, (b"content-length", str(len(encoded)).encode())]})
    await send({"type": "http.response.body", "body": encoded})
