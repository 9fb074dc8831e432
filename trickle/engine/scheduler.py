"""The leader's scheduling decisions: what is due, where each fire runs, what is recorded. Pure.

The Engine's Trio loop drives a ``Scheduler`` while its server leads, and so does the
whole-cluster simulation (``trickle.testing.clustersim``): no clock, no I/O, no logging;
``now`` and a seeded ``random.Random`` come from the caller.

One round: ``due(now)`` pops the fires due, ``decide(due, now, members)`` turns them into
one batch of commands (run intents, skipped and missed records) that the caller proposes
as one log entry fenced by its term; each ``RunStarted`` applied without error is then
dispatched, at its scheduled instant when that is still ahead (launch ahead). A new leader
first proposes what ``catch_up(now)`` returns, then decides its late fires with
``catchup=True``.

Admission under overload (``max_lateness``, off by default): a fire decided more than
``max_lateness`` after its instant while the job's next fire is already due too (the
scheduler fell a whole period behind it) is not run: one ``FiresMissed`` records it and
the fires after it up to now, with the reason, and the job goes on from its next fire
to come. A leader offered more fires than it can run thus runs what it can near their
instant and records the rest, instead of committing a growing pile of late run
intents (each a dispatch, an executor call and a result to commit) that leaves every
run late. Catch-up runs after a failover are never shed (they are late by design).

Concurrency: ``forbid`` (no second run of a job while one runs), a job's
``concurrency_limit`` (runs of the job at once, across the cluster) and the cluster's
``max_running`` (runs at once, all jobs). They count the runs the state machine holds
running plus the intents decided but not yet applied (``settle`` releases those); the
state machine checks the same limits again when it applies an intent, so two decisions
racing cannot both pass.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from trickle.engine import commands as c
from trickle.engine.fsm import DependentsDue, RetryDue, StateMachine
from trickle.engine.model import (
    Concurrency,
    Execution,
    Job,
    Member,
    Trigger,
    execution_id,
    group_id,
)
from trickle.engine.planner import Planner
from trickle.engine.targets import describe_tags, select_targets
from trickle.errors import (
    ClusterAtCapacity,
    ConcurrencyForbidden,
    ConcurrencyLimitReached,
    JobDisabled,
    NotFound,
)

MAX_MISSED_SCAN = 100_000  # fires enumerated when counting missed ones
_MICRO = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _seconds(delta: timedelta | None) -> str:
    """``delta`` in seconds, without a needless fraction (1.5, 2)."""
    return "-" if delta is None else f"{delta.total_seconds():g}"


class NoTargetNodes(NotFound):
    def __init__(self, name: str, tags: Mapping[str, str]) -> None:
        super().__init__(f"no target nodes found to run job {name} (tags {describe_tags(tags)})")


class ExecutionIds:
    """New execution records with unique ids (``<start nanos>-<node>``) and unique groups.

    A run started now starts at ``now`` (moved on by a microsecond if another run of this
    leader took that instant); a fire launched ahead starts at its scheduled instant (the
    same rule). Every group (one fire, one manual run, one set of dependents) gets its own
    id, later than the previous one, even when two are made at the same ``now``.
    """

    def __init__(self) -> None:
        self._last_start = _EPOCH
        self._issued_ahead: set[datetime] = set()  # start instants given to fires ahead
        self._issued_heap: list[datetime] = []
        self._last_group = 0

    def group(self, now: datetime) -> int:
        gid = max(group_id(now), self._last_group + 1)
        self._last_group = gid
        return gid

    def new(
        self,
        job: Job,
        gid: int,
        node: str,
        attempt: int,
        trigger: Trigger,
        scheduled_at: datetime | None,
        now: datetime,
        *,
        start: datetime | None = None,
    ) -> Execution:
        """A new execution record. It starts at ``now``, or at ``start`` (a fire launched
        ahead: its scheduled instant, in the future)."""
        if start is not None and start > now:
            at = self._start_ahead(start, now)
        else:
            at = now
            if at <= self._last_start:
                at = self._last_start + _MICRO
            while at in self._issued_ahead:
                at += _MICRO
            self._last_start = at
        return Execution(
            id=execution_id(at, node),
            job_name=job.name,
            node_name=node,
            group=gid,
            started_at=at,
            attempt=attempt,
            trigger=trigger,
            scheduled_at=scheduled_at,
        )

    def _start_ahead(self, at: datetime, now: datetime) -> datetime:
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


@attrs.frozen(kw_only=True)
class Skip:
    """A fire not run, recorded (``FiresSkipped``) with its reason."""

    job_name: str
    scheduled_at: datetime
    reason: str


@attrs.define
class Decision:
    """What one round decided. ``commands`` go to the log as one batch, in order; ``runs``
    has one (job, execution) per ``RunStarted`` in ``commands``, in the same order."""

    commands: list[c.Command] = attrs.field(factory=list)
    runs: list[tuple[Job, Execution]] = attrs.field(factory=list)
    skipped: list[Skip] = attrs.field(factory=list)
    missed: list[c.FiresMissed] = attrs.field(factory=list)
    deferred: list[tuple[str, datetime]] = attrs.field(factory=list)
    trimmed: list[str] = attrs.field(factory=list)  # fires run on fewer targets, and why
    fires: int = 0  # fires that became runs
    shed: int = 0  # fires not run because the scheduler was too far behind (max_lateness)

    def extend(self, other: Decision) -> None:
        """Append what ``other`` (a later round) decided: one batch for both."""
        self.commands.extend(other.commands)
        self.runs.extend(other.runs)
        self.skipped.extend(other.skipped)
        self.missed.extend(other.missed)
        self.deferred.extend(other.deferred)
        self.trimmed.extend(other.trimmed)
        self.fires += other.fires
        self.shed += other.shed

    def started(self, results: Sequence[Any]) -> list[tuple[Job, Execution, Any]]:
        """Each run with what the log answered to its ``RunStarted`` (``results``: one
        per command, as the log returns them)."""
        answers = [
            applied
            for command, applied in zip(self.commands, results, strict=True)
            if isinstance(command, c.RunStarted)
        ]
        return [(job, ex, a) for (job, ex), a in zip(self.runs, answers, strict=True)]


@attrs.define
class CatchUp:
    """A new leader's reckoning of the fires that fell while no scheduler ran."""

    commands: list[c.Command] = attrs.field(factory=list)  # FiresMissed records
    missed: list[c.FiresMissed] = attrs.field(factory=list)
    fires: list[tuple[str, datetime]] = attrs.field(factory=list)  # run once, late
    unparsable: list[Job] = attrs.field(factory=list)  # schedules this version cannot read


