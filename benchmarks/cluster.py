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
3. failover (``failover_gap_ms_p99``): ``--failover-jobs`` jobs; per trial, after a random
   0-1 s pause, the leader's process gets SIGKILL; the gap is from the kill to the first
   on-time run (lateness <= 50 ms) of a fire scheduled after the kill, in a survivor's
   fire log: only a new leader can have dispatched it. The killed server is then
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
import contextlib
import json
import math
import os
import platform
import queue
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
NODE = HERE / "_cluster_node.py"
NAMES = ("s1", "s2", "s3")
READY_TIMEOUT = 90.0  # seconds for the cluster to form and every server to be ready
LEADER_TIMEOUT = 30.0  # seconds for a leader to be known
GAP_TIMEOUT = 20.0  # seconds a failover trial waits for an on-time run
ON_TIME = 0.050  # seconds of lateness a run may have and count as on time
HELD_SHARE = 0.98  # share of a step's fires that must have run for the step to hold
KEEP_GOING_SHARE = 0.9  # --keep-going: the ramp stops once fewer fires than this ran
HTTP_TIMEOUT = 30.0  # seconds per API request
WRITE_RETRY_S = 30.0  # seconds a write is tried again while the cluster has no leader
CREATE_THREADS = 4  # concurrent job writes
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


class Node:
    """One server process; its JSON lines on stdout come through a reader thread."""

    def __init__(self, name: str, root: Path, serve_args: list[str]) -> None:
        self.name = name
        self.data_dir = root / name
        self.fire_log = root / f"{name}.fires"
        self.log_path = root / f"{name}.log"
        self.fire_log.touch()
        command = [
            sys.executable,
            str(NODE),
            "--fire-log",
            str(self.fire_log),
            "--death-pipe",
            "--",
            *serve_args,
        ]
        self._log_file = open(self.log_path, "ab")  # closed in reap
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRICKLE_")}
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            env=env,
            start_new_session=True,  # its own process group: killed as a whole
        )
        self.pid = self.proc.pid
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True, name=f"read-{name}").start()
        self.ready: dict[str, Any] = {}
        self._ps = psutil.Process(self.pid)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def line(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=max(0.01, timeout))
        except queue.Empty:
            raise BenchError(f"{self.name}: no line within {timeout:.0f} s{self.tail()}") from None
        if line is None:
            raise BenchError(f"{self.name} exited ({self.proc.poll()}){self.tail()}")
        decoded: dict[str, Any] = json.loads(line)
        return decoded

    def wait_event(self, event: str, deadline: float) -> dict[str, Any]:
        while True:
            line = self.line(deadline - time.monotonic())
            if line.get("event") == event:
                if event == "ready":
                    self.ready = line
                return line

    @property
    def url(self) -> str:
        return str(self.ready["http"])

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        return self._ps.memory_info().rss / 1e6

    def cpu_s(self) -> float:
        try:
            t = self._ps.cpu_times()
        except psutil.Error:
            return 0.0
        return float(t.user + t.system)

    def kill(self) -> None:
        """SIGKILL to the process group, then reap."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.reap()

    def reap(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.returncode is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log_file.close()

    def tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()[-15:]
        except OSError:
            return ""
        return ("\n  " + "\n  ".join(text)) if text else ""


class FireLogs:
    """Reads the nodes' fire logs incrementally: (start, scheduled_at, job, node) runs."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self._offsets = {p: 0 for p in paths}
        self.runs: list[tuple[float, float, str, str]] = []

    def poll(self) -> list[tuple[float, float, str, str]]:
        """Runs written since the last call (complete lines only); also kept in ``runs``."""
        new: list[tuple[float, float, str, str]] = []
        for path, offset in self._offsets.items():
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


