"""What the read model promises the other processes: status ranks, the NOTIFY channel and its
payload, and the name the projector keeps its offsets under.

The projector writes these; the command API (``Prefer: wait``), the GraphQL API (subscriptions,
``X-After-Command``) and ``audit`` read them. They are part of the contract like the messages.
"""

import json
from collections.abc import Iterable, Iterator

# A status only moves to a higher rank, so a replayed or late event never moves one back.
TRANSFER_RANK = {"initiated": 1, "confirmed": 2, "completed": 3, "failed": 3}
TRADE_RANK = {"initiated": 1, "asset_locked": 2, "paid": 3, "transferred": 4, "settled": 5,
              "failed": 5}
# A command is final (rank 3) once every balance change it causes is in the views.
COMMAND_RANK = {"pending": 1, "confirmed": 2, "completed": 3, "settled": 3, "failed": 3,
                "rejected": 3}
#: completed, settled (a trade), failed, rejected: the statuses the projector never moves past.
FINAL_COMMAND_STATUSES = frozenset(s for s, rank in COMMAND_RANK.items() if rank == 3)

#: The projection whose offsets say how far the views have read ``ledger.events``.
PROJECTION = "views"

#: Every projector commit ``NOTIFY``s this channel with what changed.
CHANNEL = "ledger_changes"
#: What a notification can name: final command ids, wallets, transfers, trades.
KINDS = ("commands", "wallets", "transfers", "trades")
_NOTIFY_LIMIT = 7000  # PostgreSQL refuses payloads of 8000 bytes or more


def payloads(kind: str, ids: Iterable[str]) -> Iterator[str]:
    """``{"<kind>": [ids...]}`` payloads, as many as it takes to stay under the size limit."""
    batch: list[str] = []
    size = 0
    for i in ids:
        if batch and size + len(i) + 4 > _NOTIFY_LIMIT:
            yield json.dumps({kind: batch})
            batch, size = [], 0
        batch.append(i)
        size += len(i) + 4
    if batch:
        yield json.dumps({kind: batch})


def parse(payload: str) -> dict[str, list[str]]:
    """The ids a notification names, by kind; an unreadable payload names nothing."""
    try:
        changes = json.loads(payload)
    except ValueError:
        return {}
    if not isinstance(changes, dict):
        return {}
    return {k: [i for i in v if isinstance(i, str)] for k, v in changes.items()
            if k in KINDS and isinstance(v, list)}


#: What the views show for a memo whose wallet's personal data was erased (its key destroyed).
MEMO_ERASED = "[erased]"
