"""Wall-clock time for the engine, injected so tests on a MockClock can drive cron.

``SystemClock`` reads the real time; ``TrioClock`` derives wall time from Trio's clock, so
under ``trio.testing.MockClock`` a test jumps to next Tuesday 03:00 and cron follows.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import trio

from trickle.engine.model import unix_nanos

MAX_SPIN = 0.01  # seconds: spin_until never busy-waits longer
MAX_SLEEP = 30.0  # seconds: the system clock re-reads the wall time at least this often


class Clock(Protocol):
    def now(self) -> datetime:
        """The current wall time, aware, in UTC."""
        ...

    async def sleep_until(self, when: datetime) -> None:
        """Return once ``now() >= when``."""
        ...


class SystemClock:
    """The machine's wall clock. Sleeps in slices so a clock step is noticed.

    The last slice (at most MAX_SLEEP) waits on a Linux timerfd armed for the instant on
    CLOCK_REALTIME, which wakes Trio's epoll to the microsecond. Trio's own timers wake
    up to a millisecond late: epoll takes its timeout in whole milliseconds, rounded up,
    which made every launch of a run ~0.8 ms late on an idle loop (0.1 ms with the
    timerfd). The clock keeps one timerfd for the task that sleeps on it (the engine's
    dispatcher, a thousand times a second under load) and re-arms it, which costs less
    CPU than a Trio timer (121-151 against 186-202 us per sleep, docs/benchmarks.md); a
    sleep that finds it taken uses one of its own. Where there is no timerfd (not Linux,
    or no file descriptor left), Trio's timer does the wait."""

    _timer_fd: int | None = None  # the clock's own timerfd, created on first use
    _timer_taken = False

    def now(self) -> datetime:
        return datetime.now(UTC)

    def spin_until(self, when: datetime) -> None:
        """Busy-wait, without giving the event loop or the GIL away, until the wall clock
        reaches ``when``: for a run launched a moment early (``EngineConfig.launch_spin``),
        so that its executor starts at its instant rather than a wake-up later. Returns
        at once if ``when`` is more than MAX_SPIN away (a clock step: never a long spin).

        In integer nanoseconds: ``now()`` floors the time to the microsecond, and a float
        ``time.time() >= when.timestamp()`` held a third of the time while ``now()``
        still read a microsecond before ``when`` (the run then slept on a timer for it)."""
        target = unix_nanos(when)
        now = time.time_ns
        if target - now() > MAX_SPIN * 1e9:
            return
        while now() < target:
            pass

    async def sleep_until(self, when: datetime) -> None:
        waited = False
        while True:
            delta = (when - self.now()).total_seconds()
            if delta <= 0:
                if not waited:  # a checkpoint even when already past: a loop that is
                    await trio.lowlevel.checkpoint()  # behind must still see its cancellation
                return  # (after a wait, none: the launch it waited for would wait a turn)
            if delta > MAX_SLEEP or not await self._wait_on_timerfd(when):
                await trio.sleep(min(delta, MAX_SLEEP))
            waited = True

    async def _wait_on_timerfd(self, when: datetime) -> bool:
        """Wait until the wall clock reaches ``when`` on a timerfd; False, at once and
        without a checkpoint, when no timerfd can be had."""
        if _TIMERFD is None:
            return False
        if self._timer_taken:
            return await _wait_on_own_timerfd(when)
        fd = self._timer_fd
        if fd is None:
            try:
                fd = self._timer_fd = _TIMERFD[0]()
            except OSError:
                return False
            weakref.finalize(self, os.close, fd)
        self._timer_taken = True
        try:
            return await _wait_on(fd, when)
        finally:
            self._timer_taken = False


class TrioClock:
    """Wall time = ``start`` + (Trio's current time - Trio's time at first use).

    Use inside ``trio.run``; with ``MockClock(autojump_threshold=0)`` virtual hours pass in
    real milliseconds.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self._start = start.astimezone(UTC)
        self._mono0: float | None = None

    def _base(self) -> float:
        if self._mono0 is None:
            self._mono0 = trio.current_time()
        return self._mono0

    def now(self) -> datetime:
        return self._start + timedelta(seconds=trio.current_time() - self._base())

    async def sleep_until(self, when: datetime) -> None:
        await trio.sleep_until(self._base() + (when - self._start).total_seconds())


_CLOCK_REALTIME = 0
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _timerfd_functions() -> tuple[Callable[[], int], Callable[[int, int], None]] | None:
    """(create, arm at an absolute CLOCK_REALTIME instant in ns) for Linux timerfds: the
    os module's from Python 3.13, libc's through ctypes before; None without timerfds."""
    if not sys.platform.startswith("linux"):
        return None
    flags = os.O_NONBLOCK | os.O_CLOEXEC  # TFD_NONBLOCK and TFD_CLOEXEC are these values
    if hasattr(os, "timerfd_create"):  # Python 3.13+

        def create() -> int:
            return os.timerfd_create(os.CLOCK_REALTIME, flags=flags)  # type: ignore[attr-defined,no-any-return,unused-ignore]

        def arm(fd: int, at_ns: int) -> None:
            os.timerfd_settime_ns(fd, flags=os.TFD_TIMER_ABSTIME, initial=at_ns)  # type: ignore[attr-defined,unused-ignore]

        return create, arm
    try:
        # PyDLL: the call keeps the GIL (a syscall of a microsecond). Released, a worker
        # thread waiting for it took it, and the event loop, about to launch a run, waited
        # for that thread's next release.
        libc = ctypes.PyDLL(None, use_errno=True)
        timerfd_create, timerfd_settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None

    def create_c() -> int:
        fd = int(timerfd_create(_CLOCK_REALTIME, flags))
        if fd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"timerfd_create: {os.strerror(errno)}")
        return fd

    def arm_c(fd: int, at_ns: int) -> None:
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(*divmod(at_ns, 1_000_000_000)))
        if timerfd_settime(fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"timerfd_settime: {os.strerror(errno)}")

    return create_c, arm_c


_TIMERFD = _timerfd_functions()


async def _wait_on(fd: int, when: datetime) -> bool:
    """Arm the timerfd ``fd`` for ``when`` and wait until it fires (False if it cannot be
    armed). Arming again resets a count left by an earlier, abandoned wait."""
    assert _TIMERFD is not None
    try:
        _TIMERFD[1](fd, unix_nanos(when))
    except OSError:
        return False
    await trio.lowlevel.wait_readable(fd)
    # the expiration count is not read: the next wait arms the timer again, which resets
    # it (one syscall less, and one GIL release less, between the wake and the launch)
    return True


async def _wait_on_own_timerfd(when: datetime) -> bool:
    """``_wait_on`` a timerfd of this wait's own, closed after it."""
    assert _TIMERFD is not None
    try:
        fd = _TIMERFD[0]()
    except OSError:  # out of file descriptors: a coarser wake is better than none
        return False
    try:
        return await _wait_on(fd, when)
    finally:
        trio.lowlevel.notify_closing(fd)
        os.close(fd)