class Cluster:
    """Three servers formed with --bootstrap-expect 3; restartable one by one."""

    def __init__(self, root: Path, extra: Sequence[str] = ()) -> None:
        self.root = root
        self.extra = list(extra)
        self.nodes: dict[str, Node] = {}
        self.http = httpx.Client(timeout=HTTP_TIMEOUT)
        root.mkdir(parents=True, exist_ok=True)
        self.fires = FireLogs(root / f"{n}.fires" for n in NAMES)
        for name in NAMES:
            (root / f"{name}.fires").touch()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for node in list(self.nodes.values()):
            node.kill()
        self.http.close()

    def _args(
        self, name: str, join: str | None, ports: tuple[int, int, int] = (0, 0, 0)
    ) -> list[str]:
        http, gossip, rpc = ports
        args = [
            "--server",
            "--node-name",
            name,
            "--data-dir",
            str(self.root / name),
            "--http-addr",
            f"127.0.0.1:{http}",
            "--bind-addr",
            f"127.0.0.1:{gossip}",
            "--rpc-port",
            str(rpc),
            "--profile",
            "local",
            "--bootstrap-expect",
            "3",
            "--log-level",
            "warn",
            "--tag",
            "bench=node",
            "--tag",
            f"node={name}",
            *self.extra,
        ]
        return args + (["--join", join] if join else [])

    def start(self) -> None:
        t0 = time.monotonic()
        deadline = t0 + READY_TIMEOUT
        first = self.nodes[NAMES[0]] = Node(NAMES[0], self.root, self._args(NAMES[0], None))
        waiting = first.wait_event("waiting", deadline)
        for name in NAMES[1:]:
            self.nodes[name] = Node(name, self.root, self._args(name, waiting["gossip"]))
        for node in self.nodes.values():
            node.wait_event("ready", deadline)
        self.wait_formed(deadline)
        _log(f"cluster formed in {time.monotonic() - t0:.1f} s under {self.root}")

    def restart(self, name: str) -> float:
        """Start ``name`` again on its data dir and its ports, joining a live server;
        seconds to its ready line.

        The same ports, as a server restarted by a supervisor has: gossip (memberlist's
        rules) keeps a failed member's address, and refuses the same name at another
        address, so a server back on new ports is never taken in again."""
        t0 = time.monotonic()
        live = next(n for n in self.nodes.values() if n.alive and n.name != name)
        old = self.nodes[name].ready
        ports = (
            int(old["http"].rsplit(":", 1)[1]),
            int(old["gossip"].rsplit(":", 1)[1]),
            int(old["raft"].rsplit(":", 1)[1]),
        )
        self.nodes[name] = Node(name, self.root, self._args(name, live.ready["gossip"], ports))
        self.nodes[name].wait_event("ready", t0 + READY_TIMEOUT)
        return time.monotonic() - t0

    def live(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.alive]

    def get(self, node: Node, path: str) -> Any:
        response = self.http.get(node.url + path)
        response.raise_for_status()
        return response.json()

    def leader(self, timeout: float = LEADER_TIMEOUT) -> str:
        """The leader's name, as a live server knows it."""
        deadline = time.monotonic() + timeout
        while True:
            for node in self.live():
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    leader = self.get(node, "/v1/leader")
                    if leader and leader.get("Name") in self.nodes:
                        name = str(leader["Name"])
                        if self.nodes[name].alive:
                            return name
            if time.monotonic() > deadline:
                raise BenchError(f"no leader within {timeout} s")
            time.sleep(0.05)

    def peers(self) -> tuple[str, list[dict[str, Any]]]:
        """(leader, its /v1/raft/peers)."""
        leader = self.leader()
        return leader, list(self.get(self.nodes[leader], "/v1/raft/peers"))

    def wait_formed(self, deadline: float, *, caught_up: bool = False) -> None:
        """Until the leader lists three voters (and, with ``caught_up``, each matches its
        log at most 64 entries behind)."""
        while True:
            with contextlib.suppress(httpx.HTTPError, BenchError):
                _, peers = self.peers()
                voters = [p for p in peers if p["voter"]]
                if len(voters) == 3:
                    if not caught_up:
                        return
                    top = max(p["match_index"] or 0 for p in peers)
                    if all((p["match_index"] or 0) >= top - 64 for p in peers):
                        return
            if time.monotonic() > deadline:
                raise BenchError("the cluster did not list three voters in time")
            time.sleep(0.1)

    def last_index(self, leader: str) -> int:
        """The leader's last log index: its own match_index."""
        for peer in self.get(self.nodes[leader], "/v1/raft/peers"):
            if peer["leader"]:
                return int(peer["match_index"] or 0)
        raise BenchError(f"{leader} does not list itself as the leader")

    def metrics(self, node: Node) -> dict[str, float]:
        """The benchmark's figures from a node's /metrics: lateness buckets, counts."""
        response = self.http.get(node.url + "/metrics")
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
                elif name == "trickle_fires_skipped_total":
                    out["skipped"] = out.get("skipped", 0.0) + sample.value
        return out

    def all_metrics(self) -> dict[str, dict[str, float]]:
        return {n.name: self.metrics(n) for n in self.live()}

    def post(self, path: str, body: Any = None) -> Any:
        """POST to the leader's API, again after a 503 (the write was not applied: no
        leader, or an entry replaced by a new leader's) or a refused connection (the leader
        died), for up to WRITE_RETRY_S seconds. Only for writes that may be repeated."""
        deadline = time.monotonic() + WRITE_RETRY_S
        while True:
            try:
                url = self.nodes[self.leader()].url
                response = self.http.post(url + path, json=body)
                if response.status_code < 300:
                    return response.json()
                error = f"POST {path}: {response.status_code} {response.text}"
                if response.status_code != 503:
                    raise BenchError(error)
            except httpx.ConnectError as exc:
                error = f"POST {path}: {exc}"
            if time.monotonic() > deadline:
                raise BenchError(error)
            time.sleep(0.2)

    def put_jobs(self, jobs: Sequence[dict[str, Any]]) -> float:
        """Create or replace ``jobs`` through the leader's API; seconds taken."""
        t0 = time.monotonic()
        with ThreadPoolExecutor(CREATE_THREADS) as pool:
            list(pool.map(lambda job: self.post("/v1/jobs", job), jobs))
        return time.monotonic() - t0

    def cpu_s(self) -> dict[str, float]:
        return {n.name: n.cpu_s() for n in self.live()}

    def rss_mb(self) -> dict[str, float]:
        return {n.name: round(n.rss_mb(), 1) for n in self.live()}


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


