"""Golden interaction scripts for the Raft core: each command's output must match the file.

Scripts live in ``raft_scripts/*.txt`` (syntax in ``trickle.testing.raftenv``). After a
deliberate change, regenerate them with ``pytest tests/unit/test_raft_interaction.py
--rewrite`` and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trickle.testing.raftenv import run_script

SCRIPTS = sorted((Path(__file__).parent / "raft_scripts").glob("*.txt"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_raft_interaction_script(script: Path, rewrite: bool) -> None:
    expected, actual = run_script(script, rewrite=rewrite)
    if not rewrite:
        assert actual == expected, f"{script.name} differs; run with --rewrite and review the diff"


REQUIRED = [
    "election",
    "prevote",
    "prevote_checkquorum",
    "checkquorum",
    "checkquorum_stuck_candidate",
    "read_index_leader",
    "read_index_follower",
    "transfer_caught_up",
    "transfer_lagging",
    "transfer_timeout",
    "confchange_learner_promote",
    "confchange_remove_leader",
    "confchange_two_nodes",
    "snapshot_lagging_follower",
    "fast_backup",
    "figure8",
]


def test_every_required_scenario_has_a_script() -> None:
    assert set(REQUIRED) <= {p.stem for p in SCRIPTS}
