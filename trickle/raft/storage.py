"""Where a Raft node keeps its log, term/vote and snapshots: the contract and its stores.

A store is synchronous (the Trio driver calls SQLite stores through worker threads).
``save`` is one durable batch: when it returns, everything in it survives a crash (with
``Durability.FSYNC``), and a crash during it leaves either all of it or none of it.
``load`` returns exactly what was last made durable; a torn or partial tail is detected and
cut, never misread; damage that is not a tail raises StorageCorrupt.
"""

from __future__ import annotations

import enum
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import attrs

from trickle.errors import StorageCorrupt, TrickleError, ValidationError
from trickle.raft.messages import (
    ColdEntry,
    DurableState,
    Entry,
    HardState,
    Message,
    Snapshot,
    SnapshotData,
)


class Durability(enum.Enum):
    FSYNC = "fsync"  # every save is fsynced (group commit: one fsync per batch). Safe.
    NONE = "none"  # no fsync: a power loss may lose recent saves, votes included. Unsafe;
    # a node that lost its vote can vote twice in a term. For benchmarks and throwaway data.


class RaftStorage(Protocol):
    def load(self) -> DurableState:
        """Everything durable: hard state, latest snapshot, entries (see DurableState)."""
        ...

    def save(
        self,
        *,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: Snapshot | None = None,
    ) -> None:
        """Make one Ready's writes durable, atomically, in this order: ``snapshot`` (drops
        stored entries it covers unless they match it: when the log holds the snapshot's
        last entry, same index and term, every stored entry is kept, else all are
        dropped), ``entries`` (the first one's index replaces the stored suffix from
        there), ``hard_state``. Writes Raft never makes (a gap, a term going back, a
        second vote in a term, ...) raise ValidationError and store nothing."""
        ...

    def compact(self, snapshot: Snapshot, *, keep_from: int) -> None:
        """Store a snapshot the application took; delete entries below ``keep_from``.
        ValidationError if the snapshot is older than the stored one or does not match the
        log at its index, or ``keep_from`` is beyond ``snapshot.meta.index + 1``."""
        ...

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """The stored entries lo..hi (inclusive), each checked: what a node reads back for
        the cold entries of an APPEND (``fill_cold_entries``). EntriesCompacted if ``lo``
        is below the stored log (a compaction deleted it); StorageCorrupt if one of them
        is missing or damaged otherwise."""
        ...

    def close(self) -> None: ...


def fill_cold_entries(message: Message, read: Callable[[int, int], list[Entry]]) -> Message:
    """``message`` with its ColdEntry values replaced by the stored entries ``read(lo, hi)``
    returns (cold entries lead an APPEND's entries: RaftLog.slice). StorageCorrupt if
    what is stored does not have the terms the log has."""
    entries = message.entries
    cold = 0
    while cold < len(entries) and isinstance(entries[cold], ColdEntry):
        cold += 1
    if not cold:
        return message
    stored = read(entries[0].index, entries[cold - 1].index)
    if len(stored) != cold or any(
        s.index != c.index or s.term != c.term for s, c in zip(stored, entries, strict=False)
    ):
        raise StorageCorrupt(
            f"the stored entries {entries[0].index}..{entries[cold - 1].index} do not match"
            " the terms of the log in memory"
        )
    return attrs.evolve(message, entries=(*stored, *entries[cold:]))


CHUNK_BYTES = 1 << 20  # bytes per read or write when a snapshot is streamed


