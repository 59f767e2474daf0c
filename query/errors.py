"""Errors a client can act on: every refusal carries a stable ``extensions.code``.

The codes are a closed set, printed in the schema as the ``ErrorCode`` enum so clients can
generate code from it. They use the same words as the command API (``forbidden``,
``unauthenticated``, ``token_expired``, …). A field that fails answers ``null`` and one entry in
``errors`` with its ``path``; the rest of the answer stands.
"""

import enum
import logging
from typing import Any

import strawberry
from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.extensions import MaskErrors

from common.failures import TRANSIENT

log = logging.getLogger("ledgerline.query.errors")


@strawberry.enum(description="The `extensions.code` of every error this API answers with.")
class ErrorCode(enum.Enum):
    unauthenticated = strawberry.enum_value("unauthenticated", description="No bearer token.")
    token_expired = strawberry.enum_value("token_expired", description="The token has expired.")
    invalid_token = strawberry.enum_value(
        "invalid_token", description="The token is malformed or wrongly signed."
    )
    forbidden = strawberry.enum_value(
        "forbidden", description="The principal may not read this wallet, transfer, trade or event."
    )
    invalid_argument = strawberry.enum_value(
        "invalid_argument", description="An argument is malformed; `extensions.field` names it."
    )
    invalid_cursor = strawberry.enum_value(
        "invalid_cursor", description="`after` is not a cursor this list handed out."
    )
    page_too_large = strawberry.enum_value(
        "page_too_large", description="`first` is above the maximum page size."
    )
    query_too_deep = strawberry.enum_value("query_too_deep", description="Nesting above the limit.")
    too_many_aliases = strawberry.enum_value("too_many_aliases", description="Aliases above the limit.")
    query_too_costly = strawberry.enum_value(
        "query_too_costly", description="The estimated cost is above the limit: ask for fewer items."
    )
    query_too_long = strawberry.enum_value("query_too_long", description="Too many tokens.")
    too_many_fields = strawberry.enum_value(
        "too_many_fields",
        description="More fields in the document, or of one name in one selection set, than the limit."
    )
    invalid_query = strawberry.enum_value(
        "invalid_query", description="The document does not parse or does not fit the schema."
    )
    unavailable = strawberry.enum_value(
        "unavailable",
        description="The database is away for a moment (restarting, recovering): retry shortly.",
    )
    internal = strawberry.enum_value(
        "internal", description="The server failed; the details are in its log, not in the answer."
    )


#: ``extensions.classification``: the kind of each code in the words GraphQL tooling knows (Apollo's
#: codes), so a generic client or tool tells a refused input from a failed server without our enum.
CLASSIFICATION = {
    ErrorCode.unauthenticated: "UNAUTHENTICATED",
    ErrorCode.token_expired: "UNAUTHENTICATED",
    ErrorCode.invalid_token: "UNAUTHENTICATED",
    ErrorCode.forbidden: "FORBIDDEN",
    ErrorCode.internal: "INTERNAL_SERVER_ERROR",
    ErrorCode.unavailable: "UNAVAILABLE",
}


def classification(code: object) -> str:
    """The classification of the code ``code``: ``BAD_USER_INPUT`` unless listed otherwise."""
    try:
        return CLASSIFICATION.get(ErrorCode(str(code)), "BAD_USER_INPUT")
    except ValueError:
        return "BAD_USER_INPUT"


def error(code: ErrorCode, message: str, **extra: Any) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code.value, **extra,
                                             "classification": classification(code.value)})


def forbidden(what: str) -> GraphQLError:
    return error(ErrorCode.forbidden, f"you may not read {what}")


def invalid_argument(field: str, message: str) -> GraphQLError:
    return error(ErrorCode.invalid_argument, message, field=field)


def coded(e: GraphQLError) -> GraphQLError:
    """``e`` with a code: parse and validation errors ``invalid_query`` (or the limit they hit),
    anything unexpected ``internal``, its message kept out of the answer (it is in the log)."""
    extensions = e.extensions or {}
    if extensions.get("code"):
        if "classification" not in extensions:
            e.extensions = {**extensions, "classification": classification(extensions["code"])}
        return e
    if e.original_error is None or isinstance(e.original_error, GraphQLError):
        code, message = ErrorCode.invalid_query, e.message
        if isinstance(e, GraphQLSyntaxError) and "tokens" in e.message:
            code = ErrorCode.query_too_long
        elif "introspection depth" in e.message:
            code = ErrorCode.query_too_deep
    elif isinstance(e.original_error, TRANSIENT):
        log.warning("resolver at %s: database unavailable: %r", e.path, e.original_error)
        code, message = ErrorCode.unavailable, "the database is unavailable; retry shortly"
    else:
        log.error("resolver failed at %s", e.path, exc_info=e.original_error)
        code, message = ErrorCode.internal, "internal error"
    return GraphQLError(message, nodes=e.nodes, source=e.source, positions=e.positions, path=e.path,
                        extensions={**(e.extensions or {}), "code": code.value,
                                    "classification": classification(code.value)})


class CodedErrors(MaskErrors):
    """Applies :func:`coded` to every error of an operation, over HTTP and websockets alike."""

    def __init__(self) -> None:
        super().__init__()

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return [coded(e) for e in errors]


def is_expected(e: GraphQLError) -> bool:
    """An error the client caused and can act on: not worth a traceback in the log."""
    original = e.original_error
    return original is None or isinstance(original, GraphQLError)
