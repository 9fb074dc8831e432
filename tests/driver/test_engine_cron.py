"""The Engine's scheduler on trio's MockClock: virtual months in real seconds."""

from __future__ import annotations

import zoneinfo
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import trio
import trio.testing

from trickle import Engine, EngineConfig, EventKind, ExecutionContext, Job
from trickle.engine.clock import TrioClock

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def make_engine(start: datetime, **config) -> Engine:
    config.setdefault("history_limit", 1000)
    engine = Engine(
        EngineConfig(data_dir=None, node_name="node1", **config), clock=TrioClock(start)
    )
    return engine


async def noop(ctx: ExecutionContext) -> None:
    ctx.output.write(f"fired {ctx.execution.scheduled_at}\n")


async def collect_starts(engine: Engine, until: datetime) -> list:
    starts = []
    with engine.subscribe(kinds=[EventKind.EXECUTION_STARTED]) as sub:
        while True:
            with trio.move_on_at(
                trio.current_time() + (until - engine.clock.now()).total_seconds()
            ):
                event = await sub.receive()
                starts.append(event.execution)
                continue
            return starts


async def test_berlin_0230_job_fires_once_a_day_through_both_dst_changes(autojump_clock):
    """`0 30 2 * * *` Europe/Berlin from March to November: one run per local day, the
    spring-forward day at 03:00 CEST, the fall-back day once, at the first 02:30."""
    start = datetime(2026, 3, 20, tzinfo=UTC)
    until = datetime(2026, 11, 5, tzinfo=UTC)
    async with make_engine(start) as engine:
        engine.register_executor("noop", noop)
        await engine.put_job(
            Job(name="nightly", schedule="0 30 2 * * *", timezone="Europe/Berlin", executor="noop")
        )
        starts = await collect_starts(engine, until)
    local = [ex.scheduled_at.astimezone(BERLIN) for ex in starts]
    per_day = Counter(t.date() for t in local)
    days = (until - start).days
    assert len(per_day) == days
    assert set(per_day.values()) == {1}
    spring = [t for t in local if t.date().isoformat() == "2026-03-29"]
    assert [(t.hour, t.minute) for t in spring] == [(3, 0)]
    fall = [t for t in local if t.date().isoformat() == "2026-10-25"]
    assert len(fall) == 1 and fall[0].fold == 0 and (fall[0].hour, fall[0].minute) == (2, 30)
    assert fall[0].utcoffset() == timedelta(hours=2)
    others = [t for t in local if t.date().isoformat() not in ("2026-03-29",)]
    assert {(t.hour, t.minute) for t in others} == {(2, 30)}


async def test_every_job_keeps_its_phase_and_never_fires_early(autojump_clock):
    start = datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC)
    async with make_engine(start) as engine:
        engine.register_executor("noop", noop)
        await engine.put_job(Job(name="tick", schedule="@every 10s", executor="noop"))
        starts = await collect_starts(engine, start + timedelta(minutes=5, seconds=5))
    assert len(starts) == 30
    for ex in starts:
        assert ex.started_at >= ex.scheduled_at
        assert (ex.scheduled_at - start).total_seconds() % 10 == 0


async def test_run_finishes_and_counts_on_the_job(autojump_clock):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with make_engine(start) as engine:
        engine.register_executor("noop", noop)
        await engine.put_job(Job(name="tick", schedule="@every 1m", executor="noop"))
        with engine.subscribe(kinds=[EventKind.EXECUTION_FINISHED]) as sub:
            for _ in range(3):
                await sub.receive()
        job = await engine.get_job("tick")
        assert job.success_count == 3 and job.status == "success"
        page, total = await engine.list_executions("tick")
        assert total == 3 and page[0].started_at > page[-1].started_at
        assert page[0].output.startswith("fired ")


