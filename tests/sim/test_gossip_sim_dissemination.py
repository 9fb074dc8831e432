"""News spreads: a tag update reaches every member, user events are delivered exactly once
everywhere (under loss and duplication), and members that join one by one converge."""

from __future__ import annotations

import random

from trickle.gossip.messages import EventKind, State
from trickle.testing.gossipsim import GossipSim, GossipSimConfig, NetConfig


def rng_for(seed: int) -> random.Random:
    return random.Random(seed * 32452843 + 7)


def test_a_tag_update_reaches_every_member(sim_seed: int) -> None:
    """Gossip brings it to nearly everyone within a couple of seconds; a member that no
    retransmission happened to reach (about 1 in 50 updates at n=50: each member sends
    it 8 times to random members) gets it from a push-pull (every 60 s at n=50)."""
    rng = rng_for(sim_seed)
    sim = GossipSim(50, seed=sim_seed, tags=lambda name: {"dc": "a"})
    sim.run_for(2 + rng.random())
    changer = rng.choice(sim.names)
    changed_at = sim.now
    sim.set_tags(changer, {"dc": "b", "role": "server"})

    def has_new_tags(member: object) -> bool:
        return dict(member.tags) == {"dc": "b", "role": "server"}  # type: ignore[attr-defined]

    sim.run_for(2.0)
    seen = sim.first_seen(changer, EventKind.UPDATE, since=changed_at, where=has_new_tags)
    assert len(seen) >= 0.9 * 49, f"gossip reached only {len(seen)} of 49 in 2 s"
    push_pull = sim.config.gossip.push_pull_period(50)
    sim.expect(
        lambda: (
            sim.when_all_saw(changer, EventKind.UPDATE, since=changed_at, where=has_new_tags)
            is not None
        ),
        3 * push_pull,
        f"{changer}'s new tags reach every member",
        every=0.5,
    )
    for name in sim.running():
        found = sim.view(name).member(changer)
        assert found is not None and dict(found.tags) == {"dc": "b", "role": "server"}
    sim.wait_converged(5.0)


def test_user_events_are_delivered_exactly_once_everywhere(sim_seed: int) -> None:
    """10% loss and 5% duplicated packets; each event is delivered once per member (the
    simulator also fails at once on a second delivery to one member)."""
    rng = rng_for(sim_seed)
    network = NetConfig(loss=0.1, duplicate=0.05)
    sim = GossipSim(30, seed=sim_seed, config=GossipSimConfig(network=network))
    sim.run_for(1)
    sent: list[tuple[str, int]] = []
    for i in range(6):
        sender = rng.choice(sim.names)
        name = f"deploy-{i}"
        ltime = sim.send_user_event(sender, name, f"payload {i}".encode())
        sent.append((name, ltime))
        sim.run_for(rng.uniform(0.0, 0.5))
    everyone = set(sim.running())

    def all_delivered() -> bool:
        return all(set(sim.user_events_received(n, t)) == everyone for n, t in sent)

    sim.expect(all_delivered, 60.0, "every user event delivered to every member", every=0.5)
    sim.run_for(30)  # retransmits and push-pulls later must not deliver them again
    for name, ltime in sent:
        counts = sim.user_events_received(name, ltime)
        assert counts == dict.fromkeys(everyone, 1), f"{name}@{ltime}: {counts}"


def test_user_events_from_one_member_keep_their_lamport_order() -> None:
    sim = GossipSim(10, seed=4)
    sim.run_for(1)
    times = [sim.send_user_event("n02", f"e{i}") for i in range(5)]
    assert times == sorted(times) and len(set(times)) == 5
    sim.run_for(10)
    for i, ltime in enumerate(times):
        assert len(sim.user_events_received(f"e{i}", ltime)) == 10


def test_members_joining_one_by_one_converge(sim_seed: int) -> None:
    sim = GossipSim(
        30, seed=sim_seed, start="join", tags=lambda name: {"id": name, "zone": name[-1]}
    )
    joined = 29 * sim.config.join_spacing
    sim.run_for(joined)
    sim.wait_converged(30.0)
    for name in sim.names:
        seen = sim.first_seen(name, EventKind.JOIN)
        assert set(seen) >= set(sim.names) - {name}, f"not every member saw {name} join"
    assert sim.events(kind=EventKind.FAIL) == []


def test_a_member_added_to_a_running_cluster_is_known_everywhere(sim_seed: int) -> None:
    rng = rng_for(sim_seed)
    sim = GossipSim(20, seed=sim_seed)
    sim.run_for(3)
    added_at = sim.now
    name = sim.add(join=[rng.choice(sim.names)], tags={"role": "new"})
    sim.expect(lambda: sim.all_see(name, State.ALIVE), 10.0, f"{name} known everywhere", every=0.05)
    assert len(sim.view(name).members()) == 21
    assert set(sim.first_seen(name, EventKind.JOIN, since=added_at)) >= set(sim.names) - {name}
    sim.wait_converged(5.0)
