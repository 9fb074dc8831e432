"""Engine events and their fan-out to subscribers with bounded buffers.

Publishing never blocks: each subscriber has its own buffer; when it is full, events for
that subscriber are dropped and counted, and the subscriber next receives one ``lagged``
event saying how many it missed. A slow consumer never slows the engine.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Iterable
from datetime import datetime
from types import TracebackType
from typing import Any

import attrs
import trio

from trickle.engine.model import Execution, Job


class EventKind(enum.StrEnum):
    JOB_CREATED = "job_created"
    JOB_UPDATED = "job_updated"
    JOB_DELETED = "job_deleted"
    JOB_TOGGLED = "job_toggled"
    EXECUTION_STARTED = "execution_started"
    EXECUTION_OUTPUT = "execution_output"  # a chunk of output as the run prints it
    EXECUTION_FINISHED = "execution_finished"
    FIRE_SKIPPED = "fire_skipped"
    FIRE_MISSED = "fire_missed"
    MEMBER_JOINED = "member_joined"  # data: member, status, addr, port, tags
    MEMBER_UPDATED = "member_updated"  # its tags or address changed
    MEMBER_FAILED = "member_failed"
    MEMBER_LEFT = "member_left"
    MEMBER_REAPED = "member_reaped"  # a failed or left member is forgotten
    LEADER_CHANGED = "leader_changed"
    PAUSED = "paused"
    UNPAUSED = "unpaused"
    LAGGED = "lagged"  # only to one subscriber: ``data["dropped"]`` events were dropped


@attrs.frozen(kw_only=True)
class Event:
    """One thing that happened. ``seq`` increases by one per published event (per engine)."""

    kind: EventKind
    at: datetime
    seq: int = 0
    job_name: str = ""
    job: Job | None = None
    execution: Execution | None = None
    chunk: str = ""  # execution_output: the text printed
    data: dict[str, Any] = attrs.field(factory=dict)


class Subscription:
    """An async iterator of events matching the filters. Use as an async context manager
    (or call ``close``) so the hub forgets it."""

    def __init__(
        self,
        hub: EventHub,
        *,
        kinds: frozenset[EventKind] | None,
        jobs: frozenset[str] | None,
        maxsize: int,
    ) -> None:
        self._hub = hub
        self.kinds = kinds
        self.jobs = jobs
        self._maxsize = maxsize
        self._queue: deque[Event] = deque()
        self._dropped = 0
        self._closed = False
        self._wakeup = trio.Event()

    def matches(self, event: Event) -> bool:
        if self.kinds is not None and event.kind not in self.kinds:
            return False
        if self.jobs is not None and event.job_name not in self.jobs:
            return False
        return True

    def _offer(self, event: Event) -> bool:
        """Queue ``event``; when full, count it in a ``lagged`` marker at the end of the
        queue instead (so the lag is reported in order). Returns False if dropped."""
        queue = self._queue
        if len(queue) < self._maxsize:
            queue.append(event)
            self._wakeup.set()
            return True
        last = queue[-1] if queue else None
        if last is not None and last.kind == EventKind.LAGGED:
            queue[-1] = attrs.evolve(
                last, seq=event.seq, data={"dropped": last.data["dropped"] + 1}
            )
        else:
            queue.append(
                Event(kind=EventKind.LAGGED, at=event.at, seq=event.seq, data={"dropped": 1})
            )
        self._dropped += 1
        self._wakeup.set()
        return False

    @property
    def dropped(self) -> int:
        """Events dropped for this subscriber so far."""
        return self._dropped

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._hub._remove(self)
            self._wakeup.set()

    async def receive(self) -> Event:
        """The next event; raises ``trio.EndOfChannel`` once closed and drained.

        After a drop, a ``lagged`` event with ``data["dropped"]`` stands where the dropped
        events would have been."""
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                raise trio.EndOfChannel
            self._wakeup = trio.Event()
            await self._wakeup.wait()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventHub:
    """Fans events out to subscribers. ``publish`` is synchronous and never blocks."""

    def __init__(self, *, default_maxsize: int = 1000) -> None:
        self._subs: list[Subscription] = []
        self._default_maxsize = default_maxsize
        self.seq = 0
        self.last_at: datetime | None = None
        self.published = 0
        self.dropped = 0

    def subscribe(
        self,
        *,
        kinds: Iterable[EventKind | str] | None = None,
        jobs: Iterable[str] | None = None,
        maxsize: int | None = None,
    ) -> Subscription:
        sub = Subscription(
            self,
            kinds=frozenset(EventKind(k) for k in kinds) if kinds is not None else None,
            jobs=frozenset(jobs) if jobs is not None else None,
            maxsize=maxsize or self._default_maxsize or math.inf,  # type: ignore[arg-type]
        )
        self._subs.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        try:
            self._subs.remove(sub)
        except ValueError:
            pass

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def publish(self, event: Event) -> Event:
        self.seq += 1
        # The event was made for this publication and nobody holds it yet: number it in
        # place (attrs.evolve would copy it, at a measurable cost per run).
        object.__setattr__(event, "seq", self.seq)
        self.last_at = event.at
        self.published += 1
        for sub in self._subs:
            if sub.matches(event) and not sub._offer(event):
                self.dropped += 1
        return event

    def close_all(self) -> None:
        """End every subscription (they drain what they hold, then stop)."""
        for sub in list(self._subs):
            sub.close()


class EarlyOutput:
    """Output of runs this server has not seen start yet, held for a moment.

    A run's node streams its output to every server at once, and a follower may apply the
    run's RunStarted a little after the first chunks arrive. Those chunks wait here and
    are published right after the run's ``execution_started`` event, so a subscriber sees
    a run start before its output. Bounded: at most ``max_runs`` runs (the oldest are
    forgotten) and ``max_chars`` characters per run (later chunks are dropped; the whole
    output still comes with the result)."""

    def __init__(self, *, max_runs: int = 256, max_chars: int = 64 * 1024) -> None:
        self._runs: dict[str, tuple[str, list[str], int]] = {}  # id -> job, chunks, chars
        self._max_runs = max_runs
        self._max_chars = max_chars
        self.dropped = 0  # chunks dropped (over a run's limit, or with a forgotten run)

    def __bool__(self) -> bool:
        return bool(self._runs)

    def __len__(self) -> int:
        return len(self._runs)

    def hold(self, job_name: str, execution_id: str, chunk: str) -> None:
        held = self._runs.get(execution_id)
        if held is None:
            if len(self._runs) >= self._max_runs:
                oldest = next(iter(self._runs))
                self.dropped += len(self._runs.pop(oldest)[1])
            held = self._runs[execution_id] = (job_name, [], 0)
        job, chunks, chars = held
        if chars + len(chunk) > self._max_chars:
            self.dropped += 1
            return
        chunks.append(chunk)
        self._runs[execution_id] = (job, chunks, chars + len(chunk))

    def release(self, execution_id: str) -> list[str]:
        """The chunks held for a run that just started here (and forget them)."""
        held = self._runs.pop(execution_id, None)
        return held[1] if held is not None else []

    def drop(self, execution_id: str) -> None:
        """Forget a run that finished (its output is in its result)."""
        held = self._runs.pop(execution_id, None)
        if held is not None:
            self.dropped += len(held[1])
