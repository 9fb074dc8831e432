"""The whole-cluster simulation replays a seed exactly: same seed, same trace hash, here and
in fresh processes with other PYTHONHASHSEED values; different seeds differ; a failure
names its seed and the command that replays it."""

from __future__ import annotations

import os
from datetime import timedelta

from trickle.testing.clustersim import (
    ALL_FIXES,
    ClusterConfig,
    ClusterSimulation,
    NemesisConfig,
    run_scenario,
)
from trickle.testing.determinism import results_under_hash_seeds

NEMESIS = NemesisConfig(fault_ms=4_000.0, heal_ms=7_000.0, kill_agent=True)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def scenario_hash(seed: int) -> str:
    """A short run with every fault kind; returns its trace hash."""
    return run_scenario(seed, cluster=ClusterConfig(fixes=ALL_FIXES), nemesis=NEMESIS).trace_hash


def test_same_seed_gives_the_same_trace_and_other_seeds_differ(sim_seed: int) -> None:
    first = scenario_hash(sim_seed)
    assert scenario_hash(sim_seed) == first
    assert scenario_hash(sim_seed + 1000) != first


def test_trace_is_the_same_across_processes_with_different_hash_seeds() -> None:
    seed = 4242
    hashes = results_under_hash_seeds(
        "tests.sim.test_cluster_sim_determinism", "scenario_hash", seed, root=ROOT
    )
    assert hashes[0] == hashes[1]
    assert hashes[0] == scenario_hash(seed)


def test_a_violation_names_the_seed_and_the_replay_command() -> None:
    sim = ClusterSimulation(seed=31)
    sim.setup()
    message = sim.failure_message("something broke")
    assert "seed=31" in message
    assert "--sim-seed 31" in message
    assert "test_cluster_sim_determinism.py::test_a_violation_names" in message


def test_clocks_are_skewed_by_up_to_half_a_second_per_node(sim_seed: int) -> None:
    sim = ClusterSimulation(seed=sim_seed)
    skews = sim.skew_us
    assert all(abs(s) <= 500_000 for s in skews.values())
    assert len(set(skews.values())) > 1
    apart = (sim.wall("s1") - sim.wall("a1")) // timedelta(microseconds=1)
    assert apart == skews["s1"] - skews["a1"]
