"""The SWIM membership state machine, with Lifeguard. No networking code at all.

`Membership` is one member's view of the cluster. It takes decoded messages, TCP requests
and the passing of time (`now`, seconds on any monotonic scale), and hands back what it
wants sent (`take_outgoing`) and what changed (`take_events`). It never reads a clock, a
socket or the global random: time is passed in and randomness comes from the injected
`random.Random`, so a whole cluster replays exactly from a seed. The Trio driver beside
it (`driver.py`) and the simulator (`trickle.testing.gossipsim`) do the I/O.

What it does, after memberlist and serf:

- probes one member per probe period in a shuffled round-robin order: a Ping, then after
  probe_timeout IndirectPings through `indirect_checks` members and a Ping over TCP; no
  ack by the end of the period makes the target a suspect;
- suspicion with incarnation numbers: a suspect refutes with a higher incarnation; an
  unrefuted suspicion declares the member dead;
- Lifeguard: nacks and a local health score that slows this member's probing when it is
  the one missing acks; a suspicion timer that starts long and shrinks with independent
  confirmations; a suspect is told at once (the Suspect rides on the next Ping to it);
- broadcasts piggybacked on every UDP packet, each sent retransmit_limit(n) times, plus a
  gossip round to `gossip_nodes` random members every gossip_interval;
- push-pull full-state exchange over TCP on join and periodically;
- graceful leave (LEFT, never FAIL), rejoining failed members (how partitions heal),
  reaping dead and left members after their timeouts;
- tags with updates, and user events de-duplicated by Lamport time.

Where it departs from memberlist, and why (each has a test in tests/unit). All but the
leave handling and the push-pull answer are Lifeguard's local-health ideas and are off
with `lifeguard=False`, which stays plain SWIM as memberlist runs it:

- an intermediary nacks at 80% of probe_timeout, so the nack reaches the prober within
  its probe period (at 100% it arrived after, and healthy probers' health scores rose
  whenever a member died);
- a suspicion read in a push-pull is not re-broadcast nor counted as a confirmation
  (the sender may only hold what it heard; counting it let push-pulls cut Lifeguard's
  timer to its minimum); the suspect is told directly so it can refute;
- a member still suspecting X at half and three quarters of its suspicion timeout asks X
  itself (a Suspect of its own), which answers straight back: a member that missed every
  gossiped copy of X's refutation (about one in 10^5 per refutation at N = 200) declared
  a healthy X dead;
- an accusation is answered straight to the accuser too (a stale one with the last
  refutation); a member that holds X as LEFT answers news of X's failure with X's
  leave, and a leave turns a member declared DEAD into LEFT (as serf does): a member
  that left is not reported failed for a leave it missed;
- a probe end or suspicion expiry that runs late (this member was stalled) waits once
  for the packets queued meanwhile to be read, and counts against local health;
- a push-pull answer is built after merging the request, so it carries the receiver's
  refutation of what the request said (a healed partition meets in one exchange).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from trickle.errors import ValidationError
from trickle.gossip import wire
from trickle.gossip.config import EVENT_BUFFER, META_MAX_BYTES, USER_EVENT_MAX_BYTES, GossipConfig
from trickle.gossip.messages import (
    Ack,
    Address,
    Alive,
    Broadcast,
    Dead,
    Event,
    EventKind,
    IndirectPing,
    Member,
    MemberEvent,
    MemberState,
    Message,
    Nack,
    Outgoing,
    Ping,
    PushPull,
    State,
    Suspect,
    UserEvent,
    UserEventReceived,
)

REAP_INTERVAL = 15.0  # seconds between two sweeps for members to reap (serf's ReapInterval)

# timer kinds; a timer is (kind, key) with one live token at a time
_PROBE = 0  # start the next probe
_PROBE_TIMEOUT = 1  # key: seq; no direct ack yet: go indirect
_RELAY_TIMEOUT = 3  # key: local seq of a ping sent for someone's IndirectPing
_SUSPICION = 4  # key: member name
_ASK = 9  # key: member name; ask a suspect directly (Lifeguard)
_GOSSIP = 5
_PUSH_PULL = 6
_RECONNECT = 7
_REAP = 8

# An intermediary nacks when the target has not acked within this fraction of
# probe_timeout: the prober sent its IndirectPing probe_timeout into a probe period of
# twice that (LAN: 0.5 of 1 s), so a nack sent after the full probe_timeout would reach it
# after the period ended and count as missed, raising a healthy prober's health score
# every time some member dies. The relay still forwards an ack until probe_timeout.
_NACK_FRACTION = 0.8
# With Lifeguard, a member still suspecting X at these fractions of its current suspicion
# timeout sends X a Suspect of its own, so that X answers it directly: a member that missed
# every gossiped copy of X's refutation (each member sends it retransmit_limit times to
# random members: at N = 200 one member in ~10^5 misses all ~2,300 copies) would otherwise
# declare a healthy X dead. Two asks: one packet each way lost at 5% loss fails ~10%.
_ASK_AT = (0.5, 0.75)
_MIN_BROADCAST_BYTES = 8  # hardly any broadcast encodes smaller: stop looking below this
_MAX_MISSES = 8  # broadcasts too big for what is left of a packet before giving up
# State's members as globals: read through the class, an enum member costs ten times a
# global's lookup on Python 3.11 (the enum metaclass), and these are read per message
_ALIVE = State.ALIVE
_SUSPECT = State.SUSPECT
_DEAD = State.DEAD
_LEFT = State.LEFT
_ALIVE_OR_SUSPECT = (_ALIVE, _SUSPECT)
_BROADCAST_TYPES = frozenset((Alive, Suspect, Dead, UserEvent))
_GONE = (_DEAD, _LEFT)


@attrs.frozen(kw_only=True)
class GossipStats:
    """Counters and gauges of one member (all counters since creation)."""

    alive: int  # members alive, this one included
    suspect: int
    dead: int  # failed, not yet reaped
    left: int  # left, not yet reaped
    incarnation: int  # this member's
    health_score: int  # Lifeguard's local health: 0 is healthy
    event_ltime: int  # user-event Lamport clock
    probes: int  # probes started
    probes_failed: int  # probes with no ack by the end of the period
    indirect_probes: int  # IndirectPings sent
    suspicions: int  # members this one began to suspect
    refutations: int  # times this member refuted news of its own death or suspicion
    failures: int  # members declared dead (by anyone) as seen here
    messages_received: int
    messages_ignored: int  # stale, misaddressed or from an unknown probe
    broadcasts_queued: int  # pending piggybacked updates


@attrs.frozen(kw_only=True)
class SuspicionView:
    """A running suspicion of one member, as this member sees it (for logs, debugging and
    the golden scripts): it is declared dead at `deadline` unless it refutes first."""

    since: float  # when this member began to suspect it
    deadline: float  # since + the current timeout
    confirmations: int  # independent members that confirmed it since
    needed: int  # confirmations that bring the timeout down to its minimum


class _Node:
    """One member's record, mutated in place (Member is its frozen snapshot)."""

    __slots__ = (
        "name",
        "addr",
        "incarnation",
        "state",
        "tags",
        "state_since",
        "suspicion",
        "wire_state",
    )

    def __init__(
        self, name: str, addr: Address, incarnation: int, tags: Mapping[str, str], now: float
    ) -> None:
        self.name = name
        self.addr = addr
        self.incarnation = incarnation
        self.state = _ALIVE
        self.tags = tags
        self.state_since = now
        self.suspicion: _Suspicion | None = None
        # as_state()'s value until the record changes (Membership._changed clears it)
        self.wire_state: MemberState | None = None

    def snapshot(self) -> Member:
        return Member(
            name=self.name,
            addr=self.addr,
            incarnation=self.incarnation,
            state=self.state,
            tags=self.tags,
            state_since=self.state_since,
        )

    def as_state(self) -> MemberState:
        ms = self.wire_state
        if ms is None:
            ms = MemberState(self.name, self.addr, self.incarnation, self.state, self.tags)
            self.wire_state = ms
        return ms


