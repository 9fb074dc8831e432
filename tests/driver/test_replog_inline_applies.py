"""A file store's applies run on the event loop while they are quick, and go back to a
worker thread after a slow one: a small transaction costs less than the hand-off."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from trickle.engine import commands as c
from trickle.engine import replog as replog_module
from trickle.engine.fsm import StateMachine
from trickle.engine.model import Job
from trickle.engine.replog import APPLY_SAMPLES, ReplicatedLog, encode_entry
from trickle.engine.store import Store
from trickle.raft.messages import Entry

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def entry(index: int) -> Entry:
    job = Job(name=f"j{index}", schedule="@every 1h", executor="shell")
    return Entry(term=1, index=index, data=encode_entry([c.PutJob(job=job, now=NOW)]))


async def restored() -> None:
    pass


async def test_quick_applies_move_to_the_event_loop_and_a_slow_one_moves_them_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replog_module, "INLINE_APPLY_SECONDS", 60.0)  # every apply is quick
    threads: list[bool] = []  # each apply: on the event loop (True) or not
    with Store(tmp_path) as store:
        original = store.apply

        def apply(*args: object, **kwargs: object) -> None:
            threads.append(trio.lowlevel.in_trio_task())
            original(*args, **kwargs)  # type: ignore[arg-type]

        store.apply = apply  # type: ignore[method-assign]
        log = ReplicatedLog(
            store, StateMachine(), on_applied=lambda pairs, replay: None, on_restored=restored
        )
        index = 0
        for _ in range(APPLY_SAMPLES + 3):
            index += 1
            await log.apply([entry(index)])
        # the first APPLY_SAMPLES in a worker thread, measured; then on the event loop
        assert threads == [False] * APPLY_SAMPLES + [True] * 3
        assert log.inline_applies == 3
        monkeypatch.setattr(replog_module, "STALLED_APPLY_SECONDS", 0.0)  # now all are slow
        for _ in range(3):
            index += 1
            await log.apply([entry(index)])
        assert threads[-3:] == [True, False, False]  # the slow one sends the next away
        assert store.load().applied_index == index


async def test_an_in_memory_store_applies_inline_from_the_start() -> None:
    with Store(None) as store:
        log = ReplicatedLog(
            store,
            StateMachine(),
            on_applied=lambda pairs, replay: None,
            on_restored=restored,
            inline=True,
        )
        await log.apply([entry(1)])
        assert store.load().applied_index == 1
