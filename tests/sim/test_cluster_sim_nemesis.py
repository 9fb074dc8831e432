"""The whole-cluster simulation under its nemesis: every invariant holds, per seed.

Each test runs a 3-server, 2-agent cluster with six jobs on skewed clocks through a
seeded fault schedule, heals it, lets it settle and checks everything
(``trickle.testing.clustersim``). ``--sim-seeds N`` runs more seeds, ``--sim-seed S``
replays one. The simulation models three engine fixes (``ALL_FIXES``) that
``test_cluster_sim_findings.py`` shows are needed.
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


def run(seed: int, **nemesis: bool) -> ScenarioResult:
    return run_scenario(seed, cluster=CLUSTER, nemesis=NemesisConfig(**nemesis))


def test_all_faults_together_keep_every_invariant(sim_seed: int) -> None:
    # odd seeds also kill an agent for good; every third seed restarts agents quickly
    # (before the failure detector notices)
    result = run(sim_seed, kill_agent=sim_seed % 2 == 1, quick_restarts=sim_seed % 3 == 0)
    counts = result.counts
    assert counts["runs_started"] > 50
    assert counts["leaders"] >= 1
    assert counts.get("partitions", 0) + counts.get("crashes", 0) > 0
