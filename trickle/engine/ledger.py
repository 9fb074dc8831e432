"""The process ledger: which process groups this node's executions started, on disk.

A shell job runs in a session of its own, so when the node is killed (kill -9, a crash)
the job's processes live on, unsupervised, while the restarted node records the execution
as failed: a retry or the next fire would then run beside them. The ledger keeps one small
file per running process group under ``<data dir>/processes``; at start the engine kills
every group still listed whose leader is the very process recorded (same pid and start
time, so a reused pid is never touched), then forgets them.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import psutil
import trio

logger = logging.getLogger(__name__)

START_TIME_TOLERANCE = 0.05  # seconds: psutil's create_time of the same process agrees


class ProcessLedger:
    """``directory`` None: record nothing (an in-memory engine has nothing to recover)."""

    def __init__(self, directory: Path | None) -> None:
        self._dir = directory

    def _file(self, execution_id: str) -> Path:
        assert self._dir is not None
        return self._dir / f"{execution_id}.json"

    async def record(self, execution_id: str, pid: int) -> None:
        """Remember that ``execution_id`` runs the process group led by ``pid``."""
        if self._dir is not None:
            await trio.to_thread.run_sync(self._write, execution_id, pid)

    async def forget(self, execution_id: str) -> None:
        if self._dir is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._remove, execution_id)

    def _write(self, execution_id: str, pid: int) -> None:
        try:
            started = psutil.Process(pid).create_time()
        except psutil.Error:
            return  # already gone: nothing to reap later
        assert self._dir is not None
        self._dir.mkdir(parents=True, exist_ok=True)
        tmp = self._file(execution_id).with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": pid, "create_time": started}))
        tmp.replace(self._file(execution_id))

    def _remove(self, execution_id: str) -> None:
        self._file(execution_id).unlink(missing_ok=True)

    def reap(self) -> list[str]:
        """Kill the process groups left by executions of a previous run of this node;
        returns their execution ids. Blocking: call it in a worker thread."""
        if self._dir is None or not self._dir.is_dir():
            return []
        reaped = []
        for path in sorted(self._dir.glob("*.json")):
            try:
                entry = json.loads(path.read_text())
                pid, started = int(entry["pid"]), float(entry["create_time"])
                process = psutil.Process(pid)
                if abs(process.create_time() - started) <= START_TIME_TOLERANCE:
                    os.killpg(pid, signal.SIGKILL)
                    reaped.append(path.stem)
            except (psutil.Error, ProcessLookupError, PermissionError):
                pass  # gone, or not ours any more
            except (OSError, ValueError, KeyError, TypeError):
                logger.warning("unreadable process ledger entry %s skipped", path)
            path.unlink(missing_ok=True)
        for leftover in self._dir.glob("*.tmp"):
            leftover.unlink(missing_ok=True)
        return reaped
