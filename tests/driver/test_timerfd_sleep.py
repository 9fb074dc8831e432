"""trickle._timerfd.sleep: ends at its instant (not a millisecond late, as Trio's own sleeps
can), is cancellable, and a cancelled sleep leaves nothing armed for the next sleeper."""

from __future__ import annotations

import time

import pytest
import trio

from trickle import _timerfd

pytestmark = pytest.mark.skipif(not _timerfd.available(), reason="timerfds are Linux's")


async def test_sleeps_at_least_the_time_asked() -> None:
    for seconds in (0.0002, 0.001, 0.003):
        started = time.monotonic()
        await _timerfd.sleep(seconds)
        assert time.monotonic() - started >= seconds


async def test_a_zero_or_negative_sleep_is_a_checkpoint() -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await _timerfd.sleep(0)
    assert scope.cancelled_caught


async def test_a_sleep_cancelled_while_armed_does_not_end_the_next_sleep_early() -> None:
    with trio.move_on_after(0.001):
        await _timerfd.sleep(0.05)  # cancelled while armed
    idle = list(_timerfd._idle)
    assert idle
    # the next sleeper gets that timer, and the old expiry (50 ms) must not end its
    # sleep early or, having fired meanwhile, at once
    await trio.sleep(0.06)
    started = time.monotonic()
    await _timerfd.sleep(0.01)
    assert time.monotonic() - started >= 0.01


async def test_concurrent_sleepers_each_get_their_own_timer() -> None:
    slept: dict[float, float] = {}

    async def sleeper(seconds: float) -> None:
        started = time.monotonic()
        await _timerfd.sleep(seconds)  # one fd per sleeper: no BusyResourceError
        slept[seconds] = time.monotonic() - started

    async with trio.open_nursery() as nursery:
        for seconds in (0.02, 0.005, 0.01):
            nursery.start_soon(sleeper, seconds)
    assert sorted(slept) == [0.005, 0.01, 0.02]
    assert all(took >= seconds for seconds, took in slept.items())
