"""Raft storage: one contract suite over both stores, and crash tests of the SQLite store.

The crash tests take images of a live store's files (the database, its WAL and the WAL
index) between saves, or after killing a writer process in the middle of its saves, then
damage the WAL's tail the way a power loss does (cut at a random byte, zeroed, flipped
bytes in the last frame) and open the image: ``load()`` must return exactly the state
after one of the completed saves. Damage stays beyond the frames a checkpoint may already
have copied into the database file: those were fsynced before the checkpoint, so no crash
can tear them, and cutting them would leave newer pages in the file than in the log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from trickle.errors import StorageCorrupt, ValidationError
from trickle.raft import sqlstore
from trickle.raft.messages import (
    ConfState,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    NodeId,
    Snapshot,
    SnapshotMeta,
)
from trickle.raft.sqlstore import SqliteRaftStorage
from trickle.raft.storage import (
    CHUNK_BYTES,
    Durability,
    EntriesCompacted,
    MemoryStorage,
    RaftStorage,
    RaftStorageError,
    SnapshotFile,
)

NODES = (NodeId("n1"), NodeId("n2"), NodeId("n3"))
CONF = ConfState(voters=frozenset(NODES))
SMALL_CHECKPOINT_PAGES = 32  # crash tests: checkpoints and WAL restarts every few saves

Op = tuple[Any, ...]  # ("save", kwargs) | ("compact", Snapshot, keep_from)


# -- a Raft-like workload, and the state after each of its operations -----------------------


def apply_op(store: RaftStorage, op: Op) -> None:
    if op[0] == "save":
        store.save(**op[1])
    else:
        store.compact(op[1], keep_from=op[2])


def random_ops(
    rng: random.Random, count: int, *, max_data: int = 200
) -> tuple[list[Op], list[DurableState]]:
    """``count`` valid operations (appends, conflicting suffixes, votes, commits,
    compactions, snapshots from a leader) and ``states[i]``, the state after ``i`` of them.
    """
    model = MemoryStorage()
    ops: list[Op] = []
    states = [model.load()]
    while len(ops) < count:
        op = _next_op(rng, model, max_data)
        apply_op(model, op)
        ops.append(op)
        states.append(model.load())
    return ops, states


def _next_op(rng: random.Random, model: MemoryStorage, max_data: int) -> Op:
    hs = model.hard_state
    snap_index = model.snapshot_index
    last = max(model.last_entry_index, snap_index)
    term = hs.term

    def data(limit: int = max_data) -> bytes:
        return rng.randbytes(rng.randint(0, limit))

    def conf() -> ConfState:
        voters = frozenset(rng.sample(NODES, rng.randint(1, 3)))
        return ConfState(voters=voters, learners=frozenset(NODES) - voters)

    if term == 0:
        return ("save", {"hard_state": HardState(term=1, vote=rng.choice(NODES))})
    r = rng.random()
    if r < 0.55:  # the leader appends a batch; commit moves on
        n = rng.choice((1, 1, 1, 2, 4, 16))
        kinds = (EntryKind.NORMAL,) * 5 + (EntryKind.CONF_CHANGE,)
        new = [
            Entry(term=term, index=last + 1 + i, kind=rng.choice(kinds), data=data())
            for i in range(n)
        ]
        commit = rng.randint(hs.commit, last + n) if rng.random() < 0.7 else hs.commit
        hard = HardState(term=term, vote=hs.vote, commit=commit)
        return ("save", {"entries": new, "hard_state": hard})
    if r < 0.7:  # a new leader overwrites the uncommitted suffix
        start = rng.randint(max(hs.commit, snap_index) + 1, last + 1)
        new = [Entry(term=term + 1, index=start + i, data=data()) for i in range(rng.randint(1, 4))]
        hard = HardState(term=term + 1, vote=rng.choice((None, *NODES)), commit=hs.commit)
        return ("save", {"entries": new, "hard_state": hard})
    if r < 0.8:  # hard state alone: a vote in a new term, or a commit
        if rng.random() < 0.4:
            hard = HardState(term=term + 1, vote=rng.choice(NODES), commit=hs.commit)
        else:
            vote = hs.vote or rng.choice(NODES)
            hard = HardState(term=term, vote=vote, commit=rng.randint(hs.commit, last))
        return ("save", {"hard_state": hard})
    if r < 0.92 and hs.commit > snap_index:  # the application snapshots and compacts
        index = rng.randint(snap_index + 1, hs.commit)
        index_term = model.stored_term(index)
        assert index_term is not None
        first = model.load().entries[0].index
        meta = SnapshotMeta(index=index, term=index_term, conf=conf())
        return (
            "compact",
            Snapshot(meta=meta, data=data(4 * max_data)),
            rng.randint(first, index + 1),
        )
    # a snapshot from the leader: matching the log (keeps it) or beyond it (replaces it)
    low = max(hs.commit, snap_index, 1)
    if rng.random() < 0.5 and last >= low:
        index = rng.randint(low, last)
        index_term = model.stored_term(index) or model.snapshot_term
    else:
        index, index_term = last + rng.randint(1, 10), term
    meta = SnapshotMeta(index=index, term=index_term, conf=conf())
    hard = HardState(term=term, vote=hs.vote, commit=max(hs.commit, index))
    return ("save", {"snapshot": Snapshot(meta=meta, data=data(4 * max_data)), "hard_state": hard})


# -- the contract suite, over both stores ----------------------------------------------------


class StoreKind:
    """Opens a store and "restarts" it: the memory store restarts from a crash copy."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self._open: list[RaftStorage] = []

    def open(self) -> RaftStorage:
        store: RaftStorage = (
            MemoryStorage() if self.name == "memory" else SqliteRaftStorage(self.path)
        )
        self._open.append(store)
        return store

    def reopen(self, store: RaftStorage) -> RaftStorage:
        store.close()
        if isinstance(store, MemoryStorage):
            copy = store.snapshot_copy()
            self._open.append(copy)
            return copy
        return self.open()

    def close_all(self) -> None:
        for store in self._open:
            store.close()


