"""Scheduler benchmark: trickle's Engine against APScheduler 3, same jobs, same run.

    python benchmarks/scheduler.py --jobs 10000 --every 10 --duration 30 [--spread|--burst]
        [--mix] [--warmup S] [--systems trickle,apscheduler]
        [--apscheduler-mode asyncio|background] [--apscheduler-store memory|sqlite]

Prints ONE JSON object ``{"trickle": {...}, "apscheduler": {...}}``. Each system runs in
its own subprocess (``--worker trickle|apscheduler``, which prints that system's object),
one after the other, so RSS and CPU are per system and they do not share the 2 cores.

The jobs. ``--jobs N`` jobs, all firing once every ``--every S`` seconds with a no-op Python
callable. Job ``i`` has an intended phase ``p_i``: it should fire at the wall-clock instants
``t`` with ``t mod S == p_i``. Two loads, the same for both systems:

* ``--spread`` (the default): ``p_i = i * S / N`` seconds, fractional. This is N jobs
  created over time, one every ``S / N`` seconds (10,000 jobs every 10 s: 1,000 fires/s,
  one every millisecond), what a production node with 1,000 fires/s looks like.
* ``--burst``: ``p_i = i mod S``, whole seconds: ``N / S`` fires fall due at the same
  instant each second (10,000 jobs every 10 s: bursts of 1,000 simultaneous fires). This
  measures burst handling.

How each system gets the phases (only when ``S <= 60``; above that nothing is paced, the
jobs are stored at once and each job's period counts from when it was added, for both
systems: the memory/registration benchmark ``--jobs 100000 --every 3600``):

* trickle: ``@every Ss`` fires at ``anchor + k*S`` where the anchor is the engine clock's
  time when ``put_job`` is called, sub-second part included (Dkron truncates it to the
  second; trickle keeps it since commit 7c6b613). Spread: the worker calls ``put_job`` for
  job ``i`` at the first instant with phase ``p_i`` (``trio.sleep_until`` on a precomputed
  schedule, each call in its own task) and reports how close the stored
  ``schedule_anchor`` landed (``anchor_error_ms_mean``/``_max``). Burst: the jobs of
  phase ``p`` are stored just after the start of a second with that phase, each with its
  anchor set to that whole second through the engine's clock (see ``_bench_clock``): the
  state of jobs stored in one instant, as ``Engine.restore`` does with all its jobs.
* APScheduler: ``IntervalTrigger(seconds=S, start_date=<the first instant with phase
  p_i>)``, fractional in spread mode.

Both systems report how the planned first fires match the phases: ``fire_phase_error_ms_mean``
/ ``_max`` (circular distance of the first fire mod S from ``p_i``), ``anchors_misplaced``
(jobs more than 10 ms off; both None when not paced) and ``fires_due_max_same_instant``
(the biggest group of jobs due at the same millisecond: the largest burst). The expected
fires are computed from each job's real first fire, so misplaced phases do not count as
missing fires.

``--mix`` (mixed schedules): of every 5 groups of S consecutive jobs, 3 use ``@every Ss`` and
2 use Dkron's 6-field cron (seconds first; in spread mode at the whole second below their
phase) at the same rate, one of the two in the
timezone Europe/Berlin (trickle's job ``timezone``; APScheduler's ``CronTrigger(timezone=)``):
``p/S * * * * *`` when S < 60 divides 60, ``s m/M * * * *`` when S = 60*M and M divides 60,
``s m h/H * * *`` when S = 3600*H and H divides 24 (``--mix`` refuses other ``--every``).
APScheduler gets the equivalent ``CronTrigger`` fields.

What is measured, after registration and ``--warmup`` seconds (default ``min(S, 10)``), over
``--duration`` seconds: the fires whose scheduled time falls in that window.

* ``lateness_ms_*``: wall clock read first thing in the job's callable minus the fire's
  scheduled time (trickle: ``ctx.execution.scheduled_at``; APScheduler: the
  ``scheduled_run_time`` of the job's ``EVENT_JOB_EXECUTED``, paired with the time the
  callable recorded for that job; runs of one job never overlap). Nearest-rank percentiles.
* ``fires``, ``fires_expected`` (from each job's first planned fire and S), ``fires_missing``
  (expected fires not seen by the end of the drain, ``max(5, S)`` s after the window),
  ``fires_per_s = fires / duration``.
* ``rss_mb`` (at the end of the window), ``rss_setup_mb`` (after registration),
  ``rss_peak_mb``; ``cpu_s`` (user+system, all threads, during the window), ``cpu_pct``;
  ``host_steal_pct`` (the host's CPU time the hypervisor gave other guests during the
  window, in % of all cores: compare figures only between runs where it is low);
  ``setup_s`` (wall time to register everything, pacing included), ``register_s`` (time
  spent registering, pacing excluded; trickle: wall time with a ``put_job`` in flight,
  None in spread mode, where that is most of the pacing), ``cpu_setup_s``.
* trickle only: ``put_job_ms_p50``/``_p99`` (latency of each ``put_job`` call),
  ``engine_*`` from ``Engine.statistics()`` (``engine_fires_missed``: fires skipped because
  the scheduler fell a period behind), ``store_mb``, ``engine_error_at_stop`` (an exception
  raised while the engine stopped, reported rather than losing the figures). Both:
  ``load`` (spread, burst or unpaced), ``log_warnings``, warnings counted by message
  (trickle logs "N fires of K jobs missed (scheduler behind), e.g. job J").
* trickle only, the garbage collector during the window: ``gc_collections`` (by
  generation) and the pauses of full collections, ``gc_full_pause_ms_max`` / ``_total``.
  By default the worker has the collector settings ``trickle serve`` uses, which
  docs/embedding.md advises for an embedding program (``trickle.tune_gc()`` once the jobs
  are stored: freeze, young threshold 20,000): ``gc_mode`` "serve". ``--no-gc-serve``
  keeps Python's settings (``gc_mode`` "python": full collections of every live object,
  pauses of 100-200 ms at 10,000 jobs); ``--gc-freeze`` and ``--gc-threshold N`` set them
  one by one instead (``gc_mode`` "custom").

trickle runs the real Engine: an SQLite data dir in a temp directory (default durability),
the default ``history_limit``, every fire and finish committed to the store. APScheduler 3
runs with its in-memory job store, ``coalesce=False``, ``misfire_grace_time`` 3600 s,
``max_instances`` 100, its scheduler in UTC, in one of two modes: ``background`` (default:
``BackgroundScheduler`` and its default pool of 10 threads, which start jobs while the
scheduler is still submitting the rest of a burst: its best lateness for no-op jobs on this
machine) or ``asyncio`` (``AsyncIOScheduler``, a native coroutine job run on the event loop
by ``AsyncIOExecutor``: less CPU, but a burst's jobs only start once all are submitted).
When ``--every`` is above 60 (no pacing), APScheduler's interval jobs also start one period
after they are added, as trickle's ``@every`` does.

The parent adds ``vs_apscheduler`` (trickle / APScheduler ratios) to trickle's object and
``host`` (Python, CPUs, date) to both. ``--systems trickle`` runs one system only.

Not a test: nothing is asserted. Each run stops by itself, and removes its temp dirs.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from array import array
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SYSTEMS = ("trickle", "apscheduler")
MAX_PACED_EVERY = 60  # seconds; registration of @every jobs is paced up to this period
REGISTER_CONCURRENCY = 500  # concurrent put_job calls in the trickle worker
PACE_SLACK = 0.02  # burst: seconds after a second boundary before registering its jobs
MISPLACED_S = 0.010  # a first fire further than this from its intended phase is misplaced
PACE_LEAD = 0.5  # spread: seconds between planning the registration instants and the first
BERLIN = "Europe/Berlin"
PROGRESS_EVERY = 10_000  # jobs; the trickle worker logs its registration progress


# -- the job plan, shared by both workers ------------------------------------------------


@attrs.frozen
class JobSpec:
    """One benchmark job: ``kind`` is 'every' or 'cron'; it is meant to fire at the
    wall-clock instants ``t`` (Unix seconds) with ``t mod every == phase``. ``phase`` is a
    whole number of seconds in burst mode and for cron jobs, fractional for ``@every``
    jobs in spread mode."""

    index: int
    name: str
    kind: str
    phase: float
    every: int
    timezone: str = ""

    def cron_fields(self) -> tuple[str, str, str]:
        """(second, minute, hour) fields of the equivalent cron expression."""
        s, p = self.every, int(self.phase)
        if s < 60:
            return f"{p}/{s}", "*", "*"
        if s < 3600:
            return str(p % 60), f"{p // 60}/{s // 60}", "*"
        return str(p % 60), str((p // 60) % 60), f"{p // 3600}/{s // 3600}"

    def trickle_schedule(self) -> str:
        if self.kind == "every":
            return f"@every {self.every}s"
        sec, minute, hour = self.cron_fields()
        return f"{sec} {minute} {hour} * * *"


def check_mixable(every: int) -> None:
    ok = (
        (every < 60 and 60 % every == 0)
        or (every % 60 == 0 and every < 3600 and 60 % (every // 60) == 0)
        or (every % 3600 == 0 and 24 % (every // 3600) == 0)
    )
    if not ok:
        raise SystemExit(
            f"--mix needs an --every that a cron step can express (a divisor of 60 seconds, "
            f"of 60 minutes or of 24 hours); got {every}"
        )


def plan_jobs(n: int, every: int, mix: bool, spread: bool = False) -> list[JobSpec]:
    """The N jobs. Burst: phase ``i mod every`` (whole seconds). Spread: phase
    ``i * every / n`` (fractional; cron jobs, whole seconds only, get its floor). With
    ``mix``, groups of ``every`` consecutive jobs alternate every, every, every, cron UTC,
    cron Berlin."""
    specs = []
    for i in range(n):
        kind, tz = "every", ""
        if mix:
            group = (i // every) % 5
            if group == 3:
                kind = "cron"
            elif group == 4:
                kind, tz = "cron", BERLIN
        if spread:
            phase = i * every / n
            if kind == "cron":
                phase = float(math.floor(phase))
        else:
            phase = float(i % every)
        specs.append(
            JobSpec(
                index=i, name=f"bench-{i:06d}", kind=kind, phase=phase, every=every, timezone=tz
            )
        )
    return specs


def next_instant_with_phase(phase: float, every: int, after: float) -> float:
    """The first wall-clock instant ``>= after`` with ``t mod every == phase``."""
    return after + ((phase - after) % every)


def _ms_stats(prefix: str, errors_s: list[float]) -> dict[str, float | None]:
    if not errors_s:
        return {f"{prefix}_mean": None, f"{prefix}_max": None}
    ms = [abs(e) * 1000.0 for e in errors_s]
    return {f"{prefix}_mean": round(sum(ms) / len(ms), 3), f"{prefix}_max": round(max(ms), 3)}


def phase_report(
    specs: list[JobSpec], first_fires: list[float], every: int, paced: bool
) -> dict[str, Any]:
    """How the planned first fires match the intended phases.

    ``fire_phase_error_ms_*``: circular distance between each job's first fire (mod
    ``every``) and its intended phase; ``anchors_misplaced``: jobs whose first fire is more
    than 10 ms off its phase (both None when not paced: the phases are not planned then);
    ``fires_due_max_same_instant``: the largest number of jobs whose fires fall due at the
    same instant (to the millisecond), the biggest burst the scheduler dispatches at once."""
    errors = []
    instants: dict[float, int] = {}
    for spec, first in zip(specs, first_fires, strict=True):
        d = (first - spec.phase) % every
        errors.append(min(d, every - d))
        key = round(first % every, 3)
        instants[key] = instants.get(key, 0) + 1
    out: dict[str, Any] = _ms_stats("fire_phase_error_ms", errors if paced else [])
    out["anchors_misplaced"] = sum(1 for e in errors if e > MISPLACED_S) if paced else None
    out["fires_due_max_same_instant"] = max(instants.values()) if instants else 0
    return out


def load_name(args: argparse.Namespace) -> str:
    """'spread' or 'burst' (the phases), or 'unpaced' when ``--every`` is above the pacing
    limit (each job's period then counts from when it was added)."""
    return args.load if args.every <= MAX_PACED_EVERY else "unpaced"


def expected_fires(first_fires: list[float], every: int, start: float, end: float) -> int:
    """Fires of period ``every`` from each first fire that fall in [start, end)."""
    total = 0
    for first in first_fires:
        if first >= end:
            continue
        k0 = 0 if first >= start else math.ceil((start - first) / every)
        k1 = math.ceil((end - first) / every)  # first k with first + k*every >= end
        total += max(0, k1 - k0)
    return total


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def lateness_summary(late_s: list[float]) -> dict[str, float | None]:
    values = sorted(x * 1000.0 for x in late_s)

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 3)

    return {
        "lateness_ms_p50": r(percentile(values, 0.50)),
        "lateness_ms_p90": r(percentile(values, 0.90)),
        "lateness_ms_p99": r(percentile(values, 0.99)),
        "lateness_ms_p999": r(percentile(values, 0.999)),
        "lateness_ms_max": r(values[-1] if values else None),
        "lateness_ms_mean": r(sum(values) / len(values) if values else None),
    }


