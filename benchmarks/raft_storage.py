"""Benchmark of the Raft SQLite store: save latency by batch size and durability, load time.

    python benchmarks/raft_storage.py [--saves 2000] [--entry-bytes 64]
                                      [--load-entries 100000] [--dir DIR]

Prints one JSON object:

- ``save_ms_p50/p99_<n>_<durability>``: one ``save()`` of ``n`` new entries (1, 16, 256)
  plus the hard state moving its commit index, as a leader's Ready does; durability
  ``fsync`` (synchronous=FULL: one WAL fsync per save) or ``none`` (no fsync).
  ``saves_per_s_*`` and ``entries_per_s_*`` are the same runs as rates.
- ``compact_ms_p50``: ``compact()`` with a 64 KiB snapshot, keeping 1,000 trailing entries.
- ``load_s_<n>_entries``: open and ``load()`` (every CRC verified) of a log of ``n`` entries.

The scratch directory defaults to one beside the current directory's files (not /tmp,
which may be in memory): fsync figures mean nothing off the real disk.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trickle.raft.messages import (
    ConfState,
    Entry,
    HardState,
    NodeId,
    Snapshot,
    SnapshotMeta,
)
from trickle.raft.sqlstore import SqliteRaftStorage
from trickle.raft.storage import Durability

BATCHES = (1, 16, 256)
CONF = ConfState(voters=frozenset({NodeId("a"), NodeId("b"), NodeId("c")}))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def bench_saves(
    path: Path, durability: Durability, batch: int, saves: int, entry_bytes: int
) -> dict[str, float]:
    payload = b"x" * entry_bytes
    latencies: list[float] = []
    with SqliteRaftStorage(path, durability=durability) as store:
        store.save(hard_state=HardState(term=1, vote=NodeId("a")))
        index = 0
        warmup = min(50, saves // 10)
        for n in range(saves + warmup):
            entries = [Entry(term=1, index=index + i + 1, data=payload) for i in range(batch)]
            hard = HardState(term=1, vote=NodeId("a"), commit=index)
            t0 = time.perf_counter()
            store.save(hard_state=hard, entries=entries)
            elapsed = time.perf_counter() - t0
            index += batch
            if n >= warmup:
                latencies.append(elapsed)
    total = sum(latencies)
    tag = f"{batch}_{durability.value}"
    return {
        f"save_ms_p50_{tag}": round(statistics.median(latencies) * 1e3, 3),
        f"save_ms_p99_{tag}": round(pct(latencies, 99) * 1e3, 3),
        f"saves_per_s_{tag}": round(len(latencies) / total),
        f"entries_per_s_{tag}": round(len(latencies) * batch / total),
    }


def bench_compact(path: Path, entry_bytes: int) -> dict[str, float]:
    payload = b"x" * entry_bytes
    image = b"s" * 65536
    latencies: list[float] = []
    with SqliteRaftStorage(path) as store:
        index = 0
        for _ in range(30):
            entries = [Entry(term=1, index=index + i + 1, data=payload) for i in range(2000)]
            index += 2000
            store.save(
                hard_state=HardState(term=1, vote=NodeId("a"), commit=index), entries=entries
            )
            snap = Snapshot(meta=SnapshotMeta(index=index, term=1, conf=CONF), data=image)
            t0 = time.perf_counter()
            store.compact(snap, keep_from=index - 999)
            latencies.append(time.perf_counter() - t0)
    return {"compact_ms_p50": round(statistics.median(latencies) * 1e3, 3)}


def bench_load(path: Path, count: int, entry_bytes: int) -> dict[str, float]:
    payload = b"x" * entry_bytes
    with SqliteRaftStorage(path, durability=Durability.NONE) as store:
        for start in range(1, count + 1, 10_000):
            stop = min(count, start + 9_999)
            entries = [Entry(term=1, index=i, data=payload) for i in range(start, stop + 1)]
            store.save(hard_state=HardState(term=1, vote=NodeId("a"), commit=stop), entries=entries)
    t0 = time.perf_counter()
    with SqliteRaftStorage(path) as store:
        state = store.load()
    elapsed = time.perf_counter() - t0
    assert len(state.entries) == count
    return {f"load_s_{count}_entries": round(elapsed, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=2000, help="saves per batch size")
    parser.add_argument("--entry-bytes", type=int, default=64)
    parser.add_argument("--load-entries", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="raft-storage-bench-", dir=args.dir or Path.cwd()))
    try:
        result: dict[str, float] = {}
        for durability in Durability:
            for batch in BATCHES:
                saves = args.saves if batch < 256 else max(100, args.saves // 4)
                path = scratch / f"save-{batch}-{durability.value}.db"
                result |= bench_saves(path, durability, batch, saves, args.entry_bytes)
        result |= bench_compact(scratch / "compact.db", args.entry_bytes)
        result |= bench_load(scratch / "load.db", args.load_entries, args.entry_bytes)
        print(json.dumps(result))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
