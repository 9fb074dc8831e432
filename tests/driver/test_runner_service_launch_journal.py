"""A server's RunnerService with a launch journal: after a restart of its process on the
same boot it knows the runs its earlier process launched (by the Engine, or accepted from a
leader's dispatch), and since when it knows every launch; after a reboot, only its own."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio

from trickle.engine.dispatch import Dispatch, RunnerService
from trickle.engine.journal import LaunchJournal
from trickle.engine.model import BusyExecution, Execution, Job, execution_id
from trickle.raft.messages import NodeId
from trickle.testing.raftnet import MemoryNetwork

T0 = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
JOB = Job(name="backup", schedule="@every 1m", executor="shell")


class Runner:
    def __init__(self) -> None:
        self.submitted: list[str] = []

    def submit(self, job: Job, execution: Execution) -> None:
        self.submitted.append(execution.id)

    def is_active(self, execution_id: str) -> bool:
        return False

    def busy(self) -> list[BusyExecution]:
        return []


def service(directory: Path, now: datetime, boot: str) -> tuple[RunnerService, Runner]:
    runner = Runner()
    svc = RunnerService(
        node_name="s1",
        transport=MemoryNetwork(rng=random.Random(1)).transport(NodeId("s1")),
        runner=runner,
        servers=lambda: ["s1"],
        rng=random.Random(2),
        clock=lambda: now,
        launches=LaunchJournal(directory, boot_id=lambda: boot),
    )
    return svc, runner


def run_at(seconds: float) -> Execution:
    at = T0 + timedelta(seconds=seconds)
    return Execution(
        id=execution_id(at, "s1"), job_name=JOB.name, node_name="s1", group=1, started_at=at
    )


async def test_a_restart_knows_what_the_earlier_process_launched(tmp_path: Path) -> None:
    first, runner = service(tmp_path, T0, "boot-1")
    assert not first.journal_trusted  # a first start: nothing earlier to go by
    own, dispatched, never = run_at(1), run_at(2), run_at(3)
    first.launched_here(own.id)  # a server's own run, launched by the Engine
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        answer = first.accept(Dispatch(job=JOB, execution=dispatched, term=1, leader="s2"))
        assert answer.accepted and runner.submitted == [dispatched.id]
        nursery.cancel_scope.cancel()

    second, _ = service(tmp_path, T0 + timedelta(seconds=10), "boot-1")  # the same boot
    assert second.journal_trusted
    assert second.since == T0  # every launch since the first start is known
    assert second.knows(own.id) and second.launched_before_restart(own.id)
    assert second.knows(dispatched.id) and second.launched_before_restart(dispatched.id)
    assert not second.knows(never.id)  # committed for it, never launched: a leader may launch it
    assert second.state([own.id, never.id]).known == (own.id,)


async def test_after_a_reboot_only_this_process_counts(tmp_path: Path) -> None:
    first, _ = service(tmp_path, T0, "boot-1")
    first.launched_here(run_at(1).id)
    later = T0 + timedelta(minutes=5)
    second, _ = service(tmp_path, later, "boot-2")
    assert not second.journal_trusted
    assert not second.knows(run_at(1).id)
    # when this process began (Trio's clock since the service was made): as without one
    assert later - timedelta(seconds=1) < second.since <= later
    assert not second.launched_before_restart(run_at(1).id)
