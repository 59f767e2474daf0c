"""Bounds on what one operation may ask for: depth, aliases, estimated cost, size.

Checked before execution, with the operation's variables known, so ``first: $n`` is costed at
its real value. The cost estimate counts the fields the answer would hold: a connection field
multiplies its selection by its page size (``first``, else the default), a plain list by
``LIST_ITEMS``; introspection (``__schema``) has a fixed cost and its own depth limit, so
GraphiQL works and an abusive introspection query does not.
"""

import contextlib
import functools
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    parse,
    specified_rules,
)
from graphql.validation import ASTValidationRule
from strawberry.schema.schema import validate_document
from strawberry.types.graphql import OperationType

from query.errors import CodedErrors, ErrorCode, error
from query.pages import DEFAULT_PAGE, MAX_PAGE

MAX_DEPTH = 10
MAX_INTROSPECTION_DEPTH = 16
MAX_ALIASES = 20
MAX_COST = 10_000
MAX_TOKENS = 2_000
LIST_ITEMS = 10
MAX_VARIABLE_DEPTH = 16  # the deepest input type nests 2 levels
CONNECTIONS = frozenset({"transfers", "trades", "events", "assets", "statement"})
LISTS = frozenset({"balances", "steps", "partitions"})
FIXED_COST = {"__schema": 1_000, "__type": 50}


@dataclass
class Measure:
    depth: int = 0
    introspection_depth: int = 0
    aliases: int = 0
    cost: int = 0
    uses_variables: bool = True  # False: the same for any variables, so it may be cached


