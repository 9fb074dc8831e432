"""After a partition heals, membership and tags converge everywhere: the sides declared
each other dead, and rejoin (serf's reconnect of failed members, every
``reconnect_interval``) or refutation (gossip to the dead) merges them back.

A heal converges through the first push-pull or reconnect that crosses it (40 seeds at
N=12: 1 to 34 s); it relies on random picks (a reconnect happens with probability
failed/alive per member and round), so HEAL_TIMEOUT_S leaves 20 rounds.
"""

from __future__ import annotations

import random

from trickle.gossip.config import lan
from trickle.gossip.messages import EventKind, State
from trickle.testing.gossipsim import GossipSim, GossipSimConfig, NetConfig

SPLIT_S = 60.0  # long enough for each side to declare the other dead (Lifeguard's max: 24 s)
HEAL_TIMEOUT_S = 20 * lan().reconnect_interval


def rng_for(seed: int) -> random.Random:
    return random.Random(seed * 104729 + 5)


def split(sim: GossipSim, rng: random.Random) -> tuple[list[str], list[str]]:
    names = list(sim.names)
    rng.shuffle(names)
    cut = len(names) // 2 + rng.randrange(-1, 2)
    return sorted(names[:cut]), sorted(names[cut:])


def test_membership_and_tags_converge_after_a_partition_heals(sim_seed: int) -> None:
    rng = rng_for(sim_seed)
    sim = GossipSim(12, seed=sim_seed, tags=lambda name: {"role": "agent", "name": name})
    sim.run_for(2)
    left, right = split(sim, rng)
    sim.partition(left, right)
    sim.run_for(SPLIT_S)
    # each side declared the other failed
    assert sim.all_see(right[0], State.DEAD, observers=left)
    assert sim.all_see(left[0], State.DEAD, observers=right)
    # tags change on both sides while they are apart
    sim.set_tags(left[0], {"role": "server", "name": left[0]})
    sim.set_tags(right[-1], {"role": "server", "name": right[-1]})
    sim.run_for(5)
    healed_at = sim.now
    sim.heal()
    sim.wait_converged(HEAL_TIMEOUT_S)
    for name in (left[0], right[-1]):
        seen = sim.first_seen(
            name, EventKind.JOIN, since=healed_at, where=lambda m: m.tags.get("role") == "server"
        )
        other_side = right if name in left else left
        assert set(seen) >= set(other_side), f"{name}'s new tags did not reach the other side"
    assert sim.false_failures(), "the partition should have caused (expected) failures"


def test_a_minority_cut_off_under_loss_rejoins(sim_seed: int) -> None:
    rng = rng_for(sim_seed)
    sim = GossipSim(16, seed=sim_seed, config=GossipSimConfig(network=NetConfig.lossy(0.05)))
    sim.run_for(2)
    minority = sorted(rng.sample(sim.names, 3))
    sim.partition(minority)
    sim.run_for(SPLIT_S)
    assert sim.all_see(
        minority[0], State.DEAD, observers=[n for n in sim.names if n not in minority]
    )
    sim.heal()
    sim.wait_converged(HEAL_TIMEOUT_S)


def test_a_short_partition_heals_without_anyone_declared_dead(sim_seed: int) -> None:
    """Shorter than the suspicion timeout: suspicions are refuted once packets flow."""
    rng = rng_for(sim_seed)
    sim = GossipSim(10, seed=sim_seed)
    sim.run_for(2)
    left, right = split(sim, rng)
    sim.partition(left, right)
    sim.run_for(2.0)
    sim.heal()
    sim.wait_converged(20.0, every=0.2)
    sim.run_for(10)
    assert sim.events(kind=EventKind.FAIL) == []
