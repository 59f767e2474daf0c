"""Compiled plans for the common shape of query: fields with arguments, objects, lists, scalars.

graphql-core works out, on every request, which fields a selection holds, their definitions, and
how to complete each value; for a small lookup that costs more than the lookup. A plan does that
work once per query text: for each selection set the fields with their definitions, resolvers,
literal arguments and a completion step built for their type. Running a plan calls the same
resolvers with the same ``info`` and follows the execution rules of graphql-core: sibling fields
and list items run concurrently (so DataLoaders batch), a field error is located, nulls its field
and is collected once, a null in a non-null position nulls the nearest nullable parent.

Documents with anything else (fragments, directives, introspection, interfaces or unions,
mutations, a response key used twice) get no plan and run on graphql-core itself.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    GraphQLBoolean,
    GraphQLError,
    GraphQLField,
    GraphQLID,
    GraphQLInt,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLSchema,
    GraphQLString,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    default_field_resolver,
    located_error,
)
from graphql.execution.get_variable_signature import get_variable_signature
from graphql.execution.values import (
    VariableValues,
    VariableValueSource,
    get_argument_values,
    get_variable_values,
)
from graphql.language import ListValueNode, ObjectValueNode, ValueNode
from graphql.pyutils import Path, Undefined, inspect, is_iterable
from strawberry.execution.is_awaitable import optimized_is_awaitable as is_awaitable

from query.cache import MISSING, ByteLRU, document_bytes

log = logging.getLogger("ledgerline.query.plan")

Info = GraphQLResolveInfo[Any]

Complete = Callable[["_Run", "_Field", Info, Path, Any], Any]
ResolverFor = Callable[[GraphQLField], Callable[..., Any] | None]


class _Field:
    __slots__ = ("args", "complete", "definition", "key", "name", "nodes", "parent", "resolve",
                 "return_type", "variable_args")

    def __init__(self, key: str, node: FieldNode, parent: GraphQLObjectType, definition: GraphQLField,
                 resolve: Callable[..., Any] | None) -> None:
        self.key, self.name, self.nodes, self.parent = key, node.name.value, [node], parent
        self.definition = definition
        self.return_type: GraphQLOutputType = definition.type
        self.resolve = resolve or definition.resolve or default_field_resolver
        self.args: dict[str, Any] | None = {} if not node.arguments and not definition.args else None
        if self.args is None and not any(_has_variable(a.value) for a in node.arguments or ()):
            try:  # literal arguments (and defaults): the same on every request
                self.args = get_argument_values(definition, node, None)
            except GraphQLError:
                self.args = None  # left to each request, which answers the error
        self.variable_args = None if self.args is not None else _variable_args(definition, node)
        self.complete: Complete = _no_completion

    def arguments(self, variables: VariableValues) -> dict[str, Any]:
        if self.args is not None:
            return self.args
        if self.variable_args is not None:  # each argument a variable: its value, when it has one
            args = {}
            coerced = variables.coerced
            for name, variable, non_null in self.variable_args:
                value = coerced.get(variable, Undefined)
                if value is Undefined or (value is None and non_null):
                    break  # a default or an error: graphql-core's rules decide
                args[name] = value
            else:
                return args
        return get_argument_values(self.definition, self.nodes[0], variables)


def _variable_args(definition: GraphQLField, node: FieldNode) -> list[tuple[str, str, bool]] | None:
    """(argument, variable, non-null) when every argument given is a bare variable and those
    not given have no default; else None."""
    given = {a.name.value: a.value for a in node.arguments or ()}
    out = []
    for name, argument in definition.args.items():
        value = given.pop(name, None)
        if value is None:
            if argument.default_value is not Undefined or isinstance(argument.type, GraphQLNonNull):
                return None
            continue
        if not isinstance(value, VariableNode):
            return None
        out.append((argument.out_name or name, value.name.value, isinstance(argument.type, GraphQLNonNull)))
    return None if given else out


class _Typename:
    """``__typename``: the parent's name, no resolver."""

    __slots__ = ("key", "value")

    def __init__(self, key: str, value: str) -> None:
        self.key, self.value = key, value


Selection = tuple[_Field | _Typename, ...]


