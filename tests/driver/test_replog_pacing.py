"""The replicated log's pacing: run results linger to share an entry, and applying stands
aside for an imminent launch, between two commands of one entry too."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial

import trio
import trio.testing

from trickle.engine import commands as c
from trickle.engine.fsm import Applied, StateMachine
from trickle.engine.guard import LaunchGuard
from trickle.engine.model import Job
from trickle.engine.replog import (
    LINGER,
    LINGER_COMMANDS,
    NOTIFY_SLICE,
    AppliedCallback,
    ReplicatedLog,
    encode_entry,
)
from trickle.engine.store import Store
from trickle.raft.messages import Entry

NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def _restored() -> None:
    pass


class CommitAfter:
    """A driver that commits each proposal ``delay`` seconds after it is made, noting each
    entry's commands and when it was proposed."""

    def __init__(self, log: ReplicatedLog, delay: float = 0.0) -> None:
        self.log = log
        self.delay = delay
        self.index = 0
        self.entries: list[int] = []  # commands per entry, in proposal order
        self.at: list[float] = []  # Trio time of each proposal
        self.applied_up_to: dict[int, trio.Event] = {0: trio.Event()}
        self.applied_up_to[0].set()

    async def propose(self, data: bytes) -> object:
        self.at.append(trio.current_time())
        self.entries.append(0)
        self.index += 1
        index = self.index
        self.applied_up_to.setdefault(index - 1, trio.Event())
        await trio.sleep(self.delay)
        await self.applied_up_to[index - 1].wait()  # in log order, as Raft applies
        [results] = await self.log.apply([Entry(term=1, index=index, data=data)])
        self.entries[index - 1] = len(results)
        self.applied_up_to.setdefault(index, trio.Event()).set()
        return results


def put(name: str) -> c.PutJob:
    return c.PutJob(job=Job(name=name, schedule="@every 1h", executor="shell"), now=NOW)


def make_log(
    guard: LaunchGuard | None = None, on_applied: AppliedCallback | None = None
) -> ReplicatedLog:
    return ReplicatedLog(
        Store(None),
        StateMachine(),
        on_applied=on_applied or (lambda pairs, replay: None),
        on_restored=_restored,
        inline=True,
        guard=guard,
    )


Script = Callable[[ReplicatedLog, trio.Nursery], Awaitable[None]]


async def run_proposals(delay: float, script: Script) -> tuple[CommitAfter, float]:
    """Run a log whose driver commits ``delay`` s after each proposal; ``script`` starts
    proposals in the nursery it is given. -> (the driver, the Trio time it started)."""
    log = make_log()
    driver = CommitAfter(log, delay=delay)
    log.attach(driver)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        start = trio.current_time()
        async with trio.open_nursery() as proposers:
            await script(log, proposers)
        nursery.cancel_scope.cancel()
    return driver, start


def result(log: ReplicatedLog, name: str) -> Callable[[], Awaitable[object]]:
    """A run result's proposal (it may linger)."""
    return partial(log.propose, [put(name)], linger=True)


async def test_a_result_on_an_idle_log_goes_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async def script(log: ReplicatedLog, proposers: trio.Nursery) -> None:
        await result(log, "j")()

    driver, start = await run_proposals(0.0, script)
    assert driver.entries == [1] and driver.at == [start]


async def test_results_behind_one_in_flight_wait_for_it_and_share_the_next_entry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def script(log: ReplicatedLog, proposers: trio.Nursery) -> None:
        proposers.start_soon(result(log, "first"))
        await trio.sleep(LINGER / 10)
        for i in range(4):
            proposers.start_soon(result(log, f"j{i}"))

    driver, start = await run_proposals(LINGER / 2, script)
    assert driver.entries == [1, 4]
    assert driver.at == [start, start + LINGER / 2]  # as soon as the first was applied


