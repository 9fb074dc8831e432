"""The simulator replays a seed exactly: same seed, same trace hash, in this process and in
fresh processes with different PYTHONHASHSEED values; different seeds differ."""

from __future__ import annotations

import os

from trickle.testing.determinism import results_under_hash_seeds
from trickle.testing.raftsim import NetworkConfig, RaftSimulation, SimConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_scenario(seed: int) -> str:
    """A few seconds of a lossy 3-node cluster with a client, a crash and a partition;
    returns the trace hash."""
    config = SimConfig(network=NetworkConfig.unreliable(), snapshot_every=7, app_survives_crash=0.5)
    sim = RaftSimulation(3, seed=seed, config=config)
    client = sim.client()
    sim.start_workload([client], keys=("a", "b"), duration_ms=2500)
    sim.run_for(800)
    leader = sim.check_one_leader()
    sim.crash(leader)
    sim.partition([sim.other(leader, 1)], [sim.other(leader, 2)])
    sim.run_for(600)
    sim.heal()
    sim.restart(leader)
    sim.run_for(2000)
    return sim.trace_hash()


def test_same_seed_gives_the_same_trace(sim_seed: int) -> None:
    assert tiny_scenario(sim_seed) == tiny_scenario(sim_seed)


def test_different_seeds_give_different_traces(sim_seed: int) -> None:
    assert tiny_scenario(sim_seed) != tiny_scenario(sim_seed + 1000)


def test_trace_is_the_same_across_processes_with_different_hash_seeds() -> None:
    seed = 4242
    hashes = results_under_hash_seeds(
        "tests.sim.test_raft_sim_determinism", "tiny_scenario", seed, root=ROOT
    )
    assert hashes[0] == hashes[1]
    assert hashes[0] == tiny_scenario(seed)


def test_failure_message_names_the_seed_and_the_replay_command() -> None:
    sim = RaftSimulation(3, seed=77)
    sim.run_for(500)
    message = sim.failure_message("something broke")
    assert "seed=77" in message
    assert "--sim-seed 77" in message
    assert "test_raft_sim_determinism.py::test_failure_message_names" in message
