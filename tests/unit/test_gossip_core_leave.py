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
