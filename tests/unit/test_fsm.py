"""The state machine, fed commands, asserting on results, effects, events and reactions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trickle.engine import commands as c
from trickle.engine.events import EventKind
from trickle.engine.fsm import DependentsDue, RetryDue, StateMachine
from trickle.engine.model import (
    Concurrency,
    Execution,
    ExecutionStatus,
    Job,
    JobStatus,
    Trigger,
    execution_id,
    group_id,
)
from trickle.errors import (
    ConcurrencyForbidden,
    ExecutionNotFound,
    ExecutionNotRunning,
    JobHasDependents,
    JobNotFound,
    ParentNotFound,
    ValidationError,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class Driver:
    """Feeds commands with increasing indexes."""

    def __init__(self) -> None:
        self.fsm = StateMachine()
        self.index = 0

    def apply(self, command: c.Command):
        self.index += 1
        return self.fsm.apply(self.index, command)

    def put(self, job: Job, now: datetime = T0):
        return self.apply(c.PutJob(job=job, now=now))

    def start(
        self,
        name: str,
        at: datetime,
        *,
        node: str = "n1",
        attempt: int = 1,
        group: int | None = None,
        trigger: Trigger = Trigger.SCHEDULE,
    ) -> Execution:
        ex = Execution(
            id=execution_id(at, node),
            job_name=name,
            node_name=node,
            group=group if group is not None else group_id(at),
            started_at=at,
            attempt=attempt,
            trigger=trigger,
            scheduled_at=at,
        )
        applied = self.apply(c.RunStarted(execution=ex))
        assert applied.error is None, applied.error
        return ex

    def finish(
        self, ex: Execution, *, success: bool, at: datetime | None = None, output: str = "out"
    ):
        return self.apply(
            c.RunFinished(
                job_name=ex.job_name,
                execution_id=ex.id,
                finished_at=at or ex.started_at + timedelta(seconds=1),
                success=success,
                output=output,
                exit_code=0 if success else 1,
            )
        )


def job(name: str = "a", **kw) -> Job:
    kw.setdefault("schedule", "@every 10s")
    kw.setdefault("executor", "shell")
    return Job(name=name, **kw)


def test_put_creates_job_with_next_fire_and_anchor():
    d = Driver()
    applied = d.put(job())
    stored, created = applied.result
    assert created
    assert stored.next == T0 + timedelta(seconds=10)
    assert stored.schedule_anchor == T0 and stored.created_at == T0
    assert [type(e) for e in applied.effects] == [c.JobSaved]
    assert [e.kind for e in applied.events] == [EventKind.JOB_CREATED]


def test_put_is_full_replace_but_preserves_counters_status_and_next():
    d = Driver()
    d.put(job(displayname="first", metadata={"team": "x"}))
    ex = d.start("a", T0 + timedelta(seconds=10))
    d.finish(ex, success=True)
    later = T0 + timedelta(minutes=1)
    stored, created = d.put(job(success_count=0), now=later).result
    assert not created
    assert stored.displayname == "" and stored.metadata == {}
    assert stored.success_count == 1 and stored.status == JobStatus.SUCCESS
    assert stored.schedule_anchor == T0  # same schedule: same phase
    assert stored.last_success is not None


def test_put_keeps_the_larger_counter_sent_by_the_client():
    d = Driver()
    d.put(job())
    stored, _ = d.put(job(success_count=7, error_count=2)).result
    assert (stored.success_count, stored.error_count) == (7, 2)


def test_changing_the_schedule_resets_the_anchor_and_next():
    d = Driver()
    d.put(job())
    later = T0 + timedelta(seconds=3)
    stored, _ = d.put(job(schedule="@every 1m"), now=later).result
    assert stored.schedule_anchor == later
    assert stored.next == later + timedelta(minutes=1)


def test_put_child_with_missing_parent_is_refused_and_changes_nothing():
    d = Driver()
    applied = d.put(job("child", schedule="", parent_job="nope"))
    assert isinstance(applied.error, ParentNotFound)
    assert applied.effects == [] and "child" not in d.fsm.jobs


def test_parent_tracks_its_dependents_and_cannot_be_deleted_first():
    d = Driver()
    d.put(job("parent"))
    applied = d.put(job("child", schedule="", parent_job="parent"))
    assert applied.error is None
    assert d.fsm.jobs["parent"].dependent_jobs == ("child",)
    assert d.fsm.jobs["child"].next is None
    refused = d.apply(c.DeleteJob(name="parent", now=T0))
    assert isinstance(refused.error, JobHasDependents)
    d.apply(c.DeleteJob(name="child", now=T0))
    assert d.fsm.jobs["parent"].dependent_jobs == ()
    assert d.apply(c.DeleteJob(name="parent", now=T0)).error is None


def test_parent_cycle_is_rejected():
    d = Driver()
    d.put(job("a"))
    d.put(job("b", schedule="", parent_job="a"))
    d.put(job("c", schedule="", parent_job="b"))
    applied = d.put(job("a", schedule="", parent_job="c"))
    assert isinstance(applied.error, ValidationError)
    assert applied.error.field == "parent_job"
    assert d.fsm.jobs["a"].parent_job == ""


def test_moving_a_child_to_another_parent_updates_both_parents():
    d = Driver()
    d.put(job("p1"))
    d.put(job("p2"))
    d.put(job("c", schedule="", parent_job="p1"))
    d.put(job("c", schedule="", parent_job="p2"))
    assert d.fsm.jobs["p1"].dependent_jobs == ()
    assert d.fsm.jobs["p2"].dependent_jobs == ("c",)


def test_delete_unknown_job_is_not_found():
    assert isinstance(Driver().apply(c.DeleteJob(name="x", now=T0)).error, JobNotFound)


def test_toggle_disables_and_enabling_replans_from_now():
    d = Driver()
    d.put(job())
    off = d.apply(c.ToggleJob(name="a", now=T0 + timedelta(seconds=1))).result
    assert off.disabled
    on_at = T0 + timedelta(hours=5, seconds=3)
    on = d.apply(c.ToggleJob(name="a", now=on_at)).result
    assert not on.disabled and on.next > on_at


def test_run_lifecycle_updates_counters_status_stats_and_history():
    d = Driver()
    d.put(job())
    at = T0 + timedelta(seconds=10)
    ex = d.start("a", at)
    assert d.fsm.running_of("a") == [ex]
    applied = d.finish(ex, success=False)
    final = applied.result
    assert final.status == ExecutionStatus.FAILED and final.finished_at is not None
    stored = d.fsm.jobs["a"]
    assert stored.error_count == 1 and stored.status == JobStatus.FAILED
    assert stored.last_error == final.finished_at
    kinds = [type(e) for e in applied.effects]
    assert c.ExecutionSaved in kinds and c.StatsAdded in kinds
    assert d.fsm.running_of("a") == []


def test_duplicate_result_is_refused_without_effects():
    d = Driver()
    d.put(job())
    ex = d.start("a", T0)
    d.finish(ex, success=True)
    again = d.finish(ex, success=True)
    assert isinstance(again.error, ExecutionNotFound) and again.effects == []
    assert isinstance(again.error, ExecutionNotRunning)  # says why, not just "not found"
    assert "is not running" in again.error.message and ex.id in again.error.message
    assert d.fsm.jobs["a"].success_count == 1


def test_forbid_refuses_a_second_group_while_one_runs():
    d = Driver()
    d.put(job(concurrency=Concurrency.FORBID))
    d.start("a", T0)
    at = T0 + timedelta(seconds=10)
    ex2 = Execution(
        id=execution_id(at, "n1"), job_name="a", node_name="n1", group=group_id(at), started_at=at
    )
    applied = d.apply(c.RunStarted(execution=ex2))
    assert isinstance(applied.error, ConcurrencyForbidden)


def test_failed_attempt_with_retries_asks_for_a_retry_after_the_interval():
    d = Driver()
    d.put(job(retries=1, retry_interval=30.0))
    ex = d.start("a", T0)
    applied = d.finish(ex, success=False)
    [retry] = applied.reactions
    assert isinstance(retry, RetryDue)
    assert retry.attempt == 2 and retry.group == ex.group
    assert retry.at == ex.started_at + timedelta(seconds=1, microseconds=0) + timedelta(seconds=30)
    assert d.fsm.jobs["a"].status == JobStatus.UNTRIGGERED  # group still open
    assert d.fsm.pending_retries() == [retry]


def test_child_runs_when_parents_final_attempt_succeeded():
    """Dkron counts the failed attempt and never runs the child; trickle judges the
    group by each node's final attempt."""
    d = Driver()
    d.put(job("parent", retries=2))
    d.put(job("child", schedule="", parent_job="parent"))
    ex1 = d.start("parent", T0)
    d.finish(ex1, success=False)
    ex2 = d.start(
        "parent", T0 + timedelta(seconds=2), attempt=2, group=ex1.group, trigger=Trigger.RETRY
    )
    applied = d.finish(ex2, success=True)
    assert d.fsm.jobs["parent"].status == JobStatus.SUCCESS
    due = DependentsDue(
        parent="parent",
        children=("child",),
        at=ex2.started_at + timedelta(seconds=1),
        group=ex1.group,
    )
    assert [r for r in applied.reactions if isinstance(r, DependentsDue)] == [due]
    assert d.fsm.pending_retries() == []
    assert d.fsm.pending_dependents() == [due]
    copy = StateMachine()
    copy.restore(
        applied_index=d.index, jobs=d.fsm.jobs.values(), running=[], meta=d.fsm.export_meta()
    )
    assert copy.pending_dependents() == [due]
    d.apply(c.DependentsLaunched(group=ex1.group))
    assert d.fsm.pending_dependents() == []


