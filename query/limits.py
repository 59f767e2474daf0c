"""Bounds on what one operation may ask for: depth, aliases, estimated cost, size.

Checked before execution, with the operation's variables known, so ``first: $n`` is costed at
its real value. The cost estimate counts the fields the answer would hold: a connection field
multiplies its selection by its page size (``first``, else the default), a plain list by
``LIST_ITEMS``; introspection (``__schema``) has a fixed cost and its own depth limit, so
GraphiQL works and an abusive introspection query does not.
"""

import contextlib
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
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

from query.cache import MISSING, ByteLRU, document_bytes
from query.errors import CodedErrors, ErrorCode, error
from query.pages import DEFAULT_PAGE, MAX_PAGE

MAX_DEPTH = 10
MAX_INTROSPECTION_DEPTH = 16
MAX_ALIASES = 20
MAX_COST = 10_000
MAX_TOKENS = 2_000
LIST_ITEMS = 10
# Validation compares every two fields of one response key in a selection set: quadratic in
# repeats (495 repeated fields took 1.4 s, 150 still 0.1 s). GraphiQL's introspection has 69
# fields and no key twice in one set.
MAX_FIELDS = 150
MAX_REPEATS = 10
MAX_NESTING = 64  # selection sets inside each other, fragments included
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
    visited: int = 0  # selections looked at: the work the measure took
    fields: int = 0  # fields written in the document
    repeats: tuple[str, int] = ("", 0)  # the response key selected most often in one selection set


def measure(document: DocumentNode, operation_name: str | None,
            variables: Mapping[str, Any] | None) -> Measure:
    """The size of the operation that will run (all of them if none is named and several exist).

    Linear in the document: each fragment is measured once (per kind of field it is spread
    under) and its size reused wherever it is spread, so fragments spreading fragments twice
    over 19 levels cost 19 fragment measures, not 2**19 expansions."""
    written = fields(document)
    if written > MAX_FIELDS:  # refused before anything else is looked at
        return Measure(fields=written, uses_variables=False)
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    walk = _Walk(fragments, variables or {})
    total = _Size()
    for op in document.definitions:
        if isinstance(op, OperationDefinitionNode) and (
            operation_name is None or (op.name is not None and op.name.value == operation_name)
        ):
            total = total.merge(walk.size(op.selection_set, False))
    return Measure(depth=total.depth, introspection_depth=total.introspection_depth, aliases=total.aliases,
                   cost=total.cost, uses_variables=walk.uses_variables, visited=walk.visited,
                   fields=written, repeats=walk.repeats)


@dataclass(frozen=True)
class _Size:
    """A selection set's size, relative to where it sits: depths count its own level as 1;
    ``keys`` counts its response keys, fragments spread in (filled in by :meth:`_Walk.size`)."""

    cost: int = 0
    depth: int = 0
    introspection_depth: int = 0
    aliases: int = 0
    keys: Mapping[str, int] = field(default_factory=dict)

    def merge(self, other: "_Size") -> "_Size":
        """Two selection sets at the same level (a fragment spread beside fields)."""
        return _Size(self.cost + other.cost, max(self.depth, other.depth),
                     max(self.introspection_depth, other.introspection_depth), self.aliases + other.aliases)


_EMPTY = _Size()


