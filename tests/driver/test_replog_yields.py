"""Applying a long batch of committed entries lets other tasks run between its entries."""

from __future__ import annotations

from datetime import UTC, datetime

import trio

from trickle.engine import commands as c
from trickle.engine.fsm import StateMachine
from trickle.engine.model import Job
from trickle.engine.replog import APPLY_YIELD_COMMANDS, ReplicatedLog, encode_entry
from trickle.engine.store import Store
from trickle.raft.messages import Entry

NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def test_a_batch_of_many_commands_yields_to_other_tasks_between_entries():
    async def restored() -> None:
        pass

    fsm = StateMachine()
    log = ReplicatedLog(
        Store(None), fsm, on_applied=lambda pairs, replay: None, on_restored=restored, inline=True
    )
    per_entry = 64
    # 16 yields: Trio runs the two tasks of a round in either order, so with 4 the other
    # task saw a single count inside the batch 1 time in 8 (it ran, but after the applier
    # each time); with 16 that takes 15 unlucky rounds in a row
    n = 16 * APPLY_YIELD_COMMANDS // per_entry
    entries = [
        Entry(
            term=1,
            index=i + 1,
            data=encode_entry(
                [
                    c.PutJob(
                        job=Job(name=f"j{i}-{k}", schedule="@every 1h", executor="shell"), now=NOW
                    )
                    for k in range(per_entry)
                ]
            ),
        )
        for i in range(n)
    ]
    seen: list[int] = []  # jobs the state held each time the other task ran

    async def other() -> None:
        while True:
            seen.append(len(fsm.jobs))
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await log.apply(entries)
        nursery.cancel_scope.cancel()
    during = [count for count in seen if 0 < count < n * per_entry]
    assert len(set(during)) >= 2, seen  # it ran at several points inside the batch