class SnapshotFile:
    """A snapshot's data on disk, never loaded whole: the bytes the Raft core slices
    (``len(data)``, ``data[a:b]`` reads that range) and the image stores stream.

    It reads an open, unlinked temporary file: nothing is left behind after a crash, and
    the data stays readable for as long as someone holds it (a transfer to a slow
    follower) even after a newer snapshot replaced it. The descriptor is closed when the
    object is collected, or by ``close()``. It equals any bytes of the same content.
    """

    __slots__ = ("__weakref__", "_fd", "_size", "_lock")

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._size = size
        self._lock = threading.Lock()

    @classmethod
    def write(cls, chunks: Iterable[bytes | memoryview], *, dir: Path | str | None) -> SnapshotFile:
        """A new snapshot file in ``dir`` (the system's temporary directory when None)
        holding the concatenation of ``chunks``."""
        fd, path = tempfile.mkstemp(prefix=".snapshot-", dir=dir)
        try:
            os.unlink(path)
            size = 0
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    written = os.write(fd, view)
                    size += written
                    view = view[written:]
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, size)

    @classmethod
    def adopt(cls, path: Path | str) -> SnapshotFile:
        """The file at ``path`` (unlinked now: the object owns it)."""
        fd = os.open(path, os.O_RDONLY)
        try:
            os.unlink(path)
            size = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, size)

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, key: slice) -> bytes:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("a snapshot file is read by contiguous slices")
        start, stop, _ = key.indices(self._size)
        return self.read(start, max(0, stop - start))

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (fewer at the end)."""
        if self._fd < 0:
            raise ValueError("the snapshot file is closed")
        parts = []
        while size > 0:
            part = os.pread(self._fd, size, offset)
            if not part:
                break
            parts.append(part)
            offset += len(part)
            size -= len(part)
        return b"".join(parts)

    def chunks(self, size: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The whole data, ``size`` bytes at a time."""
        for offset in range(0, self._size, size):
            yield self.read(offset, size)

    def __bytes__(self) -> bytes:
        return self.read(0, self._size)

    def __eq__(self, other: object) -> bool:
        """Same content as ``other`` (bytes-like or another SnapshotFile), read in chunks."""
        if other is self:
            return True
        if isinstance(other, SnapshotFile):
            return len(other) == self._size and all(
                a == b for a, b in zip(self.chunks(), other.chunks(), strict=True)
            )
        if isinstance(other, bytes | bytearray | memoryview):
            view = memoryview(other)
            return len(view) == self._size and all(
                chunk == view[i * CHUNK_BYTES : i * CHUNK_BYTES + len(chunk)]
                for i, chunk in enumerate(self.chunks())
            )
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-like content: not hashable

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing to do
            pass

    def __repr__(self) -> str:
        return f"SnapshotFile({self._size} bytes)"


