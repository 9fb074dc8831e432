"""Regression tests for the findings in /work/notes/gossip-core-findings.md (simulator and
driver runs that caught the core misbehaving), each reduced to the smallest case."""

from __future__ import annotations

import random
from collections.abc import Iterable

from trickle.gossip.config import GossipConfig, lan, local
from trickle.gossip.core import Membership
from trickle.gossip.messages import (
    Ack,
    Alive,
    Dead,
    EventKind,
    MemberEvent,
    MemberState,
    Ping,
    PushPull,
    State,
    Suspect,
)
from trickle.testing.gossipenv import TinyNet

PORT = 8946


def addr(name: str) -> tuple[str, int]:
    return (name, PORT)


def make(
    name: str,
    *,
    knows: Iterable[str] = (),
    states: Iterable[MemberState] = (),
    config: GossipConfig | None = None,
) -> Membership:
    known = [MemberState(n, addr(n), 0, State.ALIVE) for n in knows]
    core = Membership(
        name,
        addr(name),
        config=config or lan(),
        rng=random.Random(name),
        now=0.0,
        known=[*known, *states],
    )
    core.take_events()
    core.take_outgoing()
    return core


def kinds(core: Membership) -> list[tuple[EventKind, str]]:
    return [(e.kind, e.member.name) for e in core.take_events() if isinstance(e, MemberEvent)]


def sent_to(core: Membership, name: str) -> list[object]:
    return [m for out in core.take_outgoing() if out.to == addr(name) for m in out.messages]


# -- a left member reported failed (from the lead, relayed from the driver helper) -----------


def test_a_leave_heard_after_the_member_was_declared_dead_turns_it_left() -> None:
    b = make("b", knows=["a"], states=[MemberState("c", addr("c"), 0, State.DEAD)])
    b.receive(addr("a"), [Dead(0, "c", "c")], now=5.0)
    c = b.member("c")
    assert c is not None and c.state is State.LEFT
    assert kinds(b) == [(EventKind.LEAVE, "c")]


def test_a_push_pull_turns_a_dead_member_left_when_the_remote_knows_it_left() -> None:
    b = make("b", knows=["a"], states=[MemberState("c", addr("c"), 0, State.DEAD)])
    pp = PushPull(False, "a", (MemberState("c", addr("c"), 0, State.LEFT),), 0)
    b.receive_stream(addr("a"), pp, now=5.0)
    c = b.member("c")
    assert c is not None and c.state is State.LEFT
    assert kinds(b) == [(EventKind.LEAVE, "c")]


def test_news_of_a_left_members_failure_is_answered_with_its_leave_again() -> None:
    # b holds c as LEFT; d never heard the leave and accuses c: b spreads the leave again
    b = make("b", knows=["a", "d"], states=[MemberState("c", addr("c"), 0, State.LEFT)])
    queued = b.statistics().broadcasts_queued
    b.receive(addr("d"), [Suspect(0, "c", "d")], now=5.0)
    assert Dead(0, "c", "c") in sent_to(b, "d")  # told straight back to the accuser
    assert b.statistics().broadcasts_queued == queued + 1  # and gossiped again


def test_a_leaving_member_keeps_telling_its_probers_it_left() -> None:
    a = make("a", knows=["b", "c"])
    a.leave(now=1.0)
    now = 1.0
    while not a.leave_done():  # the leave goes out retransmit_limit times
        now = a.next_deadline()
        a.poll(now=now)
        a.take_outgoing()
    a.receive(addr("b"), [Ping(7, "a", "b", addr("b"))], now=now)
    assert sent_to(a, "b") == [Ack(7, "a"), Dead(0, "a", "a")]


def test_a_leave_missed_by_one_member_is_never_reported_as_a_failure() -> None:
    for seed in range(6):
        net = TinyNet(["a", "b", "c", "d", "e"], config=local(), seed=seed)
        net.run_until(5.0)
        for other in "abce":  # d hears nothing while the leave spreads
            net.cut.add(frozenset(("d", other)))
        net.cores["c"].leave(now=net.now)
        net.flush(net.cores["c"])
        net.run_until(6.5)
        net.down.add("c")
        net.cut.clear()
        net.run_until(60.0)
        assert not [f for f in net.fails if f[2] == "c"], f"seed {seed}: {net.fails}"
        for name in "abde":
            seen = net.cores[name].member("c")
            assert seen is not None and seen.state is State.LEFT, f"seed {seed}: {name}"


# -- 1. push-pull merges counted as independent confirmations (simulator helper) ---------------


def thousand(name: str = "m0") -> Membership:
    return make(name, knows=[f"m{i}" for i in range(1, 1000)])