def measure_step(cluster: Cluster, rate: int, args: argparse.Namespace) -> dict[str, Any]:
    """One window at ``rate`` fires/s (the jobs exist): lateness, runs, CPU, entries/run."""
    time.sleep(args.warmup)
    leader = cluster.leader()
    cpu0, m0 = cluster.cpu_s(), cluster.all_metrics()
    index0 = cluster.last_index(leader)
    load0 = os.getloadavg()[0]
    psutil.cpu_percent()
    w0 = time.time()
    w1 = w0 + args.window  # whole seconds: every job has exactly `window` fires in it
    time.sleep(max(0.0, w1 - time.time()))
    host_busy = psutil.cpu_percent()
    index1 = cluster.last_index(leader)
    cpu1, m1 = cluster.cpu_s(), cluster.all_metrics()
    leader_after = cluster.leader()
    time.sleep(min(2.0, args.window))  # runs of the window's last fires, started late
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
        "raft_entries_per_run": round((index1 - index0) / finished, 3) if finished else None,
        "cpu_pct_by_node": cpu,
        "cpu_pct_nodes_total": round(sum(cpu.values()), 1),
        "host_cpu_busy_pct": round(host_busy, 1),  # of all the host's cores
        # what the other processes of the host used meanwhile, in % of one core
        "others_cpu_pct": round(max(0.0, host_busy * (os.cpu_count() or 1) - sum(cpu.values())), 1),
        "loadavg_1m_before": round(load0, 2),
        "leader": leader,
        "leader_changed": leader_after != leader,
    }


