"""The Engine: one trickle node embedded in a Trio program.

CONTRACT (the implementation is being written; signatures are the public API).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import attrs
import trio

from trickle.engine.config import EngineConfig
from trickle.engine.events import EventKind, Subscription
from trickle.engine.executors.base import PythonExecutorFn, PythonProcessorFn
from trickle.engine.model import BusyExecution, DayStats, Execution, Job, Member


@attrs.frozen(kw_only=True)
class JobQuery:
    """Filters, sorting and slicing of ``Engine.list_jobs`` (Dkron's ``GET /v1/jobs``).

    q: substring of name or displayname (case-sensitive). status: success, failed,
    partially_failed or untriggered. disabled: True/False. metadata: every pair must match.
    sort: name (also 'id'), displayname, schedule, success_count, error_count,
    last_success, last_error, next. order: 'asc' or 'desc'. start/end: 0-based slice after
    filtering (end exclusive, None = to the end).
    """

    q: str | None = None
    status: str | None = None
    disabled: bool | None = None
    metadata: Mapping[str, str] | None = None
    sort: str = "name"
    order: str = "asc"
    start: int = 0
    end: int | None = None


@attrs.frozen(kw_only=True)
class EngineStatistics:
    jobs: int
    running_executions: int
    queued_executions: int
    commands_applied: int
    fires_total: int
    fires_skipped: int
    fires_missed: int
    executions_succeeded: int
    executions_failed: int
    subscribers: int
    events_published: int
    events_dropped: int
    paused: bool
    is_leader: bool


class Engine:
    """One trickle node. ``async with Engine(config) as engine:`` or
    ``await nursery.start(engine.run)``.

    Job and execution methods raise the ``trickle.errors`` tree: ``ValidationError`` (400,
    with ``field``), ``JobNotFound`` / ``ParentNotFound`` / ``ExecutionNotFound`` (404),
    ``Conflict`` subclasses (409), ``SubmissionsPaused`` (503), ``EngineClosed`` (503).
    A call that raises has changed nothing.
    """

    def __init__(self, config: EngineConfig | None = None, *, clock: Any = None) -> None:
        self.config = config or EngineConfig()
        self.node_name = self.config.node_name

    async def run(self, *, task_status: trio.TaskStatus[Engine] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the store, recover, start scheduling; ``task_status.started(self)``."""
        raise NotImplementedError

    # jobs
    async def put_job(self, job: Job) -> tuple[Job, bool]:
        """Create or fully replace ``job``; returns (stored job, created?)."""
        raise NotImplementedError

    def get_job(self, name: str) -> Job:
        raise NotImplementedError

    def list_jobs(self, query: JobQuery | None = None) -> tuple[list[Job], int]:
        """One page of jobs and the count after filtering, before slicing."""
        raise NotImplementedError

    async def delete_job(self, name: str) -> Job:
        raise NotImplementedError

    async def toggle_job(self, name: str) -> Job:
        raise NotImplementedError

    async def run_job(self, name: str) -> Job:
        """Run now (manual). ``JobDisabled`` / ``ConcurrencyForbidden`` (409) refuse it."""
        raise NotImplementedError

    async def restore(self, jobs: list[Job]) -> list[str]:
        """Create or replace many jobs, parents first; one message per job."""
        raise NotImplementedError

    # executions
    async def list_executions(
        self, job_name: str, *, sort: str = "started_at", order: str = "desc",
        start: int = 0, end: int | None = None,
    ) -> tuple[list[Execution], int]:
        raise NotImplementedError

    async def get_execution(self, job_name: str, execution_id: str) -> Execution:
        raise NotImplementedError

    async def delete_executions(self, job_name: str) -> Job:
        raise NotImplementedError

    def busy(self) -> list[BusyExecution]:
        raise NotImplementedError

    async def stats(self, days: int = 30) -> list[DayStats]:
        raise NotImplementedError

    # events, extension, control
    def subscribe(
        self, *, kinds: Iterable[EventKind | str] | None = None,
        jobs: Iterable[str] | None = None, maxsize: int | None = None,
    ) -> Subscription:
        raise NotImplementedError

    def register_executor(self, name: str, fn: PythonExecutorFn) -> None:
        raise NotImplementedError

    def register_processor(self, name: str, fn: PythonProcessorFn) -> None:
        raise NotImplementedError

    def executor_names(self) -> list[str]:
        raise NotImplementedError

    def pause(self) -> None: ...

    def unpause(self) -> None: ...

    @property
    def paused(self) -> bool:
        raise NotImplementedError

    def members(self) -> list[Member]:
        raise NotImplementedError

    def leader(self) -> Member | None:
        raise NotImplementedError

    def is_leader(self) -> bool:
        raise NotImplementedError

    def next_fires(self, schedule: str, *, timezone: str = "", job_name: str = "",
                   count: int = 5) -> list[datetime]:
        """The next ``count`` fires of a schedule from now (``ScheduleError`` if bad)."""
        raise NotImplementedError

    def statistics(self) -> EngineStatistics:
        raise NotImplementedError

    @property
    def metrics_registry(self) -> Any:
        """The prometheus ``CollectorRegistry`` of this engine (one per engine)."""
        raise NotImplementedError
