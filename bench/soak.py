"""Soak under chaos: ``python -m bench.soak --minutes N``.

A whole supervised stack of its own on free ports of 127.0.0.1 (nothing else is contacted), a
wallet population sending transfers, trades and burns through HTTP (clients that retry ``503``
and silence with the same ``Idempotency-Key``), and a chaos schedule that SIGKILLs a random part
every 10-30 s: the broker, PostgreSQL or any of the four processes. The supervisor brings each
back. At the end: every accepted command decided, none twice, the balances equal to what the
reported outcomes say, ``ledgerline audit`` (conservation, every balance event, the views against
the events) clean. Prints the figures; exits 1 if anything was lost or doubled.

Not part of ``make bench`` (it has no ``main``): it is a test of endurance, not a benchmark.
"""

import argparse
import asyncio
import os
import random
import signal
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field

import httpx

from bench.chaos import Population, Stack, supervised_stack
from ledgerline.local import PROCESSES

PARTS = ("kafka", "postgres", *PROCESSES)
#: The issue's targets, from the part being back to the first command completed end to end.
TARGETS = {"kafka": 10.0, "postgres": 5.0, **{p: 3.0 for p in PROCESSES}}


@dataclass
class Recovery:
    """One part's recoveries: SIGKILL to the part back (the supervisor restarted it), and from
    then to the first command completed end to end (the issue's target)."""

    restart: list[float] = field(default_factory=list)
    first_command: list[float] = field(default_factory=list)
    ready: list[float] = field(default_factory=list)  # back -> every part up, both APIs ready


async def _back_after(stack: Stack, part: str, restarts: int) -> float:
    """When (monotonic) the supervisor reports ``part`` back after its restart number ``restarts``."""
    supervised = stack.supervisor.parts[part]
    # The supervisor is a thread of its own: there is no event of this loop to await.
    while supervised.restarts <= restarts or supervised.state != "up":  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    return supervised.up_since


async def _chaos(stack: Stack, population: Population, stop: asyncio.Event, rng: random.Random,
                 parts: tuple[str, ...], recovery: dict[str, Recovery]) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), rng.uniform(10, 30))
            return
        except TimeoutError:
            pass
        part = rng.choice(parts)
        before = stack.supervisor.parts[part].restarts
        pid = stack.pid(part)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        print(f"  {time.strftime('%H:%M:%S')} SIGKILL {part} (pid {pid})", flush=True)
        back = await _back_after(stack, part, before)
        # The probe is sent the moment the part is back, not once the APIs say they are ready:
        # what is measured is the stack doing its work again, from the part's return. Both
        # APIs ready is waited for beside it (one fault at a time: all up before the next).
        async with httpx.AsyncClient() as http:
            done, ready = await asyncio.gather(_when(population.probe(http, retry_pause=0.1)),
                                               _when(stack.back(within=180)))
        r = recovery[part]
        r.restart.append(back - killed)
        r.first_command.append(done - back)
        r.ready.append(ready - back)
        print(f"  {time.strftime('%H:%M:%S')} {part} back {back - killed:.1f}s after the SIGKILL; "
              f"a command completed end to end {done - back:.1f}s after that "
              f"(target {TARGETS[part]:g}s), both APIs ready after {ready - back:.1f}s", flush=True)


async def _when(work: Awaitable[object]) -> float:
    await work
    return time.monotonic()


async def _soak(stack: Stack, minutes: float, seed: int, clients: int,
                parts: tuple[str, ...] = PARTS) -> int:
    rng = random.Random(seed)
    population = Population(stack, wallets=24, seed=seed)
    async with httpx.AsyncClient() as http:
        await population.setup(http)
    setup_commands = population.tally.accepted
    recovery: dict[str, Recovery] = defaultdict(Recovery)
    stop = asyncio.Event()
    began = time.monotonic()
    load = asyncio.create_task(population.load(stop, clients=clients, pause=0.05))
    chaos = asyncio.create_task(_chaos(stack, population, stop, rng, parts, recovery))
    await asyncio.sleep(minutes * 60)
    stop.set()
    await chaos  # a recovery under way is awaited: the checks need the whole stack
    await load
    ran = time.monotonic() - began
    print("load stopped; checking …", flush=True)

    t = population.tally
    try:
        status = await population.outcomes(within=180)
        undecided = 0
    except AssertionError as exc:
        print(f"  {exc}")
        status, undecided = {}, 1
    doubled = await population.doubled()
    mismatches = await population.balance_mismatches(status) if status else ["(not checked)"]
    code, report = await asyncio.to_thread(population.audit)

    faults = sum(len(r.restart) for r in recovery.values())
    print(f"\nsoak: {ran / 60:.1f} min, seed {seed}, {clients} clients, "
          f"{len(population.wallets)} wallets")
    print(f"  commands accepted     {t.accepted - setup_commands} "
          f"(+{setup_commands} setup), {sum(1 for s in status.values() if s in ('completed', 'settled'))} "
          f"completed/settled, {sum(1 for s in status.values() if s in ('failed', 'rejected'))} failed")
    per_part = ", ".join(f"{p} {len(r.restart)}" for p, r in sorted(recovery.items()))
    print(f"  faults injected       {faults}: {per_part}")
    print("  recovery, seconds, p50 / max:  SIGKILL -> part back  |  part back -> first command "
          "completed end to end (target)  |  part back -> both APIs ready")
    for part, r in sorted(recovery.items()):
        print(f"    {part:<12} {statistics.median(r.restart):5.1f} / {max(r.restart):5.1f}  |  "
              f"{statistics.median(r.first_command):5.1f} / {max(r.first_command):5.1f}  "
              f"(target {TARGETS[part]:g})  |  {statistics.median(r.ready):5.1f} / "
              f"{max(r.ready):5.1f}  n={len(r.restart)}")
    print(f"  503s answered         {t.unavailable} ({dict(t.outcomes)}); no answer (API restarting) "
          f"{t.no_answer}; 409 key in progress, retried {t.in_progress}")
    print(f"  500s / unexpected     {len(t.errors)}" + (f": {t.errors[:3]}" if t.errors else ""))
    print(f"  slowest answer        {t.max_latency:.2f}s (bound {population.bound:g}s); over the bound: "
          f"{len(t.slow)}")
    print(f"  lost commands         {undecided + len([m for m in mismatches if m])}"
          f" (undecided, or balances that differ from the reported outcomes)")
    print(f"  doubled commands      {len(doubled)}")
    print(f"  ledgerline audit      {'clean' if code == 0 else f'FAILED ({code})'}")
    if code != 0:
        print(report)
    bad = undecided or mismatches or doubled or code != 0 or t.errors or t.slow or t.id_changed
    return 1 if bad else 0


def run() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"the parts to kill, comma-separated (default: all of {', '.join(PARTS)})")
    parser.add_argument("--keep", action="store_true",
                        help="keep the stack's folder (logs, data: hundreds of MB) afterwards")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    parts = tuple(p for p in args.parts.split(",") if p)
    if not parts or set(parts) - set(PARTS):
        parser.error(f"--parts: choose among {', '.join(PARTS)}")
    print("starting a supervised stack …", flush=True)
    with supervised_stack("soak", keep=args.keep) as stack:
        code = asyncio.run(_soak(stack, args.minutes, seed, args.clients, parts))
    sys.exit(code)


if __name__ == "__main__":
    run()