class Clusters:
    """Where each phase gets its cluster: a fresh one per phase, or (``--one-cluster``)
    one for every phase, started at the first use and stopped by ``close``."""

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.root = root
        self.args = args
        self.shared: Cluster | None = None

    @contextlib.contextmanager
    def get(self, phase: str) -> Iterator[Cluster]:
        extra = ["--history-limit", str(history_limit(self.args))]
        if not self.args.one_cluster:
            with Cluster(self.root / phase, extra) as cluster:
                cluster.start()
                yield cluster
            return
        if self.shared is None:
            self.shared = Cluster(self.root / "cluster", extra)
            try:
                self.shared.start()
            except BaseException:
                self.shared.close()
                raise
        yield self.shared

    def close(self) -> None:
        if self.shared is not None:
            self.shared.close()


def history_limit(args: argparse.Namespace) -> int:
    """Executions kept per job: the rss phase's largest history, spread over its jobs."""
    return math.ceil(max(args.rss_executions) / args.rss_jobs) + 1000


def idle_cpu(cluster: Cluster, seconds: float) -> dict[str, float]:
    """Each server's CPU (% of one core) over ``seconds`` with no job: gossip, Raft
    heartbeats, the benchmark's own polling."""
    cpu0 = cluster.cpu_s()
    time.sleep(seconds)
    cpu1 = cluster.cpu_s()
    return {n: round(100 * (cpu1[n] - cpu0[n]) / seconds, 1) for n in cpu1}


def run_ramp(clusters: Clusters, args: argparse.Namespace) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    with clusters.get("ramp") as cluster:
        idle = idle_cpu(cluster, args.window)
        _log(f"ramp: idle cluster CPU {idle}")
        have = 0
        for rate in args.rates:
            jobs = [noop_job(f"r{i:05d}") for i in range(have, rate)]
            seconds = cluster.put_jobs(jobs)
            have = max(have, rate)
            _log(f"ramp: {rate} jobs ({len(jobs)} added in {seconds:.1f} s)")
            for attempt in range(1 + args.retries):
                step = measure_step(cluster, rate, args)
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
                    f"idle), others {step['others_cpu_pct']}% "
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


def failover_trial(cluster: Cluster, rng: random.Random) -> dict[str, Any]:
    cluster.wait_formed(time.monotonic() + READY_TIMEOUT, caught_up=True)
    old = cluster.leader()
    time.sleep(rng.uniform(0.0, 1.0))
    cluster.fires.poll()
    victim = cluster.nodes[old]
    t_kill = time.time()
    os.killpg(victim.pid, signal.SIGKILL)
    first_any: tuple[float, float, str, str] | None = None
    on_time: tuple[float, float, str, str] | None = None
    give_up = time.time() + GAP_TIMEOUT
    while on_time is None and time.time() < give_up:
        for run in sorted(cluster.fires.poll()):
            if run[1] < t_kill or run[3] == old:
                continue
            if first_any is None:
                first_any = run
            if run[0] - run[1] <= ON_TIME:
                on_time = run
                break
        time.sleep(0.005)
    victim.reap()
    new = cluster.leader()
    restart_s = cluster.restart(old)
    t_ready = time.monotonic()
    cluster.wait_formed(time.monotonic() + READY_TIMEOUT, caught_up=True)
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
        "leader_after_restart": cluster.leader(),
    }
    return trial


def run_failover(clusters: Clusters, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    trials: list[dict[str, Any]] = []
    with clusters.get("failover") as cluster:
        cluster.put_jobs([noop_job(f"f{i:04d}") for i in range(args.failover_jobs)])
        time.sleep(args.warmup)
        for i in range(args.failover_trials):
            trial = failover_trial(cluster, rng)
            trials.append(trial)
            _log(
                f"failover {i + 1}/{args.failover_trials}: killed {trial['killed']}, "
                f"new leader {trial['new_leader']}, gap {trial['gap_ms']} ms "
                f"(first run {trial['first_run_after_kill_ms']} ms, "
                f"{trial['first_run_lateness_ms']} ms late); back in "
                f"{trial['restart_s'] + trial['caught_up_s']:.1f} s, leader then "
                f"{trial['leader_after_restart']}"
            )
            time.sleep(args.settle)
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
        },
    }


