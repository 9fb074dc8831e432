"""Wall-clock time for the engine, injected so tests on a MockClock can drive cron.

``SystemClock`` reads the real time; ``TrioClock`` derives wall time from Trio's clock, so
under ``trio.testing.MockClock`` a test jumps to next Tuesday 03:00 and cron follows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

import trio

MAX_SLEEP = 30.0  # seconds: the system clock re-reads the wall time at least this often


class Clock(Protocol):
    def now(self) -> datetime:
        """The current wall time, aware, in UTC."""
        ...

    async def sleep_until(self, when: datetime) -> None:
        """Return once ``now() >= when``."""
        ...


class SystemClock:
    """The machine's wall clock. Sleeps in slices so a clock step is noticed."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        while True:
            delta = (when - self.now()).total_seconds()
            if delta <= 0:
                await trio.lowlevel.checkpoint()  # a checkpoint even when already past:
                return  # a loop that is behind must still see its cancellation
            await trio.sleep(min(delta, MAX_SLEEP))


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
