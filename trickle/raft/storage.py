"""Where a Raft node keeps its log, term/vote and snapshots: the contract and its stores.

A store is synchronous (the Trio driver calls SQLite stores through worker threads).
``save`` is one durable batch: when it returns, everything in it survives a crash (with
``Durability.FSYNC``), and a crash during it leaves either all of it or none of it.
``load`` returns exactly what was last made durable; a torn or partial tail is detected and
cut, never misread; damage that is not a tail raises StorageCorrupt.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol

from trickle.raft.messages import DurableState, Entry, HardState, Snapshot


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
        stored entries it covers unless they match it), ``entries`` (the first one's index
        replaces the stored suffix from there), ``hard_state``."""
        ...

    def compact(self, snapshot: Snapshot, *, keep_from: int) -> None:
        """Store a snapshot the application took; delete entries below ``keep_from``."""
        ...

    def close(self) -> None: ...
