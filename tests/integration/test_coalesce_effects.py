"""Coalescing a batch's effects stores exactly what storing them one by one would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from trickle.engine import commands as c
from trickle.engine.model import Execution, ExecutionId, Job
from trickle.engine.store import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = datetime(2026, 1, 1, tzinfo=UTC)


def job(name: str, n: int) -> Job:
    return Job(name=name, schedule="@daily", executor="shell", success_count=n)


def execution(job_name: str, i: int, finished: bool) -> Execution:
    at = T0 + timedelta(seconds=i)
    return Execution(
        id=ExecutionId(f"{i}-{job_name}"),
        job_name=job_name,
        node_name="n",
        group=i,
        started_at=at,
        finished_at=at if finished else None,
    )


effect = st.one_of(
    st.builds(lambda n, k: c.JobSaved(job(n, k)), st.sampled_from("ab"), st.integers(0, 9)),
    st.builds(c.JobRemoved, st.sampled_from("ab")),
    st.builds(
        lambda n, i, f: c.ExecutionSaved(execution(n, i, f)),
        st.sampled_from("ab"),
        st.integers(0, 5),
        st.booleans(),
    ),
    st.builds(c.ExecutionsRemoved, st.sampled_from("ab")),
    st.builds(lambda s, f: c.StatsAdded(DAY, s, f), st.integers(0, 3), st.integers(0, 3)),
)


def snapshot(store: Store) -> tuple:
    loaded = store.load()
    jobs = sorted((j.name, j.success_count) for j in loaded.jobs)
    executions = {name: store.list_executions(name, order="asc")[0] for name in "ab"}
    return jobs, executions, store.daily_stats(DAY, DAY)


@settings(max_examples=60, deadline=None)
@given(st.lists(effect, max_size=25))
def test_coalesced_effects_leave_the_store_as_the_originals(effects):
    plain = Store(None, history_limit=3)
    merged = Store(None, history_limit=3)
    try:
        plain.apply(effects, applied_index=1, fsm_meta=b"")
        merged.apply(c.coalesce_effects(effects), applied_index=1, fsm_meta=b"")
        assert snapshot(plain) == snapshot(merged)
    finally:
        plain.close()
        merged.close()


def test_repeated_saves_of_a_job_are_written_once():
    effects = [c.JobSaved(job("a", 1)), c.JobSaved(job("b", 1)), c.JobSaved(job("a", 2))]
    assert c.coalesce_effects(effects) == [c.JobSaved(job("b", 1)), c.JobSaved(job("a", 2))]
