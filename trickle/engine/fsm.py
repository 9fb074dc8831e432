"""The replicated state machine: applies committed commands, in log order, to the state.

Pure: no I/O, no clock, no randomness. Applying the same commands from the same state gives
the same state, the same effects (for the store) and the same reactions (for the leader).
A command that is refused (e.g. a put whose parent is missing) changes nothing: its result
is the error, and it has no effects.

State kept in memory: the jobs, the running executions, and the open execution groups (a
group is a run of one job on its target nodes, with retries; it closes when every node's
final attempt is known, and the job's status is computed then). Finished executions live
only in the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import msgpack

from trickle.engine import commands as c
from trickle.engine._replace import replace as _replace
from trickle.engine.events import Event, EventKind
from trickle.engine.model import (
    Concurrency,
    Execution,
    ExecutionId,
    ExecutionStatus,
    Job,
    JobStatus,
    Trigger,
)
from trickle.engine.schedule import Schedule, parse_schedule
from trickle.errors import (
    ClusterAtCapacity,
    ConcurrencyForbidden,
    ConcurrencyLimitReached,
    ExecutionNotRunning,
    JobHasDependents,
    JobNotFound,
    ParentNotFound,
    ScheduleError,
    TrickleError,
    ValidationError,
)

_MICRO = timedelta(microseconds=1)


@attrs.frozen(kw_only=True)
class RetryDue:
    """The leader should start attempt ``attempt`` of ``group`` on ``node_name`` at ``at``."""

    job_name: str
    group: int
    node_name: str
    attempt: int
    at: datetime
    scheduled_at: datetime | None


@attrs.frozen(kw_only=True)
class DependentsDue:
    """``parent`` finished a fully successful group: the leader runs its children."""

    parent: str
    children: tuple[str, ...]
    at: datetime
    group: int = 0  # the parent's group; ``DependentsLaunched(group)`` settles it


Reaction = RetryDue | DependentsDue


@attrs.frozen(kw_only=True)
class Applied:
    """The outcome of one command: its result (a value, or the error that refused it)."""

    result: Any = None
    error: TrickleError | None = None
    effects: list[c.Effect] = attrs.field(factory=list)
    events: list[Event] = attrs.field(factory=list)
    reactions: list[Reaction] = attrs.field(factory=list)


@attrs.define
class _NodeRun:
    """One node's share of a group: its latest attempt and where it stands."""

    state: str  # running | retrying | success | failed
    attempt: int
    retry_at: datetime | None = None


@attrs.define
class _Group:
    job_name: str
    scheduled_at: datetime | None
    trigger: str
    nodes: dict[str, _NodeRun] = attrs.field(factory=dict)

    def finished(self) -> bool:
        return all(n.state in ("success", "failed") for n in self.nodes.values())

    def status(self) -> JobStatus:
        states = {n.state for n in self.nodes.values()}
        if states == {"success"}:
            return JobStatus.SUCCESS
        if states == {"failed"}:
            return JobStatus.FAILED
        return JobStatus.PARTIALLY_FAILED