class _Walk:
    def __init__(self, fragments: dict[str, FragmentDefinitionNode], variables: Mapping[str, Any]) -> None:
        self.fragments = fragments
        self.variables = variables
        self.uses_variables = False
        self.visited = 0
        self._known: dict[tuple[str, bool], _Size] = {}
        self._open: set[str] = set()  # fragments being measured: a cycle stops there
        self._nesting = 0
        self.repeats: tuple[str, int] = ("", 0)  # the response key selected most often in one set

    def size(self, selections: SelectionSetNode | None, introspecting: bool) -> _Size:
        if selections is None:
            return _EMPTY
        self._nesting += 1
        try:
            if self._nesting > MAX_NESTING:  # refused for its depth anyway; keeps the stack short
                raise error(ErrorCode.query_too_deep, f"the query nests deeper than {MAX_DEPTH} levels",
                            maximum=MAX_DEPTH)
            total, keys = _EMPTY, Counter[str]()
            for s in selections.selections:
                self.visited += 1
                if isinstance(s, FieldNode):
                    total = total.merge(self._field(s, introspecting))
                    keys[(s.alias or s.name).value] += 1
                    continue
                if isinstance(s, InlineFragmentNode):
                    inner = self.size(s.selection_set, introspecting)
                else:
                    assert isinstance(s, FragmentSpreadNode)
                    inner = self._spread(s.name.value, introspecting)
                total = total.merge(inner)
                keys.update(inner.keys)
            for key, times in keys.items():
                if times > self.repeats[1]:
                    self.repeats = (key, times)
            return replace(total, keys=keys)
        finally:
            self._nesting -= 1

    def _spread(self, name: str, introspecting: bool) -> _Size:
        key = (name, introspecting)
        known = self._known.get(key)
        if known is None:
            fragment = self.fragments.get(name)
            if fragment is None or name in self._open:
                return _EMPTY  # validation answers it
            self._open.add(name)
            try:
                known = self._known[key] = self.size(fragment.selection_set, introspecting)
            finally:
                self._open.discard(name)
        return known

    def _field(self, f: FieldNode, introspecting: bool) -> _Size:
        name = f.name.value
        inside = introspecting or (name.startswith("__") and name != "__typename")
        below = self.size(f.selection_set, inside)
        if name in FIXED_COST:
            cost = FIXED_COST[name]
        elif name in CONNECTIONS:
            cost = 1 + self._page(f) * below.cost
        elif name in LISTS:
            cost = 1 + LIST_ITEMS * below.cost
        else:
            cost = 1 + below.cost
        return _Size(
            cost=cost,
            depth=max(0 if inside else 1, below.depth + 1 if below.depth else 0),
            introspection_depth=max(1 if inside else 0,
                                    below.introspection_depth + 1 if below.introspection_depth else 0),
            aliases=below.aliases + (f.alias is not None),
        )

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


def fields(document: DocumentNode) -> int:
    """The fields written in the document (fragments counted once, where they are defined)."""
    count = 0
    stack: list[Any] = list(document.definitions)
    while stack:
        node = stack.pop()
        count += isinstance(node, FieldNode)
        selection_set = getattr(node, "selection_set", None)
        if selection_set is not None:
            stack.extend(selection_set.selections)
    return count


def check(m: Measure) -> None:
    if m.fields > MAX_FIELDS:
        raise error(ErrorCode.too_many_fields, f"the query has {m.fields} fields; at most {MAX_FIELDS}",
                    maximum=MAX_FIELDS)
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
    key, times = m.repeats
    if times > MAX_REPEATS:
        raise error(ErrorCode.too_many_fields,
                    f"`{key}` is selected {times} times in one selection set; at most {MAX_REPEATS}",
                    maximum=MAX_REPEATS)


# Remembered by query text, each bounded in bytes (see :mod:`query.cache`).
_measures: ByteLRU[Measure] = ByteLRU(2 * 2**20)
_validated: ByteLRU[list[GraphQLError]] = ByteLRU(8 * 2**20)
_documents: ByteLRU[DocumentNode] = ByteLRU(16 * 2**20)
ERROR_BYTES = 2_000  # a validation error, with its message and locations


def measured(query: str | None, document: DocumentNode, operation_name: str | None,
             variables: Mapping[str, Any] | None) -> Measure:
    """:func:`measure`, remembered by query text when the variables do not change it."""
    key = (query or "", operation_name)
    m = _measures.get(key) if query else MISSING
    if m is MISSING:
        m = measure(document, operation_name, variables)
        if query and not m.uses_variables:
            _measures.put(key, m, 2 * len(query) + 200)
    return m


_RULES = tuple(specified_rules)


def validated(schema: GraphQLSchema, query: str | None, document: DocumentNode,
              rules: tuple[type[ASTValidationRule], ...] = _RULES) -> list[GraphQLError]:
    """Validation errors by query text (hashing a parsed document walks all of it)."""
    if query is None or rules != _RULES:  # nothing to key on, or other rules than usual
        return validate_document(schema, document, rules)
    errors = _validated.get(query)
    if errors is MISSING:
        errors = validate_document(schema, document, rules)
        _validated.put(query, errors, 2 * len(query) + ERROR_BYTES * len(errors))
    return errors


def parse_cached(query: str, max_tokens: int) -> DocumentNode:
    """The parsed document, remembered by query text; a syntax error raises, every time."""
    key = (query, max_tokens)
    document = _documents.get(key)
    if document is MISSING:
        document = parse(query, max_tokens=max_tokens)
        _documents.put(key, document, document_bytes(query, document))
    return document


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
