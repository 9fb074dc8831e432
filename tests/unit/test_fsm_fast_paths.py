"""The state machine's cheap paths give what the plain ones gave: ``_replace`` is
``attrs.evolve``, and the incremental ``export_meta`` is the full export, after any
sequence of commands (groups opened, retried, closed, jobs deleted, a restore)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trickle.engine import commands as c
from trickle.engine.fsm import StateMachine, _replace, _ts, decode_meta
from trickle.engine.model import Execution, ExecutionStatus, Job, JobStatus, execution_id

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_replace_is_evolve_converters_included() -> None:
    job = Job(name="a", schedule="@every 10s", tags={"k": "v"}, processors={"log": {}})
    for changes in (
        {"next": T0},
        {"success_count": 3, "last_success": T0, "status": "success"},
        {"status": JobStatus.FAILED, "tags": {"x": "y"}},
    ):
        fast, plain = _replace(job, **changes), attrs.evolve(job, **changes)
        assert fast == plain
        assert type(fast.status) is JobStatus
    assert _replace(job, next=T0).tags is job.tags  # unchanged fields are not copied
    ex = Execution(id=execution_id(T0, "n"), job_name="a", node_name="n", group=1, started_at=T0)
    done = _replace(ex, finished_at=T0, success=True, status="success")
    assert done == attrs.evolve(ex, finished_at=T0, success=True, status="success")
    assert done.status is ExecutionStatus.SUCCESS


def test_replace_refuses_a_field_the_class_does_not_have() -> None:
    with pytest.raises(TypeError, match="no field 'nope'"):
        _replace(Job(name="a"), nope=1)


def full_export(fsm: StateMachine) -> dict[str, Any]:
    """export_meta as it was before it became incremental (rebuilt from scratch)."""
    return {
        "groups": {
            str(gid): {
                "job_name": g.job_name,
                "scheduled_at": _ts(g.scheduled_at),
                "trigger": g.trigger,
                "nodes": {
                    node: {"state": n.state, "attempt": n.attempt, "retry_at": _ts(n.retry_at)}
                    for node, n in g.nodes.items()
                },
            }
            for gid, g in fsm._groups.items()
        },
        "children": {
            str(gid): {"parent": d.parent, "children": list(d.children), "at": _ts(d.at)}
            for gid, d in fsm._pending_children.items()
        },
    }


def random_run(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    fsm = StateMachine()
    index = 0
    now = T0
    names = [f"j{i}" for i in range(4)]
    running: list[Execution] = []

    def apply(cmd: c.Command) -> None:
        nonlocal index
        index += 1
        fsm.apply(index, cmd)

    for name in names:
        apply(c.PutJob(job=Job(name=name, schedule="@every 10s", retries=1), now=now))
    for _ in range(steps):
        now += timedelta(milliseconds=rng.randint(1, 500))
        op = rng.random()
        if op < 0.4:  # a fire on one to three nodes (one group)
            name = rng.choice(names)
            if name not in fsm.jobs:
                apply(c.PutJob(job=Job(name=name, schedule="@every 10s", retries=1), now=now))
            gid = int(now.timestamp() * 1e9)
            for k in range(rng.randint(1, 3)):
                at = now + timedelta(microseconds=k)
                ex = Execution(
                    id=execution_id(at, f"n{k}"),
                    job_name=name,
                    node_name=f"n{k}",
                    group=gid,
                    started_at=at,
                    attempt=rng.choice((1, 2)),
                    scheduled_at=now,
                )
                apply(c.RunStarted(execution=ex, next=now + timedelta(seconds=10)))
                running.append(ex)
        elif op < 0.8 and running:  # a result, success or failure (retry or not)
            ex = running.pop(rng.randrange(len(running)))
            apply(
                c.RunFinished(
                    job_name=ex.job_name,
                    execution_id=ex.id,
                    finished_at=now,
                    success=rng.random() < 0.6,
                    output="",
                )
            )
        elif op < 0.85:
            name = rng.choice(names)
            if name in fsm.jobs:
                apply(c.DeleteJob(name=name, now=now))
        elif op < 0.9 and running:
            ex = running.pop(rng.randrange(len(running)))
            apply(
                c.AbandonExecutions(
                    execution_ids=((ex.job_name, ex.id),), finished_at=now, reason="gone"
                )
            )
        elif op < 0.95:  # a restart: restored from what was exported
            meta = fsm.export_meta()
            restored = StateMachine()
            restored.restore(
                applied_index=index, jobs=fsm.jobs.values(), running=fsm.running.values(), meta=meta
            )
            fsm = restored
        if rng.random() < 0.5:  # exported after some batches, not every command
            assert decode_meta(fsm.export_meta()) == full_export(fsm)
    assert decode_meta(fsm.export_meta()) == full_export(fsm)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_incremental_export_meta_equals_the_full_export(seed: int) -> None:
    random_run(seed, steps=120)
