"""trickle: a distributed, fault-tolerant cron for Trio, compatible with Dkron's API.

The public names below are imported lazily, on first use, so that ``trickle version`` and
the other client commands start without loading the engine, SQLAlchemy or Quart.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from trickle._version import __version__

_EXPORTS = {
    "Engine": "trickle.engine._engine",
    "EngineStatistics": "trickle.engine._engine",
    "JobQuery": "trickle.engine._engine",
    "NoTargetNodes": "trickle.engine.scheduler",
    "EngineConfig": "trickle.engine.config",
    "Event": "trickle.engine.events",
    "EventKind": "trickle.engine.events",
    "Subscription": "trickle.engine.events",
    "ExecutionContext": "trickle.engine.executors.base",
    "ExecutorResult": "trickle.engine.executors.base",
    "OutputBuffer": "trickle.engine.executors.base",
    "ProcessorContext": "trickle.engine.executors.base",
    "BusyExecution": "trickle.engine.model",
    "Concurrency": "trickle.engine.model",
    "DayStats": "trickle.engine.model",
    "Execution": "trickle.engine.model",
    "ExecutionStatus": "trickle.engine.model",
    "Job": "trickle.engine.model",
    "JobStatus": "trickle.engine.model",
    "Member": "trickle.engine.model",
    "Trigger": "trickle.engine.model",
    "ClusterAtCapacity": "trickle.errors",
    "ConcurrencyForbidden": "trickle.errors",
    "ConcurrencyLimitReached": "trickle.errors",
    "Conflict": "trickle.errors",
    "EngineClosed": "trickle.errors",
    "ExecutionNotFound": "trickle.errors",
    "ExecutionNotRunning": "trickle.errors",
    "JobDisabled": "trickle.errors",
    "JobHasDependents": "trickle.errors",
    "JobNotFound": "trickle.errors",
    "NotFound": "trickle.errors",
    "ParentNotFound": "trickle.errors",
    "PayloadTooLarge": "trickle.errors",
    "ScheduleError": "trickle.errors",
    "SubmissionsPaused": "trickle.errors",
    "TrickleError": "trickle.errors",
    "ValidationError": "trickle.errors",
    "tune_gc": "trickle.gctuning",
}

__all__ = [
    "BusyExecution",
    "ClusterAtCapacity",
    "Concurrency",
    "ConcurrencyForbidden",
    "ConcurrencyLimitReached",
    "Conflict",
    "DayStats",
    "Engine",
    "EngineClosed",
    "EngineConfig",
    "EngineStatistics",
    "Event",
    "EventKind",
    "Execution",
    "ExecutionContext",
    "ExecutionNotFound",
    "ExecutionNotRunning",
    "ExecutionStatus",
    "ExecutorResult",
    "Job",
    "JobDisabled",
    "JobHasDependents",
    "JobNotFound",
    "JobQuery",
    "JobStatus",
    "Member",
    "NoTargetNodes",
    "NotFound",
    "OutputBuffer",
    "ParentNotFound",
    "PayloadTooLarge",
    "ProcessorContext",
    "ScheduleError",
    "SubmissionsPaused",
    "Subscription",
    "TrickleError",
    "Trigger",
    "ValidationError",
    "__version__",
    "tune_gc",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trickle' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
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
    from trickle.engine.scheduler import NoTargetNodes
    from trickle.errors import (
        ClusterAtCapacity,
        ConcurrencyForbidden,
        ConcurrencyLimitReached,
        Conflict,
        EngineClosed,
        ExecutionNotFound,
        ExecutionNotRunning,
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
    from trickle.gctuning import tune_gc
