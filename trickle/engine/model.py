"""Jobs, executions and the other values the engine works with. Pure data, no formats.

Times are timezone-aware ``datetime`` in UTC. Durations are ``float`` seconds.
JSON field names live in ``trickle.http.schemas``; SQL tables in ``trickle.engine.store``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import NewType

import attrs

ExecutionId = NewType("ExecutionId", str)

DEFAULT_CATCHUP_WINDOW = 3600.0  # seconds a missed fire may still run late
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Concurrency(enum.StrEnum):
    ALLOW = "allow"
    FORBID = "forbid"


class JobStatus(enum.StrEnum):
    """Outcome of a job's latest finished execution group ('' = never ran)."""

    UNTRIGGERED = ""
    SUCCESS = "success"
    FAILED = "failed"
    PARTIALLY_FAILED = "partially_failed"


class ExecutionStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    MISSED = "missed"  # a fire that fell while no scheduler ran, outside the catch-up window


class Trigger(enum.StrEnum):
    """Why an execution was started."""

    SCHEDULE = "schedule"
    CATCHUP = "catchup"  # a missed fire run late, inside the catch-up window
    MANUAL = "manual"
    RETRY = "retry"
    DEPENDENT = "dependent"


def _frozen_dict(value: Mapping[str, str] | None) -> dict[str, str]:
    return dict(value or {})


def _str_tuple(value: Iterable[str] | None) -> tuple[str, ...]:
    return tuple(value or ())


def _frozen_processors(
    value: Mapping[str, Mapping[str, str]] | None,
) -> dict[str, dict[str, str]]:
    return {k: dict(v) for k, v in (value or {}).items()}


@attrs.frozen(kw_only=True)
class Job:
    """A job as stored: Dkron's fields with their defaults, plus trickle's own.

    The counters, ``status``, ``last_*``, ``next`` and ``dependent_jobs`` are maintained by
    the engine; a put preserves them (Dkron's full-replace semantics).
    """

    name: str
    displayname: str = ""
    schedule: str = ""
    timezone: str = ""
    owner: str = ""
    owner_email: str = ""
    disabled: bool = False
    tags: dict[str, str] = attrs.field(factory=dict, converter=_frozen_dict)
    metadata: dict[str, str] = attrs.field(factory=dict, converter=_frozen_dict)
    concurrency: Concurrency = attrs.field(default=Concurrency.ALLOW, converter=Concurrency)
    executor: str = ""
    executor_config: dict[str, str] = attrs.field(factory=dict, converter=_frozen_dict)
    processors: dict[str, dict[str, str]] = attrs.field(factory=dict, converter=_frozen_processors)
    retries: int = 0
    parent_job: str = ""
    dependent_jobs: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    ephemeral: bool = False
    starts_at: datetime | None = None
    expires_at: datetime | None = None
    success_count: int = 0
    error_count: int = 0
    last_success: datetime | None = None
    last_error: datetime | None = None
    status: JobStatus = attrs.field(default=JobStatus.UNTRIGGERED, converter=JobStatus)
    next: datetime | None = None
    # trickle's own fields
    retry_interval: float = 0.0  # seconds between a failed attempt and its retry
    catchup_window: float = DEFAULT_CATCHUP_WINDOW  # seconds; 0 disables catch-up
    concurrency_limit: int = 0  # runs of this job at once across the cluster (0: no limit)
    schedule_anchor: datetime | None = None  # phase of `@every`: when the schedule was set
    missed_count: int = 0  # fires recorded as missed
    skipped_count: int = 0  # fires not run (no target node, forbid, window, disabled)
    last_skipped: datetime | None = None  # the scheduled time of the latest skipped fire
    last_skip_reason: str = ""  # why it was skipped
    created_at: datetime | None = None
    updated_at: datetime | None = None


@attrs.frozen(kw_only=True)
class Execution:
    """One attempt of one job on one node. ``finished_at is None`` while it runs."""

    id: ExecutionId
    job_name: str
    node_name: str
    group: int
    started_at: datetime
    attempt: int = 1
    finished_at: datetime | None = None
    success: bool = False
    output: str = ""
    exit_code: int | None = None
    status: ExecutionStatus = attrs.field(
        default=ExecutionStatus.RUNNING, converter=ExecutionStatus
    )
    trigger: Trigger = attrs.field(default=Trigger.SCHEDULE, converter=Trigger)
    scheduled_at: datetime | None = None  # the fire this run belongs to (None: manual)

    @property
    def running(self) -> bool:
        return self.finished_at is None


def unix_nanos(at: datetime) -> int:
    """An aware instant in Unix nanoseconds, exactly (no float on the way)."""
    delta = at - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def execution_id(started_at: datetime, node_name: str) -> ExecutionId:
    """Dkron's execution key: ``<started_at in Unix nanoseconds>-<node name>``."""
    return ExecutionId(f"{unix_nanos(started_at)}-{node_name}")


def group_id(at: datetime) -> int:
    """Dkron's execution group: the dispatch time in Unix nanoseconds."""
    return unix_nanos(at)


@attrs.frozen(kw_only=True)
class DayStats:
    """Executions finished on one UTC day."""

    date: datetime  # midnight UTC
    success_count: int = 0
    failed_count: int = 0


@attrs.frozen(kw_only=True)
class Member:
    """A node of the cluster as gossip sees it (one node until the cluster issue)."""

    name: str
    addr: str
    port: int
    tags: dict[str, str] = attrs.field(factory=dict, converter=_frozen_dict)
    status: str = "alive"  # alive, leaving, left, failed


@attrs.frozen(kw_only=True)
class RaftPeer:
    """A server of the Raft configuration, as ``trickle raft list-peers`` shows it.

    address: its Raft/RPC listener ("host:port"; "" when this server does not know it).
    voter: False for a learner (catching up before promotion).
    leader: it is the current leader.
    match_index: the last log index known replicated on it (the leader's view; None on
        a follower, which does not track it).
    """

    name: str
    address: str
    voter: bool
    leader: bool
    match_index: int | None = None


@attrs.frozen(kw_only=True)
class BusyExecution:
    """An execution this node runs or holds in its queue."""

    execution: Execution
    queued: bool
    output_tail: str = ""


def utcnow_from(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)
