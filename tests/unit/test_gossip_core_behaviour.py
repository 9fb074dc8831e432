"""Behaviours of the gossip core that the golden scripts do not show well, one at a time."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from trickle.errors import ValidationError
from trickle.gossip.config import GossipConfig, lan
from trickle.gossip.core import Membership
from trickle.gossip.messages import (
    Ack,
    Alive,
    Dead,
    EventKind,
    MemberEvent,
    MemberState,
    Outgoing,
    Ping,
    PushPull,
    State,
    Suspect,
    UserEvent,
    UserEventReceived,
)

PORT = 8946


def addr(name: str) -> tuple[str, int]:
    return (name, PORT)


def make(
    name: str,
    *,
    knows: Iterable[str] = (),
    states: Iterable[MemberState] = (),
    config: GossipConfig | None = None,
    now: float = 0.0,
    seed: int | str | None = None,
) -> Membership:
    """A member that knows `knows` (alive, incarnation 0) and `states`, events drained."""
    known = [MemberState(n, addr(n), 0, State.ALIVE) for n in knows]
    core = Membership(
        name,
        addr(name),
        config=config or lan(),
        rng=random.Random(seed if seed is not None else name),
        now=now,
        known=[*known, *states],
    )
    core.take_events()
    core.take_outgoing()
    return core


def push_pull(
    source: str,
    *states: MemberState,
    ltime: int = 0,
    events: Iterable[UserEvent] = (),
    join: bool = False,
) -> PushPull:
    return PushPull(
        join=join, source=source, members=tuple(states), event_ltime=ltime, events=tuple(events)
    )


def state(name: str, st: State = State.ALIVE, inc: int = 0, at: str | None = None) -> MemberState:
    return MemberState(name, addr(at or name), inc, st)


def a_state(core: Membership) -> list[MemberState]:
    """`core`'s view as a push-pull would carry it."""
    return [MemberState(m.name, m.addr, m.incarnation, m.state, m.tags) for m in core.members()]


def member_events(core: Membership) -> list[tuple[EventKind, str]]:
    return [(e.kind, e.member.name) for e in core.take_events() if isinstance(e, MemberEvent)]


def user_events(core: Membership) -> list[str]:
    return [e.name for e in core.take_events() if isinstance(e, UserEventReceived)]


def run_until(core: Membership, end: float, now: float = 0.0) -> list[float]:
    """Poll `core` at each of its deadlines up to `end` (nobody answers); the poll times."""
    polls = []
    while (due := core.next_deadline()) <= end:
        now = max(now, due)
        core.poll(now=now)
        polls.append(now)
        core.take_outgoing()
    return polls


# -- push-pull merge ------------------------------------------------------------------------


def test_push_pull_teaches_a_leave_that_gossip_missed() -> None:
    # c left at incarnation 0 (a leave does not raise it); b missed the broadcast
    b = make("b", knows=["a", "c"])
    b.receive_stream(addr("a"), push_pull("a", state("a"), state("c", State.LEFT)), now=1.0)
    c = b.member("c")
    assert c is not None and c.state is State.LEFT
    assert member_events(b) == [(EventKind.LEAVE, "c")]


def test_a_left_member_learned_by_push_pull_is_never_reported_failed() -> None:
    b = make("b", knows=["a", "c"])
    b.receive_stream(addr("a"), push_pull("a", state("a"), state("c", State.LEFT)), now=1.0)
    b.take_events()
    run_until(b, 120.0, now=1.0)  # nobody answers b's probes any more
    assert (EventKind.FAIL, "c") not in member_events(b)


def test_push_pull_makes_a_member_the_remote_declared_dead_a_suspect_here() -> None:
    b = make("b", knows=["a", "c"])
    b.receive_stream(addr("a"), push_pull("a", state("a"), state("c", State.DEAD)), now=1.0)
    c = b.member("c")
    assert c is not None and c.state is State.SUSPECT  # suspected, so it may still refute


def test_push_pull_of_news_already_known_changes_nothing() -> None:
    b = make("b", knows=["a", "c"])
    before = b.statistics()
    b.receive_stream(addr("a"), push_pull("a", state("a"), state("b"), state("c")), now=1.0)
    assert b.members() == make("b", knows=["a", "c"]).members()
    assert member_events(b) == []
    assert b.statistics().broadcasts_queued == before.broadcasts_queued


