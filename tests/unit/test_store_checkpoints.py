"""A file store's WAL is checkpointed in a thread of its own, never inside a commit: no
apply waits for an fsync of the database file, on whatever thread it runs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from trickle.engine import commands as c
from trickle.engine import store as store_module
from trickle.engine.model import Job
from trickle.engine.store import Store

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def put(store: Store, index: int) -> None:
    job = Job(name=f"j{index}", schedule="@every 1h", executor="shell", created_at=NOW)
    store.apply([c.JobSaved(job)], applied_index=index, fsm_meta=b"")


def test_commits_leave_the_wal_to_the_checkpoint_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY_COMMITS", 4)
    with Store(tmp_path) as store:
        writer = store._writer.raw_connection()
        try:
            assert writer.cursor().execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        finally:
            writer.close()
        checkpointer = store._checkpointer
        assert checkpointer is not None and checkpointer._thread is None  # not yet needed
        for index in range(1, 9):
            put(store, index)
        assert checkpointer.wait_for(1, timeout=10)
        assert checkpointer.failures == 0
    assert checkpointer._thread is not None and not checkpointer._thread.is_alive()
    with Store(tmp_path) as store:  # everything is there after close and reopen
        assert store.load().applied_index == 8
        assert len(store.load().jobs) == 8


def test_an_in_memory_store_has_no_checkpoint_thread() -> None:
    with Store(None) as store:
        put(store, 1)
        assert store._checkpointer is None


def test_closing_a_store_that_never_checkpointed_starts_no_thread(tmp_path: Path) -> None:
    store = Store(tmp_path)
    put(store, 1)
    store.close()
    assert store._checkpointer is not None and store._checkpointer._thread is None
    store.close()  # idempotent
