"""The SQLAlchemy store: command log, applied state (jobs, executions, daily stats).

CONTRACT (implementation to be written). Every method is synchronous and is called from a
worker thread (``trio.to_thread.run_sync``) by the engine; writes are serialized by the
engine (one writer at a time), reads may run concurrently with a write.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import attrs

from trickle.engine.commands import Effect
from trickle.engine.model import DayStats, Execution, Job


@attrs.frozen(kw_only=True)
class LoadedState:
    """What a store holds at open: the applied state and where the log stands."""

    applied_index: int  # index of the last command whose effects are stored (0: none)
    jobs: list[Job]
    running: list[Execution]  # executions with finished_at None
    fsm_meta: bytes | None  # the state machine's own small state, as last stored


class Store:
    """SQLite (file, WAL) through a sync SQLAlchemy engine.

    ``path`` None: an in-memory database (StaticPool), for tests and throwaway engines.
    ``durability``: "full" | "normal" | "off" -> PRAGMA synchronous.
    ``history_limit``: finished execution records kept per job; older ones are pruned
    when a record is saved. Running records are never pruned.
    """

    def __init__(
        self, path: Path | None, *, durability: str = "normal", history_limit: int = 100
    ) -> None:
        raise NotImplementedError

    def close(self) -> None: ...

    # -- command log ---------------------------------------------------------------------
    def append_commands(self, entries: list[tuple[int, bytes]]) -> None:
        """Durably append (index, payload) entries in one transaction."""

    def read_commands(self, after_index: int) -> list[tuple[int, bytes]]:
        """Entries with index > after_index, in order."""
        raise NotImplementedError

    def last_command_index(self) -> int:
        raise NotImplementedError

    def compact_commands(self, upto_index: int) -> None:
        """Forget log entries with index <= upto_index (their effects are stored)."""

    # -- applied state ---------------------------------------------------------------------
    def apply(self, effects: list[Effect], *, applied_index: int, fsm_meta: bytes) -> None:
        """Persist effects in order, with applied_index and fsm_meta, in one transaction."""

    def load(self) -> LoadedState:
        raise NotImplementedError

    # -- reads -----------------------------------------------------------------------------
    def list_executions(
        self,
        job_name: str,
        *,
        sort: str = "started_at",
        order: str = "desc",
        start: int = 0,
        end: int | None = None,
    ) -> tuple[list[Execution], int]:
        """One page of a job's history and the job's total count. Costs the page, not the
        history. ``sort``: started_at | finished_at | attempt (ties broken by id)."""
        raise NotImplementedError

    def get_execution(self, job_name: str, execution_id: str) -> Execution | None:
        raise NotImplementedError

    def daily_stats(self, first: datetime, last: datetime) -> list[DayStats]:
        """One entry per UTC day from first to last inclusive, zero-filled, oldest first."""
        raise NotImplementedError