def _rss_mb() -> float:
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


def _cpu_s() -> float:
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


def _host_steal_pct() -> float | None:
    """The share of the host's CPU time the hypervisor gave to other guests since the
    previous call, in % of all cores (None where the OS does not count it). On a shared VM
    the largest source of noise: with 20-35% of it, trickle's p99 went from 3 to 50-250 ms
    in session 9, APScheduler's (a third of trickle's CPU) from 0.6 to 5-7 ms."""
    import psutil

    steal = getattr(psutil.cpu_times_percent(), "steal", None)
    return None if steal is None else round(steal, 1)


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class GcPauses:
    """The garbage collector's pauses while in the ``with`` block (gc.callbacks): the
    tail of the lateness follows them when a full collection walks every live object."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._callback)

    def report(self) -> dict[str, Any]:
        """``gc_collections`` by generation, and the pauses of full (gen 2) collections."""
        full = self.pauses[2]
        return {
            "gc_collections": [len(self.pauses[g]) for g in (0, 1, 2)],
            "gc_full_pause_ms_max": round(1000 * max(full), 1) if full else None,
            "gc_full_pause_ms_total": round(1000 * sum(full), 1),
        }


class LogCounter(logging.Handler):
    """Counts warnings by message template; prints the first few of each to stderr."""

    SHOWN = 3

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.name}: {record.msg}"
        n = self.counts[key] = self.counts.get(key, 0) + 1
        if n <= self.SHOWN:
            print(
                f"  log {record.levelname}: {record.getMessage()}"
                + ("  (further ones counted, not shown)" if n == self.SHOWN else ""),
                file=sys.stderr,
                flush=True,
            )


def install_log_counter() -> LogCounter:
    counter = LogCounter()
    root = logging.getLogger()
    root.addHandler(counter)
    root.setLevel(logging.WARNING)
    return counter


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Window:
    """The measurement window and the drain after it, on the wall clock."""

    def __init__(self, warmup: float, duration: float, every: int) -> None:
        self.start = time.time() + warmup
        self.end = self.start + duration
        self.drain_until = self.end + max(5.0, float(every))
        self.duration = duration


class Records:
    """The (scheduled, called) wall-clock pairs of the fires, interleaved in one float
    array. A tuple per fire was an object for the measured process's garbage collector to
    walk, not freed until the end: at 1,000 fires/s it drove a young collection every ~20
    s that walked the 18,000 tuples (and the system's own young objects) in a 20 ms
    pause. ``add`` is one C call under the GIL: pairs from several threads stay whole."""

    def __init__(self) -> None:
        self._data = array("d")
        self.add = self._data.extend  # add((scheduled, called))

    def __len__(self) -> int:
        return len(self._data) // 2

    def count_in(self, start: float, end: float, lo: int, hi: int) -> int:
        """How many of the pairs ``lo:hi`` were scheduled in ``[start, end)``."""
        return sum(1 for s in self._data[2 * lo : 2 * hi : 2] if start <= s < end)

    def pairs(self) -> list[tuple[float, float]]:
        data = self._data
        return list(zip(data[0::2], data[1::2], strict=True))


def summarize(
    *,
    records: list[tuple[float, float]],
    window: Window,
    first_fires: list[float],
    every: int,
    cpu_window: float,
    rss_end: float,
    host_steal_pct: float | None = None,
) -> dict[str, Any]:
    """The figures of one worker from ``(scheduled, called)`` wall-clock pairs."""
    late = [called - sched for sched, called in records if window.start <= sched < window.end]
    expected = expected_fires(first_fires, every, window.start, window.end)
    out: dict[str, Any] = {
        "fires": len(late),
        "fires_expected": expected,
        "fires_missing": max(0, expected - len(late)),
        "fires_per_s": round(len(late) / window.duration, 2),
    }
    out.update(lateness_summary(late))
    out.update(
        {
            "rss_mb": rss_end,
            "rss_peak_mb": max(_peak_rss_mb(), rss_end),
            "cpu_s": round(cpu_window, 2),
            "cpu_pct": round(100.0 * cpu_window / window.duration, 1),
            "host_steal_pct": host_steal_pct,
        }
    )
    return out


# -- the trickle worker --------------------------------------------------------------------


def _bench_clock() -> Any:
    """The engine's system clock, whose next ``now()`` can be set once (``set_next``).

    Burst mode stores each job with its anchor on a whole second: ``Engine.put_job`` reads
    the anchor from ``clock.now()`` before its first checkpoint, so ``set_next(t)`` followed
    at once by ``await engine.put_job(...)`` gives that job the anchor ``t`` and no other
    reading of the clock. The worker checks every stored anchor (``anchors_misplaced``)."""
    from trickle.engine.clock import SystemClock

    class BenchClock(SystemClock):
        def __init__(self) -> None:
            self._next: datetime | None = None

        def set_next(self, when: datetime) -> None:
            self._next = when

        def clear(self) -> None:
            self._next = None

        def now(self) -> datetime:
            when, self._next = self._next, None
            return when if when is not None else super().now()

    return BenchClock()


def run_trickle_worker(args: argparse.Namespace) -> dict[str, Any]:
    import trio

    own_dir = None
    data_dir = args.data_dir
    if data_dir is None:
        own_dir = tempfile.mkdtemp(prefix="trickle-bench-")
        data_dir = own_dir
    try:
        data = Path(data_dir) / "data"
        out: dict[str, Any] = trio.run(_trickle_main, args, data)
        size = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
        out["store_mb"] = round(size / 2**20, 1)
        return out
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


async def _trickle_main(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    import trio

    from trickle import Engine, EngineConfig, ExecutionContext, Job, JobQuery
    from trickle._version import __version__

    log_counter = install_log_counter()
    every: int = args.every
    spread = args.load == "spread"
    specs = plan_jobs(args.jobs, every, args.mix, spread)
    records = Records()
    add = records.add
    clock = time.time

    async def noop(ctx: ExecutionContext) -> None:
        called = clock()
        scheduled = ctx.execution.scheduled_at
        assert scheduled is not None
        add((scheduled.timestamp(), called))

    def job_of(spec: JobSpec) -> Job:
        return Job(
            name=spec.name,
            schedule=spec.trickle_schedule(),
            timezone=spec.timezone,
            executor="noop",
        )

    config = EngineConfig(data_dir=data_dir, node_name="bench")
    bench_clock = _bench_clock()
    cpu0 = _cpu_s()
    t_open = time.time()
    done = False
    stop_error = None
    try:
        async with Engine(config, clock=bench_clock) as engine:
            engine.register_executor("noop", noop)
            open_s = time.time() - t_open
            busy = 0.0  # wall time with at least one put_job in flight
            in_flight = 0
            busy_since = 0.0
            stored = 0
            put_latency: list[float] = []

            async def put(spec: JobSpec, anchor: datetime | None = None) -> None:
                """Store one job; ``anchor`` given: with that anchor (see _bench_clock)."""
                nonlocal busy, in_flight, busy_since, stored
                job = job_of(spec)
                t0 = time.perf_counter()
                if in_flight == 0:
                    busy_since = t0
                in_flight += 1
                try:
                    if anchor is not None:
                        bench_clock.set_next(anchor)
                    await engine.put_job(job)
                finally:
                    bench_clock.clear()
                    in_flight -= 1
                    t1 = time.perf_counter()
                    put_latency.append(t1 - t0)
                    if in_flight == 0:
                        busy += t1 - busy_since
                stored += 1
                if stored % PROGRESS_EVERY == 0:
                    _log(f"trickle: {stored} jobs stored")

            async def register(batch: list[JobSpec], anchor: datetime | None = None) -> None:
                """Store a batch at once, ``REGISTER_CONCURRENCY`` calls in flight."""
                it = iter(batch)

                async def worker() -> None:
                    for spec in it:
                        await put(spec, anchor)

                async with trio.open_nursery() as nursery:
                    for _ in range(min(REGISTER_CONCURRENCY, len(batch))):
                        nursery.start_soon(worker)

            async def register_at(plan: list[tuple[float, JobSpec]]) -> None:
                """Store each job at its wall-clock instant (``plan`` sorted by instant):
                ``put_job`` reads the anchor from the engine's clock as it is called."""
                offset = time.time() - trio.current_time()  # wall clock - Trio's clock
                async with trio.open_nursery() as nursery:
                    for at, spec in plan:
                        await trio.sleep_until(at - offset)
                        nursery.start_soon(put, spec)

            t_setup = time.time()
            paced = every <= MAX_PACED_EVERY
            everies = [s for s in specs if s.kind == "every"]
            await register([s for s in specs if s.kind != "every"] + ([] if paced else everies))
            intended: dict[str, float] = {}  # spread: job name -> intended registration instant
            if paced and everies and spread:
                after = time.time() + PACE_LEAD
                plan = sorted(
                    ((next_instant_with_phase(s.phase, every, after), s) for s in everies),
                    key=lambda pair: pair[0],
                )
                intended = {spec.name: at for at, spec in plan}
                await register_at(plan)
            elif paced and everies:
                by_phase: dict[int, list[JobSpec]] = {}
                for spec in everies:
                    by_phase.setdefault(int(spec.phase), []).append(spec)
                while by_phase:
                    second = math.floor(time.time()) + 1
                    await trio.sleep(max(0.0, second + PACE_SLACK - time.time()))
                    phase = second % every
                    batch = by_phase.pop(phase, None)
                    if batch:  # anchored on that whole second, as if all set in one instant
                        await register(batch, datetime.fromtimestamp(second, tz=UTC))
            setup_s = time.time() - t_setup
            cpu_setup = _cpu_s() - cpu0
            if intended:  # paced one by one: the time in flight is most of the pacing
                busy = 0.0
            first_fires = []
            anchor_errors = []
            # one linearizable read for all the jobs: 10,000 get_job calls were 10,000
            # read barriers through Raft, run into the warm-up (and, on a loaded machine,
            # into the window: seconds of extra work that the fires queued behind)
            stored_jobs, _total = await engine.list_jobs(JobQuery())
            by_name = {job.name: job for job in stored_jobs}
            for spec in specs:
                job = by_name[spec.name]
                assert job.next is not None
                first_fires.append(job.next.timestamp())
                if spec.name in intended:
                    assert job.schedule_anchor is not None
                    anchor_errors.append(job.schedule_anchor.timestamp() - intended[spec.name])
            phases = phase_report(specs, first_fires, every, paced)
            rss_setup = _rss_mb()
            _log(
                f"trickle: {len(specs)} jobs stored in {setup_s:.1f}s "
                f"({busy:.1f}s registering), rss {rss_setup} MB, "
                f"{phases['anchors_misplaced']} first fires off their phase"
            )

            if args.gc_threshold is not None:
                gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
            if args.gc_freeze:
                gc.freeze()
            if args.gc_serve:
                from trickle import tune_gc

                tune_gc()
            window = Window(args.warmup, args.duration, every)
            await trio.sleep(max(0.0, window.start - time.time()))
            cpu_start = _cpu_s()
            _host_steal_pct()  # starts the host's count
            with GcPauses() as gc_pauses:
                await trio.sleep(max(0.0, window.end - time.time()))
            cpu_window = _cpu_s() - cpu_start
            steal = _host_steal_pct()
            rss_end = _rss_mb()
            expected = expected_fires(first_fires, every, window.start, window.end)
            seen, checked = 0, 0
            while time.time() < window.drain_until:
                upto = len(records)
                seen += records.count_in(window.start, window.end, checked, upto)
                checked = upto
                if seen >= expected:
                    break
                await trio.sleep(0.2)
            stats = engine.statistics()
            pairs = records.pairs()
            done = True
    except Exception as exc:  # a failure while stopping still reports the figures
        if not done:
            raise
        stop_error = "".join(traceback.format_exception_only(exc)).strip()
        _log(f"trickle: the engine failed while stopping: {stop_error}")
        traceback.print_exception(exc, file=sys.stderr)

    out = {
        "system": "trickle",
        "version": __version__,
        "jobs": len(specs),
        "every_s": every,
        "mix": args.mix,
        "schedules": _kinds(specs),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "engine_open_s": round(open_s, 3),
        "setup_s": round(setup_s, 2),
        "register_s": round(busy, 2) if busy else None,
        "jobs_registered_per_s": round(len(specs) / busy, 1) if busy else None,
        "cpu_setup_s": round(cpu_setup, 2),
        "rss_setup_mb": rss_setup,
        "load": load_name(args),
    }
    put_ms = sorted(x * 1000.0 for x in put_latency)
    for q, key in ((0.5, "put_job_ms_p50"), (0.99, "put_job_ms_p99")):
        v = percentile(put_ms, q)
        out[key] = None if v is None else round(v, 3)
    out.update(_ms_stats("anchor_error_ms", anchor_errors) if intended else {})
    out.update(phases)
    out.update(
        summarize(
            records=pairs,
            window=window,
            first_fires=first_fires,
            every=every,
            cpu_window=cpu_window,
            rss_end=rss_end,
            host_steal_pct=steal,
        )
    )
    out.update(
        {
            "store": "sqlite",
            "durability": config.durability,
            "history_limit": config.history_limit,
            "engine_fires_total": stats.fires_total,
            "engine_fires_skipped": stats.fires_skipped,
            "engine_fires_missed": stats.fires_missed,
            "engine_commands_applied": stats.commands_applied,
            "engine_events_dropped": stats.events_dropped,
            "engine_error_at_stop": stop_error,
            "gc_mode": "serve"
            if args.gc_serve
            else "custom"
            if (args.gc_freeze or args.gc_threshold is not None)
            else "python",
            "gc_threshold": list(gc.get_threshold()),
            "gc_frozen": gc.get_freeze_count(),
            **gc_pauses.report(),
            "log_warnings": log_counter.counts,
        }
    )
    return out


def _kinds(specs: list[JobSpec]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for s in specs:
        key = s.kind if s.kind == "every" else f"cron{'_' + s.timezone if s.timezone else ''}"
        kinds[key] = kinds.get(key, 0) + 1
    return kinds


# -- the APScheduler worker ----------------------------------------------------------------


def _aps_trigger(spec: JobSpec, base: float) -> Any:
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if spec.kind == "every":
        if spec.every > MAX_PACED_EVERY:  # as trickle's unpaced @every: from when it is added
            start = math.floor(base) + spec.every - 1
        else:  # the first instant >= base with this phase (fractional in spread mode)
            start = next_instant_with_phase(spec.phase, spec.every, base)
        return IntervalTrigger(
            seconds=spec.every, start_date=datetime.fromtimestamp(start, tz=UTC), timezone=UTC
        )
    sec, minute, hour = spec.cron_fields()
    return CronTrigger(second=sec, minute=minute, hour=hour, timezone=spec.timezone or "UTC")


_APS_CALLED: list[float] = []  # call times, for APScheduler's persistent job store


def _aps_persistent_job(i: int) -> None:
    _APS_CALLED[i] = time.time()


def run_apscheduler_worker(args: argparse.Namespace) -> dict[str, Any]:
    import apscheduler
    from apscheduler.events import EVENT_JOB_EXECUTED

    log_counter = install_log_counter()
    every: int = args.every
    specs = plan_jobs(args.jobs, every, args.mix, args.load == "spread")
    n = len(specs)
    called = [0.0] * n
    records = Records()
    add = records.add
    clock = time.time
    job_defaults = {"coalesce": False, "misfire_grace_time": 3600, "max_instances": 100}

    def on_executed(event: Any) -> None:
        add((event.scheduled_run_time.timestamp(), called[int(event.job_id)]))

    result: dict[str, Any] = {}

    def measure(scheduler: Any, setup_s: float, cpu_setup: float, sleep: Any) -> None:
        next_runs = {job.id: job.next_run_time.timestamp() for job in scheduler.get_jobs()}
        first_fires = [next_runs[str(spec.index)] for spec in specs]
        phases = phase_report(specs, first_fires, every, every <= MAX_PACED_EVERY)
        rss_setup = _rss_mb()
        _log(f"apscheduler: {n} jobs added in {setup_s:.1f}s, rss {rss_setup} MB")
        window = Window(args.warmup, args.duration, every)
        sleep(window.start - time.time())
        cpu_start = _cpu_s()
        _host_steal_pct()  # starts the host's count
        sleep(window.end - time.time())
        cpu_window = _cpu_s() - cpu_start
        steal = _host_steal_pct()
        rss_end = _rss_mb()
        expected = expected_fires(first_fires, every, window.start, window.end)
        seen, checked = 0, 0
        while time.time() < window.drain_until:
            upto = len(records)
            seen += records.count_in(window.start, window.end, checked, upto)
            checked = upto
            if seen >= expected:
                break
            sleep(0.2)
        result.update(
            {
                "system": "apscheduler",
                "version": apscheduler.__version__,
                "mode": args.apscheduler_mode,
                "store": args.apscheduler_store,
                "jobs": n,
                "every_s": every,
                "mix": args.mix,
                "schedules": _kinds(specs),
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "setup_s": round(setup_s, 2),
                "register_s": round(setup_s, 2),
                "jobs_registered_per_s": round(n / setup_s, 1) if setup_s else None,
                "cpu_setup_s": round(cpu_setup, 2),
                "rss_setup_mb": rss_setup,
                "load": load_name(args),
                **phases,
                "log_warnings": log_counter.counts,
            }
        )
        result.update(
            summarize(
                records=records.pairs(),
                window=window,
                first_fires=first_fires,
                every=every,
                cpu_window=cpu_window,
                rss_end=rss_end,
                host_steal_pct=steal,
            )
        )

    def add_all(scheduler: Any, func: Any) -> None:
        # burst: from the next whole second; spread: from 1 s on (adding 10,000 jobs takes
        # about 1 s; a start passed meanwhile moves the job's first fire one period on)
        base = time.time() + 1 if args.load == "spread" else math.floor(time.time()) + 1
        for spec in specs:
            scheduler.add_job(
                func,
                _aps_trigger(spec, base),
                args=(spec.index,),
                id=str(spec.index),
                name=spec.name,
            )

    if args.apscheduler_mode == "asyncio":
        import asyncio

        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        async def job(i: int) -> None:
            called[i] = clock()

        async def main() -> None:
            cpu0 = _cpu_s()
            t0 = time.time()
            scheduler = AsyncIOScheduler(timezone=UTC, job_defaults=job_defaults)
            scheduler.add_listener(on_executed, EVENT_JOB_EXECUTED)
            add_all(scheduler, job)
            scheduler.start()
            setup_s = time.time() - t0
            loop = asyncio.get_running_loop()
            # the measuring thread sleeps; the event loop runs the scheduler meanwhile
            await loop.run_in_executor(
                None,
                measure,
                scheduler,
                setup_s,
                _cpu_s() - cpu0,
                lambda s: time.sleep(max(0.0, s)),
            )
            scheduler.shutdown(wait=False)

        asyncio.run(main())
    else:
        from apscheduler.schedulers.background import BackgroundScheduler

        def sync_job(i: int) -> None:
            called[i] = clock()

        jobstores: dict[str, Any] = {}
        if args.apscheduler_store == "sqlite":
            from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

            # a persistent store pickles its jobs: they must name a module-level function
            _APS_CALLED[:] = called
            sync_job = _aps_persistent_job  # type: ignore[assignment]
            called = _APS_CALLED
            url = f"sqlite:///{Path(args.data_dir) / 'apscheduler.db'}"
            jobstores["default"] = SQLAlchemyJobStore(url=url)
        cpu0 = _cpu_s()
        t0 = time.time()
        scheduler = BackgroundScheduler(
            timezone=UTC, job_defaults=job_defaults, jobstores=jobstores
        )
        scheduler.add_listener(on_executed, EVENT_JOB_EXECUTED)
        add_all(scheduler, sync_job)
        scheduler.start()
        measure(scheduler, time.time() - t0, _cpu_s() - cpu0, lambda s: time.sleep(max(0.0, s)))
        scheduler.shutdown(wait=False)
    return result


# -- the parent ----------------------------------------------------------------------------


def run_worker(system: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Run one system's worker in a subprocess and return its JSON object."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        system,
        "--jobs",
        str(args.jobs),
        "--every",
        str(args.every),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--apscheduler-mode",
        args.apscheduler_mode,
        "--apscheduler-store",
        args.apscheduler_store,
        f"--{args.load}",
    ]
    if args.mix:
        cmd.append("--mix")
    if args.gc_threshold is not None:
        cmd += ["--gc-threshold", str(args.gc_threshold)]
    if args.gc_freeze:
        cmd.append("--gc-freeze")
    cmd.append("--gc-serve" if args.gc_serve else "--no-gc-serve")
    if system == "trickle" or args.apscheduler_store == "sqlite":
        data = tmp / system
        data.mkdir()
        cmd += ["--data-dir", str(data)]
    pacing = args.every if args.every <= MAX_PACED_EVERY else 0
    # generous: registration of 100k jobs, pacing, warm-up, window, drain
    timeout = 300 + args.jobs / 500 + pacing + args.warmup + args.duration + max(5, args.every)
    _log(f"running {system} worker")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if proc.returncode != 0:
        raise SystemExit(f"the {system} worker failed with exit code {proc.returncode}")
    lines = [line for line in out.splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"the {system} worker printed nothing")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="trickle vs APScheduler 3: fires/s, trigger lateness, RSS, CPU "
        "(see the module docstring)."
    )
    parser.add_argument("--jobs", type=int, default=1000, help="jobs on the node")
    parser.add_argument(
        "--every", type=int, default=10, help="seconds between two fires of each job"
    )
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds of the measurement window"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds between registration and the window (default min(every, 10))",
    )
    parser.add_argument(
        "--mix",
        action="store_true",
        help="mixed schedules: 3/5 @every, 1/5 cron UTC, 1/5 cron Berlin",
    )
    load = parser.add_mutually_exclusive_group()
    load.add_argument(
        "--spread",
        dest="load",
        action="store_const",
        const="spread",
        help="(default) job i has the phase i*every/jobs seconds, fractional: the jobs are "
        "created as if over time, one every every/jobs seconds",
    )
    load.add_argument(
        "--burst",
        dest="load",
        action="store_const",
        const="burst",
        help="job i has the phase (i mod every) whole seconds: jobs/every fires due at "
        "the same instant each second",
    )
    parser.set_defaults(load="spread")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help="comma-separated systems to run (default both)"
    )
    parser.add_argument(
        "--apscheduler-mode",
        choices=("asyncio", "background"),
        default="background",
        help="APScheduler's scheduler: background (thread pool, its best "
        "lateness for no-op jobs here) or asyncio",
    )
    parser.add_argument(
        "--apscheduler-store",
        choices=("memory", "sqlite"),
        default="memory",
        help="APScheduler's job store: memory (keeps nothing, its fastest) or sqlite "
        "(SQLAlchemyJobStore in a temp file: like trickle, it writes each fire's next run "
        "time to disk; background mode only)",
    )
    parser.add_argument(
        "--gc-threshold",
        type=int,
        default=None,
        help="trickle worker: the garbage collector's generation-0 threshold "
        "(gc.set_threshold; default: Python's, 700)",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="trickle worker: gc.freeze() once the jobs are stored",
    )
    parser.add_argument(
        "--gc-serve",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="trickle worker: trickle.tune_gc() once the jobs are stored, as trickle serve "
        "does once it has loaded its store and docs/embedding.md advises (freeze, "
        "young-generation threshold 20,000). The default unless --gc-threshold or "
        "--gc-freeze is given; --no-gc-serve keeps Python's collector settings",
    )
    parser.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.gc_serve is None:
        args.gc_serve = args.gc_threshold is None and not args.gc_freeze
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.apscheduler_store == "sqlite" and args.apscheduler_mode != "background":
        parser.error("--apscheduler-store sqlite needs --apscheduler-mode background")
    if args.every < 1:
        parser.error("--every must be at least 1 second")
    if args.duration <= 0:
        parser.error("--duration must be positive")
    if args.warmup is None:
        args.warmup = float(min(args.every, 10))
    if args.warmup < 0:
        parser.error("--warmup cannot be negative")
    if args.mix:
        check_mixable(args.every)

    if args.worker == "trickle":
        result = run_trickle_worker(args)
    elif args.worker == "apscheduler":
        result = run_apscheduler_worker(args)
    else:
        systems = [s.strip() for s in args.systems.split(",") if s.strip()]
        unknown = sorted(set(systems) - set(SYSTEMS))
        if unknown or not systems:
            parser.error(f"--systems: unknown {unknown}; use {', '.join(SYSTEMS)}")
        result = {}
        with tempfile.TemporaryDirectory(prefix="trickle-bench-") as tmp:
            for system in systems:
                result[system] = run_worker(system, args, Path(tmp))
        tr, aps = result.get("trickle"), result.get("apscheduler")
        if tr and aps:
            tr["vs_apscheduler"] = {
                key: _ratio(tr.get(key), aps.get(key))
                for key in (
                    "lateness_ms_p50",
                    "lateness_ms_p99",
                    "lateness_ms_p999",
                    "rss_mb",
                    "cpu_s",
                    "register_s",
                )
            }
        for r in result.values():
            r["host"] = {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
    print(json.dumps(result, sort_keys=False))


if __name__ == "__main__":
    main()
