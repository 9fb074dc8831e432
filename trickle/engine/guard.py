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

Worker threads stand aside too (``pause``, called by the stores' writer threads between
two statements). A worker thread holds the GIL to bind a statement's parameters and to run
the Python between two statements; the event loop thread, woken by its timer to launch,
waited for it. Worse, a worker that releases the GIL for a moment (a statement's step) and
takes it straight back wins that race against a thread the OS has still to wake, so the
loop waited for the worker's whole transaction (measured: a writer thread alone made 6% of
1 ms timer wakes of a Trio loop later than 0.28 ms, against 0.3% without it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import trio

LAUNCH_GUARD_SECONDS = 0.0003  # work that could still be running at a launch stands aside
THREAD_LINGER_SECONDS = 0.0001  # worker threads go on standing aside after a launch
MAX_THREAD_PAUSE = 0.002  # seconds one ``pause`` waits at most
HOLD_GRACE_SECONDS = 0.002  # a hold outlasts its runs' instant by this much at most


class LaunchGuard:
    """Told by the dispatcher when its next launch is (``expect``) and when it happened
    (``launched``); awaited by background tasks (``stand_aside``)."""

    def __init__(self, lead: float = LAUNCH_GUARD_SECONDS) -> None:
        if lead < 0:
            raise ValueError("lead must not be negative")
        self.lead = lead
        self._next: float | None = None  # Trio time of the next launch (None: none held)
        self._hold_until: float | None = None  # launched runs not started yet (see hold)
        self._held: set[str] = set()  # their execution ids
        self._launched = trio.Event()
        self.waits = 0  # times a task stood aside
        # the same, for worker threads: time.perf_counter() instants (no Trio there)
        self._next_perf = -math.inf
        self._held_perf = -math.inf
        self.thread_pauses = 0  # times a worker thread stood aside

    @staticmethod
    def _perf(at: float) -> float:
        """Trio time ``at`` as a time.perf_counter() instant."""
        return time.perf_counter() + (at - trio.current_time())

    def expect(self, at: float | None) -> None:
        """The next launch is due at Trio time ``at`` (None: no launch is held)."""
        self._next = at
        self._next_perf = -math.inf if at is None else self._perf(at)

    def launched(self) -> None:
        """The launch that was due happened (or will not): release the waiting tasks."""
        self._launched.set()
        self._launched = trio.Event()

    def hold(self, until: float, runs: Iterable[str]) -> None:
        """Runs (``runs``: execution ids) were launched that start a moment later (launch
        spin), at the latest at Trio time ``until``: background work goes on standing
        aside until the last of them starts (``started``), or HOLD_GRACE_SECONDS after
        ``until`` (a run queued behind a concurrency limit does not start then). Without
        it, a task already due to run (a worker thread's result came in) ran its step
        before the launched runs had theirs; released at the first run's start, the
        scheduler decided 50 fires while the other runs of a burst waited; ended at
        ``until`` itself, it let a 0.4 ms step in before a run launched late (the loop
        woke late) that had still to take its first step."""
        self._held.update(runs)
        until += HOLD_GRACE_SECONDS
        if self._hold_until is None or until > self._hold_until:
            self._hold_until = until
            self._held_perf = self._perf(until)

    def started(self, run: str) -> None:
        """Run ``run`` started: once no held run is left to start, release the held
        tasks (after the runs: see stand_aside)."""
        held = self._held
        if not held:
            return
        held.discard(run)
        if not held:
            self._release_hold()

    def _release_hold(self) -> None:
        self._held_perf = -math.inf
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
            self._hold_until = None  # passed: a held run did not start (queued)
            self._held.clear()
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

    def pause(self) -> None:
        """In a worker thread, before a piece of work that holds the GIL: sleep (the GIL
        released) while a launch is near, from ``lead`` before it to THREAD_LINGER_SECONDS
        after, and while launched runs have not started; MAX_THREAD_PAUSE at most. An
        overdue launch (the loop is behind) holds nobody. On a Trio thread (a store
        written inline) it returns at once: the loop itself never waits here.
        Thread-safe: it only reads."""
        if trio.lowlevel.in_trio_run():
            return
        now = time.perf_counter()
        until = self._held_perf
        upcoming = self._next_perf
        if upcoming - self.lead <= now:
            until = max(until, upcoming + THREAD_LINGER_SECONDS)
        if until > now:
            self.thread_pauses += 1
            time.sleep(min(until - now, MAX_THREAD_PAUSE))
