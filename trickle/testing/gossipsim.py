"""A deterministic simulator of SWIM gossip: many ``Membership`` cores, one seed, no Trio.

Everything happens in one synchronous discrete-event loop over one heap of (virtual time
in seconds, sequence number, handler, arguments). Every member is a pure
``trickle.gossip.core.Membership`` with its own ``random.Random`` drawn from the
simulation's one ``random.Random(seed)``, so a seed replays exactly, in any process,
whatever ``PYTHONHASHSEED`` is::

    sim = GossipSim(50, seed=sim_seed)             # 50 members that know each other
    sim.run_for(5)
    sim.kill("n07")
    sim.expect(lambda: sim.all_see("n07", State.DEAD), timeout=30, what="n07 detected")
    when = sim.when_all_saw("n07", EventKind.FAIL)  # virtual time the last one saw it

What is simulated:

- Members: each is polled at its own ``next_deadline()`` (at most one live wake-up per
  member in the heap); after every input its outgoing messages are sent and its events
  recorded with their virtual time.
- UDP (``NetConfig``): a one-way delay per packet (LAN: 0.5-3 ms uniform, or any sampler),
  loss, duplication, a per-member extra loss (``set_loss``), partitions into groups.
  Messages are handed over as objects, never encoded; bytes are counted with
  ``trickle.gossip.wire`` sizes plus the packet and IP/UDP header overheads.
- TCP (``Outgoing.stream``): reliable; the request arrives after a handshake (three
  one-way delays), the answer one delay later and is fed back through ``receive``. UDP's
  loss rate on the path (network and both members') delays it instead of losing it: a
  lost handshake segment is sent again after 1 s, a lost data segment after 200 ms
  (doubling), as Linux does. It fails (no answer) across a partition, to a member that is
  down or stalled, when the requester died or restarted meanwhile, or past
  ``tcp_timeout``.
- Faults: ``kill`` (the member stops; packets to it vanish), ``restart`` (a new core at the
  same name and address that joins through a few live members), ``leave`` (graceful: the
  member runs until ``leave_done()`` or ``leave_timeout``, then stops), ``stall`` (for D
  seconds the member neither runs timers nor reads packets; packets queue up to
  ``socket_buffer_packets`` and are dropped beyond it; when it resumes its late timers
  and its queued packets are handled, in an order the rng picks, as a CPU-starved
  process's would be), ``add`` (a new member joins).
- Invariants after every step (``InvariantViolation``): no member declares itself dead
  while it is not leaving; a member that left is never reported FAIL by a member that
  could hear its leave; the incarnation a member reports for another never goes back
  (until it is reaped); a user event is delivered at most once per member. Every
  ``check_every`` virtual seconds, more expensive ones: every running member sees itself
  alive, its own incarnation never goes back, and one member's full view (in turn) is
  well formed. A violation prints the seed, the virtual time, the replay command and the
  last trace lines.
- A trace: every delivered packet, simulator action and event, in a ring (``trace_tail``)
  and in a running hash (``trace_hash``).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import os
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs

from trickle.errors import ValidationError
from trickle.gossip.config import DEFAULT_PORT, GossipConfig, lan
from trickle.gossip.core import Membership
from trickle.gossip.messages import (
    Address,
    Event,
    EventKind,
    Member,
    MemberEvent,
    MemberState,
    Message,
    Outgoing,
    State,
    UserEventReceived,
)
from trickle.testing._gossipsim_net import (
    TCP_CONNECTION_BYTES,
    TCP_HEADER_BYTES,
    UDP_HEADER_BYTES,
    NetConfig,
    SizeCounter,
)

__all__ = [
    "GossipSim",
    "GossipSimConfig",
    "InvariantViolation",
    "NetConfig",
    "Recorded",
    "SimMember",
    "SimStats",
    "SimulationFailure",
]

INF = math.inf
TRACE_LINES = 300  # trace entries kept (the last FAILURE_TRACE_LINES are printed)
FAILURE_TRACE_LINES = 60
ENCRYPTION_OVERHEAD = 29  # wire.ENCRYPTION_OVERHEAD: version byte + nonce + tag
TCP_SYN_RTO_S = 1.0  # Linux's initial retransmission timeout (SYN, SYN-ACK)
TCP_MIN_RTO_S = 0.2  # Linux's minimum retransmission timeout of a data segment
TCP_MAX_RTO_S = 120.0  # a segment lost beyond this RTO stops adding delay (it arrives)
MAX_POLLS_AT_ONE_INSTANT = 10_000  # a core asking to be polled again and again at `now`
KIND_CODES = {EventKind.JOIN: 1, EventKind.UPDATE: 2, EventKind.LEAVE: 3, EventKind.FAIL: 4}
KIND_CODES[EventKind.REAP] = 5


@attrs.frozen(kw_only=True)
class GossipSimConfig:
    """How a simulation runs.

    gossip: every member's GossipConfig (LAN by default).
    network: delays and UDP faults (``NetConfig.lan()`` by default).
    socket_buffer_packets: packets a stalled member's socket holds; more are dropped.
    encrypted: count the keyring's per-packet and per-frame overhead in the bytes.
    leave_timeout: seconds a leaving member runs at most before it stops (it stops sooner
        when its core says ``leave_done()``).
    seeds: live members a restarted or added member joins through (when not given).
    join_spacing: with ``start="join"``, seconds between two members' joins.
    check_every: virtual seconds between two sweeps of the expensive invariants.
    record_events: keep every event with its time for queries (invariants are checked
        either way).
    trace_packets: trace every packet delivered (the ring and ``trace_hash``); off,
        only actions and events are traced, and each packet costs less to simulate
        (long runs that need neither the hash nor packets in a failure's trace tail).
    count_bytes: count the bytes sent (``bytes_sent``, ``SimStats.udp_bytes``,
        ``tcp_bytes``); off, they stay 0 and each packet costs less to simulate.
    trace_lines: trace entries kept in the ring.
    """

    gossip: GossipConfig = attrs.field(factory=lan)
    network: NetConfig = attrs.field(factory=NetConfig)
    socket_buffer_packets: int = 256
    encrypted: bool = False
    leave_timeout: float = 5.0
    seeds: int = 3
    join_spacing: float = 0.05
    check_every: float = 1.0
    record_events: bool = True
    count_bytes: bool = True
    trace_packets: bool = True
    trace_lines: int = TRACE_LINES

    def __attrs_post_init__(self) -> None:
        if self.socket_buffer_packets < 0:
            raise ValidationError(
                "socket_buffer_packets must not be negative", field="socket_buffer_packets"
            )
        for name in ("leave_timeout", "check_every"):
            if not getattr(self, name) > 0:
                raise ValidationError(f"{name} must be positive", field=name)
        if self.seeds < 1:
            raise ValidationError("seeds must be at least 1", field="seeds")


class SimulationFailure(AssertionError):
    """A scenario failed (an expectation, or an invariant); the message carries the seed,
    the virtual time, the replay command and the last trace lines."""


class InvariantViolation(SimulationFailure):
    """A membership property broke."""


@attrs.frozen(slots=True)
class Recorded:
    """One event as a member reported it, with the virtual time it happened."""

    time: float
    observer: str
    event: Event

    def describe(self) -> str:
        return f"{self.time:.4f} {self.observer}: {self.event.describe()}"


@attrs.define
class SimStats:
    """Counters since the start."""

    events: int = 0  # heap events processed
    polls: int = 0
    packets_sent: int = 0  # UDP packets handed to the network
    packets_delivered: int = 0
    packets_lost: int = 0  # loss (network or per member)
    packets_dropped: int = 0  # partition, no member at the address, member down
    packets_overflowed: int = 0  # a stalled member's full socket buffer
    packets_duplicated: int = 0
    messages_sent: int = 0  # messages inside UDP packets
    udp_bytes: int = 0  # UDP payload + IP/UDP headers (+ encryption overhead)
    tcp_requests: int = 0
    tcp_failed: int = 0  # refused, cut by a partition, to a stalled or dead member
    tcp_bytes: int = 0  # both directions, with TCP/IP headers and connection set-up
    member_events: int = 0
    user_events: int = 0
    kills: int = 0
    restarts: int = 0
    leaves: int = 0
    stalls: int = 0
    joins: int = 0


class SimMember:
    """One simulated node: while it runs, its ``core``; its history of faults. Read-only
    for tests (``core`` may be inspected and given operations through the simulation)."""

    __slots__ = (
        "bytes_sent",
        "core",
        "group",
        "inbox",
        "incs",
        "index",
        "kills",
        "last_core",
        "leave_called_at",
        "leave_forced",
        "leaving",
        "left",
        "left_at",
        "life",
        "loss",
        "name",
        "addr",
        "own_inc",
        "overflow_at",
        "packets_sent",
        "poll_instant",
        "polls_at_instant",
        "stall_end",
        "stalled",
        "stalled_until",
        "started_at",
        "tags",
        "up",
        "user_seen",
        "wake_t",
    )

    def __init__(self, name: str, index: int, addr: Address, tags: Mapping[str, str]) -> None:
        self.name = name
        self.index = index
        self.addr = addr
        self.tags: Mapping[str, str] = dict(tags)
        self.core: Membership | None = None
        self.last_core: Membership | None = None
        self.up = False
        self.life = 0  # +1 at every start and stop: stale heap entries check it
        self.group = 0  # partition group
        self.loss = 0.0  # extra UDP loss on packets from and to this member
        self.stalled = False
        self.stalled_until = 0.0
        self.stall_end = -INF  # when the last stall ended
        self.inbox: list[tuple[Address, tuple[Message, ...]]] = []
        self.overflow_at = -INF  # last time its socket buffer overflowed
        self.wake_t = INF
        self.poll_instant = -INF
        self.polls_at_instant = 0
        self.leaving = False
        self.leave_called_at: float | None = None
        self.leave_forced = False
        self.left = False
        self.left_at: float | None = None
        self.kills = 0
        self.started_at = 0.0
        self.incs: dict[str, int] = {}  # incarnation last reported per member (this life)
        self.user_seen: set[tuple[int, str]] = set()
        self.own_inc = 0
        self.bytes_sent = 0
        self.packets_sent = 0

    @property
    def running(self) -> bool:
        """Up, not stalled and not leaving: a member that should be seen alive."""
        return self.up and not self.stalled and not self.leaving

    def __repr__(self) -> str:
        state = "up" if self.up else ("left" if self.left else "down")
        return f"<SimMember {self.name} {state} life={self.life}>"


def default_names(n: int) -> list[str]:
    """n000, n001, ... zero-padded so that name order is index order."""
    width = max(2, len(str(n - 1)))
    return [f"n{i:0{width}d}" for i in range(n)]


def address_of(index: int) -> Address:
    """A distinct IPv4 address per member index, all on the default gossip port."""
    i = index + 1
    return (f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", DEFAULT_PORT)


class GossipSim:
    """A cluster of ``members`` (a count, named ``n00``...; or explicit names) at virtual
    time 0. ``start="converged"``: every member starts knowing every other alive at
    incarnation 0 (each core's ``known`` members: no broadcast, no event; a member's own
    JOIN at that warm start is not recorded either). ``start="join"``: the first member starts alone and
    each next one joins ``join_spacing`` seconds later through up to ``seeds`` members
    already started (everything recorded). ``tags`` gives a member's starting tags."""

    def __init__(
        self,
        members: int | Sequence[str] = 10,
        *,
        seed: int,
        config: GossipSimConfig | None = None,
        start: Literal["converged", "join"] = "converged",
        tags: Callable[[str], Mapping[str, str]] | None = None,
    ) -> None:
        names = default_names(members) if isinstance(members, int) else list(members)
        if not names or len(set(names)) != len(names):
            raise ValidationError("a simulation needs distinct member names", field="members")
        if start not in ("converged", "join"):
            raise ValidationError(f"unknown start {start!r}", field="start")
        self.seed = seed
        self.config = config or GossipSimConfig()
        self.now = 0.0
        self.stats = SimStats()
        self._rng = random.Random(seed)
        self._delay = self.config.network.delay_function(self._rng)
        self._random = self._rng.random
        self._net_loss = self.config.network.loss
        self._net_duplicate = self.config.network.duplicate
        self._queue: list[tuple[float, int, Callable[[Any, Any, Any], None], Any, Any, Any]] = []
        self._seq = itertools.count()
        self._sizes = SizeCounter()
        self._count_bytes = self.config.count_bytes and self._sizes.available
        self._trace_packets = self.config.trace_packets
        self._trace_ring: deque[tuple[float, Any]] = deque(maxlen=self.config.trace_lines)
        self._hash = hashlib.blake2b(digest_size=16)
        self._fp = 0
        self._members: dict[str, SimMember] = {}
        self._by_addr: dict[Address, SimMember] = {}
        self._log: list[Recorded] = []
        self._by_subject: dict[str, list[Recorded]] = {}
        self._false_failures: dict[tuple[str, int], Recorded] = {}
        self._grouped = False
        self._partition_changed_at = -INF
        self._next_check = self.config.check_every
        self._sweep_cursor = 0
        self._recording = self.config.record_events
        self._socket_buffer = self.config.socket_buffer_packets
        self._tcp_timeout = self.config.gossip.tcp_timeout
        self._udp_overhead = (
            UDP_HEADER_BYTES
            + self._sizes.compound_overhead
            + (ENCRYPTION_OVERHEAD if self.config.encrypted else 0)
        )
        self._tcp_overhead = TCP_HEADER_BYTES + (
            ENCRYPTION_OVERHEAD if self.config.encrypted else 0
        )
        # bound handlers (no bound-method allocation per heap entry)
        self._h_wake = self._on_wake
        self._h_udp = self._on_udp
        self._h_tcp_request = self._on_tcp_request
        self._h_tcp_answer = self._on_tcp_answer
        self._h_resume = self._on_resume
        self._h_call = self._on_call
        self._tags_of = tags or (lambda _name: {})
        for name in names:
            self._new_member(name)
        if start == "converged":
            self._start_converged()
        else:
            first = self._members[names[0]]
            self._boot(first, join=())
            for i, name in enumerate(names[1:], start=1):
                self._schedule(i * self.config.join_spacing, self._h_call, self._join_started, name)

    # --- members and lookups -------------------------------------------------------------
    def _new_member(self, name: str) -> SimMember:
        index = len(self._members)
        m = SimMember(name, index, address_of(index), self._tags_of(name))
        self._members[name] = m
        self._by_addr[m.addr] = m
        return m

    @property
    def names(self) -> list[str]:
        """Every member ever created, in creation order."""
        return list(self._members)

    def member(self, name: str) -> SimMember:
        try:
            return self._members[name]
        except KeyError:
            raise ValidationError(f"no member {name!r} in the simulation", field="name") from None

    def view(self, name: str) -> Membership:
        """The running core of ``name`` (fails if it is down)."""
        m = self.member(name)
        if m.core is None:
            self.fail(f"member {name} is not running")
        assert m.core is not None
        return m.core

    def live(self) -> list[str]:
        """Members up (stalled and leaving ones included)."""
        return [m.name for m in self._members.values() if m.up]

    def running(self) -> list[str]:
        """Members up, not stalled, not leaving."""
        return [m.name for m in self._members.values() if m.running]

    def state_in(self, observer: str, subject: str) -> State | None:
        """What ``observer`` believes of ``subject`` (None: it does not know it)."""
        found = self.view(observer).member(subject)
        return None if found is None else found.state

    # --- the event loop ------------------------------------------------------------------
    def _schedule(self, delay: float, fn: Callable[[Any, Any, Any], None], *args: Any) -> None:
        a, b, c = (*args, None, None, None)[:3]
        heapq.heappush(self._queue, (self.now + delay, next(self._seq), fn, a, b, c))

    def at(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn()`` ``delay`` virtual seconds from now (a scenario's own event)."""
        self._schedule(delay, self._h_call, lambda _: fn(), None)

    def step(self) -> bool:
        """Process the next event; False when nothing is scheduled."""
        if not self._queue:
            return False
        t, _, fn, a, b, c = heapq.heappop(self._queue)
        self.now = t
        self.stats.events += 1
        fn(a, b, c)
        if t >= self._next_check:
            self._sweep()
        return True

    def run_for(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass."""
        self._run_to(self.now + seconds)

    def run_until(
        self, predicate: Callable[[], bool], timeout: float, *, every: float | None = None
    ) -> bool:
        """Run until ``predicate()`` holds; False if it still does not after ``timeout``
        seconds (the clock then stands at the deadline). The predicate is checked after
        every event, or (for costly ones) every ``every`` virtual seconds."""
        if predicate():
            return True
        deadline = self.now + timeout
        if every is not None:
            while self.now < deadline:
                self._run_to(min(deadline, self.now + every))
                if predicate():
                    return True
            return predicate()
        queue = self._queue
        while queue and queue[0][0] <= deadline:
            self.step()
            if predicate():
                return True
        self.now = deadline
        return predicate()

    def expect(
        self,
        predicate: Callable[[], bool],
        timeout: float,
        what: str,
        *,
        every: float | None = None,
    ) -> None:
        """``run_until`` or fail with ``what`` (and the seed and trace)."""
        if not self.run_until(predicate, timeout, every=every):
            self.fail(f"expected within {timeout:g} s: {what}")

    def _run_to(self, deadline: float) -> None:
        queue = self._queue
        pop = heapq.heappop
        stats = self.stats
        next_check = self._next_check
        events = 0
        try:
            while queue and queue[0][0] <= deadline:
                t, _, fn, a, b, c = pop(queue)
                self.now = t
                events += 1
                fn(a, b, c)
                if t >= next_check:
                    self._sweep()
                    next_check = self._next_check
        finally:
            stats.events += events
        self.now = deadline

    def _on_call(self, fn: Callable[[Any], None], arg: Any, _c: Any) -> None:
        fn(arg)

    # --- one member's turn ---------------------------------------------------------------
    def _on_wake(self, m: SimMember, life: int, _c: Any) -> None:
        if m.life != life or m.wake_t != self.now:
            return  # stale: the member stopped, or a sooner wake-up replaced this one
        m.wake_t = INF
        if m.stalled:
            return  # its timers run when it resumes
        core = m.core
        assert core is not None
        self.stats.polls += 1
        core.poll(now=self.now)
        self._after(m, core)

    def _after(self, m: SimMember, core: Membership) -> None:
        """Send what the core wants sent, record its events, schedule its next poll."""
        outgoing = core.take_outgoing()
        if outgoing:
            for out in outgoing:
                if out.stream:
                    self._tcp_request(m, out)
                else:
                    self._udp(m, out)
        events = core.take_events()
        if events:
            self._on_events(m, events)
        if m.leaving and core.leave_done():
            self._stop_leaving(m, forced=False)
            return
        deadline = core.next_deadline()
        if deadline < m.wake_t:
            now = self.now
            if deadline <= now:
                if m.poll_instant == now:
                    m.polls_at_instant += 1
                    if m.polls_at_instant > MAX_POLLS_AT_ONE_INSTANT:
                        self._violation(
                            f"{m.name}: next_deadline() stays at {deadline} <= now after "
                            f"{MAX_POLLS_AT_ONE_INSTANT} polls (a busy loop)"
                        )
                else:
                    m.poll_instant = now
                    m.polls_at_instant = 0
                deadline = now
            m.wake_t = deadline
            heapq.heappush(self._queue, (deadline, next(self._seq), self._h_wake, m, m.life, None))

    # --- UDP -------------------------------------------------------------------------------
    def _udp(self, m: SimMember, out: Outgoing) -> None:
        stats = self.stats
        messages = out.messages
        stats.packets_sent += 1
        stats.messages_sent += len(messages)
        if self._count_bytes:
            sizes = self._sizes
            cache = sizes.cache
            size = self._udp_overhead + sizes.per_message_overhead * len(messages)
            for message in messages:
                hit = cache.get(id(message))
                size += sizes.size(message) if hit is None else hit[1]
            stats.udp_bytes += size
            m.bytes_sent += size
        m.packets_sent += 1
        dst = self._by_addr.get(out.to)
        if dst is None or not dst.up or dst.group != m.group:
            stats.packets_dropped += 1
            return
        random = self._random
        loss = self._net_loss
        if loss and random() < loss:
            stats.packets_lost += 1
            return
        if (m.loss and random() < m.loss) or (dst.loss and random() < dst.loss):
            stats.packets_lost += 1
            return
        arrival = self.now + self._delay()
        heapq.heappush(self._queue, (arrival, next(self._seq), self._h_udp, dst, m, messages))
        duplicate = self._net_duplicate
        if duplicate and random() < duplicate:
            stats.packets_duplicated += 1
            arrival = self.now + self._delay()
            heapq.heappush(self._queue, (arrival, next(self._seq), self._h_udp, dst, m, messages))

    def _on_udp(self, dst: SimMember, src: SimMember, messages: tuple[Message, ...]) -> None:
        stats = self.stats
        if not dst.up or dst.group != src.group:
            stats.packets_dropped += 1
            return
        if dst.stalled:
            if len(dst.inbox) >= self._socket_buffer:
                stats.packets_overflowed += 1
                dst.overflow_at = self.now
                return
            dst.inbox.append((src.addr, messages))
            return
        stats.packets_delivered += 1
        now = self.now
        if self._trace_packets:
            self._trace_ring.append((now, (src.name, dst.name, messages)))
            self._fp = hash((self._fp, now, src.index, dst.index, len(messages)))
        core = dst.core
        assert core is not None
        core.receive(src.addr, messages, now=now)
        self._after(dst, core)

    # --- TCP -------------------------------------------------------------------------------
    def _tcp_request(self, m: SimMember, out: Outgoing) -> None:
        stats = self.stats
        stats.tcp_requests += 1
        if len(out.messages) != 1:
            self._violation(f"{m.name} sent a TCP request of {len(out.messages)} messages")
        message = out.messages[0]
        if self._count_bytes:
            size = self._sizes.frame(message) + self._tcp_overhead + TCP_CONNECTION_BYTES
            stats.tcp_bytes += size
            m.bytes_sent += size
        dst = self._by_addr.get(out.to)
        if dst is None or not dst.up or dst.group != m.group:
            stats.tcp_failed += 1
            return
        loss = 1.0 - (1.0 - self.config.network.loss) * (1.0 - m.loss) * (1.0 - dst.loss)
        # the handshake (SYN, SYN-ACK; a lost one is sent again after TCP's initial 1 s
        # RTO), then the request (a lost segment is sent again after the 200 ms minimum)
        delay = (
            self._tcp_leg(loss, TCP_SYN_RTO_S)
            + self._tcp_leg(loss, TCP_SYN_RTO_S)
            + self._tcp_leg(loss, TCP_MIN_RTO_S)
        )
        self._schedule(delay, self._h_tcp_request, dst, m, (m.life, message, self.now, loss))

    def _tcp_leg(self, loss: float, rto: float) -> float:
        """One-way time of a TCP segment: lost with probability ``loss`` and sent again
        after ``rto`` (doubling) until it arrives. TCP loses nothing; loss only delays."""
        delay = self._delay()
        if loss:
            draw = self._rng.random
            while draw() < loss and rto < TCP_MAX_RTO_S:
                delay += rto
                rto *= 2
        return delay

    def _on_tcp_request(
        self, dst: SimMember, src: SimMember, request: tuple[int, Message, float, float]
    ) -> None:
        life, message, started, loss = request
        if not dst.up or dst.stalled or dst.group != src.group or src.life != life:
            self.stats.tcp_failed += 1
            return
        now = self.now
        core = dst.core
        assert core is not None
        if self._trace_packets:
            self._trace_ring.append((now, (src.name, dst.name, (message,), "tcp")))
            self._fp = hash((self._fp, now, src.index, dst.index, -1))
        answer = core.receive_stream(src.addr, message, now=now)
        if answer is not None:
            if self._count_bytes:
                size = self._sizes.frame(answer) + self._tcp_overhead
                self.stats.tcp_bytes += size
                dst.bytes_sent += size
            delay = self._tcp_leg(loss, TCP_MIN_RTO_S)
            self._schedule(delay, self._h_tcp_answer, src, dst, (life, answer, started))
        self._after(dst, core)

    def _on_tcp_answer(
        self, src: SimMember, dst: SimMember, answer: tuple[int, Message, float]
    ) -> None:
        life, message, started = answer
        if src.life != life or not src.up:
            return  # the requester is gone: the connection went with it
        if dst.group != src.group or self.now - started > self._tcp_timeout:
            self.stats.tcp_failed += 1
            return
        if src.stalled:
            src.inbox.append((dst.addr, (message,)))  # TCP: held in the socket, never dropped
            return
        now = self.now
        if self._trace_packets:
            self._trace_ring.append((now, (dst.name, src.name, (message,), "tcp answer")))
            self._fp = hash((self._fp, now, dst.index, src.index, -2))
        core = src.core
        assert core is not None
        core.receive(dst.addr, (message,), now=now)
        self._after(src, core)

    # --- events and invariants -----------------------------------------------------------
    def _on_events(self, m: SimMember, events: list[Event]) -> None:
        now = self.now
        recording = self._recording
        stats = self.stats
        for event in events:
            if type(event) is MemberEvent:
                stats.member_events += 1
                self._check_member_event(m, event)
            elif type(event) is UserEventReceived:
                stats.user_events += 1
                key = (event.ltime, event.name)
                if key in m.user_seen:
                    self._violation(
                        f"{m.name} received user event {event.describe()} a second time"
                    )
                m.user_seen.add(key)
            self._hash.update(f"{now!r} {m.name} {event.describe()}\n".encode())
            self._trace_ring.append((now, f"{m.name} event {event.describe()}"))
            if recording:
                rec = Recorded(now, m.name, event)
                self._log.append(rec)
                if type(event) is MemberEvent:
                    self._by_subject.setdefault(event.member.name, []).append(rec)

    def _check_member_event(self, m: SimMember, event: MemberEvent) -> None:
        member = event.member
        name = member.name
        kind = event.kind
        if kind is EventKind.REAP:
            m.incs.pop(name, None)
        else:
            before = m.incs.get(name, -1)
            if member.incarnation < before:
                self._violation(
                    f"{m.name} reports {name} at incarnation {member.incarnation} after "
                    f"{before} ({event.describe()})"
                )
            m.incs[name] = member.incarnation
        if kind is not EventKind.FAIL:
            return
        if name == m.name and not m.leaving:
            self._violation(f"{m.name} declared itself dead ({event.describe()})")
        subject = self._members.get(name)
        if subject is None:
            return
        if subject.leave_called_at is not None and self._leave_was_audible(subject, m):
            self._violation(
                f"{m.name} reports {name} failed, but {name} left at "
                f"{subject.leave_called_at:.3f} and {m.name} could hear it "
                f"({event.describe()})"
            )
        if subject.kills == 0 and subject.leave_called_at is None and subject.up:
            key = (name, member.incarnation)
            if key not in self._false_failures:
                self._false_failures[key] = Recorded(self.now, m.name, event)

    def _leave_was_audible(self, subject: SimMember, observer: SimMember) -> bool:
        """Whether ``observer`` should have learnt of ``subject``'s leave before it could
        declare it dead: no partition since the leave, the leave finished on its own,
        and the observer was not stalled (its late timers may fire before it reads the
        leave) nor dropping packets since."""
        since = subject.leave_called_at
        assert since is not None
        if subject.leave_forced or self._grouped or self._partition_changed_at >= since:
            return False
        if observer.stalled or observer.stall_end >= since or observer.overflow_at >= since:
            return False
        return observer.started_at < since

    def _sweep(self) -> None:
        """The expensive invariants, every ``check_every`` virtual seconds."""
        self._next_check = self.now + self.config.check_every
        members = [m for m in self._members.values() if m.running]
        for m in members:
            core = m.core
            assert core is not None
            own = core.member(m.name)
            if own is None:
                self._violation(f"{m.name} does not know itself")
                return
            if own.state is not State.ALIVE:
                self._violation(f"{m.name} sees itself {own.state.name} while it runs")
            if own.incarnation < m.own_inc:
                self._violation(
                    f"{m.name}'s own incarnation went back from {m.own_inc} to {own.incarnation}"
                )
            m.own_inc = own.incarnation
        if not members:
            return
        m = members[self._sweep_cursor % len(members)]
        self._sweep_cursor += 1
        assert m.core is not None
        view = m.core.members()
        names = [v.name for v in view]
        if names != sorted(names) or len(set(names)) != len(names):
            self._violation(f"{m.name}'s members() is not sorted by unique names")
        unknown = [n for n in names if n not in self._members]
        if unknown:
            self._violation(f"{m.name} knows members that never existed: {unknown[:5]}")
        if m.name not in names:
            self._violation(f"{m.name}'s members() lacks itself")

    def check_invariants(self) -> None:
        """Run the periodic invariant sweep now."""
        self._sweep()

    # --- starting members ----------------------------------------------------------------
    def _boot(self, m: SimMember, *, join: Iterable[Address], incarnation: int = 0) -> Membership:
        core = Membership(
            m.name,
            m.addr,
            config=self.config.gossip,
            rng=random.Random(self._rng.getrandbits(64)),
            now=self.now,
            tags=m.tags,
            incarnation=incarnation,
        )
        m.core = core
        m.up = True
        m.life += 1
        m.started_at = self.now
        m.stalled = False
        m.inbox = []
        m.wake_t = INF
        m.leaving = False
        m.leave_called_at = None
        m.leave_forced = False
        m.left = False
        m.incs = {}
        m.user_seen = set()
        m.own_inc = incarnation
        addresses = list(join)
        self._trace(f"{m.name} start" + (f" join {len(addresses)}" if addresses else ""))
        if addresses:
            self.stats.joins += 1
            core.join(addresses, now=self.now)
        self._after(m, core)
        return core

    def _start_converged(self) -> None:
        members = list(self._members.values())
        states = tuple(
            MemberState(name=m.name, addr=m.addr, incarnation=0, state=State.ALIVE, tags=m.tags)
            for m in members
        )
        for m in members:
            core = Membership(
                m.name,
                m.addr,
                config=self.config.gossip,
                rng=random.Random(self._rng.getrandbits(64)),
                now=0.0,
                tags=m.tags,
                known=states,
            )
            m.core = core
            m.up = True
            m.life = 1
            core.take_events()  # its own JOIN at the warm start: not recorded
            self._after(m, core)
        self._trace(f"start converged: {len(members)} members")

    def _join_started(self, name: str) -> None:
        m = self._members[name]
        self._boot(m, join=self._seed_addresses(m))

    def _seed_addresses(self, m: SimMember) -> list[Address]:
        others = [x for x in self._members.values() if x.up and x is not m and not x.leaving]
        k = min(self.config.seeds, len(others))
        return [x.addr for x in self._rng.sample(others, k)]

    # --- faults and operations -----------------------------------------------------------
    def kill(self, name: str) -> None:
        """Stop ``name`` at once (kill -9): its packets in flight and to come vanish."""
        m = self.member(name)
        if not m.up:
            return
        self.stats.kills += 1
        m.kills += 1
        self._stop(m)
        self._trace(f"{name} killed")

    def _stop(self, m: SimMember) -> None:
        m.up = False
        m.life += 1
        m.last_core = m.core
        m.core = None
        m.stalled = False
        m.inbox = []
        m.wake_t = INF

    def restart(
        self, name: str, *, join: Sequence[str] | None = None, incarnation: int = 0
    ) -> None:
        """Start ``name`` again (a new core, same address, ``incarnation``), joining through
        ``join`` (names) or ``seeds`` random live members."""
        m = self.member(name)
        if m.up:
            raise ValidationError(f"member {name} is running", field="name")
        self.stats.restarts += 1
        addresses = self._seed_addresses(m) if join is None else [self.member(j).addr for j in join]
        self._boot(m, join=addresses, incarnation=incarnation)

    def add(
        self,
        name: str | None = None,
        *,
        join: Sequence[str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """A new member that joins through ``join`` (names) or ``seeds`` random live
        members; returns its name."""
        if name is None:
            name = f"x{len(self._members):04d}"
        if name in self._members:
            raise ValidationError(f"member {name} already exists", field="name")
        m = self._new_member(name)
        if tags is not None:
            m.tags = dict(tags)
        addresses = self._seed_addresses(m) if join is None else [self.member(j).addr for j in join]
        self._boot(m, join=addresses)
        return name

    def leave(self, name: str) -> None:
        """Leave gracefully: the member runs until its core says ``leave_done()`` (or for
        ``leave_timeout``), then stops."""
        m = self.member(name)
        if not m.up or m.leaving:
            raise ValidationError(f"member {name} is not running", field="name")
        self.stats.leaves += 1
        core = m.core
        assert core is not None
        m.leaving = True
        m.leave_called_at = self.now
        self._trace(f"{name} leave")
        core.leave(now=self.now)
        self._after(m, core)
        if m.up:
            self._schedule(
                self.config.leave_timeout, self._h_call, self._leave_timeout, (m, m.life)
            )

    def _leave_timeout(self, arg: tuple[SimMember, int]) -> None:
        m, life = arg
        if m.life == life and m.up and m.leaving:
            self._stop_leaving(m, forced=True)

    def _stop_leaving(self, m: SimMember, *, forced: bool) -> None:
        m.leave_forced = forced
        m.left = True
        m.left_at = self.now
        self._stop(m)
        self._trace(f"{m.name} stopped after leave" + (" (timeout)" if forced else ""))

    def stall(self, name: str, seconds: float) -> None:
        """For ``seconds``, ``name`` runs no timers and reads no packets (they queue up to
        ``socket_buffer_packets``; TCP requests to it fail). A stall of a stalled member
        extends it."""
        m = self.member(name)
        if not m.up:
            raise ValidationError(f"member {name} is not running", field="name")
        if seconds <= 0:
            raise ValidationError("a stall lasts a positive time", field="seconds")
        until = self.now + seconds
        if m.stalled and until <= m.stalled_until:
            return
        self.stats.stalls += 1
        m.stalled = True
        m.stalled_until = until
        self._trace(f"{name} stalled for {seconds:g} s")
        self._schedule(seconds, self._h_resume, m, m.life, until)

    def _on_resume(self, m: SimMember, life: int, until: float) -> None:
        if m.life != life or not m.stalled or m.stalled_until != until:
            return
        m.stalled = False
        m.stall_end = self.now
        inbox = m.inbox
        m.inbox = []
        core = m.core
        assert core is not None
        now = self.now
        timers_first = self._rng.random() < 0.5
        self._trace(
            f"{m.name} resumes: {len(inbox)} packets queued, "
            f"{'timers' if timers_first else 'packets'} first"
        )
        if timers_first:
            self.stats.polls += 1
            core.poll(now=now)
        for source, messages in inbox:
            core.receive(source, messages, now=now)
        if not timers_first:
            self.stats.polls += 1
            core.poll(now=now)
        m.wake_t = INF  # any wake-up still queued is stale; _after schedules the next
        self._after(m, core)

    def deliver(self, to: str, messages: Sequence[Message], *, source: str) -> None:
        """Hand ``messages`` to ``to`` now as one UDP packet from ``source``'s address,
        bypassing the network (a forged or replayed packet, for tests)."""
        m = self.member(to)
        core = self.view(to)
        self._trace(f"forged packet {source}->{to}: " + "; ".join(x.describe() for x in messages))
        core.receive(self.member(source).addr, tuple(messages), now=self.now)
        self._after(m, core)

    def set_tags(self, name: str, tags: Mapping[str, str]) -> None:
        """``Membership.set_tags`` on ``name`` (at once, even when it is stalled)."""
        m = self.member(name)
        core = self.view(name)
        m.tags = dict(tags)
        self._trace(f"{name} set tags {dict(sorted(tags.items()))}")
        core.set_tags(tags, now=self.now)
        self._after(m, core)

    def send_user_event(self, name: str, event: str, payload: bytes = b"") -> int:
        """``Membership.send_user_event`` on ``name``; returns its Lamport time."""
        m = self.member(name)
        core = self.view(name)
        ltime = core.send_user_event(event, payload, now=self.now)
        self._trace(f"{name} user event {event}@{ltime}")
        self._after(m, core)
        return ltime

    def partition(self, *groups: Iterable[str]) -> None:
        """Only members within one group talk; members in no group form one more group."""
        lists = [list(g) for g in groups]
        seen: set[str] = set()
        for m in self._members.values():
            m.group = 0
        for number, group in enumerate(lists, start=1):
            for name in group:
                if name in seen:
                    raise ValidationError(f"member {name} is in two partition groups")
                seen.add(name)
                self.member(name).group = number
        self._grouped = True
        self._partition_changed_at = self.now
        self._trace("partition " + " | ".join(",".join(g) for g in lists))

    def heal(self) -> None:
        """Remove the partition."""
        for m in self._members.values():
            m.group = 0
        self._grouped = False
        self._partition_changed_at = self.now
        self._trace("heal")

    def set_loss(self, name: str, loss: float) -> None:
        """Extra UDP loss on every packet to and from ``name``."""
        if not 0.0 <= loss <= 1.0:
            raise ValidationError(f"loss must be in [0, 1], got {loss}", field="loss")
        self.member(name).loss = loss
        self._trace(f"{name} loss {loss:g}")

    def set_network(self, network: NetConfig) -> None:
        """Change delays and UDP faults from now on (packets in flight keep theirs)."""
        self.config = attrs.evolve(self.config, network=network)
        self._delay = network.delay_function(self._rng)
        self._net_loss = network.loss
        self._net_duplicate = network.duplicate
        self._trace(f"network {network}")

    # --- what members saw ----------------------------------------------------------------
    def events(
        self,
        *,
        observer: str | None = None,
        subject: str | None = None,
        kind: EventKind | None = None,
        since: float = 0.0,
    ) -> list[Recorded]:
        """Recorded events (membership and user events), oldest first, filtered."""
        source = self._log if subject is None else self._by_subject.get(subject, [])
        out = []
        for rec in source:
            if rec.time < since or (observer is not None and rec.observer != observer):
                continue
            event = rec.event
            if kind is not None and (type(event) is not MemberEvent or event.kind is not kind):
                continue
            out.append(rec)
        return out

    def first_seen(
        self,
        subject: str,
        kind: EventKind,
        *,
        since: float = 0.0,
        where: Callable[[Member], bool] | None = None,
    ) -> dict[str, float]:
        """observer -> the time it first reported ``kind`` of ``subject`` at or after
        ``since`` (and matching ``where``)."""
        out: dict[str, float] = {}
        for rec in self._by_subject.get(subject, ()):
            event = rec.event
            assert type(event) is MemberEvent
            if rec.time < since or event.kind is not kind or rec.observer in out:
                continue
            if where is None or where(event.member):
                out[rec.observer] = rec.time
        return out

    def when_all_saw(
        self,
        subject: str,
        kind: EventKind,
        *,
        since: float = 0.0,
        where: Callable[[Member], bool] | None = None,
        observers: Iterable[str] | None = None,
    ) -> float | None:
        """The time the last of ``observers`` (default: the running members other than
        ``subject``) first reported it; None while one has not."""
        seen = self.first_seen(subject, kind, since=since, where=where)
        names = [n for n in self.running() if n != subject] if observers is None else observers
        latest = since
        for name in names:
            t = seen.get(name)
            if t is None:
                return None
            latest = max(latest, t)
        return latest

    def user_events_received(self, name: str, ltime: int) -> dict[str, int]:
        """observer -> how many times it received user event (name, ltime) (this life
        or earlier ones: the log keeps everything)."""
        out: dict[str, int] = {}
        for rec in self._log:
            event = rec.event
            if type(event) is UserEventReceived and event.name == name and event.ltime == ltime:
                out[rec.observer] = out.get(rec.observer, 0) + 1
        return out

    def false_failures(self) -> list[Recorded]:
        """Each time a member that was never killed and never left, and was up, was
        declared dead (one record per member and incarnation: the first FAIL seen)."""
        return sorted(self._false_failures.values(), key=lambda r: r.time)

    def all_see(
        self, subject: str, state: State | None, *, observers: Iterable[str] | None = None
    ) -> bool:
        """Every running member (or ``observers``) believes ``subject`` is in ``state``
        (None: it does not know the subject; DEAD also accepts a reaped subject)."""
        names = [n for n in self.running() if n != subject] if observers is None else observers
        for name in names:
            core = self._members[name].core
            if core is None:
                return False
            found = core.member(subject)
            if found is None:
                if state is None or state is State.DEAD or state is State.LEFT:
                    continue
                return False
            if found.state is not state:
                return False
        return True

    def divergence(self, *, limit: int = 20) -> list[str]:
        """How running members' views differ from the truth (empty: converged). Running
        members must be ALIVE with their tags and own incarnation everywhere; members
        killed must be DEAD (or forgotten); left ones LEFT (or DEAD if declared dead
        before they left, or forgotten)."""
        problems: list[str] = []
        running = [m for m in self._members.values() if m.running]
        truth: list[tuple[SimMember, Member | None]] = []
        for m in self._members.values():
            own = m.core.member(m.name) if m.running and m.core is not None else None
            truth.append((m, own))
        for observer in running:
            core = observer.core
            assert core is not None
            for subject, own in truth:
                if subject is observer:
                    continue
                seen = core.member(subject.name)
                problem = None
                if subject.running:
                    assert own is not None
                    if seen is None:
                        problem = "unknown"
                    elif seen.state is not State.ALIVE:
                        problem = seen.state.name
                    elif dict(seen.tags) != dict(own.tags):
                        problem = f"tags {dict(seen.tags)} != {dict(own.tags)}"
                    elif seen.incarnation != own.incarnation:
                        problem = f"incarnation {seen.incarnation} != {own.incarnation}"
                elif subject.up:
                    continue  # stalled or leaving: anything goes for now
                elif seen is not None:
                    allowed = (State.LEFT, State.DEAD) if subject.left else (State.DEAD,)
                    if seen.state not in allowed:
                        problem = seen.state.name
                if problem is not None:
                    problems.append(f"{observer.name} sees {subject.name}: {problem}")
                    if len(problems) >= limit:
                        return problems
        return problems

    def converged(self) -> bool:
        """True when ``divergence()`` finds nothing."""
        return not self.divergence(limit=1)

    def wait_converged(self, timeout: float, *, every: float = 0.5) -> float:
        """Run until ``converged()`` (checked every ``every`` virtual seconds) and return
        the virtual time it took; fail with the views that still differ."""
        start = self.now
        if not self.run_until(self.converged, timeout, every=every):
            problems = "\n    ".join(self.divergence())
            self.fail(f"views did not converge within {timeout:g} s:\n    {problems}")
        return self.now - start

    # --- byte counts -----------------------------------------------------------------------
    @property
    def counts_bytes(self) -> bool:
        """Whether bytes are counted (``count_bytes``, and ``trickle.gossip.wire`` imports)."""
        return self._count_bytes

    def bytes_sent(self) -> int:
        """UDP + TCP bytes sent by every member so far, headers included."""
        return self.stats.udp_bytes + self.stats.tcp_bytes

    # --- trace and failures ----------------------------------------------------------------
    def _trace(self, text: str) -> None:
        self._trace_ring.append((self.now, text))
        self._hash.update(f"{self.now!r} {text}\n".encode())

    def trace_hash(self) -> str:
        """Hex digest of everything traced so far (actions, events, and every delivery's
        time and endpoints, unless ``trace_packets`` is off): equal seeds give equal
        hashes, in any process."""
        h = self._hash.copy()
        h.update(self._fp.to_bytes(8, "little", signed=True))
        return h.hexdigest()

    def event_trace(self) -> list[str]:
        """Every recorded event as ``describe()`` lines, in order."""
        return [rec.describe() for rec in self._log]

    def trace_tail(self, lines: int = FAILURE_TRACE_LINES) -> list[str]:
        out = []
        for t, item in list(self._trace_ring)[-lines:]:
            if isinstance(item, tuple):
                src, dst, messages, *via = item
                body = "; ".join(message.describe() for message in messages)
                text = f"{src}->{dst} {via[0] if via else 'udp'}: {body}"
            else:
                text = item
            out.append(f"{t:.4f} {text}")
        return out

    def replay_command(self) -> str:
        current = os.environ.get("PYTEST_CURRENT_TEST", "")
        test = current.rsplit(" ", 1)[0].split("[", 1)[0] if current else "<test>"
        return f"pytest '{test}' --sim-seed {self.seed}"

    def failure_message(self, message: str) -> str:
        tail = "\n".join("    " + line for line in self.trace_tail())
        return (
            f"{message}\nseed={self.seed} virtual time={self.now:.4f} s\n"
            f"replay: {self.replay_command()}\nlast trace lines:\n{tail}"
        )

    def fail(self, message: str) -> None:
        """Raise SimulationFailure with the seed, the replay command and the trace tail."""
        raise SimulationFailure(self.failure_message(message))

    def _violation(self, message: str) -> None:
        raise InvariantViolation(self.failure_message(f"invariant violated: {message}"))
