"""A falsely suspected member refutes (stalled, or behind heavy loss) and is never declared
dead; a member that leaves is LEFT everywhere and never reported failed."""

from __future__ import annotations

import random

from trickle.gossip.config import lan
from trickle.gossip.messages import EventKind, State
from trickle.testing.gossipsim import GossipSim, GossipSimConfig, NetConfig


def rng_for(seed: int) -> random.Random:
    return random.Random(seed * 15485863 + 3)


def refutations(sim: GossipSim, name: str) -> int:
    return sim.view(name).statistics().refutations


def test_a_stalled_member_refutes_its_suspicion_when_it_resumes(sim_seed: int) -> None:
    """Stalled for 4 s in a cluster of 5 (each of the others probes it about once every
    4 s): it misses acks and is suspected; the suspicion timeout (at least 4 s after the
    suspicion starts, and Lifeguard starts it at 24 s) leaves it time to read the
    suspicion from its socket buffer when it resumes and refute with a higher
    incarnation."""
    rng = rng_for(sim_seed)
    sim = GossipSim(5, seed=sim_seed)
    sim.run_for(2 + rng.random())
    stalled = rng.choice(sim.names)
    others = [n for n in sim.names if n != stalled]

    def suspected() -> bool:
        return any(sim.state_in(n, stalled) is State.SUSPECT for n in others)

    for _ in range(5):  # the others' probe orders may all skip it during one stall
        sim.stall(stalled, 4.0)
        was_suspected = sim.run_until(suspected, 3.9)
        sim.expect(lambda: not sim.member(stalled).stalled, 4.0, f"{stalled} resumes")
        if was_suspected:
            break
        sim.run_for(1.0)
    assert was_suspected, f"{stalled} was never suspected in 5 stalls"
    sim.wait_converged(10.0, every=0.1)
    assert refutations(sim, stalled) >= 1
    assert sim.view(stalled).member(stalled).incarnation >= 1  # type: ignore[union-attr]
    sim.run_for(30)
    assert sim.events(kind=EventKind.FAIL) == [], "a stalled member was declared dead"


def test_a_member_behind_heavy_loss_refutes_and_stays_alive(sim_seed: int) -> None:
    """40% of its packets lost both ways for a minute: it is suspected again and again
    (direct and indirect probes fail; the TCP fallback is lossless), refutes each time,
    and nobody declares it dead."""
    rng = rng_for(sim_seed)
    sim = GossipSim(12, seed=sim_seed)
    sim.run_for(2)
    lossy = rng.choice(sim.names)
    sim.set_loss(lossy, 0.4)
    sim.run_for(60)
    assert sim.view(lossy).statistics().refutations >= 1
    sim.set_loss(lossy, 0.0)
    sim.wait_converged(20.0)
    assert sim.false_failures() == []


def test_without_refutation_time_a_stalled_member_is_declared_dead() -> None:
    """The control for the tests above: a stall longer than Lifeguard's longest
    suspicion makes a real failure, then the member refutes and is alive again."""
    sim = GossipSim(10, seed=3)
    sim.run_for(2)
    sim.stall("n04", 40.0)
    sim.run_for(40.0)
    assert [r.event.member.name for r in sim.false_failures()] == ["n04"]  # type: ignore[union-attr]
    sim.wait_converged(60.0)


def test_a_member_that_leaves_is_left_everywhere_and_never_failed(sim_seed: int) -> None:
    rng = rng_for(sim_seed)
    sim = GossipSim(15, seed=sim_seed, config=GossipSimConfig(network=NetConfig.lossy(0.05)))
    sim.run_for(2 + rng.random())
    leaver = rng.choice(sim.names)
    left_at = sim.now
    sim.leave(leaver)
    sim.expect(lambda: not sim.member(leaver).up, 5.0, f"{leaver} finishes leaving")
    assert not sim.member(leaver).leave_forced, "the leave did not finish before its timeout"
    sim.expect(
        lambda: sim.all_see(leaver, State.LEFT), 10.0, f"{leaver} is LEFT everywhere", every=0.1
    )
    sim.run_for(60)
    assert sim.all_see(leaver, State.LEFT)
    assert sim.events(subject=leaver, kind=EventKind.FAIL) == []
    seen = sim.first_seen(leaver, EventKind.LEAVE, since=left_at)
    assert set(seen) - {leaver} == set(sim.running())
    sim.wait_converged(10.0)


def test_leaves_during_stalls_and_kills_are_never_failures(sim_seed: int) -> None:
    """Several members leave while others stall or die; the simulator's invariant (a
    member that left is never reported failed by one that could hear it) runs at every
    step, and the leavers end LEFT in every running view."""
    rng = rng_for(sim_seed)
    sim = GossipSim(20, seed=sim_seed)
    sim.run_for(2)
    names = rng.sample(sim.names, 7)
    leavers, stalled, killed = names[:3], names[3:5], names[5:]
    for name in stalled:
        sim.stall(name, rng.uniform(0.5, 2.5))
    for name in leavers:
        sim.leave(name)
        sim.run_for(rng.uniform(0.0, 0.5))
    for name in killed:
        sim.kill(name)
    sim.run_for(90)
    for name in leavers:
        assert sim.all_see(name, State.LEFT), f"{name} is not LEFT everywhere"
    for name in killed:
        assert sim.all_see(name, State.DEAD)
    sim.wait_converged(30.0)


def test_a_leave_with_lifeguard_off_is_still_not_a_failure(sim_seed: int) -> None:
    sim = GossipSim(10, seed=sim_seed, config=GossipSimConfig(gossip=lan(lifeguard=False)))
    sim.run_for(2)
    sim.leave("n03")
    sim.run_for(30)
    assert sim.all_see("n03", State.LEFT)
    assert sim.events(kind=EventKind.FAIL) == []
