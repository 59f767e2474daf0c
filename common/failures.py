"""Which failures are transient (retry with backoff, never commit past them) and which make a
record poison (dead-letter it and go on). Named once here; the processor and the projector both
decide with these.
"""

import asyncio
from dataclasses import dataclass

import asyncpg
from aiokafka.errors import KafkaError, KafkaTimeoutError

#: The broker or the database is away or busy: the same work will succeed later.
TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    KafkaError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # deadlock, serialization failure
    asyncpg.exceptions.InvalidCachedStatementError,  # tables swapped by a rebuild
    asyncpg.exceptions.OutdatedSchemaCacheError,
)

#: The database refused the data itself: retrying cannot help. A batch refused so is split until
#: the one record that causes it is found; that record is poison.
REFUSED: tuple[type[BaseException], ...] = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


def transient_in_transaction(exc: KafkaError) -> bool:
    """Whether a failed Kafka transaction may simply be tried again: the broker says the error is
    retriable, or a request timed out. Anything else (fenced, unauthorised) is not."""
    return bool(getattr(exc, "retriable", False)) or isinstance(exc, KafkaTimeoutError)


@dataclass
class Backoff:
    """Exponential backoff between retries: ``first`` doubling up to ``most`` seconds."""

    first: float = 0.1
    most: float = 5.0
    delay: float = 0.0

    def __post_init__(self) -> None:
        self.delay = self.first

    async def wait(self) -> float:
        """Sleep the current delay, then double it; returns the delay slept."""
        slept = self.delay
        await asyncio.sleep(slept)
        self.delay = min(self.delay * 2, self.most)
        return slept

    def reset(self) -> None:
        self.delay = self.first
