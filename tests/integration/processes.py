"""Processor processes of a test's own, in place of the one the ``running`` stack started: started,
signalled (SIGKILL, SIGSTOP, SIGCONT) and stopped by the pid the test holds."""

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import Running

# Test processors: a short session so a killed one's partitions move on quickly, and small
# batches so a stream is worked through in many transactions (more points to crash at).
# No metrics endpoint: several run at once, and the stack's own processor has one.
FAST = {"LEDGERLINE_PROCESSOR_SESSION_TIMEOUT_MS": "6000", "LEDGERLINE_PROCESSOR_MAX_RECORDS": "40",
        "LEDGERLINE_PROCESSOR_METRICS_PORT": "0"}


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stopped(self) -> bool:
        """True while the process is stopped by a signal (SIGSTOP)."""
        with contextlib.suppress(OSError):
            return Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
        return False


@dataclass
class Processors:
    """Processor processes this test starts, signals and stops, by pid."""

    env: dict[str, str]
    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, **env: str) -> Proc:
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "ledgerline", "processor"], env={**self.env, **FAST, **env},
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGCONT)
                    proc.popen.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.popen.wait(15)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()


@contextlib.contextmanager
def own_processors(running: Running, test: str) -> Iterator[Processors]:
    """Stop the stack's processor, hand the test processors of its own, and start the stack's
    processor again afterwards for the tests that follow.

    The stack's processor is a static member of the group (``processor-0``): stopped, it does not
    leave, so the test's processors (dynamic members) are given partitions only once its session
    has timed out (10 s). Each test processor waits for its assignment in the log."""
    services = running.services
    theirs = services.children.get("processor")
    if theirs is not None and theirs.poll() is None:
        theirs.send_signal(signal.SIGTERM)
        theirs.wait(30)
    log_dir = running.stack.home / "logs" / test
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = Processors(dict(running.stack.env), log_dir)
    try:
        yield procs
    finally:
        procs.stop_all()
        services.start_one("processor")


async def wait_for_log(proc: Proc, text: str, within: float = 30.0, after: int = 0) -> int:
    """Wait until ``text`` appears in the process's log after character ``after``; returns where."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = proc.text().find(text, after)
        if found >= 0:
            return found + len(text)
        if proc.popen.poll() is not None:
            raise AssertionError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.text()[-3000:]}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"{proc.name} did not log {text!r} in {within}s:\n{proc.text()[-3000:]}")


async def wait_until_stopped(proc: Proc, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not proc.stopped():
        if time.monotonic() > deadline:
            raise AssertionError(f"{proc.name} was not stopped within {within}s")
        await asyncio.sleep(0.05)


async def wait_for_exit(proc: Proc, within: float) -> int:
    deadline = time.monotonic() + within
    while proc.popen.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{proc.name} is still running after {within}s:\n{proc.text()[-3000:]}")
        await asyncio.sleep(0.05)
    return proc.popen.returncode
