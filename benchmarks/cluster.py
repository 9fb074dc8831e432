"""Cluster benchmark: three `trickle serve --server` processes on this machine (issue 5, item 6).

    python benchmarks/cluster.py [--rates 50,100,200,...] [--window 10] [--failover-trials 20]
        [--rss-executions 100000,1000000] [--phases ramp,failover,rss] [--dir DIR] [--quick]

Prints ONE JSON object with ``fires_per_s_at_p99_50ms``, ``failover_gap_ms_p99``,
``rss_mb_100k_executions``, ``rss_mb_1m_executions``, ``raft_entries_per_run``, the
``targets`` and whether this run met them, each phase's details and the host's state.
Progress goes to stderr. Nothing is asserted.

Each phase starts its own cluster (``--one-cluster``: one for all, as ``--quick`` does;
the phases' jobs then add up): three servers (``benchmarks/_cluster_node.py``: the
``trickle serve`` command with a ``noop`` executor) on 127.0.0.1, every port 0, formed
with ``--bootstrap-expect 3`` (the first one's gossip address from its waiting line is
what the others ``--join``), ``--profile local``, Raft with fsync (the default), each in
its own data dir under a temp dir. Jobs are ``@every 1s`` (sub-second intervals run every
second: docs/schedules.md), executor ``noop``, tags ``bench=node:1``: every fire runs on
one server picked at random among the three, so two thirds of the runs are dispatched to
another process over RPC. ``@every`` jobs fire at the instant they were created plus whole
seconds, so the jobs created one after the other spread over the second.

Every ``noop`` run appends ``<start> <scheduled_at>`` to its node's fire log (wall clock,
one host): lateness is the executor's start minus the fire's scheduled time. (The
executions API cannot say it: a scheduled run's ``started_at`` is its scheduled instant,
because its intent is committed ahead.)

1. ramp (``fires_per_s_at_p99_50ms``): for each rate R in ``--rates``, jobs are added
   until there are R (R fires/s), then after ``--warmup`` s, ``--window`` s are counted:
   the runs whose fire falls in the window, from the fire logs. A step holds when the
   p99 lateness of those runs is <= 50 ms and at least 98% of the R x window fires ran;
   the ramp stops at the first step that does not hold (``--retries`` more tries first;
   with ``--keep-going``, at the first where fewer than 90% of the fires ran). The
   figure is the runs/s of the highest step that held. Each step also reports the
   ``trickle_fire_lateness_seconds`` histogram of /metrics summed over the nodes (the
   share of runs within 50 ms), fires missed, every node's CPU, and the Raft entries
   per run (below).
2. ``raft_entries_per_run``: the leader's last log index (its own ``match_index`` in
   ``GET /v1/raft/peers``) over the window, divided by the runs committed in it
   (``dkron_job_executions_succeeded`` + ``_failed`` on the leader's /metrics: results
   applied). Measured at every ramp step; the headline is the lowest rate's (the least
   batching: each entry carries the fewest fires).
3. failover (``failover_gap_ms_p99``): ``--failover-jobs`` jobs, created one every
   1/N s so that their fires spread evenly over the second (``jobs_phase_gap_ms_max``:
   the widest gap left; jobs created at once left half the second without a fire, which
   the gap then counted as failover time); per trial, after a random
   0-1 s pause, the leader's process gets SIGKILL; the gap is from the kill to the first
   on-time run (lateness <= 50 ms) of a fire scheduled more than 50 ms after the kill, in
   a survivor's fire log: only a new leader can have dispatched it. The killed server is then
   restarted on its data dir (``--join`` a survivor) and the next trial waits until it is
   a voter again and the cluster has a leader. p99 over ``--failover-trials`` (>= 20).
4. rss (``rss_mb_100k_executions``, ``rss_mb_1m_executions``): each server's RSS (psutil)
   with N executions stored, for N in ``--rss-executions``, ``--history-limit`` high
   enough to keep them all. The first N are produced by real runs (``--rss-jobs`` jobs
   ``@every 1s``, as fast as the cluster runs them; ``--rss-runs-max-s`` bounds it, the
   rest is then seeded); the jobs are then disabled and the rest is seeded: the ``seed``
   executor on the leader commits RunStarted + RunFinished pairs through the engine's
   replicated log (the records a real run commits, without its scheduling and dispatch),
   in ``--seed-chunk`` steps, RSS read after each (``curve``). The stored count is read
   from every server's SQLite store at the end. Flat is the point: history is on disk.

Every server is in its own process group, killed (SIGKILL) and reaped when the benchmark
ends, also on Ctrl-C, SIGTERM or an error; it also exits when the benchmark's end of its
stdin closes, and on Linux the kernel kills it if the benchmark dies.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import json
import math
import os
import platform
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import trio
from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from trickle.testing import processes  # noqa: E402

NODE = HERE / "_cluster_node.py"
# the servers' command: `trickle serve` with the noop and seed executors, each writing
# its fire log beside its data dir, and tagged node=<its name>
PROGRAM = (sys.executable, str(NODE), "--fire-log", "auto", "--node-tag", "--")
NAMES = ("s1", "s2", "s3")
READY_TIMEOUT = 90.0  # seconds for three voters (or a restarted one to catch up)
LEADER_TIMEOUT = 30.0  # seconds for a leader to be known
GAP_TIMEOUT = 20.0  # seconds a failover trial waits for an on-time run
ON_TIME = 0.050  # seconds of lateness a run may have and count as on time
# A fire due this soon after the kill may have been dispatched by the dying leader (a
# trial saw one 3 ms after the kill start on a survivor); no new leader can exist yet
# (elections take 250 ms or more), so skipping them biases nothing.
OLD_LEADER_MARGIN = 0.050
OVERLOAD_POLL_S = 0.5  # seconds between two looks at every server's leader (overload phase)
HELD_SHARE = 0.98  # share of a step's fires that must have run for the step to hold
KEEP_GOING_SHARE = 0.9  # --keep-going: the ramp stops once fewer fires than this ran
HTTP_TIMEOUT = 30.0  # seconds per API request
WRITE_RETRY_S = 30.0  # seconds a write is tried again while the cluster has no leader
CREATE_TASKS = 4  # concurrent job writes
OVERLOAD_CREATE_TASKS = 16  # ... in the overload phase (the writes meet a loaded leader)
JOB_TAGS = {"bench": "node:1"}  # one of the three servers per fire, at random
TARGETS = {
    "fires_per_s_at_p99_50ms_min": 1000,
    "failover_gap_ms_p99_max": 1000,
    "rss_flat_max_growth_pct": 10,  # a target of ours: 1M executions vs 100k, per node
    "raft_entries_per_run_max_dkron": 3,  # Dkron needs at least 3; fewer is better
}


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


class BenchError(Exception):
    """A server failed or did not answer: the run cannot go on."""


# -- processes ----------------------------------------------------------------------------


class FireLogs:
    """Reads the nodes' fire logs incrementally: (start, scheduled_at, job, node) runs."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self._offsets = {p: 0 for p in paths}
        self.runs: list[tuple[float, float, str, str]] = []

    def poll(self) -> list[tuple[float, float, str, str]]:
        """Runs written since the last call (complete lines only); also kept in ``runs``."""
        new: list[tuple[float, float, str, str]] = []
        for path, offset in self._offsets.items():
            if not path.exists():
                continue
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
            end = data.rfind(b"\n") + 1
            self._offsets[path] = offset + end
            for line in data[:end].splitlines():
                started, scheduled, job, node = line.decode().split(" ")
                if scheduled != "-":
                    new.append((float(started), float(scheduled), job, node))
        self.runs.extend(new)
        return new

    def count(self) -> int:
        self.poll()
        return len(self.runs)


