"""Admission under overload in the leader's pure scheduler (``max_lateness``): a fire the
scheduler reaches a whole period late is recorded missed, with the reason, not run late."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from trickle.engine import commands as c
from trickle.engine.fsm import StateMachine
from trickle.engine.model import Job, Member
from trickle.engine.scheduler import Scheduler

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NODES = [Member(name=n, addr="127.0.0.1", port=8946, tags={}, status="alive") for n in "abc"]


def leader(max_lateness: timedelta | None, *jobs: Job) -> Scheduler:
    fsm = StateMachine()
    for i, job in enumerate(jobs, start=1):
        fsm.apply(i, c.PutJob(job=job, now=T0))
    sched = Scheduler(fsm, node_name="a", rng=random.Random(1), max_lateness=max_lateness)
    sched.replan_all()
    return sched


def every(name: str, seconds: int) -> Job:
    return Job(name=name, schedule=f"@every {seconds}s", executor="shell")


def test_a_fire_a_whole_period_late_is_recorded_missed_and_the_job_goes_on_from_its_next():
    sched = leader(timedelta(seconds=1), every("a", 1))
    now = T0 + timedelta(seconds=3.5)  # fires at 1, 2, 3 are due: 2.5 s behind
    decision = sched.decide(sched.due(now), now, NODES)
    assert decision.runs == [] and decision.fires == 0
    assert decision.shed == 3
    [missed] = decision.missed
    assert (missed.first, missed.last, missed.count) == (
        T0 + timedelta(seconds=1),
        T0 + timedelta(seconds=3),
        3,
    )
    assert missed.next == T0 + timedelta(seconds=4)  # the next fire to come
    assert missed.reason.startswith("overload: the scheduler was 2.5s behind (over 1s")
    assert decision.commands == [missed]
    sched.fsm.apply(10, decision.commands[0])
    assert sched.fsm.jobs["a"].next == T0 + timedelta(seconds=4)
    assert sched.fsm.jobs["a"].missed_count == 3


def test_without_max_lateness_the_late_fire_runs_and_covers_the_ones_it_fell_behind():
    sched = leader(None, every("a", 1))
    now = T0 + timedelta(seconds=3.5)
    decision = sched.decide(sched.due(now), now, NODES)
    assert decision.fires == 1 and decision.shed == 0
    [missed] = decision.missed
    assert missed.count == 2 and "started late and covers them" in missed.reason


def test_a_late_fire_whose_next_is_not_due_yet_still_runs():
    # an hourly job reached 5 s late (a stall): no later fire is due, nothing piles up
    sched = leader(timedelta(seconds=1), every("h", 3600))
    now = T0 + timedelta(seconds=3605)
    decision = sched.decide(sched.due(now), now, NODES)
    assert decision.fires == 1 and decision.shed == 0 and decision.missed == []


def test_a_fire_late_by_less_than_max_lateness_runs_though_its_next_is_due():
    # sub-second jobs run every second; 1.2 s late is within a 2 s bound
    sched = leader(timedelta(seconds=2), every("a", 1))
    now = T0 + timedelta(seconds=2.2)
    decision = sched.decide(sched.due(now), now, NODES)
    assert decision.fires == 1 and decision.shed == 0


def test_catch_up_runs_after_a_failover_are_never_shed():
    sched = leader(timedelta(seconds=1), every("a", 1))
    now = T0 + timedelta(seconds=30)
    catch = sched.catch_up(now - timedelta(seconds=5))
    decision = sched.decide(catch.fires, now, NODES, catchup=True)
    assert decision.fires == 1 and decision.shed == 0


def test_under_sustained_overload_each_job_alternates_between_a_record_and_a_run():
    """Rounds that reach every job 2.5 s late: with admission the leader commits one
    record per job and round, and the jobs' next fires come due on time; without it, a
    late run and a missed record per job and round, every run late."""
    jobs = [every(f"j{i}", 1) for i in range(10)]
    for bound, runs_late in ((timedelta(seconds=1), False), (None, True)):
        sched = leader(bound, *jobs)
        now = T0 + timedelta(seconds=3.5)
        commands = 0
        late = []
        for _ in range(4):
            decision = sched.decide(sched.due(now), now, NODES)
            commands += len(decision.commands)
            late += [now - ex.scheduled_at for _j, ex in decision.runs]
            for command in decision.commands:
                sched.fsm.apply(sched.fsm.applied_index + 1, command)
            sched.settle(decision.runs)
            for job in sched.fsm.jobs.values():
                sched.plan(job)
            now += timedelta(seconds=0.6)  # due again: on time once, then shed again
        if runs_late:
            assert all(d > timedelta(seconds=1) for d in late[:10])
        else:
            assert late and all(d < timedelta(seconds=1) for d in late)
        assert commands > 0


def test_a_negative_max_lateness_is_refused():
    with pytest.raises(ValueError, match="max_lateness"):
        leader(timedelta(seconds=-1))