def snapshot_chunks(data: bytes | SnapshotData, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The data of a snapshot ``size`` bytes at a time, whether in memory or on disk."""
    if isinstance(data, SnapshotFile):
        yield from data.chunks(size)
        return
    for offset in range(0, len(data), size):
        yield bytes(data[offset : offset + size])


class RaftStorageError(TrickleError):
    """The store cannot do what was asked: it is closed, not loaded yet, or its file is in
    use by another store (in this process or another)."""


class EntriesCompacted(RaftStorageError):
    """``entries`` was asked for entries a compaction deleted meanwhile (a snapshot taken
    while the APPEND that carries them waited for its Ready's save): the message is
    dropped and the follower is caught up by a snapshot."""


# -- the contract's rules, shared by every store ------------------------------------------


class _LogView(Protocol):
    """What a store knows about itself, for checking a save or compact before doing it."""

    @property
    def hard_state(self) -> HardState: ...

    @property
    def snapshot_index(self) -> int: ...  # 0: no snapshot

    @property
    def snapshot_term(self) -> int: ...

    @property
    def last_entry_index(self) -> int: ...  # 0: no entries

    def stored_term(self, index: int) -> int | None:
        """Term of the stored entry at ``index``, None if there is none."""
        ...


def _term_at(view: _LogView, index: int) -> int | None:
    """Term of the entry at ``index`` as far as the store knows (the snapshot's own index
    counts), None if unknown."""
    term = view.stored_term(index)
    if term is None and view.snapshot_index and index == view.snapshot_index:
        return view.snapshot_term
    return term


def plan_save(
    view: _LogView,
    *,
    hard_state: HardState | None,
    entries: Sequence[Entry],
    snapshot: Snapshot | None,
) -> bool:
    """Check one save against the stored state (nothing is written); True when the
    snapshot drops every stored entry (the log does not hold the snapshot's last entry).

    Raises ValidationError for writes Raft never makes: a snapshot older than the stored
    one or conflicting with a committed entry, entries that are not contiguous, leave a gap, rewrite a committed entry or what
    the snapshot covers, a term that goes back, a second vote in a term, a commit index
    beyond the log.
    """
    snap_index, snap_term = view.snapshot_index, view.snapshot_term
    last = max(view.last_entry_index, snap_index)
    drop = False
    if snapshot is not None:
        meta = snapshot.meta
        if meta.index < 1 or meta.term < 1:
            raise ValidationError(f"{meta.describe()}: index and term must be at least 1")
        if meta.index < snap_index:
            raise ValidationError(
                f"{meta.describe()} is older than the stored snapshot {snap_term}/{snap_index}"
            )
        term = _term_at(view, meta.index)
        drop = term != meta.term
        if drop and term is not None and meta.index <= view.hard_state.commit:
            raise ValidationError(
                f"{meta.describe()} conflicts with committed entry {term}/{meta.index}"
            )
        snap_index, snap_term = meta.index, meta.term
        last = snap_index if drop else max(last, snap_index)
    if entries:
        first = entries[0].index
        if entries[0].term < 1:
            raise ValidationError(f"entry {entries[0].describe()}: terms start at 1")
        if first <= snap_index:
            raise ValidationError(
                f"entry {entries[0].describe()} is covered by the snapshot at {snap_index}:"
                " entries start after it"
            )
        if first > last + 1:
            raise ValidationError(
                f"entry {entries[0].describe()} leaves a gap: the log ends at {last}"
            )
        committed = view.hard_state.commit
        if not drop and first <= committed:
            for entry in entries[: committed - first + 1]:
                term = _term_at(view, entry.index)
                if term != entry.term:
                    raise ValidationError(
                        f"entry {entry.describe()} rewrites committed entry {term}/{entry.index}"
                    )
        previous = entries[0]
        for entry in entries[1:]:
            if entry.index != previous.index + 1:
                raise ValidationError(
                    f"entries are not contiguous: {entry.describe()} follows {previous.describe()}"
                )
            if entry.term < previous.term:
                raise ValidationError(
                    f"entry terms go back: {entry.describe()} follows {previous.describe()}"
                )
            previous = entry
        last = previous.index
    if hard_state is not None:
        current = view.hard_state
        if hard_state.term < current.term:
            raise ValidationError(
                f"hard state term goes back from {current.term} to {hard_state.term}"
            )
        if (
            hard_state.term == current.term
            and current.vote is not None
            and hard_state.vote != current.vote
        ):
            raise ValidationError(
                f"a second vote in term {current.term}: {hard_state.vote or '-'} after"
                f" {current.vote}"
            )
    commit = (hard_state if hard_state is not None else view.hard_state).commit
    if commit > last:
        raise ValidationError(f"commit index {commit} would be beyond the log's last index {last}")
    return drop


def plan_compact(view: _LogView, snapshot: Snapshot, *, keep_from: int) -> None:
    """Check a compact against the stored state; raises ValidationError if the snapshot is
    older than the stored one, does not match the log at its index, or ``keep_from`` is
    not in ``1..snapshot.meta.index + 1``."""
    meta = snapshot.meta
    if meta.index < 1 or meta.term < 1:
        raise ValidationError(f"{meta.describe()}: index and term must be at least 1")
    if meta.index < view.snapshot_index:
        raise ValidationError(
            f"{meta.describe()} is older than the stored snapshot"
            f" {view.snapshot_term}/{view.snapshot_index}"
        )
    if not 1 <= keep_from <= meta.index + 1:
        raise ValidationError(
            f"keep_from {keep_from} must be in 1..{meta.index + 1} for {meta.describe()}"
        )
    term = _term_at(view, meta.index)
    if term is None:
        raise ValidationError(
            f"{meta.describe()} is not in the log (last index {view.last_entry_index})"
        )
    if term != meta.term:
        raise ValidationError(f"{meta.describe()} does not match the log's term {term} there")


# -- the in-memory store --------------------------------------------------------------------


class MemoryStorage:
    """The RaftStorage contract in memory, for simulations and tests.

    Every save is atomic and "durable" at once (it models ``Durability.FSYNC``): a
    simulated crash keeps exactly what the completed saves left, which is what
    ``snapshot_copy()`` returns. ``saves``, ``compactions`` and ``entries_written`` count
    completed calls and the entries they wrote. Bad writes raise ValidationError (see
    ``plan_save``) and change nothing; using a closed store raises RaftStorageError.
    """

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot: Snapshot | None = None
        self._entries: list[Entry] = []
        self._closed = False
        self.saves = 0
        self.compactions = 0
        self.entries_written = 0

    # _LogView ---------------------------------------------------------------------------
    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    @property
    def snapshot_index(self) -> int:
        return self._snapshot.meta.index if self._snapshot is not None else 0

    @property
    def snapshot_term(self) -> int:
        return self._snapshot.meta.term if self._snapshot is not None else 0

    @property
    def last_entry_index(self) -> int:
        return self._entries[-1].index if self._entries else 0

    def stored_term(self, index: int) -> int | None:
        if not self._entries:
            return None
        pos = index - self._entries[0].index
        return self._entries[pos].term if 0 <= pos < len(self._entries) else None

    # RaftStorage ------------------------------------------------------------------------
    def load(self) -> DurableState:
        self._check_open()
        return DurableState(
            hard_state=self._hard_state, snapshot=self._snapshot, entries=tuple(self._entries)
        )

    def save(
        self,
        *,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: Snapshot | None = None,
    ) -> None:
        self._check_open()
        drop = plan_save(self, hard_state=hard_state, entries=entries, snapshot=snapshot)
        if snapshot is not None:
            self._snapshot = snapshot
            if drop:
                self._entries = []
        if entries:
            if self._entries:
                del self._entries[max(0, entries[0].index - self._entries[0].index) :]
            self._entries.extend(entries)
        if hard_state is not None:
            self._hard_state = hard_state
        self.saves += 1
        self.entries_written += len(entries)

    def compact(self, snapshot: Snapshot, *, keep_from: int) -> None:
        self._check_open()
        plan_compact(self, snapshot, keep_from=keep_from)
        self._snapshot = snapshot
        if self._entries:
            del self._entries[: max(0, keep_from - self._entries[0].index)]
        self.compactions += 1

    def entries(self, lo: int, hi: int) -> list[Entry]:
        self._check_open()
        if hi < lo:
            return []
        first = self._entries[0].index if self._entries else self.snapshot_index + 1
        if lo < first:
            raise EntriesCompacted(f"entries from {lo} are compacted (the log starts at {first})")
        out = self._entries[lo - first : hi - first + 1]
        if not out or out[0].index != lo or out[-1].index != hi:
            raise StorageCorrupt(f"entries {lo}..{hi} are not all stored")
        return out

    def close(self) -> None:
        """Idempotent; the durable state stays readable through ``snapshot_copy()``."""
        self._closed = True

    # simulation -------------------------------------------------------------------------
    def snapshot_copy(self) -> MemoryStorage:
        """An independent store holding the same durable state (what a node finds after a
        crash), with fresh counters. Works on a closed store too."""
        copy = MemoryStorage()
        copy._hard_state = self._hard_state
        copy._snapshot = self._snapshot
        copy._entries = list(self._entries)
        return copy

    def _check_open(self) -> None:
        if self._closed:
            raise RaftStorageError("the raft storage is closed")