# -- 4: memory with a large history ----------------------------------------------------------


def stored_executions(cluster: Cluster) -> dict[str, int]:
    """Rows of every server's executions table (read-only; the store runs in WAL mode)."""
    out = {}
    for name in NAMES:
        path = cluster.root / name / "trickle.db"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            out[name] = int(db.execute("SELECT count(*) FROM executions").fetchone()[0])
    return out


def seed(cluster: Cluster, leader: str, jobs: Sequence[str], count: int, start: float) -> dict:
    """One manual run of the ``seed`` job on the leader; its summary."""
    node = cluster.nodes[leader]
    cluster.put_jobs(
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
    before = {e["id"] for e in cluster.get(node, "/v1/jobs/bench-seed/executions")}
    cluster.post("/v1/jobs/bench-seed/run")
    while True:
        time.sleep(0.5)
        runs = [
            e for e in cluster.get(node, "/v1/jobs/bench-seed/executions") if e["id"] not in before
        ]
        if runs and runs[0]["finished_at"]:
            if not runs[0]["success"]:
                raise BenchError(f"seeding failed: {runs[0]['output']}")
            summary: dict[str, Any] = json.loads(runs[0]["output"].strip().splitlines()[-1])
            return summary


def run_rss(clusters: Clusters, args: argparse.Namespace) -> dict[str, Any]:
    targets = sorted(args.rss_executions)
    per_job = history_limit(args)
    names = [f"h{i:05d}" for i in range(args.rss_jobs)]
    curve: list[dict[str, Any]] = []
    with clusters.get("rss") as cluster:
        cluster.put_jobs([noop_job(n) for n in names])
        rss_start = cluster.rss_mb()
        curve.append({"executions": 0, "rss_mb": rss_start})
        t0 = time.monotonic()
        first = targets[0]
        while cluster.fires.count() < first and time.monotonic() - t0 < args.rss_runs_max_s:
            time.sleep(0.5)
        real_s = time.monotonic() - t0
        cluster.put_jobs([noop_job(n, disabled=True) for n in names])
        time.sleep(2.0)  # the last runs finish and their results commit
        real = cluster.fires.count()
        _log(f"rss: {real} real runs in {real_s:.0f} s ({real / real_s:.0f}/s); jobs disabled")
        produced = {"real_runs": real, "seeded": 0, "real_runs_s": round(real_s, 1)}
        leader = cluster.leader()
        total = real
        seed_s = 0.0
        start = time.time() - 40 * 86_400  # seeded history: in the past, 1 ms apart
        for target in targets:
            while total < target:
                chunk = min(args.seed_chunk, target - total)
                summary = seed(cluster, leader, names, chunk, start + total / 1000)
                total += int(summary["executions"])
                produced["seeded"] += int(summary["executions"])
                seed_s += float(summary["seconds"])
                curve.append({"executions": total, "rss_mb": cluster.rss_mb()})
                _log(
                    f"rss: {total} executions ({summary['per_s']}/s seeded); "
                    f"RSS {curve[-1]['rss_mb']}"
                )
            curve.append({"executions": total, "rss_mb": cluster.rss_mb(), "target": target})
        time.sleep(1.0)
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
        "--phases", default="ramp,failover,rss", help="comma-separated: ramp, failover, rss"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the kill pauses")
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
    unknown = set(args.phases) - {"ramp", "failover", "rss"}
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


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM: unwind as Ctrl-C does, killing the servers


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
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
    errors: dict[str, str] = {}
    phases = {"ramp": run_ramp, "failover": run_failover, "rss": run_rss}
    try:
        with work_dir(args.dir, args.keep) as root:
            clusters = Clusters(root, args)
            try:
                for name in args.phases:
                    _log(f"phase {name}")
                    try:
                        out |= phases[name](clusters, args)
                    except BenchError as exc:
                        errors[name] = str(exc)
                        _log(f"phase {name} failed: {exc}")
            finally:
                clusters.close()
    except KeyboardInterrupt:
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
