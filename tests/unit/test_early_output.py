"""EarlyOutput: chunks of runs a server has not seen start yet wait, bounded, in order."""

from __future__ import annotations

from trickle.engine.events import EarlyOutput


def test_held_chunks_come_back_in_order_once_and_are_then_forgotten():
    early = EarlyOutput()
    early.hold("job", "r1", "1\n")
    early.hold("job", "r2", "x")
    early.hold("job", "r1", "2\n")
    assert early.release("r1") == ["1\n", "2\n"]
    assert early.release("r1") == []
    assert len(early) == 1


def test_a_run_that_finishes_before_it_starts_here_has_its_chunks_dropped():
    early = EarlyOutput()
    early.hold("job", "r1", "a")
    early.drop("r1")
    assert not early
    assert early.dropped == 1


def test_beyond_max_runs_the_oldest_run_is_forgotten():
    early = EarlyOutput(max_runs=2)
    for run in ("r1", "r2", "r3"):
        early.hold("job", run, run)
    assert early.release("r1") == []
    assert early.release("r2") == ["r2"] and early.release("r3") == ["r3"]
    assert early.dropped == 1


def test_chunks_beyond_a_runs_character_limit_are_dropped_and_counted():
    early = EarlyOutput(max_chars=5)
    for chunk in ("abc", "de", "f", "g"):
        early.hold("job", "r1", chunk)
    assert early.release("r1") == ["abc", "de"]
    assert early.dropped == 2