class Scheduler:
    """The scheduling state of one leader over the replicated ``fsm`` (read, never
    written: the caller proposes commands and the log applies them)."""

    def __init__(
        self,
        fsm: StateMachine,
        *,
        node_name: str,
        region: str = "",
        rng: random.Random,
        max_running: int = 0,
        max_lateness: timedelta | None = None,
    ) -> None:
        if max_lateness is not None and max_lateness < timedelta(0):
            raise ValueError("max_lateness must not be negative")
        self.fsm = fsm
        self.node_name = node_name
        self.region = region
        self.rng = rng
        self.max_running = max_running  # runs at once across the cluster (0: no cap)
        self.max_lateness = max_lateness  # see "Admission under overload" (None: off)
        self.ids = ExecutionIds()
        self.planner = Planner()
        # forbid fires held back from launching ahead (previous run active): job -> instant
        self._deferred: dict[str, datetime] = {}
        self._deferred_heap: list[tuple[datetime, str]] = []
        # intents decided, not yet applied: counted against the concurrency limits
        self._in_flight: dict[str, int] = {}
        self._in_flight_total = 0

    # -- the plan -----------------------------------------------------------------------
    def plan(self, job: Job) -> None:
        """(Re)plan ``job`` from its stored ``next`` (a saved job: called for every
        ``JobSaved`` effect applied). A held-back fire is superseded by the new plan."""
        self._deferred.pop(job.name, None)
        if job.disabled or job.parent_job or not job.schedule or job.next is None:
            self.planner.remove(job.name)
            return
        self.planner.set(job.name, job.next)

    def forget(self, name: str) -> None:
        self.planner.remove(name)
        self._deferred.pop(name, None)

    def replan_all(self) -> None:
        """Plan every job anew (the state was replaced by a snapshot)."""
        self.planner = Planner()
        self._deferred.clear()
        self._deferred_heap.clear()
        for job in self.fsm.jobs.values():
            self.plan(job)

    def next_wakeup(self, *, lead: timedelta = timedelta(0)) -> datetime | None:
        """When to look again: ``lead`` before the earliest planned fire, or at the
        earliest held-back fire; None when nothing is planned."""
        fire_at = self.planner.next_wakeup()
        wake = None if fire_at is None else fire_at - lead
        heap = self._deferred_heap
        while heap and self._deferred.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # superseded
        if heap and (wake is None or heap[0][0] < wake):
            wake = heap[0][0]
        return wake

    def due(
        self, now: datetime, *, ahead: timedelta = timedelta(0), limit: int | None = None
    ) -> list[tuple[str, datetime]]:
        """Pop the held-back fires whose instant has come, then the planned fires due by
        ``now + ahead`` (at most ``limit`` of those), earliest first."""
        held: list[tuple[str, datetime]] = []
        heap = self._deferred_heap
        while heap and heap[0][0] <= now:
            at, name = heapq.heappop(heap)
            if self._deferred.get(name) == at:
                del self._deferred[name]
                held.append((name, at))
        return held + self.planner.due(now + ahead, limit=limit)

    def _defer(self, name: str, at: datetime) -> None:
        self._deferred[name] = at
        heapq.heappush(self._deferred_heap, (at, name))

    # -- where a run goes, and whether it may -------------------------------------------
    def targets(
        self, job: Job, members: Sequence[Member], unreachable: Collection[str] = ()
    ) -> list[Member]:
        """The members a run of ``job`` goes to (Dkron's tag rules, this leader's region;
        ``unreachable`` members are chosen last for "any N": see ``select_targets``)."""
        return select_targets(
            job.tags, members, region=self.region, rng=self.rng, unreachable=unreachable
        )

    def free_slots(self, job: Job) -> tuple[int | None, str]:
        """How many more runs of ``job`` may start now (None: no limit), and when none,
        the reason."""
        free: int | None = None
        reason = ""
        limit = job.concurrency_limit
        if limit:
            running = len(self.fsm.running_of(job.name)) + self._in_flight.get(job.name, 0)
            free = max(0, limit - running)
            if not free:
                reason = (
                    f"concurrency limit: {running} runs of the job are running "
                    f"(concurrency_limit {limit})"
                )
        if self.max_running:
            running = len(self.fsm.running) + self._in_flight_total
            room = max(0, self.max_running - running)
            if free is None or room < free:
                free = room
                if not room:
                    reason = (
                        f"cluster at capacity: {running} runs are running "
                        f"(max_running {self.max_running})"
                    )
        return free, reason

    def skip_reason(self, job: Job, at: datetime, targets: Sequence[Member]) -> str:
        """Why a fire of ``job`` at ``at`` on ``targets`` is not run ("" if it is)."""
        if job.disabled:
            return "disabled"
        if job.starts_at is not None and at < job.starts_at:
            return f"before starts_at {job.starts_at.isoformat()}"
        if job.expires_at is not None and at > job.expires_at:
            return f"expired at {job.expires_at.isoformat()}"
        if job.concurrency == Concurrency.FORBID and (
            self.fsm.running_of(job.name) or self._in_flight.get(job.name)
        ):
            return "forbid: the previous run is still active"
        if not targets:
            return f"no target nodes: no alive member matches tags {describe_tags(job.tags)}"
        free, reason = self.free_slots(job)
        if free == 0:
            return reason
        return ""

    def _trim(self, job: Job, targets: list[Member], at: datetime, out: Decision) -> list[Member]:
        """The targets that fit the free slots (chosen at random when they do not all)."""
        free, _ = self.free_slots(job)
        if free is None or free >= len(targets):
            return targets
        kept = self.rng.sample(targets, free)
        out.trimmed.append(
            f"job {job.name}: the fire at {at.isoformat()} runs on {free} of "
            f"{len(targets)} target nodes (concurrency limits)"
        )
        return kept

    def _reserve(self, runs: Sequence[tuple[Job, Execution]]) -> None:
        for job, _ex in runs:
            self._in_flight[job.name] = self._in_flight.get(job.name, 0) + 1
            self._in_flight_total += 1

    def settle(self, runs: Sequence[tuple[Job, Execution]]) -> None:
        """The intents of ``runs`` were applied (or refused, or dropped): the state
        machine counts them from now on, or they never ran."""
        for job, _ex in runs:
            left = self._in_flight.get(job.name, 0) - 1
            if left > 0:
                self._in_flight[job.name] = left
            else:
                self._in_flight.pop(job.name, None)
            self._in_flight_total = max(0, self._in_flight_total - 1)

    # -- decisions ----------------------------------------------------------------------
    def decide(
        self,
        due: Sequence[tuple[str, datetime]],
        now: datetime,
        members: Sequence[Member],
        *,
        catchup: bool = False,
        unreachable: Collection[str] = (),
    ) -> Decision:
        """Turn due fires into one batch: a ``RunStarted`` per target of each fire that
        runs, a ``FiresSkipped`` for each that does not, a ``FiresMissed`` where the
        scheduler fell a whole period behind (one run covers them: no burst).

        A ``forbid`` job whose previous run is active is not decided ahead: its fire is
        held back and decided at its instant (``due`` returns it then), as the previous
        run may end meanwhile. The runs decided count against the concurrency limits
        until ``settle``.
        """
        out = Decision()
        for name, at in due:
            job = self.fsm.jobs.get(name)
            if job is None:
                continue
            if (
                at > now
                and job.concurrency == Concurrency.FORBID
                and (self.fsm.running_of(job.name) or self._in_flight.get(job.name))
            ):
                self._defer(name, at)
                out.deferred.append((name, at))
                continue
            # from the fire itself, also for a catch-up: fires that fell due since
            # catch_up() looked are coalesced below (recorded missed), not skipped over
            nxt = self.fsm.next_fire(job, at)
            coalesced: list[datetime] = []
            while nxt is not None and nxt <= now and len(coalesced) < MAX_MISSED_SCAN:
                coalesced.append(nxt)  # the scheduler fell a whole period behind
                nxt = self.fsm.next_fire(job, nxt)
            if coalesced and not catchup and self._too_late(at, now):
                missed = self.missed(
                    job,
                    [at, *coalesced],
                    nxt,
                    now,
                    f"overload: the scheduler was {(now - at).total_seconds():.1f}s behind "
                    f"(over {_seconds(self.max_lateness)}s, and the next fire was due "
                    "too); not run",
                )
                out.commands.append(missed)
                out.missed.append(missed)
                out.shed += 1 + len(coalesced)
                continue
            targets = self.targets(job, members, unreachable)
            reason = self.skip_reason(job, at, targets)
            if reason:
                out.commands.append(
                    c.FiresSkipped(job_name=name, scheduled_at=at, next=nxt, reason=reason)
                )
                out.skipped.append(Skip(job_name=name, scheduled_at=at, reason=reason))
                if coalesced:  # next jumps over them: they get a record too
                    missed = self.missed(
                        job,
                        coalesced,
                        nxt,
                        now,
                        f"the scheduler fell behind; the fire at {at.isoformat()} was "
                        f"skipped ({reason}) and covers them",
                    )
                    out.commands.append(missed)
                    out.missed.append(missed)
                continue
            if coalesced:
                missed = self.missed(
                    job,
                    coalesced,
                    nxt,
                    now,
                    f"the scheduler fell behind; the run for {at.isoformat()} "
                    "started late and covers them",
                )
                out.commands.append(missed)
                out.missed.append(missed)
            targets = self._trim(job, targets, at, out)
            gid = self.ids.group(now)
            trigger = Trigger.CATCHUP if catchup else Trigger.SCHEDULE
            runs: list[tuple[Job, Execution]] = []
            for i, member in enumerate(targets):
                ex = self.ids.new(job, gid, member.name, 1, trigger, at, now, start=at)
                out.commands.append(
                    c.RunStarted(execution=ex, next=nxt, advance_next=i == 0, cap=self.max_running)
                )
                runs.append((job, ex))
            self._reserve(runs)
            out.runs.extend(runs)
            out.fires += 1
        return out

    def _too_late(self, at: datetime, now: datetime) -> bool:
        return self.max_lateness is not None and now - at > self.max_lateness

    def dependents(
        self,
        due: DependentsDue,
        now: datetime,
        members: Sequence[Member],
        *,
        unreachable: Collection[str] = (),
    ) -> Decision:
        """The runs of a parent's children after its success, and the record that they
        were launched (``DependentsLaunched``, last)."""
        out = Decision()
        for name in due.children:
            child = self.fsm.jobs.get(name)
            if child is None:
                continue
            targets = self.targets(child, members, unreachable)
            reason = self.skip_reason(child, now, targets)
            if reason:
                out.commands.append(
                    c.FiresSkipped(
                        job_name=child.name, scheduled_at=now, next=child.next, reason=reason
                    )
                )
                out.skipped.append(Skip(job_name=child.name, scheduled_at=now, reason=reason))
                continue
            targets = self._trim(child, targets, now, out)
            gid = self.ids.group(now)
            runs = [
                (child, self.ids.new(child, gid, m.name, 1, Trigger.DEPENDENT, None, now))
                for m in targets
            ]
            out.commands.extend(c.RunStarted(execution=ex, cap=self.max_running) for _, ex in runs)
            self._reserve(runs)
            out.runs.extend(runs)
            out.fires += 1
        out.commands.append(c.DependentsLaunched(group=due.group))
        return out

    def manual(
        self,
        job: Job,
        now: datetime,
        members: Sequence[Member],
        *,
        unreachable: Collection[str] = (),
    ) -> Decision:
        """A manual run of ``job`` on its targets, or the error refusing it:
        ``JobDisabled``, ``ConcurrencyForbidden``, ``ConcurrencyLimitReached``,
        ``ClusterAtCapacity`` (409) or ``NoTargetNodes`` (404)."""
        if job.disabled:
            raise JobDisabled(job.name)
        if job.concurrency == Concurrency.FORBID and (
            self.fsm.running_of(job.name) or self._in_flight.get(job.name)
        ):
            raise ConcurrencyForbidden(job.name)
        targets = self.targets(job, members, unreachable)
        if not targets:
            raise NoTargetNodes(job.name, job.tags)
        free, _ = self.free_slots(job)
        if free == 0:
            self._refuse_full(job)
        out = Decision()
        targets = self._trim(job, targets, now, out)
        gid = self.ids.group(now)
        runs = [
            (job, self.ids.new(job, gid, m.name, 1, Trigger.MANUAL, None, now)) for m in targets
        ]
        out.commands.extend(c.RunStarted(execution=ex, cap=self.max_running) for _, ex in runs)
        self._reserve(runs)
        out.runs.extend(runs)
        out.fires = 1
        return out

    def _refuse_full(self, job: Job) -> None:
        limit = job.concurrency_limit
        if limit and len(self.fsm.running_of(job.name)) + self._in_flight.get(job.name, 0) >= limit:
            raise ConcurrencyLimitReached(job.name, limit)
        raise ClusterAtCapacity(self.max_running)

    def retry(self, retry: RetryDue, now: datetime) -> Decision:
        """The next attempt of a failed run, on the same node, in the same group (no
        concurrency check: it takes the failed attempt's place)."""
        out = Decision()
        job = self.fsm.jobs.get(retry.job_name)
        if job is None:
            return out
        ex = self.ids.new(
            job,
            retry.group,
            retry.node_name,
            retry.attempt,
            Trigger.RETRY,
            retry.scheduled_at,
            now,
        )
        out.commands.append(c.RunStarted(execution=ex))
        out.runs.append((job, ex))
        self._reserve(out.runs)
        return out

    def catch_up(self, now: datetime) -> CatchUp:
        """Plan every job; a fire that fell while no scheduler ran is run once, late, if
        still inside its job's catch-up window (``fires``, to decide with
        ``catchup=True``), and recorded as missed otherwise (``commands``)."""
        out = CatchUp()
        for job in list(self.fsm.jobs.values()):
            if job.disabled or job.parent_job or not job.schedule:
                continue
            if self.fsm.schedule_of(job) is None:
                out.unparsable.append(job)
                continue
            if job.next is None:  # exhausted or expired: nothing to plan
                continue
            if job.next > now:
                self.plan(job)
                continue
            missed: list[datetime] = []
            fire: datetime | None = job.next
            while fire is not None and fire <= now and len(missed) < MAX_MISSED_SCAN:
                missed.append(fire)
                fire = self.fsm.next_fire(job, fire)
            window_start = now - timedelta(seconds=job.catchup_window)
            late = [f for f in missed if f >= window_start] if job.catchup_window > 0 else []
            nxt = self.fsm.next_fire(job, now)
            lost = missed[: len(missed) - 1] if late else missed
            if lost:
                more = "+" if len(missed) >= MAX_MISSED_SCAN else ""
                reason = f"no scheduler was running{more}; " + (
                    f"one catch-up run covers the latest at {late[-1].isoformat()}"
                    if late
                    else f"outside the catch-up window of {int(job.catchup_window)}s"
                )
                # with a late run, next moves to it: a leader lost before the run leaves
                # the next one to run it, not to record these fires missed again
                record = self.missed(job, lost, nxt if not late else late[-1], now, reason)
                out.commands.append(record)
                out.missed.append(record)
            if late:
                out.fires.append((job.name, late[-1]))
        return out

    def missed(
        self, job: Job, fires: list[datetime], nxt: datetime | None, now: datetime, reason: str
    ) -> c.FiresMissed:
        """The command recording ``fires`` of ``job`` as missed, with ``reason``."""
        record = self.ids.new(job, 0, self.node_name, 1, Trigger.SCHEDULE, None, now)
        return c.FiresMissed(
            job_name=job.name,
            execution_id=record.id,
            first=fires[0],
            last=fires[-1],
            count=len(fires),
            next=nxt,
            recorded_at=now,
            node_name=self.node_name,
            reason=reason,
        )
