"""Process-wide settings of a long-running server's Python runtime."""

import asyncio
import gc
import io
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

#: After a stop signal, how long a worker may take to wind down before it logs what it is
#: still waiting on (every task's stack; it goes on stopping).
SLOW_STOP_SECONDS = 10.0
#: How long a task the work left behind may take to end once cancelled (see ``until_signalled``).
LEFT_TASK_SECONDS = 5.0

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
    """Run ``work(stop)``; SIGINT or SIGTERM sets ``stop``, and the work winds down by itself.

    A stop that takes over :data:`SLOW_STOP_SECONDS` logs what every task is waiting on. Tasks
    the work left running are cancelled; any that ignores its cancellation for
    :data:`LEFT_TASK_SECONDS` is logged with its stack and the process exits anyway: a worker
    asked to stop must stop, or its supervisor waits on it forever."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watchdog = asyncio.create_task(_report_slow_stop(stop), name="slow-stop-report")
    try:
        await work(stop)
    finally:
        watchdog.cancel()
    left = asyncio.all_tasks() - {asyncio.current_task(), watchdog}
    if not left:
        return
    log.warning("%d tasks still running after the work ended; cancelling them:\n%s",
                len(left), _stacks(left))
    for task in left:
        task.cancel()
    _, stuck = await asyncio.wait(left, timeout=LEFT_TASK_SECONDS)
    if stuck:
        log.error("%d tasks ignored their cancellation for %.0f s; exiting without them:\n%s",
                  len(stuck), LEFT_TASK_SECONDS, _stacks(stuck))
        logging.shutdown()
        os._exit(1)


def _stacks(tasks: Iterable["asyncio.Task[Any]"]) -> str:
    out = io.StringIO()
    for task in tasks:
        task.print_stack(limit=12, file=out)
    return out.getvalue()


async def _report_slow_stop(stop: asyncio.Event, after: float = SLOW_STOP_SECONDS) -> None:
    """Once ``stop`` is set, wait ``after`` seconds; if the process is still here, log the stack
    of every task, so a stop that hangs says where."""
    await stop.wait()
    await asyncio.sleep(after)
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    log.warning("still stopping %.0f s after the stop signal; %d tasks:\n%s",
                after, len(tasks), _stacks(tasks))


def run_worker(work: Callable[[asyncio.Event], Awaitable[None]], *, uvloop: bool = True) -> None:
    """A worker process's main loop: ``work(stop)`` on uvloop until a signal stops it."""
    run(until_signalled(work), uvloop=uvloop)
