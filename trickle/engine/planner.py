"""The scheduler's plan: a heap of each job's next fire time. Pure, no clock.

``due(now)`` pops what is due; ``next_wakeup()`` says when to look again. Updating or
removing a job is O(log n): stale heap entries are skipped lazily, never rescanned.

The heap holds plain ints, not tuples: a key is the fire time in microseconds since the
epoch, then a sequence number (fires at one instant come out in the order they were
set). Ints are not tracked by the garbage collector; a ``(datetime, seq, name)`` tuple per
planned fire was: at 1,000 fires/s, two tuples a fire lived ten seconds each, and a young
collection walked tens of thousands of them while the event loop waited (20-30 ms).
"""

from __future__ import annotations

import heapq
from datetime import UTC, datetime, timedelta

SEQ_BITS = 40  # the low bits of a key: its sequence number (renumbered before it wraps)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(at: datetime) -> int:
    """``at`` (timezone-aware) in whole microseconds since the epoch: exact."""
    return (at - _EPOCH) // _MICROSECOND


class Planner:
    def __init__(self) -> None:
        self._heap: list[int] = []  # keys, live and stale
        self._key: dict[str, int] = {}  # job -> its live key
        self._at: dict[str, datetime] = {}  # job -> its fire time, as it was set
        self._name: dict[int, str] = {}  # live key -> job
        self._seq = 0

    def __len__(self) -> int:
        return len(self._key)

    def set(self, name: str, fire_at: datetime | None) -> None:
        """Plan ``name`` to fire at ``fire_at`` (None: not at all)."""
        if fire_at is None:
            self.remove(name)
            return
        if self._at.get(name) == fire_at:
            return
        old = self._key.get(name)
        if old is not None:
            del self._name[old]  # its heap entry is now stale
        self._seq += 1
        if self._seq >> SEQ_BITS:
            self._compact()  # renumbers the live keys from 1
            self._seq = len(self._key) + 1
        key = (_micros(fire_at) << SEQ_BITS) | self._seq
        self._key[name] = key
        self._at[name] = fire_at
        self._name[key] = name
        heapq.heappush(self._heap, key)
        if len(self._heap) > 2 * len(self._key) + 1024:
            self._compact()

    def remove(self, name: str) -> None:
        key = self._key.pop(name, None)
        if key is not None:
            del self._name[key]
            del self._at[name]

    def planned(self, name: str) -> datetime | None:
        return self._at.get(name)

    def _drop_stale(self) -> None:
        heap, live = self._heap, self._name
        while heap and heap[0] not in live:
            heapq.heappop(heap)

    def next_wakeup(self) -> datetime | None:
        self._drop_stale()
        return self._at[self._name[self._heap[0]]] if self._heap else None

    def due(self, now: datetime, *, limit: int | None = None) -> list[tuple[str, datetime]]:
        """Pop every (job name, fire time) with fire time <= now, earliest first.

        A popped job is no longer planned until ``set`` is called for it again.
        """
        out: list[tuple[str, datetime]] = []
        heap, live = self._heap, self._name
        bound = (_micros(now) + 1) << SEQ_BITS  # every key of an instant <= now is below
        while heap and heap[0] < bound and (limit is None or len(out) < limit):
            name = live.pop(heapq.heappop(heap), None)
            if name is not None:  # else stale
                del self._key[name]
                out.append((name, self._at.pop(name)))
        return out

    def _compact(self) -> None:
        """Drop the stale keys; the live ones get sequence numbers 1.. in their order."""
        live = sorted(self._name.items())
        seq = 0
        self._key, self._name, self._heap = {}, {}, []
        for key, name in live:
            seq += 1
            new = (key >> SEQ_BITS << SEQ_BITS) | seq
            self._key[name] = new
            self._name[new] = name
            self._heap.append(new)  # sorted: a heap already
