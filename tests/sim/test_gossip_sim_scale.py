"""The same properties from N=10 to N=1,000: kills detected everywhere, updates and user
events reaching everyone, no false failures on a healthy network."""

from __future__ import annotations

import math
import random

import pytest

from trickle.gossip.messages import EventKind, Member, State
from trickle.testing.gossipsim import GossipSim, GossipSimConfig


def rng_for(seed: int) -> random.Random:
    return random.Random(seed * 49979687 + 13)


@pytest.mark.parametrize("n", [10, 100])
def test_kill_tag_change_and_user_event_at_scale(n: int, sim_seed: int) -> None:
    rng = rng_for(sim_seed)
    sim = GossipSim(n, seed=sim_seed, config=GossipSimConfig(check_every=2.0))
    sim.run_for(2 + rng.random())
    victim, changer, sender = rng.sample(sim.names, 3)
    start = sim.now
    sim.kill(victim)
    sim.set_tags(changer, {"version": "2"})
    ltime = sim.send_user_event(sender, "scale", b"x")
    # suspicion: 4 * max(1, log10 n) s, up to 6x that with too few confirmations
    limit = 6 * 4 * max(1.0, math.log10(n)) + 5
    sim.expect(
        lambda: sim.when_all_saw(victim, EventKind.FAIL, since=start) is not None,
        limit,
        f"{victim}'s kill detected by all {n - 1} others",
        every=0.25,
    )
    sim.wait_converged(3 * sim.config.gossip.push_pull_period(n))
    assert set(sim.user_events_received("scale", ltime)) == set(sim.running())
    assert sim.false_failures() == []


def test_a_thousand_members_spread_an_update_and_an_event_in_seconds() -> None:
    """A converged cluster of 1,000 (LAN defaults): a tag change and a user event reach
    99.9% of the members within 3 s (serf's model: 2.0 s), ten members stall for a
    second meanwhile, and every invariant holds throughout."""
    sim = GossipSim(1000, seed=1000, config=GossipSimConfig(check_every=2.0))
    rng = rng_for(1000)
    sim.run_for(1.0)
    changer, sender, *stalled = rng.sample(sim.names, 12)
    start = sim.now
    sim.set_tags(changer, {"version": "2"})
    ltime = sim.send_user_event(sender, "thousand", b"payload")
    for name in stalled:
        sim.stall(name, 1.0)
    sim.run_for(3.0)

    def new_tags(member: Member) -> bool:
        return dict(member.tags) == {"version": "2"}

    updated = sim.first_seen(changer, EventKind.UPDATE, since=start, where=new_tags)
    received = sim.user_events_received("thousand", ltime)
    assert len(updated) + 1 >= 999, f"the update reached {len(updated) + 1} of 1000 in 3 s"
    assert len(received) >= 999, f"the user event reached {len(received)} of 1000 in 3 s"
    assert max(received.values()) == 1
    assert all(sim.state_in(name, changer) is State.ALIVE for name in rng.sample(sim.names, 20))
    assert sim.events(kind=EventKind.FAIL) == []
