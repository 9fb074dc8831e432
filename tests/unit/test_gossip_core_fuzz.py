"""Random inputs never break the gossip core: no exception, invariants after every step,
and every packet it sends fits the UDP budget (also with hundreds of queued broadcasts)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trickle.errors import ValidationError
from trickle.gossip import wire
from trickle.gossip.config import GossipConfig, lan
from trickle.gossip.core import Membership
from trickle.gossip.messages import (
    Ack,
    Alive,
    Dead,
    EventKind,
    IndirectPing,
    MemberEvent,
    MemberState,
    Nack,
    Outgoing,
    Ping,
    PushPull,
    State,
    Suspect,
    UserEvent,
    UserEventReceived,
)

PORT = 8946
ME = "me"
NAMES = [ME, "a", "b", "c", "d"]

names = st.sampled_from(NAMES)
addrs = st.sampled_from([(n, PORT) for n in NAMES] + [("elsewhere", PORT), ("me", 1)])
incs = st.integers(0, 6)
seqs = st.integers(0, 40)
tags = st.dictionaries(st.sampled_from(["role", "dc"]), st.sampled_from(["x", "y", ""]), max_size=2)
user_events = st.builds(
    UserEvent,
    ltime=st.integers(0, 1200),
    name=st.sampled_from(["deploy", "restart"]),
    payload=st.sampled_from([b"", b"v1", b"v2"]),
)
member_states = st.builds(
    MemberState, name=names, addr=addrs, incarnation=incs, state=st.sampled_from(State), tags=tags
)
messages = st.one_of(
    st.builds(
        Ping, seq=seqs, target=st.sampled_from([*NAMES, "", "zz"]), source=names, source_addr=addrs
    ),
    st.builds(
        IndirectPing,
        seq=seqs,
        target=names,
        target_addr=addrs,
        source=names,
        source_addr=addrs,
        nack=st.booleans(),
    ),
    st.builds(Ack, seq=seqs, source=names),
    st.builds(Nack, seq=seqs, source=names),
    st.builds(Alive, incarnation=incs, node=names, addr=addrs, tags=tags),
    st.builds(Suspect, incarnation=incs, node=names, source=names),
    st.builds(Dead, incarnation=incs, node=names, source=names),
    user_events,
    st.builds(
        PushPull,
        join=st.booleans(),
        source=names,
        members=st.lists(member_states, max_size=5).map(tuple),
        event_ltime=st.integers(0, 1200),
        events=st.lists(user_events, max_size=3).map(tuple),
    ),
)
actions = st.one_of(
    st.tuples(st.just("receive"), addrs, st.lists(messages, min_size=1, max_size=4)),
    st.tuples(st.just("stream"), addrs, messages),
    st.tuples(st.just("advance"), st.sampled_from([0.0, 0.05, 0.3, 1.0, 5.0, 40.0, 3600.0])),
    st.tuples(st.just("leave")),
    st.tuples(st.just("tags"), tags),
    st.tuples(st.just("event"), st.sampled_from(["deploy", "x"]), st.sampled_from([b"", b"p"])),
    st.tuples(st.just("join"), st.lists(addrs, max_size=2)),
    st.tuples(st.just("answer-own-requests")),
)


class Checker:
    """Runs actions on one member and checks the invariants after each."""

    def __init__(self, config: GossipConfig, known: list[MemberState]) -> None:
        self.now = 0.0
        self.core = Membership(
            ME, (ME, PORT), config=config, rng=random.Random(0), now=0.0, known=known
        )
        self.budget = config.max_packet_bytes - wire.ENCRYPTION_OVERHEAD
        self.incarnation = 0
        self.delivered: set[tuple[int, str, bytes]] = set()
        self.requests: list[Outgoing] = []

    def run(self, action: tuple[Any, ...]) -> None:
        core, kind = self.core, action[0]
        if kind == "receive":
            core.receive(action[1], action[2], now=self.now)
        elif kind == "stream":
            answer = core.receive_stream(action[1], action[2], now=self.now)
            if answer is not None:
                wire.encode_stream(answer)
        elif kind == "advance":
            self.now += action[1]
            core.poll(now=self.now)
        elif kind == "leave":
            core.leave(now=self.now)
        elif kind == "tags":
            core.set_tags(action[1], now=self.now)
        elif kind == "event":
            core.send_user_event(action[1], action[2], now=self.now)
        elif kind == "join":
            core.join(action[1], now=self.now)
        elif kind == "answer-own-requests":  # each TCP request answered by an empty peer
            for out in self.requests:
                request = out.messages[0]
                if isinstance(request, PushPull):
                    answer = PushPull(False, "peer", (), 0)
                    core.receive(out.to, [answer], now=self.now)
                elif isinstance(request, Ping):
                    core.receive(out.to, [Ack(request.seq, request.target)], now=self.now)
            self.requests = []
        self.check()

    def check(self) -> None:
        core = self.core
        self.requests += [o for o in core.take_outgoing() if self.check_outgoing(o)]
        for event in core.take_events():
            if isinstance(event, UserEventReceived):
                key = (event.ltime, event.name, event.payload)
                assert key not in self.delivered, f"user event delivered twice: {key}"
                self.delivered.add(key)
            elif isinstance(event, MemberEvent):
                expected = {
                    EventKind.JOIN: {State.ALIVE},
                    EventKind.UPDATE: {State.ALIVE},
                    EventKind.LEAVE: {State.LEFT},
                    EventKind.FAIL: {State.DEAD},
                    EventKind.REAP: {State.DEAD, State.LEFT},
                }[event.kind]
                assert event.member.state in expected, event.describe()
        members = core.members()
        assert [m.name for m in members] == sorted({m.name for m in members})
        stats = core.statistics()
        counts = {s: sum(m.state is s for m in members) for s in State}
        assert (stats.alive, stats.suspect, stats.dead, stats.left) == (
            counts[State.ALIVE],
            counts[State.SUSPECT],
            counts[State.DEAD],
            counts[State.LEFT],
        )
        me = core.member(ME)
        assert me is not None and me.addr == (ME, PORT)
        assert me.state is (State.LEFT if core.leaving else State.ALIVE)
        assert me.incarnation >= self.incarnation, "my incarnation went back"
        self.incarnation = me.incarnation
        assert stats.incarnation == me.incarnation
        for m in members:
            assert (core.suspicion(m.name) is not None) == (m.state is State.SUSPECT)
        # what a push-pull carries (cached between changes) is the current view
        answer = core.receive_stream(("peer", 1), PushPull(False, "peer", (), 0), now=self.now)
        assert isinstance(answer, PushPull)
        carried = sorted(
            (m.name, m.addr, m.incarnation, m.state, dict(m.tags)) for m in answer.members
        )
        assert carried == [(m.name, m.addr, m.incarnation, m.state, dict(m.tags)) for m in members]
        deadline = core.next_deadline()
        assert deadline == deadline and deadline < float("inf")  # not NaN, finite

    def check_outgoing(self, out: Outgoing) -> bool:
        """Encodable and within budget; True for a TCP request."""
        if out.stream:
            assert len(out.messages) == 1
            wire.encode_stream(out.messages[0])
            return True
        size = len(wire.encode_packet(out.messages))
        assert size <= self.budget, f"{size}-byte packet over {self.budget}: {out.describe()}"
        return False


def known_of(names: list[str]) -> list[MemberState]:
    return [MemberState(n, (n, PORT), 0, State.ALIVE) for n in names if n != ME]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(actions, max_size=60), st.booleans(), st.booleans())
def test_random_inputs_keep_the_invariants(
    steps: list[tuple[Any, ...]], warm: bool, lifeguard: bool
) -> None:
    checker = Checker(lan(lifeguard=lifeguard), known_of(NAMES) if warm else [])
    checker.check()
    for step in steps:
        try:
            checker.run(step)
        except ValidationError:
            assert step[0] == "tags" or step[0] == "event"  # bad input, refused cleanly


# -- the packet budget ---------------------------------------------------------------------


def flood(core: Membership, now: float, count: int, make: Callable[[int], Any]) -> None:
    for i in range(count):
        core.receive(("n1", PORT), [make(i)], now=now)


def test_every_packet_fits_the_budget_with_hundreds_of_big_broadcasts() -> None:
    config = lan()
    known = [MemberState(f"n{i}", (f"n{i}", PORT), 0, State.ALIVE) for i in range(1, 300)]
    checker = Checker(config, known)
    core = checker.core
    big_tags = {"k": "v" * 480}
    flood(core, 0.0, 299, lambda i: Alive(1, f"n{i + 1}", (f"n{i + 1}", PORT), big_tags))
    flood(core, 0.0, 200, lambda i: UserEvent(i, f"e{i}", b"x" * 500))
    flood(core, 0.0, 100, lambda i: Suspect(1, f"n{i + 1}", "n200"))
    assert core.statistics().broadcasts_queued >= 500
    sent = 0
    while core.statistics().broadcasts_queued and checker.now < 600.0:
        checker.now = max(checker.now, core.next_deadline())
        core.poll(now=checker.now)
        for out in core.take_outgoing():
            checker.check_outgoing(out)
            if not out.stream and len(out.messages) > 1:
                sent += 1
            for m in out.messages:  # answer probes and ping-reqs so acks carry news too
                if isinstance(m, Ping) and not out.stream:
                    core.receive(out.to, [Ack(m.seq, m.target)], now=checker.now)
                elif isinstance(m, IndirectPing):
                    core.receive(
                        out.to, [Ping(m.seq + 1000, ME, m.source, m.source_addr)], now=checker.now
                    )
    assert sent > 100
    assert core.statistics().broadcasts_queued == 0  # everything went out in the end


def test_longest_names_and_addresses_still_fit() -> None:
    long = "n" * wire.MAX_NAME_CHARS
    host = "h" * wire.MAX_HOST_CHARS
    config = lan()
    known = [MemberState(long[:-1] + str(i), (host, PORT), 0, State.ALIVE) for i in range(5)]
    core = Membership(
        long, (host, 65535), config=config, rng=random.Random(1), now=0.0, known=known
    )
    checker = Checker.__new__(Checker)
    checker.budget = config.max_packet_bytes - wire.ENCRYPTION_OVERHEAD
    core.set_tags({"k": "v" * 480}, now=0.0)
    core.send_user_event("e" * 200, b"x" * 300, now=0.0)
    core.receive(
        (host, PORT),
        [IndirectPing(1, known[0].name, (host, PORT), known[1].name, (host, PORT), True)],
        now=0.0,
    )
    now = 0.0
    while now < 30.0:
        now = core.next_deadline()
        core.poll(now=now)
        for out in core.take_outgoing():
            checker.check_outgoing(out)


def test_a_broadcast_too_big_for_a_small_packet_budget_is_left_to_push_pull() -> None:
    config = lan(max_packet_bytes=512)
    known = [MemberState(n, (n, PORT), 0, State.ALIVE) for n in "abc"]
    checker = Checker(config, known)
    core = checker.core
    core.set_tags({"k": "v" * 480}, now=0.0)  # an Alive of ~500 bytes: over 512 - 29 - 7
    while checker.now < 60.0:
        checker.now = core.next_deadline()
        core.poll(now=checker.now)
        for out in core.take_outgoing():
            checker.check_outgoing(out)
    assert core.statistics().broadcasts_queued == 0  # not stuck in the queue forever
    me = core.member(ME)
    assert me is not None and me.tags == {"k": "v" * 480}  # a push-pull carries it
