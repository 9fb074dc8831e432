"""The launch guard: background work stands aside just before a run's launch, once."""

from __future__ import annotations

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


async def test_a_hold_keeps_tasks_aside_until_a_launched_run_starts() -> None:
    guard = LaunchGuard(lead=0.001)
    guard.hold(trio.current_time() + 10.0)  # runs launched, spinning to their instant
    assert guard.imminent()
    order: list[str] = []

    async def background() -> None:
        await guard.stand_aside()
        order.append("background")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(background)
        await trio.testing.wait_all_tasks_blocked()
        assert order == []
        order.append("run")
        guard.started()
    assert order == ["run", "background"]
    assert not guard.imminent()


async def test_a_hold_ends_by_itself_when_no_run_starts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    guard = LaunchGuard(lead=0.001)
    guard.hold(trio.current_time() + 0.01)  # a run queued behind a concurrency limit
    assert guard.imminent()
    await trio.sleep(0.02)
    assert not guard.imminent()
    with trio.testing.assert_no_checkpoints():
        await guard.stand_aside()
