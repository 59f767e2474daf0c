"""Secrets the local stack makes once and keeps in files only their owner can read (0600)."""

import contextlib
import os
import secrets
import stat
from pathlib import Path

from ledgerline.stack.errors import StackError


def kept_secret(path: Path, nbytes: int = 32) -> tuple[str, bool]:
    """The secret in ``path``, made on first use; and whether this call made it.

    The file is created with mode 0600 in one step (never readable by others, not even for a
    moment), and a file found with wider permissions is narrowed to 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    if write_new(path, value.encode()):
        return value, True
    return _read(path), False


def write_new(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` if there is no such file yet, created 0600 in one step (never
    readable by others, not even for a moment); False if the file was there. A file that was
    there and readable by others is narrowed to 0600."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)
        return False
    try:
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    os.close(fd)
    return True


def _read(path: Path) -> str:
    kept = path.read_text().strip()
    if not kept:
        raise StackError(f"{path} is empty; remove it to have a new secret made")
    return kept
