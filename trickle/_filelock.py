"""Exclusive advisory locks on a lock file beside the data they guard (POSIX flock)."""

from __future__ import annotations

from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def hold_lock(path: Path) -> IO[bytes] | None:
    """Open ``path`` (created if missing) and take an exclusive, non-blocking flock on it.

    Returns the open file: closing it (or the process ending, even killed) releases the
    lock. None where flock does not exist. Raises BlockingIOError if someone holds it.
    """
    if fcntl is None:  # pragma: no cover - Windows
        return None
    lock_file = open(path, "ab")
    try:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        raise
    return lock_file
