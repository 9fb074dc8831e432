"""The launch guard: background work stands aside just before a run's launch, once."""

from __future__ import annotations

import time

import pytest
import trio
import trio.testing

from trickle.engine.guard import LaunchGuard


async def test_standing_aside_with_no_launch_near_returns_at_once_without_a_checkpoint() -> None:
    guard = LaunchGuard(lead=0.001)
    with trio.testing.assert_no_checkpoints():
        await guard.stand_aside()  # no launch held
    guard.expect(trio.current_time() + 1.0)
    with trio.testing.assert_no_checkpoints():
        await guard.stand_aside()  # one a second away
    assert guard.waits == 0


async def test_a_task_near_a_launch_waits_for_it_and_runs_after_the_runs_it_started() -> None:
    guard = LaunchGuard(lead=0.001)
    order: list[str] = []
    guard.expect(trio.current_time() + 0.0005)

    async def background() -> None:
        await guard.stand_aside()
        order.append("background")

    async def run() -> None:
        order.append("run")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(background)
        await trio.testing.wait_all_tasks_blocked()
        assert order == []  # held
        nursery.start_soon(run)  # the dispatcher starts the run, then says so
        guard.expect(None)
        guard.launched()
    assert order == ["run", "background"]
    assert guard.waits == 1


async def test_an_overdue_launch_holds_until_it_happens() -> None:
    guard = LaunchGuard(lead=0.001)
    guard.expect(trio.current_time() - 0.01)  # the dispatcher is late: still imminent
    assert guard.imminent()
    done = trio.Event()

    async def background() -> None:
        await guard.stand_aside()
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(background)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()
        guard.launched()
    assert done.is_set()


async def test_a_task_is_held_for_one_launch_at_most_however_dense_they_are() -> None:
    guard = LaunchGuard(lead=0.001)
    guard.expect(trio.current_time() + 0.0002)
    passed = trio.Event()

    async def background() -> None:
        await guard.stand_aside()
        passed.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(background)
        await trio.testing.wait_all_tasks_blocked()
        guard.expect(trio.current_time() + 0.0002)  # the next launch is near already
        guard.launched()
    assert passed.is_set()


def test_a_negative_lead_is_refused() -> None:
    with pytest.raises(ValueError, match="lead"):
        LaunchGuard(lead=-1)


async def test_a_hold_keeps_tasks_aside_until_the_last_launched_run_starts() -> None:
    guard = LaunchGuard(lead=0.001)
    guard.hold(trio.current_time() + 10.0, ["r1", "r2"])  # a burst, spinning to its instants
    assert guard.imminent()
    order: list[str] = []

    async def background() -> None:
        await guard.stand_aside()
        order.append("background")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(background)
        await trio.testing.wait_all_tasks_blocked()
        order.append("r1")
        guard.started("r1")
        guard.started("manual")  # a run that was not held changes nothing
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["r1"] and guard.imminent()  # r2 has still to start
        order.append("r2")
        guard.started("r2")
    assert order == ["r1", "r2", "background"]
    assert not guard.imminent()


async def test_a_hold_ends_by_itself_when_no_run_starts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    guard = LaunchGuard(lead=0.001)
    guard.hold(trio.current_time() + 0.01, ["queued"])  # behind a concurrency limit
    assert guard.imminent()
    await trio.sleep(0.02)
    assert not guard.imminent()
    with trio.testing.assert_no_checkpoints():
        await guard.stand_aside()
    guard.hold(trio.current_time() + 0.01, ["next"])
    guard.started("queued")  # starts at last: the new hold is not released by it
    assert guard.imminent()


async def test_a_hold_outlasts_its_instant_for_a_run_that_has_still_to_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # the loop woke late: the run was launched a moment before its instant and the
    # instant passed before its task had its first step
    guard = LaunchGuard(lead=0.0003)
    guard.hold(trio.current_time() + 0.00001, ["late"])
    await trio.sleep(0.001)
    assert guard.imminent()
    guard.started("late")
    assert not guard.imminent()


async def test_a_worker_thread_pauses_near_a_launch_and_not_otherwise() -> None:
    guard = LaunchGuard(lead=0.05)
    guard.pause()  # nothing expected: returns at once
    assert guard.thread_pauses == 0
    guard.expect(trio.current_time() + 10.0)  # far: no pause
    await trio.to_thread.run_sync(guard.pause)
    assert guard.thread_pauses == 0
    guard.expect(trio.current_time() + 0.02)  # within the lead
    started = time.perf_counter()
    await trio.to_thread.run_sync(guard.pause)
    assert guard.thread_pauses == 1
    assert time.perf_counter() - started <= 0.5  # MAX_THREAD_PAUSE at most, with slack
    guard.expect(trio.current_time() - 1.0)  # overdue: the loop is behind, nobody waits
    await trio.to_thread.run_sync(guard.pause)
    assert guard.thread_pauses == 1
    guard.expect(None)
    guard.hold(trio.current_time() + 10.0, ["r"])  # a launched run has not started
    await trio.to_thread.run_sync(guard.pause)
    assert guard.thread_pauses == 2
    guard.pause()  # on the loop's own thread: never
    assert guard.thread_pauses == 2
    guard.started("r")
    await trio.to_thread.run_sync(guard.pause)
    assert guard.thread_pauses == 2
