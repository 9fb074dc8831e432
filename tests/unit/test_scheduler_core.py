"""The leader's pure scheduling core: fires in, one batch of commands out."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from trickle.engine import commands as c
from trickle.engine.fsm import StateMachine
from trickle.engine.model import Concurrency, Job, Member, Trigger
from trickle.engine.scheduler import NoTargetNodes, Scheduler
from trickle.errors import ClusterAtCapacity, ConcurrencyLimitReached

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def member(name: str, **tags: str) -> Member:
    return Member(name=name, addr="127.0.0.1", port=8946, tags=tags, status="alive")


NODES = [member("n1"), member("n2"), member("n3")]


class Leader:
    """A state machine fed through the log and a scheduler deciding over it."""

    def __init__(self, *, max_running: int = 0) -> None:
        self.fsm = StateMachine()
        self.index = 0
        self.sched = Scheduler(
            self.fsm, node_name="n1", rng=random.Random(7), max_running=max_running
        )

    def apply(self, commands: list[c.Command]) -> list:
        self.index += 1
        applied = self.fsm.apply_entry(self.index, commands)
        for a in applied:
            for effect in a.effects:
                if isinstance(effect, c.JobSaved):
                    self.sched.plan(effect.job)
        return applied

    def put(self, job: Job) -> Job:
        [applied] = self.apply([c.PutJob(job=job, now=T0)])
        assert applied.error is None, applied.error
        return self.fsm.jobs[job.name]

    def round(self, now: datetime, members=NODES):
        decision = self.sched.decide(self.sched.due(now), now, members)
        applied = self.apply(decision.commands) if decision.commands else []
        self.sched.settle(decision.runs)
        return decision, applied

    def finish(self, *executions) -> None:
        self.apply(
            [
                c.RunFinished(
                    job_name=ex.job_name,
                    execution_id=ex.id,
                    finished_at=ex.started_at,
                    success=True,
                    output="",
                )
                for ex in executions
            ]
        )


def every(name: str, **fields) -> Job:
    return Job(name=name, schedule="@every 10s", executor="shell", **fields)


def test_two_jobs_due_at_the_same_instant_get_groups_of_their_own():
    leader = Leader()
    leader.put(every("a"))
    leader.put(every("b"))
    decision, _ = leader.round(T0 + timedelta(seconds=10))
    groups = {ex.job_name: ex.group for _job, ex in decision.runs}
    assert set(groups) == {"a", "b"}
    assert groups["a"] != groups["b"]


def test_a_fire_runs_on_every_alive_member_when_the_job_has_no_tags():
    leader = Leader()
    leader.put(every("a"))
    decision, applied = leader.round(T0 + timedelta(seconds=10))
    assert sorted(ex.node_name for _job, ex in decision.runs) == ["n1", "n2", "n3"]
    assert all(a.error is None for a in applied)
    assert decision.fires == 1


def test_a_fire_with_no_matching_member_is_recorded_skipped_with_the_reason():
    leader = Leader()
    leader.put(every("a", tags={"role": "gpu"}))
    decision, _ = leader.round(T0 + timedelta(seconds=10))
    assert decision.runs == []
    [skip] = decision.skipped
    assert "no target nodes" in skip.reason and "role=gpu" in skip.reason
    job = leader.fsm.jobs["a"]
    assert job.skipped_count == 1 and job.last_skip_reason == skip.reason


def test_concurrency_limit_runs_a_fire_on_as_many_targets_as_it_allows():
    leader = Leader()
    leader.put(every("a", concurrency_limit=2))
    decision, applied = leader.round(T0 + timedelta(seconds=10))
    assert len(decision.runs) == 2
    assert all(a.error is None for a in applied)
    [note] = decision.trimmed
    assert "2 of 3" in note


def test_concurrency_limit_skips_a_fire_while_the_limit_is_reached_across_the_cluster():
    leader = Leader()
    leader.put(every("a", concurrency_limit=2))
    first, _ = leader.round(T0 + timedelta(seconds=10))
    second, _ = leader.round(T0 + timedelta(seconds=20))
    assert second.runs == []
    [skip] = second.skipped
    assert skip.reason.startswith("concurrency limit: 2 runs of the job are running")
    leader.finish(*(ex for _job, ex in first.runs))
    third, _ = leader.round(T0 + timedelta(seconds=30))
    assert len(third.runs) == 2


def test_the_cluster_cap_counts_every_job_and_skips_fires_beyond_it():
    leader = Leader(max_running=4)
    leader.put(every("a"))
    leader.put(every("b"))
    decision, applied = leader.round(T0 + timedelta(seconds=10))
    assert len(decision.runs) == 4  # a on 3 nodes, b on the one slot left
    assert all(a.error is None for a in applied)
    assert len(leader.fsm.running) == 4
    later, _ = leader.round(T0 + timedelta(seconds=20))
    assert later.runs == []
    assert {s.reason.split(":")[0] for s in later.skipped} == {"cluster at capacity"}


def test_decided_but_unapplied_intents_count_against_the_limits():
    leader = Leader()
    leader.put(Job(name="m", schedule="@manually", executor="shell", concurrency_limit=1))
    job = leader.fsm.jobs["m"]
    leader.sched.manual(job, T0, NODES[:1])  # decided, not yet applied
    with pytest.raises(ConcurrencyLimitReached):
        leader.sched.manual(job, T0, NODES[:1])


def test_the_state_machine_refuses_a_run_that_raced_past_a_limit_and_records_the_skip():
    leader = Leader()
    leader.put(every("a", concurrency_limit=1))
    job = leader.fsm.jobs["a"]
    at = T0 + timedelta(seconds=10)
    # two leaders' worth of decisions for the same job, applied one after the other
    one = leader.sched.ids.new(job, 1, "n1", 1, Trigger.SCHEDULE, at, at)
    two = leader.sched.ids.new(job, 2, "n2", 1, Trigger.SCHEDULE, at, at)
    ok, refused = leader.apply(
        [
            c.RunStarted(execution=one, next=at + 10 * SECOND, advance_next=True),
            c.RunStarted(execution=two, next=at + 10 * SECOND, advance_next=True),
        ]
    )
    assert ok.error is None
    assert isinstance(refused.error, ConcurrencyLimitReached)
    assert leader.fsm.jobs["a"].skipped_count == 1
    assert "concurrency" in leader.fsm.jobs["a"].last_skip_reason


def test_the_cap_travels_in_the_intent_so_every_replica_refuses_alike():
    leader = Leader()
    leader.put(every("a"))
    job = leader.fsm.jobs["a"]
    runs = [leader.sched.ids.new(job, 1, f"n{i}", 1, Trigger.MANUAL, None, T0) for i in (1, 2)]
    results = leader.apply([c.RunStarted(execution=ex, cap=1) for ex in runs])
    assert results[0].error is None
    assert isinstance(results[1].error, ClusterAtCapacity)


def test_a_manual_run_is_refused_when_the_cluster_is_full_or_no_member_matches():
    leader = Leader(max_running=1)
    leader.put(Job(name="m", schedule="@manually", executor="shell"))
    job = leader.fsm.jobs["m"]
    with pytest.raises(NoTargetNodes):
        leader.sched.manual(job, T0, [])
    decision = leader.sched.manual(job, T0, NODES)
    assert len(decision.runs) == 1  # trimmed to the one slot
    leader.apply(decision.commands)
    leader.sched.settle(decision.runs)
    with pytest.raises(ClusterAtCapacity):
        leader.sched.manual(job, T0, NODES)


def test_a_forbid_fire_ahead_of_its_instant_is_held_back_while_the_previous_run_is_active():
    leader = Leader()
    leader.put(every("f", concurrency=Concurrency.FORBID))
    first, _ = leader.round(T0 + timedelta(seconds=10), NODES[:1])
    assert len(first.runs) == 1
    ahead = T0 + timedelta(seconds=20)
    now = ahead - timedelta(milliseconds=40)
    held = leader.sched.decide(
        leader.sched.due(now, ahead=timedelta(milliseconds=50)), now, NODES[:1]
    )
    assert held.deferred == [("f", ahead)] and held.commands == []
    assert leader.sched.next_wakeup() == ahead
    leader.finish(*(ex for _job, ex in first.runs))
    due = leader.sched.due(ahead)
    assert due == [("f", ahead)]
    decision = leader.sched.decide(due, ahead, NODES[:1])
    assert len(decision.runs) == 1


def test_a_new_leader_runs_the_latest_fire_inside_the_window_once_and_records_the_rest_missed():
    leader = Leader()
    leader.put(every("a", catchup_window=25.0))
    now = T0 + timedelta(seconds=60)  # fires at 10..60 fell while no scheduler ran
    catch_up = leader.sched.catch_up(now)
    assert catch_up.fires == [("a", now)]
    [record] = catch_up.missed
    assert record.count == 5 and record.first == T0 + timedelta(seconds=10)
    leader.apply(catch_up.commands)
    decision = leader.sched.decide(catch_up.fires, now, NODES[:1], catchup=True)
    [(_job, ex)] = decision.runs
    assert ex.trigger == Trigger.CATCHUP and ex.scheduled_at == now


def test_the_same_seed_decides_the_same_targets():
    def targets(seed: int) -> list[str]:
        fsm = StateMachine()
        fsm.apply(1, c.PutJob(job=every("a", tags={"role": "w:2"}), now=T0))
        sched = Scheduler(fsm, node_name="n1", rng=random.Random(seed))
        sched.replan_all()
        workers = [member(f"w{i}", role="w") for i in range(6)]
        decision = sched.decide(sched.due(T0 + 10 * SECOND), T0 + 10 * SECOND, workers)
        return [ex.node_name for _job, ex in decision.runs]

    assert targets(3) == targets(3)
    assert len(targets(3)) == 2


def test_a_skipped_fire_records_the_fires_its_next_jumps_over_as_missed():
    leader = Leader()
    leader.put(every("f", tags={"role": "gpu"}))  # no member matches: every fire skipped
    now = T0 + timedelta(seconds=35)  # the scheduler fell behind: 10, 20, 30 are due
    decision = leader.sched.decide([("f", T0 + timedelta(seconds=10))], now, NODES)
    [skip] = decision.skipped
    [missed] = decision.missed
    assert (missed.first, missed.last, missed.count) == (
        T0 + timedelta(seconds=20),
        T0 + timedelta(seconds=30),
        2,
    )
    assert "was skipped (no target nodes" in missed.reason
    leader.apply(decision.commands)
    assert leader.fsm.jobs["f"].next == T0 + timedelta(seconds=40)


def test_catch_up_moves_next_to_the_late_fire_so_a_second_leader_does_not_record_twice():
    leader = Leader()
    leader.put(every("a", catchup_window=25.0))
    now = T0 + timedelta(seconds=60)
    first = leader.sched.catch_up(now)
    leader.apply(first.commands)  # proposed, then this leader is lost before the run
    assert leader.fsm.jobs["a"].next == now  # the late fire, still to run
    second = leader.sched.catch_up(now + timedelta(seconds=1))
    assert second.missed == []  # nothing recorded twice
    assert second.fires == [("a", now)]
