"""Command outcomes as the read model shows them, and waiting for them (``Prefer: wait=N``).

One LISTEN connection per process wakes the waiters of the command ids each projector commit
names; a waiter re-reads the read model, so a lost notification costs latency, never truth.
"""

import asyncio
import json
import logging
from typing import Any

import asyncpg

from projector.fold import FINAL_COMMAND_STATUSES
from projector.store import CHANNEL

log = logging.getLogger("ledgerline.outcomes")

# completed, settled (a trade), failed, rejected: the statuses the projector never moves past.
FINAL = FINAL_COMMAND_STATUSES

_STATUS = """
SELECT c.command_id, c.type, c.principal, c.status, c.reason, c.correlation_id, c.created_at, c.updated_at
FROM command_log c WHERE c.command_id = $1
"""


async def read(pool: asyncpg.Pool, command_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(_STATUS, command_id)
    return None if row is None else dict(row)


class Waiters:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._waiting: dict[str, list[asyncio.Event]] = {}
        self._conn: asyncpg.Connection | None = None

    async def start(self, dsn: str) -> None:
        self._conn = await asyncpg.connect(dsn)
        await self._conn.add_listener(CHANNEL, self._notified)

    async def stop(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            ids = json.loads(payload).get("commands", [])
        except ValueError:
            return
        for command_id in ids:
            for event in self._waiting.get(command_id, ()):
                event.set()

    async def wait_final(self, command_id: str, seconds: float) -> dict[str, Any] | None:
        """The command's outcome once final, or its latest state when ``seconds`` run out."""
        event = asyncio.Event()
        self._waiting.setdefault(command_id, []).append(event)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        try:
            while True:
                event.clear()  # before reading, so a commit after the read still wakes us
                outcome = await read(self.pool, command_id)
                remaining = deadline - loop.time()
                if (outcome is not None and outcome["status"] in FINAL) or remaining <= 0:
                    return outcome
                try:
                    # Re-check now and then even without a notification (listener reconnects).
                    await asyncio.wait_for(event.wait(), min(remaining, 1.0))
                except TimeoutError:
                    pass
        finally:
            waiting = self._waiting.get(command_id, [])
            waiting.remove(event)
            if not waiting:
                self._waiting.pop(command_id, None)