def test_a_push_pull_answer_carries_the_refutation_of_what_the_request_said() -> None:
    # after a long partition a and b each believe the other dead; a's reconnect reaches
    # b: b's answer must already say b is alive again, or the sides stay apart
    a = make("a", states=[state("b", State.DEAD)])
    b = make("b", states=[state("a", State.DEAD)])
    request = push_pull("a", *(a_state(a)))
    answer = b.receive_stream(addr("a"), request, now=40.0)
    assert isinstance(answer, PushPull)
    a.receive(addr("b"), [answer], now=40.0)
    seen = a.member("b")
    assert seen is not None and seen.state is State.ALIVE and seen.incarnation == 1


# -- names and addresses ------------------------------------------------------------------


def test_an_alive_about_my_name_at_another_address_is_ignored_not_refuted() -> None:
    a = make("a", knows=["b"])
    a.receive(addr("b"), [Alive(5, "a", ("elsewhere", PORT))], now=1.0)
    me = a.member("a")
    assert me is not None and me.incarnation == 0 and me.addr == addr("a")
    assert a.statistics().refutations == 0
    assert a.statistics().messages_ignored == 1


def test_a_member_that_left_may_come_back_at_a_new_address() -> None:
    b = make("b", knows=["a"], states=[state("c", State.LEFT, inc=3)])
    b.receive(addr("a"), [Alive(0, "c", ("new-host", PORT))], now=1.0)
    c = b.member("c")
    assert c is not None and c.state is State.ALIVE and c.addr == ("new-host", PORT)
    assert member_events(b) == [(EventKind.JOIN, "c")]


def test_a_failed_members_name_stays_taken_without_reclaim_time() -> None:
    b = make("b", knows=["a"], states=[state("c", State.DEAD)])
    b.receive(addr("a"), [Alive(7, "c", ("new-host", PORT))], now=1e6)
    c = b.member("c")
    assert c is not None and c.state is State.DEAD and c.addr == addr("c")


# -- leave ----------------------------------------------------------------------------------


def test_tags_set_after_leave_are_kept_but_do_not_bring_the_member_back() -> None:
    a = make("a", knows=["b"])
    a.leave(now=1.0)
    a.set_tags({"role": "x"}, now=1.5)
    me = a.member("a")
    assert me is not None and me.state is State.LEFT and me.tags == {"role": "x"}
    sent = [m for out in a.take_outgoing() for m in out.messages]
    assert not any(isinstance(m, Alive) for m in sent)
    b = make("b", knows=["a"])
    for out in drain_gossip(a, 1.5, 30.0):
        b.receive(addr("a"), out.messages, now=30.0)
    seen = b.member("a")
    assert seen is not None and seen.state is State.LEFT


def drain_gossip(core: Membership, start: float, end: float) -> list[Outgoing]:
    out: list[Outgoing] = []
    now = start
    while (due := core.next_deadline()) <= end:
        now = max(now, due)
        core.poll(now=now)
        out += [o for o in core.take_outgoing() if not o.stream]
    return out


# -- user events ----------------------------------------------------------------------------


def test_a_periodic_push_pull_does_not_hide_events_a_warm_member_has_not_seen() -> None:
    b = make("b", knows=["a"])
    answer = push_pull("a", state("a"), state("b"), ltime=5, events=[UserEvent(3, "deploy")])
    b.receive(addr("a"), [answer], now=1.0)
    assert user_events(b) == ["deploy"]
    b.receive(addr("a"), [UserEvent(4, "restart")], now=1.1)
    assert user_events(b) == ["restart"]


def test_a_join_does_not_replay_events_older_than_the_cluster_clock() -> None:
    c = make("c")
    c.join([addr("a")], now=0.0)
    c.take_outgoing()
    answer = push_pull("a", state("a"), ltime=5, events=[UserEvent(3, "deploy")])
    c.receive(addr("a"), [answer], now=0.1)
    assert user_events(c) == []
    c.receive(addr("a"), [UserEvent(3, "deploy"), UserEvent(5, "new")], now=0.2)
    assert user_events(c) == ["new"]


