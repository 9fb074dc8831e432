"""Two journals on disk: the results a node finished that no server committed yet
(``ResultJournal``), and the runs a server launched (``LaunchJournal``, below).

The result journal: results an agent finished but no server has committed yet, on disk.

An agent hands each finished run's result to its RunnerService, which retries it to the
servers until one commits it. Those results used to live only in memory, so an agent
restarted meanwhile lost them, and the leader then recorded the runs as failed ("node X no
longer knows the run") although they had run. The journal keeps one small file per
pending result under ``<data dir>/results``, written when the result is handed over and
removed once a server committed (or refused) it; a restarted agent loads them and delivers
them again. Files are written atomically (a temporary file renamed) but not fsynced: a
process crash keeps them, a power loss may lose the last ones (then the leader records
those runs failed, as before).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import weakref
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from trickle.engine.commands import RunFinished
from trickle.engine.model import EPOCH, unix_nanos
from trickle.engine.wire import WireError, decode_command, encode_command

logger = logging.getLogger(__name__)

SUFFIX = ".result"


class ResultJournal:
    """``directory`` None: keep nothing (a node without a data dir)."""

    def __init__(self, directory: Path | None) -> None:
        self._dir = directory
        self._ready = False

    def _file(self, execution_id: str) -> Path:
        assert self._dir is not None
        return self._dir / f"{execution_id}{SUFFIX}"

    def save(self, finished: RunFinished) -> None:
        """Keep ``finished`` until ``remove`` (replacing an earlier one of the same run).
        An error writing it is logged: the result still goes out from memory."""
        if self._dir is None:
            return
        path = self._file(finished.execution_id)
        temp = path.with_name(path.name + ".tmp")
        try:
            if not self._ready:
                self._dir.mkdir(parents=True, exist_ok=True)
                self._ready = True
            temp.write_bytes(encode_command(finished))
            os.replace(temp, path)
        except OSError as exc:
            logger.error("could not keep the result of %s on disk: %s", finished.execution_id, exc)
            with contextlib.suppress(OSError):
                temp.unlink()

    def remove(self, execution_id: str) -> None:
        if self._dir is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self._file(execution_id).unlink()

    def load(self) -> list[RunFinished]:
        """The results kept, oldest finish first. A file that does not decode to a result
        (damaged) is renamed ``*.bad`` and logged; leftover temporary files are removed."""
        if self._dir is None or not self._dir.is_dir():
            return []
        results: list[RunFinished] = []
        for path in sorted(self._dir.iterdir()):
            if path.name.endswith(SUFFIX + ".tmp"):
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            if not path.name.endswith(SUFFIX):
                continue
            try:
                finished = decode_command(path.read_bytes())
                if not isinstance(finished, RunFinished) or path.name != (
                    finished.execution_id + SUFFIX
                ):
                    raise WireError(f"not the result of {path.name[: -len(SUFFIX)]}")
            except (OSError, WireError) as exc:
                logger.error("kept result %s cannot be read (%s): set aside as .bad", path, exc)
                with contextlib.suppress(OSError):
                    path.rename(path.with_name(path.name + ".bad"))
                continue
            results.append(finished)
        results.sort(key=lambda r: (r.finished_at, r.execution_id))
        return results


# -- the launch journal ----------------------------------------------------------------------

LAUNCHES_FILE = "launches"
LAUNCH_JOURNAL_VERSION = 1
MAX_LAUNCHES_KEPT = 65_536  # ids the file holds before it is rewritten with the newer half
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def read_boot_id() -> str | None:
    """This machine's boot id (a new one at every boot), None where there is none."""
    try:
        return BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def _started_nanos(execution_id: str) -> int | None:
    """The start instant an execution id names (``<Unix nanoseconds>-<node>``)."""
    head, sep, _node = execution_id.partition("-")
    return int(head) if sep and head.isdigit() else None


