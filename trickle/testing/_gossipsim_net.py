"""The gossip simulator's network model: one-way delays, UDP loss and duplication, byte sizes.

Delays are drawn from the simulation's one seeded ``random.Random``. TCP is modelled as
reliable (no loss) but as taking a handshake before its request, and it fails outright
across a partition or to a member that is down or stalled (see ``gossipsim``).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs

from trickle.errors import ValidationError
from trickle.gossip.messages import MemberState, Message, PushPull

UDP_HEADER_BYTES = 28  # IPv4 (20) + UDP (8) headers of one datagram
TCP_HEADER_BYTES = 40  # IPv4 (20) + TCP (20) headers of one segment
TCP_CONNECTION_BYTES = 6 * TCP_HEADER_BYTES  # SYN, SYN-ACK, ACK and the FIN exchange
SIZE_CACHE_LIMIT = 200_000  # message sizes remembered (by object) before the cache is reset

DelaySampler = Callable[[random.Random], float]


@attrs.frozen(kw_only=True)
class NetConfig:
    """How the simulated network treats packets.

    delay_s: one-way delay of a packet, uniform in this range in seconds (different
        delays reorder packets). The LAN default is 0.5 to 3 ms.
    tail_rate / tail_s: probability that a packet instead takes a delay uniform in
        ``tail_s`` (queueing spikes; 0 by default).
    sampler: a function of the rng returning a delay in seconds; replaces the two above.
    loss: probability that a UDP packet is lost (TCP is reliable).
    duplicate: probability that a UDP packet arrives twice (each copy with its own delay).
    Presets: ``lan()`` (the defaults), ``lossy(loss)``, ``wan()``.
    """

    delay_s: tuple[float, float] = (0.0005, 0.003)
    tail_rate: float = 0.0
    tail_s: tuple[float, float] = (0.01, 0.1)
    sampler: DelaySampler | None = None
    loss: float = 0.0
    duplicate: float = 0.0

    def __attrs_post_init__(self) -> None:
        for name in ("tail_rate", "loss", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValidationError(f"{name} must be in [0, 1], got {value}", field=name)
        for name in ("delay_s", "tail_s"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi:
                raise ValidationError(f"{name} must be 0 <= low <= high, got {lo, hi}", field=name)

    @classmethod
    def lan(cls) -> NetConfig:
        return cls()

    @classmethod
    def lossy(cls, loss: float) -> NetConfig:
        """The LAN's delays with ``loss`` of UDP packets lost."""
        return cls(loss=loss)

    @classmethod
    def wan(cls) -> NetConfig:
        """20-80 ms one way, 1% of packets 100-300 ms, 1% lost."""
        return cls(delay_s=(0.02, 0.08), tail_rate=0.01, tail_s=(0.1, 0.3), loss=0.01)

    def delay_function(self, rng: random.Random) -> Callable[[], float]:
        """A function drawing one delay from ``rng`` (bound once: it is called per packet)."""
        if self.sampler is not None:
            sampler = self.sampler

            def sampled() -> float:
                return max(0.0, float(sampler(rng)))

            return sampled
        lo, hi = self.delay_s
        span = hi - lo
        draw = rng.random
        if self.tail_rate:
            tail_rate = self.tail_rate
            tail_lo, tail_hi = self.tail_s
            tail_span = tail_hi - tail_lo

            def with_tail() -> float:
                if draw() < tail_rate:
                    return tail_lo + tail_span * draw()
                return lo + span * draw()

            return with_tail

        def uniform() -> float:
            return lo + span * draw()

        return uniform


class SizeCounter:
    """Bytes of messages as ``trickle.gossip.wire`` encodes them, remembered per message
    object: a broadcast piggybacked a dozen times is measured once. ``available`` is False
    when the wire module cannot be imported (no byte counts then)."""

    def __init__(self) -> None:
        self.cache: dict[int, tuple[Message, int]] = {}  # id -> (message, size)
        self._entries: dict[tuple[object, ...], int] = {}  # a push-pull's member entries
        try:
            from trickle.gossip import wire
        except ImportError:  # pragma: no cover - only before wire.py exists
            self.available = False
            self.compound_overhead = 0
            self.per_message_overhead = 0
            self.stream_prefix = 0
            self._size: Callable[[Message], int] | None = None
            return
        self.available = True
        self.compound_overhead = wire.COMPOUND_OVERHEAD
        self.per_message_overhead = wire.PER_MESSAGE_OVERHEAD
        self.stream_prefix = wire.STREAM_PREFIX_BYTES + 2  # + the frame's [version, ...] array
        self._size = wire.message_size

    def size(self, message: Message) -> int:
        """Encoded bytes of one message (cached by identity; the cached object is kept
        alive with its size, so its id cannot be reused while it is cached)."""
        key = id(message)
        hit = self.cache.get(key)
        if hit is not None:
            return hit[1]
        assert self._size is not None
        if type(message) is PushPull and len(message.members) > 1:
            size = self._push_pull_size(message)
        else:
            size = self._size(message)
        cache = self.cache
        if len(cache) >= SIZE_CACHE_LIMIT:
            cache.clear()
        cache[key] = (message, size)
        return size

    def _push_pull_size(self, message: PushPull) -> int:
        """A push-pull's exact size without encoding it whole: the message with no
        members, plus each member's entry (remembered by its fields: push-pulls repeat
        the same entries), plus the growth of the members array's header."""
        assert self._size is not None
        size = self._size(attrs.evolve(message, members=()))
        entries = self._entries
        for state in message.members:
            key = (
                state.name,
                state.addr,
                state.incarnation,
                state.state,
                tuple(state.tags.items()),
            )
            entry = entries.get(key)
            if entry is None:
                entry = self._entry_size(message, state)
                if len(entries) >= SIZE_CACHE_LIMIT:
                    entries.clear()
                entries[key] = entry
            size += entry
        return size + _array_header(len(message.members)) - _array_header(0)

    def _entry_size(self, message: PushPull, state: MemberState) -> int:
        assert self._size is not None
        empty = attrs.evolve(message, members=(), events=())
        return self._size(attrs.evolve(empty, members=(state,))) - self._size(empty)

    def packet(self, messages: tuple[Message, ...]) -> int:
        """Bytes of one UDP payload carrying ``messages`` (without IP/UDP headers)."""
        if not self.available:
            return 0
        total = self.compound_overhead
        per = self.per_message_overhead
        size = self.size
        for m in messages:
            total += size(m) + per
        return total

    def frame(self, message: Message) -> int:
        """Bytes of one TCP frame carrying ``message`` (without TCP/IP headers)."""
        if not self.available:
            return 0
        return self.stream_prefix + self.size(message)


def _array_header(length: int) -> int:
    """Bytes of a msgpack array header for ``length`` elements."""
    if length < 16:
        return 1
    return 3 if length < 65536 else 5
