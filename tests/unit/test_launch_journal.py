"""The launch journal: which runs this server launched, across restarts of its process on
the same boot of the machine (trickle.engine.journal.LaunchJournal)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from trickle.engine.journal import LAUNCHES_FILE, LaunchJournal
from trickle.engine.model import execution_id

T0 = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)


def journal(
    directory: Path | None, boot: str | None = "boot-1", max_kept: int = 1000
) -> LaunchJournal:
    return LaunchJournal(directory, boot_id=lambda: boot, max_kept=max_kept)


def run_id(seconds: float) -> str:
    return execution_id(T0 + timedelta(seconds=seconds), "s1")


def test_a_restart_on_the_same_boot_knows_what_the_last_process_launched(tmp_path: Path) -> None:
    first = journal(tmp_path)
    assert first.open(T0) == (None, set())  # nothing earlier to trust
    assert first.since == T0
    first.record(run_id(1))
    first.record(run_id(2))
    # kill -9: nothing closed, nothing flushed beyond the writes themselves
    since, launched = journal(tmp_path).open(T0 + timedelta(seconds=5))
    assert since == T0
    assert launched == {run_id(1), run_id(2)}


def test_the_chain_goes_on_across_several_restarts(tmp_path: Path) -> None:
    a = journal(tmp_path)
    a.open(T0)
    a.record(run_id(1))
    b = journal(tmp_path)
    b.open(T0 + timedelta(seconds=10))
    b.record(run_id(11))
    since, launched = journal(tmp_path).open(T0 + timedelta(seconds=20))
    assert since == T0
    assert launched == {run_id(1), run_id(11)}


def test_after_a_reboot_nothing_earlier_is_trusted(tmp_path: Path) -> None:
    a = journal(tmp_path, boot="boot-1")
    a.open(T0)
    a.record(run_id(1))
    later = T0 + timedelta(seconds=60)
    b = journal(tmp_path, boot="boot-2")
    assert b.open(later) == (None, set())
    assert b.since == later  # the new chain starts now
    b.record(run_id(61))
    assert journal(tmp_path, boot="boot-2").open(later) == (later, {run_id(61)})


def test_without_a_boot_id_or_a_data_dir_nothing_is_kept(tmp_path: Path) -> None:
    earlier = journal(tmp_path)  # a process that could read the boot id
    earlier.open(T0)
    earlier.record(run_id(1))
    no_boot = journal(tmp_path, boot=None)  # it would not journal: the file must go
    assert no_boot.open(T0) == (None, set())
    no_boot.record(run_id(1))
    assert no_boot.since is None
    assert not (tmp_path / LAUNCHES_FILE).exists()
    no_dir = journal(None)
    assert no_dir.open(T0) == (None, set())
    no_dir.record(run_id(1))
    assert no_dir.since is None


@pytest.mark.parametrize(
    "content",
    [b"", b"not json\n", b'{"v": 99, "boot": "boot-1", "since": 1}\n', b'{"v": 1}\n', b"[]\n"],
)
def test_a_damaged_journal_is_not_trusted(tmp_path: Path, content: bytes) -> None:
    (tmp_path / LAUNCHES_FILE).write_bytes(content)
    assert journal(tmp_path).open(T0) == (None, set())


def test_a_torn_last_line_is_not_taken_for_an_id(tmp_path: Path) -> None:
    a = journal(tmp_path)
    a.open(T0)
    a.record(run_id(1))
    with (tmp_path / LAUNCHES_FILE).open("ab") as f:
        f.write(run_id(2)[:7].encode())  # a write cut short: no newline
    assert journal(tmp_path).open(T0) == (T0, {run_id(1)})


def test_when_full_it_keeps_the_newer_half_and_since_moves_past_the_rest(tmp_path: Path) -> None:
    a = journal(tmp_path, max_kept=10)
    a.open(T0)
    for second in range(1, 12):  # the 11th record finds 10 ids: the older 5 go
        a.record(run_id(second))
    assert a.since == T0 + timedelta(seconds=5)
    # a restart reads the 6 ids and keeps the newer half (5) of the room: since moves on
    since, launched = journal(tmp_path, max_kept=10).open(T0 + timedelta(seconds=20))
    assert since == T0 + timedelta(seconds=6)
    assert launched == {run_id(s) for s in range(7, 12)}


def test_a_journal_that_cannot_be_written_is_removed(tmp_path: Path) -> None:
    """A journal missing a launched run must never be trusted: the next start would take
    that run for one never launched and start it again."""
    a = journal(tmp_path)
    a.open(T0)
    a.record(run_id(1))
    a.close()  # a write now fails (the descriptor is gone): as a full or failing disk
    a._fd = 10_000  # a descriptor that is not open
    a.record(run_id(2))
    assert not (tmp_path / LAUNCHES_FILE).exists()
    assert a.since is None
    assert journal(tmp_path).open(T0) == (None, set())


def test_the_header_names_its_boot_and_since(tmp_path: Path) -> None:
    journal(tmp_path).open(T0)
    header = json.loads((tmp_path / LAUNCHES_FILE).read_text().splitlines()[0])
    assert header["boot"] == "boot-1" and header["v"] == 1
    assert header["since"] == int((T0 - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 10**6
