"""The scheduler's plan: a heap of each job's next fire time. Pure, no clock.

``due(now)`` pops what is due; ``next_wakeup()`` says when to look again. Updating or
removing a job is O(log n): stale heap entries are skipped lazily, never rescanned.
"""

from __future__ import annotations

import heapq
from datetime import datetime


class Planner:
    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, str]] = []
        self._current: dict[str, tuple[datetime, int]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._current)

    def set(self, name: str, fire_at: datetime | None) -> None:
        """Plan ``name`` to fire at ``fire_at`` (None: not at all)."""
        if fire_at is None:
            self._current.pop(name, None)
            return
        cur = self._current.get(name)
        if cur is not None and cur[0] == fire_at:
            return
        self._seq += 1
        self._current[name] = (fire_at, self._seq)
        heapq.heappush(self._heap, (fire_at, self._seq, name))
        if len(self._heap) > 2 * len(self._current) + 1024:
            self._compact()

    def remove(self, name: str) -> None:
        self._current.pop(name, None)

    def planned(self, name: str) -> datetime | None:
        cur = self._current.get(name)
        return cur[0] if cur else None

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap:
            at, seq, name = heap[0]
            cur = self._current.get(name)
            if cur is not None and cur[1] == seq:
                return
            heapq.heappop(heap)

    def next_wakeup(self) -> datetime | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def due(self, now: datetime, *, limit: int | None = None) -> list[tuple[str, datetime]]:
        """Pop every (job name, fire time) with fire time <= now, earliest first.

        A popped job is no longer planned until ``set`` is called for it again.
        """
        out: list[tuple[str, datetime]] = []
        heap = self._heap
        while heap and (limit is None or len(out) < limit):
            self._drop_stale()
            if not heap or heap[0][0] > now:
                break
            at, _seq, name = heapq.heappop(heap)
            del self._current[name]
            out.append((name, at))
        return out

    def _compact(self) -> None:
        self._heap = [(at, seq, name) for name, (at, seq) in self._current.items()]
        heapq.heapify(self._heap)
