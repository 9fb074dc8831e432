"""The planner's heap: due fires in order, lazy invalidation, wake-up times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from trickle.engine.planner import Planner

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_due_returns_fires_up_to_now_earliest_first():
    p = Planner()
    p.set("b", at(20))
    p.set("a", at(10))
    p.set("c", at(30))
    assert p.next_wakeup() == at(10)
    assert p.due(at(25)) == [("a", at(10)), ("b", at(20))]
    assert p.next_wakeup() == at(30)
    assert len(p) == 1


def test_rescheduling_a_job_replaces_its_old_fire():
    p = Planner()
    p.set("a", at(10))
    p.set("a", at(50))
    assert p.next_wakeup() == at(50)
    assert p.due(at(40)) == []
    assert p.due(at(50)) == [("a", at(50))]


def test_removed_job_never_fires():
    p = Planner()
    p.set("a", at(10))
    p.remove("a")
    p.set("b", None)
    assert p.next_wakeup() is None
    assert p.due(at(100)) == []


def test_due_respects_the_limit():
    p = Planner()
    for i in range(10):
        p.set(f"j{i}", at(i))
    first = p.due(at(100), limit=4)
    assert [n for n, _ in first] == ["j0", "j1", "j2", "j3"]
    assert len(p.due(at(100))) == 6


def test_heap_is_compacted_under_churn():
    p = Planner()
    for i in range(5000):
        p.set("a", at(i))
    assert len(p._heap) < 3000
    assert p.due(at(10_000)) == [("a", at(4999))]


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 100) | st.none())))
def test_due_matches_the_last_setting_of_each_job(ops):
    p = Planner()
    last: dict[str, int | None] = {}
    for name, sec in ops:
        p.set(name, None if sec is None else at(sec))
        last[name] = sec
    expected = sorted((at(s), n) for n, s in last.items() if s is not None)
    got = p.due(at(1000))
    assert sorted((t, n) for n, t in got) == expected
    assert [t for _, t in got] == sorted(t for _, t in got)
