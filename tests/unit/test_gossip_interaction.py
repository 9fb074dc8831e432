"""Golden interaction scripts for the gossip core: each command's output must match the file.

Scripts live in ``gossip_scripts/*.txt`` (syntax in ``trickle.testing.gossipenv``). After a
deliberate change, regenerate them with ``pytest tests/unit/test_gossip_interaction.py
--rewrite`` and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trickle.testing.gossipenv import run_script

SCRIPTS = sorted((Path(__file__).parent / "gossip_scripts").glob("*.txt"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_gossip_interaction_script(script: Path, rewrite: bool) -> None:
    expected, actual = run_script(script, rewrite=rewrite)
    if not rewrite:
        assert actual == expected, f"{script.name} differs; run with --rewrite and review the diff"


REQUIRED = [
    "probe_ack",
    "probe_indirect",
    "probe_nack",
    "suspect_dead",
    "suspect_refute",
    "suspicion_lifeguard",
    "suspicion_no_lifeguard",
    "local_health",
    "piggyback_retransmit",
    "gossip_idle",
    "push_pull_join",
    "leave",
    "reap",
    "rejoin_reconnect",
    "restart_rejoin",
    "tags_update",
    "user_events",
    "name_conflict",
]


def test_every_required_scenario_has_a_script() -> None:
    assert set(REQUIRED) <= {p.stem for p in SCRIPTS}