class _Run:
    """One execution of a plan: the context, the variables and the errors collected so far."""

    __slots__ = ("context", "errors", "nulled", "operation", "schema", "variables")

    def __init__(self, schema: GraphQLSchema, operation: OperationDefinitionNode, context: Any,
                 variables: VariableValues) -> None:
        self.schema, self.operation, self.context, self.variables = schema, operation, context, variables
        self.errors: list[GraphQLError] = []
        self.nulled: set[Path | None] = set()

    def add(self, error: GraphQLError, path: Path | None) -> None:
        """Collect ``error`` unless its position or a parent's was already nulled by an error."""
        at = path
        while at is not None:
            if at in self.nulled:
                return
            at = at.prev
        self.nulled.add(path)
        self.errors.append(error)

    def field_error(self, raw: Exception, f: _Field, return_type: GraphQLOutputType, path: Path) -> None:
        error = located_error(raw, f.nodes, path.as_list())
        if isinstance(return_type, GraphQLNonNull):
            raise error
        self.add(error, path)


class Plan:
    def __init__(self, schema: GraphQLSchema, operation: OperationDefinitionNode, root: Selection) -> None:
        self.schema, self.operation, self.root = schema, operation, root
        self.simple_variables = _simple_variables(schema, operation)

    async def run(self, context: Any, inputs: dict[str, Any] | None) -> ExecutionResult:
        variables = self._plain_variables(inputs or {})
        if variables is None:
            coerced = get_variable_values(self.schema, self.operation.variable_definitions or (),
                                          inputs or {}, max_errors=50)
            if isinstance(coerced, list):
                return ExecutionResult(data=None, errors=coerced)
            variables = coerced
        run = _Run(self.schema, self.operation, context, variables)
        data: dict[str, Any] | None
        try:
            data = _fields(run, self.root, None, None)
            if is_awaitable(data):
                data = await data  # type: ignore[misc]  # graphql-core's is_awaitable is no TypeGuard
        except GraphQLError as error:
            run.add(error, None)
            data = None
        return ExecutionResult(data=data, errors=run.errors or None)


    def _plain_variables(self, inputs: dict[str, Any]) -> VariableValues | None:
        """The variables when each is a plain scalar given as the value it coerces to (a string
        for ``String`` and ``ID``, an int for ``Int``, a bool for ``Boolean``); else None, and
        graphql-core coerces them (and answers what is wrong)."""
        if self.simple_variables is None:
            return None
        sources: dict[str, VariableValueSource] = {}
        coerced: dict[str, Any] = {}
        for name, signature, accepts, non_null in self.simple_variables:
            value = inputs.get(name, Undefined)
            if value is Undefined or value is None:
                if non_null:
                    return None
                if value is Undefined:
                    sources[name] = VariableValueSource(signature)
                    continue
            elif not accepts(value):
                return None
            sources[name] = VariableValueSource(signature, value)
            coerced[name] = value
        return VariableValues(sources, coerced)


_ACCEPTS: dict[Any, Callable[[Any], bool]] = {
    GraphQLString: lambda v: type(v) is str,
    GraphQLID: lambda v: type(v) is str,
    GraphQLInt: lambda v: type(v) is int and -(2**31) <= v < 2**31,
    GraphQLBoolean: lambda v: type(v) is bool,
}


def _simple_variables(schema: GraphQLSchema, operation: OperationDefinitionNode) -> list[Any] | None:
    out = []
    for definition in operation.variable_definitions or ():
        signature = get_variable_signature(schema, definition)
        if isinstance(signature, GraphQLError) or definition.default_value is not None:
            return None
        non_null = isinstance(signature.type, GraphQLNonNull)
        named = signature.type.of_type if non_null else signature.type  # type: ignore[union-attr]  # narrowed by non_null
        accepts = _ACCEPTS.get(named)
        if accepts is None:
            return None
        out.append((signature.name, signature, accepts, non_null))
    return out


def _fields(run: _Run, selection: Selection, source: Any, path: Path | None) -> Any:
    """A selection set on ``source``: its dict, or an awaitable of it when a field is async."""
    data: dict[str, Any] = {}
    waiting: list[tuple[str, Awaitable[Any]]] = []
    for f in selection:
        if isinstance(f, _Typename):
            data[f.key] = f.value
            continue
        value = _field(run, f, source, Path(path, f.key, f.parent.name))
        if is_awaitable(value):
            waiting.append((f.key, value))
            data[f.key] = None  # keeps the order of the keys
        else:
            data[f.key] = value
    if not waiting:
        return data
    return _settle(data, waiting)


async def _settle(into: Any, waiting: list[tuple[Any, Awaitable[Any]]]) -> Any:
    if len(waiting) == 1:
        key, awaitable = waiting[0]
        into[key] = await awaitable
        return into
    values = await asyncio.gather(*(a for _, a in waiting), return_exceptions=True)
    failed = next((v for v in values if isinstance(v, BaseException)), None)
    if failed is not None:
        raise failed
    for (key, _), value in zip(waiting, values, strict=True):
        into[key] = value
    return into


