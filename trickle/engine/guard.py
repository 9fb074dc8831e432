"""The launch guard: the engine's own background work stands aside just before a launch.

A run's lateness is the time from its scheduled instant to its executor's first line. The
dispatcher wakes at the instant, but Trio runs one task at a time: if the Raft applier,
the scheduler or the log's batching started a step of a few hundred microseconds just
before, the launch waits for its end (at 1,000 fires/s such collisions made the p99
lateness 1.5-2 ms while the median was 0.2 ms). These tasks know when the next launch is,
so they need not collide with it: before each piece of work, they ``stand_aside()``, which
returns at once unless a launch is due within ``lead`` seconds; then it waits for that
launch (and one more turn of the loop, so that the runs it started go first).

A wait lasts at most one launch: a task is never held twice in one ``stand_aside``, so
background work goes on however dense the launches are. The user's own tasks and the HTTP
API are never held; neither is anything the dispatcher needs to launch (it awaits only
its timer).
"""

from __future__ import annotations

import trio

LAUNCH_GUARD_SECONDS = 0.0003  # work that could still be running at a launch stands aside


class LaunchGuard:
    """Told by the dispatcher when its next launch is (``expect``) and when it happened
    (``launched``); awaited by background tasks (``stand_aside``)."""

    def __init__(self, lead: float = LAUNCH_GUARD_SECONDS) -> None:
        if lead < 0:
            raise ValueError("lead must not be negative")
        self.lead = lead
        self._next: float | None = None  # Trio time of the next launch (None: none held)
        self._hold_until: float | None = None  # launched runs not started yet (see hold)
        self._launched = trio.Event()
        self.waits = 0  # times a task stood aside

    def expect(self, at: float | None) -> None:
        """The next launch is due at Trio time ``at`` (None: no launch is held)."""
        self._next = at

    def launched(self) -> None:
        """The launch that was due happened (or will not): release the waiting tasks."""
        self._launched.set()
        self._launched = trio.Event()

    def hold(self, until: float) -> None:
        """Runs were launched that start a moment later (launch spin), at the latest at
        Trio time ``until``: background work goes on standing aside until one of them
        starts (``started``) or ``until`` passes (a run queued behind a concurrency
        limit does not start then). Without it, a task already due to run (a worker
        thread's result came in) ran its step before the launched runs had theirs."""
        if self._hold_until is None or until > self._hold_until:
            self._hold_until = until

    def started(self) -> None:
        """A launched run started: release the held tasks (after it, see stand_aside)."""
        if self._hold_until is not None:
            self._hold_until = None
            self.launched()

    def imminent(self) -> bool:
        """Whether a launch is due within ``lead`` seconds (or overdue), or launched runs
        are about to start."""
        now = trio.current_time()
        hold = self._hold_until
        if hold is not None:
            if now < hold:
                return True
            self._hold_until = None
        at = self._next
        return at is not None and at - now <= self.lead

    async def stand_aside(self) -> None:
        """Return at once unless a launch is imminent; then once it has happened and the
        runs it started have had their turn. No checkpoint when it returns at once."""
        if not self.imminent():
            return
        self.waits += 1
        await self._launched.wait()
        await trio.lowlevel.checkpoint()  # the launched runs were scheduled before us
