"""The whole-cluster simulation with one kind of fault at a time: every invariant holds.

The same checks as ``test_cluster_sim_nemesis.py`` (``trickle.testing.clustersim``), on
shorter runs with a single nemesis kind, so a failure points at the fault that causes
it. ``--sim-seeds N`` runs more seeds, ``--sim-seed S`` replays one.
"""

from __future__ import annotations

from trickle.testing.clustersim import (
    ALL_FIXES,
    ClusterConfig,
    NemesisConfig,
    ScenarioResult,
    run_scenario,
)

CLUSTER = ClusterConfig(fixes=ALL_FIXES)
NOTHING = {"partitions": False, "crashes": False, "network": False}


def run(seed: int, **kinds: bool) -> ScenarioResult:
    nemesis = NemesisConfig(fault_ms=9_000.0, heal_ms=12_000.0, **{**NOTHING, **kinds})
    return run_scenario(seed, cluster=CLUSTER, nemesis=nemesis)


def test_partitions_alone_keep_every_invariant(sim_seed: int) -> None:
    result = run(sim_seed, partitions=True)
    assert result.counts.get("partitions", 0) > 0


def test_crashes_alone_keep_every_invariant(sim_seed: int) -> None:
    result = run(sim_seed, crashes=True)
    assert result.counts.get("crashes", 0) > 0


def test_lossy_duplicating_reordering_network_alone_keeps_every_invariant(sim_seed: int) -> None:
    result = run(sim_seed, network=True)
    assert result.counts.get("network_changes", 0) > 0


def test_skewed_clocks_alone_run_every_fire_once(sim_seed: int) -> None:
    result = run(sim_seed)
    assert result.counts["leaders"] == 1
    assert result.counts["fire_records_missed"] == 0
    assert result.counts.get("runs_failed_dispatch", 0) == 0


def test_an_agent_killed_for_good_has_its_runs_failed_and_fires_go_elsewhere(
    sim_seed: int,
) -> None:
    result = run(sim_seed, kill_agent=True)
    assert result.counts["declared_failed"] >= 1
