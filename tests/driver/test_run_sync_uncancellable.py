"""The storage path's worker-thread call: a result, an exception, and a write once started
is finished even if the caller is cancelled (the store and the Raft log count on it)."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

from trickle._threads import run_sync_uncancellable


async def test_returns_what_the_function_returns_from_another_thread() -> None:
    caller = threading.get_ident()
    assert await run_sync_uncancellable(lambda: threading.get_ident()) != caller
    assert await run_sync_uncancellable(lambda: 42) == 42


async def test_raises_what_the_function_raises() -> None:
    def boom() -> None:
        raise ValueError("disk on fire")

    with pytest.raises(ValueError, match="disk on fire"):
        await run_sync_uncancellable(boom)


async def test_a_call_cancelled_before_it_starts_never_runs() -> None:
    ran = []
    with trio.CancelScope() as scope:
        scope.cancel()
        await run_sync_uncancellable(lambda: ran.append(1))
    assert scope.cancelled_caught
    assert ran == []


async def test_a_call_cancelled_while_it_runs_is_finished_and_waited_for() -> None:
    started = threading.Event()
    release = threading.Event()
    finished = []

    def write() -> str:
        started.set()
        release.wait()
        finished.append(1)
        return "written"

    result = []

    async def caller(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            result.append(await run_sync_uncancellable(write))
            await trio.lowlevel.checkpoint()  # the cancellation lands here, after the write

    async with trio.open_nursery() as nursery:
        scope = await nursery.start(caller)
        await trio.to_thread.run_sync(started.wait)
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert finished == []  # still waiting for the write, not abandoned
        release.set()
    assert finished == [1]
    assert result == ["written"]