class Bench:
    """The benchmark's view of a ``trickle.testing.processes.Cluster`` of three servers:
    leader lookups, the API calls it makes, /metrics, CPU and RSS, the fire logs."""

    def __init__(self, cluster: processes.Cluster) -> None:
        self.cluster = cluster
        self.root = cluster.workdir
        self.nodes = cluster.nodes
        self.fires = FireLogs(self.root / f"{n}.fires" for n in NAMES)
        self._ps: dict[int, psutil.Process] = {}
        self._leader: str | None = None

    def live(self) -> list[processes.Node]:
        return [n for n in self.nodes.values() if n.running]

    async def leader(self, timeout: float = LEADER_TIMEOUT) -> str:  # noqa: ASYNC109
        """The leader's name, once every running server names it."""
        node = await self.cluster.leader(timeout)
        self._leader = node.name
        return node.name

    async def peers(self) -> tuple[str, list[dict[str, Any]]]:
        """(leader, its /v1/raft/peers)."""
        leader = await self.leader()
        return leader, list(await self.nodes[leader].get("/v1/raft/peers"))

    async def wait_formed(self, *, caught_up: bool = False) -> None:
        """Until the leader lists three voters (and, with ``caught_up``, each matches its
        log at most 64 entries behind)."""

        async def formed() -> bool:
            try:
                _, peers = await self.peers()
            except (httpx.HTTPError, AssertionError):
                return False
            if sum(p["voter"] for p in peers) != 3:
                return False
            top = max(p["match_index"] or 0 for p in peers)
            return not caught_up or all((p["match_index"] or 0) >= top - 64 for p in peers)

        what = "three voters" + (", caught up" if caught_up else "")
        await self.cluster.wait_for(formed, timeout=READY_TIMEOUT, what=what)

    async def last_index(self, leader: str) -> int:
        """The leader's last log index: its own match_index."""
        for peer in await self.nodes[leader].get("/v1/raft/peers"):
            if peer["leader"]:
                return int(peer["match_index"] or 0)
        raise BenchError(f"{leader} does not list itself as the leader")

    async def metrics(self, node: processes.Node) -> dict[str, float]:
        """The benchmark's figures from a node's /metrics: lateness buckets, counts."""
        response = await node.request("GET", "/metrics", timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                name = sample.name
                if name == "trickle_fire_lateness_seconds_bucket":
                    out[f"le_{sample.labels['le']}"] = sample.value
                elif name in (
                    "trickle_fire_lateness_seconds_count",
                    "trickle_fires_total",
                    "trickle_fires_missed_total",
                ):
                    out[name] = sample.value
                elif name in (
                    "dkron_job_executions_succeeded_total",
                    "dkron_job_executions_failed_total",
                ):
                    out["finished"] = out.get("finished", 0.0) + sample.value
                    if name == "dkron_job_executions_failed_total":
                        out["failed"] = out.get("failed", 0.0) + sample.value
                elif name == "trickle_fires_skipped_total":
                    out["skipped"] = out.get("skipped", 0.0) + sample.value
        return out

    async def all_metrics(self) -> dict[str, dict[str, float]]:
        return {n.name: await self.metrics(n) for n in self.live()}

    async def read(self, path: str) -> Any:
        """GET ``path`` from any live server, again while none answers 200 (a read during a
        leader change answers 503), for up to WRITE_RETRY_S seconds."""
        deadline = time.monotonic() + WRITE_RETRY_S
        while True:
            for node in self.live():
                try:
                    return await node.get(path, timeout=HTTP_TIMEOUT)
                except (AssertionError, httpx.HTTPError) as exc:
                    error = str(exc).splitlines()[0]
            if time.monotonic() > deadline:
                raise BenchError(f"GET {path}: {error}")
            await trio.sleep(0.2)

    async def post(self, path: str, body: Any = None) -> Any:
        """POST to the leader's API, again after a 503 (the write was not applied: no
        leader, or an entry replaced by a new leader's) or a refused connection (the leader
        died), for up to WRITE_RETRY_S seconds. Only for writes that may be repeated."""
        deadline = time.monotonic() + WRITE_RETRY_S
        while True:
            try:
                leader = self._leader or await self.leader()
                response = await self.nodes[leader].request(
                    "POST", path, json=body, timeout=HTTP_TIMEOUT
                )
                if response.status_code < 300:
                    return response.json()
                error = f"POST {path}: {response.status_code} {response.text}"
                if response.status_code != 503:
                    raise BenchError(error)
            except httpx.ConnectError as exc:
                error = f"POST {path}: {exc}"
            if time.monotonic() > deadline:
                raise BenchError(error)
            self._leader = None
            await trio.sleep(0.2)

    async def put_jobs(self, jobs: Sequence[dict[str, Any]], tasks: int = CREATE_TASKS) -> float:
        """Create or replace ``jobs`` through the leader's API, ``tasks`` at a time;
        seconds taken."""
        t0 = time.monotonic()
        todo = iter(jobs)

        async def writer() -> None:
            for job in todo:
                await self.post("/v1/jobs", job)

        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(writer)
        return time.monotonic() - t0

    async def put_jobs_spread(self, jobs: Sequence[dict[str, Any]], over: float = 1.0) -> float:
        """Create ``jobs`` one after the other, one every ``over / len(jobs)`` seconds, so
        that their ``@every`` phases (the instant each was created) spread evenly over
        ``over`` seconds; returns the widest gap between two neighbouring phases, in s."""
        t0 = trio.current_time()
        phases = []
        for i, job in enumerate(jobs):
            await trio.sleep_until(t0 + i * over / len(jobs))
            await self.post("/v1/jobs", job)
            phases.append((trio.current_time() - t0) % over)
        phases.sort()
        gaps = [b - a for a, b in itertools.pairwise(phases)]
        return max([*gaps, phases[0] + over - phases[-1]]) if phases else over

    def _process(self, node: processes.Node) -> psutil.Process:
        assert node.pid is not None
        if node.pid not in self._ps:
            self._ps[node.pid] = psutil.Process(node.pid)
        return self._ps[node.pid]

    def cpu_s(self) -> dict[str, float]:
        out = {}
        for node in self.live():
            try:
                t = self._process(node).cpu_times()
            except psutil.Error:
                continue
            out[node.name] = float(t.user + t.system)
        return out

    def rss_mb(self) -> dict[str, float]:
        return {n.name: round(self._process(n).memory_info().rss / 1e6, 1) for n in self.live()}


def noop_job(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": "@every 1s",
        "executor": "noop",
        "tags": JOB_TAGS,
        **fields,
    }


def _sum(metrics: dict[str, dict[str, float]], key: str) -> float:
    return sum(m.get(key, 0.0) for m in metrics.values())


# -- 1 and 2: the ramp, entries per run ------------------------------------------------------


async def measure_step(cluster: Bench, rate: int, args: argparse.Namespace) -> dict[str, Any]:
    """One window at ``rate`` fires/s (the jobs exist): lateness, runs, CPU, entries/run."""
    await trio.sleep(args.warmup)
    leader = await cluster.leader()
    cpu0, m0 = cluster.cpu_s(), await cluster.all_metrics()
    index0 = await cluster.last_index(leader)
    load0 = os.getloadavg()[0]
    psutil.cpu_percent()
    psutil.cpu_times_percent()
    w0 = time.time()
    w1 = w0 + args.window  # whole seconds: every job has exactly `window` fires in it
    await trio.sleep(max(0.0, w1 - time.time()))
    host_busy = psutil.cpu_percent()
    host_steal = getattr(psutil.cpu_times_percent(), "steal", 0.0)  # counted as busy above
    index1 = await cluster.last_index(leader)
    cpu1, m1 = cluster.cpu_s(), await cluster.all_metrics()
    leader_after = await cluster.leader()
    await trio.sleep(min(2.0, args.window))  # runs of the window's last fires, started late
    cluster.fires.poll()
    runs = [r for r in cluster.fires.runs if w0 <= r[1] < w1]
    late = sorted((r[0] - r[1]) * 1000 for r in runs)
    expected = rate * (w1 - w0)
    finished = m1[leader].get("finished", 0) - m0[leader].get("finished", 0)
    count = _sum(m1, "trickle_fire_lateness_seconds_count") - _sum(
        m0, "trickle_fire_lateness_seconds_count"
    )
    within = _sum(m1, "le_0.05") - _sum(m0, "le_0.05")
    p99 = percentile(late, 0.99)
    held = (
        p99 is not None
        and p99 <= ON_TIME * 1000
        and len(runs) >= HELD_SHARE * expected
        and leader_after == leader
    )
    cpu = {n: round(100 * (cpu1[n] - cpu0[n]) / (w1 - w0), 1) for n in cpu1}
    return {
        "rate": rate,
        "held": held,
        "runs": len(runs),
        "runs_per_s": round(len(runs) / (w1 - w0), 1),
        "runs_share_of_fires": round(len(runs) / expected, 4) if expected else None,
        "lateness_ms_p50": _r(percentile(late, 0.5), 2),
        "lateness_ms_p90": _r(percentile(late, 0.9), 2),
        "lateness_ms_p99": _r(p99, 2),
        "lateness_ms_p999": _r(percentile(late, 0.999), 2),
        "lateness_ms_max": _r(late[-1] if late else None, 2),
        "metrics_share_within_50ms": round(within / count, 4) if count else None,
        "fires_missed": _sum(m1, "trickle_fires_missed_total")
        - _sum(m0, "trickle_fires_missed_total"),
        "fires_skipped": _sum(m1, "skipped") - _sum(m0, "skipped"),
        "raft_entries": index1 - index0,
        "runs_committed": finished,
        # None when the leader changed: its index then is not the log's
        "raft_entries_per_run": round((index1 - index0) / finished, 3)
        if finished and leader_after == leader and index1 >= index0
        else None,
        "cpu_pct_by_node": cpu,
        "cpu_pct_nodes_total": round(sum(cpu.values()), 1),
        "host_cpu_busy_pct": round(host_busy, 1),  # of all the host's cores, steal included
        # the time the hypervisor gave the host's cores to other guests, in % of all cores:
        # on a shared VM the main source of noise (20-35% in some of session 9's runs)
        "host_steal_pct": round(host_steal, 1),
        # what the other processes of the host used meanwhile, in % of one core
        "others_cpu_pct": round(
            max(0.0, (host_busy - host_steal) * (os.cpu_count() or 1) - sum(cpu.values())), 1
        ),
        "loadavg_1m_before": round(load0, 2),
        "leader": leader,
        "leader_changed": leader_after != leader,
    }


class Clusters:
    """Where each phase gets its cluster: a fresh one per phase, or (``--one-cluster``)
    one for every phase, started at the first use and stopped when the run ends."""

    def __init__(self, root: Path, args: argparse.Namespace, stack: AsyncExitStack) -> None:
        self.root = root
        self.args = args
        self.stack = stack
        self.shared: Bench | None = None

    @contextlib.asynccontextmanager
    async def get(self, phase: str) -> AsyncIterator[Bench]:
        program: tuple[str, ...] = PROGRAM
        if self.args.max_lateness is not None:
            program = (*PROGRAM, "--max-lateness", str(self.args.max_lateness))  # a serve flag
        if not self.args.one_cluster:
            async with processes.Cluster(self.root / phase, program=program) as cluster:
                yield await self._start(cluster)
            return
        if self.shared is None:
            cluster = processes.Cluster(self.root / "cluster", program=program)
            await self.stack.enter_async_context(cluster)
            self.shared = await self._start(cluster)
        yield self.shared

    async def _start(self, cluster: processes.Cluster) -> Bench:
        """Three servers formed with --bootstrap-expect 3, each server keeping
        ``history_limit`` executions per job; once the leader lists three voters."""
        t0 = time.monotonic()
        flags = ["--log-level", "warn", "--tag", "bench=node"]
        flags += ["--history-limit", str(history_limit(self.args)), *self.args.serve_arg]
        await cluster.start_servers(NAMES, args=flags)
        bench = Bench(cluster)
        await bench.wait_formed()
        _log(f"cluster formed in {time.monotonic() - t0:.1f} s under {cluster.workdir}")
        return bench


def history_limit(args: argparse.Namespace) -> int:
    """Executions kept per job: the rss phase's largest history, spread over its jobs."""
    return math.ceil(max(args.rss_executions) / args.rss_jobs) + 1000


async def idle_cpu(cluster: Bench, seconds: float) -> dict[str, float]:
    """Each server's CPU (% of one core) over ``seconds`` with no job: gossip, Raft
    heartbeats, the benchmark's own polling."""
    cpu0 = cluster.cpu_s()
    await trio.sleep(seconds)
    cpu1 = cluster.cpu_s()
    return {n: round(100 * (cpu1[n] - cpu0[n]) / seconds, 1) for n in cpu1}


async def run_ramp(clusters: Clusters, args: argparse.Namespace) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    async with clusters.get("ramp") as cluster:
        idle = await idle_cpu(cluster, args.window)
        _log(f"ramp: idle cluster CPU {idle}")
        have = 0
        for rate in args.rates:
            jobs = [noop_job(f"r{i:05d}") for i in range(have, rate)]
            seconds = await cluster.put_jobs(jobs)
            have = max(have, rate)
            _log(f"ramp: {rate} jobs ({len(jobs)} added in {seconds:.1f} s)")
            for attempt in range(1 + args.retries):
                step = await measure_step(cluster, rate, args)
                busy = step["cpu_pct_nodes_total"] - sum(idle.values())
                step["cpu_ms_per_run"] = (
                    round(10 * busy / step["runs_per_s"], 2) if step["runs_per_s"] else None
                )
                step["attempt"] = attempt + 1
                steps.append(step)
                _log(
                    f"ramp: {rate}/s: {step['runs_per_s']} runs/s, p50 "
                    f"{step['lateness_ms_p50']} ms, p99 {step['lateness_ms_p99']} ms, "
                    f"{step['raft_entries_per_run']} entries/run, nodes CPU "
                    f"{step['cpu_pct_nodes_total']}% ({step['cpu_ms_per_run']} ms/run above "
                    f"idle), others {step['others_cpu_pct']}%, steal "
                    f"{step['host_steal_pct']}% "
                    f"-> {'held' if step['held'] else 'NOT held'}"
                )
                if step["held"]:
                    break
            if steps[-1]["held"]:
                best = steps[-1]
            elif not args.keep_going or steps[-1]["runs_share_of_fires"] < KEEP_GOING_SHARE:
                break
    entries = [s for s in steps if s["raft_entries_per_run"] is not None]
    not_held = [s["rate"] for s in steps if not s["held"]]
    return {
        "fires_per_s_at_p99_50ms": best["runs_per_s"] if best else 0,
        "raft_entries_per_run": entries[0]["raft_entries_per_run"] if entries else None,
        "ramp": {
            "idle_cpu_pct_by_node": idle,
            "steps": steps,
            "highest_rate_held": best["rate"] if best else None,
            "first_rate_not_held": not_held[0] if not_held else None,
        },
        "raft_entries_per_run_by_rate": {
            str(s["rate"]): s["raft_entries_per_run"] for s in entries if s["held"]
        },
    }


# -- 3: failover ----------------------------------------------------------------------------


async def failover_trial(cluster: Bench, rng: random.Random) -> dict[str, Any]:
    await cluster.wait_formed(caught_up=True)
    old = await cluster.leader()
    await trio.sleep(rng.uniform(0.0, 1.0))
    cluster.fires.poll()
    victim = cluster.nodes[old]
    t_kill = time.time()
    victim.kill(signal.SIGKILL)
    first_any: tuple[float, float, str, str] | None = None
    on_time: tuple[float, float, str, str] | None = None
    give_up = time.time() + GAP_TIMEOUT
    while on_time is None and time.time() < give_up:
        for run in sorted(cluster.fires.poll()):
            if run[1] < t_kill + OLD_LEADER_MARGIN or run[3] == old:
                continue
            if first_any is None:
                first_any = run
            if run[0] - run[1] <= ON_TIME:
                on_time = run
                break
        await trio.sleep(0.005)
    await victim.wait()
    new = await cluster.leader()
    t_restart = time.monotonic()
    await victim.restart()  # on its data dir and its ports, joining the others
    t_ready = time.monotonic()
    restart_s = t_ready - t_restart
    await cluster.wait_formed(caught_up=True)
    caught_up_s = time.monotonic() - t_ready
    trial: dict[str, Any] = {
        "killed": old,
        "new_leader": new,
        "gap_ms": _r((on_time[0] - t_kill) * 1000) if on_time else None,
        "first_run_after_kill_ms": _r((first_any[0] - t_kill) * 1000) if first_any else None,
        "first_run_lateness_ms": _r((first_any[0] - first_any[1]) * 1000) if first_any else None,
        "restart_s": round(restart_s, 2),
        "caught_up_s": round(caught_up_s, 2),
        # a leader other than new_leader here: the restarted server's return moved it
        "leader_after_restart": await cluster.leader(),
    }
    return trial


async def run_failover(clusters: Clusters, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    trials: list[dict[str, Any]] = []
    async with clusters.get("failover") as cluster:
        # evenly over the second: a hole in the jobs' phases would be counted as failover
        # time (the first on-time run can only be of a fire due after the new leader is up)
        phase_gap = await cluster.put_jobs_spread(
            [noop_job(f"f{i:04d}") for i in range(args.failover_jobs)]
        )
        await trio.sleep(args.warmup)
        for i in range(args.failover_trials):
            trial = await failover_trial(cluster, rng)
            trials.append(trial)
            _log(
                f"failover {i + 1}/{args.failover_trials}: killed {trial['killed']}, "
                f"new leader {trial['new_leader']}, gap {trial['gap_ms']} ms "
                f"(first run {trial['first_run_after_kill_ms']} ms, "
                f"{trial['first_run_lateness_ms']} ms late); back in "
                f"{trial['restart_s'] + trial['caught_up_s']:.1f} s, leader then "
                f"{trial['leader_after_restart']}"
            )
            await trio.sleep(args.settle)
        failed, twice = await history_checks(
            cluster, [f"f{i:04d}" for i in range(args.failover_jobs)]
        )
    gaps = [t["gap_ms"] for t in trials]
    measured = sorted(g for g in gaps if g is not None)
    missing = len(gaps) - len(measured)
    # a trial without an on-time run within GAP_TIMEOUT counts as the worst gap
    ranked = measured + [math.inf] * missing
    p99 = percentile(ranked, 0.99)
    return {
        "failover_gap_ms_p99": None if p99 is None or math.isinf(p99) else p99,
        "failover": {
            "trials": trials,
            "gap_ms_p50": _r(percentile(ranked, 0.5)) if measured else None,
            "gap_ms_max": measured[-1] if measured and not missing else None,
            "trials_without_on_time_run": missing,
            "jobs": args.failover_jobs,
            "jobs_phase_gap_ms_max": _r(phase_gap * 1000),  # widest gap between two fires
            # runs recorded failed over all trials (the killed leader's runs in flight,
            # and any run a failover lost), by the first line of their output
            "failed_runs": sum(failed.values()),
            "failed_runs_by_reason": failed,
            # (job, scheduled time, node) with more than one first attempt: must be 0
            "runs_twice": twice,
        },
    }


async def history_checks(cluster: Bench, jobs: Sequence[str]) -> tuple[dict[str, int], int]:
    """From the whole history of ``jobs``: the failed executions counted by the first line
    of their output with run-specific details (names, numbers) kept, 60 characters of it;
    and how many (job, scheduled time, node) have more than one first attempt (a fire run
    twice on a node)."""
    reasons: collections.Counter[str] = collections.Counter()
    runs: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for name in jobs:
        for execution in await cluster.read(f"/v1/jobs/{name}/executions?_end=100000"):
            if execution.get("status") == "failed":
                line = (execution.get("output") or "").strip().splitlines()
                reasons[line[0][:60] if line else ""] += 1
            if execution.get("attempt", 1) == 1 and execution.get("scheduled_at"):
                runs[(name, execution["scheduled_at"], execution.get("node_name", ""))] += 1
    return dict(reasons.most_common()), sum(1 for n in runs.values() if n > 1)


# -- 4: memory with a large history ----------------------------------------------------------


def stored_executions(cluster: Bench) -> dict[str, int]:
    """Rows of every server's executions table (read-only; the store runs in WAL mode)."""
    out = {}
    for name in NAMES:
        path = cluster.root / name / "trickle.db"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            out[name] = int(db.execute("SELECT count(*) FROM executions").fetchone()[0])
    return out


async def seed(
    cluster: Bench, leader: str, jobs: Sequence[str], count: int, start: float
) -> dict[str, Any]:
    """One manual run of the ``seed`` job on the leader; its summary."""
    await cluster.put_jobs(
        [
            {
                "name": "bench-seed",
                "schedule": "@manually",
                "executor": "seed",
                "tags": {"node": leader},
                "executor_config": {
                    "jobs": ",".join(jobs),
                    "executions": str(count),
                    "start": f"{start:.3f}",
                },
            }
        ]
    )
    before = {e["id"] for e in await cluster.read("/v1/jobs/bench-seed/executions")}
    await cluster.post("/v1/jobs/bench-seed/run")
    while True:
        await trio.sleep(0.5)
        runs = [
            e for e in await cluster.read("/v1/jobs/bench-seed/executions") if e["id"] not in before
        ]
        if runs and runs[0]["status"] != "running":  # finished_at is Go's zero time till then
            run = runs[0]
            output = str(run.get("output", ""))  # omitted when empty
            if not run["success"]:
                raise BenchError(
                    f"seeding failed ({run['status']} on {run['node_name']}): {output}"
                )
            summary: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
            return summary


async def run_rss(clusters: Clusters, args: argparse.Namespace) -> dict[str, Any]:
    targets = sorted(args.rss_executions)
    per_job = history_limit(args)
    names = [f"h{i:05d}" for i in range(args.rss_jobs)]
    curve: list[dict[str, Any]] = []
    async with clusters.get("rss") as cluster:
        await cluster.put_jobs([noop_job(n) for n in names])
        rss_start = cluster.rss_mb()
        curve.append({"executions": 0, "rss_mb": rss_start})
        t0 = time.monotonic()
        first = targets[0]
        while True:  # files written by other processes: polled
            if cluster.fires.count() >= first or time.monotonic() - t0 >= args.rss_runs_max_s:
                break
            await trio.sleep(0.5)
        real_s = time.monotonic() - t0
        await cluster.put_jobs([noop_job(n, disabled=True) for n in names])
        await trio.sleep(2.0)  # the last runs finish and their results commit
        real = cluster.fires.count()
        _log(f"rss: {real} real runs in {real_s:.0f} s; jobs disabled")
        produced = {"real_runs": real, "seeded": 0, "real_runs_s": round(real_s, 1)}
        leader = await cluster.leader()
        total = real
        seed_s = 0.0
        start = time.time() - 40 * 86_400  # seeded history: in the past, 1 ms apart
        for target in targets:
            while total < target:
                chunk = min(args.seed_chunk, target - total)
                summary = await seed(cluster, leader, names, chunk, start + total / 1000)
                total += int(summary["executions"])
                produced["seeded"] += int(summary["executions"])
                seed_s += float(summary["seconds"])
                curve.append({"executions": total, "rss_mb": cluster.rss_mb()})
                _log(
                    f"rss: {total} executions ({summary['per_s']}/s seeded); "
                    f"RSS {curve[-1]['rss_mb']}"
                )
            curve.append({"executions": total, "rss_mb": cluster.rss_mb(), "target": target})
        await trio.sleep(1.0)
        stored = stored_executions(cluster)
    produced["seed_s"] = round(seed_s, 1)
    at = {c["target"]: c["rss_mb"] for c in curve if "target" in c}
    worst = {t: max(v.values()) for t, v in at.items()}
    growth = None
    if len(targets) >= 2:
        growth = {n: _r(100 * (at[targets[-1]][n] / at[targets[0]][n] - 1)) for n in at[targets[0]]}
    return {
        "rss_mb_100k_executions": worst.get(targets[0]),
        "rss_mb_1m_executions": worst.get(targets[-1]) if len(targets) >= 2 else None,
        "rss": {
            "executions": targets,
            "rss_mb_by_node": {str(t): v for t, v in at.items()},
            "rss_mb_start_by_node": rss_start,
            "growth_pct_by_node": growth,
            "curve": curve,
            "stored_executions_by_node": stored,
            "produced": produced,
            "jobs": args.rss_jobs,
            "history_limit": per_job,
        },
    }


# -- 5: overload: does the cluster keep its leader? -------------------------------------------


def raft_terms(cluster: Bench) -> dict[str, int]:
    """Every server's current Raft term, from its raft.db (read once the servers are
    stopped: raft.db is opened in exclusive locking mode)."""
    out = {}
    for name in NAMES:
        path = cluster.root / name / "raft.db"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT term FROM raft_hard_state WHERE id = 1").fetchone()
            out[name] = int(row[0]) if row else 0
    return out


async def leaders_seen(cluster: Bench) -> dict[str, str | None]:
    """What every live server names as the leader now (None: none, or no answer)."""
    out: dict[str, str | None] = {}
    for node in cluster.live():
        try:
            response = await node.request("GET", "/v1/leader", timeout=2.0)
            body = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            body = None
        out[node.name] = body.get("Name") if isinstance(body, dict) else None
    return out


async def overload_window(cluster: Bench, seconds: float, jobs: int, what: str) -> dict[str, Any]:
    """Watch the cluster for ``seconds`` with ``jobs`` jobs @every 1s: leader changes seen
    (polled every OVERLOAD_POLL_S on every server), runs of the window's fires, lateness,
    missed and skipped fires, failed runs, CPU."""
    m0, cpu0 = await cluster.all_metrics(), cluster.cpu_s()
    load0 = os.getloadavg()
    w0 = time.time()
    w1 = w0 + seconds
    changes = 0
    leaderless_s = 0.0
    last: str | None = None
    while time.time() < w1:
        seen = await leaders_seen(cluster)
        names = {v for v in seen.values() if v is not None}
        current = next(iter(names)) if len(names) == 1 else None
        if current is None:
            leaderless_s += OVERLOAD_POLL_S
        elif current != last:
            if last is not None:
                changes += 1
            last = current
        await trio.sleep(OVERLOAD_POLL_S)
    m1, cpu1 = await cluster.all_metrics(), cluster.cpu_s()
    await trio.sleep(2.0)  # runs of the window's last fires, started late
    cluster.fires.poll()
    runs = [r for r in cluster.fires.runs if w0 <= r[1] < w1]
    late = sorted((r[0] - r[1]) * 1000 for r in runs)
    expected = jobs * seconds
    cpu = {n: round(100 * (cpu1[n] - cpu0[n]) / seconds, 1) for n in cpu1 if n in cpu0}
    return {
        "what": what,
        "jobs": jobs,
        "seconds": seconds,
        "fires_offered": round(expected),
        "runs": len(runs),
        "runs_per_s": round(len(runs) / seconds, 1),
        "runs_share_of_fires": round(len(runs) / expected, 4) if expected else None,
        "lateness_ms_p50": _r(percentile(late, 0.5), 2),
        "lateness_ms_p99": _r(percentile(late, 0.99), 2),
        "fires_missed": _sum(m1, "trickle_fires_missed_total")
        - _sum(m0, "trickle_fires_missed_total"),
        "fires_skipped": _sum(m1, "skipped") - _sum(m0, "skipped"),
        # results recorded failed by the leader(s) (a noop only fails when it never ran:
        # e.g. an intent a deposed leader committed and nobody dispatched)
        # (every server counts every result it applies: the most any server counted)
        "runs_failed": max(
            (m1[n].get("failed", 0.0) - m0[n].get("failed", 0.0) for n in m1 if n in m0),
            default=None,
        ),
        "leader_changes_seen": changes,
        "leaderless_s_seen": round(leaderless_s, 1),
        "cpu_pct_by_node": cpu,
        "loadavg_before": [round(x, 2) for x in load0],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


async def run_overload(clusters: Clusters, args: argparse.Namespace) -> dict[str, Any]:
    """``--overload-jobs`` jobs @every 1s (more than the host runs) for ``--overload-s``,
    then ``--overload-after-jobs`` of them for ``--overload-recover-s``: leader changes
    (the Raft terms spent), runs against fires missed, and whether it recovers."""
    names = [f"o{i:05d}" for i in range(args.overload_jobs)]
    async with clusters.get("overload") as cluster:
        leader = await cluster.leader()
        t0 = time.monotonic()
        await cluster.put_jobs([noop_job(n) for n in names], OVERLOAD_CREATE_TASKS)
        _log(f"overload: {len(names)} jobs in {time.monotonic() - t0:.0f} s; leader {leader}")
        hot = await overload_window(cluster, args.overload_s, len(names), "overload")
        _log(f"overload: {hot}")
        keep = min(args.overload_after_jobs, len(names))
        t0 = time.monotonic()
        await cluster.put_jobs(
            [noop_job(n, disabled=True) for n in names[keep:]], OVERLOAD_CREATE_TASKS
        )
        _log(f"overload: {len(names) - keep} jobs disabled in {time.monotonic() - t0:.0f} s")
        await trio.sleep(args.warmup)
        calm = await overload_window(cluster, args.overload_recover_s, keep, "recovery")
        _log(f"overload: {calm}")
        root = cluster
    # the servers are stopped now (not with --one-cluster: no terms then)
    terms = {} if args.one_cluster else raft_terms(root)
    logs = {n: root.nodes[n].stderr() for n in NAMES}
    return {
        "terms_under_overload": max(terms.values()) if terms else None,
        "overload": {
            "final_term_by_node": terms,
            "windows": [hot, calm],
            # the Raft driver's warnings (servers since this work; 0 before it)
            "campaigns_by_node": {n: t.count(": campaigning in term ") for n, t in logs.items()},
            "quorum_losses_by_node": {
                n: t.count(": stepped down in term ") for n, t in logs.items()
            },
            "loop_stalls_by_node": {
                n: t.count(": the event loop was blocked for ") for n, t in logs.items()
            },
            "slow_saves_by_node": {n: t.count(": a save of ") for n, t in logs.items()},
        },
    }


# -- host and main --------------------------------------------------------------------------


def host_state(when: str) -> dict[str, Any]:
    return {
        f"loadavg_{when}": [round(x, 2) for x in os.getloadavg()],
        f"cpu_busy_pct_{when}": psutil.cpu_percent(interval=1.0),
    }


def targets_met(out: dict[str, Any]) -> dict[str, bool | None]:
    def check(value: Any, ok: Any) -> bool | None:
        return None if value is None else bool(ok(value))

    growth = (out.get("rss") or {}).get("growth_pct_by_node")
    return {
        "fires_per_s_at_p99_50ms": check(
            out.get("fires_per_s_at_p99_50ms"),
            lambda v: v >= TARGETS["fires_per_s_at_p99_50ms_min"],
        ),
        "failover_gap_ms_p99": check(
            out.get("failover_gap_ms_p99"), lambda v: v <= TARGETS["failover_gap_ms_p99_max"]
        ),
        "rss_flat": check(growth, lambda g: max(g.values()) <= TARGETS["rss_flat_max_growth_pct"]),
        "raft_entries_per_run_below_dkron": check(
            out.get("raft_entries_per_run"), lambda v: v < TARGETS["raft_entries_per_run_max_dkron"]
        ),
    }


def _ints(text: str) -> list[int]:
    try:
        values = [int(float(x)) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected numbers >= 1, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--rates",
        type=_ints,
        default=_ints("50,100,200,300,400,600,800,1000,1200,1500"),
        help="ramp steps, fires/s (= jobs @every 1s)",
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before a window")
    parser.add_argument(
        "--window",
        type=int,
        default=10,
        help="seconds counted per step (whole seconds: each job fires once a second)",
    )
    parser.add_argument("--retries", type=int, default=1, help="extra tries of a step not held")
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="go on past a step not held (a noisy host) while 90%% of the fires run; "
        "the figure is then the highest step held",
    )
    parser.add_argument("--failover-trials", type=int, default=20)
    parser.add_argument("--failover-jobs", type=int, default=50, help="jobs @every 1s")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between trials")
    parser.add_argument(
        "--rss-executions",
        type=_ints,
        default=_ints("100000,1000000"),
        help="stored executions at which RSS is read (the first by real runs)",
    )
    parser.add_argument("--rss-jobs", type=int, default=1000, help="jobs of the rss phase")
    parser.add_argument(
        "--rss-runs-max-s",
        type=float,
        default=600.0,
        help="seconds of real runs at most; the rest of the first figure is seeded",
    )
    parser.add_argument("--seed-chunk", type=int, default=100_000, help="executions per seeding")
    parser.add_argument(
        "--phases",
        default="ramp,failover,rss",
        help="comma-separated: ramp, failover, rss, overload (not run by default)",
    )
    parser.add_argument(
        "--overload-jobs", type=int, default=1000, help="jobs @every 1s of the overload phase"
    )
    parser.add_argument("--overload-s", type=float, default=180.0, help="seconds of overload")
    parser.add_argument(
        "--overload-after-jobs",
        type=int,
        default=50,
        help="jobs left enabled after the overload, to see the cluster recover",
    )
    parser.add_argument(
        "--overload-recover-s", type=float, default=30.0, help="seconds watched after it"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the kill pauses")
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for every server's trickle serve (repeatable), e.g. "
        "--serve-arg=--snapshot-entries --serve-arg=512",
    )
    parser.add_argument(
        "--max-lateness",
        type=float,
        metavar="SECONDS",
        help="the servers' admission bound under overload (trickle serve --max-lateness: "
        "a fire reached this late, with its job's next fire due too, is recorded missed, "
        "not run); default: off",
    )
    parser.add_argument(
        "--one-cluster",
        action="store_true",
        help="run every phase on one cluster (faster; the phases' jobs then add up)",
    )
    parser.add_argument(
        "--dir", type=Path, help="where the temp work dir is made (default: the system's)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work dir (data dirs, logs, fire logs)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: one cluster, rates 5,10, 1 s windows, 1 failover trial, "
        "300 and 1,000 executions",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rates, args.warmup, args.window, args.retries = [5, 10], 1.0, 1.0, 0
        args.failover_trials, args.failover_jobs, args.settle = 1, 10, 0.0
        args.rss_executions, args.rss_jobs, args.seed_chunk = [300, 1000], 100, 500
        args.one_cluster = True
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(args.phases) - {"ramp", "failover", "rss", "overload"}
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    return args


@contextlib.contextmanager
def work_dir(parent: Path | None, keep: bool) -> Iterator[Path]:
    """A fresh temp dir (under ``parent`` if given), removed at the end unless ``keep``."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="trickle-cluster-bench-", dir=parent))
    try:
        yield tmp
    finally:
        if keep:
            _log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


async def run_phases(root: Path, args: argparse.Namespace, out: dict[str, Any]) -> dict[str, str]:
    """Run the chosen phases, adding their figures to ``out``; their errors by phase.
    SIGTERM stops the run as Ctrl-C does (the servers are killed on the way out)."""
    errors: dict[str, str] = {}
    phases = {
        "ramp": run_ramp,
        "failover": run_failover,
        "rss": run_rss,
        "overload": run_overload,
    }
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_raise_on_sigterm)
        async with AsyncExitStack() as stack:
            clusters = Clusters(root, args, stack)
            for name in args.phases:
                _log(f"phase {name}")
                try:
                    out |= await phases[name](clusters, args)
                except (BenchError, processes.NodeFailed) as exc:
                    errors[name] = str(exc)
                    _log(f"phase {name} failed: {exc}")
        nursery.cancel_scope.cancel()
    return errors


async def _raise_on_sigterm() -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out: dict[str, Any] = {
        "fires_per_s_at_p99_50ms": None,
        "failover_gap_ms_p99": None,
        "rss_mb_100k_executions": None,
        "rss_mb_1m_executions": None,
        "raft_entries_per_run": None,
    }
    host: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        **host_state("start"),
    }
    try:
        with work_dir(args.dir, args.keep) as root:
            errors = trio.run(run_phases, root, args, out)
    except BaseException as exc:  # Ctrl-C or SIGTERM, maybe inside exception groups
        interrupted = isinstance(exc, KeyboardInterrupt) or (
            isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is not None
        )
        if not interrupted:
            raise
        _log("interrupted; the servers are stopped")
        return 130
    host |= host_state("end")
    out["targets"] = TARGETS
    out["targets_met"] = targets_met(out)
    out["host"] = host
    out["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    out["method"] = {
        "servers": "3 x benchmarks/_cluster_node.py (trickle serve --server, executor noop), "
        "--bootstrap-expect 3, --profile local, Raft fsync on, one host",
        "jobs": "@every 1s, executor noop, tags bench=node:1 (one server of three per fire)",
        "lateness": "noop executor start (wall clock) minus scheduled_at, from the fire logs",
        "rss_history": "first figure by real runs, the rest seeded by RunStarted+RunFinished "
        "commands through the engine's replicated log (executor seed on the leader)",
    }
    if errors:
        out["errors"] = errors
    print(json.dumps(out))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
