"""MemoryStorage: crash copies, counters, and the writes the storage contract refuses.

The behaviour both stores share (round trips, suffix replacement, snapshots, compaction,
reopen) is the contract suite in tests/integration/test_raft_storage.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from trickle.errors import ValidationError
from trickle.raft.messages import (
    ConfState,
    DurableState,
    Entry,
    HardState,
    NodeId,
    Snapshot,
    SnapshotMeta,
)
from trickle.raft.storage import MemoryStorage, RaftStorageError

CONF = ConfState(voters=frozenset({NodeId("a"), NodeId("b"), NodeId("c")}))


def entries(term: int, first: int, last: int) -> list[Entry]:
    return [Entry(term=term, index=i, data=f"e{i}".encode()) for i in range(first, last + 1)]


def snapshot(index: int, term: int, data: bytes = b"image") -> Snapshot:
    return Snapshot(meta=SnapshotMeta(index=index, term=term, conf=CONF), data=data)


def store_with_log() -> MemoryStorage:
    """Term 2, vote a, entries 1..5 of term 1 and 6..8 of term 2, committed up to 4."""
    store = MemoryStorage()
    store.save(hard_state=HardState(term=1, vote=NodeId("a")), entries=entries(1, 1, 5))
    store.save(hard_state=HardState(term=2, vote=NodeId("a"), commit=4), entries=entries(2, 6, 8))
    return store


def test_snapshot_copy_keeps_the_state_of_the_last_completed_save() -> None:
    store = store_with_log()
    before = store.load()
    crashed = store.snapshot_copy()
    store.save(entries=entries(2, 9, 10))
    store.compact(snapshot(4, 1), keep_from=3)
    assert crashed.load() == before
    crashed.save(entries=[Entry(term=2, index=9, data=b"other")])
    assert store.load().entries[-2] == Entry(term=2, index=9, data=b"e9")


def test_snapshot_copy_of_a_closed_store_still_holds_its_state() -> None:
    store = store_with_log()
    before = store.load()
    store.close()
    with pytest.raises(RaftStorageError, match="closed"):
        store.load()
    with pytest.raises(RaftStorageError, match="closed"):
        store.save(entries=entries(2, 9, 9))
    restarted = store.snapshot_copy()
    assert restarted.load() == before
    assert (restarted.saves, restarted.entries_written) == (0, 0)


def test_counters_count_completed_saves_and_the_entries_they_wrote() -> None:
    store = store_with_log()
    assert (store.saves, store.entries_written, store.compactions) == (2, 8, 0)
    store.save(hard_state=HardState(term=2, vote=NodeId("a"), commit=6))
    store.compact(snapshot(5, 1), keep_from=4)
    with pytest.raises(ValidationError):
        store.save(entries=entries(2, 20, 21))
    assert (store.saves, store.entries_written, store.compactions) == (3, 8, 1)


def test_empty_save_is_a_completed_save_that_changes_nothing() -> None:
    store = store_with_log()
    before = store.load()
    store.save()
    assert store.load() == before


def test_rewriting_committed_entries_with_the_same_terms_is_accepted() -> None:
    store = store_with_log()
    store.save(entries=entries(1, 3, 5) + entries(3, 6, 6))
    assert [e.term for e in store.load().entries] == [1, 1, 1, 1, 1, 3]


def test_fresh_log_starts_at_index_one() -> None:
    store = MemoryStorage()
    with pytest.raises(ValidationError, match="gap"):
        store.save(entries=entries(1, 2, 3))
    store.save(entries=entries(1, 1, 1))
    assert store.load() == DurableState(entries=tuple(entries(1, 1, 1)))


BAD_SAVES: dict[str, tuple[Callable[[MemoryStorage], None], str]] = {
    "gap after the log": (lambda s: s.save(entries=entries(2, 10, 10)), "gap"),
    "not contiguous": (
        lambda s: s.save(entries=[*entries(2, 9, 9), *entries(2, 11, 11)]),
        "not contiguous",
    ),
    "terms go back in a batch": (
        lambda s: s.save(entries=[*entries(3, 9, 9), *entries(2, 10, 10)]),
        "terms go back",
    ),
    "term zero": (lambda s: s.save(entries=entries(0, 9, 9)), "terms start at 1"),
    "rewrites a committed entry": (
        lambda s: s.save(entries=entries(3, 4, 4)),
        "rewrites committed entry 1/4",
    ),
    "term goes back": (
        lambda s: s.save(hard_state=HardState(term=1, vote=NodeId("a"), commit=4)),
        "term goes back from 2 to 1",
    ),
    "second vote in a term": (
        lambda s: s.save(hard_state=HardState(term=2, vote=NodeId("b"), commit=4)),
        "second vote in term 2",
    ),
    "vote withdrawn in a term": (
        lambda s: s.save(hard_state=HardState(term=2, vote=None, commit=4)),
        "second vote in term 2",
    ),
    "commit beyond the log": (
        lambda s: s.save(hard_state=HardState(term=2, vote=NodeId("a"), commit=9)),
        "commit index 9 would be beyond the log's last index 8",
    ),
    "snapshot conflicts with a committed entry": (
        lambda s: s.save(snapshot=snapshot(3, 2)),
        "conflicts with committed entry 1/3",
    ),
    "entries covered by the snapshot in the same save": (
        lambda s: s.save(snapshot=snapshot(20, 3), entries=entries(3, 20, 21)),
        "covered by the snapshot at 20",
    ),
    "snapshot index zero": (lambda s: s.save(snapshot=snapshot(0, 1)), "at least 1"),
    "compact keep_from beyond the snapshot": (
        lambda s: s.compact(snapshot(4, 1), keep_from=6),
        "keep_from 6 must be in 1..5",
    ),
    "compact keep_from zero": (
        lambda s: s.compact(snapshot(4, 1), keep_from=0),
        "keep_from 0 must be in 1..5",
    ),
    "compact at a term the log does not have": (
        lambda s: s.compact(snapshot(4, 2), keep_from=4),
        "does not match the log's term 1",
    ),
    "compact beyond the log": (
        lambda s: s.compact(snapshot(12, 2), keep_from=4),
        "not in the log",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SAVES), ids=list(BAD_SAVES))
def test_writes_raft_never_makes_are_refused_and_change_nothing(case: str) -> None:
    call, message = BAD_SAVES[case]
    store = store_with_log()
    before = store.load()
    with pytest.raises(ValidationError, match=message):
        call(store)
    assert store.load() == before


def test_older_snapshot_is_refused() -> None:
    store = store_with_log()
    store.compact(snapshot(4, 1), keep_from=2)
    before = store.load()
    with pytest.raises(ValidationError, match="older than the stored snapshot 1/4"):
        store.save(snapshot=snapshot(3, 1))
    with pytest.raises(ValidationError, match="older than the stored snapshot 1/4"):
        store.compact(snapshot(3, 1), keep_from=2)
    assert store.load() == before


def test_entries_may_follow_a_snapshot_that_replaced_the_log() -> None:
    store = store_with_log()
    store.save(
        snapshot=snapshot(30, 3),
        entries=entries(3, 31, 32),
        hard_state=HardState(term=3, vote=None, commit=30),
    )
    state = store.load()
    assert state.snapshot == snapshot(30, 3)
    assert state.entries == tuple(entries(3, 31, 32))
