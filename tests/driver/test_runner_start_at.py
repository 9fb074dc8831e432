"""A run launched a moment before its instant (``start_at``) starts its executor at that
instant, never before: spinning on the system clock, sleeping on a test clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import trio
import trio.testing

from trickle.engine.clock import Clock, SystemClock, TrioClock
from trickle.engine.commands import RunFinished
from trickle.engine.executors.base import ExecutionContext
from trickle.engine.executors.registry import ExecutorRegistry
from trickle.engine.model import Execution, ExecutionId, Job
from trickle.engine.processors import ProcessorRegistry
from trickle.engine.runner import Runner


def make_runner(
    clock: Clock,
    executors: ExecutorRegistry,
    executor_limits: dict[str, int] | None = None,
) -> Runner:
    async def report(finished: RunFinished) -> None:
        pass

    return Runner(
        node_name="n1",
        executors=executors,
        processors=ProcessorRegistry(),
        clock=clock,
        output_limit=1000,
        max_concurrent=0,
        executor_limits=executor_limits or {},
        on_output=lambda ex, text: None,
        on_start=lambda ex, at: None,
        report=report,
    )


def time_recording_runner(clock: SystemClock | TrioClock, started: list[datetime]) -> Runner:
    """A runner whose "record" executor notes when it started."""
    executors = ExecutorRegistry()

    async def record(ctx: ExecutionContext) -> None:
        started.append(clock.now())

    executors.register_python("record", record)
    return make_runner(clock, executors)


def execution(at: datetime) -> Execution:
    return Execution(
        id=ExecutionId(f"{int(at.timestamp() * 1e9)}-n1"),
        job_name="j",
        node_name="n1",
        group=1,
        started_at=at,
        scheduled_at=at,
    )


JOB = Job(name="j", schedule="@every 1m", executor="record")


async def run_launched_early(
    clock: SystemClock | TrioClock, early: float
) -> tuple[datetime, list[datetime]]:
    """Submit a run whose instant is ``early`` seconds away, launched now; wait for it.
    -> (its instant, when its executor started)."""
    started: list[datetime] = []
    runner = time_recording_runner(clock, started)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        at = clock.now() + timedelta(seconds=early)
        runner.submit(JOB, execution(at), start_at=at)
        await runner.wait_idle()
        nursery.cancel_scope.cancel()
    return at, started


async def test_on_the_system_clock_the_executor_starts_at_the_instant_not_before() -> None:
    at, started = await run_launched_early(SystemClock(), 0.0003)
    assert len(started) == 1 and started[0] >= at


async def test_on_a_clock_that_cannot_spin_the_run_sleeps_until_its_instant(
    autojump_clock: trio.testing.MockClock,
) -> None:
    at, started = await run_launched_early(TrioClock(datetime(2026, 1, 1, tzinfo=UTC)), 5)
    assert started == [at]


def test_the_system_clock_never_spins_long_for_a_far_instant() -> None:
    clock = SystemClock()
    far = clock.now() + timedelta(seconds=60)
    clock.spin_until(far)  # returns at once (a clock step, not a launch a moment early)
    assert clock.now() < far


def test_after_a_spin_the_clock_reads_the_instant_or_later() -> None:
    # The spin compared time.time() with when.timestamp(), floats, while now() floors
    # the time to the microsecond: a third of spins ended a hair before the instant by
    # now(), and the run then slept on a timer for it.
    clock = SystemClock()
    for _ in range(2000):
        when = clock.now() + timedelta(microseconds=3)
        clock.spin_until(when)
        assert clock.now() >= when


def id_recording_runner(clock: Clock, order: list[str]) -> Runner:
    """A runner whose "record" executor notes which run started."""
    executors = ExecutorRegistry()

    async def record(ctx: ExecutionContext) -> None:
        order.append(ctx.execution.id)

    executors.register_python("record", record)
    return make_runner(clock, executors)


class SpinningClock:
    """A clock that spins as the system clock does, but on time the test owns: a spin
    steps it to the instant, and nothing else moves it. On the real clock a loaded host
    descheduling the process makes every run of a burst late, and late runs go at once
    in Trio's order (by design); here none is late but by the spins."""

    def __init__(self, start: datetime) -> None:
        self.time = start

    def now(self) -> datetime:
        return self.time

    def spin_until(self, when: datetime) -> None:
        self.time = max(self.time, when)

    async def sleep_until(self, when: datetime) -> None:
        self.time = max(self.time, when)
        await trio.lowlevel.checkpoint()


async def test_runs_launched_together_start_in_the_order_of_their_instants() -> None:
    # Trio runs the launched tasks in its own order; a run spinning to a later instant
    # must not hold an earlier one back. Submitted latest first, several times over.
    clock = SpinningClock(datetime(2026, 1, 1, tzinfo=UTC))
    for _ in range(5):
        order: list[str] = []
        runner = id_recording_runner(clock, order)
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
            base = clock.now() + timedelta(seconds=0.0005)
            instants = [base + timedelta(microseconds=100 * i) for i in range(4)]
            for at in reversed(instants):
                runner.submit(JOB, execution(at), start_at=at)
            await runner.wait_idle()
            nursery.cancel_scope.cancel()
        assert order == [execution(at).id for at in instants]


async def test_a_run_queued_behind_a_limit_does_not_hold_back_a_later_run() -> None:
    clock = SystemClock()
    release, recorded = trio.Event(), trio.Event()
    started: list[str] = []
    executors = ExecutorRegistry()

    async def block(ctx: ExecutionContext) -> None:
        started.append(ctx.execution.id)
        await release.wait()

    async def record(ctx: ExecutionContext) -> None:
        started.append(ctx.execution.id)
        recorded.set()

    executors.register_python("block", block)
    executors.register_python("record", record)
    runner = make_runner(clock, executors, {"block": 1})
    blocking = Job(name="b", schedule="@every 1m", executor="block")
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        first = clock.now()
        runner.submit(blocking, execution(first))  # holds the limit
        await trio.testing.wait_all_tasks_blocked()
        queued_at = clock.now() + timedelta(seconds=0.0002)
        later = queued_at + timedelta(seconds=0.0002)
        runner.submit(blocking, execution(queued_at), start_at=queued_at)  # queued
        runner.submit(JOB, execution(later), start_at=later)
        with trio.fail_after(5):
            await recorded.wait()
        assert started == [execution(first).id, execution(later).id]
        release.set()
        await runner.wait_idle()
        nursery.cancel_scope.cancel()
    assert started[-1] == execution(queued_at).id
