"""Kills are detected: every killed member is declared failed by every live member, under
loss, delay spikes and stalled observers, and a restarted member is taken back.

Each scenario runs over ``--sim-seeds`` seeds with the simulator's invariants checked
after every step (no member declares itself dead, incarnations never go back, ...).
"""

from __future__ import annotations

import random

from trickle.gossip.config import fast, lan
from trickle.gossip.messages import EventKind, State
from trickle.testing.gossipsim import GossipSim, GossipSimConfig, NetConfig

# A kill at N <= 30 on a LAN is declared dead after the suspicion timeout (4-6 s at these
# sizes, up to 6x that with Lifeguard when few members confirm) plus a probe round.
DETECT_TIMEOUT_S = 60.0


def rng_for(seed: int) -> random.Random:
    return random.Random(seed * 7919 + 11)


def test_every_killed_member_is_declared_failed_by_every_live_member(sim_seed: int) -> None:
    rng = rng_for(sim_seed)
    sim = GossipSim(20, seed=sim_seed)
    sim.run_for(3 + rng.random())
    victims = rng.sample(sim.names, 3)
    killed_at = sim.now
    for name in victims:
        sim.kill(name)
    for name in victims:
        sim.expect(
            lambda name=name: sim.all_see(name, State.DEAD),
            DETECT_TIMEOUT_S,
            f"{name} declared dead by every live member",
            every=0.1,
        )
        when = sim.when_all_saw(name, EventKind.FAIL, since=killed_at)
        assert when is not None, f"a live member saw {name} dead without a FAIL event"
    assert sim.false_failures() == []
    assert all(sim.all_see(name, State.ALIVE) for name in sim.running())


def test_kills_are_detected_under_loss_and_delay_spikes(sim_seed: int) -> None:
    rng = rng_for(sim_seed)
    network = NetConfig(loss=0.1, tail_rate=0.05, tail_s=(0.05, 0.4), duplicate=0.02)
    sim = GossipSim(15, seed=sim_seed, config=GossipSimConfig(network=network))
    sim.run_for(5)
    victim = rng.choice(sim.names)
    sim.kill(victim)
    sim.expect(
        lambda: sim.all_see(victim, State.DEAD),
        DETECT_TIMEOUT_S,
        f"{victim} declared dead at 10% loss",
        every=0.1,
    )
    assert sim.stats.packets_lost > 0


def test_stalled_observers_still_learn_of_a_kill(sim_seed: int) -> None:
    rng = rng_for(sim_seed)
    sim = GossipSim(20, seed=sim_seed)
    sim.run_for(3)
    victim, *observers = rng.sample(sim.names, 5)
    killed_at = sim.now
    sim.kill(victim)
    for name in observers:
        sim.stall(name, rng.uniform(1.0, 4.0))
    sim.expect(
        lambda: sim.all_see(victim, State.DEAD, observers=[n for n in sim.live() if n != victim]),
        DETECT_TIMEOUT_S,
        f"{victim} declared dead everywhere, stalled observers included",
        every=0.1,
    )
    assert sim.when_all_saw(victim, EventKind.FAIL, since=killed_at) is not None


def test_fast_profile_detects_a_kill_within_a_few_seconds(sim_seed: int) -> None:
    """fast(): 250 ms probes, a suspicion of 3 * max(1, log10 n) probe periods."""
    rng = rng_for(sim_seed)
    sim = GossipSim(30, seed=sim_seed, config=GossipSimConfig(gossip=fast()))
    sim.run_for(2 + rng.random())
    victim = rng.choice(sim.names)
    killed_at = sim.now
    sim.kill(victim)
    sim.expect(
        lambda: sim.when_all_saw(victim, EventKind.FAIL, since=killed_at) is not None,
        10.0,
        f"{victim} declared dead by every member with the fast profile",
        every=0.05,
    )
    when = sim.when_all_saw(victim, EventKind.FAIL, since=killed_at)
    assert when is not None and when - killed_at < 6.0


def test_a_restarted_member_is_alive_again_everywhere(sim_seed: int) -> None:
    rng = rng_for(sim_seed)
    sim = GossipSim(12, seed=sim_seed)
    sim.run_for(2)
    victim = rng.choice(sim.names)
    sim.kill(victim)
    sim.expect(
        lambda: sim.all_see(victim, State.DEAD), DETECT_TIMEOUT_S, "kill detected", every=0.1
    )
    restarted_at = sim.now
    sim.restart(victim)
    sim.wait_converged(30.0, every=0.1)
    seen = sim.first_seen(victim, EventKind.JOIN, since=restarted_at)
    assert set(seen) >= set(sim.running()) - {victim}
    incarnation = sim.view(victim).member(victim).incarnation  # type: ignore[union-attr]
    assert incarnation > 0, "it must have refuted its death with a higher incarnation"


def test_a_kill_during_a_lan_run_is_detected_in_about_memberlists_time(sim_seed: int) -> None:
    """At N=100 with LAN defaults, memberlist's median is ~9.8 s; one kill here lands
    between the minimum suspicion timeout (8 s) and Lifeguard's maximum (48 s)."""
    sim = GossipSim(100, seed=sim_seed, config=GossipSimConfig(gossip=lan(), check_every=5.0))
    rng = rng_for(sim_seed)
    sim.run_for(5 + rng.random())
    victim = rng.choice(sim.names)
    killed_at = sim.now
    sim.kill(victim)
    sim.expect(
        lambda: sim.when_all_saw(victim, EventKind.FAIL, since=killed_at) is not None,
        60.0,
        f"{victim} declared dead by all 99 others",
        every=0.25,
    )
    when = sim.when_all_saw(victim, EventKind.FAIL, since=killed_at)
    assert when is not None
    assert 8.0 <= when - killed_at <= 48.0 + 3.0