async def test_failed_run_is_retried_after_retry_interval(autojump_clock):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    attempts = []

    async def flaky(ctx: ExecutionContext) -> bool:
        attempts.append((ctx.execution.attempt, engine.clock.now()))
        return ctx.execution.attempt >= 3

    engine = make_engine(start)
    async with engine:
        engine.register_executor("flaky", flaky)
        await engine.put_job(
            Job(name="f", schedule="@manually", executor="flaky", retries=5, retry_interval=30.0)
        )
        with engine.subscribe(kinds=[EventKind.EXECUTION_FINISHED]) as sub:
            await engine.run_job("f")
            finished = [(await sub.receive()).execution for _ in range(3)]
    assert [a for a, _ in attempts] == [1, 2, 3]
    assert (attempts[1][1] - attempts[0][1]).total_seconds() >= 30
    assert [e.success for e in finished] == [False, False, True]
    assert len({e.group for e in finished}) == 1
    assert (await engine.get_job("f")).status == "success"


async def test_child_runs_after_parent_succeeds(autojump_clock):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with make_engine(start) as engine:
        engine.register_executor("noop", noop)
        await engine.put_job(Job(name="parent", schedule="@manually", executor="noop"))
        await engine.put_job(Job(name="child", parent_job="parent", executor="noop"))
        with engine.subscribe(kinds=[EventKind.EXECUTION_FINISHED]) as sub:
            await engine.run_job("parent")
            first = (await sub.receive()).execution
            second = (await sub.receive()).execution
    assert (first.job_name, second.job_name) == ("parent", "child")
    assert second.trigger == "dependent"


async def test_forbid_skips_fire_while_previous_run_is_active(autojump_clock):
    start = datetime(2026, 1, 1, tzinfo=UTC)

    async def slow(ctx: ExecutionContext) -> None:
        await trio.sleep(25)

    async with make_engine(start) as engine:
        engine.register_executor("slow", slow)
        await engine.put_job(
            Job(name="s", schedule="@every 10s", executor="slow", concurrency="forbid")
        )
        with engine.subscribe(kinds=[EventKind.FIRE_SKIPPED, EventKind.EXECUTION_STARTED]) as sub:
            kinds = [(await sub.receive()).kind for _ in range(4)]
    assert kinds == [
        EventKind.EXECUTION_STARTED,
        EventKind.FIRE_SKIPPED,
        EventKind.FIRE_SKIPPED,
        EventKind.EXECUTION_STARTED,
    ]


async def test_manual_run_respects_forbid_regression(autojump_clock):
    from trickle import ConcurrencyForbidden

    start = datetime(2026, 1, 1, tzinfo=UTC)
    gate = trio.Event()

    async def blocked(ctx: ExecutionContext) -> None:
        await gate.wait()

    async with make_engine(start) as engine:
        engine.register_executor("blocked", blocked)
        await engine.put_job(
            Job(name="b", schedule="@manually", executor="blocked", concurrency="forbid")
        )
        await engine.run_job("b")
        with pytest.raises(ConcurrencyForbidden):
            await engine.run_job("b")
        gate.set()


async def test_slow_subscriber_gets_a_lag_event_and_never_blocks_the_engine(autojump_clock):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with make_engine(start) as engine:
        engine.register_executor("noop", noop)
        slow = engine.subscribe(maxsize=5)
        await engine.put_job(Job(name="tick", schedule="@every 1s", executor="noop"))
        with engine.subscribe(kinds=[EventKind.EXECUTION_FINISHED]) as fast:
            for _ in range(20):
                await fast.receive()
        received = [await slow.receive() for _ in range(6)]
        assert received[5].kind == EventKind.LAGGED
        assert received[5].data["dropped"] > 0
        slow.close()