def test_a_suspicion_learned_by_push_pull_is_not_a_confirmation() -> None:
    b = thousand()
    b.receive(addr("m1"), [Suspect(0, "m9", "m1")], now=1.0)
    b.take_outgoing()
    queued = b.statistics().broadcasts_queued
    pp = PushPull(False, "m2", (MemberState("m9", addr("m9"), 0, State.SUSPECT),), 0)
    b.receive_stream(addr("m2"), pp, now=2.0)
    view = b.suspicion("m9")
    assert view is not None and view.confirmations == 0
    assert b.statistics().broadcasts_queued == queued


def test_a_suspicion_learned_by_push_pull_starts_a_quiet_timer_at_its_longest() -> None:
    b = thousand()
    queued = b.statistics().broadcasts_queued
    pp = PushPull(False, "m2", (MemberState("m9", addr("m9"), 0, State.DEAD),), 0)
    b.receive_stream(addr("m2"), pp, now=2.0)
    view = b.suspicion("m9")
    assert view is not None and view.deadline - view.since == 72.0  # not confirmed
    assert b.statistics().broadcasts_queued == queued  # not spread under a new accuser
    assert Suspect(0, "m9", "m0") in sent_to(b, "m9")  # but the suspect may refute
    # real probers' Suspects still confirm it
    b.receive(addr("m3"), [Suspect(0, "m9", "m3")], now=3.0)
    view = b.suspicion("m9")
    assert view is not None and view.confirmations == 1


def test_a_stale_suspicion_of_me_is_answered_with_my_alive_straight_to_the_accuser() -> None:
    a = make("a", knows=["b", "c"])
    a.receive(addr("c"), [Suspect(0, "a", "c")], now=1.0)  # refuted: a#1
    a.take_outgoing()
    a.receive(addr("b"), [Suspect(0, "a", "b")], now=2.0)  # b missed the refutation
    assert Alive(1, "a", addr("a")) in sent_to(a, "b")
    me = a.member("a")
    assert me is not None and me.incarnation == 1  # no new incarnation needed


def test_a_refutation_goes_straight_to_the_accuser_too() -> None:
    a = make("a", knows=["b", "c"])
    a.receive(addr("c"), [Suspect(0, "a", "c")], now=1.0)
    assert Alive(1, "a", addr("a")) in sent_to(a, "c")


# -- 2. a member resuming from a stall accuses its probe target at once (simulator helper) -----


def first_ping(core: Membership) -> Ping:
    while True:
        core.poll(now=core.next_deadline())
        pings = [
            m
            for out in core.take_outgoing()
            if not out.stream
            for m in out.messages
            if isinstance(m, Ping)
        ]
        if pings:
            return pings[0]


def test_a_member_resuming_from_a_stall_reads_its_packets_before_accusing() -> None:
    a = make("a", knows=["b"])
    ping = first_ping(a)
    stalled_until = a.next_deadline() + 3.0  # the ack sits unread in a's socket meanwhile
    a.poll(now=stalled_until)  # the overdue timers run before the packets are read
    a.receive(addr("b"), [Ack(ping.seq, "b")], now=stalled_until)
    now = stalled_until
    while now < stalled_until + 5.0:
        now = a.next_deadline()
        a.poll(now=now)
        for out in a.take_outgoing():
            for m in out.messages:
                if isinstance(m, Ping) and not out.stream:
                    a.receive(addr("b"), [Ack(m.seq, "b")], now=now)
    b = a.member("b")
    assert b is not None and b.state is State.ALIVE
    assert a.statistics().suspicions == 0


def test_a_late_suspicion_timer_waits_for_the_refutation_in_the_socket() -> None:
    b = make("b", knows=["a", "c"])
    b.receive(addr("a"), [Suspect(0, "c", "a")], now=1.0)
    view = b.suspicion("c")
    assert view is not None
    late = view.deadline + 5.0
    b.poll(now=late)  # the refutation is still unread
    b.receive(addr("c"), [Alive(1, "c", addr("c"))], now=late)
    c = b.member("c")
    assert c is not None and c.state is State.ALIVE
    assert (EventKind.FAIL, "c") not in kinds(b)


def test_a_member_always_late_still_detects_a_real_failure() -> None:
    b = make("b", knows=["a", "c"])
    b.receive(addr("a"), [Suspect(0, "c", "a")], now=1.0)
    now = 1.0
    for _ in range(10):  # every poll 2 s late: the deferral happens once, not forever
        now = b.next_deadline() + 2.0
        b.poll(now=now)
        b.take_outgoing()
    c = b.member("c")
    assert c is not None and c.state is State.DEAD


# -- without Lifeguard the core is plain SWIM (memberlist), to measure what Lifeguard buys --


def test_without_lifeguard_a_late_probe_end_suspects_at_once() -> None:
    a = make("a", knows=["b"], config=lan(lifeguard=False))
    first_ping(a)
    late = a.next_deadline() + 3.0
    a.poll(now=late)
    b = a.member("b")
    assert b is not None and b.state is State.SUSPECT