@pytest.fixture(params=["memory", "sqlite"])
def kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreKind]:
    stores = StoreKind(request.param, tmp_path / "data" / "raft.db")
    yield stores
    stores.close_all()


def entries(term: int, first: int, last: int, tag: str = "e") -> list[Entry]:
    return [Entry(term=term, index=i, data=f"{tag}{i}".encode()) for i in range(first, last + 1)]


def snapshot(index: int, term: int, data: bytes = b"image") -> Snapshot:
    return Snapshot(meta=SnapshotMeta(index=index, term=term, conf=CONF), data=data)


def test_empty_store_loads_an_empty_durable_state(kind: StoreKind) -> None:
    store = kind.open()
    assert store.load() == DurableState()
    assert kind.reopen(store).load() == DurableState()


def test_save_and_load_round_trip(kind: StoreKind) -> None:
    store = kind.open()
    log = [
        Entry(term=1, index=1, kind=EntryKind.CONF_CHANGE, data=b"\x93\x03\xa2n1\xc4\x00"),
        Entry(term=1, index=2),
        Entry(term=1, index=3, data=bytes(range(256))),
    ]
    hard = HardState(term=1, vote=NodeId("n1"), commit=2)
    store.save(hard_state=hard, entries=log)
    expected = DurableState(hard_state=hard, entries=tuple(log))
    assert store.load() == expected
    assert kind.reopen(store).load() == expected


def test_entries_replace_the_stored_suffix_from_their_first_index(kind: StoreKind) -> None:
    store = kind.open()
    store.save(hard_state=HardState(term=1, vote=NodeId("n1"), commit=2), entries=entries(1, 1, 6))
    store.save(hard_state=HardState(term=2, commit=2), entries=entries(2, 4, 5, tag="new"))
    expected = tuple(entries(1, 1, 3) + entries(2, 4, 5, tag="new"))
    assert store.load().entries == expected
    store = kind.reopen(store)
    assert store.load().entries == expected
    store.save(entries=entries(2, 6, 6, tag="next"))  # appends after a reopen
    assert kind.reopen(store).load().entries == (*expected, *entries(2, 6, 6, tag="next"))


def test_hard_state_saved_alone_keeps_the_log(kind: StoreKind) -> None:
    store = kind.open()
    store.save(hard_state=HardState(term=1, vote=NodeId("n1")), entries=entries(1, 1, 3))
    store.save(hard_state=HardState(term=3, vote=None, commit=2))
    store.save(hard_state=HardState(term=3, vote=NodeId("n2"), commit=3))
    expected = DurableState(
        hard_state=HardState(term=3, vote=NodeId("n2"), commit=3), entries=tuple(entries(1, 1, 3))
    )
    assert kind.reopen(store).load() == expected


def test_snapshot_that_does_not_match_the_log_replaces_every_entry(kind: StoreKind) -> None:
    store = kind.open()
    store.save(hard_state=HardState(term=2, vote=NodeId("n1"), commit=3), entries=entries(2, 1, 8))
    hard = HardState(term=3, vote=None, commit=6)
    store.save(snapshot=snapshot(6, 3), hard_state=hard)  # term 3 at 6: the log has term 2
    expected = DurableState(hard_state=hard, snapshot=snapshot(6, 3))
    assert store.load() == expected
    store = kind.reopen(store)
    assert store.load() == expected
    store.save(entries=entries(3, 7, 7))
    assert kind.reopen(store).load().entries == tuple(entries(3, 7, 7))


