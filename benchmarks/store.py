"""Benchmark of the SQLite store: apply throughput, history page latency, load time.

    python benchmarks/store.py [--jobs 10000] [--per-job 100] [--load-jobs 100000]
                               [--durability normal] [--dir DIR]

Prints one JSON object:

- ``populate_effects_per_s``: filling ``jobs`` x ``per-job`` finished records, in
  batches of 10,000 ExecutionSaved (the history is then full, so every later finish prunes).
- ``apply_effects_per_s_batch_100`` / ``_batch_1000``: fires on the full store, each fire an
  ExecutionSaved at start (running) and one at finish, in apply() batches of that many
  effects; ``apply_batch_ms_p50/p99_*``: the latency of one apply() call.
- ``list_page_ms_p50/p99``: ``list_executions`` for a random job, a page of 20 at a random
  offset, every sort and order; ``get_execution_ms_p50/p99``.
- ``load_s_<n>_jobs``: ``load()`` of a store holding ``load-jobs`` jobs.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trickle.engine.commands import ExecutionSaved, JobSaved
from trickle.engine.model import (
    Execution,
    ExecutionStatus,
    Job,
    Trigger,
    execution_id,
    group_id,
)
from trickle.engine.store import Store

T0 = datetime(2025, 1, 1, tzinfo=UTC)
OUTPUT = "Mon Jan  1 00:00:00 UTC 2025\n" * 4  # a small, typical shell output


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def job_name(i: int) -> str:
    return f"job-{i:06d}"


def make_job(i: int) -> Job:
    return Job(
        name=job_name(i),
        schedule="@every 10s",
        executor="shell",
        executor_config={"command": "date"},
        tags={"server": "true"},
        metadata={"team": f"t{i % 17}"},
        next=T0,
        created_at=T0,
        updated_at=T0,
    )


def running(job: int, started: datetime) -> Execution:
    return Execution(
        id=execution_id(started, "node1"),
        job_name=job_name(job),
        node_name="node1",
        group=group_id(started),
        started_at=started,
        scheduled_at=started,
        trigger=Trigger.SCHEDULE,
    )


def finished(e: Execution) -> Execution:
    return Execution(
        id=e.id,
        job_name=e.job_name,
        node_name=e.node_name,
        group=e.group,
        started_at=e.started_at,
        scheduled_at=e.scheduled_at,
        trigger=e.trigger,
        finished_at=e.started_at + timedelta(milliseconds=15),
        success=True,
        status=ExecutionStatus.SUCCESS,
        exit_code=0,
        output=OUTPUT,
    )


class Applier:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.index = 0

    def __call__(self, effects: list) -> float:
        self.index += 1
        t = time.perf_counter()
        self.store.apply(effects, applied_index=self.index, fsm_meta=b"{}")
        return time.perf_counter() - t


def bench_history(root: Path, jobs: int, per_job: int, durability: str) -> dict[str, float]:
    out: dict[str, float] = {}
    store = Store(root / "history", durability=durability, history_limit=per_job)
    apply = Applier(store)
    apply([JobSaved(make_job(i)) for i in range(jobs)])

    # fill every job's history: per_job finished records each
    clock = T0
    effects: list = []
    spent, total = 0.0, 0
    for i in range(jobs):
        for _ in range(per_job):
            clock += timedelta(microseconds=37)
            effects.append(ExecutionSaved(finished(running(i, clock))))
        if len(effects) >= 10_000:
            spent += apply(effects)
            total += len(effects)
            effects = []
    if effects:
        spent += apply(effects)
        total += len(effects)
    out["populate_records"] = total
    out["populate_effects_per_s"] = round(total / spent)

    # steady state: fires over the jobs round robin, start then finish, history full
    rng = random.Random(1)
    next_job = 0
    for batch in (100, 1000):
        pending: list[Execution] = []
        latencies: list[float] = []
        effects_done = 0
        deadline = time.perf_counter() + 8.0
        while time.perf_counter() < deadline or len(latencies) < 20:
            effects = [ExecutionSaved(finished(e)) for e in pending]
            pending = []
            while len(effects) < batch:
                clock += timedelta(microseconds=rng.randrange(1, 1000))
                e = running(next_job % jobs, clock)
                next_job += 1
                pending.append(e)
                effects.append(ExecutionSaved(e))
            latencies.append(apply(effects))
            effects_done += len(effects)
        out[f"apply_effects_per_s_batch_{batch}"] = round(effects_done / sum(latencies))
        out[f"apply_batch_ms_p50_batch_{batch}"] = round(pct(latencies, 50) * 1000, 2)
        out[f"apply_batch_ms_p99_batch_{batch}"] = round(pct(latencies, 99) * 1000, 2)
        if pending:
            apply([ExecutionSaved(finished(e)) for e in pending])

    # history pages
    page_ms: list[float] = []
    get_ms: list[float] = []
    ids: list[tuple[str, str]] = []
    for n in range(3000):
        name = job_name(rng.randrange(jobs))
        sort = ("started_at", "finished_at", "attempt")[n % 3]
        order = ("asc", "desc")[(n // 3) % 2]
        start = rng.randrange(per_job)
        t = time.perf_counter()
        page, count = store.list_executions(
            name, sort=sort, order=order, start=start, end=start + 20
        )
        page_ms.append((time.perf_counter() - t) * 1000)
        assert count >= per_job, (name, count)
        if page:
            ids.append((name, page[0].id))
    for name, eid in ids[:2000]:
        t = time.perf_counter()
        found = store.get_execution(name, eid)
        get_ms.append((time.perf_counter() - t) * 1000)
        assert found is not None
    out["list_page_ms_p50"] = round(pct(page_ms, 50), 3)
    out["list_page_ms_p99"] = round(pct(page_ms, 99), 3)
    out["list_page_ms_mean"] = round(statistics.fmean(page_ms), 3)
    out["get_execution_ms_p50"] = round(pct(get_ms, 50), 3)
    out["get_execution_ms_p99"] = round(pct(get_ms, 99), 3)
    db = store.database_file
    store.close()
    assert db is not None
    out["db_mb"] = round(db.stat().st_size / 2**20, 1)
    return out


def bench_load(root: Path, jobs: int, durability: str) -> dict[str, float]:
    store = Store(root / "load", durability=durability)
    apply = Applier(store)
    t = time.perf_counter()
    for first in range(0, jobs, 10_000):
        apply([JobSaved(make_job(i)) for i in range(first, min(jobs, first + 10_000))])
    save_s = time.perf_counter() - t
    store.close()
    store = Store(root / "load", durability=durability)
    t = time.perf_counter()
    state = store.load()
    load_s = time.perf_counter() - t
    store.close()
    assert len(state.jobs) == jobs
    return {f"save_s_{jobs}_jobs": round(save_s, 2), f"load_s_{jobs}_jobs": round(load_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--per-job", type=int, default=100)
    parser.add_argument("--load-jobs", type=int, default=100_000)
    parser.add_argument("--durability", default="normal", choices=("full", "normal", "off"))
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="trickle-store-bench-", dir=args.dir))
    started = time.perf_counter()
    try:
        result: dict[str, object] = {
            "jobs": args.jobs,
            "per_job": args.per_job,
            "durability": args.durability,
        }
        result.update(bench_history(root, args.jobs, args.per_job, args.durability))
        if args.load_jobs:
            result.update(bench_load(root, args.load_jobs, args.durability))
        result["wall_s"] = round(time.perf_counter() - started, 1)
        print(json.dumps(result))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
