"""Launch ahead on trio's MockClock: a scheduled fire's intent is committed before its
instant and the run is launched exactly at it, with every guarantee of launch-after-commit
(forbid, deleted/disabled jobs, drain, manual runs) kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import trio
import trio.testing

from trickle import Engine, EngineConfig, EventKind, ExecutionContext, Job
from trickle.engine._engine import LAUNCH_AHEAD, LAUNCH_AHEAD_MIN
from trickle.engine.clock import TrioClock

START = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
FIRST = START + timedelta(seconds=10)  # the first fire of an `@every 10s` job stored at START
INSIDE = FIRST - LAUNCH_AHEAD_MIN / 2  # committed, not launched yet


def make_engine() -> Engine:
    return Engine(
        EngineConfig(data_dir=None, node_name="node1", history_limit=1000),
        clock=TrioClock(START),
    )


class Calls:
    """An executor that records the engine clock's reading when it is called."""

    def __init__(self, engine: Engine, seconds: float = 0.0) -> None:
        self.engine = engine
        self.seconds = seconds
        self.at: list[datetime] = []

    async def __call__(self, ctx: ExecutionContext) -> None:
        self.at.append(self.engine.clock.now())
        if self.seconds:
            await trio.sleep(self.seconds)


async def until(engine: Engine, when: datetime) -> None:
    await engine.clock.sleep_until(when)


async def test_the_intent_is_committed_ahead_and_the_run_launched_at_its_instant(
    autojump_clock,
):
    async with make_engine() as engine:
        calls = Calls(engine)
        engine.register_executor("noop", calls)
        await engine.put_job(Job(name="tick", schedule="@every 10s", executor="noop"))
        with engine.subscribe(kinds=[EventKind.EXECUTION_STARTED]) as sub:
            await until(engine, INSIDE)
            page, total = await engine.list_executions("tick")
            assert total == 1  # durable before the launch
            [record] = page
            assert record.status == "running"
            assert record.scheduled_at == FIRST and record.started_at == FIRST
            assert (await engine.get_job("tick")).next == FIRST + timedelta(seconds=10)
            assert calls.at == []
            event = await sub.receive()  # published when launched, not when committed
            assert engine.clock.now() == FIRST
            assert event.execution.started_at == FIRST
        await until(engine, FIRST + timedelta(seconds=35))
    assert calls.at == [FIRST + timedelta(seconds=10 * k) for k in range(4)]


async def test_fires_of_the_same_instant_launch_together_with_distinct_ids(autojump_clock):
    async with make_engine() as engine:
        calls = Calls(engine)
        engine.register_executor("noop", calls)
        for i in range(5):
            await engine.put_job(Job(name=f"j{i}", schedule="@every 10s", executor="noop"))
        await until(engine, FIRST + timedelta(seconds=1))
        ids = set()
        for i in range(5):
            [record], _ = await engine.list_executions(f"j{i}")
            assert record.success and record.scheduled_at == FIRST
            assert abs(record.started_at - FIRST) < timedelta(milliseconds=1)
            ids.add(record.id)
    assert len(ids) == 5
    assert calls.at == [FIRST] * 5


async def test_forbid_run_ending_inside_the_lead_window_does_not_skip_the_next_fire(
    autojump_clock,
):
    async with make_engine() as engine:
        # each run ends 5 ms before the next fire: after the scheduler's usual lead
        calls = Calls(engine, seconds=10 - 0.005)
        engine.register_executor("slow", calls)
        await engine.put_job(
            Job(name="f", schedule="@every 10s", executor="slow", concurrency="forbid")
        )
        await until(engine, FIRST + timedelta(seconds=31))
    assert calls.at == [FIRST + timedelta(seconds=10 * k) for k in range(4)]
    assert engine.statistics().fires_skipped == 0


async def test_forbid_run_still_active_at_the_instant_skips_the_fire(autojump_clock):
    async with make_engine() as engine:
        calls = Calls(engine, seconds=15)
        engine.register_executor("slow", calls)
        with engine.subscribe(kinds=[EventKind.FIRE_SKIPPED]) as skipped:
            await engine.put_job(
                Job(name="f", schedule="@every 10s", executor="slow", concurrency="forbid")
            )
            event = await skipped.receive()
            assert event.data["scheduled_at"] == (FIRST + timedelta(seconds=10)).isoformat()
            assert "forbid" in event.data["reason"]
            assert engine.clock.now() == FIRST + timedelta(seconds=10)  # decided on time
        await until(engine, FIRST + timedelta(seconds=21))
    assert calls.at == [FIRST, FIRST + timedelta(seconds=20)]