def _field(run: _Run, f: _Field, source: Any, path: Path) -> Any:
    # No abort signal and no async helpers: resolvers here use neither.
    info: Info = GraphQLResolveInfo(
        f.name, f.nodes, f.return_type, f.parent, path, run.schema, {}, None, run.operation, run.variables,
        run.context, is_awaitable, None, None)  # type: ignore[arg-type]  # Strawberry's Info is graphql-core's at run time
    try:
        args = f.arguments(run.variables)
        result = f.resolve(source, info, **args)
        if is_awaitable(result):
            return _resolved_later(run, f, info, path, result)
        completed = f.complete(run, f, info, path, result)
        if is_awaitable(completed):
            return _completed_later(run, f, f.return_type, path, completed)
        return completed
    except Exception as raw:
        run.field_error(raw, f, f.return_type, path)
        return None


async def _resolved_later(run: _Run, f: _Field, info: Info, path: Path,
                          result: Awaitable[Any]) -> Any:
    try:
        completed = f.complete(run, f, info, path, await result)
        if is_awaitable(completed):
            completed = await completed
        return completed
    except Exception as raw:
        run.field_error(raw, f, f.return_type, path)
        return None


async def _completed_later(run: _Run, f: _Field, return_type: GraphQLOutputType, path: Path,
                           completed: Awaitable[Any]) -> Any:
    try:
        return await completed
    except Exception as raw:
        run.field_error(raw, f, return_type, path)
        return None


# --- completion, built once per field for its type --------------------------------------------

def _no_completion(_run: _Run, _f: _Field, _info: Info, _path: Path, value: Any) -> Any:
    return value  # replaced when the plan is built


def _completion(return_type: GraphQLOutputType, selection: Selection | None) -> Complete:
    if isinstance(return_type, GraphQLNonNull):
        inner = _completion(return_type.of_type, selection)

        def non_null(run: _Run, f: _Field, info: Info, path: Path, value: Any) -> Any:
            completed = inner(run, f, info, path, value)
            if is_awaitable(completed):
                return _not_null_later(info, completed)
            if completed is None:
                raise _null_error(info)
            return completed

        return non_null
    if isinstance(return_type, GraphQLList):
        return _list_completion(return_type, _completion(return_type.of_type, selection))
    if isinstance(return_type, GraphQLLeafType):
        leaf = return_type

        def scalar(_run: _Run, _f: _Field, _info: Info, _path: Path, value: Any) -> Any:
            if isinstance(value, Exception):
                raise value
            if value is None or value is Undefined:
                return None
            coerced = leaf.coerce_output_value(value)
            if coerced is Undefined or coerced is None:
                raise TypeError(f"Expected `{inspect(leaf)}.coerce_output_value({inspect(value)})` to return"
                                f" non-nullable value, returned: {inspect(coerced)}")
            return coerced

        return scalar
    assert isinstance(return_type, GraphQLObjectType) and selection is not None
    object_type, fields = return_type, selection

    def obj(run: _Run, f: _Field, info: Info, path: Path, value: Any) -> Any:
        if isinstance(value, Exception):
            raise value
        if value is None or value is Undefined:
            return None
        if object_type.is_type_of is not None:
            fits = object_type.is_type_of(value, info)
            if is_awaitable(fits):
                return _object_later(run, object_type, fields, f, path, value, fits)  # type: ignore[arg-type]  # awaitable, checked above
            if not fits:
                raise _wrong_type(object_type, value, f)
        return _fields(run, fields, value, path)

    return obj


async def _not_null_later(info: Info, completed: Awaitable[Any]) -> Any:
    value = await completed
    if value is None:
        raise _null_error(info)
    return value


def _null_error(info: Info) -> TypeError:
    return TypeError(f"Cannot return null for non-nullable field {info.parent_type}.{info.field_name}.")


async def _object_later(run: _Run, object_type: GraphQLObjectType, fields: Selection, f: _Field,
                        path: Path, value: Any, fits: Awaitable[bool]) -> Any:
    if not await fits:
        raise _wrong_type(object_type, value, f)
    data = _fields(run, fields, value, path)
    return await data if is_awaitable(data) else data


def _wrong_type(object_type: GraphQLObjectType, value: Any, f: _Field) -> GraphQLError:
    return GraphQLError(f"Expected value of type '{object_type}' but got: {inspect(value)}.", f.nodes)