class _Suspicion:
    """Lifeguard's suspicion timer: starts at `longest`, falls towards `shortest` as
    `needed` independent members confirm (memberlist's suspicion.go)."""

    __slots__ = (
        "start",
        "needed",
        "shortest",
        "longest",
        "confirmers",
        "incarnation",
        "deferred",
        "asks",
    )

    def __init__(
        self, start: float, needed: int, shortest: float, longest: float, source: str, inc: int
    ) -> None:
        self.start = start
        self.needed = needed
        self.shortest = shortest
        self.longest = longest
        self.confirmers = {source}
        self.incarnation = inc
        self.deferred = False  # its expiry was put off once, found late (a stall)
        self.asks = 0  # the suspect was asked directly this many times (see _ASK_AT)

    def timeout(self) -> float:
        if self.needed < 1:
            return self.shortest
        confirmed = len(self.confirmers) - 1
        fraction = math.log(confirmed + 1) / math.log(self.needed + 1)
        raw = self.longest - fraction * (self.longest - self.shortest)
        return max(self.shortest, math.floor(raw * 1000.0) / 1000.0)

    def confirm(self, source: str) -> bool:
        """Count `source`'s independent confirmation; False if it adds nothing."""
        if len(self.confirmers) - 1 >= self.needed or source in self.confirmers:
            return False
        self.confirmers.add(source)
        return True


class _Probe:
    __slots__ = ("target", "expected_nacks", "nacks")

    def __init__(self, target: str) -> None:
        self.target = target
        self.expected_nacks = 0
        self.nacks = 0


class _Relay:
    """A ping this member sent on behalf of someone's IndirectPing."""

    __slots__ = ("seq", "source", "nack")

    def __init__(self, seq: int, source: Address, nack: bool) -> None:
        self.seq = seq
        self.source = source
        self.nack = nack


class _Queued:
    __slots__ = ("message", "size", "transmits")

    def __init__(self, message: Broadcast, size: int) -> None:
        self.message = message
        self.size = size
        self.transmits = 0  # set while a take moves it


class _BroadcastQueue:
    """Updates waiting to be piggybacked, each sent `limit` times; fewest transmits first,
    newest first among equals (memberlist's TransmitLimitedQueue). A newer update about
    a member replaces the older one (same key). Kept in one bucket per transmit count, so
    taking a packet's worth costs what it takes, not a sort of the whole queue; when all
    of it fits (the common case) every bucket moves up one transmit count as a whole. A
    message larger than `max_bytes` could never go out in a packet: it is not queued
    (push-pull carries it)."""

    def __init__(self, max_bytes: int) -> None:
        # key -> the bucket holding it (buckets move up as a whole: no per-key update)
        self._where: dict[object, dict[object, _Queued]] = {}
        self.watched: object = None  # a key whose transmissions are counted across puts
        self.watched_sent = 0
        self._buckets: list[dict[object, _Queued]] = []  # by transmits; oldest first inside
        self._max_bytes = max_bytes - wire.PER_MESSAGE_OVERHEAD
        self._need = 0  # bytes of every queued message with its per-message overhead

    def __len__(self) -> int:
        return len(self._where)

    def __bool__(self) -> bool:
        return bool(self._where)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def put(self, key: object, message: Broadcast) -> None:
        per = wire.PER_MESSAGE_OVERHEAD
        old = self._where.pop(key, None)
        if old is not None:
            self._need -= old.pop(key).size + per  # superseded
        size = wire.message_size(message)
        if size > self._max_bytes:
            return
        buckets = self._buckets
        if not buckets:
            buckets.append({})
        first = buckets[0]
        first[key] = _Queued(message, size)
        self._where[key] = first
        self._need += size + per

    def take(self, space: int, limit: int) -> list[Broadcast]:
        """Messages that fit in `space` bytes (per-message overhead included)."""
        if not self._where:
            return []
        if self._need <= space - _MIN_BROADCAST_BYTES:
            return self._take_all(limit)
        out: list[Broadcast] = []
        per = wire.PER_MESSAGE_OVERHEAD
        buckets = self._buckets
        where = self._where
        moved: list[tuple[object, _Queued]] = []
        for transmits, bucket in enumerate(buckets):
            if not bucket:
                continue
            taken: list[tuple[object, _Queued]] = []
            misses = 0
            for key, item in reversed(bucket.items()):  # newest first
                need = item.size + per
                if need > space:
                    misses += 1
                    if space < _MIN_BROADCAST_BYTES or misses > _MAX_MISSES:
                        break
                    continue
                space -= need
                out.append(item.message)
                taken.append((key, item))
            sent = transmits + 1
            for key, item in taken:
                if key == self.watched:
                    self.watched_sent += 1
                del bucket[key]
                item.transmits = sent
                if sent >= limit:
                    del where[key]
                    self._need -= item.size + per
                else:
                    moved.append((key, item))
            if space < _MIN_BROADCAST_BYTES or misses > _MAX_MISSES:
                break
        for key, item in reversed(moved):  # taken newest first; appended oldest first
            while len(buckets) <= item.transmits:
                buckets.append({})
            target = buckets[item.transmits]
            target[key] = item
            where[key] = target
        while buckets and not buckets[-1]:
            buckets.pop()
        return out

    def _take_all(self, limit: int) -> list[Broadcast]:
        """`take` when every queued message fits with room to spare: the same messages in
        the same order as the general case (fewest transmits first, newest first among
        equals), and each bucket moves up one transmit count as a whole, in its order."""
        buckets = self._buckets
        out: list[Broadcast] = []
        for bucket in buckets:
            if bucket:
                out.extend([item.message for item in reversed(bucket.values())])
        watched = self.watched
        if watched is not None:
            held = self._where.get(watched)
            if held is not None:
                self.watched_sent += 1
        # buckets at limit - 1 transmits or more have now been sent `limit` times
        while len(buckets) >= limit and buckets:
            where = self._where
            per = wire.PER_MESSAGE_OVERHEAD
            for key, item in buckets.pop().items():
                del where[key]
                self._need -= item.size + per
        buckets.insert(0, {})
        while buckets and not buckets[-1]:
            buckets.pop()
        return out