def test_snapshot_matching_the_log_keeps_the_entries(kind: StoreKind) -> None:
    store = kind.open()
    log = entries(1, 1, 3) + entries(2, 4, 8)
    store.save(hard_state=HardState(term=2, vote=NodeId("n1"), commit=3), entries=log)
    hard = HardState(term=2, vote=NodeId("n1"), commit=5)
    store.save(snapshot=snapshot(5, 2, b"at five"), hard_state=hard)
    expected = DurableState(
        hard_state=hard, snapshot=snapshot(5, 2, b"at five"), entries=tuple(log)
    )
    assert store.load() == expected
    assert kind.reopen(store).load() == expected


def test_snapshot_beyond_the_log_with_entries_after_it(kind: StoreKind) -> None:
    store = kind.open()
    store.save(hard_state=HardState(term=1, vote=NodeId("n1"), commit=2), entries=entries(1, 1, 3))
    hard = HardState(term=4, vote=None, commit=20)
    store.save(snapshot=snapshot(20, 4), entries=entries(4, 21, 22), hard_state=hard)
    expected = DurableState(
        hard_state=hard, snapshot=snapshot(20, 4), entries=tuple(entries(4, 21, 22))
    )
    assert kind.reopen(store).load() == expected


def test_compact_keeps_entries_from_keep_from(kind: StoreKind) -> None:
    store = kind.open()
    store.save(hard_state=HardState(term=1, vote=NodeId("n1"), commit=8), entries=entries(1, 1, 10))
    store.compact(snapshot(8, 1, b"state at 8"), keep_from=5)
    expected = DurableState(
        hard_state=HardState(term=1, vote=NodeId("n1"), commit=8),
        snapshot=snapshot(8, 1, b"state at 8"),
        entries=tuple(entries(1, 5, 10)),
    )
    assert store.load() == expected
    store = kind.reopen(store)
    assert store.load() == expected
    store.compact(snapshot(10, 1, b"state at 10"), keep_from=11)  # every entry goes
    store.save(entries=entries(2, 11, 12))
    state = kind.reopen(store).load()
    assert state.snapshot == snapshot(10, 1, b"state at 10")
    assert state.entries == tuple(entries(2, 11, 12))


def test_term_and_vote_never_go_back_across_reopen(kind: StoreKind, sim_seed: int) -> None:
    rng = random.Random(sim_seed)
    store = kind.open()
    term, vote = 0, None
    for _ in range(6):
        if rng.random() < 0.5 or vote is not None:
            term, vote = term + rng.randint(1, 3), rng.choice((None, *NODES))
        else:
            vote = rng.choice(NODES)
        store.save(hard_state=HardState(term=term, vote=vote))
        store = kind.reopen(store)
        assert store.load().hard_state == HardState(term=term, vote=vote)
        with pytest.raises(ValidationError):
            store.save(hard_state=HardState(term=term - 1, vote=vote))
        if vote is not None:
            other = next(n for n in NODES if n != vote)
            with pytest.raises(ValidationError):
                store.save(hard_state=HardState(term=term, vote=other))


def test_refused_write_stores_nothing(kind: StoreKind) -> None:
    store = kind.open()
    store.save(hard_state=HardState(term=2, vote=NodeId("n1"), commit=2), entries=entries(2, 1, 4))
    before = store.load()
    with pytest.raises(ValidationError, match="gap"):
        store.save(snapshot=snapshot(3, 2, b"x"), entries=entries(2, 9, 9))
    with pytest.raises(ValidationError, match="second vote"):
        store.save(entries=entries(2, 5, 5), hard_state=HardState(term=2, vote=NodeId("n2")))
    assert store.load() == before
    assert kind.reopen(store).load() == before


def test_random_workload_reopens_to_exactly_what_was_saved(kind: StoreKind, sim_seed: int) -> None:
    rng = random.Random(sim_seed)
    ops, states = random_ops(rng, 60)
    store = kind.open()
    for i, op in enumerate(ops, 1):
        apply_op(store, op)
        if rng.random() < 0.2 or i == len(ops):
            store = kind.reopen(store)
            assert store.load() == states[i], f"seed {sim_seed}: after operation {i}"


def test_entries_reads_back_a_range_of_the_stored_log(kind: StoreKind) -> None:
    store = kind.open()
    hard = HardState(term=2, vote=NodeId("n1"), commit=10)
    store.save(hard_state=hard, entries=entries(1, 1, 4) + entries(2, 5, 10))
    assert store.entries(3, 6) == entries(1, 3, 4) + entries(2, 5, 6)
    assert store.entries(10, 10) == entries(2, 10, 10)
    assert store.entries(5, 4) == []
    store.compact(snapshot(6, 2), keep_from=5)
    assert store.entries(5, 7) == entries(2, 5, 7)
    with pytest.raises(EntriesCompacted, match="from 4"):
        store.entries(4, 7)
    with pytest.raises(StorageCorrupt, match="11"):
        store.entries(9, 11)  # beyond the end: never asked for by a node; not a compaction
    assert kind.reopen(store).entries(5, 10) == entries(2, 5, 10)


