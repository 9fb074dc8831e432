"""The gossip simulator replays a seed exactly (same event trace, same trace hash, in any
process), and its invariant checks catch what they are meant to catch."""

from __future__ import annotations

import os

import pytest

from trickle.gossip.messages import Dead, EventKind, MemberEvent, UserEventReceived
from trickle.testing.determinism import results_under_hash_seeds
from trickle.testing.gossipsim import (
    GossipSim,
    GossipSimConfig,
    InvariantViolation,
    NetConfig,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_scenario(seed: int, *, cheap: bool = False) -> tuple[str, list[str]]:
    """A lossy cluster of 12 with a kill, a stall, a partition and its heal, a leave, a
    restart, a tag change and a user event; returns the trace hash and the event trace.
    ``cheap``: without byte counts and packet tracing."""
    network = NetConfig(loss=0.05, duplicate=0.02, tail_rate=0.02)
    config = GossipSimConfig(network=network, count_bytes=not cheap, trace_packets=not cheap)
    sim = GossipSim(12, seed=seed, config=config)
    sim.run_for(2)
    sim.kill("n03")
    sim.stall("n07", 2.5)
    sim.set_tags("n01", {"role": "server"})
    sim.send_user_event("n02", "deploy", b"v2")
    sim.run_for(3)
    sim.partition(["n00", "n01", "n02", "n04"])
    sim.run_for(15)
    sim.heal()
    sim.leave("n05")
    sim.run_for(10)
    sim.restart("n03")
    sim.run_for(10)
    return sim.trace_hash(), sim.event_trace()


def test_same_seed_gives_the_same_event_trace(sim_seed: int) -> None:
    first = tiny_scenario(sim_seed)
    second = tiny_scenario(sim_seed)
    assert first[1] == second[1]
    assert first[0] == second[0]
    assert any("fail n03" in line for line in first[1])  # the scenario did something


def test_skipping_byte_counts_and_packet_tracing_changes_no_event(sim_seed: int) -> None:
    full_hash, full_events = tiny_scenario(sim_seed)
    cheap_hash, cheap_events = tiny_scenario(sim_seed, cheap=True)
    assert cheap_events == full_events
    assert cheap_hash != full_hash  # the packets are not in it


def test_a_simulation_without_byte_counts_reports_none() -> None:
    sim = GossipSim(5, seed=3, config=GossipSimConfig(count_bytes=False))
    sim.run_for(5)
    assert not sim.counts_bytes
    assert sim.bytes_sent() == 0
    assert sim.stats.packets_delivered > 0
    counted = GossipSim(5, seed=3)
    counted.run_for(5)
    assert counted.counts_bytes and counted.bytes_sent() > 0
    assert counted.stats.packets_delivered == sim.stats.packets_delivered


def test_different_seeds_give_different_traces(sim_seed: int) -> None:
    assert tiny_scenario(sim_seed)[0] != tiny_scenario(sim_seed + 1000)[0]


def test_trace_is_the_same_across_processes_with_different_hash_seeds() -> None:
    seed = 2024
    results = results_under_hash_seeds(
        "tests.sim.test_gossip_sim_determinism", "tiny_scenario", seed, root=ROOT
    )
    hashes = [result[0] for result in results]  # (trace hash, events) as a JSON list
    assert hashes[0] == hashes[1]
    assert hashes[0] == tiny_scenario(seed)[0]


def test_failure_message_names_the_seed_and_the_replay_command() -> None:
    sim = GossipSim(4, seed=77)
    sim.run_for(2)
    with pytest.raises(AssertionError) as caught:
        sim.expect(lambda: False, 1.0, "something that never happens")
    message = str(caught.value)
    assert "seed=77" in message
    assert "--sim-seed 77" in message
    assert "test_gossip_sim_determinism.py::test_failure_message_names" in message
    assert "ping seq=" in message  # the trace tail


# --- the invariants catch planted violations -------------------------------------------


def test_a_failure_reported_for_a_member_that_left_is_a_violation() -> None:
    """A forged Dead about a leaving member, delivered before its leave can arrive."""
    sim = GossipSim(6, seed=5)
    sim.run_for(2)
    sim.leave("n02")
    incarnation = sim.view("n04").member("n02").incarnation  # type: ignore[union-attr]
    with pytest.raises(InvariantViolation, match="n04 reports n02 failed, but n02 left"):
        sim.deliver("n04", [Dead(incarnation, "n02", "n01")], source="n01")


def test_the_same_forged_failure_of_a_running_member_is_only_a_false_positive() -> None:
    sim = GossipSim(6, seed=5)
    sim.run_for(2)
    incarnation = sim.view("n04").member("n02").incarnation  # type: ignore[union-attr]
    sim.deliver("n04", [Dead(incarnation, "n02", "n01")], source="n01")
    assert [r.observer for r in sim.false_failures()] == ["n04"]
    sim.wait_converged(30.0)  # n02 hears of its death and refutes it


def test_an_incarnation_going_back_is_a_violation() -> None:
    sim = GossipSim(4, seed=6)
    sim.run_for(1)
    sim.set_tags("n01", {"v": "2"})
    sim.run_for(2)
    core = sim.view("n03")
    member = core.member("n01")
    assert member is not None and member.incarnation == 1
    stale = MemberEvent(EventKind.UPDATE, member.__class__(**{**_fields(member), "incarnation": 0}))
    core.take_events = lambda: [stale]  # type: ignore[method-assign]
    with pytest.raises(InvariantViolation, match="incarnation 0 after 1"):
        sim.run_for(2)


def test_a_user_event_delivered_twice_is_a_violation() -> None:
    sim = GossipSim(4, seed=7)
    sim.run_for(1)
    ltime = sim.send_user_event("n00", "once")
    sim.run_for(2)
    core = sim.view("n02")
    core.take_events = lambda: [UserEventReceived(ltime, "once", b"")]  # type: ignore[method-assign]
    with pytest.raises(InvariantViolation, match="a second time"):
        sim.run_for(2)


def test_a_member_declaring_itself_dead_is_a_violation() -> None:
    sim = GossipSim(4, seed=8)
    sim.run_for(1)
    core = sim.view("n01")
    me = core.member("n01")
    assert me is not None
    core.take_events = lambda: [MemberEvent(EventKind.FAIL, me)]  # type: ignore[method-assign]
    with pytest.raises(InvariantViolation, match="n01 declared itself dead"):
        sim.run_for(2)


def _fields(member: object) -> dict[str, object]:
    names = ("name", "addr", "incarnation", "state", "tags", "state_since")
    return {name: getattr(member, name) for name in names}