def test_group_status_on_several_nodes_is_partially_failed_when_mixed():
    d = Driver()
    d.put(job())
    gid = group_id(T0)
    e1 = d.start("a", T0, node="n1", group=gid)
    e2 = d.start("a", T0, node="n2", group=gid)
    d.finish(e1, success=True)
    assert d.fsm.jobs["a"].status == JobStatus.UNTRIGGERED
    d.finish(e2, success=False)
    assert d.fsm.jobs["a"].status == JobStatus.PARTIALLY_FAILED


def test_ephemeral_job_is_deleted_after_its_first_success():
    d = Driver()
    d.put(job(ephemeral=True))
    ex = d.start("a", T0)
    applied = d.finish(ex, success=True)
    assert "a" not in d.fsm.jobs
    assert c.JobRemoved("a") in applied.effects
    assert EventKind.JOB_DELETED in [e.kind for e in applied.events]


def test_missed_fires_are_recorded_visibly_without_touching_counters():
    d = Driver()
    d.put(job())
    rec_at = T0 + timedelta(hours=2)
    applied = d.apply(
        c.FiresMissed(
            job_name="a",
            execution_id=execution_id(rec_at, "n1"),
            first=T0,
            last=rec_at,
            count=720,
            next=rec_at + timedelta(seconds=10),
            recorded_at=rec_at,
            node_name="n1",
            reason="no scheduler was running",
        )
    )
    record = applied.result
    assert record.status == ExecutionStatus.MISSED and "720 fires" in record.output
    stored = d.fsm.jobs["a"]
    assert stored.missed_count == 720 and stored.error_count == 0
    assert stored.next == rec_at + timedelta(seconds=10)


