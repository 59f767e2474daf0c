"""Process-wide settings of a long-running server's Python runtime."""

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: Allocations between two young-generation collections (Python's default is 700). A request
#: allocates a few hundred objects that die with it; at the default, a busy API spends a tenth
#: of its time in collections that find nothing to free.
YOUNG_GENERATION = 50_000


def settle_heap() -> None:
    """Call once start-up is done: what exists now (modules, pools, clients) lives as long as
    the process, so it is set aside from every later collection, and collections come less
    often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION, 20, 100)


def run(main: Coroutine[Any, Any, T], *, uvloop: bool = True) -> T:
    """``asyncio.run`` on uvloop where it is installed (it comes with ``uvicorn[standard]``), as
    the two HTTP servers already run: a round trip to PostgreSQL cost the client about half the
    CPU there (70 µs against 135 µs on the standard loop, on the 2-core development machine).
    ``uvloop=False``: the standard loop (see :func:`common.kafka.uvloop_safe`)."""
    if not uvloop:
        return asyncio.run(main)
    try:
        import uvloop as fast_loop
    except ImportError:
        return asyncio.run(main)
    return fast_loop.run(main)


async def until_signalled(work: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``work(stop)``; SIGINT or SIGTERM sets ``stop``, and the work winds down by itself."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await work(stop)


def run_worker(work: Callable[[asyncio.Event], Awaitable[None]], *, uvloop: bool = True) -> None:
    """A worker process's main loop: ``work(stop)`` on uvloop until a signal stops it."""
    run(until_signalled(work), uvloop=uvloop)
