"""The launch guard's counts are exported: how often background work stood aside for a
launch (tasks and worker threads), so an operator can see what the guard costs."""

from __future__ import annotations

from prometheus_client import generate_latest

from trickle.engine._engine import Engine
from trickle.engine.config import EngineConfig
from trickle.engine.guard import LaunchGuard
from trickle.engine.metrics import EngineMetrics


def test_the_guards_waits_and_thread_pauses_are_exported_as_counters() -> None:
    metrics = EngineMetrics()
    guard = LaunchGuard()
    metrics.watch_guard(guard)
    guard.waits, guard.thread_pauses = 3, 7
    text = generate_latest(metrics.registry).decode()
    assert "# TYPE trickle_launch_guard_waits_total counter" in text
    assert "trickle_launch_guard_waits_total 3.0" in text
    assert "trickle_launch_guard_thread_pauses_total 7.0" in text


def test_an_engine_exports_its_guards_counters() -> None:
    engine = Engine(EngineConfig(data_dir=None, node_name="n"))
    text = generate_latest(engine.metrics_registry).decode()
    assert "trickle_launch_guard_waits_total 0.0" in text
    assert "trickle_launch_guard_thread_pauses_total 0.0" in text