class StateMachine:
    """Jobs, running executions and open groups; see the module docstring."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.running: dict[ExecutionId, Execution] = {}
        self._running_by_job: dict[str, set[ExecutionId]] = {}
        self._groups: dict[int, _Group] = {}
        # each open group packed as export_meta writes it, kept across calls; a group
        # changed since (created, a node's state, closed) is in _groups_changed, packed again
        self._group_meta: dict[int, bytes] = {}
        self._groups_changed: set[int] = set()
        self._schedules: dict[str, Schedule] = {}
        self._pending_children: dict[int, DependentsDue] = {}
        self._children: dict[str, set[str]] = {}  # parent name -> its children's names
        self.applied_index = 0

    # -- restore -------------------------------------------------------------------------
    def restore(
        self,
        *,
        applied_index: int,
        jobs: Iterable[Job],
        running: Iterable[Execution],
        meta: bytes | None,
    ) -> None:
        """Load state persisted by the store (``meta`` is what ``export_meta`` gave)."""
        image = decode_meta(meta) or {}
        self.applied_index = applied_index
        self.jobs = {job.name: job for job in jobs}
        self._children = {}
        for job in self.jobs.values():
            if job.parent_job:
                self._children.setdefault(job.parent_job, set()).add(job.name)
        self.running = {}
        self._running_by_job = {}
        self._schedules = {}
        for execution in running:
            self._add_running(execution)
        self._groups = {}
        self._group_meta = {}
        self._groups_changed = set()
        for gid, raw in image.get("groups", {}).items():
            group = _Group(
                job_name=raw["job_name"],
                scheduled_at=_dt(raw.get("scheduled_at")),
                trigger=raw.get("trigger", "schedule"),
            )
            for node, n in raw["nodes"].items():
                group.nodes[node] = _NodeRun(
                    state=n["state"], attempt=n["attempt"], retry_at=_dt(n.get("retry_at"))
                )
            self._groups[int(gid)] = group
            self._groups_changed.add(int(gid))
        self._pending_children = {}
        for gid, raw in image.get("children", {}).items():
            due = DependentsDue(
                parent=raw["parent"],
                children=tuple(raw["children"]),
                at=_dt(raw["at"]) or datetime(1970, 1, 1, tzinfo=UTC),
                group=int(gid),
            )
            self._pending_children[int(gid)] = due

    def export_meta(self) -> bytes:
        """The part of the state the store does not hold in tables (open groups), packed
        (msgpack; ``restore`` reads it back, ``decode_meta`` shows it).

        Called after every applied batch, with hundreds of groups open at 1,000 fires/s:
        each group is packed once when it changes, and the image is those pieces joined
        under map headers (packing the whole map each batch was a tenth of the loop's CPU)."""
        cache = self._group_meta
        for gid in self._groups_changed:
            g = self._groups.get(gid)
            if g is None:
                cache.pop(gid, None)
            else:
                cache[gid] = _pack_group(gid, g)
        self._groups_changed.clear()
        children = {
            str(gid): {"parent": d.parent, "children": list(d.children), "at": _ts(d.at)}
            for gid, d in self._pending_children.items()
        }
        packer = msgpack.Packer()
        return b"".join(
            [
                packer.pack_map_header(2),
                packer.pack("groups"),
                packer.pack_map_header(len(self._groups)),
                *[cache[gid] for gid in self._groups],
                packer.pack("children"),
                packer.pack(children),
            ]
        )

    # -- queries (pure, used by the engine and the planner) --------------------------------
    def schedule_of(self, job: Job) -> Schedule | None:
        """The parsed schedule of a schedulable job (None: a child, no schedule, or one that
        no longer parses: jobs are validated when stored, so only a stored job from a version
        with a wider grammar can be in that case, and it then simply does not fire)."""
        if job.parent_job or not job.schedule:
            return None
        cached = self._schedules.get(job.name)
        if cached is not None and cached.spec == job.schedule:
            return cached
        try:
            schedule = parse_schedule(
                job.schedule, timezone=job.timezone, job_name=job.name, anchor=job.schedule_anchor
            )
        except ScheduleError:
            return None
        self._schedules[job.name] = schedule
        return schedule

    def next_fire(self, job: Job, after: datetime) -> datetime | None:
        """The job's first scheduled fire strictly after ``after``, within its window."""
        schedule = self.schedule_of(job)
        if schedule is None:
            return None
        if job.starts_at is not None and job.starts_at > after:
            after = job.starts_at - _MICRO
        nxt = schedule.next_after(after)
        if nxt is not None and job.expires_at is not None and nxt > job.expires_at:
            return None
        return nxt

    def running_of(self, job_name: str) -> list[Execution]:
        return [self.running[i] for i in self._running_by_job.get(job_name, ())]

    def pending_retries(self) -> list[RetryDue]:
        """Retries decided but not started (after a restart the engine starts them)."""
        out = []
        for gid, group in self._groups.items():
            for node, n in group.nodes.items():
                if n.state == "retrying" and n.retry_at is not None:
                    out.append(
                        RetryDue(
                            job_name=group.job_name,
                            group=gid,
                            node_name=node,
                            attempt=n.attempt + 1,
                            at=n.retry_at,
                            scheduled_at=group.scheduled_at,
                        )
                    )
        return out

    def pending_dependents(self) -> list[DependentsDue]:
        """Children due but not launched yet (after a restart the engine launches them)."""
        return list(self._pending_children.values())

    def dependents_of(self, name: str) -> tuple[str, ...]:
        return tuple(sorted(self._children.get(name, ())))

    def _link(self, child: str, old_parent: str, new_parent: str) -> None:
        if old_parent == new_parent:
            return
        if old_parent:
            kids = self._children.get(old_parent)
            if kids is not None:
                kids.discard(child)
                if not kids:
                    del self._children[old_parent]
        if new_parent:
            self._children.setdefault(new_parent, set()).add(child)

    # -- apply -----------------------------------------------------------------------------
    def apply(self, index: int, command: c.Command) -> Applied:
        """Apply one committed command. Never raises for a refused command."""
        if index <= self.applied_index:
            raise ValueError(f"command {index} already applied (at {self.applied_index})")
        self.applied_index = index
        return self._apply_one(command)

    def apply_entry(self, index: int, commands: Sequence[c.Command]) -> list[Applied]:
        """Apply the commands of one replicated log entry at ``index``, in order (none for
        a no-op or membership entry, which still advances ``applied_index``)."""
        self.begin_entry(index)
        return [self._apply_one(command) for command in commands]

    def begin_entry(self, index: int) -> None:
        """Start applying the entry at ``index``: its commands follow, in order, through
        ``apply_command`` (``apply_entry`` in pieces, for a caller that lets other tasks
        run between two commands of a long entry)."""
        if index <= self.applied_index:
            raise ValueError(f"entry {index} already applied (at {self.applied_index})")
        self.applied_index = index

    def apply_command(self, command: c.Command) -> Applied:
        """Apply the next command of the entry begun by ``begin_entry``."""
        return self._apply_one(command)

    def _apply_one(self, command: c.Command) -> Applied:
        handler = _HANDLERS[type(command)]
        try:
            return handler(self, command)
        except TrickleError as exc:
            return Applied(error=exc)

    def _put_job(self, cmd: c.PutJob) -> Applied:
        job, now = cmd.job, cmd.now
        if job.parent_job:
            if job.parent_job not in self.jobs:
                raise ParentNotFound(job.parent_job)
            self._check_cycle(job.name, job.parent_job)
        old = self.jobs.get(job.name)
        created = old is None
        if old is not None:
            schedule_changed = (old.schedule, old.timezone, old.parent_job) != (
                job.schedule,
                job.timezone,
                job.parent_job,
            )
            anchor = now if schedule_changed else old.schedule_anchor
            merged = attrs.evolve(
                job,
                success_count=max(old.success_count, job.success_count),
                error_count=max(old.error_count, job.error_count),
                last_success=_later(old.last_success, job.last_success),
                last_error=_later(old.last_error, job.last_error),
                status=old.status or job.status,
                missed_count=old.missed_count,
                skipped_count=old.skipped_count,
                last_skipped=old.last_skipped,
                last_skip_reason=old.last_skip_reason,
                schedule_anchor=anchor,
                created_at=old.created_at or now,
                updated_at=now,
                dependent_jobs=self.dependents_of(job.name),
            )
        else:
            schedule_changed = True
            merged = attrs.evolve(
                job,
                schedule_anchor=now,
                created_at=now,
                updated_at=now,
                missed_count=0,
                skipped_count=0,
                last_skipped=None,
                last_skip_reason="",
                dependent_jobs=self.dependents_of(job.name),
            )
        self._schedules.pop(job.name, None)
        window_changed = old is None or (old.starts_at, old.expires_at, old.disabled) != (
            merged.starts_at,
            merged.expires_at,
            merged.disabled,
        )
        if schedule_changed or window_changed or old is None or old.next is None:
            nxt = self.next_fire(merged, now)
        else:
            nxt = old.next
        merged = attrs.evolve(merged, next=nxt)
        self.jobs[job.name] = merged
        self._link(job.name, old.parent_job if old else "", merged.parent_job)
        effects: list[c.Effect] = [c.JobSaved(merged)]
        effects += self._relink_parents(old.parent_job if old else "", merged.parent_job)
        kind = EventKind.JOB_CREATED if created else EventKind.JOB_UPDATED
        return Applied(
            result=(merged, created),
            effects=effects,
            events=[Event(kind=kind, at=now, job_name=job.name, job=merged)],
        )

    def _check_cycle(self, name: str, parent: str) -> None:
        seen = {name}
        cur: str = parent
        while cur:
            if cur in seen:
                raise ValidationError(
                    f"parent_job {parent} would make a cycle through {name}", field="parent_job"
                )
            seen.add(cur)
            nxt = self.jobs.get(cur)
            cur = nxt.parent_job if nxt is not None else ""

    def _relink_parents(self, old_parent: str, new_parent: str) -> list[c.Effect]:
        effects: list[c.Effect] = []
        for parent in {old_parent, new_parent} - {""}:
            job = self.jobs.get(parent)
            if job is None:
                continue
            deps = self.dependents_of(parent)
            if deps != job.dependent_jobs:
                job = attrs.evolve(job, dependent_jobs=deps)
                self.jobs[parent] = job
                effects.append(c.JobSaved(job))
        return effects

    def _delete_job(self, cmd: c.DeleteJob) -> Applied:
        job = self.jobs.get(cmd.name)
        if job is None:
            raise JobNotFound(cmd.name)
        deps = self.dependents_of(cmd.name)
        if deps:
            raise JobHasDependents(cmd.name, list(deps))
        del self.jobs[cmd.name]
        self._link(cmd.name, job.parent_job, "")
        self._schedules.pop(cmd.name, None)
        for gid in [g for g, grp in self._groups.items() if grp.job_name == cmd.name]:
            del self._groups[gid]
            self._groups_changed.add(gid)
        effects: list[c.Effect] = [c.JobRemoved(cmd.name)]
        effects += self._relink_parents(job.parent_job, "")
        return Applied(
            result=job,
            effects=effects,
            events=[Event(kind=EventKind.JOB_DELETED, at=cmd.now, job_name=job.name, job=job)],
        )

    def _toggle_job(self, cmd: c.ToggleJob) -> Applied:
        job = self.jobs.get(cmd.name)
        if job is None:
            raise JobNotFound(cmd.name)
        job = attrs.evolve(job, disabled=not job.disabled, updated_at=cmd.now)
        if not job.disabled:
            # Enabling starts from now: fires while disabled are not missed fires.
            job = attrs.evolve(job, next=self.next_fire(job, cmd.now))
        self.jobs[cmd.name] = job
        return Applied(
            result=job,
            effects=[c.JobSaved(job)],
            events=[Event(kind=EventKind.JOB_TOGGLED, at=cmd.now, job_name=job.name, job=job)],
        )

    def _run_started(self, cmd: c.RunStarted) -> Applied:
        ex = cmd.execution
        job = self.jobs.get(ex.job_name)
        if job is None:
            raise JobNotFound(ex.job_name)
        effects: list[c.Effect] = []
        if cmd.advance_next and job.next != cmd.next:
            job = _replace(job, next=cmd.next)
            self.jobs[job.name] = job
            effects.append(c.JobSaved(job))
        if ex.id in self.running:
            return Applied(result=self.running[ex.id], effects=effects)  # a duplicate
        if job.concurrency == Concurrency.FORBID:
            others = [e for e in self.running_of(job.name) if e.group != ex.group]
            if others:
                return Applied(error=ConcurrencyForbidden(job.name), effects=effects)
        full: ConcurrencyLimitReached | ClusterAtCapacity | None = None
        if job.concurrency_limit and len(self.running_of(job.name)) >= job.concurrency_limit:
            full = ConcurrencyLimitReached(job.name, job.concurrency_limit)
        elif cmd.cap and len(self.running) >= cmd.cap:
            full = ClusterAtCapacity(cmd.cap)
        if full is not None:
            return self._refused_full(job, cmd, full, effects)
        self._add_running(ex)
        group = self._groups.get(ex.group)
        if group is None:
            group = _Group(job_name=job.name, scheduled_at=ex.scheduled_at, trigger=str(ex.trigger))
            self._groups[ex.group] = group
        group.nodes[ex.node_name] = _NodeRun(state="running", attempt=ex.attempt)
        self._groups_changed.add(ex.group)
        effects.append(c.ExecutionSaved(ex))
        return Applied(
            result=ex,
            effects=effects,
            events=[
                Event(
                    kind=EventKind.EXECUTION_STARTED,
                    at=ex.started_at,
                    job_name=job.name,
                    execution=ex,
                )
            ],
        )

    def _refused_full(
        self,
        job: Job,
        cmd: c.RunStarted,
        error: ConcurrencyLimitReached | ClusterAtCapacity,
        effects: list[c.Effect],
    ) -> Applied:
        """A run refused by a concurrency limit it raced past: a scheduled fire's first
        run records the fire as skipped with the reason, as the leader would have."""
        ex = cmd.execution
        if not (cmd.advance_next and ex.scheduled_at is not None):
            return Applied(error=error, effects=effects)
        reason = f"concurrency: {error.message}"
        job = attrs.evolve(
            self.jobs[job.name],
            skipped_count=job.skipped_count + 1,
            last_skipped=ex.scheduled_at,
            last_skip_reason=reason,
        )
        self.jobs[job.name] = job
        event = Event(
            kind=EventKind.FIRE_SKIPPED,
            at=ex.scheduled_at,
            job_name=job.name,
            data={"scheduled_at": ex.scheduled_at.isoformat(), "reason": reason},
        )
        return Applied(error=error, effects=[*effects, c.JobSaved(job)], events=[event])

    def _run_finished(self, cmd: c.RunFinished) -> Applied:
        ex = self.running.get(cmd.execution_id)
        if ex is None:
            raise ExecutionNotRunning(cmd.job_name, cmd.execution_id)
        return self._finish(ex, cmd.finished_at, cmd.success, cmd.output, cmd.exit_code)

    def _finish(
        self,
        ex: Execution,
        finished_at: datetime,
        success: bool,
        output: str,
        exit_code: int | None,
    ) -> Applied:
        self._remove_running(ex.id)
        final = _replace(
            ex,
            finished_at=finished_at,
            success=success,
            output=output,
            exit_code=exit_code,
            status=ExecutionStatus.SUCCESS if success else ExecutionStatus.FAILED,
        )
        event = Event(
            kind=EventKind.EXECUTION_FINISHED,
            at=finished_at,
            job_name=ex.job_name,
            execution=final,
        )
        job = self.jobs.get(ex.job_name)
        group = self._groups.get(ex.group)
        self._groups_changed.add(ex.group)  # its node's state changes, or it closes
        if job is None:  # deleted while it ran: its history went with it
            self._groups.pop(ex.group, None)
            return Applied(result=final, events=[event])
        day = datetime(finished_at.year, finished_at.month, finished_at.day, tzinfo=UTC)
        changes: dict[str, Any]  # to the job, applied at once (evolve re-runs converters)
        if success:
            changes = {
                "success_count": job.success_count + 1,
                "last_success": _later(job.last_success, finished_at),
            }
            stats = c.StatsAdded(day, 1, 0)
        else:
            changes = {
                "error_count": job.error_count + 1,
                "last_error": _later(job.last_error, finished_at),
            }
            stats = c.StatsAdded(day, 0, 1)
        effects: list[c.Effect] = [c.ExecutionSaved(final)]
        reactions: list[Reaction] = []
        if group is None:
            group = _Group(job_name=job.name, scheduled_at=ex.scheduled_at, trigger="")
            self._groups[ex.group] = group
        node = group.nodes.setdefault(ex.node_name, _NodeRun(state="running", attempt=ex.attempt))
        if not success and ex.attempt <= job.retries:
            retry_at = finished_at + timedelta(seconds=job.retry_interval)
            node.state, node.attempt, node.retry_at = "retrying", ex.attempt, retry_at
            reactions.append(
                RetryDue(
                    job_name=job.name,
                    group=ex.group,
                    node_name=ex.node_name,
                    attempt=ex.attempt + 1,
                    at=retry_at,
                    scheduled_at=group.scheduled_at,
                )
            )
        else:
            node.state, node.attempt, node.retry_at = (
                "success" if success else "failed",
                ex.attempt,
                None,
            )
        events = [event]
        finished = group.finished()
        if finished:
            changes["status"] = group.status()
            del self._groups[ex.group]
        job = _replace(job, **changes)
        if finished:
            if job.status == JobStatus.SUCCESS:
                deps = self.dependents_of(job.name)
                if deps:
                    due = DependentsDue(
                        parent=job.name, children=deps, at=finished_at, group=ex.group
                    )
                    self._pending_children[ex.group] = due
                    reactions.append(due)
                elif job.ephemeral:
                    # An ephemeral job is deleted after its first fully successful run.
                    self.jobs.pop(job.name, None)
                    self._link(job.name, job.parent_job, "")
                    self._schedules.pop(job.name, None)
                    effects += [stats, c.JobRemoved(job.name)]
                    effects += self._relink_parents(job.parent_job, "")
                    events.append(
                        Event(
                            kind=EventKind.JOB_DELETED,
                            at=finished_at,
                            job_name=job.name,
                            job=job,
                            data={"reason": "ephemeral"},
                        )
                    )
                    return Applied(
                        result=final, effects=effects, events=events, reactions=reactions
                    )
        self.jobs[job.name] = job
        effects += [c.JobSaved(job), stats]
        return Applied(result=final, effects=effects, events=events, reactions=reactions)

    def _fires_skipped(self, cmd: c.FiresSkipped) -> Applied:
        job = self.jobs.get(cmd.job_name)
        if job is None:
            raise JobNotFound(cmd.job_name)
        job = attrs.evolve(
            job,
            next=cmd.next,
            skipped_count=job.skipped_count + 1,
            last_skipped=cmd.scheduled_at,
            last_skip_reason=cmd.reason,
        )
        self.jobs[job.name] = job
        return Applied(
            effects=[c.JobSaved(job)],
            events=[
                Event(
                    kind=EventKind.FIRE_SKIPPED,
                    at=cmd.scheduled_at,
                    job_name=job.name,
                    data={"scheduled_at": cmd.scheduled_at.isoformat(), "reason": cmd.reason},
                )
            ],
        )

    def _fires_missed(self, cmd: c.FiresMissed) -> Applied:
        job = self.jobs.get(cmd.job_name)
        if job is None:
            raise JobNotFound(cmd.job_name)
        if cmd.count == 1:
            text = f"trickle: the fire at {cmd.first.isoformat()} was missed: {cmd.reason}"
        else:
            text = (
                f"trickle: {cmd.count} fires from {cmd.first.isoformat()} to "
                f"{cmd.last.isoformat()} were missed: {cmd.reason}"
            )
        record = Execution(
            id=cmd.execution_id,
            job_name=job.name,
            node_name=cmd.node_name,
            group=_group_of(cmd.execution_id),
            started_at=cmd.recorded_at,
            finished_at=cmd.recorded_at,
            success=False,
            output=text,
            status=ExecutionStatus.MISSED,
            trigger=Trigger.SCHEDULE,
            scheduled_at=cmd.first,
        )
        job = attrs.evolve(job, next=cmd.next, missed_count=job.missed_count + cmd.count)
        self.jobs[job.name] = job
        return Applied(
            result=record,
            effects=[c.ExecutionSaved(record), c.JobSaved(job)],
            events=[
                Event(
                    kind=EventKind.FIRE_MISSED,
                    at=cmd.recorded_at,
                    job_name=job.name,
                    execution=record,
                    data={"count": cmd.count, "reason": cmd.reason},
                )
            ],
        )

    def _dependents_launched(self, cmd: c.DependentsLaunched) -> Applied:
        self._pending_children.pop(cmd.group, None)
        return Applied()

    def _delete_executions(self, cmd: c.DeleteExecutions) -> Applied:
        job = self.jobs.get(cmd.job_name)
        if job is None:
            raise JobNotFound(cmd.job_name)
        job = attrs.evolve(
            job,
            success_count=0,
            error_count=0,
            last_success=None,
            last_error=None,
            missed_count=0,
            skipped_count=0,
            last_skipped=None,
            last_skip_reason="",
        )
        self.jobs[job.name] = job
        effects: list[c.Effect] = [c.ExecutionsRemoved(job.name), c.JobSaved(job)]
        # Running executions keep their record: they are still running.
        effects += [c.ExecutionSaved(e) for e in self.running_of(job.name)]
        return Applied(result=job, effects=effects)

    def _abandon(self, cmd: c.AbandonExecutions) -> Applied:
        merged = Applied(result=[])
        for _job_name, exec_id in cmd.execution_ids:
            ex = self.running.get(exec_id)
            if ex is None:
                continue
            output = ex.output + ("\n" if ex.output else "") + f"trickle: {cmd.reason}"
            one = self._finish(ex, cmd.finished_at, False, output, None)
            merged.result.append(one.result)
            merged.effects.extend(one.effects)
            merged.events.extend(one.events)
            merged.reactions.extend(one.reactions)
        return merged

    # -- bookkeeping -------------------------------------------------------------------------
    def _add_running(self, ex: Execution) -> None:
        self.running[ex.id] = ex
        self._running_by_job.setdefault(ex.job_name, set()).add(ex.id)

    def _remove_running(self, exec_id: ExecutionId) -> None:
        ex = self.running.pop(exec_id, None)
        if ex is None:
            return
        ids = self._running_by_job.get(ex.job_name)
        if ids is not None:
            ids.discard(exec_id)
            if not ids:
                del self._running_by_job[ex.job_name]


_HANDLERS: dict[type, Any] = {
    c.PutJob: StateMachine._put_job,
    c.DeleteJob: StateMachine._delete_job,
    c.ToggleJob: StateMachine._toggle_job,
    c.RunStarted: StateMachine._run_started,
    c.RunFinished: StateMachine._run_finished,
    c.FiresSkipped: StateMachine._fires_skipped,
    c.FiresMissed: StateMachine._fires_missed,
    c.DependentsLaunched: StateMachine._dependents_launched,
    c.DeleteExecutions: StateMachine._delete_executions,
    c.AbandonExecutions: StateMachine._abandon,
}


def decode_meta(raw: bytes | None) -> dict[str, Any] | None:
    """An image of ``StateMachine.export_meta`` as plain maps (None: nothing stored)."""
    if not raw:
        return None
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)  # type: ignore[no-any-return]


def _pack_group(gid: int, g: _Group) -> bytes:
    """One entry of export_meta's "groups" map: the packed key and value."""
    meta = {
        "job_name": g.job_name,
        "scheduled_at": _ts(g.scheduled_at),
        "trigger": g.trigger,
        "nodes": {
            node: {"state": n.state, "attempt": n.attempt, "retry_at": _ts(n.retry_at)}
            for node, n in g.nodes.items()
        },
    }
    return msgpack.packb(str(gid)) + msgpack.packb(meta)  # type: ignore[no-any-return]


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _ts(value: datetime | None) -> int | None:
    if value is None:
        return None
    return (value - datetime(1970, 1, 1, tzinfo=UTC)) // _MICRO


def _dt(value: int | None) -> datetime | None:
    if value is None:
        return None
    return datetime(1970, 1, 1, tzinfo=UTC) + value * _MICRO


def _group_of(exec_id: str) -> int:
    head = exec_id.split("-", 1)[0]
    return int(head) if head.isdigit() else 0