def test_entries_matches_what_load_returns_after_a_random_workload(
    kind: StoreKind, sim_seed: int
) -> None:
    rng = random.Random(sim_seed)
    ops, states = random_ops(rng, 80)
    store = kind.open()
    for op in ops:
        apply_op(store, op)
    stored = states[-1].entries
    if not stored:
        return
    first, last = stored[0].index, stored[-1].index
    for _ in range(20):
        lo = rng.randint(first, last)
        hi = rng.randint(lo, last)
        assert store.entries(lo, hi) == list(stored[lo - first : hi - first + 1])
    if first > 1:
        with pytest.raises(EntriesCompacted):
            store.entries(first - 1, last)


def test_a_damaged_entry_read_back_raises_storage_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    make_store(path)
    tamper(path, "UPDATE raft_entries SET data = x'00' WHERE idx = 7")
    with SqliteRaftStorage(path) as store:
        with pytest.raises(StorageCorrupt, match="log entry 7 is damaged"):
            store.entries(6, 8)


# -- SQLite: crash images --------------------------------------------------------------------


def wal_layout(wal: bytes, shm: bytes) -> tuple[int, int, int]:
    """(frame size, end of the valid frames, first byte a crash may damage) of a WAL.

    The WAL index (-shm, native byte order) says how many frames are valid (mxFrame) and
    how many a checkpoint may have copied into the database file (nBackfillAttempted):
    those are safe from damage. Nothing checkpointed yet: even the header may go.
    """
    page_size = int.from_bytes(wal[8:12], "big") if len(wal) >= 32 else 4096
    frame = 24 + page_size
    if len(shm) < 136:
        return frame, len(wal), 0
    mx_frame = int.from_bytes(shm[16:20], sys.byteorder)
    backfilled = max(
        int.from_bytes(shm[96:100], sys.byteorder), int.from_bytes(shm[128:132], sys.byteorder)
    )
    floor = 0 if backfilled == 0 else 32 + backfilled * frame
    return frame, min(len(wal), 32 + mx_frame * frame), floor


def damaged_wals(rng: random.Random, db: bytes, wal: bytes, shm: bytes) -> list[tuple[str, bytes]]:
    """The WAL as left by a crash: intact, cut at a random byte, its last bytes zeroed,
    bytes of its last frame flipped (each only beyond what may be checkpointed)."""
    variants = [("intact", wal)]
    if wal_checkpointed(db, wal):
        return variants
    frame, valid_end, floor = wal_layout(wal, shm)
    if len(wal) <= floor:
        return variants
    cut = rng.randint(floor, len(wal) - 1)
    variants.append((f"cut at {cut}", wal[:cut]))
    zeroed = rng.randint(1, len(wal) - floor)
    variants.append((f"last {zeroed} bytes zeroed", wal[:-zeroed] + bytes(zeroed)))
    start = valid_end - frame
    if start >= max(floor, 32):
        flipped = bytearray(wal)
        spots = sorted(rng.sample(range(start, valid_end), rng.randint(1, 8)))
        for spot in spots:
            flipped[spot] ^= rng.randint(1, 255)
        variants.append((f"last frame flipped at {spots}", bytes(flipped)))
    return variants


def wal_checkpointed(db: bytes, wal: bytes) -> bool:
    """Whether a checkpoint already copied every frame of ``wal`` into the database file.

    The store runs SQLite in exclusive locking mode: there is no -shm to say how far a
    checkpoint went. Its checkpoints copy the whole WAL (nobody else reads), and the next
    write restarts the WAL from its first frame. Until then, the frames in the file were
    synced before they were copied: a crash cannot damage them, and cutting them would
    replay an old prefix of them over the newer database file (a damage no crash does).
    Such a WAL is recognised by the last version of every page it holds being that page
    of the database file.
    """
    page_size = int.from_bytes(wal[8:12], "big") if len(wal) >= 32 else 0
    if not page_size:
        return False
    frame = 24 + page_size
    salt = wal[16:24]
    last: dict[int, bytes] = {}
    for off in range(32, len(wal) - frame + 1, frame):
        if wal[off + 8 : off + 16] != salt:
            break
        page = int.from_bytes(wal[off : off + 4], "big")
        last[page] = wal[off + 24 : off + frame]
    return bool(last) and all(
        db[(page - 1) * page_size : page * page_size] == content for page, content in last.items()
    )


def read_image(db: Path) -> tuple[bytes, bytes, bytes]:
    def read(path: Path) -> bytes:
        return path.read_bytes() if path.exists() else b""

    return read(db), read(Path(f"{db}-wal")), read(Path(f"{db}-shm"))