class Membership:
    """One member's SWIM state machine. See the module docstring for what it does.

    Inputs: `receive` (a UDP packet's messages, or the answer to a TCP request),
    `receive_stream` (a TCP request, answered at once), `poll` (time has passed: run
    timers due at `now`), and the operations `join`, `leave`, `set_tags`,
    `send_user_event`. `now` must never go backwards.

    Outputs: `take_outgoing()` (messages to send; UDP packets fit the packet budget),
    `take_events()` (membership changes and user events, in order), `next_deadline()`
    (when `poll` must be called next).

    The member itself is in `members()` from the start (a JOIN event reports it).
    `known` members are taken as they are, without telling anyone (a simulator's warm
    start, or a restart that trusts its last view until the first push-pull), with no
    event: read them with `members()`.
    """

    def __init__(
        self,
        name: str,
        addr: Address,
        *,
        config: GossipConfig,
        rng: random.Random,
        now: float,
        tags: Mapping[str, str] | None = None,
        incarnation: int = 0,
        event_ltime: int = 0,
        known: Iterable[MemberState] = (),
    ) -> None:
        if not isinstance(name, str) or not name or len(name) > wire.MAX_NAME_CHARS:
            raise ValidationError(
                f"a member needs a name of 1 to {wire.MAX_NAME_CHARS} characters", field="name"
            )
        self._name = name
        self._addr: Address = (str(addr[0]), int(addr[1]))
        self._config = config
        self._rng = rng
        self._budget = config.max_packet_bytes - wire.ENCRYPTION_OVERHEAD - wire.COMPOUND_OVERHEAD
        # the most an Ack of this member can take (the largest seq), and the retransmit
        # limit for the member count it was last computed for
        self._ack_bytes = wire.message_size(Ack(wire.MAX_UINT, name)) + wire.PER_MESSAGE_OVERHEAD
        self._limit_n = -1
        self._limit = 0
        self._outgoing: list[Outgoing] = []
        self._events: list[Event] = []
        self._nodes: dict[str, _Node] = {}
        self._node_list: list[_Node] = []  # every member, for random picks
        self._node_index: dict[str, int] = {}  # name -> its place in _node_list
        self._counts = [0, 0, 0, 0]  # members per State
        # members DEAD or LEFT, waiting to be reaped, in the order they went (a dict, not a
        # set: a set's order depends on the hash seed and a run would not replay)
        self._gone: dict[str, None] = {}
        self._probe_order: list[str] = []
        self._probe_next = 0
        self._probes: dict[int, _Probe] = {}  # the probe running (one at most), by seq
        self._probe_deferred = False  # its end was put off once, found late (a stall)
        # what to do with each message received in a packet, by its type
        self._handlers: dict[type, Callable[[Any, float], None]] = {
            Ping: self._on_ping,
            Ack: self._on_ack,
            Alive: self._on_alive,
            Suspect: self._on_suspect,
            Dead: self._on_dead,
            IndirectPing: self._on_indirect_ping,
            Nack: self._on_nack,
            UserEvent: self._on_user_event,
        }
        self._relays: dict[int, _Relay] = {}
        self._seq = 0
        self._health = 0
        self._leaving = False
        # joins not answered yet: address -> when its answer stops being one (a join the
        # driver gave up on must not make a later periodic answer hide user events)
        self._join_requests: dict[Address, float] = {}
        self._now = now  # the latest `now` passed in
        self._gossip_idle = False  # the gossip timer sleeps while there is nothing to send
        self._gossip_phase = now
        self._bcasts = _BroadcastQueue(self._budget)
        # what a push-pull carries, kept until a member record or the user events change
        # (a push-pull of 1,000 members is frequent at that size and mostly finds nothing new)
        self._full_state: tuple[MemberState, ...] | None = None
        self._recent_events: tuple[UserEvent, ...] | None = None
        self._event_clock = event_ltime
        self._event_min = 0
        self._event_slots: dict[int, tuple[int, set[tuple[str, bytes]], list[UserEvent]]] = {}
        # timers: (kind, key) -> its live token, the token -> (kind, key), and a heap of
        # (when, token) where a token no longer live is a cancelled or replaced timer
        self._timers: dict[tuple[int, object], int] = {}
        self._live: dict[int, tuple[int, object]] = {}
        self._heap: list[tuple[float, int]] = []
        self._token = 0
        self._stats = dict.fromkeys(
            (
                "probes",
                "probes_failed",
                "indirect_probes",
                "suspicions",
                "refutations",
                "failures",
                "messages_received",
                "messages_ignored",
            ),
            0,
        )
        own_tags = self._checked_tags(tags or {})
        me = self._add_node(name, self._addr, incarnation, own_tags, now)
        self._queue(Alive(me.incarnation, name, self._addr, own_tags))
        self._event(EventKind.JOIN, me)
        nodes = self._nodes
        for state in known:
            if state.name in nodes:
                continue
            node = _Node(state.name, state.addr, state.incarnation, state.tags, now)
            nodes[state.name] = node
            self._node_list.append(node)
            if state.state in _GONE:  # a suspicion is not carried over
                node.state = state.state
                self._gone[state.name] = None
            self._counts[node.state] += 1
            if node.state is state.state:
                node.wire_state = state  # the same record: push-pull sends it as given
        self._node_index = {node.name: i for i, node in enumerate(self._node_list)}
        self._schedule(_PROBE, None, now + rng.random() * config.probe_interval)
        self._gossip_phase = now + rng.random() * config.gossip_interval
        self._schedule(_GOSSIP, None, self._gossip_phase)
        if config.push_pull_interval > 0:
            period = config.push_pull_period(len(self._nodes))
            self._schedule(_PUSH_PULL, None, now + rng.random() * period)
        if config.reconnect_interval > 0:  # at a random phase, as push-pull
            self._schedule(_RECONNECT, None, now + rng.random() * config.reconnect_interval)
        self._schedule(_REAP, None, now + REAP_INTERVAL)

    @property
    def name(self) -> str:
        return self._name

    @property
    def addr(self) -> Address:
        return self._addr

    @property
    def config(self) -> GossipConfig:
        return self._config

    @property
    def leaving(self) -> bool:
        """True once `leave` was called."""
        return self._leaving

    # -- inputs ------------------------------------------------------------------------------

    def receive(self, source: Address, messages: Iterable[Message], *, now: float) -> None:
        """Handle the messages of one UDP packet from `source` (or the answer to a TCP
        request this member made). Stale or misaddressed messages are ignored and counted;
        a PushPull here is the answer to this member's own push-pull and is merged (the
        answer to a join, from the address joined, does not replay old user events)."""
        self._now = now
        handlers = self._handlers
        count = 0
        for message in messages:
            count += 1
            handler = handlers.get(type(message))
            if handler is not None:
                handler(message, now)
            elif isinstance(message, PushPull):
                until = self._join_requests.pop(source, None)
                self._merge(message, now, join_answer=until is not None and now <= until)
            else:  # pragma: no cover - the wire decodes nothing else
                self._stats["messages_ignored"] += 1
        self._stats["messages_received"] += count

    def receive_stream(self, source: Address, message: Message, *, now: float) -> Message | None:
        """Handle one TCP request and return the answer to write back on the same
        connection: a PushPull is merged and answered with this member's state; a Ping
        addressed to this member is answered with an Ack. Anything else: None."""
        self._now = now
        self._stats["messages_received"] += 1
        if isinstance(message, PushPull):
            # merged first, so the answer carries this member's refutation of what the
            # request said about it (how two sides of a healed partition meet in one
            # exchange)
            self._merge(message, now, join_answer=False)
            return self._push_pull(join=False)
        if isinstance(message, Ping):
            if message.target and message.target != self._name:
                self._stats["messages_ignored"] += 1
                return None
            return Ack(message.seq, self._name)
        self._stats["messages_ignored"] += 1
        return None

    def poll(self, *, now: float) -> None:
        """Run every timer due at or before `now` (probes, timeouts, suspicions, gossip,
        push-pull, rejoin, reaping)."""
        self._now = now
        heap = self._heap
        live = self._live
        while heap and heap[0][0] <= now:
            at, token = heapq.heappop(heap)
            timer = live.pop(token, None)
            if timer is None:
                continue  # cancelled or replaced
            del self._timers[timer]
            self._fire(timer[0], timer[1], now, now - at)

    def join(self, addresses: Iterable[Address], *, now: float) -> None:
        """Ask each address for a full-state exchange (a TCP PushPull with join=True). The
        driver reports no failure: a join that reached nobody leaves this member alone."""
        self._now = now
        request = self._push_pull(join=True)
        for address in addresses:
            address = (str(address[0]), int(address[1]))
            if address != self._addr:
                self._join_requests[address] = now + self._config.tcp_timeout
                self._outgoing.append(Outgoing(address, (request,), stream=True))

    def leave(self, *, now: float) -> None:
        """Leave gracefully: broadcast this member's own death as a leave, so others mark it
        LEFT, not failed. Probing stops; news of its own death is no longer refuted. Wait for
        `leave_done()` (bounded by a timeout) before shutting the driver down."""
        self._now = now
        if self._leaving:
            return
        self._leaving = True
        self._bcasts.watched = ("m", self._name)  # re-told leaves count towards leave_done
        self._bcasts.watched_sent = 0
        me = self._nodes[self._name]
        self._on_dead(Dead(me.incarnation, self._name, self._name), now)

    def leave_done(self) -> bool:
        """True when the leave has been sent as often as an update is, or there was nobody
        alive to tell."""
        if not self._leaving:
            return False
        alive_others = self._counts[_ALIVE] + self._counts[_SUSPECT]
        if alive_others == 0 or ("m", self._name) not in self._bcasts:
            return True
        # a leave told again (an accusation answered) is queued afresh: what counts is how
        # often it went out in all, or leave_done could wait as long as accusations come
        return self._bcasts.watched_sent >= self._retransmit_limit()

    def set_tags(self, tags: Mapping[str, str], *, now: float) -> None:
        """Replace this member's tags and tell everyone (a new incarnation). After `leave`
        the tags are kept here but not announced: a member that left does not come back.
        Raises ValidationError if the encoded tags exceed META_MAX_BYTES."""
        self._now = now
        checked = self._checked_tags(tags)
        me = self._nodes[self._name]
        if self._leaving:
            me.tags = checked
            self._changed(me)
            return
        me.incarnation += 1
        me.tags = checked
        self._changed(me)
        self._queue(Alive(me.incarnation, self._name, self._addr, checked))
        self._event(EventKind.UPDATE, me)

    def send_user_event(self, name: str, payload: bytes = b"", *, now: float) -> int:
        """Broadcast a user event stamped with the next Lamport time, which is returned. It
        is delivered here too (a UserEventReceived). Raises ValidationError if name +
        payload exceed USER_EVENT_MAX_BYTES or the name is empty."""
        self._now = now
        if not isinstance(name, str) or not name:
            raise ValidationError("a user event needs a non-empty name", field="name")
        if not isinstance(payload, bytes):
            raise ValidationError("a user event's payload must be bytes", field="payload")
        try:
            name.encode()
            size = wire.user_event_size(name, payload)
        except (UnicodeEncodeError, wire.WireError) as exc:
            raise ValidationError(f"bad user event name: {exc}", field="name") from None
        if size > USER_EVENT_MAX_BYTES:
            raise ValidationError(
                f"user event is {size} bytes (name + payload); the limit is {USER_EVENT_MAX_BYTES}",
                field="payload",
            )
        ltime = self._event_clock
        self._event_clock += 1
        self._on_user_event(UserEvent(ltime, name, payload), now)
        return ltime

    # -- outputs -----------------------------------------------------------------------------

    def take_outgoing(self) -> list[Outgoing]:
        """What to send, oldest first; the list is emptied."""
        out, self._outgoing = self._outgoing, []
        return out

    def take_events(self) -> list[Event]:
        """What changed, oldest first; the list is emptied."""
        out, self._events = self._events, []
        return out

    def next_deadline(self) -> float:
        """The earliest `now` at which `poll` has work (always finite: the probe timer)."""
        heap = self._heap
        live = self._live
        while heap:
            if heap[0][1] in live:
                return heap[0][0]
            heapq.heappop(heap)
        return math.inf  # unreachable: the probe timer always runs

    # -- queries -----------------------------------------------------------------------------

    # name_conflict: the address of another node heard claiming this node's name (None:
    # none heard). Such a node is ignored here and this one there: names must be unique,
    # and the owner of the name should stop (a joining node hears it in the join's push-pull).
    name_conflict: Address | None = None

    def members(self) -> list[Member]:
        """Every member not yet reaped, this one included, sorted by name."""
        return [self._nodes[name].snapshot() for name in sorted(self._nodes)]

    def member(self, name: str) -> Member | None:
        node = self._nodes.get(name)
        return None if node is None else node.snapshot()

    def suspicion(self, name: str) -> SuspicionView | None:
        """The running suspicion of `name`, or None if it is not suspected here."""
        node = self._nodes.get(name)
        if node is None or node.state is not _SUSPECT or node.suspicion is None:
            return None
        suspicion = node.suspicion
        return SuspicionView(
            since=suspicion.start,
            deadline=suspicion.start + suspicion.timeout(),
            confirmations=len(suspicion.confirmers) - 1,
            needed=suspicion.needed,
        )

    def statistics(self) -> GossipStats:
        counts = self._counts
        return GossipStats(
            alive=counts[_ALIVE],
            suspect=counts[_SUSPECT],
            dead=counts[_DEAD],
            left=counts[_LEFT],
            incarnation=self._nodes[self._name].incarnation,
            health_score=self._health,
            event_ltime=self._event_clock,
            broadcasts_queued=len(self._bcasts),
            **self._stats,
        )

    # -- timers --------------------------------------------------------------------------------

    def _schedule(self, kind: int, key: object, at: float) -> None:
        """Run timer (kind, key) at `at`, replacing its pending run if any."""
        self._token += 1
        token = self._token
        timer = (kind, key)
        old = self._timers.get(timer)
        if old is not None:
            del self._live[old]
        self._timers[timer] = token
        self._live[token] = timer
        heapq.heappush(self._heap, (at, token))

    def _cancel(self, kind: int, key: object) -> None:
        token = self._timers.pop((kind, key), None)
        if token is not None:
            del self._live[token]

    def _fire(self, kind: int, key: object, now: float, late: float) -> None:
        """Run timer (kind, key), due `late` seconds ago."""
        if kind == _GOSSIP:  # the commonest first
            self._gossip(now)
        elif kind == _PROBE:
            self._probe(now, late)
        elif kind == _RELAY_TIMEOUT:
            self._relay_timeout(key, now)  # type: ignore[arg-type]
        elif kind == _PROBE_TIMEOUT:
            self._probe_timeout(key, now)  # type: ignore[arg-type]
        elif kind == _SUSPICION:
            self._suspicion_expired(key, now, late)  # type: ignore[arg-type]
        elif kind == _ASK:
            self._ask_suspect(key, now)  # type: ignore[arg-type]
        elif kind == _PUSH_PULL:
            self._periodic_push_pull(now)
        elif kind == _RECONNECT:
            self._reconnect(now)
        elif kind == _REAP:
            self._reap(now)

    # -- probing -------------------------------------------------------------------------------

    def _adjust_health(self, delta: int) -> None:
        if self._config.lifeguard:
            top = self._config.awareness_max_multiplier - 1
            self._health = min(top, max(0, self._health + delta))

    def _next_target(self) -> _Node | None:
        order = self._probe_order
        for _ in range(len(self._nodes) + 1):
            if self._probe_next >= len(order):
                order[:] = [name for name in self._nodes if name != self._name]
                self._rng.shuffle(order)
                self._probe_next = 0
                if not order:
                    return None
            name = order[self._probe_next]
            self._probe_next += 1
            node = self._nodes.get(name)
            if node is not None and node.state in _ALIVE_OR_SUSPECT and name != self._name:
                return node
        return None

    def _probe(self, now: float, late: float) -> None:
        config = self._config
        probes = self._probes
        if probes:  # the previous probe got no ack (yet)
            if config.lifeguard and late > config.probe_timeout and not self._probe_deferred:
                # this member was not running when the probe period ended (a stall): the
                # ack may be waiting unread. Read the packets first (once), and count the
                # stall against local health: a slow member should not accuse quickly.
                self._probe_deferred = True
                self._adjust_health(1)
                self._schedule(_PROBE, None, now + config.probe_timeout)
                return
            # its period ends now: settle it first, so this probe knows how it ended
            # (its target suspected, this member's health adjusted)
            for seq in list(probes):
                self._probe_end(seq, now)
        self._probe_deferred = False
        scale = self._health + 1 if config.lifeguard else 1  # Lifeguard's local health
        period = config.probe_interval * scale
        target = None if self._leaving else self._next_target()
        if target is None:
            self._schedule(_PROBE, None, now + period)
            return
        self._seq += 1
        seq = self._seq
        self._stats["probes"] += 1
        messages: list[Message] = [Ping(seq, target.name, self._name, self._addr)]
        if config.lifeguard and target.state is _SUSPECT:
            # tell the suspect at once, so it can refute (Lifeguard's buddy system)
            messages.append(Suspect(target.incarnation, target.name, self._name))
        self._send(target.addr, messages)
        probes[seq] = _Probe(target.name)
        self._schedule(_PROBE_TIMEOUT, seq, now + config.probe_timeout * scale)
        self._schedule(_PROBE, None, now + period)  # which ends this probe first

    def _probe_timeout(self, seq: int, now: float) -> None:
        probe = self._probes.get(seq)
        if probe is None:
            return
        target = self._nodes.get(probe.target)
        if target is None:
            return
        name = self._name
        helpers = self._random_nodes(
            self._config.indirect_checks,
            lambda n: n.state is _ALIVE and n.name != name and n.name != probe.target,
        )
        nack = self._config.lifeguard
        request = IndirectPing(seq, target.name, target.addr, name, self._addr, nack)
        for helper in helpers:
            self._stats["indirect_probes"] += 1
            self._send(helper.addr, [request])
        if nack:
            probe.expected_nacks = len(helpers)
        # and a probe over TCP, in case only UDP is lost on the way
        ping = Ping(seq, target.name, name, self._addr)
        self._outgoing.append(Outgoing(target.addr, (ping,), stream=True))

    def _probe_end(self, seq: int, now: float) -> None:
        probe = self._probes.pop(seq, None)
        if probe is None:
            return
        self._stats["probes_failed"] += 1
        if probe.expected_nacks > 0:
            self._adjust_health(max(0, probe.expected_nacks - probe.nacks))
        else:
            self._adjust_health(1)
        target = self._nodes.get(probe.target)
        if target is not None and target.state in _ALIVE_OR_SUSPECT:
            self._on_suspect(Suspect(target.incarnation, target.name, self._name), now)

    def _random_nodes(self, k: int, keep: Callable[[_Node], bool]) -> list[_Node]:
        """Up to k distinct members for which keep() holds, at random (memberlist's
        kRandomNodes: 3n tries at most)."""
        node_list = self._node_list
        n = len(node_list)
        out: list[_Node] = []
        if k <= 0 or n == 0:
            return out
        random = self._rng.random
        for _ in range(3 * n):
            node = node_list[int(random() * n)]
            if keep(node) and node not in out:
                out.append(node)
                if len(out) >= k:
                    break
        return out

    # -- sending -------------------------------------------------------------------------------

    def _send(self, to: Address, messages: list[Message]) -> None:
        """One UDP packet: `messages`, then as many broadcasts as fit."""
        bcasts = self._bcasts
        if bcasts._where:
            if len(messages) == 1 and type(messages[0]) is Ack:
                used = self._ack_bytes  # the commonest: no need to encode it to know
            else:
                per = wire.PER_MESSAGE_OVERHEAD
                used = sum(wire.message_size(m) + per for m in messages)
            space = self._budget - used
            if space >= _MIN_BROADCAST_BYTES:
                taken = bcasts.take(space, self._retransmit_limit())
                if taken:
                    # what is told straight to a member (a Suspect to the suspect, a
                    # refutation to the accuser, a leave) may be a queued broadcast too
                    # (only a broadcast can equal one: skip the comparisons otherwise)
                    for m in messages:
                        if type(m) in _BROADCAST_TYPES:
                            taken = [b for b in taken if b not in messages]
                            break
                    messages.extend(taken)
        self._outgoing.append(Outgoing(to, tuple(messages)))

    def _retransmit_limit(self) -> int:
        n = self._counts[_ALIVE] + self._counts[_SUSPECT]
        if n != self._limit_n:
            self._limit_n = n
            self._limit = self._config.retransmit_limit(n)
        return self._limit

    def _queue(self, message: Broadcast) -> None:
        if isinstance(message, UserEvent):
            self._bcasts.put(message, message)
        else:
            self._bcasts.put(("m", message.node), message)
        if self._gossip_idle:
            # wake the gossip round at its next tick (memberlist's cadence, no idle timer)
            self._gossip_idle = False
            interval = self._config.gossip_interval
            ticks = math.ceil((self._now - self._gossip_phase) / interval)
            self._schedule(_GOSSIP, None, self._gossip_phase + max(0, ticks) * interval)

    def _gossip(self, now: float) -> None:
        bcasts = self._bcasts
        if not bcasts._where:
            self._gossip_idle = True  # nothing to spread: sleep until something is queued
            return
        config = self._config
        self._schedule(_GOSSIP, None, now + config.gossip_interval)
        # _random_nodes(gossip_nodes, keep) with keep inlined: the members alive or
        # suspect, and those dead for at most gossip_to_the_dead_time (same draws)
        name = self._name
        dead_window = config.gossip_to_the_dead_time
        k = config.gossip_nodes
        node_list = self._node_list
        n = len(node_list)
        targets: list[_Node] = []
        if k > 0 and n:
            random = self._rng.random
            alive, suspect, dead = _ALIVE, _SUSPECT, _DEAD
            for _ in range(3 * n):
                node = node_list[int(random() * n)]
                if node.name == name:
                    continue
                state = node.state
                if (
                    state is alive
                    or state is suspect
                    or (state is dead and now - node.state_since <= dead_window)
                ) and node not in targets:
                    targets.append(node)
                    if len(targets) >= k:
                        break
        # alone: no other member alive or suspect (the counts hold this one while it is
        # alive, not once it left: a leaving member whose draws all missed the only other
        # one is not alone, and must keep the round going to finish leaving)
        me = self._nodes[name].state
        others = self._counts[_ALIVE] + self._counts[_SUSPECT] - (me is _ALIVE or me is _SUSPECT)
        if not targets and others <= 0:
            self._gossip_idle = True  # sleep until news (a member joining) is queued
            self._cancel(_GOSSIP, None)
            return
        limit = self._retransmit_limit()
        budget = self._budget
        for node in targets:
            messages = bcasts.take(budget, limit)
            if not messages:
                return
            self._outgoing.append(Outgoing(node.addr, tuple(messages)))

    # -- push-pull, rejoin, reap -----------------------------------------------------------

    def _push_pull(self, *, join: bool) -> PushPull:
        members = self._full_state
        if members is None:
            members = tuple(node.as_state() for node in self._nodes.values())
            self._full_state = members
        events = self._recent_events
        if events is None:
            recent: list[UserEvent] = []
            for _, _, slot_events in self._event_slots.values():
                recent.extend(slot_events)
            recent.sort(key=lambda e: e.ltime)
            events = self._recent_events = tuple(recent)
        return PushPull(join, self._name, members, self._event_clock, events)

    def _periodic_push_pull(self, now: float) -> None:
        alive = self._counts[_ALIVE] + self._counts[_SUSPECT]
        self._schedule(_PUSH_PULL, None, now + self._config.push_pull_period(alive))
        name = self._name
        picked = self._random_nodes(1, lambda n: n.state is _ALIVE and n.name != name)
        if picked:
            request = self._push_pull(join=False)
            self._outgoing.append(Outgoing(picked[0].addr, (request,), stream=True))

    def _reconnect(self, now: float) -> None:
        """Try to rejoin one failed member, with probability failed/alive (serf): how a
        healed partition merges back."""
        self._schedule(_RECONNECT, None, now + self._config.reconnect_interval)
        failed = self._counts[_DEAD]
        if failed == 0 or self._leaving:
            return
        alive = max(1, self._counts[_ALIVE])
        if self._rng.random() > failed / alive:
            return
        picked = self._random_nodes(1, lambda n: n.state is _DEAD)
        if picked:
            request = self._push_pull(join=False)
            self._outgoing.append(Outgoing(picked[0].addr, (request,), stream=True))

    def _reap(self, now: float) -> None:
        self._schedule(_REAP, None, now + REAP_INTERVAL)
        config = self._config
        for name in list(self._gone):
            node = self._nodes[name]
            if node.name == self._name:
                continue
            if node.state is _DEAD:
                keep_for = config.reconnect_timeout
            elif node.state is _LEFT:
                keep_for = config.tombstone_timeout
            else:
                continue
            if now - node.state_since >= keep_for:
                self._remove_node(node)
                self._event(EventKind.REAP, node)

    def _merge(self, remote: PushPull, now: float, *, join_answer: bool) -> None:
        """Merge a remote full state. In the answer to a join, user events older than the
        remote's clock are not replayed (serf's join that ignores old events)."""
        if join_answer:
            self._event_min = max(self._event_min, remote.event_ltime)
        get = self._nodes.get
        me = self._name
        alive, dead, left = _ALIVE, _DEAD, _LEFT
        # with Lifeguard, what a push-pull says is not spread as this member's own news
        # (see _on_suspect); plain SWIM (memberlist) spreads it
        spread = not self._config.lifeguard
        for state in remote.members:
            node = get(state.name)
            if node is not None and state.name != me:
                # nothing newer than what this member knows is the common case: skip it
                # cheaply (news of death or leave at the same incarnation is news)
                if node.wire_state is state:
                    continue  # the very record this member has (a warm start shares them)
                inc = state.incarnation
                known = node.incarnation
                if (
                    inc < known
                    or (
                        inc == known
                        and (
                            state.state is alive
                            or node.state is left
                            or (node.state is dead and state.state is not left)
                        )
                    )
                ) and state.addr == node.addr:
                    continue
            if state.state is _ALIVE:
                self._on_alive(Alive(state.incarnation, state.name, state.addr, state.tags), now)
            elif state.state is _LEFT:
                self._on_dead(Dead(state.incarnation, state.name, state.name), now, gossip=spread)
            else:
                # a member the remote thinks dead is only suspected here: it may refute
                suspect = Suspect(state.incarnation, state.name, remote.source)
                self._on_suspect(suspect, now, gossip=spread)
        # the remote's clock is the next time it will use, not one it used: catch up with
        # it (witnessing it as a used time would push every clock up by one per exchange)
        self._event_clock = max(self._event_clock, remote.event_ltime)
        for event in remote.events:
            self._on_user_event(event, now)

    # -- messages ------------------------------------------------------------------------------

    def _on_ping(self, ping: Ping, now: float) -> None:
        if ping.target and ping.target != self._name:
            self._stats["messages_ignored"] += 1
            return
        answer: list[Message] = [Ack(ping.seq, self._name)]
        if self._leaving:  # until it stops, a member that left says so to its probers
            me = self._nodes[self._name]
            answer.append(Dead(me.incarnation, self._name, self._name))
        self._send(ping.source_addr, answer)

    def _on_nack(self, nack: Nack, now: float) -> None:
        probe = self._probes.get(nack.seq)
        if probe is None:
            self._stats["messages_ignored"] += 1
        else:
            probe.nacks += 1

    def _on_ack(self, ack: Ack, now: float) -> None:
        if self._probes.pop(ack.seq, None) is not None:
            self._cancel(_PROBE_TIMEOUT, ack.seq)
            self._adjust_health(-1)
            return
        relay = self._relays.pop(ack.seq, None)
        if relay is not None:
            self._cancel(_RELAY_TIMEOUT, ack.seq)
            self._send(relay.source, [Ack(relay.seq, self._name)])
            return
        self._stats["messages_ignored"] += 1  # late, or a duplicate

    def _on_indirect_ping(self, request: IndirectPing, now: float) -> None:
        self._seq += 1
        seq = self._seq
        self._relays[seq] = _Relay(request.seq, request.source_addr, request.nack)
        wait = self._config.probe_timeout * (_NACK_FRACTION if request.nack else 1.0)
        self._schedule(_RELAY_TIMEOUT, seq, now + wait)
        self._send(request.target_addr, [Ping(seq, request.target, self._name, self._addr)])

    def _relay_timeout(self, seq: int, now: float) -> None:
        relay = self._relays.get(seq)
        if relay is None:
            return
        if relay.nack:  # nack in time for the prober; a late ack is still relayed
            relay.nack = False
            self._send(relay.source, [Nack(relay.seq, self._name)])
            rest = self._config.probe_timeout * (1.0 - _NACK_FRACTION)
            self._schedule(_RELAY_TIMEOUT, seq, now + rest)
        else:
            del self._relays[seq]

    def _on_alive(self, alive: Alive, now: float) -> None:
        if alive.node == self._name:
            me = self._nodes[self._name]
            if alive.addr != me.addr:
                self._stats["messages_ignored"] += 1  # another node with my name: keep mine
                if self.name_conflict is None:
                    self.name_conflict = alive.addr
                return
            if self._leaving or alive.incarnation < me.incarnation:
                return
            if (
                alive.incarnation == me.incarnation
                and alive.addr == me.addr
                and alive.tags == me.tags
            ):
                return
            self._refute(me, alive.incarnation)
            return
        node = self._nodes.get(alive.node)
        if node is None:
            node = self._add_node(alive.node, alive.addr, alive.incarnation, alive.tags, now)
            # probed in this round, at a random place among those not probed yet
            order = self._probe_order
            order.insert(self._rng.randint(self._probe_next, len(order)), node.name)
            self._queue(alive)
            self._event(EventKind.JOIN, node)
            return
        moved = alive.addr != node.addr
        if moved:
            # a name conflict: keep the one we know, unless it left, or failed long enough
            # ago (memberlist's DeadNodeReclaimTime)
            reclaim = self._config.dead_node_reclaim_time
            reclaimable = node.state is _LEFT or (
                node.state is _DEAD and reclaim > 0 and now - node.state_since >= reclaim
            )
            if not reclaimable:
                self._stats["messages_ignored"] += 1
                return
        elif alive.incarnation <= node.incarnation:
            return
        old_state = node.state
        changed = moved or alive.tags != node.tags
        node.incarnation = alive.incarnation
        node.addr = alive.addr
        node.tags = alive.tags
        self._changed(node)
        if old_state is not _ALIVE:
            node.suspicion = None
            self._cancel(_SUSPICION, node.name)
            self._cancel(_ASK, node.name)
            self._set_state(node, _ALIVE, now)
        self._queue(alive)
        if old_state in _GONE:
            self._event(EventKind.JOIN, node)
        elif changed:
            self._event(EventKind.UPDATE, node)

    def _on_suspect(self, suspect: Suspect, now: float, *, gossip: bool = True) -> None:
        """News that `suspect.node` is suspected. `gossip` false: read in a push-pull,
        whose sender may only hold news it heard; the suspicion starts here, and the
        suspect is told so it can refute, but it is neither spread nor counted as an
        independent confirmation of a running one (Lifeguard counts probes that
        failed)."""
        node = self._nodes.get(suspect.node)
        if node is None:
            return
        if node.name == self._name:
            self._accused(node, suspect.incarnation, suspect.source if gossip else None)
            return
        if suspect.incarnation < node.incarnation or node.state is _DEAD:
            return
        if node.state is _LEFT:
            if gossip:
                self._retell_leave(node, suspect.source)
            return
        if node.state is _SUSPECT and suspect.incarnation == node.incarnation:
            suspicion = node.suspicion
            if gossip and suspicion is not None and suspicion.confirm(suspect.source):
                deadline = suspicion.start + suspicion.timeout()
                self._schedule(_SUSPICION, node.name, max(now, deadline))
                self._schedule_ask(node, suspicion, now)  # the timeout is shorter now
                self._queue(suspect)
            return
        # Alive, or suspect at an older incarnation: a suspicion at a newer one means the
        # node refuted the old one (its Alive did not reach here) and was suspected again.
        # It starts over (memberlist confirms the old timer with it instead, whose shortened
        # deadline may be long past: a healthy node declared dead at once).
        config = self._config
        n = self._counts[_ALIVE] + self._counts[_SUSPECT]
        shortest = config.suspicion_timeout(n)
        if config.lifeguard:
            needed = config.suspicion_confirmations(n)
            longest = config.suspicion_max_timeout(n)
        else:
            needed, longest = 0, shortest
        node.incarnation = suspect.incarnation  # and _set_state below: _changed
        self._set_state(node, _SUSPECT, now)
        node.suspicion = _Suspicion(
            now, needed, shortest, longest, suspect.source, node.incarnation
        )
        self._schedule(_SUSPICION, node.name, now + node.suspicion.timeout())
        if config.lifeguard:
            self._schedule_ask(node, node.suspicion, now)
        if suspect.source == self._name:
            self._stats["suspicions"] += 1
        if gossip:
            self._queue(suspect)
        else:  # not spread, but the suspect must hear of it to refute in time
            self._tell(node.name, Suspect(node.incarnation, node.name, self._name))

    def _schedule_ask(self, node: _Node, suspicion: _Suspicion, now: float) -> None:
        """Schedule the next time the suspect is asked directly (Lifeguard): the next of
        _ASK_AT's fractions of the current timeout, or now if a confirmation shortened the
        timeout past it; none after the last."""
        if suspicion.asks < len(_ASK_AT):
            at = suspicion.start + _ASK_AT[suspicion.asks] * suspicion.timeout()
            self._schedule(_ASK, node.name, max(now, at))

    def _ask_suspect(self, name: str, now: float) -> None:
        """Still suspecting `name`: send it a Suspect of this member's own, which it
        answers straight back with its refutation (see `_accused`), whether it refuted
        already (this member missed that) or had not heard of the suspicion yet. Then
        the next ask, skipping fractions of the timeout already past."""
        current = self._timed_suspicion(name)
        if current is None:
            return
        node, suspicion = current
        self._tell(name, Suspect(node.incarnation, name, self._name))
        timeout = suspicion.timeout()
        suspicion.asks += 1
        while (
            suspicion.asks < len(_ASK_AT)
            and suspicion.start + _ASK_AT[suspicion.asks] * timeout <= now
        ):
            suspicion.asks += 1
        self._schedule_ask(node, suspicion, now)

    def _timed_suspicion(self, name: str) -> tuple[_Node, _Suspicion] | None:
        """`name` and its suspicion, if a timer set for that suspicion still applies: the
        member is still suspected here, at the incarnation the suspicion is about."""
        node = self._nodes.get(name)
        if node is None or node.state is not _SUSPECT or node.suspicion is None:
            return None
        if node.suspicion.incarnation != node.incarnation:
            return None
        return node, node.suspicion

    def _suspicion_expired(self, name: str, now: float, late: float) -> None:
        current = self._timed_suspicion(name)
        if current is None:
            return
        node, suspicion = current
        config = self._config
        if config.lifeguard and late > config.probe_timeout and not suspicion.deferred:
            # this member was not running when the timer was due (a stall): a refutation
            # may be waiting unread; read the packets first, once
            suspicion.deferred = True
            self._schedule(_SUSPICION, name, now + config.probe_timeout)
            return
        self._on_dead(Dead(node.incarnation, name, self._name), now)

    def _on_dead(self, dead: Dead, now: float, *, gossip: bool = True) -> None:
        """News that `dead.node` failed, or left (`dead.is_leave`). `gossip` as in
        `_on_suspect`."""
        node = self._nodes.get(dead.node)
        if node is None:
            return
        if node.name == self._name and not self._leaving:
            accuser = dead.source if gossip and not dead.is_leave else None
            self._accused(node, dead.incarnation, accuser)
            return
        if dead.incarnation < node.incarnation:
            return
        if node.state is _LEFT:
            if gossip and not dead.is_leave:
                self._retell_leave(node, dead.source)
            return
        if node.state is _DEAD:
            if dead.is_leave:
                # its leave arrived after this member declared it failed: it left (serf
                # turns a failed member left on its leave intent, with a leave event)
                node.incarnation = dead.incarnation
                self._set_state(node, _LEFT, now)
                self._queue(dead)
                self._event(EventKind.LEAVE, node)
            return
        node.incarnation = dead.incarnation  # and _set_state below: _changed
        node.suspicion = None
        self._cancel(_SUSPICION, node.name)
        self._cancel(_ASK, node.name)
        if dead.is_leave:
            self._set_state(node, _LEFT, now)
            self._queue(dead)
            self._event(EventKind.LEAVE, node)
        else:
            self._set_state(node, _DEAD, now)
            self._stats["failures"] += 1
            self._queue(dead)
            self._event(EventKind.FAIL, node)

    def _accused(self, me: _Node, incarnation: int, accuser: str | None) -> None:
        """News that this member is suspect or dead at `incarnation`, from `accuser` when
        it said so itself. A member that left retells its leave; otherwise it refutes
        with a higher incarnation or, if the news is older than its last refutation,
        spreads that refutation again (the accuser missed it). The accuser is told
        straight away too (Lifeguard's buddy system the other way round), so that one
        unlucky member does not declare it dead for want of a packet."""
        if self._leaving:
            if accuser is not None:
                self._retell_leave(me, accuser)
            return
        if incarnation >= me.incarnation:
            self._refute(me, incarnation)
        else:
            self._queue(Alive(me.incarnation, self._name, self._addr, me.tags))
        if accuser is not None and self._config.lifeguard:
            self._tell(accuser, Alive(me.incarnation, self._name, self._addr, me.tags))

    def _retell_leave(self, node: _Node, accuser: str) -> None:
        """`accuser` suspects or declares dead a member that left: it missed the leave.
        Tell it, and spread the leave again."""
        leave = Dead(node.incarnation, node.name, node.name)
        self._queue(leave)
        self._tell(accuser, leave)

    def _tell(self, name: str, message: Message) -> None:
        """A packet with `message` straight to member `name`, if known and reachable."""
        node = self._nodes.get(name)
        if node is not None and node.state is not _LEFT and name != self._name:
            self._send(node.addr, [message])

    def _refute(self, me: _Node, accused: int) -> None:
        """Deny news of this member's suspicion or death with a higher incarnation."""
        me.incarnation = max(me.incarnation, accused) + 1
        self._changed(me)
        self._stats["refutations"] += 1
        self._adjust_health(1)
        self._queue(Alive(me.incarnation, self._name, self._addr, me.tags))

    # -- user events ---------------------------------------------------------------------------

    def _witness(self, ltime: int) -> None:
        if ltime >= self._event_clock:
            self._event_clock = ltime + 1

    def _on_user_event(self, event: UserEvent, now: float) -> None:
        self._witness(event.ltime)
        if event.ltime < self._event_min:
            return
        if self._event_clock > EVENT_BUFFER and event.ltime < self._event_clock - EVENT_BUFFER:
            self._stats["messages_ignored"] += 1  # too old to tell from a duplicate
            return
        index = event.ltime % EVENT_BUFFER
        slot = self._event_slots.get(index)
        if slot is None or slot[0] != event.ltime:
            slot = (event.ltime, set(), [])
            self._event_slots[index] = slot
        identity = (event.name, event.payload)
        if identity in slot[1]:
            return
        slot[1].add(identity)
        slot[2].append(event)
        self._recent_events = None
        self._events.append(UserEventReceived(event.ltime, event.name, event.payload))
        self._queue(event)

    # -- bookkeeping -----------------------------------------------------------------------------

    def _checked_tags(self, tags: Mapping[str, str]) -> Mapping[str, str]:
        checked: dict[str, str] = {}
        for key, value in tags.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValidationError("tags map strings to strings", field="tags")
            checked[key] = value
        try:
            size = wire.tags_size(checked)
        except (UnicodeEncodeError, wire.WireError) as exc:
            raise ValidationError(f"bad tags: {exc}", field="tags") from None
        if size > META_MAX_BYTES:
            raise ValidationError(
                f"tags take {size} bytes encoded; the limit is {META_MAX_BYTES}", field="tags"
            )
        return MappingProxyType(checked)

    def _add_node(
        self, name: str, addr: Address, incarnation: int, tags: Mapping[str, str], now: float
    ) -> _Node:
        node = _Node(name, addr, incarnation, tags, now)
        self._nodes[name] = node
        self._node_index[name] = len(self._node_list)
        self._node_list.append(node)
        self._counts[_ALIVE] += 1
        self._full_state = None
        return node

    def _remove_node(self, node: _Node) -> None:
        del self._nodes[node.name]
        self._full_state = None
        self._gone.pop(node.name, None)
        self._counts[node.state] -= 1
        index = self._node_index.pop(node.name)
        last = self._node_list.pop()
        if last is not node:
            self._node_list[index] = last
            self._node_index[last.name] = index

    def _changed(self, node: _Node) -> None:
        """A member record changed: what push-pull sends must be built again."""
        node.wire_state = None
        self._full_state = None

    def _set_state(self, node: _Node, state: State, now: float) -> None:
        self._counts[node.state] -= 1
        self._counts[state] += 1
        if state in _GONE:
            self._gone[node.name] = None
        else:
            self._gone.pop(node.name, None)
        node.state = state
        node.state_since = now
        self._changed(node)

    def _event(self, kind: EventKind, node: _Node) -> None:
        self._events.append(MemberEvent(kind, node.snapshot()))