def test_without_lifeguard_a_push_pull_suspicion_is_spread() -> None:
    b = make("b", knows=["a", "c"], config=lan(lifeguard=False))
    queued = b.statistics().broadcasts_queued
    pp = PushPull(False, "a", (MemberState("c", addr("c"), 0, State.DEAD),), 0)
    b.receive_stream(addr("a"), pp, now=2.0)
    assert b.statistics().broadcasts_queued == queued + 1


# -- a suspicion at a newer incarnation (the 100-hour false-positive run, seed 5) ------------


def test_a_suspicion_at_a_newer_incarnation_starts_over_instead_of_confirming_the_old() -> None:
    b = thousand()
    b.receive(addr("m1"), [Suspect(63, "m9", "m1")], now=1.0)  # m9's refutation never came
    first = b.suspicion("m9")
    assert first is not None
    # 40 s later m9, alive at 64 since, is suspected again by another member: that is news
    # of a new suspicion, not a confirmation that brings the old one's deadline to the past
    b.receive(addr("m2"), [Suspect(64, "m9", "m2")], now=41.0)
    view = b.suspicion("m9")
    assert view is not None and view.since == 41.0 and view.confirmations == 0
    assert view.deadline - view.since == first.deadline - first.since  # a fresh timer
    b.poll(now=42.0)
    member = b.member("m9")
    assert member is not None and member.state is State.SUSPECT and member.incarnation == 64


# -- a member that missed the whole refutation wave (the 100-hour run, seed 4) ---------------


def test_a_member_that_missed_every_copy_of_the_refutation_asks_the_suspect_itself() -> None:
    # m0 heard "m9 suspect #0" but none of the ~2,200 copies of m9's refutation (#1): each
    # member sends an update retransmit_limit times to random members, so at N = 200 a
    # member misses them all about once in 10^5 waves. Nothing else reaches m0 in time
    # (no push-pull, no probe of m9 in its round), so it must ask m9 before its deadline.
    m0 = thousand()
    m9 = make("m9", knows=[f"m{i}" for i in range(9)])
    m9.receive(addr("m1"), [Suspect(0, "m9", "m1")], now=1.0)  # refuted: m9#1
    m9.take_outgoing()
    m0.receive(addr("m1"), [Suspect(0, "m9", "m1")], now=1.0)
    view = m0.suspicion("m9")
    assert view is not None and view.confirmations == 0
    deadline = view.deadline
    asked_at: list[float] = []
    now = 1.0
    while now < deadline + 5.0:
        now = m0.next_deadline()
        m0.poll(now=now)
        for out in m0.take_outgoing():
            if out.to != addr("m9") or out.stream:
                continue  # every other member is unreachable here
            if Suspect(0, "m9", "m0") in out.messages:
                asked_at.append(now)
            m9.receive(addr("m0"), out.messages, now=now)
            for back in m9.take_outgoing():
                if back.to == addr("m0"):
                    m0.receive(addr("m9"), back.messages, now=now)
        member = m0.member("m9")
        assert member is not None
        if member.state is State.ALIVE:
            break
    assert (EventKind.FAIL, "m9") not in kinds(m0)
    member = m0.member("m9")
    assert member is not None and member.state is State.ALIVE and member.incarnation == 1
    # asked at half the (unconfirmed) timeout, long before the deadline
    assert asked_at and asked_at[0] == view.since + (deadline - view.since) / 2


def test_an_unanswered_suspect_is_asked_twice_then_declared_dead() -> None:
    m0 = thousand()
    m0.receive(addr("m1"), [Suspect(0, "m9", "m1")], now=1.0)
    view = m0.suspicion("m9")
    assert view is not None
    timeout = view.deadline - view.since
    asks: list[float] = []
    now = 1.0
    while now <= view.deadline:
        now = m0.next_deadline()
        m0.poll(now=now)
        for out in m0.take_outgoing():
            if out.to == addr("m9") and Suspect(0, "m9", "m0") in out.messages:
                asks.append(now - view.since)
    assert asks == [timeout / 2, timeout * 3 / 4]
    member = m0.member("m9")
    assert member is not None and member.state is State.DEAD


def test_without_lifeguard_a_suspicion_never_asks_the_suspect() -> None:
    b = make("b", knows=[f"m{i}" for i in range(1, 1000)], config=lan(lifeguard=False))
    b.receive(addr("m1"), [Suspect(0, "m9", "m1")], now=1.0)
    now = 1.0
    while True:
        now = b.next_deadline()
        b.poll(now=now)
        sent = sent_to(b, "m9")
        assert Suspect(0, "m9", "b") not in sent
        member = b.member("m9")
        assert member is not None
        if member.state is State.DEAD:
            break