def load_image(directory: Path, db: bytes, wal: bytes) -> tuple[DurableState, int]:
    """Open a crash image (no -shm: SQLite rebuilds it from the WAL, as after a reboot)."""
    directory.mkdir(parents=True)
    (directory / "raft.db").write_bytes(db)
    if wal:
        (directory / "raft.db-wal").write_bytes(wal)
    with SqliteRaftStorage(directory / "raft.db") as store:
        return store.load(), store.recovered_cut


def assert_prefix_state(
    loaded: DurableState, states: list[DurableState], *, at_least: int, at_most: int, what: str
) -> None:
    candidates = states[: at_most + 1]
    assert loaded in candidates, f"{what}: the loaded state is none of the saves' states"
    # the last equal state: equal consecutive states (a refused no-op) are all fine
    matched = max(i for i, state in enumerate(candidates) if state == loaded)
    assert matched >= at_least, f"{what}: state after save {matched}, expected >= {at_least}"


def test_crash_images_load_a_prefix_of_the_saves(
    tmp_path: Path, sim_seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlstore, "WAL_AUTOCHECKPOINT_PAGES", SMALL_CHECKPOINT_PAGES)
    rng = random.Random(sim_seed)
    ops, states = random_ops(rng, 120, max_data=600)
    points = set(rng.sample(range(1, len(ops) + 1), 3))
    images: list[tuple[int, tuple[bytes, bytes, bytes]]] = []
    db = tmp_path / "live" / "raft.db"
    store = SqliteRaftStorage(db, durability=Durability.NONE)  # same files, no fsync wait
    try:
        for i, op in enumerate(ops, 1):
            apply_op(store, op)
            if i in points:  # the connection is still open: what a crash leaves
                images.append((i, read_image(db)))
    finally:
        store.close()
    for saved, (db_bytes, wal, shm) in images:
        for n, (damage, damaged) in enumerate(damaged_wals(rng, db_bytes, wal, shm)):
            what = f"seed {sim_seed}, image after save {saved}, WAL {damage}"
            loaded, cut = load_image(tmp_path / f"image-{saved}-{n}", db_bytes, damaged)
            at_least = saved if damage == "intact" else 0
            assert_prefix_state(loaded, states, at_least=at_least, at_most=saved, what=what)
            assert cut == 0, f"{what}: SQLite's WAL recovery leaves no damaged row"


_WRITER = textwrap.dedent(
    """
    import pickle, sys
    from trickle.raft import sqlstore
    sqlstore.WAL_AUTOCHECKPOINT_PAGES = int(sys.argv[3])
    with open(sys.argv[1], "rb") as f:
        ops = pickle.load(f)
    store = sqlstore.SqliteRaftStorage(sys.argv[2])
    for i, op in enumerate(ops, 1):
        if op[0] == "save":
            store.save(**op[1])
        else:
            store.compact(op[1], keep_from=op[2])
        print(i, flush=True)
    sys.stdin.read()  # wait to be killed
    """
)


