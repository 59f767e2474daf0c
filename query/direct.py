"""Resolvers called the way Strawberry calls them, without its per-call wrapping.

For every field Strawberry gives graphql-core a resolver that, on each call, looks up how to
convert the arguments, converts them, and builds the ``Info``; for a plain field it reads an
attribute through two calls. :func:`resolver_for` does the lookups once per field, for the plans
of :mod:`query.plan`: the same resolver function, the same converted arguments (names in
Python, input objects as their classes), the same ``Info``. A field with field extensions or
permissions, or a schema with exception handlers, keeps Strawberry's own resolver.
"""

from collections.abc import Callable
from typing import Any

import strawberry
from graphql import GraphQLField, GraphQLResolveInfo
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.arguments import convert_argument
from strawberry.types.base import StrawberryOptional
from strawberry.types.field import StrawberryField

Resolve = Callable[..., Any]
Info = GraphQLResolveInfo[Any]

# Argument types whose GraphQL value is already the Python value (Strawberry returns it as is).
_PLAIN = (str, int, float, bool, strawberry.ID)


def resolver_for(schema: strawberry.Schema, definition: GraphQLField) -> Resolve | None:
    field = (definition.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if not isinstance(field, StrawberryField) or field.extensions:
        return None
    if getattr(schema.schema_converter, "_exception_handler_specs", ()):
        return None
    config = schema.config
    if field.base_resolver is None:
        if config.default_resolver is not getattr:
            return None
        name = field.python_name

        def attribute(source: Any, _info: Info) -> Any:
            return getattr(source, name)

        return attribute
    resolver = field.base_resolver
    if resolver.parent_parameter is not None or resolver.root_parameter is not None:
        return None
    function = resolver.wrapped_func
    if not callable(function):
        return None
    takes_self = resolver.self_parameter is not None
    info_name = resolver.info_parameter.name if resolver.info_parameter is not None else None
    registry = schema.schema_converter.scalar_registry
    make_info = config.info_class
    arguments = [(config.name_converter.from_argument(a), a.python_name, a.type, _plain(a.type))
                 for a in field.arguments]

    def resolve(source: Any, info: Info, **values: Any) -> Any:
        strawberry_info = make_info(_raw_info=info, _field=field)
        kwargs: dict[str, Any] = {}
        for graphql_name, python_name, type_, plain in arguments:
            if graphql_name in values:
                value = values[graphql_name]
                kwargs[python_name] = value if plain else convert_argument(
                    value, type_, registry, config, strawberry_info, path=(graphql_name,))
        if info_name is not None:
            kwargs[info_name] = strawberry_info
        return function(source, **kwargs) if takes_self else function(**kwargs)

    return resolve


def _plain(type_: Any) -> bool:
    if type(type_) is StrawberryOptional:  # not Maybe, which wraps its value
        type_ = type_.of_type
    return any(type_ is t for t in _PLAIN)
