"""Upcasters: how a payload written under an older schema version is read as the current one.

Changing a message incompatibly (removing or retyping a field, adding a required one) means:
bump its ``VERSION``, run ``python -m events.schema`` to commit the new schema snapshot beside
the old one, and register here a function from the old version's payload to the next one's,
keyed ``(type name, old version)``. The codec chains them, so version 1 reaches version 3 through
the 1 -> 2 and 2 -> 3 functions. ``tests/unit/test_schemas.py`` fails while one is missing.

Every message is at version 1 so far, so there is nothing to upcast yet.
"""

from collections.abc import Callable
from typing import Any

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

UPCASTERS: dict[tuple[str, int], Upcaster] = {}
