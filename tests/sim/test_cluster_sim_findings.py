"""Engine behaviours the whole-cluster simulation found that break issue 5's invariants.

The simulation models the engine as it is, and ``ClusterConfig.fixes`` turns on a model
of a fix for each finding (the other cluster-sim tests run with ``ALL_FIXES``). Each test
here runs seeds that reproduce one finding with its fix off, and is
``xfail(strict=True)``: it fails today. When the engine gets the fix, mirror it in
``trickle/testing/_clustersim_server.py`` as the default, and the test (now passing)
loses its marker; for the ``Scheduler`` finding, the sim's workaround goes instead and
the seeds pass on the real core.

Replay one seed with its trace::

    from trickle.testing.clustersim import *
    cluster = ClusterConfig(fixes=ALL_FIXES - {FIX_RECONCILE_OWN_RUNS})
    run_scenario(19, cluster=cluster)      # raises InvariantViolation, trace tail included
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from trickle.testing.clustersim import (
    ALL_FIXES,
    FIX_RECONCILE_OWN_RUNS,
    FIX_RESTART_RECONCILE,
    FIX_SCHEDULER,
    ClusterConfig,
    InvariantViolation,
    run_scenario,
)


def run_without(fix: str, seeds: Sequence[int], *, match: str = "") -> None:
    """Run ``seeds`` with every fix but ``fix``; the first violation propagates if its
    message contains ``match`` (another one fails the test outright)."""
    cluster = ClusterConfig(fixes=ALL_FIXES - {fix})
    for seed in seeds:
        try:
            run_scenario(seed, cluster=cluster)
        except InvariantViolation as exc:
            if match not in str(exc):
                raise AssertionError(f"seed {seed}: another violation: {exc}") from exc
            raise


@pytest.mark.xfail(
    strict=True,
    raises=InvariantViolation,
    reason="engine: a node that restarts before gossip declares it failed, or comes back "
    "while its failed runs wait for their dispatches to expire, keeps the runs it lost "
    "'running' for good (nothing asks it again what it runs)",
)
def test_a_node_that_restarts_quickly_has_the_runs_it_lost_recorded_failed() -> None:
    # seed 4: a1 crashes with a finished run's result undelivered and restarts at the
    # heal before the leader's detector declares it failed; the run stays "running"
    # seed 0: a1 is declared failed, its runs wait for their dispatches to expire, a1
    # comes back meanwhile (restarted, empty): "is back: its runs are not failed"
    run_without(FIX_RESTART_RECONCILE, [4, 0, 7], match="which does not run it")


@pytest.mark.xfail(
    strict=True,
    raises=InvariantViolation,
    reason="engine: a new leader's _reconcile_remote_runs skips the runs it inherited on "
    "itself, and _abandon_orphans runs only at startup: an intent for its node that the "
    "previous leader committed but never dispatched stays 'running' for good",
)
def test_a_new_leader_records_its_own_undispatched_inherited_runs_failed() -> None:
    run_without(FIX_RECONCILE_OWN_RUNS, [19, 5, 31], match="stays running on s")


@pytest.mark.xfail(
    strict=True,
    raises=InvariantViolation,
    reason="Scheduler.catch_up: its missed records keep the job's next, so a leader lost "
    "before its catch-up run leaves the next one to record the same fires missed again",
)
def test_a_catch_up_cut_short_does_not_record_fires_missed_twice() -> None:
    # seed 19: the leader proposes catch_up's FiresMissed (next unchanged), loses the
    # lead before deciding the late fire; the next leader's catch_up starts from the
    # same next and records the same fires missed again
    run_without(FIX_SCHEDULER, [19, 86], match="has 2 fates")


@pytest.mark.xfail(
    strict=True,
    raises=InvariantViolation,
    reason="Scheduler.decide: a skipped fire's FiresSkipped moves next past the fires that "
    "fell due meanwhile (the scheduler behind) without recording them: they are lost",
)
def test_a_skipped_late_fire_records_the_fires_it_jumps_over() -> None:
    # seed 76: a catch-up decided 2 s late (its missed records waited for a quorum) skips
    # its fire (forbid: the previous run is active); next jumps from 12.458 to 16.458
    # and the fire at 14.458 has no record
    run_without(FIX_SCHEDULER, [76], match="was lost")
