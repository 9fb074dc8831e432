"""A leaving member's leave_done() while others keep accusing it (regression)."""

from __future__ import annotations

import random

from trickle.gossip.config import lan
from trickle.gossip.core import Membership
from trickle.gossip.messages import MemberState, State, Suspect


def test_leave_is_done_although_accusations_keep_retelling_it_regression() -> None:
    # Each accusation of a member that left re-queues its leave, which reset the count
    # leave_done() waited on: a member accused every probe period never finished leaving.
    other = MemberState("b", ("10.0.0.2", 8946), 0, State.ALIVE)
    me = Membership(
        "a", ("10.0.0.1", 8946), config=lan(), rng=random.Random(1), now=0.0, known=[other]
    )
    me.leave(now=0.0)
    now = 0.0
    for _ in range(200):
        if me.leave_done():
            break
        now += 0.2
        me.receive(other.addr, [Suspect(0, "a", "b")], now=now)  # b missed the leave
        me.poll(now=now)
        me.take_outgoing()
    assert me.leave_done()
    assert now < 10.0  # within a few gossip rounds, not "never"


def test_a_leave_reaches_the_only_other_member_whatever_the_gossip_rounds_draw() -> None:
    # A gossip round draws 3n random members; with one other member, all six draws can
    # land on the leaving member itself (1 in 64). It then took itself for alone (its own
    # LEFT state is not counted alive), stopped gossiping and never finished leaving:
    # probing stops on leave, so nothing else carried the news (a 2-node leave flaked).
    for seed in range(300):
        other = MemberState("b", ("10.0.0.2", 8946), 0, State.ALIVE)
        me = Membership(
            "a", ("10.0.0.1", 8946), config=lan(), rng=random.Random(seed), now=0.0, known=[other]
        )
        me.poll(now=0.0)
        me.take_outgoing()
        me.leave(now=0.0)
        now = 0.0
        while not me.leave_done() and now < 10.0:
            now += 0.05
            me.poll(now=now)
            me.take_outgoing()
        assert me.leave_done(), f"seed {seed}: the leave was not sent in 10 s"