async def test_job_deleted_inside_the_lead_window_is_not_run_and_its_intent_is_failed(
    autojump_clock,
):
    async with make_engine() as engine:
        calls = Calls(engine)
        engine.register_executor("noop", calls)
        await engine.put_job(Job(name="gone", schedule="@every 10s", executor="noop"))
        with engine.subscribe(
            kinds=[EventKind.EXECUTION_STARTED, EventKind.EXECUTION_FINISHED]
        ) as sub:
            await until(engine, INSIDE)
            await engine.delete_job("gone")
            started = await sub.receive()
            finished = await sub.receive()
        assert started.kind == EventKind.EXECUTION_STARTED
        assert finished.kind == EventKind.EXECUTION_FINISHED
        assert not finished.execution.success
        assert "deleted before the run's scheduled launch" in finished.execution.output
        await until(engine, FIRST + timedelta(seconds=30))
        assert engine._fsm.running == {}
    assert calls.at == []


async def test_job_disabled_or_updated_inside_the_lead_window_runs_the_committed_fire_once(
    autojump_clock,
):
    async with make_engine() as engine:
        calls = Calls(engine)
        engine.register_executor("noop", calls)
        engine.register_executor("other", calls)
        await engine.put_job(Job(name="d", schedule="@every 10s", executor="noop"))
        await engine.put_job(Job(name="u", schedule="@every 10s", executor="noop"))
        await until(engine, INSIDE)
        await engine.toggle_job("d")
        await engine.put_job(Job(name="u", schedule="@every 1m", executor="other"))
        await until(engine, FIRST + timedelta(seconds=45))
        [d_run], _ = await engine.list_executions("d")
        assert d_run.success and d_run.scheduled_at == FIRST
        u_runs, _ = await engine.list_executions("u")
        assert [r.scheduled_at for r in u_runs] == [FIRST]  # the new schedule: next at +1m
        assert engine._fsm.running == {}
    assert calls.at == [FIRST, FIRST]


async def test_drain_inside_the_lead_window_fails_the_committed_run_unlaunched(
    autojump_clock,
):
    async with make_engine() as engine:
        calls = Calls(engine)
        engine.register_executor("noop", calls)
        await engine.put_job(Job(name="t", schedule="@every 10s", executor="noop"))
        await until(engine, INSIDE)
        assert await engine.drain(grace=5)
        [record], _ = await engine.list_executions("t")
        assert record.status == "failed"
        assert "drained before the run's scheduled launch" in record.output
        assert engine._fsm.running == {}
        await until(engine, FIRST + timedelta(seconds=30))
    assert calls.at == []


async def test_manual_runs_start_at_once_while_fires_wait_for_their_instant(autojump_clock):
    async with make_engine() as engine:
        calls = Calls(engine)
        engine.register_executor("noop", calls)
        await engine.put_job(Job(name="m", schedule="@every 10s", executor="noop"))
        await engine.put_job(Job(name="h", schedule="@manually", executor="noop"))
        await until(engine, INSIDE)
        await engine.run_job("h")
        [manual], _ = await engine.list_executions("h")
        assert manual.started_at == INSIDE and manual.trigger == "manual"
        await until(engine, FIRST + timedelta(seconds=1))
    assert calls.at == [INSIDE, FIRST]


async def test_fires_far_apart_are_not_committed_before_the_lead_window(autojump_clock):
    async with make_engine() as engine:
        engine.register_executor("noop", Calls(engine))
        await engine.put_job(Job(name="t", schedule="@every 10s", executor="noop"))
        await until(engine, FIRST - LAUNCH_AHEAD - timedelta(milliseconds=1))
        assert (await engine.list_executions("t"))[1] == 0


class SpinningClock(TrioClock):
    """A test clock that says it can busy-wait (as the system clock does), so that the
    engine launches its runs ``launch_spin`` early; the runner then sleeps to the
    instant (MockClock time cannot pass in a busy loop)."""

    def spin_until(self, when: datetime) -> None:
        pass


@pytest.mark.parametrize("spin", [0.002, 0.0])
async def test_with_launch_spin_a_run_is_launched_that_early_and_starts_on_its_instant(
    autojump_clock, spin: float
):
    engine = Engine(
        EngineConfig(data_dir=None, node_name="node1", launch_spin=spin),
        clock=SpinningClock(START),
    )
    async with engine:
        calls = Calls(engine)
        engine.register_executor("noop", calls)
        await engine.put_job(Job(name="tick", schedule="@every 10s", executor="noop"))
        with engine.subscribe(kinds=[EventKind.EXECUTION_STARTED]) as sub:
            await sub.receive()  # published at the launch
            assert engine.clock.now() == FIRST - timedelta(seconds=spin)
            if spin:
                assert calls.at == []  # launched, not started (without spin: both now)
        await until(engine, FIRST + timedelta(seconds=1))
    assert calls.at == [FIRST]