def measure(document: DocumentNode, operation_name: str | None,
            variables: Mapping[str, Any] | None) -> Measure:
    """The size of the operation that will run (all of them if none is named and several exist)."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    walk = _Walk(fragments, variables or {})
    total = Measure(uses_variables=False)
    for op in document.definitions:
        if isinstance(op, OperationDefinitionNode) and (
            operation_name is None or (op.name is not None and op.name.value == operation_name)
        ):
            total.cost += walk.cost(op.selection_set, 1, False, frozenset())
    total.depth, total.introspection_depth, total.aliases = walk.depth, walk.introspection_depth, walk.aliases
    total.uses_variables = walk.uses_variables
    return total


class _Walk:
    def __init__(self, fragments: dict[str, FragmentDefinitionNode], variables: Mapping[str, Any]) -> None:
        self.fragments = fragments
        self.variables = variables
        self.depth = self.introspection_depth = self.aliases = 0
        self.uses_variables = False

    def _fields(self, selections: SelectionSetNode | None, seen: frozenset[str]) -> Iterator[FieldNode]:
        """The fields of a selection set, fragments spread in (a fragment cycle stops, once)."""
        for s in selections.selections if selections else ():
            if isinstance(s, FieldNode):
                yield s
            elif isinstance(s, InlineFragmentNode):
                yield from self._fields(s.selection_set, seen)
            elif isinstance(s, FragmentSpreadNode) and s.name.value not in seen:
                fragment = self.fragments.get(s.name.value)
                if fragment is not None:
                    yield from self._fields(fragment.selection_set, seen | {s.name.value})

    def cost(self, selections: SelectionSetNode | None, level: int, introspecting: bool,
             seen: frozenset[str]) -> int:
        total = 0
        for f in self._fields(selections, seen):
            name = f.name.value
            self.aliases += f.alias is not None
            inside = introspecting or (name.startswith("__") and name != "__typename")
            if inside:
                self.introspection_depth = max(self.introspection_depth, level)
            else:
                self.depth = max(self.depth, level)
            if self.depth > MAX_DEPTH or self.introspection_depth > MAX_INTROSPECTION_DEPTH:
                return total  # no need to look deeper: refused anyway
            below = self.cost(f.selection_set, level + 1, inside, seen)
            if name in FIXED_COST:
                total += FIXED_COST[name]
            elif name in CONNECTIONS:
                total += 1 + self._page(f) * below
            elif name in LISTS:
                total += 1 + LIST_ITEMS * below
            else:
                total += 1 + below
        return total

    def _page(self, f: FieldNode) -> int:
        for arg in f.arguments or ():
            if arg.name.value == "first":
                value: Any = arg.value
                if isinstance(value, IntValueNode):
                    value = int(value.value)
                elif isinstance(value, VariableNode):
                    self.uses_variables = True
                    value = self.variables.get(value.name.value)
                if isinstance(value, int):
                    return max(0, min(value, MAX_PAGE))  # a larger `first` is refused on its own
        return DEFAULT_PAGE


def nesting(value: Any) -> int:
    """How deeply ``value`` (decoded JSON) nests lists and objects; without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, level = stack.pop()
        if isinstance(v, dict | list):
            level += 1
            deepest = max(deepest, level)
            if deepest > MAX_VARIABLE_DEPTH:
                break  # refused anyway
            stack.extend((x, level) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def check(m: Measure) -> None:
    if m.depth > MAX_DEPTH:
        raise error(ErrorCode.query_too_deep, f"the query nests deeper than {MAX_DEPTH} levels",
                    maximum=MAX_DEPTH)
    if m.introspection_depth > MAX_INTROSPECTION_DEPTH:
        raise error(ErrorCode.query_too_deep,
                    f"the introspection query nests deeper than {MAX_INTROSPECTION_DEPTH} levels",
                    maximum=MAX_INTROSPECTION_DEPTH)
    if m.aliases > MAX_ALIASES:
        raise error(ErrorCode.too_many_aliases, f"the query uses {m.aliases} aliases; at most {MAX_ALIASES}",
                    maximum=MAX_ALIASES)
    if m.cost > MAX_COST:
        raise error(ErrorCode.query_too_costly,
                    f"the query's estimated cost is {m.cost}; at most {MAX_COST}: ask for fewer items",
                    cost=m.cost, maximum=MAX_COST)


_measures: OrderedDict[tuple[str, str | None], Measure] = OrderedDict()


def measured(query: str | None, document: DocumentNode, operation_name: str | None,
             variables: Mapping[str, Any] | None) -> Measure:
    """:func:`measure`, remembered by query text when the variables do not change it."""
    key = (query or "", operation_name)
    m = _measures.get(key) if query else None
    if m is None:
        m = measure(document, operation_name, variables)
        if query and not m.uses_variables:
            _measures[key] = m
            if len(_measures) > 256:
                _measures.popitem(last=False)
    return m


_RULES = tuple(specified_rules)
_validated: OrderedDict[str, list[GraphQLError]] = OrderedDict()


def validated(schema: GraphQLSchema, query: str | None, document: DocumentNode,
              rules: tuple[type[ASTValidationRule], ...] = _RULES) -> list[GraphQLError]:
    """Validation errors by query text (hashing a parsed document walks all of it)."""
    if query is None or rules != _RULES:  # nothing to key on, or other rules than usual
        return validate_document(schema, document, rules)
    errors = _validated.get(query)
    if errors is None:
        errors = _validated[query] = validate_document(schema, document, rules)
        if len(_validated) > 256:
            _validated.popitem(last=False)
    else:
        _validated.move_to_end(query)
    return errors


@functools.lru_cache(maxsize=256)
def parse_cached(query: str, max_tokens: int) -> DocumentNode:
    return parse(query, max_tokens=max_tokens)


def refusal(document: DocumentNode, query: str | None, operation_name: str | None,
            variables: Mapping[str, Any] | None, operation_type: OperationType, over_http: bool,
            schema: GraphQLSchema, rules: tuple[type[ASTValidationRule], ...] = _RULES) -> list[GraphQLError]:
    """What stops an operation before it runs: the transport, a limit, or validation (in that
    order: a limit is checked first so an abusive document is not even validated)."""
    try:
        if operation_type is OperationType.SUBSCRIPTION and over_http:
            raise error(ErrorCode.invalid_query, "subscriptions are served over the "
                        "graphql-transport-ws websocket protocol at this address, not over HTTP")
        if nesting(variables) > MAX_VARIABLE_DEPTH:
            raise error(ErrorCode.query_too_deep,
                        f"`variables` nest deeper than {MAX_VARIABLE_DEPTH} levels",
                        field="variables", maximum=MAX_VARIABLE_DEPTH)
        check(measured(query, document, operation_name, variables))
    except GraphQLError as refused:
        return [refused]
    return validated(schema, query, document, rules)


class QueryGuard(CodedErrors):
    """The one extension around every operation: parses through a cache, refuses an operation
    over a limit before it is validated or run, validates through a cache, and gives every
    error a code. (One extension rather than several: each one costs hooks on every request.)"""

    def on_operation(self) -> Iterator[None]:
        self.execution_context.parse_options["max_tokens"] = MAX_TOKENS
        yield from super().on_operation()

    def on_parse(self) -> Iterator[None]:
        ec = self.execution_context
        if ec.query is not None and ec.graphql_document is None:
            # A syntax error is left for Strawberry's own parse, which answers it properly.
            with contextlib.suppress(GraphQLError):
                ec.graphql_document = parse_cached(ec.query, MAX_TOKENS)
        yield

    def on_validate(self) -> Iterator[None]:
        ec = self.execution_context
        if ec.pre_execution_errors is None and ec.graphql_document is not None:
            ec.pre_execution_errors = refusal(
                ec.graphql_document, ec.query, ec.operation_name, ec.variables, ec.operation_type,
                getattr(ec.context, "transport", "") == "http", ec.schema._schema,
                tuple(ec.validation_rules))
        yield
