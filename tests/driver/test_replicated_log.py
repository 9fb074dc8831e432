"""The engine's replicated log around a Raft driver, with a driver that never commits."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import trio
import trio.testing

from trickle.engine import commands as c
from trickle.engine.fsm import StateMachine
from trickle.engine.replog import ReplicatedLog
from trickle.engine.store import Store
from trickle.errors import EngineClosed, NotLeader


class StuckDriver:
    """Takes proposals and never commits them (a cluster without quorum)."""

    def __init__(self) -> None:
        self.proposed = 0
        self.taken = trio.Event()

    async def propose(self, data: bytes) -> object:
        self.proposed += 1
        self.taken.set()
        await trio.sleep_forever()


def make_log() -> tuple[ReplicatedLog, StuckDriver, Store]:
    store = Store(None)

    async def restored() -> None:
        pass

    log = ReplicatedLog(
        store,
        StateMachine(),
        on_applied=lambda pairs, replay: None,
        on_restored=restored,
        inline=True,
    )
    driver = StuckDriver()
    log.attach(driver)
    return log, driver, store


NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def test_a_proposal_in_flight_ends_when_the_log_stops(autojump_clock):
    """Regression: a proposal handed to the driver when the log was cancelled never
    heard back, and a shielded launch waiting on it held the engine's stop for its
    whole timeout."""
    log, driver, store = make_log()
    outcome: list[BaseException] = []
    ended = trio.Event()
    async with trio.open_nursery() as nursery:
        log_scope = trio.CancelScope()

        async def run_log(task_status: trio.TaskStatus[None]) -> None:
            with log_scope:
                await log.run(task_status=task_status)

        await nursery.start(run_log)

        async def shielded_proposal() -> None:
            # shielded with a deadline, as the engine's launches are (LAUNCH_TIMEOUT)
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 60):
                try:
                    await log.propose([c.DeleteJob(name="x", now=NOW)])
                except EngineClosed as exc:
                    outcome.append(exc)
            ended.set()

        nursery.start_soon(shielded_proposal)
        await driver.taken.wait()
        stopped_at = trio.current_time()
        log_scope.cancel()
        await ended.wait()
    assert outcome and isinstance(outcome[0], EngineClosed)
    assert trio.current_time() - stopped_at < 1
    store.close()


async def test_a_launch_needs_this_node_to_lead():
    log, driver, store = make_log()
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        with pytest.raises(NotLeader):
            await log.propose([c.DeleteJob(name="x", now=NOW)], urgent=True)
        assert driver.proposed == 0
        nursery.cancel_scope.cancel()
    store.close()
