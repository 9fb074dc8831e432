"""The whole-cluster simulation's checks are not vacuous: each catches a planted bug.

Every invariant of ``trickle.testing.clustersim`` gets a scenario with a bug planted in
the simulated engine (a runner that forgets its runs or ignores terms, a leader that drops
fires, decides concurrently or never abandons a failed node's runs, a server whose disk
forgets), and the check must name the violation.
"""

from __future__ import annotations

import pytest

from trickle.testing._clustersim_runner import Query
from trickle.testing.clustersim import (
    ALL_FIXES,
    ClusterConfig,
    ClusterSimulation,
    InvariantViolation,
    LeaderFaults,
    NemesisConfig,
    NetworkConfig,
    RunnerFaults,
    engine_raft_config,
    run_scenario,
)

QUIET = NemesisConfig(
    partitions=False, crashes=False, network=False, fault_ms=4_000.0, heal_ms=8_000.0
)


def test_a_runner_that_runs_a_duplicated_dispatch_twice_is_caught(sim_seed: int) -> None:
    duplicating = NetworkConfig(duplicate_rate=0.5)
    cluster = ClusterConfig(
        fixes=ALL_FIXES,
        runner_faults=RunnerFaults(forget_runs=True),
        raft=engine_raft_config(network=duplicating),
    )
    with pytest.raises(InvariantViolation, match="at most one dispatch per"):
        run_scenario(sim_seed, cluster=cluster, nemesis=QUIET)


def test_a_leader_that_drops_a_jobs_fires_is_caught(sim_seed: int) -> None:
    cluster = ClusterConfig(fixes=ALL_FIXES, leader_faults=LeaderFaults(drop_fire="one-agent"))
    with pytest.raises(InvariantViolation, match="fire one-agent @.* was lost"):
        run_scenario(sim_seed, cluster=cluster, nemesis=QUIET)


def test_a_leader_deciding_before_its_last_decision_applied_fires_twice(sim_seed: int) -> None:
    # The Scheduler re-plans a job from every JobSaved: a result of the job's previous run
    # applied while a decision is in flight brings back the fire being launched. The
    # engine is safe because its loop awaits each launch; this shows the check sees it.
    cluster = ClusterConfig(
        fixes=ALL_FIXES,
        leader_faults=LeaderFaults(concurrent_decisions=True),
        raft=engine_raft_config(disk_ms=(60.0, 250.0)),  # slow commits: a wider window
    )
    with pytest.raises(InvariantViolation, match="has 2 fates|at most one dispatch per"):
        run_scenario(sim_seed, cluster=cluster, nemesis=QUIET)


def test_a_disk_that_forgets_what_it_synced_is_caught(sim_seed: int) -> None:
    sim = ClusterSimulation(seed=sim_seed, cluster=ClusterConfig(fixes=ALL_FIXES, amnesia=True))
    leader = sim.setup()
    sim.run_for(2_000)
    with pytest.raises(
        InvariantViolation, match=r"node s\d restarts at term=\d+ .*its disk once held"
    ):
        sim.crash(leader)
        sim.restart(leader)
        sim.run_for(2_000)


def test_runs_left_running_on_a_failed_node_are_caught(sim_seed: int) -> None:
    cluster = ClusterConfig(fixes=ALL_FIXES, leader_faults=LeaderFaults(no_abandon=True))
    sim = ClusterSimulation(seed=sim_seed, cluster=cluster)
    sim.setup()
    sim.run_for(3_000)
    victim = next(
        ex.node_name for ex in sim.leader_fsm().running.values() if ex.node_name.startswith("a")
    )
    sim.kill(victim)
    sim.run_for(8_000)
    with pytest.raises(InvariantViolation, match=f"stays running on {victim}, which is dead"):
        sim.finish()


def test_a_runner_that_ignores_the_term_is_caught(sim_seed: int) -> None:
    cluster = ClusterConfig(fixes=ALL_FIXES, runner_faults=RunnerFaults(ignore_term=True))
    sim = ClusterSimulation(seed=sim_seed, cluster=cluster)
    leader = sim.setup()
    term = sim.node(leader).term
    # another server, leading in a later term, has asked a1 what it runs: a1 must now
    # refuse this leader's dispatches (it still takes them: the planted bug)
    other = next(s for s in sim.server_ids if s != leader)
    sim.runners["a1"].receive(other, Query(qid=0, term=term + 5, leader=other))
    with pytest.raises(InvariantViolation, match=f"fencing: a1 starts .* from term {term}"):
        sim.run_for(3_000)


def test_without_the_planted_bug_a_fenced_runner_refuses_and_the_runs_fail_visibly(
    sim_seed: int,
) -> None:
    sim = ClusterSimulation(seed=sim_seed, cluster=ClusterConfig(fixes=ALL_FIXES))
    leader = sim.setup()
    term = sim.node(leader).term
    other = next(s for s in sim.server_ids if s != leader)
    sim.runners["a1"].receive(other, Query(qid=0, term=term + 5, leader=other))
    sim.run_for(3_000)
    sim.ledger.advance(sim.oracle.committed)
    refused = [out for ok, out in sim.ledger.finished.values() if "refused the run" in out]
    assert refused and all("stale term" in out for out in refused)
    assert sim.runners["a1"].starts == 0
