"""The Engine: one trickle node embedded in a Trio program.

Data flow of one scheduled run: the scheduler sleeps until the planner's earliest fire is
LAUNCH_AHEAD_MIN away, takes what is due within LAUNCH_AHEAD, proposes ``RunStarted``
commands (batched) through the command log, and once they are committed the dispatcher
hands each run to the runner at its scheduled instant (launch ahead). The runner executes, streams
output as events, runs processors and proposes ``RunFinished``. The state machine applies
every command; the engine reacts to what it applied (events, the plan, retries, children).
"""

from __future__ import annotations

import heapq
import logging
import random
import socket
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

import attrs
import trio

from trickle._version import __version__
from trickle.engine import commands as c
from trickle.engine.clock import Clock, SystemClock
from trickle.engine.config import EngineConfig
from trickle.engine.events import Event, EventHub, EventKind, Subscription
from trickle.engine.executors.base import PythonExecutorFn, PythonProcessorFn
from trickle.engine.fsm import Applied, DependentsDue, Reaction, RetryDue, StateMachine
from trickle.engine.ledger import ProcessLedger
from trickle.engine.log import LocalLog, decode_meta
from trickle.engine.metrics import EngineMetrics
from trickle.engine.model import (
    BusyExecution,
    Concurrency,
    DayStats,
    Execution,
    Job,
    Member,
    Trigger,
    execution_id,
    group_id,
)
from trickle.engine.planner import Planner
from trickle.engine.runner import Runner
from trickle.engine.schedule import parse_schedule, upcoming
from trickle.engine.store import Store
from trickle.engine.targets import describe_tags, select_targets
from trickle.engine.validate import validate_job
from trickle.errors import (
    ConcurrencyForbidden,
    EngineClosed,
    ExecutionNotFound,
    JobDisabled,
    JobNotFound,
    NotFound,
    SubmissionsPaused,
    TrickleError,
    ValidationError,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_FIRES_PER_BATCH = 256  # due fires proposed in one batch: the first start sooner
# Launch ahead: the scheduler commits the intents of the fires due in the next LAUNCH_AHEAD
# once the earliest is LAUNCH_AHEAD_MIN away, and the dispatcher launches each at its instant.
LAUNCH_AHEAD_MIN = timedelta(milliseconds=20)
LAUNCH_AHEAD = timedelta(milliseconds=50)
MAX_MISSED_SCAN = 100_000  # fires enumerated when counting missed ones at start
RESTORE_STAGGER = timedelta(milliseconds=1)  # between the anchors of restored jobs
GOSSIP_PORT = 8946  # Dkron's serf port, reported in members until gossip lands
_MICRO = timedelta(microseconds=1)
JOB_SORTS = {
    "id": "name",
    "name": "name",
    "displayname": "displayname",
    "schedule": "schedule",
    "success_count": "success_count",
    "error_count": "error_count",
    "last_success": "last_success",
    "last_error": "last_error",
    "next": "next",
}
JOB_STATUSES = {"success", "failed", "partially_failed", "untriggered"}
EXECUTION_SORTS = {
    "id": "started_at",
    "started_at": "started_at",
    "finished_at": "finished_at",
    "attempt": "attempt",
}


class NoTargetNodes(NotFound):
    def __init__(self, name: str, tags: Mapping[str, str]) -> None:
        super().__init__(f"no target nodes found to run job {name} (tags {describe_tags(tags)})")


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
    """A snapshot of the engine's counters (trio's ``statistics()`` style)."""

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

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        from trickle.engine.executors.registry import ExecutorRegistry
        from trickle.engine.processors import ProcessorRegistry

        self.config = config or EngineConfig()
        self.node_name = self.config.node_name
        self.clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._executors = ExecutorRegistry()
        self._processors = ProcessorRegistry()
        self._hub = EventHub(default_maxsize=self.config.subscriber_buffer)
        self._metrics = EngineMetrics()
        self._fsm = StateMachine()
        self._planner = Planner()
        self._store: Store | None = None
        self._log: LocalLog | None = None
        self._runner: Runner | None = None
        self._nursery: trio.Nursery | None = None
        self._wake_scope: trio.CancelScope | None = None
        self._wake_at: datetime | None = None
        self._paused = False
        self._open = False
        self._draining = False
        self._sched_scope: trio.CancelScope | None = None
        self._launching = 0
        self._launch_idle = trio.Event()
        self._last_start = datetime(1970, 1, 1, tzinfo=UTC)
        self._issued_ahead: set[datetime] = set()  # start instants given to fires ahead
        self._issued_heap: list[datetime] = []
        # committed runs waiting for their instant: (at, seq, job name, execution)
        self._ahead: list[tuple[datetime, int, str, Execution]] = []
        self._ahead_seq = 0
        self._dispatch_scope: trio.CancelScope | None = None
        self._dispatch_at: datetime | None = None
        # forbid fires held back from launching ahead (previous run active): job -> instant
        self._deferred: dict[str, datetime] = {}
        self._deferred_heap: list[tuple[datetime, str]] = []
        self._ahead_ids: set[str] = set()  # runs launched ahead, until launched or failed
        self._started_events: dict[str, Event] = {}  # of runs committed ahead, by id
        self._counts = {"fires": 0, "skipped": 0, "missed": 0, "succeeded": 0, "failed": 0}
        self._retries_waiting: set[tuple[int, str, int]] = set()
        self._cm_nursery: Any = None
        self._read_limiter = trio.CapacityLimiter(4)
        self._addr = "127.0.0.1"
        self._member: Member | None = None

    # -- lifecycle -----------------------------------------------------------------------
    async def __aenter__(self) -> Engine:
        self._cm_nursery = trio.open_nursery()
        nursery = await self._cm_nursery.__aenter__()
        try:
            await nursery.start(self.run)
        except BaseException as exc:
            await self._cm_nursery.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Stop the engine. An exception from the ``async with`` body propagates as it is
        (not wrapped in an exception group); a failure of the engine itself raises."""
        assert self._cm_nursery is not None
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        await self._cm_nursery.__aexit__(None, None, None)
        return False

    async def run(self, *, task_status: trio.TaskStatus[Engine] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the store, recover, start scheduling; ``task_status.started(self)``.

        Runs until cancelled. Executions still running when it is cancelled are killed;
        the next start records them as failed.
        """
        if self._open:
            raise RuntimeError("this engine is already running")
        cfg = self.config
        store = await trio.to_thread.run_sync(
            lambda: Store(cfg.data_dir, durability=cfg.durability, history_limit=cfg.history_limit)
        )
        self._store = store
        try:
            self._addr = await trio.to_thread.run_sync(_local_address)
            self._member = None
            loaded = await self._db(store.load)
            self._fsm.restore(
                applied_index=loaded.applied_index,
                jobs=loaded.jobs,
                running=loaded.running,
                meta=decode_meta(loaded.fsm_meta),
            )
            self._log = LocalLog(
                store, self._fsm, on_applied=self._on_applied, inline=cfg.data_dir is None
            )
            replayed = await self._log.recover()
            if replayed:
                logger.info("replayed %d logged commands", replayed)
            ledger = ProcessLedger(cfg.data_dir / "processes" if cfg.data_dir else None)
            reaped = await trio.to_thread.run_sync(ledger.reap)
            if reaped:
                logger.warning(
                    "killed the processes of %d executions left running when this node stopped: %s",
                    len(reaped),
                    ", ".join(reaped),
                )
            self._runner = Runner(
                processes=ledger,
                node_name=self.node_name,
                executors=self._executors,
                processors=self._processors,
                clock=self.clock,
                output_limit=cfg.output_limit,
                max_concurrent=cfg.max_concurrent,
                executor_limits=cfg.executor_limits,
                on_output=self._on_output,
                on_start=self._on_run_start,
                report=self._report,
            )
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self._log.run)
                await nursery.start(self._runner.run)
                self._open = True
                self._metrics.is_leader.set(1)
                await self._abandon_orphans()
                for retry in self._fsm.pending_retries():
                    self._spawn_retry(retry)
                for due in self._fsm.pending_dependents():
                    nursery.start_soon(self._run_dependents, due)
                await self._plan_all_and_catch_up()
                self._sched_scope = trio.CancelScope()
                nursery.start_soon(self._schedule_loop, name="trickle scheduler")
                logger.info(
                    "engine %s ready: %d jobs, data in %s",
                    self.node_name,
                    len(self._fsm.jobs),
                    cfg.data_dir or "memory",
                )
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self._open = False
            self._nursery = None
            self._metrics.is_leader.set(0)
            self._hub.close_all()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(store.close)

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """A store read: in a worker thread, or inline for the in-memory store (short
        calls; keeps tests on a MockClock deterministic)."""
        if self.config.data_dir is None:
            await trio.lowlevel.checkpoint()
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args, limiter=self._read_limiter)

    def _check_open(self) -> None:
        if not self._open:
            raise EngineClosed()

    async def drain(self, grace: float) -> bool:
        """Stop launching runs (fires, retries, children, manual runs) and wait up to
        ``grace`` seconds for this node's running and queued executions to finish.

        Returns True if the node is idle. Reads and job writes keep working; cancel the
        engine afterwards to stop it. Executions still running when it is cancelled are
        recorded as failed at the next start.
        """
        self._draining = True
        if self._sched_scope is not None:
            self._sched_scope.cancel()
        if self._runner is None:
            return True
        held = self._take_held()  # committed ahead, not launched yet: failed, not launched
        with trio.move_on_after(grace):
            if held:
                await self._fail_intents(held, self._drained_reason())
            while self._launching:
                self._launch_idle = trio.Event()
                await self._launch_idle.wait()
            await self._runner.wait_idle()
            return True
        return False

    def _check_launch(self) -> None:
        self._check_open()
        if self._draining:
            raise EngineClosed()

    async def _propose(self, commands: list[c.Command], *, urgent: bool = False) -> list[Applied]:
        self._check_open()
        assert self._log is not None
        return await self._log.propose(commands, urgent=urgent)

    async def _propose_one(self, command: c.Command) -> Any:
        [applied] = await self._propose([command])
        if applied.error is not None:
            raise applied.error
        return applied.result

    # -- jobs ------------------------------------------------------------------------------
    async def put_job(self, job: Job) -> tuple[Job, bool]:
        """Create or fully replace ``job``; returns (stored job, created?).

        Dkron's full-replace semantics: fields not given return to their defaults, while
        the counters, ``status``, ``last_*``, ``next`` (same schedule) and
        ``dependent_jobs`` are kept. Refused while paused (``SubmissionsPaused``).
        """
        self._check_open()
        if self._paused:
            raise SubmissionsPaused()
        now = self.clock.now()
        validate_job(job, executors=self._executors, processors=self._processors, now=now)
        result: tuple[Job, bool] = await self._propose_one(c.PutJob(job=job, now=now))
        return result

    def get_job(self, name: str) -> Job:
        job = self._fsm.jobs.get(name)
        if job is None:
            raise JobNotFound(name)
        return job

    def list_jobs(self, query: JobQuery | None = None) -> tuple[list[Job], int]:
        """One page of jobs and the count after filtering, before slicing."""
        q = query or JobQuery()
        sort = JOB_SORTS.get(q.sort)
        if sort is None:
            raise ValidationError(
                f"unknown sort {q.sort!r}; use one of {', '.join(sorted(JOB_SORTS))}",
                field="_sort",
            )
        order = q.order.lower()
        if order not in ("asc", "desc"):
            raise ValidationError("order must be ASC or DESC", field="_order")
        if q.status is not None and q.status not in JOB_STATUSES:
            raise ValidationError(
                f"unknown status {q.status!r}; use one of {', '.join(sorted(JOB_STATUSES))}",
                field="status",
            )
        if q.start < 0 or (q.end is not None and q.end < 0):
            raise ValidationError("_start and _end cannot be negative", field="_start")
        jobs: Iterable[Job] = self._fsm.jobs.values()
        if q.q:
            needle = q.q
            jobs = [j for j in jobs if needle in j.name or needle in j.displayname]
        if q.status is not None:
            want = "" if q.status == "untriggered" else q.status
            jobs = [j for j in jobs if j.status == want]
        if q.disabled is not None:
            jobs = [j for j in jobs if j.disabled == q.disabled]
        if q.metadata:
            md = dict(q.metadata)
            jobs = [j for j in jobs if all(j.metadata.get(k) == v for k, v in md.items())]
        items = list(jobs)
        if sort == "name":
            items.sort(key=lambda j: j.name, reverse=order == "desc")
        else:
            items.sort(key=lambda j: j.name)
            items.sort(key=lambda j: _sort_key(getattr(j, sort)), reverse=order == "desc")
        total = len(items)
        end = total if q.end is None else min(q.end, total)
        return items[q.start : end] if q.start < end else [], total

    async def delete_job(self, name: str) -> Job:
        """Delete a job and its history. ``JobHasDependents`` (409) if it has children."""
        job: Job = await self._propose_one(c.DeleteJob(name=name, now=self.clock.now()))
        return job

    async def toggle_job(self, name: str) -> Job:
        """Flip ``disabled``. Enabling plans from now: fires while disabled are not missed."""
        job: Job = await self._propose_one(c.ToggleJob(name=name, now=self.clock.now()))
        return job

    async def run_job(self, name: str) -> Job:
        """Run now, on the job's target nodes (manual trigger); returns once dispatched.

        Refused with ``JobDisabled`` (409) for a disabled job, ``ConcurrencyForbidden``
        (409) for a forbid job already running, ``NoTargetNodes`` (404) if no node matches,
        ``EngineClosed`` (503) while draining.
        """
        self._check_launch()
        job = self.get_job(name)
        if job.disabled:
            raise JobDisabled(name)
        if job.concurrency == Concurrency.FORBID and self._fsm.running_of(name):
            raise ConcurrencyForbidden(name)
        targets = self._targets(job)
        if not targets:
            raise NoTargetNodes(name, job.tags)
        now = self.clock.now()
        gid = group_id(now)
        runs = [self._new_execution(job, gid, m.name, 1, Trigger.MANUAL, None) for m in targets]
        results = await self._launch([c.RunStarted(execution=ex) for ex in runs])
        for ex, applied in zip(runs, results, strict=True):
            if applied.error is not None:
                raise applied.error
            self._dispatch(job, ex)
        return self.get_job(name)

    async def restore(self, jobs: list[Job]) -> list[str]:
        """Create or replace many jobs, parents first (Dkron's ``/v1/restore``).

        Every job is validated first; if one is invalid, nothing is stored and the
        ``ValidationError`` names it. Returns one message per job, in the order applied.
        """
        self._check_open()
        now = self.clock.now()
        names = {j.name for j in jobs}
        if len(names) != len(jobs):
            raise ValidationError("the restore file names a job more than once", field="file")
        for job in jobs:
            try:
                validate_job(job, executors=self._executors, processors=self._processors, now=now)
            except ValidationError as exc:
                raise ValidationError(f"job {job.name}: {exc.message}", field=exc.field) from None
            if (
                job.parent_job
                and job.parent_job not in names
                and job.parent_job not in self._fsm.jobs
            ):
                raise ValidationError(
                    f"job {job.name}: parent job {job.parent_job} is neither in the file "
                    "nor stored",
                    field="parent_job",
                )
        ordered = _parents_first(jobs)
        # Each job is set a millisecond after the previous one: a restore of 10,000
        # `@every 10s` jobs must not make 10,000 fires fall in the same instant forever.
        results = await self._propose(
            [c.PutJob(job=j, now=now + i * RESTORE_STAGGER) for i, j in enumerate(ordered)]
        )
        messages = []
        for job, applied in zip(ordered, results, strict=True):
            if applied.error is not None:
                messages.append(f"fail create {job.name}: {applied.error.message}")
            else:
                _, created = applied.result
                messages.append(f"success {'create' if created else 'update'} {job.name}")
        return messages

    # -- executions ------------------------------------------------------------------------
    async def list_executions(
        self,
        job_name: str,
        *,
        sort: str = "started_at",
        order: str = "desc",
        start: int = 0,
        end: int | None = None,
    ) -> tuple[list[Execution], int]:
        """One page of a job's history (newest first by default) and its total size."""
        self._check_open()
        self.get_job(job_name)
        column = EXECUTION_SORTS.get(sort)
        if column is None:
            raise ValidationError(
                f"unknown sort {sort!r}; use one of {', '.join(sorted(EXECUTION_SORTS))}",
                field="_sort",
            )
        if order.lower() not in ("asc", "desc"):
            raise ValidationError("order must be ASC or DESC", field="_order")
        if start < 0 or (end is not None and end < 0):
            raise ValidationError("_start and _end cannot be negative", field="_start")
        assert self._store is not None
        store = self._store
        return await self._db(
            lambda: store.list_executions(
                job_name, sort=column, order=order.lower(), start=start, end=end
            )
        )

    async def get_execution(self, job_name: str, execution_id: str) -> Execution:
        self._check_open()
        self.get_job(job_name)
        assert self._store is not None
        found = await self._db(self._store.get_execution, job_name, execution_id)
        if found is None:
            raise ExecutionNotFound(job_name, execution_id)
        return found

    async def delete_executions(self, job_name: str) -> Job:
        """Delete a job's history and reset its counters; running executions stay."""
        job: Job = await self._propose_one(c.DeleteExecutions(job_name=job_name))
        return job

    def busy(self) -> list[BusyExecution]:
        """Executions this node runs or queues, oldest first."""
        if self._runner is None:
            return []
        return self._runner.busy()

    async def stats(self, days: int = 30) -> list[DayStats]:
        """Executions finished per UTC day over the last ``days`` days, oldest first."""
        self._check_open()
        days = max(1, min(days, 365))
        today = self.clock.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        first = today - timedelta(days=days - 1)
        assert self._store is not None
        return await self._db(self._store.daily_stats, first, today)

    # -- events, extension, control ----------------------------------------------------------
    def subscribe(
        self,
        *,
        kinds: Iterable[EventKind | str] | None = None,
        jobs: Iterable[str] | None = None,
        maxsize: int | None = None,
    ) -> Subscription:
        """Events as they happen, filtered by kind and job name (None: all).

        Each subscription buffers up to ``maxsize`` events (the config's default); past
        that its events are dropped and it receives one ``lagged`` event with the count.
        """
        sub = self._hub.subscribe(kinds=kinds, jobs=jobs, maxsize=maxsize)
        self._metrics.subscribers.set(self._hub.subscriber_count)
        return sub

    def register_executor(self, name: str, fn: PythonExecutorFn) -> None:
        """Make ``async def fn(ctx)`` available as executor ``name``."""
        self._executors.register_python(name, fn)

    def register_processor(self, name: str, fn: PythonProcessorFn) -> None:
        """Make ``async def fn(ctx) -> str | None`` available as processor ``name``."""
        self._processors.register_python(name, fn)

    def executor_names(self) -> list[str]:
        return list(self._executors.names())

    def processor_names(self) -> list[str]:
        return list(self._processors.names())

    def pause(self) -> None:
        """Refuse new and updated jobs (503) until ``unpause``; scheduling goes on."""
        if not self._paused:
            self._paused = True
            self._metrics.paused.set(1)
            self._publish(Event(kind=EventKind.PAUSED, at=self.clock.now()))

    def unpause(self) -> None:
        if self._paused:
            self._paused = False
            self._metrics.paused.set(0)
            self._publish(Event(kind=EventKind.UNPAUSED, at=self.clock.now()))

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def running(self) -> bool:
        """True from ``task_status.started`` until the engine stops."""
        return self._open

    def members(self) -> list[Member]:
        """The cluster's members: on one node, this node."""
        return [self._self_member()]

    def leader(self) -> Member | None:
        return self._self_member() if self._open else None

    def is_leader(self) -> bool:
        return self._open

    def next_fires(
        self, schedule: str, *, timezone: str = "", job_name: str = "", count: int = 5
    ) -> list[datetime]:
        """The next ``count`` fires of a schedule from now (``ScheduleError`` if bad)."""
        now = self.clock.now()
        parsed = parse_schedule(schedule, timezone=timezone, job_name=job_name, anchor=now)
        return upcoming(parsed, now, max(0, min(count, 100)))

    def statistics(self) -> EngineStatistics:
        runner = self._runner
        return EngineStatistics(
            jobs=len(self._fsm.jobs),
            running_executions=runner.running_count if runner else 0,
            queued_executions=runner.queued_count if runner else 0,
            commands_applied=self._log.commands_applied if self._log else 0,
            fires_total=self._counts["fires"],
            fires_skipped=self._counts["skipped"],
            fires_missed=self._counts["missed"],
            executions_succeeded=self._counts["succeeded"],
            executions_failed=self._counts["failed"],
            subscribers=self._hub.subscriber_count,
            events_published=self._hub.published,
            events_dropped=self._hub.dropped,
            paused=self._paused,
            is_leader=self.is_leader(),
        )

    @property
    def metrics_registry(self) -> Any:
        """The prometheus ``CollectorRegistry`` of this engine (one per engine)."""
        runner = self._runner
        m = self._metrics
        m.jobs.set(len(self._fsm.jobs))
        m.running.set(runner.running_count if runner else 0)
        m.queued.set(runner.queued_count if runner else 0)
        m.subscribers.set(self._hub.subscriber_count)
        m.events_dropped.set(self._hub.dropped)
        return m.registry

    # -- internals: members and targets ----------------------------------------------------------
    def _self_member(self) -> Member:
        if self._member is None:
            self._member = Member(
                name=self.node_name,
                addr=self._addr,
                port=GOSSIP_PORT,
                tags=self.config.node_tags,
                status="alive",
            )
        return self._member

    def _targets(self, job: Job) -> list[Member]:
        return select_targets(job.tags, self.members(), region=self.config.region, rng=self._rng)

    def _new_execution(
        self,
        job: Job,
        gid: int,
        node: str,
        attempt: int,
        trigger: Trigger,
        scheduled_at: datetime | None,
        *,
        start: datetime | None = None,
    ) -> Execution:
        """A new execution record. It starts now, or at ``start`` (a fire launched ahead:
        its scheduled instant, in the future)."""
        now = self.clock.now()
        if start is not None and start > now:
            now = self._start_ahead(start)
        else:
            if now <= self._last_start:  # ids are <start nanos>-<node>: keep them unique
                now = self._last_start + _MICRO
            while now in self._issued_ahead:
                now += _MICRO
            self._last_start = now
        return Execution(
            id=execution_id(now, node),
            job_name=job.name,
            node_name=node,
            group=gid,
            started_at=now,
            attempt=attempt,
            trigger=trigger,
            scheduled_at=scheduled_at,
        )

    def _start_ahead(self, at: datetime) -> datetime:
        """A unique start instant for a fire launched ahead: ``at``, or just after it if
        another run took that microsecond (runs of one instant are ordered by creation)."""
        now = self.clock.now()
        heap = self._issued_heap
        while heap and heap[0] < now:  # instants in the past can no longer collide
            self._issued_ahead.discard(heapq.heappop(heap))
        start = at
        if start <= self._last_start:  # taken by a run started now (or after, if bumped)
            start = self._last_start + _MICRO
        while start in self._issued_ahead:
            start += _MICRO
        self._issued_ahead.add(start)
        heapq.heappush(heap, start)
        return start

    def _dispatch(self, job: Job, execution: Execution) -> None:
        """Hand a committed run to the runner: once its intent is in the log, it runs."""
        assert self._runner is not None
        if not self._runner.accepting:  # stopping: the next start records it as failed
            logger.info("not starting %s: the node is stopping", execution.id)
            return
        self._runner.submit(job, execution)

    async def _launch(self, commands: list[c.Command]) -> list[Applied]:
        """Propose run intents; shielded, so that a run committed is also dispatched (the
        caller dispatches right after), and ``drain`` waits for launches in flight."""
        self._launching += 1
        try:
            with trio.CancelScope(shield=True):
                results = await self._propose(commands, urgent=True)
            return results
        finally:
            self._launching -= 1
            if self._launching == 0:
                self._launch_idle.set()

    # -- internals: reacting to applied commands ---------------------------------------------------
    def _publish(self, event: Event) -> None:
        self._hub.publish(event)

    def _on_applied(self, pairs: list[tuple[c.Command, Applied]], replay: bool) -> None:
        m = self._metrics
        m.commands.inc(len(pairs))
        m.log_batches.inc()
        for _command, applied in pairs:
            for effect in applied.effects:
                if isinstance(effect, c.JobSaved):
                    self._plan(effect.job)
                elif isinstance(effect, c.JobRemoved):
                    self._planner.remove(effect.name)
                    self._deferred.pop(effect.name, None)
            if replay:
                continue
            for event in applied.events:
                if event.kind == EventKind.EXECUTION_FINISHED and event.execution is not None:
                    ex = event.execution
                    if ex.success:
                        self._counts["succeeded"] += 1
                        m.succeeded.labels(job_name=ex.job_name).inc()
                    else:
                        self._counts["failed"] += 1
                        m.failed.labels(job_name=ex.job_name).inc()
                if (
                    event.kind == EventKind.EXECUTION_STARTED
                    and event.execution is not None
                    and event.execution.id in self._ahead_ids
                ):  # committed ahead: published when it is launched
                    self._started_events[event.execution.id] = event
                    continue
                self._publish(event)
            for reaction in applied.reactions:
                self._react(reaction)

    def _plan(self, job: Job) -> None:
        self._deferred.pop(job.name, None)  # a held-back fire is superseded by the new plan
        if job.disabled or job.parent_job or not job.schedule or job.next is None:
            self._planner.remove(job.name)
            return
        self._planner.set(job.name, job.next)
        if self._wake_scope is not None and (self._wake_at is None or job.next < self._wake_at):
            self._wake_scope.cancel()

    def _react(self, reaction: Reaction) -> None:
        if self._nursery is None:
            return
        if isinstance(reaction, RetryDue):
            self._spawn_retry(reaction)
        elif isinstance(reaction, DependentsDue):
            self._nursery.start_soon(self._run_dependents, reaction)

    def _spawn_retry(self, retry: RetryDue) -> None:
        key = (retry.group, retry.node_name, retry.attempt)
        if self._nursery is None or key in self._retries_waiting:
            return
        self._retries_waiting.add(key)
        self._nursery.start_soon(self._retry, retry)

    async def _retry(self, retry: RetryDue) -> None:
        key = (retry.group, retry.node_name, retry.attempt)
        try:
            await self.clock.sleep_until(retry.at)
            job = self._fsm.jobs.get(retry.job_name)
            if job is None or self._draining:
                return
            ex = self._new_execution(
                job,
                retry.group,
                retry.node_name,
                retry.attempt,
                Trigger.RETRY,
                retry.scheduled_at,
            )
            [applied] = await self._launch([c.RunStarted(execution=ex)])
            if applied.error is None:
                self._dispatch(job, ex)
            else:
                logger.warning("retry of %s refused: %s", job.name, applied.error.message)
        except EngineClosed:
            pass
        finally:
            self._retries_waiting.discard(key)

    async def _run_dependents(self, due: DependentsDue) -> None:
        if self._draining:
            return
        commands: list[c.Command] = []
        runs: list[tuple[Job, Execution]] = []
        now = self.clock.now()
        for name in due.children:
            child = self._fsm.jobs.get(name)
            if child is None:
                continue
            targets = self._targets(child)
            reason = self._skip_reason(child, now, targets)
            if reason:
                self._note_skip(child.name, now, reason)
                continue
            gid = group_id(self.clock.now())
            for member in targets:
                ex = self._new_execution(child, gid, member.name, 1, Trigger.DEPENDENT, None)
                commands.append(c.RunStarted(execution=ex))
                runs.append((child, ex))
        commands.append(c.DependentsLaunched(group=due.group))
        try:
            results = await self._launch(commands)
        except EngineClosed:
            return
        for (child, ex), applied in zip(runs, results[: len(runs)], strict=True):
            if applied.error is None:
                self._dispatch(child, ex)

    def _note_skip(self, name: str, at: datetime, reason: str) -> None:
        self._counts["skipped"] += 1
        self._metrics.fires_skipped.labels(reason=reason.split(":")[0]).inc()
        self._publish(
            Event(
                kind=EventKind.FIRE_SKIPPED,
                at=at,
                job_name=name,
                data={"scheduled_at": at.isoformat(), "reason": reason},
            )
        )
        logger.info("job %s: fire at %s skipped: %s", name, at.isoformat(), reason)

    # -- internals: runner callbacks ------------------------------------------------------------
    def _on_output(self, execution: Execution, chunk: str) -> None:
        self._publish(
            Event(
                kind=EventKind.EXECUTION_OUTPUT,
                at=self.clock.now(),
                job_name=execution.job_name,
                execution=execution,
                chunk=chunk,
            )
        )

    def _on_run_start(self, execution: Execution, at: datetime) -> None:
        if execution.scheduled_at is not None and execution.trigger in (
            Trigger.SCHEDULE,
            Trigger.CATCHUP,
        ):
            late = (at - execution.scheduled_at).total_seconds()
            if execution.trigger == Trigger.SCHEDULE:
                self._metrics.lateness.observe(max(0.0, late))

    async def _report(self, finished: c.RunFinished) -> None:
        [applied] = await self._propose([finished])
        if applied.error is not None:
            logger.warning("result of %s refused: %s", finished.execution_id, applied.error.message)

    # -- internals: scheduling ----------------------------------------------------------------
    def _skip_reason(self, job: Job, at: datetime, targets: list[Member]) -> str:
        if job.disabled:
            return "disabled"
        if job.starts_at is not None and at < job.starts_at:
            return f"before starts_at {job.starts_at.isoformat()}"
        if job.expires_at is not None and at > job.expires_at:
            return f"expired at {job.expires_at.isoformat()}"
        if job.concurrency == Concurrency.FORBID and self._fsm.running_of(job.name):
            return "forbid: the previous run is still active"
        if not targets:
            return f"no target nodes: no alive member matches tags {describe_tags(job.tags)}"
        return ""

    async def _abandon_orphans(self) -> None:
        """Executions this node ran when it stopped are failed, never left running."""
        assert self._runner is not None
        orphans = [
            (ex.job_name, ex.id)
            for ex in self._fsm.running.values()
            if ex.node_name == self.node_name and not self._runner.is_active(ex.id)
        ]
        if not orphans:
            return
        logger.warning("marking %d executions interrupted by a restart as failed", len(orphans))
        await self._propose(
            [
                c.AbandonExecutions(
                    execution_ids=tuple(orphans),
                    finished_at=self.clock.now(),
                    reason=f"node {self.node_name} stopped while the execution was running",
                )
            ]
        )

    async def _plan_all_and_catch_up(self) -> None:
        """Plan every job; fires that fell while no scheduler ran are run once, late, if
        still inside the job's catch-up window, and recorded as missed otherwise."""
        now = self.clock.now()
        commands: list[c.Command] = []
        catchups: list[tuple[str, datetime]] = []
        for job in list(self._fsm.jobs.values()):
            if job.disabled or job.parent_job or not job.schedule:
                continue
            if self._fsm.schedule_of(job) is None:
                logger.warning(
                    "job %s has a schedule this version cannot parse (%r): it will not fire "
                    "until it is updated",
                    job.name,
                    job.schedule,
                )
                continue
            if job.next is None:  # exhausted or expired: nothing to plan
                continue
            if job.next > now:
                self._plan(job)
                continue
            missed: list[datetime] = []
            fire: datetime | None = job.next
            while fire is not None and fire <= now and len(missed) < MAX_MISSED_SCAN:
                missed.append(fire)
                fire = self._fsm.next_fire(job, fire)
            window_start = now - timedelta(seconds=job.catchup_window)
            late = [f for f in missed if f >= window_start] if job.catchup_window > 0 else []
            nxt = self._fsm.next_fire(job, now)
            lost = missed[: len(missed) - 1] if late else missed
            if lost:
                more = "+" if len(missed) >= MAX_MISSED_SCAN else ""
                reason = f"no scheduler was running{more}; " + (
                    f"one catch-up run covers the latest at {late[-1].isoformat()}"
                    if late
                    else f"outside the catch-up window of {int(job.catchup_window)}s"
                )
                commands.append(
                    self._fires_missed(job, lost, nxt if not late else job.next, now, reason)
                )
            if late:
                catchups.append((job.name, late[-1]))
        if commands:
            await self._propose(commands)
        if catchups:
            self._metrics.catchup_runs.inc(len(catchups))
            await self._fire([(name, at) for name, at in catchups], catchup=True)

    def _fires_missed(
        self, job: Job, fires: list[datetime], nxt: datetime | None, now: datetime, reason: str
    ) -> c.FiresMissed:
        """The command recording ``fires`` of ``job`` as missed, counted in the metrics."""
        self._counts["missed"] += len(fires)
        self._metrics.fires_missed.inc(len(fires))
        return c.FiresMissed(
            job_name=job.name,
            execution_id=self._new_execution(job, 0, self.node_name, 1, Trigger.SCHEDULE, None).id,
            first=fires[0],
            last=fires[-1],
            count=len(fires),
            next=nxt,
            recorded_at=now,
            node_name=self.node_name,
            reason=reason,
        )

    async def _schedule_loop(self) -> None:
        assert self._sched_scope is not None
        with self._sched_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._dispatch_forever, name="trickle dispatcher")
                await self._schedule_forever()

    async def _schedule_forever(self) -> None:
        """Wake when the earliest planned fire is LAUNCH_AHEAD_MIN away (or a held-back fire
        is due), commit the intents of the fires due within LAUNCH_AHEAD, and hand them to
        the dispatcher, which launches each at its scheduled instant."""
        while True:
            fire_at = self._planner.next_wakeup()
            wake = None if fire_at is None else fire_at - LAUNCH_AHEAD_MIN
            if self._deferred_heap and (wake is None or self._deferred_heap[0][0] < wake):
                wake = self._deferred_heap[0][0]
            self._wake_at = fire_at
            with trio.CancelScope() as scope:
                self._wake_scope = scope
                if wake is None:
                    await trio.sleep_forever()
                else:
                    await self.clock.sleep_until(wake)
            self._wake_scope = None
            now = self.clock.now()
            held = self._deferred_due(now)
            due = self._planner.due(now + LAUNCH_AHEAD, limit=MAX_FIRES_PER_BATCH)
            if held or due:
                await self._fire(held + due)

    def _deferred_due(self, now: datetime) -> list[tuple[str, datetime]]:
        """Held-back fires whose instant has come, if their job was not re-planned since."""
        out: list[tuple[str, datetime]] = []
        heap = self._deferred_heap
        while heap and heap[0][0] <= now:
            at, name = heapq.heappop(heap)
            if self._deferred.get(name) == at:
                del self._deferred[name]
                out.append((name, at))
        return out

    def _defer(self, name: str, at: datetime) -> None:
        """Decide the fire of ``name`` at ``at`` at its instant, not ahead."""
        self._deferred[name] = at
        heapq.heappush(self._deferred_heap, (at, name))
        if self._wake_scope is not None:
            self._wake_scope.cancel()

    async def _dispatch_forever(self) -> None:
        """Launch committed runs at their scheduled instants (all those due at once)."""
        while True:
            at = self._ahead[0][0] if self._ahead else None
            self._dispatch_at = at
            with trio.CancelScope() as scope:
                self._dispatch_scope = scope
                if at is None:
                    await trio.sleep_forever()
                else:
                    await self.clock.sleep_until(at)
            self._dispatch_scope = None
            now = self.clock.now()
            gone: list[Execution] = []
            while self._ahead and self._ahead[0][0] <= now:
                _at, _seq, name, ex = heapq.heappop(self._ahead)
                job = self._fsm.jobs.get(name)
                if job is None:
                    gone.append(ex)
                else:
                    self._launch_now(job, ex)
            if gone:
                self._nursery_start(
                    self._fail_intents,
                    gone,
                    "the job was deleted before the run's scheduled launch",
                )

    def _nursery_start(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    def _launch_now(self, job: Job, ex: Execution) -> None:
        """Dispatch a committed run, publishing its held-back start event first."""
        self._ahead_ids.discard(ex.id)
        event = self._started_events.pop(ex.id, None)
        if event is not None:
            self._publish(event)
        self._dispatch(job, ex)

    def _hold(self, ex: Execution) -> None:
        """Give the dispatcher a committed run to launch at its scheduled instant."""
        assert ex.scheduled_at is not None
        at = ex.scheduled_at
        self._ahead_seq += 1
        heapq.heappush(self._ahead, (at, self._ahead_seq, ex.job_name, ex))
        if self._dispatch_scope is not None and (
            self._dispatch_at is None or at < self._dispatch_at
        ):
            self._dispatch_scope.cancel()

    def _take_held(self) -> list[Execution]:
        """Remove and return every committed run still waiting for its instant."""
        held = [ex for _at, _seq, _name, ex in sorted(self._ahead)]
        self._ahead.clear()
        return held

    async def _fail_intents(self, executions: list[Execution], reason: str) -> None:
        """Record committed runs that will not be launched as failed, with ``reason``.
        Shielded and counted as a launch, so ``drain`` waits for it."""
        self._launching += 1
        try:
            logger.info("not launching %d committed runs: %s", len(executions), reason)
            for ex in executions:  # started (as committed), then finished with the reason
                self._ahead_ids.discard(ex.id)
                event = self._started_events.pop(ex.id, None)
                if event is not None:
                    self._publish(event)
            with trio.CancelScope(shield=True):
                await self._propose(
                    [
                        c.AbandonExecutions(
                            execution_ids=tuple((ex.job_name, ex.id) for ex in executions),
                            finished_at=self.clock.now(),
                            reason=reason,
                        )
                    ]
                )
        except EngineClosed:
            pass
        finally:
            self._launching -= 1
            if self._launching == 0:
                self._launch_idle.set()

    async def _fire(self, due: list[tuple[str, datetime]], *, catchup: bool = False) -> None:
        """Launch fires: one batch of commands; each run is dispatched once committed, at
        its scheduled instant if that is still ahead (launch ahead), else at once.

        A ``forbid`` job whose previous run is active is not decided ahead: its fire is
        held back and decided at its instant, as the previous run may end meanwhile.
        """
        now = self.clock.now()
        commands: list[c.Command] = []
        runs: list[tuple[Job, Execution]] = []
        for name, at in due:
            job = self._fsm.jobs.get(name)
            if job is None:
                continue
            if (
                at > now
                and job.concurrency == Concurrency.FORBID
                and self._fsm.running_of(job.name)
            ):
                self._defer(name, at)
                continue
            nxt = self._fsm.next_fire(job, max(at, now) if catchup else at)
            coalesced: list[datetime] = []
            while nxt is not None and nxt <= now and len(coalesced) < MAX_MISSED_SCAN:
                coalesced.append(nxt)  # the scheduler fell a whole period behind: no burst
                nxt = self._fsm.next_fire(job, nxt)
            targets = self._targets(job)
            reason = self._skip_reason(job, at, targets)
            if reason:
                commands.append(
                    c.FiresSkipped(job_name=name, scheduled_at=at, next=nxt, reason=reason)
                )
                self._counts["skipped"] += 1
                self._metrics.fires_skipped.labels(reason=reason.split(":")[0]).inc()
                logger.info("job %s: fire at %s skipped: %s", name, at.isoformat(), reason)
                continue
            if coalesced:
                logger.warning("job %s: %d fires missed (scheduler behind)", name, len(coalesced))
                reason = (
                    f"the scheduler fell behind; the run for {at.isoformat()} "
                    "started late and covers them"
                )
                commands.append(self._fires_missed(job, coalesced, nxt, now, reason))
            gid = group_id(self.clock.now())
            trigger = Trigger.CATCHUP if catchup else Trigger.SCHEDULE
            for i, member in enumerate(targets):
                ex = self._new_execution(job, gid, member.name, 1, trigger, at, start=at)
                if at > now:
                    self._ahead_ids.add(ex.id)
                commands.append(c.RunStarted(execution=ex, next=nxt, advance_next=i == 0))
                runs.append((job, ex))
            self._counts["fires"] += 1
            self._metrics.fires.inc()
        if not commands:
            return
        try:
            results = await self._launch(commands)
        except EngineClosed:
            self._ahead_ids.difference_update(ex.id for _job, ex in runs)
            return
        it = iter(runs)
        unlaunched: list[Execution] = []
        for command, applied in zip(commands, results, strict=True):
            if not isinstance(command, c.RunStarted):
                continue
            job, ex = next(it)
            if applied.error is None:
                if ex.id not in self._ahead_ids or _at_of(ex) <= self.clock.now():
                    self._launch_now(job, ex)
                elif self._draining:
                    unlaunched.append(ex)
                else:
                    self._hold(ex)
            else:
                self._ahead_ids.discard(ex.id)
                if isinstance(applied.error, TrickleError):
                    logger.info("job %s: run refused: %s", job.name, applied.error.message)
        if unlaunched:
            await self._fail_intents(unlaunched, self._drained_reason())

    def _drained_reason(self) -> str:
        return f"node {self.node_name} was drained before the run's scheduled launch"


def _at_of(ex: Execution) -> datetime:
    """The instant a run is launched at: its scheduled instant (runs launched ahead)."""
    return ex.scheduled_at or ex.started_at


def _local_address() -> str:
    """This host's address as others would reach it (blocking: call in a thread)."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    return (1, value)


def _parents_first(jobs: list[Job]) -> list[Job]:
    by_name = {j.name: j for j in jobs}
    ordered: list[Job] = []
    seen: set[str] = set()

    def visit(job: Job, stack: tuple[str, ...]) -> None:
        if job.name in seen:
            return
        if job.name in stack:
            raise ValidationError(f"parent cycle through {job.name}", field="parent_job")
        parent = by_name.get(job.parent_job)
        if parent is not None:
            visit(parent, (*stack, job.name))
        seen.add(job.name)
        ordered.append(job)

    for job in jobs:
        visit(job, ())
    return ordered


__all__ = ["Engine", "EngineStatistics", "JobQuery", "NoTargetNodes", "__version__"]
