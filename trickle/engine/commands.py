"""Commands: every change of replicated state, as applied by the state machine (``fsm``).

A command is proposed, committed to the log (on one node: the store; later: Raft), then
applied in log order by ``StateMachine.apply`` on every server. Commands carry every input
the state machine needs, time included, so applying the same log gives the same state.
"""

from __future__ import annotations

from datetime import datetime

import attrs

from trickle.engine.model import Execution, ExecutionId, Job


@attrs.frozen(kw_only=True)
class PutJob:
    """Create or fully replace a job (Dkron semantics; counters and status preserved)."""

    job: Job
    now: datetime


@attrs.frozen(kw_only=True)
class DeleteJob:
    name: str
    now: datetime


@attrs.frozen(kw_only=True)
class ToggleJob:
    name: str
    now: datetime


@attrs.frozen(kw_only=True)
class RunStarted:
    """The launch intent of one run on one node, committed before the run is dispatched.

    ``next`` is the job's next fire after this one (scheduled runs only), so the persisted
    schedule position always says what the scheduler has launched. ``cap`` is the
    cluster's ``max_running`` the leader decided under (0: none): the state machine
    refuses the run when that many already run, and a job's ``concurrency_limit`` too.
    """

    execution: Execution
    next: datetime | None = None
    advance_next: bool = False
    cap: int = 0


@attrs.frozen(kw_only=True)
class RunFinished:
    job_name: str
    execution_id: ExecutionId
    finished_at: datetime
    success: bool
    output: str
    exit_code: int | None = None


@attrs.frozen(kw_only=True)
class FiresSkipped:
    """A fire that was not run (no target node, forbid, starts_at, expires_at,
    disabled...): moves the job's schedule position and counts it in the job
    (``skipped_count``, ``last_skipped``, ``last_skip_reason``); nothing is recorded in
    the history."""

    job_name: str
    scheduled_at: datetime
    next: datetime | None
    reason: str


@attrs.frozen(kw_only=True)
class FiresMissed:
    """Fires that fell while no scheduler ran and are past the catch-up window.

    Recorded visibly: one history record with status ``missed`` covering them all.
    """

    job_name: str
    execution_id: ExecutionId
    first: datetime
    last: datetime
    count: int
    next: datetime | None
    recorded_at: datetime
    node_name: str
    reason: str


@attrs.frozen(kw_only=True)
class DependentsLaunched:
    """The children due after parent group ``group`` succeeded have been launched (or
    skipped); proposed in the same batch as their ``RunStarted``s."""

    group: int


@attrs.frozen(kw_only=True)
class DeleteExecutions:
    """Delete a job's whole history and reset its counters (Dkron v4.1)."""

    job_name: str


@attrs.frozen(kw_only=True)
class AbandonExecutions:
    """Mark running executions failed: their node died or restarted while they ran."""

    execution_ids: tuple[tuple[str, ExecutionId], ...]  # (job name, execution id)
    finished_at: datetime
    reason: str


Command = (
    PutJob
    | DeleteJob
    | ToggleJob
    | RunStarted
    | RunFinished
    | FiresSkipped
    | FiresMissed
    | DependentsLaunched
    | DeleteExecutions
    | AbandonExecutions
)

COMMAND_TYPES: tuple[type, ...] = (
    PutJob,
    DeleteJob,
    ToggleJob,
    RunStarted,
    RunFinished,
    FiresSkipped,
    FiresMissed,
    DependentsLaunched,
    DeleteExecutions,
    AbandonExecutions,
)


# Effects: what applying a command changed, for the store to persist in one transaction.


@attrs.frozen
class JobSaved:
    job: Job


@attrs.frozen
class JobRemoved:
    name: str


@attrs.frozen
class ExecutionSaved:
    """Insert or replace one execution record; the store then prunes the job's history."""

    execution: Execution


@attrs.frozen
class ExecutionsRemoved:
    job_name: str


@attrs.frozen
class StatsAdded:
    day: datetime  # midnight UTC
    success: int
    failed: int


Effect = JobSaved | JobRemoved | ExecutionSaved | ExecutionsRemoved | StatsAdded


def coalesce_effects(effects: list[Effect]) -> list[Effect]:
    """The same store changes with repeated saves dropped: only the last save of a job or
    of an execution is kept (at its place), and the stats of a day are added up once, at
    the end. Storing the result leaves the store exactly as storing ``effects`` would."""
    last_job: dict[str, int] = {}
    last_execution: dict[str, int] = {}
    for i, effect in enumerate(effects):
        if isinstance(effect, JobSaved):
            last_job[effect.job.name] = i
        elif isinstance(effect, ExecutionSaved):
            last_execution[effect.execution.id] = i
    out: list[Effect] = []
    stats: dict[datetime, list[int]] = {}
    for i, effect in enumerate(effects):
        if isinstance(effect, JobSaved):
            if last_job[effect.job.name] == i:
                out.append(effect)
        elif isinstance(effect, ExecutionSaved):
            if last_execution[effect.execution.id] == i:
                out.append(effect)
        elif isinstance(effect, StatsAdded):
            day = stats.setdefault(effect.day, [0, 0])
            day[0] += effect.success
            day[1] += effect.failed
        else:
            out.append(effect)
    out.extend(StatsAdded(day, s, f) for day, (s, f) in stats.items())
    return out
