"""Run a small coroutine to completion from synchronous code, even inside a running loop."""

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(make_coro: Callable[[], Awaitable[T]]) -> T:
    """``asyncio.run(make_coro())``; in a thread of its own if this thread already runs a loop.

    The stack's ``start()`` methods block by design; callers in async code should use
    ``asyncio.to_thread``, but calling them directly from a coroutine still works.
    """

    async def main() -> T:
        return await make_coro()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(main())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="ledgerline-stack-probe", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]  # what main() returned: a T
