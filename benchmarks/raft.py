"""Raft benchmark: trickle's Raft (fsync on) beside PySyncObj 0.3.17, 3 processes on loopback.

    python benchmarks/raft.py --duration 10 [--clients 250,1000,2000] [--size 64]
        [--failover-trials 20] [--systems trickle,pysyncobj] [--sim-seconds 30] [--dir DIR]

Prints ONE JSON object
``{"trickle": {...}, "pysyncobj": {...}, "sim_speedup_5_nodes": x, "sim_settings": {...},
"host": {...}, "targets": {...}}``; progress goes to stderr. Each side has ``commits_per_s``,
``latency_ms_p50``, ``latency_ms_p99`` and ``fsync``; trickle's also ``failover_ms_p50``
and ``failover_ms_p99``. Nothing is asserted: ``targets`` says which targets of issue 3
the run met (the throughput ratio is against PySyncObj's better setting, batched or not).

Each system runs as three server processes (``benchmarks/_raft_server.py``) on 127.0.0.1,
each bound to port 0; the ports come from each child's JSON ready line and are then sent
to every child. trickle: RaftDriver (defaults) + TcpTransport + SqliteRaftStorage with
Durability.FSYNC in a temp dir, a counter as the application. PySyncObj: a SyncObj with a
replicated counter method, its default config (``appendEntriesUseBatch`` on) plus its
file journal and dump file in the temp dir. PySyncObj never fsyncs (see ``FSYNC_NOTE``).

The load generator is the same for both: client loops inside the leader's process, as
PySyncObj's own benchmark calls its replicated methods in-process. A closed loop of W
outstanding proposals of ``--size``-byte commands (trickle: W Trio tasks each awaiting
``driver.propose``; PySyncObj: W calls of the replicated method, each callback issuing
the next). A commit counts when the proposer gets its result (applied on the leader);
latency is from the call to that result. ``--warmup`` seconds are run first and not
counted; then ``--duration`` seconds are counted. A trickle proposal still unanswered
10 s after the window is abandoned and counted in ``errors`` (``GaveUp``).

1. throughput: one run per window W in ``--clients`` (default 250, 1000 and 2000: PySyncObj
   batches every 100 ms, so it needs a wide window); ``commits_per_s`` is the best run's,
   all runs are in ``throughput_by_clients``;
2. latency: one sequential client (``latency_ms_p50``/``_p99``);
3. (trickle) failover, ``--failover-trials`` times: every node runs a probe client
   (sequential proposals, ``--probe-interval`` apart; a follower's are forwarded to the
   leader). The leader's process group gets SIGKILL after a random 0-200 ms pause; the
   failover time is from the kill to the first probe commit, on a survivor, of an entry of
   a term above the dead leader's (a commit by the new leader). The killed node is then
   restarted on its data dir (a new port, sent to the others), catches up (a ReadIndex
   barrier) and probes again before the next trial.

Each load run reports ``soft_state_changes`` (leader changes seen by the proposer during
the run): a leader deposed under load shows there.

PySyncObj runs 1 and 2 in the same run, and again with ``appendEntriesUseBatch=False``
(``pysyncobj.no_batch``), its best latency setting. ``sim_speedup_5_nodes`` comes from
``benchmarks/raft_sim.py`` (``headline``), run after the servers are gone: simulated
seconds per CPU second of this process, so other processes' load does not decide it;
``sim_settings`` gives that run (CPU and wall seconds, wall speed-up, events).

Every child is in its own process group and is killed (SIGKILL to the group) and reaped
when the benchmark ends, also on Ctrl-C, SIGTERM or an error; on Linux the kernel kills
a child whose benchmark died (PR_SET_PDEATHSIG), elsewhere it exits when its stdin closes.

``host`` has the machine's state: cpu count, load averages at the start and the end, and
``cpu_probe_ms`` (a fixed pure-Python loop timed in CPU time at the start and the end:
lower is a faster core; it tells runs on a slowed-down machine apart) and
``fdatasync_ms`` (p50/p99 of a 256-byte append's fdatasync in the data dir's file system,
at the start and the end), and ``commit_floor_ms`` (p50/p99 of the least one durable
commit costs three Python processes here: a frame to two followers over loopback TCP, a
SQLite append with fsync on each of the three, the first answer; see
``commit_floor_ms()``): the floor under trickle's one-client latency while the run went on;
``commit_floor_trio_ms`` the same written with Trio (``commit_floor_trio_ms()``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _raft_server import percentile  # noqa: E402

SERVER = HERE / "_raft_server.py"
SYSTEMS = ("trickle", "pysyncobj")
IDS = ("s1", "s2", "s3")
PYSYNCOBJ_VERSION = "0.3.17"
READY_TIMEOUT = 60.0  # seconds for a child to print its ready line
LEADER_TIMEOUT = 30.0  # seconds for a cluster to agree on a leader
FAILOVER_TIMEOUT = 15.0  # seconds a survivor waits for a new leader's commit
KILL_JITTER = 0.2  # seconds: random pause before each kill, so kills fall anywhere
#                    between two heartbeats
FSYNC_NOTE = (
    "PySyncObj 0.3.17 never fsyncs: its file journal writes through mmap and is flushed "
    "only when it is closed, and it keeps its term and vote in memory only (reset at "
    "start-up), so a restarted node can vote twice in a term. trickle's figures are with "
    "one fsync per Ready (SQLite synchronous=FULL)."
)
TARGETS = {
    "throughput_vs_pysyncobj_min": 1.3,
    "latency_ms_p50_max": 1.0,
    "latency_ms_p99_max": 3.0,
    "failover_ms_p50_max": 400.0,
    "failover_ms_p99_max": 800.0,
    "sim_speedup_5_nodes_min": 20.0,
}


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A child failed or did not answer: the run cannot go on."""


