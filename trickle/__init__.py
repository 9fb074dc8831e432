"""trickle: a distributed, fault-tolerant cron for Trio, compatible with Dkron's API."""

from trickle._version import __version__
from trickle.engine._engine import Engine, EngineStatistics, JobQuery
from trickle.engine.config import EngineConfig
from trickle.engine.events import Event, EventKind, Subscription
from trickle.engine.executors.base import (
    ExecutionContext,
    ExecutorResult,
    OutputBuffer,
    ProcessorContext,
)
from trickle.engine.model import (
    BusyExecution,
    Concurrency,
    DayStats,
    Execution,
    ExecutionStatus,
    Job,
    JobStatus,
    Member,
    Trigger,
)
from trickle.errors import (
    ConcurrencyForbidden,
    Conflict,
    EngineClosed,
    ExecutionNotFound,
    JobDisabled,
    JobHasDependents,
    JobNotFound,
    NotFound,
    ParentNotFound,
    PayloadTooLarge,
    ScheduleError,
    SubmissionsPaused,
    TrickleError,
    ValidationError,
)

__all__ = [
    "BusyExecution", "Concurrency", "ConcurrencyForbidden", "Conflict", "DayStats",
    "Engine", "EngineClosed", "EngineConfig", "EngineStatistics", "Event", "EventKind",
    "Execution", "ExecutionContext", "ExecutionNotFound", "ExecutionStatus", "ExecutorResult",
    "Job", "JobDisabled", "JobHasDependents", "JobNotFound", "JobQuery", "JobStatus",
    "Member", "NotFound", "OutputBuffer", "ParentNotFound", "PayloadTooLarge",
    "ProcessorContext", "ScheduleError", "Subscription", "SubmissionsPaused", "Trigger",
    "TrickleError", "ValidationError", "__version__",
]