async def test_runs_beyond_the_node_limit_wait_in_the_queue_and_are_never_dropped(
    autojump_clock,
):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    gates = {name: trio.Event() for name in ("a", "b", "c")}

    async def gated(ctx: ExecutionContext) -> None:
        await gates[ctx.job.name].wait()

    async with make_engine(start, max_concurrent=1, executor_limits={"gated": 1}) as engine:
        engine.register_executor("gated", gated)
        for name in gates:
            await engine.put_job(Job(name=name, schedule="@manually", executor="gated"))
        with engine.subscribe(kinds=[EventKind.EXECUTION_FINISHED]) as sub:
            for name in gates:
                await engine.run_job(name)
            await trio.testing.wait_all_tasks_blocked()
            busy = {b.execution.job_name: b.queued for b in engine.busy()}
            assert busy == {"a": False, "b": True, "c": True}
            assert engine.statistics().queued_executions == 2
            finished = []
            for name in gates:
                gates[name].set()
                finished.append((await sub.receive()).execution.job_name)
    assert finished == ["a", "b", "c"]


async def test_unknown_executor_is_refused_at_create_listing_the_known_ones(autojump_clock):
    from trickle import ValidationError

    async with make_engine(datetime(2026, 1, 1, tzinfo=UTC)) as engine:
        with pytest.raises(ValidationError) as info:
            await engine.put_job(Job(name="x", schedule="@daily", executor="nope"))
        assert info.value.field == "executor"
        assert "http" in info.value.message and "shell" in info.value.message
        assert (await engine.list_jobs())[1] == 0


async def test_expired_job_stops_firing_and_is_kept(autojump_clock):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with make_engine(start) as engine:
        engine.register_executor("noop", noop)
        await engine.put_job(
            Job(
                name="e",
                schedule="@every 10s",
                executor="noop",
                expires_at=start + timedelta(seconds=35),
            )
        )
        starts = await collect_starts(engine, start + timedelta(minutes=2))
        assert len(starts) == 3
        assert (await engine.get_job("e")).next is None


async def test_drain_stops_launching_and_waits_for_running_executions(autojump_clock):
    from trickle import EngineClosed

    start = datetime(2026, 1, 1, tzinfo=UTC)
    finished = []

    async def work(ctx: ExecutionContext) -> None:
        await trio.sleep(20)
        finished.append(ctx.execution.id)

    async with make_engine(start) as engine:
        engine.register_executor("work", work)
        await engine.put_job(Job(name="w", schedule="@every 10s", executor="work"))
        with engine.subscribe(kinds=[EventKind.EXECUTION_STARTED]) as sub:
            await sub.receive()
        assert await engine.drain(grace=60)
        assert len(finished) == 1 and engine.busy() == []
        with pytest.raises(EngineClosed):
            await engine.run_job("w")
        await trio.sleep(60)
        assert len(finished) == 1


async def test_drain_gives_up_after_the_timeout(autojump_clock):
    async def hang(ctx: ExecutionContext) -> None:
        await trio.sleep_forever()

    async with make_engine(datetime(2026, 1, 1, tzinfo=UTC)) as engine:
        engine.register_executor("hang", hang)
        await engine.put_job(Job(name="h", schedule="@manually", executor="hang"))
        await engine.run_job("h")
        assert not await engine.drain(grace=5)
        assert len(engine.busy()) == 1


async def test_breaking_out_of_async_for_over_a_subscription_leaks_nothing(autojump_clock):
    async with make_engine(datetime(2026, 1, 1, tzinfo=UTC)) as engine:
        engine.register_executor("noop", noop)
        await engine.put_job(Job(name="t", schedule="@every 1s", executor="noop"))
        async with engine.subscribe(kinds=[EventKind.EXECUTION_FINISHED]) as sub:
            async for event in sub:
                assert event.execution is not None
                break
        assert engine.statistics().subscribers == 0


