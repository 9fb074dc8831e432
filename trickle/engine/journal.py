"""The result journal: results an agent finished but no server has committed yet, on disk.

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
import logging
import os
from pathlib import Path

from trickle.engine.commands import RunFinished
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
