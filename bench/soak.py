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

import httpx

from bench.chaos import Population, Stack, supervised_stack
from ledgerline.local import PROCESSES

PARTS = ("kafka", "postgres", *PROCESSES)


async def _chaos(stack: Stack, population: Population, stop: asyncio.Event, rng: random.Random,
                 recovery: dict[str, list[float]], end_to_end: dict[str, list[float]]) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), rng.uniform(10, 30))
            return
        except TimeoutError:
            pass
        part = rng.choice(PARTS)
        before = stack.supervisor.parts[part].restarts
        pid = stack.pid(part)
        began = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        print(f"  {time.strftime('%H:%M:%S')} SIGKILL {part} (pid {pid})", flush=True)
        # The supervisor is a thread of its own: there is no event of this loop to await.
        while stack.supervisor.parts[part].restarts == before:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await stack.back(within=180)
        took = time.monotonic() - began
        recovery[part].append(took)
        async with httpx.AsyncClient() as http:
            await population.probe(http)
        through = time.monotonic() - began
        end_to_end[part].append(through)
        print(f"  {time.strftime('%H:%M:%S')} {part} back, APIs ready after {took:.1f}s, "
              f"a command decided end to end after {through:.1f}s", flush=True)


async def _soak(stack: Stack, minutes: float, seed: int, clients: int) -> int:
    rng = random.Random(seed)
    population = Population(stack, wallets=24, seed=seed)
    async with httpx.AsyncClient() as http:
        await population.setup(http)
    setup_commands = population.tally.accepted
    recovery: dict[str, list[float]] = defaultdict(list)
    end_to_end: dict[str, list[float]] = defaultdict(list)
    stop = asyncio.Event()
    began = time.monotonic()
    load = asyncio.create_task(population.load(stop, clients=clients, pause=0.05))
    chaos = asyncio.create_task(_chaos(stack, population, stop, rng, recovery, end_to_end))
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

    faults = sum(len(v) for v in recovery.values())
    print(f"\nsoak: {ran / 60:.1f} min, seed {seed}, {clients} clients, "
          f"{len(population.wallets)} wallets")
    print(f"  commands accepted     {t.accepted - setup_commands} "
          f"(+{setup_commands} setup), {sum(1 for s in status.values() if s in ('completed', 'settled'))} "
          f"completed/settled, {sum(1 for s in status.values() if s in ('failed', 'rejected'))} failed")
    per_part = ", ".join(f"{p} {len(v)}" for p, v in sorted(recovery.items()))
    print(f"  faults injected       {faults}: {per_part}")
    print("  recovery, seconds from SIGKILL to: the part up and both APIs ready | a command "
          "decided end to end")
    for part, times in sorted(recovery.items()):
        through = end_to_end[part]
        print(f"    {part:<12} p50 {statistics.median(times):5.1f}  max {max(times):5.1f}  | "
              f"p50 {statistics.median(through):5.1f}  max {max(through):5.1f}  (n={len(times)})")
    print(f"  503s answered         {t.unavailable} ({dict(t.outcomes)}); no answer (API restarting) "
          f"{t.no_answer}")
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
    parser.add_argument("--keep", action="store_true",
                        help="keep the stack's folder (logs, data: hundreds of MB) afterwards")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print("starting a supervised stack …", flush=True)
    with supervised_stack("soak", keep=args.keep) as stack:
        code = asyncio.run(_soak(stack, args.minutes, seed, args.clients))
    sys.exit(code)


if __name__ == "__main__":
    run()
