"""The Engine on a real SQLite data dir across restarts: state kept, orphans failed, missed
fires caught up inside the window and recorded as missed outside it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import trio

from trickle import Engine, EngineConfig, EventKind, ExecutionContext, Job
from trickle.testing.clock import ManualClock

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def engine_at(data_dir, clock: ManualClock) -> Engine:
    engine = Engine(EngineConfig(data_dir=data_dir, node_name="n1"), clock=clock)

    async def noop(ctx: ExecutionContext) -> None:
        ctx.output.write("ok\n")

    async def hang(ctx: ExecutionContext) -> None:
        ctx.output.write("started\n")
        await trio.sleep_forever()

    engine.register_executor("noop", noop)
    engine.register_executor("hang", hang)
    return engine


async def test_restart_keeps_jobs_history_and_counters(tmp_path):
    clock = ManualClock(T0)
    async with engine_at(tmp_path, clock) as engine:
        await engine.put_job(
            Job(name="a", schedule="@manually", executor="noop", metadata={"team": "ops"})
        )
        with engine.subscribe(kinds=[EventKind.EXECUTION_FINISHED]) as sub:
            await engine.run_job("a")
            await sub.receive()
    async with engine_at(tmp_path, clock) as engine:
        job = await engine.get_job("a")
        assert job.metadata == {"team": "ops"} and job.success_count == 1
        page, total = await engine.list_executions("a")
        assert total == 1 and page[0].output == "ok\n" and page[0].success


async def test_execution_running_when_the_node_stopped_is_failed_at_restart(tmp_path):
    clock = ManualClock(T0)
    async with engine_at(tmp_path, clock) as engine:
        await engine.put_job(Job(name="h", schedule="@manually", executor="hang"))
        with engine.subscribe(kinds=[EventKind.EXECUTION_OUTPUT]) as sub:
            await engine.run_job("h")
            await sub.receive()
        [busy] = engine.busy()
        assert not busy.queued
    clock.set(T0 + timedelta(minutes=1))
    async with engine_at(tmp_path, clock) as engine:
        [ex], _ = await engine.list_executions("h")
        assert ex.finished_at is not None and not ex.success
        assert ex.status == "failed"
        assert "stopped while the execution was running" in ex.output
        assert (await engine.get_job("h")).error_count == 1
        assert engine.busy() == []


async def test_missed_fires_inside_the_window_run_once_late(tmp_path):
    clock = ManualClock(T0)
    async with engine_at(tmp_path, clock) as engine:
        await engine.put_job(
            Job(name="m", schedule="@every 1m", executor="noop", catchup_window=300.0)
        )
    clock.set(T0 + timedelta(seconds=200))  # fires at +60, +120, +180 fell while stopped
    engine = engine_at(tmp_path, clock)
    with engine.subscribe(kinds=[EventKind.EXECUTION_FINISHED, EventKind.FIRE_MISSED]) as sub:
        async with engine:
            first = await sub.receive()
            second = await sub.receive()
            events = {first.kind: first, second.kind: second}
            missed = events[EventKind.FIRE_MISSED]
            late = events[EventKind.EXECUTION_FINISHED].execution
            assert missed.data["count"] == 2
            assert late.trigger == "catchup"
            assert late.scheduled_at == T0 + timedelta(seconds=180)
            job = await engine.get_job("m")
            assert job.missed_count == 2
            assert job.next == T0 + timedelta(seconds=240)


async def test_missed_fire_outside_the_window_is_recorded_not_run(tmp_path):
    clock = ManualClock(T0)
    async with engine_at(tmp_path, clock) as engine:
        await engine.put_job(
            Job(name="h", schedule="@every 1h", executor="noop", catchup_window=600.0)
        )
    clock.set(T0 + timedelta(minutes=90))
    async with engine_at(tmp_path, clock) as engine:
        page, total = await engine.list_executions("h")
        assert total == 1
        [record] = page
        assert record.status == "missed" and not record.success
        assert record.scheduled_at == T0 + timedelta(hours=1)
        assert "outside the catch-up window" in record.output
        job = await engine.get_job("h")
        assert job.missed_count == 1 and job.error_count == 0
        assert job.next == T0 + timedelta(hours=2)
        assert engine.busy() == []


async def test_disabled_job_does_not_count_fires_missed_while_disabled(tmp_path):
    clock = ManualClock(T0)
    async with engine_at(tmp_path, clock) as engine:
        await engine.put_job(Job(name="d", schedule="@every 1m", executor="noop"))
        await engine.toggle_job("d")
    clock.set(T0 + timedelta(hours=3))
    async with engine_at(tmp_path, clock) as engine:
        job = await engine.toggle_job("d")
        assert not job.disabled and job.missed_count == 0
        assert job.next is not None and job.next > clock.now()
        _, total = await engine.list_executions("d")
        assert total == 0


def _open_files_under(directory) -> list[str]:
    """Files under ``directory`` this process holds open (Linux: /proc/self/fd)."""
    import os

    root = str(directory)
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
        if target.startswith(root):
            held.append(target)
    return held


async def test_a_stopped_engine_holds_no_file_of_its_data_dir_open(tmp_path):
    clock = ManualClock(T0)
    engine = engine_at(tmp_path, clock)
    async with engine:
        await engine.put_job(Job(name="a", schedule="@manually", executor="noop"))
        with engine.subscribe(kinds=[EventKind.EXECUTION_FINISHED]) as sub:
            await engine.run_job("a")
            await sub.receive()
        assert _open_files_under(tmp_path)  # the store, raft.db, the launch journal, ...
    assert _open_files_under(tmp_path) == []  # the engine object is still referenced
