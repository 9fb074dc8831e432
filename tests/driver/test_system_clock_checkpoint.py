"""A finding of the real-process cluster test (tests/e2e/test_cluster_processes.py): the
system clock's sleep_until must be a Trio checkpoint even when the instant is past, or a
leader's scheduler that is behind never sees its leadership's cancellation (it went on
launching, fenced with the next term's fence, and fires ran twice)."""

from __future__ import annotations

from datetime import timedelta

import trio
import trio.testing

from trickle.engine.clock import SystemClock


async def test_system_clock_sleep_until_a_past_instant_is_a_checkpoint() -> None:
    clock = SystemClock()
    with trio.testing.assert_checkpoints():
        await clock.sleep_until(clock.now() - timedelta(seconds=1))


async def test_a_cancelled_scheduler_loop_that_is_behind_stops() -> None:
    clock = SystemClock()
    rounds = 0
    with trio.CancelScope() as scope:
        scope.cancel()  # leadership lost
        while rounds < 3:  # the scheduler's loop: always something due when behind
            await clock.sleep_until(clock.now() - timedelta(seconds=1))
            rounds += 1
    assert rounds == 0, f"{rounds} rounds ran after the cancellation"
