"""The command API's bounded append: how far it got decides what a 503 says."""

import asyncio
import json
import time
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from command import availability
from command.availability import NOT_SENT, UNKNOWN, Unavailable


class Producer:
    """``send`` hangs (no metadata), fails, or takes the record and never hears back."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    async def send(self, *_args: Any, **_kw: Any) -> "asyncio.Future[Any]":
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "refused":
            raise KafkaConnectionError("refused")
        return asyncio.get_running_loop().create_future()


@pytest.mark.parametrize(("mode", "outcome"), [("hang", NOT_SENT), ("refused", NOT_SENT),
                                               ("silent", UNKNOWN)])
async def test_the_append_answers_within_the_bound_saying_how_far_it_got(mode: str, outcome: str) -> None:
    availability.begin()
    began = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        await availability.append(Producer(mode), "t", b"r", b"k", "cmd-1", 0.3)  # type: ignore[arg-type]
    assert time.monotonic() - began < 0.3 + 0.2
    response = caught.value.response()
    body = json.loads(response.body)["error"]
    assert response.status_code == 503 and response.headers["retry-after"]
    assert body["code"] == "unavailable" and body["outcome"] == outcome
    assert body.get("command_id") == ("cmd-1" if outcome == UNKNOWN else None)


async def test_a_database_failure_after_the_append_began_is_unknown() -> None:
    availability.begin()
    assert availability.unavailable(ConnectionRefusedError()).outcome == NOT_SENT
    with pytest.raises(Unavailable):
        await availability.append(Producer("silent"), "t", b"r", b"k", "cmd-2", 0.05)  # type: ignore[arg-type]
    later = availability.unavailable(ConnectionRefusedError())
    assert later.outcome == UNKNOWN and later.command_id == "cmd-2"


async def test_the_bound_holds_for_the_whole_request_but_not_for_a_chosen_wait() -> None:
    availability.begin()

    async def two_slow_dependencies() -> None:
        await asyncio.sleep(0.2)
        await asyncio.sleep(0.2)

    with pytest.raises(TimeoutError):
        await availability.bounded(two_slow_dependencies(), 0.3)

    async def then_wait_for_the_outcome() -> str:
        await asyncio.sleep(0.1)
        availability.unbounded()  # Prefer: wait
        await asyncio.sleep(0.4)
        return "final"

    availability.begin()
    assert await availability.bounded(then_wait_for_the_outcome(), 0.3) == "final"
