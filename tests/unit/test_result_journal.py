"""ResultJournal: an agent's undelivered results on disk, read back after a restart."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from trickle.engine.commands import RunFinished
from trickle.engine.journal import ResultJournal

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def result(n: int, *, output: str = "ok") -> RunFinished:
    return RunFinished(
        job_name="job",
        execution_id=f"2026010100000{n}-a1",
        finished_at=T0 + timedelta(seconds=10 - n),  # later ids finished earlier
        success=True,
        output=output,
    )


def test_kept_results_come_back_oldest_finish_first_until_removed(tmp_path: Path) -> None:
    journal = ResultJournal(tmp_path / "results")
    for n in (1, 2, 3):
        journal.save(result(n))
    journal.save(result(2, output="replaced"))
    journal.remove(result(1).execution_id)
    journal.remove("never-kept")
    loaded = ResultJournal(tmp_path / "results").load()
    assert loaded == [result(3), result(2, output="replaced")]


def test_a_damaged_file_is_set_aside_and_a_leftover_temporary_file_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = ResultJournal(tmp_path)
    journal.save(result(1))
    (tmp_path / "2026010100000009-a1.result").write_bytes(b"\x93garbage")
    (tmp_path / "x.result.tmp").write_bytes(b"half")
    with caplog.at_level(logging.ERROR):
        assert journal.load() == [result(1)]
    assert "cannot be read" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "2026010100000009-a1.result.bad",
        f"{result(1).execution_id}.result",
    ]


def test_without_a_directory_nothing_is_kept(tmp_path: Path) -> None:
    journal = ResultJournal(None)
    journal.save(result(1))
    assert journal.load() == []
