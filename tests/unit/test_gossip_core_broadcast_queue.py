"""The broadcast queue's take-everything shortcut picks exactly what the general
take picks (same messages, same order, same transmit counts afterwards): checked
against the bucket-by-bucket algorithm it replaced, under random puts and takes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trickle.gossip import wire
from trickle.gossip.core import _BroadcastQueue
from trickle.gossip.messages import Alive, Broadcast, Dead, Suspect, UserEvent

MIN_BYTES = 8  # core._MIN_BROADCAST_BYTES
MAX_MISSES = 8  # core._MAX_MISSES


class ReferenceQueue:
    """The queue as it was before the shortcut: every take walks the buckets, newest
    first inside each, and moves what it took to the next bucket one by one."""

    def __init__(self, max_bytes: int) -> None:
        self.where: dict[object, int] = {}
        self.watched: object = None
        self.watched_sent = 0
        self.buckets: list[dict[object, list[object]]] = []  # [message, size, transmits]
        self.max_bytes = max_bytes - wire.PER_MESSAGE_OVERHEAD

    def put(self, key: object, message: Broadcast) -> None:
        old = self.where.pop(key, None)
        if old is not None:
            del self.buckets[old][key]
        size = wire.message_size(message)
        if size > self.max_bytes:
            return
        if not self.buckets:
            self.buckets.append({})
        self.buckets[0][key] = [message, size, 0]
        self.where[key] = 0

    def take(self, space: int, limit: int) -> list[object]:
        if not self.where:
            return []
        out: list[object] = []
        per = wire.PER_MESSAGE_OVERHEAD
        moved: list[tuple[object, list[object]]] = []
        for transmits, bucket in enumerate(self.buckets):
            if not bucket:
                continue
            taken = []
            misses = 0
            for key, item in reversed(bucket.items()):
                need = int(item[1]) + per  # type: ignore[call-overload]
                if need > space:
                    misses += 1
                    if space < MIN_BYTES or misses > MAX_MISSES:
                        break
                    continue
                space -= need
                out.append(item[0])
                taken.append((key, item))
            sent = transmits + 1
            for key, item in taken:
                if key == self.watched:
                    self.watched_sent += 1
                del bucket[key]
                item[2] = sent
                if sent >= limit:
                    del self.where[key]
                else:
                    moved.append((key, item))
            if space < MIN_BYTES or misses > MAX_MISSES:
                break
        for key, item in reversed(moved):
            target = int(item[2])  # type: ignore[call-overload]
            while len(self.buckets) <= target:
                self.buckets.append({})
            self.buckets[target][key] = item
            self.where[key] = target
        while self.buckets and not self.buckets[-1]:
            self.buckets.pop()
        return out


def message(kind: int, node: int, incarnation: int, pad: int) -> tuple[object, Broadcast]:
    """A broadcast and its queue key; `pad` makes sizes vary."""
    name = f"n{node:02d}" + "x" * pad
    if kind == 0:
        return ("m", name), Alive(incarnation, name, ("10.0.0.1", 7946), {"k": "v" * pad})
    if kind == 1:
        return ("m", name), Suspect(incarnation, name, "s" * (pad + 1))
    if kind == 2:
        return ("m", name), Dead(incarnation, name, name)
    event = UserEvent(incarnation, f"e{node}", b"p" * pad)
    return event, event


put_op = st.tuples(
    st.just("put"),
    st.integers(0, 3),
    st.integers(0, 11),
    st.integers(0, 5),
    st.integers(0, 40),
)
take_op = st.tuples(
    st.just("take"),
    st.one_of(st.integers(0, 120), st.integers(120, 1400)),
    st.integers(1, 6),
)
watch_op = st.tuples(st.just("watch"), st.integers(0, 11))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(put_op, put_op, take_op, take_op, take_op, watch_op), max_size=80))
def test_the_queue_takes_what_the_bucket_walk_takes(ops: list[tuple[object, ...]]) -> None:
    queue = _BroadcastQueue(1400)
    reference = ReferenceQueue(1400)
    for op in ops:
        if op[0] == "put":
            _, kind, node, incarnation, pad = op
            key, msg = message(kind, node, incarnation, pad)  # type: ignore[arg-type]
            queue.put(key, msg)
            reference.put(key, msg)
        elif op[0] == "take":
            _, space, limit = op
            assert queue.take(space, limit) == reference.take(space, limit)  # type: ignore[arg-type]
        else:
            key = ("m", f"n{op[1]:02d}")
            queue.watched = reference.watched = key
        assert len(queue) == len(reference.where)
        assert queue.watched_sent == reference.watched_sent
        for key in reference.where:
            assert key in queue


def test_a_queue_that_fits_in_the_packet_is_sent_fewest_transmits_first_newest_first() -> None:
    queue = _BroadcastQueue(1400)
    first = Alive(1, "a", ("10.0.0.1", 7946), {})
    second = Alive(1, "b", ("10.0.0.2", 7946), {})
    queue.put(("m", "a"), first)
    queue.put(("m", "b"), second)
    assert queue.take(1400, 3) == [second, first]
    third = Suspect(1, "c", "a")
    queue.put(("m", "c"), third)
    assert queue.take(1400, 3) == [third, second, first]
    assert queue.take(1400, 3) == [third, second, first]  # a and b: their third and last
    assert queue.take(1400, 3) == [third]
    assert queue.take(1400, 3) == []
    assert len(queue) == 0