async def behind_a_slow_one(log: ReplicatedLog, proposers: trio.Nursery) -> None:
    proposers.start_soon(result(log, "first"))
    await trio.testing.wait_all_tasks_blocked()


async def test_a_result_lingers_no_longer_than_the_linger_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def script(log: ReplicatedLog, proposers: trio.Nursery) -> None:
        await behind_a_slow_one(log, proposers)
        proposers.start_soon(result(log, "second"))

    driver, start = await run_proposals(100 * LINGER, script)  # a slow commit
    assert driver.entries == [1, 1]
    assert driver.at == [start, start + LINGER]


async def test_an_eager_proposal_takes_the_lingering_ones_along_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def script(log: ReplicatedLog, proposers: trio.Nursery) -> None:
        await behind_a_slow_one(log, proposers)
        proposers.start_soon(result(log, "result"))
        await trio.testing.wait_all_tasks_blocked()
        proposers.start_soon(log.propose, [put("api-write")])  # does not linger

    driver, start = await run_proposals(100 * LINGER, script)
    assert driver.entries == [1, 2]
    assert driver.at == [start, start]  # no time passed


async def test_enough_lingering_commands_go_without_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def script(log: ReplicatedLog, proposers: trio.Nursery) -> None:
        await behind_a_slow_one(log, proposers)
        many = [put(f"j{i}") for i in range(LINGER_COMMANDS)]
        proposers.start_soon(partial(log.propose, many, linger=True))

    driver, start = await run_proposals(100 * LINGER, script)
    assert driver.entries == [1, LINGER_COMMANDS]
    assert driver.at == [start, start]


async def test_applying_a_long_entry_stands_aside_between_its_commands_for_a_launch() -> None:
    guard = LaunchGuard(lead=0.001)
    log = make_log(guard)
    fsm = log._fsm
    n = 8
    seen: list[int] = []  # jobs applied when the launch happened
    guard.expect(trio.current_time())  # a launch is due now: the applier must wait for it
    data = encode_entry([put(f"j{i}") for i in range(n)])

    async def dispatcher() -> None:
        await trio.testing.wait_all_tasks_blocked()
        seen.append(len(fsm.jobs))
        guard.expect(None)
        guard.launched()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(dispatcher)
        results = await log.apply([Entry(term=1, index=1, data=data)])
    assert seen == [0]  # the launch went before the entry's first command
    assert len(results[0]) == n and len(fsm.jobs) == n
    assert guard.waits == 1


async def test_notifications_of_a_big_batch_come_in_slices_when_a_launch_is_near() -> None:
    guard = LaunchGuard(lead=0.001)
    calls: list[int] = []

    def on_applied(pairs: list[tuple[c.Command, Applied]], replay: bool) -> None:
        calls.append(len(pairs))
        if len(calls) == 1:  # a launch comes near while the first slice is reported
            guard.expect(trio.current_time())

    log = make_log(guard, on_applied)
    n = 2 * NOTIFY_SLICE + 3
    entry = Entry(term=1, index=1, data=encode_entry([put(f"j{i}") for i in range(n)]))

    async def dispatcher() -> None:
        while True:
            await trio.testing.wait_all_tasks_blocked()
            guard.expect(None)
            guard.launched()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(dispatcher)
        await log.apply([entry])
        nursery.cancel_scope.cancel()
    assert calls == [NOTIFY_SLICE, NOTIFY_SLICE, 3]
    assert guard.waits == 1


async def test_notifications_of_a_batch_go_on_without_waiting_with_no_launch_near() -> None:
    guard = LaunchGuard(lead=0.001)
    calls: list[int] = []
    log = make_log(guard, lambda pairs, replay: calls.append(len(pairs)))
    n = 2 * NOTIFY_SLICE + 3
    entry = Entry(term=1, index=1, data=encode_entry([put(f"j{i}") for i in range(n)]))
    await log.apply([entry])
    assert sum(calls) == n
    assert guard.waits == 0
