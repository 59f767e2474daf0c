"""Keeps every part of the local stack running: the broker, the database and the processes.

A part that dies is started again, with backoff if it keeps dying, and each death and return is
logged. The broker and PostgreSQL come back on their own data: Kafka recovers its log segments,
PostgreSQL replays its WAL (crash recovery) once what is left of the old server is gone
(:meth:`ChildServer.reap`). The state of every part is written to ``health.json`` at each change,
so ``ledgerline health`` (and a test) can read it.
"""

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.failures import Backoff

log = logging.getLogger("ledgerline.supervisor")

#: A part that stayed up this long before dying is restarted at once; one dying sooner waits
#: longer each time (it is crashing at start, and a tight loop would only burn the CPU).
STABLE_SECONDS = 30.0


@dataclass
class Part:
    """One supervised part: how to tell it is alive, how to start it again, its pid."""

    name: str
    alive: Callable[[], bool]
    restart: Callable[[], None]  # returns once the part is up; raises if it could not start
    pid: Callable[[], int | None]
    backoff: Backoff = field(default_factory=lambda: Backoff(first=1.0, cap=30.0))
    state: str = "up"
    up_since: float = field(default_factory=time.monotonic)
    down_since: float | None = None
    next_try: float = 0.0
    restarts: int = 0
    last_outage: float | None = None  # seconds from death to back, of the last outage
    outages: list[float] = field(default_factory=list)
    last_pid: int | None = None

    def __post_init__(self) -> None:
        self.last_pid = self.pid()

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state, "pid": self.pid(), "restarts": self.restarts,
                "last_outage_seconds": None if self.last_outage is None else round(self.last_outage, 2)}


class Supervisor:
    def __init__(self, parts: Sequence[Part], health_path: Path | None = None) -> None:
        self.parts = {p.name: p for p in parts}
        self.health_path = health_path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_health()

    def tick(self) -> None:
        """Look at every part once; start again those that died and are due."""
        changed = False
        # Every death first, reported at once: a restart takes seconds, and another part that
        # died meanwhile must show as down (and count as down) from now, not from its turn.
        for part in self.parts.values():
            if part.state != "up" or part.alive():
                continue
            now = time.monotonic()
            lived = now - part.up_since
            log.warning("%s (pid %s) died after %.0fs up; restarting it", part.name,
                        part.last_pid, lived)
            if lived >= STABLE_SECONDS:
                part.backoff.reset()
                part.next_try = now
            part.state, part.down_since, changed = "down", now, True
        if changed:
            self._write_health()
        for part in self.parts.values():
            if part.state != "down":
                continue
            now = time.monotonic()
            if now < part.next_try or self._stop.is_set():
                continue
            try:
                part.restart()
            except Exception as exc:
                wait = part.backoff.next()
                part.next_try = time.monotonic() + wait
                log.error("%s could not be restarted (%s); next try in %.1fs", part.name, exc, wait)
                continue
            back = time.monotonic()
            part.last_pid = part.pid()
            part.state, part.up_since, part.restarts, changed = "up", back, part.restarts + 1, True
            part.last_outage = back - (part.down_since or back)
            part.outages.append(part.last_outage)
            part.next_try = back + part.backoff.next()  # the next crash soon after waits this long
            log.info("%s is back (pid %s) after %.1fs", part.name, part.pid(), part.last_outage)
        if changed:
            self._write_health()

    def health(self) -> dict[str, dict[str, Any]]:
        return {name: part.snapshot() for name, part in self.parts.items()}

    def all_up(self) -> bool:
        return all(p.state == "up" and p.alive() for p in self.parts.values())

    def _write_health(self) -> None:
        if self.health_path is None:
            return
        tmp = self.health_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"at": time.time(), "parts": self.health()}, indent=1))
        tmp.replace(self.health_path)

    def run(self, every: float = 0.5) -> None:
        """Tick until :meth:`stop`."""
        while not self._stop.wait(every):
            self.tick()

    def start_thread(self) -> None:
        """Supervise from a background thread (test fixtures; ``up`` ticks from its main loop)."""
        self._thread = threading.Thread(target=self.run, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop supervising (before the parts are stopped, so none is started again)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(90)
        for part in self.parts.values():
            part.state = "stopped"
        self._write_health()
