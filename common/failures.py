"""Which failures are transient (retry with backoff, never commit past them, answer 503) and
which make a record poison (dead-letter it and go on). Named once here; every process decides with
these.

A *transient* failure is the broker or the database being away (refused, reset, timed out,
restarting, in crash recovery) or busy: the work is retried, never committed past, and the process
is not restarted for it. :class:`Backoff` spaces the retries (doubling, capped, with jitter so that
several clients do not knock in step).
"""

import asyncio
import random
import time

import asyncpg
from aiokafka.errors import KafkaError, KafkaTimeoutError

#: The broker or the database is away or busy: the same work will succeed later.
TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    KafkaError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # the connection was closed under us
    asyncpg.InternalClientError,  # ... in the middle of a COPY: the protocol lost its state
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now, recovery
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # deadlock, serialization failure
    asyncpg.exceptions.InvalidCachedStatementError,  # tables swapped by a rebuild
    asyncpg.exceptions.OutdatedSchemaCacheError,
)

#: The database refused the data itself: retrying cannot help. A batch refused so is split until
#: the one record that causes it is found; that record is poison.
REFUSED: tuple[type[BaseException], ...] = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


def database_away(exc: BaseException) -> bool:
    """True for a failure of the database connection itself (not of a statement)."""
    return isinstance(exc, (OSError, TimeoutError, asyncpg.PostgresConnectionError,
                            asyncpg.InterfaceError, asyncpg.exceptions.OperatorInterventionError,
                            asyncpg.exceptions.InsufficientResourcesError))


def transient_in_transaction(exc: KafkaError) -> bool:
    """Whether a failed Kafka transaction may simply be tried again: the broker says the error is
    retriable, or a request timed out. Anything else (fenced, unauthorised) is not."""
    return bool(getattr(exc, "retriable", False)) or isinstance(exc, KafkaTimeoutError)


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