async def test_fires_the_scheduler_falls_behind_on_are_recorded_as_missed(autojump_clock):
    """A scheduler blocked for longer than a period runs the late fire once and records
    the fires it jumped over, never dropping them silently."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with make_engine(start) as engine:
        engine.register_executor("noop", noop)
        await engine.put_job(Job(name="t", schedule="@every 1s", executor="noop"))
        with engine.subscribe(kinds=[EventKind.FIRE_MISSED, EventKind.EXECUTION_STARTED]) as sub:
            first = await sub.receive()
            assert first.kind == EventKind.EXECUTION_STARTED
            # Time jumps past three more fires at once, as if the loop had been blocked:
            # the fire at +2 s runs late, those at +3 s and +4 s are recorded as missed.
            autojump_clock.jump(3.5)
            events = [await sub.receive() for _ in range(2)]
        kinds = {e.kind for e in events}
        assert EventKind.FIRE_MISSED in kinds
        missed = next(e for e in events if e.kind == EventKind.FIRE_MISSED)
        assert missed.data["count"] == 2
        assert "fell behind" in missed.execution.output
        assert (await engine.get_job("t")).missed_count == 2


async def test_restored_every_jobs_do_not_all_fire_in_the_same_instant(autojump_clock):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with make_engine(start) as engine:
        engine.register_executor("noop", noop)
        jobs = [Job(name=f"r{i}", schedule="@every 10s", executor="noop") for i in range(50)]
        await engine.restore(jobs)
        nexts = {(await engine.get_job(f"r{i}")).next for i in range(50)}
        assert len(nexts) == 50
        assert max(nexts) - min(nexts) < timedelta(seconds=1)


async def test_an_error_in_the_async_with_body_propagates_unwrapped(autojump_clock):
    with pytest.raises(ValueError, match="mine"):
        async with make_engine(datetime(2026, 1, 1, tzinfo=UTC)):
            raise ValueError("mine")


async def test_an_engine_stopped_by_an_outer_cancel_scope_exits_quietly(autojump_clock):
    engine = make_engine(datetime(2026, 1, 1, tzinfo=UTC))
    with trio.CancelScope() as scope:
        async with engine:
            assert engine.running
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught and not engine.running


async def test_concurrency_limit_caps_runs_of_a_job_and_records_the_fires_beyond_it(
    autojump_clock,
):
    from trickle import ConcurrencyLimitReached

    start = datetime(2026, 1, 1, tzinfo=UTC)
    gate = trio.Event()

    async def blocked(ctx: ExecutionContext) -> None:
        await gate.wait()

    async with make_engine(start) as engine:
        engine.register_executor("blocked", blocked)
        await engine.put_job(
            Job(name="c", schedule="@every 10s", executor="blocked", concurrency_limit=2)
        )
        await engine.put_job(Job(name="m", schedule="@manually", executor="blocked"))
        with engine.subscribe(kinds=[EventKind.FIRE_SKIPPED, EventKind.EXECUTION_STARTED]) as sub:
            kinds = [(await sub.receive()).kind for _ in range(3)]
        assert kinds == [
            EventKind.EXECUTION_STARTED,
            EventKind.EXECUTION_STARTED,
            EventKind.FIRE_SKIPPED,
        ]
        job = await engine.get_job("c")
        assert job.skipped_count == 1
        assert job.last_skip_reason.startswith("concurrency limit: 2 runs of the job")
        with pytest.raises(ConcurrencyLimitReached):
            await engine.run_job("c")
        await engine.run_job("m")  # another job is not limited by it
        gate.set()


async def test_the_cluster_cap_skips_fires_of_every_job_beyond_it(autojump_clock):
    from trickle import ClusterAtCapacity

    start = datetime(2026, 1, 1, tzinfo=UTC)
    gate = trio.Event()

    async def blocked(ctx: ExecutionContext) -> None:
        await gate.wait()

    async with make_engine(start, cluster_max_running=1) as engine:
        engine.register_executor("blocked", blocked)
        await engine.put_job(Job(name="a", schedule="@every 10s", executor="blocked"))
        await engine.put_job(Job(name="m", schedule="@manually", executor="blocked"))
        with engine.subscribe(kinds=[EventKind.EXECUTION_STARTED]) as sub:
            await sub.receive()
        with pytest.raises(ClusterAtCapacity):
            await engine.run_job("m")
        with engine.subscribe(kinds=[EventKind.FIRE_SKIPPED]) as sub:
            event = await sub.receive()
        assert event.data["reason"].startswith("cluster at capacity: 1 runs are running")
        gate.set()
