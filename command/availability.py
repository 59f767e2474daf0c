"""Bounded answers while the broker or the database is away.

A request that needs an absent dependency is answered within ``unavailable_seconds`` (5 s by
default) with ``503 {"error": {"code": "unavailable", "outcome": …}}`` and a ``Retry-After``
header, never a 500 and never a hang:

- ``"outcome": "not_sent"``: the command certainly did not reach Kafka; nothing happened.
- ``"outcome": "unknown"``: the command was handed to the producer and may still be delivered
  (the broker may have written it and the acknowledgement was lost). ``command_id`` names it;
  a retry with the same ``Idempotency-Key`` carries the same command id, and the processor
  decides a command id once, so the retry never makes a second command.

Which of the two applies is known from how far the request's append got (:func:`append`), kept
in a context variable of the request's task.

The bound holds for the whole request (:func:`bounded`), not for each call to a dependency: a
lookup that waited for the database and then an append that waited for the broker still answer
within it. Only the wait for the outcome that ``Prefer: wait=N`` asks for is outside it
(:func:`unbounded`): that one the client chose.
"""

import asyncio
import contextvars
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from starlette.responses import JSONResponse

from command.errors import ApiError, Code
from common.failures import TRANSIENT

NOT_SENT = "not_sent"
UNKNOWN = "unknown"
RETRY_AFTER_SECONDS = 2

T = TypeVar("T")

# None: no append begun in this request; else the command id, once handed to the producer.
_handed: contextvars.ContextVar[str | None] = contextvars.ContextVar("handed", default=None)
_deadline: contextvars.ContextVar[asyncio.Timeout | None] = contextvars.ContextVar("deadline",
                                                                                   default=None)


class Unavailable(ApiError):
    """503: a dependency is away. ``outcome`` says whether the command may have been appended."""

    def __init__(self, message: str, outcome: str, command_id: str | None = None) -> None:
        super().__init__(503, Code.UNAVAILABLE, message)
        self.outcome = outcome
        self.command_id = command_id

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"code": self.code, "message": self.message, "outcome": self.outcome}
        if self.command_id is not None:
            body["command_id"] = self.command_id
        return JSONResponse({"error": body}, status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def handed() -> str | None:
    """The command id this request handed to the producer, or None if no append got that far."""
    return _handed.get()


def begin() -> None:
    """A new request: no append begun."""
    _handed.set(None)
    _deadline.set(None)


async def bounded(work: Awaitable[T], bound: float) -> T:
    """``work`` (a request's handling) within ``bound`` seconds, else TimeoutError (a 503)."""
    async with asyncio.timeout(bound) as deadline:
        _deadline.set(deadline)
        return await work


def unbounded() -> None:
    """From here on the request waits as long as the client asked (``Prefer: wait``)."""
    deadline = _deadline.get()
    if deadline is not None:
        deadline.reschedule(None)


def transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT)


def unavailable(exc: BaseException) -> Unavailable:
    """The answer to a transient failure anywhere in a request (a database read before the
    append, the idempotency key's row after it)."""
    handed = _handed.get()
    if handed is None:
        return Unavailable(f"a dependency is unavailable ({type(exc).__name__}); nothing was "
                           "sent: retry later", NOT_SENT)
    return Unavailable(f"a dependency is unavailable ({type(exc).__name__}) and the command may "
                       "have been appended: retry with the same Idempotency-Key, or read its "
                       "status", UNKNOWN, handed)


async def append(producer: AIOKafkaProducer, topic: str, record: bytes, key: bytes,
                 command_id: str, bound: float, headers: list[tuple[str, bytes]] | None = None) -> Any:
    """``send_and_wait`` within ``bound`` seconds, or :class:`Unavailable` saying how far it
    got; returns the record's metadata (partition, offset)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    try:
        async with asyncio.timeout_at(deadline):
            # Until send() returns the record is not in the producer's buffer: a timeout or an
            # error here means it was not sent and never will be.
            delivered = await producer.send(topic, record, key=key, headers=headers)
    except (TimeoutError, KafkaError) as exc:
        raise Unavailable(f"the broker is unavailable ({type(exc).__name__}); the command was "
                          "not sent: retry later", NOT_SENT) from None
    _handed.set(command_id)
    delivered.add_done_callback(_retrieved)
    try:
        async with asyncio.timeout_at(deadline):
            return await asyncio.shield(delivered)
    except (TimeoutError, KafkaError) as exc:
        raise Unavailable(f"the broker did not acknowledge the command in time "
                          f"({type(exc).__name__}); it may still be appended: retry with the same "
                          "Idempotency-Key, or read its status", UNKNOWN, command_id) from None


def _retrieved(future: "asyncio.Future[Any]") -> None:
    # A delivery that fails after its request was answered is expected here: not worth a
    # "never retrieved" warning.
    if not future.cancelled():
        future.exception()


async def kafka_ready(producer: AIOKafkaProducer, within: float = 2.0) -> bool:
    """True when the producer can reach a broker now (for ``/readyz``)."""
    client = producer.client
    try:
        async with asyncio.timeout(within):
            for broker in client.cluster.brokers():
                if await client.ready(broker.nodeId):
                    return True
    except (TimeoutError, KafkaError, OSError):
        return False
    return False