def _list_completion(return_type: GraphQLList[Any], item: Complete) -> Complete:
    item_type = return_type.of_type

    def items(run: _Run, f: _Field, info: Info, path: Path, value: Any) -> Any:
        if isinstance(value, Exception):
            raise value
        if value is None or value is Undefined:
            return None
        if not is_iterable(value):
            raise GraphQLError("Expected Iterable, but did not find one for field"
                               f" '{info.parent_type}.{info.field_name}'.")
        out: list[Any] = []
        waiting: list[tuple[int, Awaitable[Any]]] = []
        for index, element in enumerate(value):
            at = path.add_key(index, None)
            try:
                if is_awaitable(element):
                    completed: Any = _item_later(run, f, item, item_type, info, at, element)
                else:
                    completed = item(run, f, info, at, element)
                    if is_awaitable(completed):
                        completed = _completed_later(run, f, item_type, at, completed)
            except Exception as raw:
                run.field_error(raw, f, item_type, at)
                completed = None
            if is_awaitable(completed):
                waiting.append((index, completed))
                completed = None
            out.append(completed)
        return _settle(out, waiting) if waiting else out

    return items


async def _item_later(run: _Run, f: _Field, item: Complete, item_type: GraphQLOutputType,
                      info: Info, path: Path, element: Awaitable[Any]) -> Any:
    try:
        completed = item(run, f, info, path, await element)
        return await completed if is_awaitable(completed) else completed
    except Exception as raw:
        run.field_error(raw, f, item_type, path)
        return None


# --- building plans -----------------------------------------------------------------------------

def _has_variable(value: ValueNode) -> bool:
    if isinstance(value, VariableNode):
        return True
    if isinstance(value, ListValueNode):
        return any(_has_variable(v) for v in value.values)
    if isinstance(value, ObjectValueNode):
        return any(_has_variable(f.value) for f in value.fields)
    return False


def _named(t: GraphQLOutputType) -> Any:
    while isinstance(t, GraphQLNonNull | GraphQLList):
        t = t.of_type
    return t


def _selection(selection_set: SelectionSetNode | None, parent: GraphQLObjectType,
               resolver_for: ResolverFor) -> Selection | None:
    """The compiled fields of a selection set, None if it holds what plans do not cover."""
    if selection_set is None:
        return None
    out: list[_Field | _Typename] = []
    keys: set[str] = set()
    for node in selection_set.selections:
        if not isinstance(node, FieldNode) or node.directives:
            return None
        key = node.alias.value if node.alias else node.name.value
        if key in keys:
            return None
        keys.add(key)
        name = node.name.value
        if name == "__typename":
            out.append(_Typename(key, parent.name))
            continue
        definition = parent.fields.get(name)
        if definition is None or name.startswith("__"):
            return None
        f = _Field(key, node, parent, definition, resolver_for(definition))
        named = _named(definition.type)
        below: Selection | None = None
        if isinstance(named, GraphQLObjectType):
            below = _selection(node.selection_set, named, resolver_for)
            if below is None:
                return None
        elif not isinstance(named, GraphQLLeafType) or node.selection_set is not None:
            return None
        f.complete = _completion(definition.type, below)
        out.append(f)
    return tuple(out)


def build(schema: GraphQLSchema, document: DocumentNode, operation_name: str | None,
          resolver_for: ResolverFor = lambda _definition: None) -> Plan | None:
    """The plan of the operation, None if the document holds what plans do not cover. A field
    is resolved by ``resolver_for(field)`` when that gives a resolver, else by its own."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if len(operations) != len(document.definitions):
        return None  # fragments
    chosen = [o for o in operations if operation_name is None or (o.name and o.name.value == operation_name)]
    if len(chosen) != 1 or (operation_name is None and len(operations) != 1):
        return None
    operation = chosen[0]
    if operation.operation is not OperationType.QUERY or operation.directives or any(
            v.directives for v in operation.variable_definitions or ()):
        return None
    root = schema.query_type
    if root is None:
        return None
    selection = _selection(operation.selection_set, root, resolver_for)
    return None if selection is None else Plan(schema, operation, selection)


class Plans:
    """Plans by query text and operation name (None remembered too: that document has none),
    bounded in bytes: a plan holds a compiled field per field of its document."""

    def __init__(self, schema: GraphQLSchema, resolver_for: ResolverFor, budget: int = 16 * 2**20) -> None:
        self.schema, self.resolver_for = schema, resolver_for
        self._known: ByteLRU[Plan | None] = ByteLRU(budget)

    def get(self, query: str, operation_name: str | None, document: DocumentNode) -> Plan | None:
        key = (query, operation_name)
        plan = self._known.get(key)
        if plan is not MISSING:
            return plan
        try:
            plan = build(self.schema, document, operation_name, self.resolver_for)
        except Exception:  # a plan is only a shortcut: graphql-core runs the document instead
            log.exception("cannot plan %.200r; it runs on graphql-core", query)
            plan = None
        self._known.put(key, plan, document_bytes(query, document))
        return plan