# -- probing --------------------------------------------------------------------------------


def probe_once(core: Membership) -> str:
    """Run `core` to its next probe, ack it at once; the member probed."""
    while True:
        now = core.next_deadline()
        core.poll(now=now)
        pings = [
            m
            for out in core.take_outgoing()
            if not out.stream
            for m in out.messages
            if isinstance(m, Ping)
        ]
        if pings:
            core.receive(addr(pings[0].target), [Ack(pings[0].seq, pings[0].target)], now=now)
            return pings[0].target


def test_a_new_member_is_probed_before_the_round_ends() -> None:
    others = [f"n{i}" for i in range(9)]
    for seed in range(20):
        a = make("a", knows=others, seed=seed)
        for _ in range(4):
            probe_once(a)
        a.receive(addr("n0"), [Alive(0, "z", addr("z"))], now=a.next_deadline())
        later = [probe_once(a) for _ in range(len(others) - 4 + 1)]
        assert "z" in later, f"seed {seed}: z not probed in the round it joined: {later}"
        assert len(set(later)) == len(later), f"seed {seed}: a member probed twice: {later}"


# -- gossip rounds --------------------------------------------------------------------------


def test_a_member_alone_does_not_wake_for_gossip_rounds() -> None:
    a = make("a")
    polls = run_until(a, 10.0)
    assert len(polls) <= 15, f"{len(polls)} wake-ups in 10 s alone"  # ~10 probe ticks


def test_suspect_of_myself_is_refuted_with_a_higher_incarnation() -> None:
    a = make("a", knows=["b"])
    a.receive(addr("b"), [Suspect(4, "a", "b")], now=1.0)
    me = a.member("a")
    assert me is not None and me.state is State.ALIVE and me.incarnation == 5


def test_dead_about_myself_is_refuted_unless_leaving() -> None:
    a = make("a", knows=["b"])
    a.receive(addr("b"), [Dead(0, "a", "b")], now=1.0)
    me = a.member("a")
    assert me is not None and me.state is State.ALIVE and me.incarnation == 1


def test_set_tags_rejects_oversized_tags() -> None:
    a = make("a")
    with pytest.raises(ValidationError):
        a.set_tags({"k": "x" * 600}, now=0.0)


def test_push_pulls_do_not_move_the_event_clock_by_themselves() -> None:
    a = make("a", knows=["b"])
    b = make("b", knows=["a"])
    for i in range(5):
        request = push_pull("a", *a_state(a), ltime=a.statistics().event_ltime)
        answer = b.receive_stream(addr("a"), request, now=float(i))
        assert answer is not None
        a.receive(addr("b"), [answer], now=float(i))
    assert a.statistics().event_ltime == 0 and b.statistics().event_ltime == 0


def test_a_remote_clock_is_caught_up_with_and_the_next_event_follows_it() -> None:
    a = make("a", knows=["b"])
    a.receive_stream(addr("b"), push_pull("b", state("b"), ltime=7), now=1.0)
    assert a.send_user_event("deploy", now=1.0) == 7
    assert a.statistics().event_ltime == 8


def test_members_are_reaped_in_the_order_they_went_whatever_the_hash_seed() -> None:
    names = ["q", "w", "e", "r", "t", "y"]
    config = lan(reconnect_timeout=10, tombstone_timeout=10)
    a = make("a", knows=names, config=config)
    for i, name in enumerate(names):
        kind = Dead(0, name, name) if i % 2 else Dead(0, name, "x")
        a.receive(addr("b"), [kind], now=1.0 + i)
    a.take_events()
    run_until(a, 100.0, now=7.0)
    reaped = [name for kind, name in member_events(a) if kind is EventKind.REAP]
    assert reaped == names


def test_a_join_that_got_no_answer_does_not_make_a_later_answer_hide_events() -> None:
    c = make("c")
    c.join([addr("a")], now=0.0)  # never answered (a was down)
    c.take_outgoing()
    later = push_pull("a", state("a"), ltime=5, events=[UserEvent(3, "deploy")])
    c.receive(addr("a"), [later], now=600.0)  # the answer to a periodic push-pull
    assert user_events(c) == ["deploy"]
