"""Sleeps that end on time: Linux timerfds instead of Trio's millisecond-rounded timeouts.

Trio ends a sleep through its I/O wait, ``epoll_wait``, whose timeout Python rounds up
to a whole millisecond, and then through a cancel scope whose expiry raises and catches
``Cancelled``. A scheduler that launches runs at their instants pays both at every
instant: 0 to 1 ms late before anything else (half a millisecond on average), and, at
1,000 instants a second, about a twentieth of the event loop's CPU. A timerfd armed at
the instant becomes readable within the kernel's timer slack (50 us by default), and
Trio waits for it like any other file descriptor: no rounding, no exception.

``sleep(seconds)`` uses one where the platform has them (Linux, found through ctypes)
and ``trio.sleep`` elsewhere. The descriptors are pooled per process: a sleeper takes
one and gives it back, so a pool holds as many as there were sleepers at once (a few).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import sys
import time

import trio

_CLOCK_MONOTONIC = 1  # time.monotonic()'s clock on Linux
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_create.restype = ctypes.c_int
        libc.timerfd_settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.POINTER(_Itimerspec),
        ]
        libc.timerfd_settime.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load_libc()
_idle: list[int] = []  # timerfds nobody waits on


def available() -> bool:
    """Whether ``sleep`` uses timerfds here (else it is ``trio.sleep``)."""
    return _libc is not None


def _take() -> int:
    if _idle:
        return _idle.pop()
    assert _libc is not None
    fd = _libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def _arm(fd: int, monotonic_deadline: float) -> None:
    """Arm ``fd`` to expire once at ``monotonic_deadline``."""
    assert _libc is not None
    frac, whole = math.modf(monotonic_deadline)
    spec = _Itimerspec()
    spec.it_value.tv_sec = int(whole)
    spec.it_value.tv_nsec = int(frac * 1e9)
    if not (spec.it_value.tv_sec or spec.it_value.tv_nsec):
        spec.it_value.tv_nsec = 1  # an all-zero value would disarm instead
    if _libc.timerfd_settime(fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _drain(fd: int) -> None:
    try:
        os.read(fd, 8)
    except BlockingIOError:
        pass


async def sleep(seconds: float) -> None:
    """Sleep ``seconds`` (cancellable, a checkpoint like ``trio.sleep``), ending within
    the kernel's timer slack of the instant where timerfds exist."""
    if _libc is None:
        await trio.sleep(seconds)
        return
    if seconds <= 0:
        await trio.lowlevel.checkpoint()
        return
    try:
        fd = _take()
    except OSError:  # out of file descriptors: late is better than not at all
        await trio.sleep(seconds)
        return
    try:
        # arming resets any expiry left by a sleeper cancelled before it read it
        _arm(fd, time.monotonic() + seconds)
        await trio.lowlevel.wait_readable(fd)
        _drain(fd)
    finally:
        _idle.append(fd)
