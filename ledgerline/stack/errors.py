"""The one exception the local stack raises, and a helper to quote a log's last lines in it."""

import re
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class StackError(RuntimeError):
    """A local-stack process could not be prepared, started or reached.

    The message says what failed and, where there is one, ends with the tail of the process's log.
    """


def tail_text(text: str, lines: int = 30) -> str:
    """The last ``lines`` non-empty lines of ``text``, without terminal colour codes."""
    kept = [line for line in _ANSI.sub("", text).splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def tail_file(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file (reads at most its last 64 KiB)."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 65536))
            data = f.read()
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return tail_text(data.decode("utf-8", errors="replace"), lines) or f"({path} is empty)"
