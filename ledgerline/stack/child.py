"""What the broker and the database have in common: one server child process in its own group."""

import contextlib
import os
import signal
import subprocess
import time
from types import TracebackType
from typing import Self


class ChildServer:
    """A server run as a child process in a process group of its own.

    Subclasses set ``self._proc`` in ``start()`` and implement ``start()`` and ``stop()``.
    """

    _proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 20.0) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs, else None."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    def is_running(self) -> bool:
        return self.pid is not None

    def crashed(self) -> bool:
        """True when the server was started and has exited without being stopped."""
        return self._proc is not None and self._proc.poll() is not None

    def reap(self, within: float = 10.0) -> None:
        """After a crash, before starting again: SIGKILL what is left of the server's process
        group and wait for it to go. A SIGKILLed postmaster leaves its backends behind, and
        while they hold its shared memory a new postmaster refuses to start."""
        proc = self._proc
        if proc is None:
            return
        proc.poll()
        group = proc.pid  # the server leads a session (and a group) of its own
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.05)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the server and its whole process group at once, as in a crash."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        self._proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
