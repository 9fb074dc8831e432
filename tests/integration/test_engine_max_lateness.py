"""EngineConfig.max_lateness reaches the leader's scheduler: a fire reached a whole period
late is recorded missed instead of run late (admission under overload)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from trickle import Engine, EngineConfig, ExecutionContext, Job
from trickle.errors import ValidationError
from trickle.testing.clock import ManualClock

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


async def history_after_a_stall(max_lateness: float | None) -> list[tuple[str, str]]:
    """A job @every 10s whose scheduler wakes 25 s after its first fire (a stalled host):
    (status, scheduled_at second) of its history, oldest first."""
    clock = ManualClock(T0)
    config = EngineConfig(data_dir=None, node_name="n1", max_lateness=max_lateness)
    engine = Engine(config, clock=clock)

    async def noop(ctx: ExecutionContext) -> None:
        pass

    engine.register_executor("noop", noop)
    async with engine:
        await engine.put_job(Job(name="j", schedule="@every 10s", executor="noop"))
        await clock.advance(35)  # one jump: the fire at +10 s is reached 25 s late
        await clock.advance(1)
        page, _ = await engine.list_executions("j", sort="started_at", order="asc")
    return [(e.status.value, f"{(e.scheduled_at - T0).seconds}") for e in page]


async def test_a_fire_a_whole_period_late_is_recorded_missed_with_max_lateness():
    history = await history_after_a_stall(max_lateness=5)
    assert ("success", "10") not in history
    assert ("missed", "10") in history


async def test_without_max_lateness_the_late_fire_runs():
    history = await history_after_a_stall(max_lateness=None)
    assert ("success", "10") in history


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_a_max_lateness_that_is_not_a_positive_number_is_refused(bad: float) -> None:
    with pytest.raises(ValidationError, match="max_lateness"):
        EngineConfig(data_dir=None, max_lateness=bad)
