"""Transient failures and backoff: one definition for every process.

A *transient* failure is the broker or the database being away (refused, reset, timed out,
restarting, in crash recovery): the work is retried, never committed past, and the process is not
restarted for it. :class:`Backoff` spaces the retries (doubling, capped, with jitter so that
several clients do not knock in step).
"""

import asyncio
import random
import time

import asyncpg
from aiokafka.errors import KafkaError

#: Failures that mean "a dependency is away for now", not "this request is wrong".
TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    KafkaError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # the connection was closed under us
    asyncpg.InternalClientError,  # ... in the middle of a COPY: the protocol lost its state
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now, recovery
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
)


def database_away(exc: BaseException) -> bool:
    """True for a failure of the database connection itself (not of a statement)."""
    return isinstance(exc, (OSError, TimeoutError, asyncpg.PostgresConnectionError,
                            asyncpg.InterfaceError, asyncpg.exceptions.OperatorInterventionError,
                            asyncpg.exceptions.InsufficientResourcesError))


class Backoff:
    """Delays for successive retries: ``first``, doubling up to ``cap``, each with ±20 % jitter.
    ``reset()`` after a success."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self.delay = first
        self.failures = 0

    def next(self) -> float:
        delay = self.delay * random.uniform(0.8, 1.2)
        self.delay = min(self.delay * 2, self.cap)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.delay = self.first
        self.failures = 0

    async def sleep(self) -> None:
        await asyncio.sleep(self.next())

    def wait(self) -> None:
        time.sleep(self.next())
