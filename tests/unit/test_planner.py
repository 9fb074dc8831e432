"""The planner's heap: due fires in order, lazy invalidation, wake-up times."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trickle.engine import planner
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


def test_fires_at_one_instant_come_out_in_the_order_they_were_set():
    p = Planner()
    for name in ("c", "a", "b"):
        p.set(name, at(10))
    p.set("a", at(10))  # the same instant again: its place is kept
    assert p.due(at(10)) == [("c", at(10)), ("a", at(10)), ("b", at(10))]


def test_a_fire_time_comes_back_as_it_was_set_whatever_its_zone():
    p = Planner()
    paris = datetime(2026, 1, 1, 1, 0, 0, 5, tzinfo=ZoneInfo("Europe/Paris"))  # T0 + 5us
    p.set("paris", paris)
    p.set("utc", at(0))
    assert p.next_wakeup() == at(0)
    assert p.due(at(0)) == [("utc", at(0))]
    assert p.due(at(0.000004)) == []
    (got,) = p.due(at(0.000005))
    assert got == ("paris", paris) and got[1].tzinfo is paris.tzinfo


def test_planning_a_job_gives_the_garbage_collector_nothing_to_walk():
    names = [f"job-{i}" for i in range(2000)]
    times = [at(i) for i in range(2000)]
    p = Planner()
    gc.collect()
    before = len(gc.get_objects())
    for name, when in zip(names, times, strict=True):
        p.set(name, when)
    assert len(gc.get_objects()) - before < 10  # the heap list: no tuple per job


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 5) | st.none()), max_size=60))
def test_sequence_numbers_renumbered_before_they_wrap_keep_the_order(ops):
    saved = planner.SEQ_BITS
    planner.SEQ_BITS = 3  # wraps after 7 settings
    try:
        p = Planner()
        order: dict[str, tuple[int, int]] = {}  # job -> (second, when it was set)
        for step, (name, sec) in enumerate(ops):
            p.set(name, None if sec is None else at(sec))
            if sec is None:
                order.pop(name, None)
            elif name not in order or order[name][0] != sec:
                order[name] = (sec, step)
        expected = [(n, at(sec)) for n, (sec, _) in sorted(order.items(), key=lambda kv: kv[1])]
        assert p.due(at(1000)) == expected
    finally:
        planner.SEQ_BITS = saved


def test_a_naive_fire_time_is_refused():
    with pytest.raises(TypeError):
        Planner().set("a", datetime(2026, 1, 1))
