"""One LISTEN connection on the projector's channel, kept open: it reconnects by itself with
backoff, and probes a quiet connection so a peer that died without a word is noticed.

Both APIs hear the projector's commits through it: the command API to answer ``Prefer: wait``,
the GraphQL API for subscriptions and ``X-After-Command``. A notification can be lost while the
connection is down; ``on_connect`` runs after every (re)connect so the user can read again
whatever it watches: a lost notification costs latency, never truth.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from common.failures import Backoff
from events.readmodel import CHANNEL

log = logging.getLogger("ledgerline.listen")

#: A connection quiet for this long is probed with a query.
PROBE_SECONDS = 15.0


class Listener:
    def __init__(self, dsn: str, on_notify: Callable[[str], None], *,
                 on_connect: Callable[[], None] | None = None,
                 application_name: str = "ledgerline-listener", channel: str = CHANNEL) -> None:
        self.dsn = dsn
        self.on_notify = on_notify
        self.on_connect = on_connect
        self.application_name = application_name
        self.channel = channel
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, wait_seconds: float = 30.0) -> None:
        """Start listening; wait until the first connection is up (at most ``wait_seconds``)."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.wait_for(self.connected.wait(), wait_seconds)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.on_notify(payload)

    async def _run(self) -> None:
        backoff = Backoff()
        while True:
            try:
                conn = await asyncpg.connect(
                    self.dsn, server_settings={"application_name": self.application_name})
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("listener cannot connect (%s); retrying in %.1fs", exc, backoff.delay)
                await backoff.sleep()
                continue
            closed = asyncio.Event()
            try:
                conn.add_termination_listener(lambda _c, gone=closed: gone.set())
                await conn.add_listener(self.channel, self._notified)
                backoff.reset()
                self.connected.set()
                if self.on_connect is not None:
                    self.on_connect()  # whatever changed while nobody listened
                while not closed.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(closed.wait(), PROBE_SECONDS)
                    if not closed.is_set():  # a dead peer that never said goodbye
                        await conn.fetchval("SELECT 1", timeout=5)
                log.warning("listener connection lost; reconnecting")
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("listener failed: %s", exc)
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await conn.close(timeout=1)
