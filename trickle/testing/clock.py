"""A wall clock that moves only when a test says so: ``await clock.advance(60)``.

Unlike a ``trio.testing.MockClock`` it does not care about worker threads, so it drives an
Engine on a real SQLite store deterministically: time moves exactly when the test moves it.
"""

from __future__ import annotations

import heapq
import itertools
from datetime import datetime, timedelta

import trio


class ManualClock:
    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self._now = start
        self._sleepers: list[tuple[datetime, int, trio.Event]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, when: datetime) -> None:
        if when <= self._now:
            await trio.lowlevel.checkpoint()
            return
        event = trio.Event()
        heapq.heappush(self._sleepers, (when, next(self._seq), event))
        await event.wait()

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (never backwards) and wake every sleeper that is due."""
        if when < self._now:
            raise ValueError("a ManualClock never goes backwards")
        self._now = when
        while self._sleepers and self._sleepers[0][0] <= when:
            heapq.heappop(self._sleepers)[2].set()

    async def advance(self, seconds: float, *, step: float | None = None) -> None:
        """Move forward by ``seconds`` (in steps of ``step``), letting woken tasks run
        until everything is blocked again after each step."""
        target = self._now + timedelta(seconds=seconds)
        stride = timedelta(seconds=step) if step else target - self._now
        while self._now < target:
            self.set(min(target, self._now + stride))
            await trio.testing.wait_all_tasks_blocked()