@contextlib.contextmanager
def child(args: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(args, text=True, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_writer_killed_mid_save_recovers_a_prefix_of_the_saves(
    tmp_path: Path, sim_seed: int
) -> None:
    rng = random.Random(sim_seed)
    ops, states = random_ops(rng, 80, max_data=600)
    ops_file = tmp_path / "ops.pickle"
    ops_file.write_bytes(pickle.dumps(ops))
    db = tmp_path / "live" / "raft.db"
    kill_after = rng.randint(1, 50)
    reported = 0
    args = [sys.executable, "-c", _WRITER, str(ops_file), str(db), str(SMALL_CHECKPOINT_PAGES)]
    with child(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            reported = int(line)
            if reported >= kill_after:
                os.kill(proc.pid, signal.SIGKILL)  # while it writes the next save
                break
        proc.wait()
    assert reported >= kill_after, f"the writer died after {reported} saves"
    db_bytes, wal, shm = read_image(db)
    for n, (damage, damaged) in enumerate(damaged_wals(rng, db_bytes, wal, shm)):
        what = f"seed {sim_seed}, killed after save {reported}, WAL {damage}"
        loaded, _ = load_image(tmp_path / f"image-{n}", db_bytes, damaged)
        at_least = reported if damage == "intact" else 0  # a kill loses no completed save
        assert_prefix_state(loaded, states, at_least=at_least, at_most=len(ops), what=what)


# -- SQLite: damage inside the file -----------------------------------------------------------


def make_store(path: Path, *, commit: int = 6, last: int = 10) -> None:
    with SqliteRaftStorage(path) as store:
        store.save(
            hard_state=HardState(term=2, vote=NodeId("n1"), commit=commit),
            entries=entries(1, 1, 4) + entries(2, 5, last),
        )


def tamper(path: Path, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.commit()


def test_damaged_tail_entries_are_cut_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "raft.db"
    make_store(path)
    tamper(path, "UPDATE raft_entries SET data = x'00' WHERE idx IN (9, 10)")
    with caplog.at_level(logging.WARNING, logger="trickle.raft.sqlstore"):
        with SqliteRaftStorage(path) as store:
            state = store.load()
            assert state.entries == tuple(entries(1, 1, 4) + entries(2, 5, 8))
            assert store.recovered_cut == 2
            store.save(entries=entries(2, 9, 9, tag="again"))
    assert "cut 2 damaged or disconnected entries" in caplog.text
    with SqliteRaftStorage(path) as store:
        assert store.load().entries[-1] == Entry(term=2, index=9, data=b"again9")
        assert store.recovered_cut == 0


def test_crc_mismatch_in_the_middle_of_the_log_raises_storage_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    make_store(path)
    tamper(path, "UPDATE raft_entries SET term = 3 WHERE idx = 5")
    with SqliteRaftStorage(path) as store:
        with pytest.raises(
            StorageCorrupt, match="log entry 5 is damaged .* entry 6 after it is intact"
        ):
            store.load()
        with pytest.raises(RaftStorageError, match="load"):  # still not verified: no writes
            store.save(entries=entries(2, 11, 11))


def test_missing_entries_between_intact_ones_raise_storage_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    make_store(path)
    tamper(path, "DELETE FROM raft_entries WHERE idx IN (4, 5)")
    with (
        SqliteRaftStorage(path) as store,
        pytest.raises(StorageCorrupt, match="entries 4..5 are missing"),
    ):
        store.load()


def test_missing_tail_above_the_commit_index_is_a_shorter_log(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    make_store(path)
    tamper(path, "DELETE FROM raft_entries WHERE idx > 7")
    with SqliteRaftStorage(path) as store:
        assert store.load().entries[-1].index == 7


def test_cut_below_the_commit_index_raises_storage_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    make_store(path, commit=9)
    tamper(path, "UPDATE raft_entries SET data = x'00' WHERE idx >= 8")
    with SqliteRaftStorage(path) as store:
        with pytest.raises(StorageCorrupt, match="commit index 9 is beyond the log's last index 7"):
            store.load()


def test_damaged_hard_state_raises_storage_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    make_store(path)
    tamper(path, "UPDATE raft_hard_state SET vote = 'n2'")
    with SqliteRaftStorage(path) as store, pytest.raises(StorageCorrupt, match="hard state"):
        store.load()


def test_damaged_snapshot_raises_storage_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    make_store(path)
    with SqliteRaftStorage(path) as store:
        store.load()
        store.compact(snapshot(6, 2, b"state"), keep_from=4)
    tamper(path, "UPDATE raft_snapshot SET data = x'0102'")
    with SqliteRaftStorage(path) as store, pytest.raises(StorageCorrupt, match="snapshot"):
        store.load()


def test_file_that_is_not_a_database_raises_storage_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    path.write_bytes(b"this is not a database" * 200)
    with pytest.raises(StorageCorrupt, match="not a readable SQLite database"):
        SqliteRaftStorage(path)
    SqliteRaftStorage(tmp_path / "other.db").close()  # the lock was released: no leak


def test_another_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trickle.db"
    tamper(path, "CREATE TABLE jobs (name TEXT)")
    with pytest.raises(RaftStorageError, match="not a raft store"):
        SqliteRaftStorage(path)


def test_save_before_load_of_stored_state_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    make_store(path)
    with SqliteRaftStorage(path) as store:
        with pytest.raises(RaftStorageError, match="load"):
            store.save(entries=entries(2, 11, 11))
        store.load()
        store.save(entries=entries(2, 11, 11))


# -- SQLite: the file, its lock, sizes, durability -------------------------------------------

_OPENER = textwrap.dedent(
    """
    import sys
    from trickle.raft.sqlstore import SqliteRaftStorage
    try:
        SqliteRaftStorage(sys.argv[1]).close()
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}")
    else:
        print("opened")
    """
)


def open_in_child(path: Path) -> str:
    with child([sys.executable, "-c", _OPENER, str(path)], stdout=subprocess.PIPE) as proc:
        out, _ = proc.communicate(timeout=60)
    return out.strip()


def test_a_second_open_is_refused_until_the_first_store_closes(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    store = SqliteRaftStorage(path)
    try:
        with pytest.raises(RaftStorageError, match="in use by another raft store"):
            SqliteRaftStorage(path)
        out = open_in_child(path)
        assert out.startswith("RaftStorageError"), out
        assert "in use by another raft store" in out
    finally:
        store.close()
    assert open_in_child(path) == "opened"


def test_closed_store_refuses_use_and_close_is_idempotent(tmp_path: Path) -> None:
    store = SqliteRaftStorage(tmp_path / "raft.db")
    store.close()
    store.close()
    with pytest.raises(RaftStorageError, match="closed"):
        store.load()
    with pytest.raises(RaftStorageError, match="closed"):
        store.save(entries=entries(1, 1, 1))


def test_large_snapshot_round_trips(tmp_path: Path) -> None:
    image = random.Random(7).randbytes(3 * 2**20) * 10  # 30 MiB
    path = tmp_path / "raft.db"
    with SqliteRaftStorage(path) as store:
        store.save(
            hard_state=HardState(term=1, vote=NodeId("n1"), commit=3), entries=entries(1, 1, 3)
        )
        store.compact(snapshot(3, 1, image), keep_from=2)
        store.save(entries=entries(1, 4, 5))
    with SqliteRaftStorage(path) as store:
        state = store.load()
    assert state.snapshot == snapshot(3, 1, image)
    assert state.entries == tuple(entries(1, 2, 5))


def test_a_snapshot_is_stored_in_chunks_and_loaded_as_a_file_never_whole(tmp_path: Path) -> None:
    image = random.Random(8).randbytes(2 * CHUNK_BYTES + 123)
    source = SnapshotFile.write([image[:1000], image[1000:]], dir=tmp_path)
    path = tmp_path / "raft.db"
    with SqliteRaftStorage(path) as store:
        store.save(hard_state=HardState(term=1, commit=3), entries=entries(1, 1, 3))
        store.compact(snapshot(3, 1, source), keep_from=2)  # streamed from the file
    with contextlib.closing(sqlite3.connect(path)) as conn:
        sizes = [
            n for (n,) in conn.execute("SELECT length(data) FROM raft_snapshot_chunks ORDER BY seq")
        ]
    assert sizes == [CHUNK_BYTES, CHUNK_BYTES, 123]
    with SqliteRaftStorage(path) as store:
        loaded = store.load().snapshot
    assert loaded is not None and isinstance(loaded.data, SnapshotFile)
    assert (
        loaded.data == image and loaded.data[5:9] == image[5:9] and len(loaded.data) == len(image)
    )
    assert [p.name for p in tmp_path.iterdir() if "snapshot" in p.name] == []  # unlinked


class _SlowImage:
    """Snapshot data whose second chunk is read only once ``go`` is set (a long image)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reading = threading.Event()
        self.go = threading.Event()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: slice) -> bytes:
        if key.start and key.start >= CHUNK_BYTES * sqlstore.STAGE_BATCH_CHUNKS:
            self.reading.set()
            assert self.go.wait(10)
        return self.data[key]

    def __bytes__(self) -> bytes:
        return self.data


def test_saves_go_on_while_a_compaction_writes_a_big_image(tmp_path: Path) -> None:
    image = random.Random(3).randbytes((sqlstore.STAGE_BATCH_CHUNKS + 2) * CHUNK_BYTES)
    slow = _SlowImage(image)
    path = tmp_path / "raft.db"
    make_store(path)
    with SqliteRaftStorage(path) as store:
        store.load()
        compaction = threading.Thread(
            target=store.compact, args=(snapshot(6, 2, slow),), kwargs={"keep_from": 4}
        )
        compaction.start()
        assert slow.reading.wait(10)  # the image is being written...
        saver = threading.Thread(target=store.save, kwargs={"entries": entries(2, 11, 12)})
        saver.start()
        saver.join(10)
        assert not saver.is_alive()  # ... and a save did not wait for it
        slow.go.set()
        compaction.join(10)
        assert not compaction.is_alive()
    with SqliteRaftStorage(path) as store:
        state = store.load()
    assert state.snapshot == snapshot(6, 2, image)
    assert [e.index for e in state.entries] == list(range(4, 13))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (gens,) = conn.execute("SELECT count(DISTINCT gen) FROM raft_snapshot_chunks").fetchone()
    assert gens == 1  # the previous image's chunks are gone


def test_chunks_of_an_image_a_crash_cut_short_are_removed_at_load(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    make_store(path)
    with SqliteRaftStorage(path) as store:
        store.load()
        store.compact(snapshot(6, 2, b"state"), keep_from=4)
    with contextlib.closing(sqlite3.connect(path)) as conn:  # a compaction that never ended
        conn.execute("INSERT INTO raft_snapshot_chunks (gen, seq, data) VALUES (99, 0, x'00')")
        conn.commit()
    with SqliteRaftStorage(path) as store:
        assert store.load().snapshot == snapshot(6, 2, b"state")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute(
            "SELECT count(*) FROM raft_snapshot_chunks WHERE gen = 99"
        ).fetchone() == (0,)


def test_a_missing_or_damaged_snapshot_chunk_raises_storage_corrupt(tmp_path: Path) -> None:
    image = random.Random(9).randbytes(CHUNK_BYTES + 10)
    for n, statement in enumerate(
        [
            "DELETE FROM raft_snapshot_chunks WHERE seq = 0",
            "UPDATE raft_snapshot_chunks SET data = substr(data, 1, length(data) - 1) WHERE seq = 1",
        ]
    ):
        path = tmp_path / f"{n}" / "raft.db"
        make_store(path)
        with SqliteRaftStorage(path) as store:
            store.load()
            store.compact(snapshot(6, 2, image), keep_from=4)
        tamper(path, statement)
        with SqliteRaftStorage(path) as store, pytest.raises(StorageCorrupt, match="snapshot"):
            store.load()


def test_a_store_of_schema_version_1_is_migrated_and_keeps_its_inline_snapshot(
    tmp_path: Path,
) -> None:
    path = tmp_path / "raft.db"
    make_store(path)
    conf = sqlstore._encode_conf(CONF)
    crc = sqlstore.snapshot_crc(6, 2, conf, b"old image")
    with contextlib.closing(sqlite3.connect(path)) as conn:  # what version 1 wrote
        conn.execute("DROP TABLE raft_snapshot_chunks")
        conn.execute("DROP TABLE raft_snapshot")
        conn.execute(
            "CREATE TABLE raft_snapshot (id INTEGER NOT NULL CHECK (id = 1), idx INTEGER NOT"
            " NULL, term INTEGER NOT NULL, conf BLOB NOT NULL, data BLOB NOT NULL, crc INTEGER"
            " NOT NULL, PRIMARY KEY (id))"
        )
        conn.execute("UPDATE raft_meta SET value = x'31' WHERE key = 'schema_version'")
        conn.execute(
            "INSERT INTO raft_snapshot (id, idx, term, conf, data, crc) VALUES (1, 6, 2, ?, ?, ?)",
            (conf, b"old image", crc),
        )
        conn.commit()
    with SqliteRaftStorage(path) as store:
        state = store.load()
        assert state.snapshot == snapshot(6, 2, b"old image")
        store.compact(snapshot(8, 2, b"new image"), keep_from=7)
    with SqliteRaftStorage(path) as store:
        assert store.load().snapshot == snapshot(8, 2, b"new image")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (version,) = conn.execute(
            "SELECT value FROM raft_meta WHERE key = 'schema_version'"
        ).fetchone()
    assert int(version) == sqlstore.SCHEMA_VERSION == 2


@pytest.mark.parametrize("durability", [Durability.FSYNC, Durability.NONE, "none"])
def test_every_durability_setting_stores_the_same_state(
    tmp_path: Path, durability: Durability | str
) -> None:
    path = tmp_path / "raft.db"
    with SqliteRaftStorage(path, durability=durability) as store:
        assert store.durability is Durability(durability)
        store.save(
            hard_state=HardState(term=1, vote=NodeId("n1"), commit=1), entries=entries(1, 1, 2)
        )
    with SqliteRaftStorage(path) as store:
        assert store.load().entries == tuple(entries(1, 1, 2))


def test_unknown_durability_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="durability must be one of fsync, none"):
        SqliteRaftStorage(tmp_path / "raft.db", durability="sometimes")


def test_store_is_created_with_its_directory_and_only_as_a_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "raft.db"
    SqliteRaftStorage(path).close()
    assert path.is_file()
    with pytest.raises(RaftStorageError, match="is a directory"):
        SqliteRaftStorage(tmp_path / "a")


async def test_a_store_opened_on_the_trio_thread_is_used_from_worker_threads(
    tmp_path: Path,
) -> None:
    store = SqliteRaftStorage(tmp_path / "raft.db")
    loaded: list[DurableState] = []

    async def load() -> None:
        loaded.append(await trio.to_thread.run_sync(store.load))

    try:
        for i in range(1, 9):
            save = partial(store.save, hard_state=HardState(term=i), entries=entries(i, i, i))
            await trio.to_thread.run_sync(save)
        async with trio.open_nursery() as nursery:  # concurrent callers take turns
            for _ in range(4):
                nursery.start_soon(load)
    finally:
        store.close()
    log = tuple(entry for i in range(1, 9) for entry in entries(i, i, i))
    assert loaded == [DurableState(hard_state=HardState(term=8), entries=log)] * 4


def test_a_sqlite_save_calls_pace_before_each_statement(tmp_path: Path) -> None:
    calls: list[int] = []
    with SqliteRaftStorage(tmp_path / "raft.db") as store:
        store.load()
        store.pace = lambda: calls.append(1)
        hard = HardState(term=1, vote=NodeId("n1"), commit=1)
        store.save(hard_state=hard, entries=entries(1, 1, 3))
        assert len(calls) == 6  # on entry, BEGIN, the entries, the hard state, COMMIT, after it
        assert store.load() == DurableState(hard_state=hard, entries=tuple(entries(1, 1, 3)))