class LaunchJournal:
    """The runs this node launched, by id, across restarts of its process.

    A node appends a run's id before it starts the run (``record``). When the process dies
    (kill -9, a crash) and starts again on the same boot of the machine, the file holds
    every run it launched since ``since``: a run committed for this node after that
    instant and absent from the file never started, so the leader may launch it now
    instead of recording it failed (``RunnerService.since`` and ``knows``). The writes are
    not fsynced: a process crash keeps them in the page cache; a reboot may lose the last
    ones, so after a reboot (a new boot id) the file is not trusted and starts again.

    The file: a JSON header line ``{"v", "boot", "since"}`` (``since`` in Unix
    microseconds), then one id per line. It is rewritten at start, and whenever it holds
    MAX_LAUNCHES_KEPT ids, with the newer half: ``since`` then moves to the start of the
    newest id dropped, so no launched run is ever missing after ``since``. If an id cannot
    be written the file is removed (the next start trusts nothing), and the run is still
    launched: a run is never kept from starting by its journal.
    """

    def __init__(
        self,
        directory: Path | None,
        *,
        boot_id: Callable[[], str | None] = read_boot_id,
        max_kept: int = MAX_LAUNCHES_KEPT,
    ) -> None:
        self._path = None if directory is None else directory / LAUNCHES_FILE
        self._boot = boot_id()
        self._max_kept = max(2, max_kept)
        self._ids: list[str] = []
        self._since_micros = 0
        self._fd = -1
        self._closer: weakref.finalize[Any, Any] | None = None  # closes _fd if dropped

    def open(self, now: datetime) -> tuple[datetime | None, set[str]]:
        """Load what an earlier process of this boot launched and start the file again.
        Returns (since, the ids launched since then), or (None, empty) when nothing
        earlier can be trusted (no file, another boot, damaged, no data dir)."""
        since: datetime | None = None
        launched: list[str] = []
        if self._path is not None and self._boot is not None:
            since, launched = self._load()  # no ids without a since
        self._since_micros = _micros(since if since is not None else now)
        self._keep_newest(launched, self._max_kept // 2)
        if self._path is not None and self._boot is not None:
            self._rewrite()
        elif self._path is not None:  # no boot id: an older file would lack this life's runs
            with contextlib.suppress(OSError):
                self._path.unlink(missing_ok=True)
        return (since if since is None else _from_micros(self._since_micros)), set(self._ids)

    @property
    def since(self) -> datetime | None:
        """Every run this node launched after this instant is in the journal (None: the
        journal keeps nothing)."""
        return None if self._fd < 0 else _from_micros(self._since_micros)

    def record(self, execution_id: str) -> None:
        """Note that this node launches ``execution_id`` now (before it starts)."""
        if self._fd < 0:
            return
        if len(self._ids) >= self._max_kept:
            self._keep_newest(self._ids, self._max_kept // 2)
            self._rewrite()
            if self._fd < 0:
                return
        self._ids.append(execution_id)
        try:
            os.write(self._fd, f"{execution_id}\n".encode())
        except OSError as exc:
            self._give_up(f"could not write to it: {exc}")

    def close(self) -> None:
        """Stop appending (the file stays valid for the runs recorded so far)."""
        if self._closer is not None:
            self._closer.detach()
            self._closer = None
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    # -- internals ---------------------------------------------------------------------------
    def _load(self) -> tuple[datetime | None, list[str]]:
        assert self._path is not None
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            return None, []
        except OSError as exc:
            logger.error("the launch journal %s cannot be read: %s", self._path, exc)
            return None, []
        lines = data.split(b"\n")
        try:
            header = json.loads(lines[0])
            ok = (
                type(header) is dict
                and header.get("v") == LAUNCH_JOURNAL_VERSION
                and type(header.get("since")) is int
            )
        except ValueError:
            ok = False
        if not ok:
            logger.error("the launch journal %s is damaged: not trusted", self._path)
            return None, []
        if header.get("boot") != self._boot:
            logger.info("the machine restarted since the launch journal was written: not trusted")
            return None, []
        # the last line is complete only if the data ends with a newline
        ids = [line.decode() for line in lines[1:-1] if line]
        return _from_micros(header["since"]), ids

    def _keep_newest(self, ids: list[str], count: int) -> None:
        """Keep the last ``count`` of ``ids`` (in launch order); ``since`` moves past the
        start of every id dropped, so no launch after ``since`` is missing."""
        cut = max(0, len(ids) - count)
        for execution_id in ids[:cut]:
            nanos = _started_nanos(execution_id)
            if nanos is not None:
                self._since_micros = max(self._since_micros, -(-nanos // 1000))
        self._ids = ids[cut:]

    def _rewrite(self) -> None:
        """Write the header and the kept ids to a new file, renamed over the old one, and
        append to it from now on."""
        assert self._path is not None
        self.close()
        temp = self._path.with_name(self._path.name + ".tmp")
        header = {"v": LAUNCH_JOURNAL_VERSION, "boot": self._boot, "since": self._since_micros}
        body = json.dumps(header) + "\n" + "".join(f"{i}\n" for i in self._ids)
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            temp.write_text(body)
            os.replace(temp, self._path)
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            self._closer = weakref.finalize(self, os.close, self._fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            self._give_up(f"could not rewrite it: {exc}")

    def _give_up(self, why: str) -> None:
        """Stop journalling, and remove the file so that the next start trusts nothing
        (it would lack the runs launched from now on)."""
        logger.error(
            "the launch journal %s is given up (%s): after a restart, runs committed "
            "for this node before it are failed rather than launched",
            self._path,
            why,
        )
        self.close()
        if self._path is not None:
            try:
                self._path.unlink(missing_ok=True)
            except OSError as exc:
                logger.critical(
                    "the launch journal %s cannot be removed (%s): remove it before this "
                    "node starts again",
                    self._path,
                    exc,
                )


def _micros(at: datetime) -> int:
    return unix_nanos(at) // 1000


def _from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)