class Child:
    """One server process: its JSON lines on stdout come through a reader thread."""

    def __init__(self, system: str, node: str, data_dir: Path, log_path: Path, extra: list[str]):
        self.system = system
        self.node = node
        self.log_path = log_path
        cmd = [sys.executable, str(SERVER), system, "--id", node, "--data-dir", str(data_dir)]
        self._log_file = open(log_path, "ab")
        self.proc = subprocess.Popen(
            cmd + extra,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            start_new_session=True,  # its own process group: killed as a whole
        )
        self.pid = self.proc.pid
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True, name=f"read-{node}").start()
        try:
            ready = self.reply(READY_TIMEOUT)
            if not ready.get("ready"):
                raise BenchError(f"{system} {node}: unexpected first line {ready}")
        except BaseException:
            self.kill()
            raise
        self.port = int(ready["port"])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def send(self, op: str, **fields: Any) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"op": op, **fields}).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise BenchError(f"{self.system} {self.node}: cannot send {op}: {exc}") from None

    def reply(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(
                f"{self.system} {self.node}: no answer within {timeout} s{self._tail()}"
            ) from None
        if line is None:
            raise BenchError(f"{self.system} {self.node} exited ({self.proc.poll()}){self._tail()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise BenchError(f"{self.system} {self.node}: {answer['error']}{self._tail()}")
        return answer

    def request(self, op: str, *, wait: float = 30.0, **fields: Any) -> dict[str, Any]:
        """Send one command and return its answer (``wait``: seconds to wait for it)."""
        self.send(op, **fields)
        return self.reply(wait)

    def cpu_s(self) -> float:
        try:
            t = psutil.Process(self.pid).cpu_times()
        except psutil.Error:
            return 0.0
        return float(t.user + t.system)

    def kill(self) -> None:
        """SIGKILL to the child's process group (PySyncObj forks for its log compaction),
        then reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.reap()

    def reap(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.returncode is None:  # a child that left its group: kill it alone
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log_file.close()

    def _tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()[-15:]
        except OSError:
            return ""
        return ("\n  " + "\n  ".join(text)) if text else ""


class Cluster:
    """Three server processes of one system; restartable node by node."""

    def __init__(self, system: str, root: Path, extra: list[str] | None = None) -> None:
        self.system = system
        self.root = root
        self.extra = list(extra or [])
        if system == "trickle":
            self.extra += ["--ids", ",".join(IDS)]
        self.children: dict[str, Child] = {}
        self.starts = 0
        root.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for child in list(self.children.values()):
            child.kill()
        self.children.clear()

    def start_node(self, node: str) -> Child:
        self.starts += 1
        data = self.root / node
        log = self.root / f"{node}.log"
        child = self.children[node] = Child(self.system, node, data, log, self.extra)
        return child

    def start(self) -> None:
        for node in IDS:
            self.start_node(node)
        self.send_peers()

    def send_peers(self) -> None:
        peers = {n: ["127.0.0.1", c.port] for n, c in self.children.items()}
        for child in self.children.values():
            child.send("peers", peers=peers)
        for child in self.children.values():
            child.reply(30)

    def all(self, op: str, *, wait: float = 30.0, **fields: Any) -> dict[str, dict[str, Any]]:
        """Send one command to every node; their answers by node."""
        for child in self.children.values():
            child.send(op, **fields)
        return {n: c.reply(wait) for n, c in self.children.items()}

    def stable_leader(self, timeout: float = LEADER_TIMEOUT) -> tuple[str, int]:
        """(leader, term) once every node names the same leader in the same term and that
        node says it leads."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.all("status")
            leaders = {(s["leader"], s["term"]) for s in status.values()}
            if len(leaders) == 1:
                leader, term = next(iter(leaders))
                if leader in status and status[leader]["role"] == "leader":
                    if self.system != "pysyncobj" or all(s["ready"] for s in status.values()):
                        return leader, term
            if time.monotonic() > deadline:
                raise BenchError(f"{self.system}: no stable leader within {timeout} s: {status}")
            time.sleep(0.02)

    def load(self, node: str, *, clients: int, duration: float, warmup: float, size: int) -> dict:
        """Run the load generator in ``node``; its report plus every node's CPU."""
        if self.system == "trickle":
            self.all("node_stats")  # from now on
        cpu0 = {n: c.cpu_s() for n, c in self.children.items()}
        load0 = os.getloadavg()[0]
        report = self.children[node].request(
            "load",
            wait=warmup + duration + 120,
            clients=clients,
            duration=duration,
            warmup=warmup,
            size=size,
        )
        cpu = {n: round(c.cpu_s() - cpu0[n], 2) for n, c in self.children.items()}
        report["cpu_s_by_node"] = cpu  # warm-up included
        if self.system == "trickle":  # warm-up included
            report["node_stats"] = self.all("node_stats")
        total = sum(cpu.values())
        report["cpu_pct_total"] = round(100 * total / (warmup + duration), 1)
        if report["commits"]:
            report["cpu_ms_per_commit"] = round(
                1000 * total / report["commits"] * duration / (warmup + duration), 3
            )
        report["proposer"] = node
        report["loadavg_1m_before"] = round(load0, 2)
        return report


def measure_load(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    """Throughput at each ``--clients`` window, then latency (one client), on the leader.
    The headline ``commits_per_s`` is the best window's."""
    runs: list[dict[str, Any]] = []
    for clients in args.clients:
        leader, term = cluster.stable_leader()
        _log(
            f"{cluster.system}: leader {leader} (term {term}); {clients} clients, "
            f"{args.duration:g} s"
        )
        run = cluster.load(
            leader, clients=clients, duration=args.duration, warmup=args.warmup, size=args.size
        )
        _log(
            f"{cluster.system}: {run['commits_per_s']} commits/s with {clients} clients, "
            f"p50 {run['latency_ms_p50']} ms{_changes(run)}"
        )
        runs.append(run)
    best = max(runs, key=lambda r: r["commits_per_s"])
    leader, term = cluster.stable_leader()
    sequential = cluster.load(
        leader, clients=1, duration=args.duration, warmup=args.warmup, size=args.size
    )
    _log(
        f"{cluster.system}: one client: p50 {sequential['latency_ms_p50']} ms, "
        f"p99 {sequential['latency_ms_p99']} ms{_changes(sequential)}"
    )
    return {
        "commits_per_s": best["commits_per_s"],
        "latency_ms_p50": sequential["latency_ms_p50"],
        "latency_ms_p99": sequential["latency_ms_p99"],
        "throughput": best,
        "throughput_by_clients": {
            str(r["clients"]): {
                k: r.get(k)
                for k in (
                    "commits_per_s",
                    "latency_ms_p50",
                    "latency_ms_p99",
                    "cpu_ms_per_commit",
                    "errors",
                    "soft_state_changes",
                )
            }
            for r in runs
        },
        "sequential": sequential,
    }


def _changes(run: dict[str, Any]) -> str:
    changes = run.get("soft_state_changes")
    return f" ({changes} leadership changes!)" if changes else ""


def measure_failover(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    """Kill -9 the leader, time the next commit by a new leader, restart, repeat."""
    rng = random.Random(args.seed)
    cluster.all("probe_start", interval=args.probe_interval)
    trials: list[dict[str, Any]] = []
    for k in range(args.failover_trials):
        leader, term = cluster.stable_leader()
        time.sleep(rng.uniform(0.0, KILL_JITTER))
        victim = cluster.children.pop(leader)
        t_kill = time.monotonic()
        victim.kill()
        survivors = cluster.children
        for child in survivors.values():
            child.send("first_commit_after", t=t_kill, term_gt=term, timeout=FAILOVER_TIMEOUT)
        answers = {n: c.reply(FAILOVER_TIMEOUT + 10) for n, c in survivors.items()}
        commits = [a["t_commit"] for a in answers.values() if "t_commit" in a]
        known = [a["t_leader_known"] for a in answers.values() if a.get("t_leader_known")]
        trial: dict[str, Any] = {
            "killed": leader,
            "killed_term": term,
            "failover_ms": round(1000 * (min(commits) - t_kill), 2) if commits else None,
            "leader_known_ms": round(1000 * (min(known) - t_kill), 2) if known else None,
            "new_leader": next(
                (a.get("leader") for a in answers.values() if a.get("leader")), None
            ),
        }
        restart0 = time.monotonic()
        cluster.start_node(leader)
        cluster.send_peers()
        caught = cluster.children[leader].request("catch_up", wait=60, timeout=30)
        cluster.children[leader].request("probe_start", interval=args.probe_interval)
        trial["restart_s"] = round(time.monotonic() - restart0, 3)
        trial["catch_up_s"] = caught["catch_up_s"]
        trials.append(trial)
        _log(
            f"trickle failover {k + 1}/{args.failover_trials}: killed {leader} (term {term}): "
            f"{trial['failover_ms']} ms to a commit by {trial['new_leader']}; "
            f"rejoined in {trial['restart_s']} s"
        )
    probes = cluster.all("probe_stop")
    done = sorted(t["failover_ms"] for t in trials if t["failover_ms"] is not None)
    known = sorted(t["leader_known_ms"] for t in trials if t["leader_known_ms"] is not None)
    restart = sorted(t["restart_s"] for t in trials)

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    return {
        "failover_ms_p50": r(percentile(done, 0.50)),
        "failover_ms_p99": r(percentile(done, 0.99)),
        "failover_ms_min": r(done[0] if done else None),
        "failover_ms_max": r(done[-1] if done else None),
        "failover_ms_mean": r(sum(done) / len(done) if done else None),
        "leader_known_ms_p50": r(percentile(known, 0.50)),
        "leader_known_ms_p99": r(percentile(known, 0.99)),
        "failover_trials": len(trials),
        "failover_failures": len(trials) - len(done),
        "restart_s_p50": percentile(restart, 0.50),
        "probe_interval_s": args.probe_interval,
        "probe_errors_by_node": {n: p.get("errors", {}) for n, p in probes.items()},
        "failover_trials_detail": trials,
    }


def run_trickle(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from trickle.raft.driver import DEFAULT_CONFIG, DEFAULT_TICK_SECONDS

    out: dict[str, Any] = {"fsync": True}
    with Cluster("trickle", root / "trickle", ["--durability", "fsync"]) as cluster:
        _log("trickle: starting 3 servers")
        cluster.start()
        out |= measure_load(cluster, args)
        if args.failover_trials:
            out |= measure_failover(cluster, args)
        else:
            out |= {"failover_ms_p50": None, "failover_ms_p99": None, "failover_trials": 0}
        out["processes_started"] = cluster.starts
    out["settings"] = {
        "durability": "fsync (SQLite synchronous=FULL, one fsync per Ready)",
        "tick_s": DEFAULT_TICK_SECONDS,
        "election_ticks": DEFAULT_CONFIG.election_ticks,
        "heartbeat_ticks": DEFAULT_CONFIG.heartbeat_ticks,
        "max_inflight": DEFAULT_CONFIG.max_inflight,
        "pre_vote": DEFAULT_CONFIG.pre_vote,
        "check_quorum": DEFAULT_CONFIG.check_quorum,
    }
    return out


def run_pysyncobj(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    import pysyncobj.version

    out: dict[str, Any] = {
        "fsync": False,
        "fsync_note": FSYNC_NOTE,
        "version": getattr(pysyncobj.version, "VERSION", None),
    }
    with Cluster("pysyncobj", root / "pysyncobj") as cluster:
        _log("pysyncobj: starting 3 servers (defaults: appendEntriesUseBatch=True)")
        cluster.start()
        out |= measure_load(cluster, args)
    if args.pysyncobj_no_batch:
        with Cluster("pysyncobj", root / "pysyncobj-no-batch", ["--no-batch"]) as cluster:
            _log("pysyncobj: starting 3 servers with appendEntriesUseBatch=False")
            cluster.start()
            nb = measure_load(cluster, args)
        out["no_batch"] = {
            k: nb[k]
            for k in (
                "commits_per_s",
                "latency_ms_p50",
                "latency_ms_p99",
                "throughput",
                "throughput_by_clients",
                "sequential",
            )
        }
    out["settings"] = {
        "append_entries_use_batch": True,
        "journal": "file (journalFile and fullDumpFile in the temp dir; never fsynced)",
    }
    return out


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """Each target of issue 3 with the measured figure and whether it was met."""
    tr, ps = result.get("trickle") or {}, result.get("pysyncobj") or {}
    ratio = None
    # Against PySyncObj's best setting (batched or not), the stricter comparison.
    theirs = max(ps.get("commits_per_s") or 0, (ps.get("no_batch") or {}).get("commits_per_s") or 0)
    if tr.get("commits_per_s") and theirs:
        ratio = round(tr["commits_per_s"] / theirs, 2)

    def check(value: float | None, limit: float, at_least: bool) -> dict[str, Any]:
        met = None if value is None else (value >= limit if at_least else value <= limit)
        return {"value": value, "target": limit, "met": met}

    return {
        "throughput_vs_pysyncobj": check(ratio, TARGETS["throughput_vs_pysyncobj_min"], True),
        "latency_ms_p50": check(tr.get("latency_ms_p50"), TARGETS["latency_ms_p50_max"], False),
        "latency_ms_p99": check(tr.get("latency_ms_p99"), TARGETS["latency_ms_p99_max"], False),
        "failover_ms_p50": check(tr.get("failover_ms_p50"), TARGETS["failover_ms_p50_max"], False),
        "failover_ms_p99": check(tr.get("failover_ms_p99"), TARGETS["failover_ms_p99_max"], False),
        "sim_speedup_5_nodes": check(
            result.get("sim_speedup_5_nodes"), TARGETS["sim_speedup_5_nodes_min"], True
        ),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(HERE.parent), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def cpu_probe_ms() -> float:
    """CPU milliseconds of one fixed pure-Python loop (a million additions)."""
    start = time.thread_time()
    total = 0
    for i in range(1_000_000):
        total += i
    return round(1000 * (time.thread_time() - start), 1)


def fsync_probe_ms(directory: Path, samples: int = 200) -> dict[str, float | None]:
    """fdatasync of a 256-byte append in ``directory``: p50 and p99 in ms (the disk's
    floor under whatever else runs on the machine now)."""
    path = directory / "fsync-probe.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times: list[float] = []
    try:
        for _ in range(samples):
            os.write(fd, b"x" * 256)
            start = time.perf_counter()
            os.fdatasync(fd) if hasattr(os, "fdatasync") else os.fsync(fd)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
    return {
        "p50": None if p50 is None else round(p50, 3),
        "p99": None if p99 is None else round(p99, 3),
    }


_FLOOR_FOLLOWER = """
import os, socket, sqlite3, struct, sys
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
db = sqlite3.connect(sys.argv[2], isolation_level=None)
db.execute("PRAGMA locking_mode=EXCLUSIVE")
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=" + sys.argv[3])
db.execute("CREATE TABLE e (idx INTEGER PRIMARY KEY, data BLOB)")
while True:
    frame = sock.recv(65536)
    if not frame:
        break
    i = struct.unpack(">Q", frame[-8:])[0]
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO e VALUES (?, ?)", (i, frame[:64]))
    db.execute("COMMIT")
    sock.sendall(frame[-8:])
"""


def commit_floor_ms(
    directory: Path, rounds: int = 2000, synchronous: str = "FULL"
) -> dict[str, float | None]:
    """The floor of one durable commit on three Python processes, p50/p99 in ms: a
    "leader" sends a 72-byte frame to two follower processes over loopback TCP; each
    appends it to SQLite (WAL, ``synchronous``) and answers; the leader appends it to its
    own SQLite meanwhile; a round ends with the leader's save and the first answer (a
    quorum of 3). Plain blocking sockets, no framing, no Raft: what any Python Raft pays
    per commit on this machine, disk and load (the first quarter of rounds is warm-up)."""
    import select
    import socket
    import sqlite3
    import struct

    work = Path(tempfile.mkdtemp(prefix="floor-", dir=directory))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _FLOOR_FOLLOWER, str(port), str(work / f"f{k}.db"), synchronous]
        )
        for k in range(2)
    ]
    conns: list[socket.socket] = []
    try:
        listener.settimeout(READY_TIMEOUT)
        for _ in children:
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
            conns.append(conn)
        db = sqlite3.connect(work / "leader.db", isolation_level=None)
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("CREATE TABLE e (idx INTEGER PRIMARY KEY, data BLOB)")
        times: list[float] = []
        for i in range(rounds):
            frame = b"c" * 64 + struct.pack(">Q", i)
            start = time.perf_counter()
            for conn in conns:
                conn.sendall(frame)
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO e VALUES (?, ?)", (i, frame[:64]))
            db.execute("COMMIT")
            select.select(conns, [], [])  # the first answer: a quorum with ours
            times.append((time.perf_counter() - start) * 1000)
            for conn in conns:  # the other answer, before the next round
                conn.recv(8)
        db.close()
    finally:
        for conn in conns:
            conn.close()
        listener.close()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        shutil.rmtree(work, ignore_errors=True)
    times = sorted(times[rounds // 4 :])
    p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
    return {
        "p50": None if p50 is None else round(p50, 3),
        "p99": None if p99 is None else round(p99, 3),
    }


_FLOOR_FOLLOWER_TRIO = """
import socket, sqlite3, struct, sys
import trio

async def main():
    db = sqlite3.connect(sys.argv[2], isolation_level=None)
    db.execute("PRAGMA locking_mode=EXCLUSIVE")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=" + sys.argv[3])
    db.execute("CREATE TABLE e (idx INTEGER PRIMARY KEY, data BLOB)")
    stream = await trio.open_tcp_stream("127.0.0.1", int(sys.argv[1]))
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
    while True:
        frame = await stream.receive_some(65536)
        if not frame:
            break
        i = struct.unpack(">Q", frame[-8:])[0]
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO e VALUES (?, ?)", (i, frame[:64]))
        db.execute("COMMIT")
        await stream.send_all(frame[-8:])

trio.run(main)
"""


def commit_floor_trio_ms(
    directory: Path, rounds: int = 2000, synchronous: str = "FULL"
) -> dict[str, float | None]:
    """``commit_floor_ms`` written with Trio in all three processes (Trio sockets, a
    reader task per follower feeding a memory channel, the inserts on the Trio thread):
    the floor of one durable commit for any Trio program with this I/O here."""
    import socket
    import sqlite3
    import struct

    import trio

    work = Path(tempfile.mkdtemp(prefix="floor-trio-", dir=directory))
    times: list[float] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _FLOOR_FOLLOWER_TRIO,
                str(port),
                str(work / f"f{k}.db"),
                synchronous,
            ]
        )
        for k in range(2)
    ]

    async def leader() -> None:
        listening = trio.SocketListener(trio.socket.from_stdlib_socket(listener))
        conns = []
        with trio.fail_after(READY_TIMEOUT):
            for _ in children:
                conn = await listening.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
                conns.append(conn)
        db = sqlite3.connect(work / "leader.db", isolation_level=None)
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("CREATE TABLE e (idx INTEGER PRIMARY KEY, data BLOB)")
        send, receive = trio.open_memory_channel[int](16)

        async def answers(conn: trio.SocketStream) -> None:
            while data := await conn.receive_some(65536):
                for k in range(0, len(data) - 7, 8):
                    send.send_nowait(struct.unpack(">Q", data[k : k + 8])[0])

        async with trio.open_nursery() as nursery:
            for conn in conns:
                nursery.start_soon(answers, conn)
            for i in range(rounds):
                frame = b"c" * 64 + struct.pack(">Q", i)
                start = time.perf_counter()
                for conn in conns:
                    await conn.send_all(frame)
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO e VALUES (?, ?)", (i, frame[:64]))
                db.execute("COMMIT")
                while await receive.receive() != i:  # the first answer for this round
                    pass
                times.append((time.perf_counter() - start) * 1000)
                await receive.receive()  # the other answer, before the next round
            nursery.cancel_scope.cancel()
        db.close()
        for conn in conns:
            await conn.aclose()
        await listening.aclose()

    try:
        trio.run(leader)
    finally:
        listener.close()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        shutil.rmtree(work, ignore_errors=True)
    times = sorted(times[rounds // 4 :])
    p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
    return {
        "p50": None if p50 is None else round(p50, 3),
        "p99": None if p99 is None else round(p99, 3),
    }


def _filesystem(path: Path) -> str | None:
    best = None
    for part in psutil.disk_partitions(all=True):
        if str(path).startswith(part.mountpoint) and (
            best is None or len(part.mountpoint) > len(best.mountpoint)
        ):
            best = part
    return None if best is None else best.fstype


@contextlib.contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the children are killed and the dir removed."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds counted per load run (throughput, then latency)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds run before each counted window (default min(2, duration/4))",
    )
    parser.add_argument(
        "--clients",
        default="250,1000,2000",
        help="outstanding proposals in the throughput runs, comma-separated: one run each, "
        "the best is the headline (default 250,1000,2000)",
    )
    parser.add_argument("--size", type=int, default=64, help="bytes per command")
    parser.add_argument(
        "--failover-trials", type=int, default=20, help="trickle leader kills (0: none)"
    )
    parser.add_argument(
        "--probe-interval",
        type=float,
        default=0.02,
        help="seconds between two proposals of a failover probe client",
    )
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help="comma-separated systems to run (default both)"
    )
    parser.add_argument(
        "--no-pysyncobj-no-batch",
        dest="pysyncobj_no_batch",
        action="store_false",
        help="skip PySyncObj's second run with appendEntriesUseBatch=False",
    )
    parser.add_argument(
        "--sim-seconds",
        type=float,
        default=30.0,
        help="simulated seconds for sim_speedup_5_nodes (0: skip, null)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where the temp data dirs go (default: the system temp dir; "
        "it must be on a real disk for fsync to mean anything)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill pauses")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and logs")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error("--duration must be positive")
    if args.warmup is None:
        args.warmup = min(2.0, args.duration / 4)
    if args.warmup < 0:
        parser.error("--warmup cannot be negative")
    try:
        args.clients = [int(c) for c in str(args.clients).split(",") if c.strip()]
    except ValueError:
        parser.error(f"--clients: not a comma-separated list of integers: {args.clients!r}")
    if not args.clients or min(args.clients) < 1:
        parser.error("--clients: every window must be at least 1")
    if args.size < 1:
        parser.error("--size must be at least 1")
    if args.failover_trials < 0:
        parser.error("--failover-trials cannot be negative")
    if args.probe_interval < 0:
        parser.error("--probe-interval cannot be negative")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown or not systems:
        parser.error(f"--systems: unknown {unknown}; use {', '.join(SYSTEMS)}")
    if "pysyncobj" in systems and importlib.util.find_spec("pysyncobj") is None:
        print(
            "error: PySyncObj is not installed; the benchmark compares against it.\n"
            f"  pip install pysyncobj=={PYSYNCOBJ_VERSION}\n"
            "(or run with --systems trickle)",
            file=sys.stderr,
        )
        return 2

    root = Path(tempfile.mkdtemp(prefix="trickle-raft-bench-", dir=args.dir))
    result: dict[str, Any] = {}
    host: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "commit": _git_commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data_dir_fs": _filesystem(root),
    }
    if host["data_dir_fs"] == "tmpfs":
        _log("warning: the data dir is on tmpfs: fsync costs nothing there (see --dir)")
    try:
        with _terminate_on_sigterm():
            host |= _machine_now("start", root)
            for system in systems:
                runner = run_trickle if system == "trickle" else run_pysyncobj
                result[system] = runner(args, root)
            host |= _machine_now("end", root)
            if args.sim_seconds > 0:
                import raft_sim

                _log(f"simulator: 5 nodes, {args.sim_seconds:g} simulated s")
                sim = raft_sim.headline(args.sim_seconds)
                result["sim_speedup_5_nodes"] = sim["sim_speedup"]
                result["sim_settings"] = sim  # its clock: CPU time of this process
            else:
                result["sim_speedup_5_nodes"] = None
    except BenchError as exc:
        _log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        _log("interrupted: every server process is killed")
        return 130
    finally:
        if args.keep:
            _log(f"data dirs and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    for system in SYSTEMS:
        result.setdefault(system, None)
    result["host"] = host
    result["targets"] = targets(result)
    print(json.dumps(result))
    return 0


def _machine_now(when: str, root: Path) -> dict[str, Any]:
    return {
        f"loadavg_{when}": [round(x, 2) for x in os.getloadavg()],
        f"cpu_probe_ms_{when}": cpu_probe_ms(),
        f"fdatasync_ms_{when}": fsync_probe_ms(root),
        f"commit_floor_ms_{when}": commit_floor_ms(root),
        f"commit_floor_trio_ms_{when}": commit_floor_trio_ms(root),
    }


if __name__ == "__main__":
    sys.exit(main())