def test_abandoned_executions_are_failed_with_the_reason():
    d = Driver()
    d.put(job())
    ex = d.start("a", T0)
    applied = d.apply(
        c.AbandonExecutions(
            execution_ids=(("a", ex.id),),
            finished_at=T0 + timedelta(minutes=5),
            reason="node n1 stopped while the execution was running",
        )
    )
    [final] = applied.result
    assert final.status == ExecutionStatus.FAILED
    assert "stopped while the execution was running" in final.output
    assert d.fsm.running == {}


def test_delete_executions_resets_counters_but_keeps_running_records():
    d = Driver()
    d.put(job())
    d.finish(d.start("a", T0), success=True)
    running = d.start("a", T0 + timedelta(seconds=10))
    applied = d.apply(c.DeleteExecutions(job_name="a"))
    assert applied.result.success_count == 0 and applied.result.last_success is None
    assert c.ExecutionSaved(running) in applied.effects


def test_restore_from_exported_meta_gives_the_same_pending_retries():
    d = Driver()
    d.put(job(retries=3))
    ex = d.start("a", T0)
    d.finish(ex, success=False)
    copy = StateMachine()
    copy.restore(
        applied_index=d.index, jobs=d.fsm.jobs.values(), running=[], meta=d.fsm.export_meta()
    )
    assert copy.pending_retries() == d.fsm.pending_retries()


def test_applying_an_old_index_is_a_programming_error():
    d = Driver()
    d.put(job())
    with pytest.raises(ValueError):
        d.fsm.apply(1, c.DeleteJob(name="a", now=T0))


def test_same_commands_give_the_same_state():
    def run() -> dict:
        d = Driver()
        d.put(job("p", retries=1))
        d.put(job("c", schedule="", parent_job="p"))
        ex = d.start("p", T0)
        d.finish(ex, success=False)
        d.finish(d.start("p", T0 + timedelta(seconds=5), attempt=2, group=ex.group), success=True)
        return {n: attrs.asdict(j) for n, j in d.fsm.jobs.items()}

    assert run() == run()


@given(
    st.lists(
        st.tuples(st.sampled_from("abcde"), st.sampled_from(["", "a", "b", "c"]), st.booleans()),
        max_size=30,
    )
)
def test_dependents_index_matches_the_jobs_parent_links(ops):
    d = Driver()
    for name, parent, delete in ops:
        if delete:
            d.apply(c.DeleteJob(name=name, now=T0))
        else:
            d.put(job(name, schedule="" if parent else "@daily", parent_job=parent))
        for candidate in "abcde":
            expected = tuple(
                sorted(j.name for j in d.fsm.jobs.values() if j.parent_job == candidate)
            )
            assert d.fsm.dependents_of(candidate) == expected
            if candidate in d.fsm.jobs:
                assert d.fsm.jobs[candidate].dependent_jobs == expected


def test_one_log_entry_applies_its_commands_in_order_at_one_index():
    fsm = StateMachine()
    results = fsm.apply_entry(
        7,
        [
            c.PutJob(job=job("p"), now=T0),
            c.PutJob(job=job("kid", parent_job="p", schedule=""), now=T0),
            c.DeleteJob(name="missing", now=T0),
        ],
    )
    assert [r.error is None for r in results] == [True, True, False]
    assert fsm.applied_index == 7
    assert fsm.dependents_of("p") == ("kid",)


def test_an_entry_without_commands_still_advances_the_applied_index():
    fsm = StateMachine()
    assert fsm.apply_entry(3, []) == []
    assert fsm.applied_index == 3
    with pytest.raises(ValueError, match="already applied"):
        fsm.apply_entry(3, [])
