"""Upcasters: how a payload written under an older schema version is read as the current one.

Changing a message incompatibly (removing or retyping a field, adding a required one) means:
bump its ``VERSION``, run ``python -m events.schema`` to commit the new schema snapshot beside
the old one, and register here a function from the old version's payload to the next one's,
keyed ``(type name, old version)``. The codec chains them, so version 1 reaches version 3 through
the 1 -> 2 and 2 -> 3 functions. ``tests/unit/test_schemas.py`` fails while one is missing.

``WalletCredited``, ``AssetTransferred`` and ``SupplyReduced`` version 2 dropped the balance
(the supply) after the event: on the live path another aggregate's transaction writes them, and
balances and supplies are running sums of the changes (docs/processor.md). Version 1's balance
is left out; the change it made is in the amount.
"""

from collections.abc import Callable
from typing import Any

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]



def _without_balance(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items()
            if k not in ("available_after", "held_after", "supply_after", "burned_after")}


UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("WalletCredited", 1): _without_balance,
    ("AssetTransferred", 1): _without_balance,
    ("SupplyReduced", 1): _without_balance,
}
