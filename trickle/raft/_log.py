"""One node's in-memory Raft log: entries after a compaction point, what is durable, and
the membership as of each index (a conf change counts from the moment it is appended).

The oldest entries may be *cold*: applied and durable, their data dropped from memory
and only their term and size kept (``cool``); a slice over them yields ColdEntry values
the driver reads back from storage. The log's memory is then bounded by the hot entries,
not by how many entries compaction keeps for slow followers."""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Sequence

from trickle.raft._conf import apply_entry_data
from trickle.raft.messages import ColdEntry, ConfState, Entry, EntryKind, SnapshotMeta

ENTRY_OVERHEAD_BYTES = 16  # counted per entry on top of its data when sizing batches
EMPTY_CONF = ConfState()
_CONF_CHANGE = EntryKind.CONF_CHANGE  # (a global: an enum member read through its class is slow)


def entry_size(entry: Entry) -> int:
    return len(entry.data) + ENTRY_OVERHEAD_BYTES


class RaftLog:
    """Entries (offset, last]; the term of ``offset`` itself is known (the compaction
    point or the snapshot index). Entries (offset, hot_offset] are cold (term and size
    only), the rest are held whole. Entries at ``unstable_from`` and above have not yet
    been reported durable. ``conf(i)`` is known for i >= the conf base index (the snapshot
    or compaction point): the base configuration plus the conf-change entries after it.
    """

    __slots__ = (
        "_cold_sizes",
        "_cold_terms",
        "_conf_base",
        "_conf_base_index",
        "_conf_idx",
        "_conf_val",
        "_entries",
        "_hot_offset",
        "_offset",
        "_offset_term",
        "hot_bytes",
        "last_index",
        "unstable_from",
    )

    def __init__(
        self,
        *,
        offset: int = 0,
        offset_term: int = 0,
        entries: Sequence[Entry] = (),
        conf_base_index: int = 0,
        conf_base: ConfState = EMPTY_CONF,
    ) -> None:
        self._offset = offset
        self._offset_term = offset_term
        # of entries offset + 1 .. hot_offset, and the bytes of their data: machine ints,
        # 16 bytes an entry (the log between two snapshots can hold hundreds of thousands)
        self._cold_terms = array("q")
        self._cold_sizes = array("q")
        self._hot_offset = offset
        self._entries: list[Entry] = list(entries)  # hot_offset + 1 .. last_index
        self.hot_bytes = sum(len(e.data) for e in self._entries)  # data held in memory
        # offset + len(entries), kept by every change (read on every step: no property)
        self.last_index = offset + len(self._entries)
        self._conf_base_index = conf_base_index
        self._conf_base = conf_base
        self._conf_idx: list[int] = []
        self._conf_val: list[ConfState] = []
        self._index_confs(self._entries)
        self.unstable_from = self.last_index + 1

    # reading ------------------------------------------------------------------------------
    @property
    def offset(self) -> int:
        return self._offset

    @property
    def first_index(self) -> int:
        return self._offset + 1

    def last_term(self) -> int:
        if self._entries:
            return self._entries[-1].term
        return self._cold_terms[-1] if self._cold_terms else self._offset_term

    @property
    def hot_offset(self) -> int:
        """Entries up to here are cold (their data is not in memory)."""
        return self._hot_offset

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index``; None if compacted away or beyond the end."""
        pos = index - self._hot_offset - 1
        if 0 <= pos < len(self._entries):
            return self._entries[pos].term
        offset = self._offset
        if index == offset:
            return self._offset_term
        pos = index - offset - 1
        if 0 <= pos < len(self._cold_terms):
            return self._cold_terms[pos]
        return None

    def entry(self, index: int) -> Entry:
        """The entry at ``index``, which must be hot."""
        if index <= self._hot_offset:
            raise KeyError(f"entry {index} is cold (its data is in storage only)")
        return self._entries[index - self._hot_offset - 1]

    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry | ColdEntry]:
        """Entries lo..hi (inclusive, lo > offset), at most ``max_bytes`` (>= one entry);
        cold ones as ColdEntry."""
        if lo <= self._hot_offset and lo <= hi:
            return self._slice_cold(lo, hi, max_bytes)
        return self.hot_slice(lo, hi, max_bytes)  # type: ignore[return-value]  # invariant

    def hot_slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """As slice, of hot entries only (lo > hot_offset: the committed entries not yet
        applied, for one)."""
        start = lo - self._hot_offset - 1
        if start < 0:
            raise KeyError(f"entry {lo} is cold (its data is in storage only)")
        stop = hi - self._hot_offset
        entries = self._entries
        if stop <= start:
            return []
        size = 0
        end = start
        while end < stop:
            size += len(entries[end].data) + ENTRY_OVERHEAD_BYTES
            if size > max_bytes and end > start:
                break
            end += 1
        return entries[start:end]

    def _slice_cold(self, lo: int, hi: int, max_bytes: int) -> list[Entry | ColdEntry]:
        out: list[Entry | ColdEntry] = []
        size = 0
        offset, hot_offset = self._offset, self._hot_offset
        terms, sizes = self._cold_terms, self._cold_sizes
        index = lo
        while index <= hi:
            if index <= hot_offset:
                pos = index - offset - 1
                data_size = sizes[pos]
                entry: Entry | ColdEntry = ColdEntry(terms[pos], index, data_size)
            else:
                entry = self._entries[index - hot_offset - 1]
                data_size = len(entry.data)
            size += data_size + ENTRY_OVERHEAD_BYTES
            if size > max_bytes and out:
                break
            out.append(entry)
            index += 1
        return out

    def _size(self, index: int) -> int:
        if index > self._hot_offset:
            return len(self._entries[index - self._hot_offset - 1].data)
        return self._cold_sizes[index - self._offset - 1]

    def over_budget_from(self, index: int, stop: int, budget: int) -> int | None:
        """Walking back from ``index`` towards ``stop`` (offset <= stop, not included):
        the first index at which the data of the entries from there to ``index`` adds up
        to more than ``budget`` bytes; None if it never does."""
        size = self._size
        while index > stop:
            budget -= size(index)
            if budget < 0:
                return index
            index -= 1
        return None

    def unstable_entries(self) -> list[Entry]:
        return self._entries[self.unstable_from - self._hot_offset - 1 :]

    def has_unstable(self) -> bool:
        return self.unstable_from <= self.last_index

    def is_up_to_date(self, last_term: int, last_index: int) -> bool:
        """Is a log ending at (last_term, last_index) at least as up to date as this one?"""
        ours = self.last_term()
        return last_term > ours or (last_term == ours and last_index >= self.last_index)

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first of ``entries`` that this log lacks or holds with another
        term; 0 when this log already holds them all."""
        for e in entries:
            if self.term(e.index) != e.term:
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term``, and that term (etcd's
        findConflictByTerm): where another log whose entry at ``index`` has ``term`` may
        match this one. A compacted index is returned as a possible match with term 0."""
        while index > 0:
            ours = self.term(index)
            if ours is None:
                return index, 0
            if ours <= term:
                return index, ours
            index -= 1
        return 0, 0

    # membership -------------------------------------------------------------------------
    def conf(self, index: int) -> ConfState | None:
        """The configuration as of ``index``; None if it is no longer known."""
        if index < self._conf_base_index:
            return None
        pos = bisect.bisect_right(self._conf_idx, index)
        return self._conf_val[pos - 1] if pos else self._conf_base

    def conf_latest(self) -> ConfState:
        return self._conf_val[-1] if self._conf_val else self._conf_base

    def last_conf_index(self) -> int:
        """Index of the latest conf-change entry (or of the conf base)."""
        return self._conf_idx[-1] if self._conf_idx else self._conf_base_index

    def _index_confs(self, entries: Sequence[Entry]) -> None:
        base_index = self._conf_base_index
        for e in entries:
            if e.kind == _CONF_CHANGE and e.index > base_index:
                self._conf_idx.append(e.index)
                self._conf_val.append(apply_entry_data(self.conf_latest(), e.data))

    # writing ------------------------------------------------------------------------------
    def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries`` (contiguous, the first in (offset, last + 1]), replacing the
        suffix from the first one's index; the configuration reverts accordingly."""
        first = entries[0].index
        if first <= self._hot_offset:  # only applied (committed) entries are cold
            raise AssertionError(f"entry {first} would replace a cold (applied) entry")
        pos = first - self._hot_offset - 1
        if pos < len(self._entries):
            self.hot_bytes -= sum(len(e.data) for e in self._entries[pos:])
            del self._entries[pos:]
            cut = bisect.bisect_left(self._conf_idx, first)
            del self._conf_idx[cut:]
            del self._conf_val[cut:]
            if first < self.unstable_from:
                self.unstable_from = first
        self._entries.extend(entries)
        self.hot_bytes += sum(len(e.data) for e in entries)
        self.last_index = entries[-1].index
        self._index_confs(entries)

    def cool(self, upto: int, keep_bytes: int) -> None:
        """Drop from memory the data of the oldest hot entries up to ``upto`` (applied
        and durable: the caller's promise) while the hot entries hold more than
        ``keep_bytes`` of data. Their terms and sizes stay."""
        entries = self._entries
        n = min(upto - self._hot_offset, len(entries))
        excess = self.hot_bytes - keep_bytes
        if n <= 0 or excess <= 0:
            return
        terms, sizes = self._cold_terms, self._cold_sizes
        count = dropped = 0
        while count < n and dropped < excess:
            e = entries[count]
            size = len(e.data)
            terms.append(e.term)
            sizes.append(size)
            dropped += size
            count += 1
        del entries[:count]
        self._hot_offset += count
        self.hot_bytes -= dropped

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to (index, term) are durable, if that entry is still in the log."""
        if index >= self.unstable_from and self.term(index) == term:
            self.unstable_from = index + 1

    def restore(self, meta: SnapshotMeta) -> None:
        """Replace the whole log by a snapshot's point."""
        self._offset = meta.index
        self._offset_term = meta.term
        self._hot_offset = meta.index
        self._cold_terms = array("q")
        self._cold_sizes = array("q")
        self._entries = []
        self.hot_bytes = 0
        self._conf_base_index = meta.index
        self._conf_base = meta.conf
        self._conf_idx = []
        self._conf_val = []
        self.last_index = meta.index
        self.unstable_from = meta.index + 1

    def compact_to(self, index: int) -> None:
        """Drop entries up to ``index`` (offset < index <= last, all durable)."""
        term = self.term(index)
        assert term is not None
        if index > self._conf_base_index:
            base = self.conf(index)
            assert base is not None
            cut = bisect.bisect_right(self._conf_idx, index)
            del self._conf_idx[:cut]
            del self._conf_val[:cut]
            self._conf_base_index = index
            self._conf_base = base
        cold = min(index, self._hot_offset) - self._offset
        del self._cold_terms[:cold]
        del self._cold_sizes[:cold]
        if index > self._hot_offset:
            hot = index - self._hot_offset
            self.hot_bytes -= sum(len(e.data) for e in self._entries[:hot])
            del self._entries[:hot]
            self._hot_offset = index
        self._offset = index
        self._offset_term = term
