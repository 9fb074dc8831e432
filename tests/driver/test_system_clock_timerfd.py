"""The system clock wakes at the instant through a Linux timerfd: Trio's own timers wake
up to a millisecond late (epoll's timeout is whole milliseconds, rounded up), which every
launch of a run paid. These tests check the behaviour, not the precision: the wait ends at
or after the instant, uses no Trio timer where a timerfd exists, leaves no descriptor
behind when cancelled, and falls back to Trio's timer without timerfds."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from datetime import timedelta
from time import time_ns

import pytest
import trio
import trio.testing

from trickle.engine import clock as clock_module
from trickle.engine.clock import SystemClock

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _is_timerfd(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[timerfd]"
    except FileNotFoundError:
        return False


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Counting descriptors: earlier tests' garbage (their clocks) must not be collected
    meanwhile, closing theirs."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_sleep_until_returns_once_the_wall_clock_reached_the_instant() -> None:
    clock = SystemClock()
    for micros in (1, 250, 1_000, 3_700, 20_000):
        when = clock.now() + timedelta(microseconds=micros)
        await clock.sleep_until(when)
        assert clock.now() >= when


@linux_only
async def test_a_short_sleep_waits_on_a_timerfd_not_on_trios_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_trio_timer(seconds: float) -> None:
        raise AssertionError(f"trio.sleep({seconds}) used where a timerfd exists")

    monkeypatch.setattr(clock_module.trio, "sleep", no_trio_timer)
    clock = SystemClock()
    when = clock.now() + timedelta(milliseconds=5)
    await clock.sleep_until(when)
    assert clock.now() >= when


@linux_only
async def test_cancelled_sleeps_leave_no_file_descriptor_open(no_gc: None) -> None:
    clock = SystemClock()
    await clock.sleep_until(clock.now())  # nothing to wait for: no descriptor yet
    await clock.sleep_until(clock.now() + timedelta(microseconds=100))  # the clock's own
    before = _open_fds()
    for _ in range(50):
        with trio.move_on_after(0.0005):
            await clock.sleep_until(clock.now() + timedelta(seconds=10))
    async with trio.open_nursery() as nursery:  # many at once, cancelled from outside
        for _ in range(20):
            nursery.start_soon(clock.sleep_until, clock.now() + timedelta(seconds=10))
        await trio.testing.wait_all_tasks_blocked()
        assert _open_fds() == before + 19  # one on the clock's timerfd, 19 on their own
        nursery.cancel_scope.cancel()
    assert _open_fds() == before


@linux_only
async def test_a_sleep_after_an_abandoned_one_waits_for_its_own_instant() -> None:
    clock = SystemClock()
    with trio.move_on_after(0.001):  # armed for 2 ms, abandoned after 1
        await clock.sleep_until(clock.now() + timedelta(milliseconds=2))
    await trio.sleep(0.005)  # its instant passes while no one waits
    when = clock.now() + timedelta(milliseconds=20)
    await clock.sleep_until(when)
    assert clock.now() >= when


@linux_only
async def test_sleepers_sharing_a_clock_each_wake_at_their_instant() -> None:
    clock = SystemClock()
    woke: dict[int, bool] = {}

    async def sleeper(i: int) -> None:
        when = clock.now() + timedelta(milliseconds=1 + i)
        await clock.sleep_until(when)
        woke[i] = clock.now() >= when

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(sleeper, i)
    assert woke == dict.fromkeys(range(10), True)


@linux_only
async def test_a_clock_closes_its_timerfd_when_it_is_dropped(no_gc: None) -> None:
    clock = SystemClock()
    await clock.sleep_until(clock.now() + timedelta(microseconds=100))
    fd = clock._timer_fd
    assert fd is not None and _is_timerfd(fd)
    del clock
    assert not _is_timerfd(fd)


async def test_without_timerfds_the_sleep_falls_back_to_trios_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(clock_module, "_TIMERFD", None)
    clock = SystemClock()
    when = clock.now() + timedelta(milliseconds=3)
    await clock.sleep_until(when)
    assert clock.now() >= when


@linux_only
async def test_out_of_file_descriptors_the_sleep_falls_back_to_trios_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert clock_module._TIMERFD is not None
    _create, arm = clock_module._TIMERFD

    def no_fd_left() -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(clock_module, "_TIMERFD", (no_fd_left, arm))
    clock = SystemClock()
    when = clock.now() + timedelta(milliseconds=3)
    await clock.sleep_until(when)
    assert clock.now() >= when


@linux_only
def test_the_timerfd_fires_at_an_absolute_wall_clock_instant() -> None:
    functions = clock_module._timerfd_functions()
    assert functions is not None
    create, arm = functions
    fd = create()
    try:
        arm(fd, 1)  # an instant long past: readable at once
        assert os.read(fd, 8)  # the expiration count, as 8 bytes
        fd2 = create()
        try:
            arm(fd2, time_ns() + 3_600_000_000_000)  # an hour ahead: not yet
            with pytest.raises(BlockingIOError):
                os.read(fd2, 8)
        finally:
            os.close(fd2)
    finally:
        os.close(fd)
