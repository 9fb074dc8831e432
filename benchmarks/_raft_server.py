"""One server process of the Raft benchmark (benchmarks/raft.py): trickle or PySyncObj.

    python benchmarks/_raft_server.py trickle --id s1 --ids s1,s2,s3 --data-dir DIR
    python benchmarks/_raft_server.py pysyncobj --id s1 --data-dir DIR [--no-batch]

The process binds 127.0.0.1 port 0 and prints ONE ready line on stdout,
``{"ready": true, "id": ..., "port": ..., "pid": ...}``. It then reads commands from stdin,
one JSON object a line, and answers each with one JSON line on stdout (``{"error": text}``
when a command fails; the process goes on). It exits on ``{"op": "quit"}`` and when stdin
closes, so it never outlives the benchmark that started it. Logs go to stderr.

Commands (``op``):

- ``peers`` ``{"peers": {id: [host, port]}}``: the cluster's addresses (its own included);
  the first one starts the node (trickle: the RaftDriver; PySyncObj: the SyncObj).
- ``status``: ``{"role", "leader", "term", ...}``.
- ``wait_leader`` ``{"timeout"}``: ``{"leader", "term"}`` once this node knows a leader.
- ``load`` ``{"clients", "duration", "warmup", "size"}``: the load generator, run in this
  process (see ``run_load`` for trickle, ``_PySyncObjServer.load`` for PySyncObj).
- trickle only: ``node_stats`` (saves: count, duration, entries; how late the Trio loop
  wakes a 10 ms sleeper; both since the last call); for the failover trials: ``probe_start`` ``{"interval"}`` / ``probe_stop``,
  ``first_commit_after`` ``{"t", "term_gt", "timeout"}`` and ``catch_up`` ``{"timeout"}``.
- ``quit``.

The trickle node is the product's own pieces: RaftDriver with its defaults (25 ms tick,
election timeout 250-500 ms, heartbeat 100 ms), TcpTransport, SqliteRaftStorage with
Durability.FSYNC in ``<data dir>/raft.db``, and a counter as the state machine (its
result for an entry is the entry's term, which the failover trials use).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

logger = logging.getLogger("raft-bench-server")

COMMAND_BYTES = 64  # default size of one benchmark command
PROBE_BYTES = 64  # size of one failover probe command
LAG_PERIOD = 0.01  # seconds between two loop-lag probes
PROPOSAL_GIVE_UP = 10.0  # seconds a client waits for one proposal before abandoning it
MAX_SAMPLES = 2_000_000  # latency samples kept per load run (the rest are counted only)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(seconds: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/p99.9/max/mean in milliseconds, rounded to the microsecond."""
    ms = sorted(s * 1000.0 for s in seconds)

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 3)

    return {
        "latency_ms_p50": r(percentile(ms, 0.50)),
        "latency_ms_p90": r(percentile(ms, 0.90)),
        "latency_ms_p99": r(percentile(ms, 0.99)),
        "latency_ms_p999": r(percentile(ms, 0.999)),
        "latency_ms_max": r(ms[-1] if ms else None),
        "latency_ms_mean": r(sum(ms) / len(ms) if ms else None),
    }


def command(i: int, size: int) -> bytes:
    """Command number ``i``, exactly ``size`` bytes (zero-padded decimal)."""
    return str(i).zfill(size).encode()[-size:]


def emit(obj: dict[str, Any]) -> None:
    """Write one JSON line to the benchmark; if it is gone, exit at once."""
    try:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()
    except OSError:  # the benchmark closed its end: nobody will ever read us
        os._exit(3)


def die_with_parent() -> None:
    """Linux: the kernel SIGKILLs this process when the benchmark dies, even by SIGKILL.
    (Elsewhere a closed stdin or stdout ends the process instead.)"""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent:  # the parent died before the call
        os._exit(3)


class LoadWindow:
    """What a closed-loop load run counts: commits completed inside [begin, end)."""

    def __init__(self, warmup: float, duration: float) -> None:
        now = time.perf_counter()
        self.begin = now + warmup
        self.end = self.begin + duration
        self.duration = duration
        self.commits = 0
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}

    def done(self, started: float, finished: float) -> None:
        if self.begin <= finished < self.end:
            self.commits += 1
            if len(self.latencies) < MAX_SAMPLES:
                self.latencies.append(finished - started)

    def failed(self, name: str) -> None:
        self.errors[name] = self.errors.get(name, 0) + 1

    def report(self, clients: int, size: int) -> dict[str, Any]:
        return {
            "clients": clients,
            "command_bytes": size,
            "duration_s": self.duration,
            "commits": self.commits,
            "commits_per_s": round(self.commits / self.duration, 1),
            **latency_summary(self.latencies),
            "errors": self.errors,
        }


# -- trickle -----------------------------------------------------------------------------


def run_trickle(args: argparse.Namespace) -> None:
    import trio

    trio.run(_trickle_main, args)


class CounterApp:
    """The replicated state machine: counts commands; an entry's result is its term."""

    def __init__(self) -> None:
        self.count = 0

    async def apply(self, entries: Sequence[Any]) -> list[object]:
        from trickle.raft.messages import EntryKind

        out: list[object] = []
        for entry in entries:
            if entry.kind is EntryKind.NORMAL and entry.data:
                self.count += 1
            out.append(entry.term)
        return out

    async def restore(self, snapshot: Any) -> None:
        # bytes, or a SnapshotFile when read back from raft.db at a restart
        self.count = int(bytes(snapshot.data).decode() or 0)

    async def snapshot(self) -> bytes:
        return str(self.count).encode()


class TimedStorage:
    """The node's RaftStorage, with the duration and size of every ``save`` recorded
    (they run in the driver's worker thread; the driver waits for each one, and sends
    nothing of the next Ready meanwhile)."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        self.saves: list[tuple[float, int]] = []  # (seconds, entries)

    def load(self) -> Any:
        return self._storage.load()

    def save(self, **writes: Any) -> None:
        started = time.perf_counter()
        self._storage.save(**writes)
        self.saves.append((time.perf_counter() - started, len(writes.get("entries") or ())))

    def compact(self, snapshot: Any, *, keep_from: int) -> None:
        self._storage.compact(snapshot, keep_from=keep_from)

    def entries(self, lo: int, hi: int) -> Any:
        """Entries read back for a follower behind (RaftStorage.entries)."""
        return self._storage.entries(lo, hi)

    def close(self) -> None:
        self._storage.close()

    def statistics(self) -> dict[str, Any]:
        """Saves since the last call: count, duration percentiles, entries per save."""
        saves, self.saves = self.saves, []
        ms = sorted(d * 1000 for d, _ in saves)
        sizes = sorted(n for _, n in saves)
        return {
            "saves": len(saves),
            "save_ms_p50": _round(percentile(ms, 0.5)),
            "save_ms_p99": _round(percentile(ms, 0.99)),
            "save_ms_max": _round(ms[-1] if ms else None),
            "save_ms_total": _round(sum(ms)),
            "save_entries_p50": percentile(sizes, 0.5),
            "save_entries_max": sizes[-1] if sizes else None,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class _TrickleServer:
    def __init__(self, args: argparse.Namespace, nursery: Any) -> None:
        from trickle.raft.messages import NodeId
        from trickle.raft.sqlstore import SqliteRaftStorage
        from trickle.raft.storage import Durability
        from trickle.raft.transport import TcpTransport

        self.args = args
        self.nursery = nursery
        self.id = NodeId(args.id)
        self.ids = [NodeId(i) for i in args.ids.split(",")]
        self.storage = TimedStorage(
            SqliteRaftStorage(
                Path(args.data_dir) / "raft.db", durability=Durability(args.durability)
            )
        )
        self.transport = TcpTransport(self.id, bind=("127.0.0.1", 0))
        self.app = CounterApp()
        self.driver: Any = None
        self.probe_scope: Any = None
        self.probes: list[tuple[float, int]] = []  # (time.monotonic() at commit, entry term)
        self.probe_errors: dict[str, int] = {}
        self.leaders: list[tuple[float, str | None, int]] = []  # (monotonic, leader, term)
        self.changed: Any = None
        self.lags: list[float] = []  # seconds each LAG_PERIOD sleep overslept

    async def watch_loop_lag(self) -> None:
        """How late this process's Trio loop wakes a task that sleeps LAG_PERIOD: the
        delay any timer (the driver's ticks) or message sees at that moment."""
        import trio

        clock = time.perf_counter
        while True:
            due = clock() + LAG_PERIOD
            await trio.sleep(LAG_PERIOD)
            self.lags.append(max(0.0, clock() - due))
            if len(self.lags) > 1_000_000:
                del self.lags[:500_000]

    def _on_soft_state(self, soft: Any) -> None:
        self.leaders.append((time.monotonic(), soft.leader, soft.term))
        self._notify()

    def _notify(self) -> None:
        if self.changed is not None:
            self.changed.set()
            self.changed = None

    async def _wait_change(self) -> None:
        import trio

        if self.changed is None:
            self.changed = trio.Event()
        await self.changed.wait()

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        import trio

        from trickle.raft.driver import RaftDriver
        from trickle.raft.messages import ConfState

        op = request.get("op")
        if op == "peers":
            peers = {p: (str(a[0]), int(a[1])) for p, a in request["peers"].items()}
            self.transport.set_peers(peers)
            if self.driver is None:
                self.driver = RaftDriver(
                    self.id,
                    storage=self.storage,
                    transport=self.transport,
                    app=self.app,
                    bootstrap=ConfState(voters=frozenset(self.ids)),
                    on_soft_state=self._on_soft_state,
                    storage_in_thread=not self.args.storage_inline,
                )
                await self.nursery.start(self.driver.run)
            return {"ok": True}
        if op == "status":
            return self.status()
        if op == "node_stats":
            lags, self.lags = self.lags, []
            ms = sorted(x * 1000 for x in lags)
            return {
                **self.storage.statistics(),
                "loop_lag_ms_p50": _round(percentile(ms, 0.5)),
                "loop_lag_ms_p99": _round(percentile(ms, 0.99)),
                "loop_lag_ms_max": _round(ms[-1] if ms else None),
            }
        if op == "wait_leader":
            with trio.fail_after(float(request.get("timeout", 10))):
                leader = await self.driver.wait_leader()
            return {"leader": leader, "term": self.driver.soft_state.term}
        if op == "load":
            term, changes = self.driver.soft_state.term, len(self.leaders)
            report = await run_load(
                self.driver,
                clients=int(request["clients"]),
                duration=float(request["duration"]),
                warmup=float(request.get("warmup", 0)),
                size=int(request.get("size", COMMAND_BYTES)),
                give_up=float(request.get("give_up", PROPOSAL_GIVE_UP)),
            )
            # a leader change under load is worth knowing: the figures then mix two leaders
            report["soft_state_changes"] = len(self.leaders) - changes
            report["term_before"], report["term_after"] = term, self.driver.soft_state.term
            report["role_after"] = self.driver.soft_state.role.value
            return report
        if op == "probe_start":
            if self.probe_scope is None:
                self.probe_scope = trio.CancelScope()
                self.nursery.start_soon(self._probe, float(request.get("interval", 0.02)))
            return {"ok": True}
        if op == "probe_stop":
            if self.probe_scope is not None:
                self.probe_scope.cancel()
                self.probe_scope = None
            return {"ok": True, "probes": len(self.probes), "errors": self.probe_errors}
        if op == "first_commit_after":
            return await self._first_commit_after(
                float(request["t"]), int(request["term_gt"]), float(request.get("timeout", 10))
            )
        if op == "catch_up":
            t0 = time.monotonic()
            index = await self.driver.read_barrier(timeout=float(request.get("timeout", 10)))
            return {"applied": index, "catch_up_s": round(time.monotonic() - t0, 4)}
        raise ValueError(f"unknown op {op!r}")

    def status(self) -> dict[str, Any]:
        if self.driver is None or not self.driver.running:
            return {"role": "stopped", "leader": None, "term": 0}
        st = self.driver.status()
        return {
            "role": st.role.value,
            "leader": st.leader,
            "term": st.term,
            "commit": st.commit,
            "applied": self.driver.applied,
            "last_index": st.last_index,
            "count": self.app.count,
        }

    async def _probe(self, interval: float) -> None:
        """A sequential client that never stops: propose, record (commit time, term),
        sleep ``interval``; on an error, try again at once (``propose`` itself waits for a
        leader to be known)."""
        import trio

        from trickle.errors import TrickleError

        i = 0
        with self.probe_scope:
            while True:
                i += 1
                try:
                    with trio.move_on_after(PROPOSAL_GIVE_UP) as scope:
                        term = await self.driver.propose(command(i, PROBE_BYTES))
                except TrickleError as exc:
                    name = type(exc).__name__
                    self.probe_errors[name] = self.probe_errors.get(name, 0) + 1
                    await trio.sleep(0.001)  # no hot loop if an error repeats at once
                    continue
                if scope.cancelled_caught:
                    self.probe_errors["GaveUp"] = self.probe_errors.get("GaveUp", 0) + 1
                    continue
                self.probes.append((time.monotonic(), int(term)))
                self._notify()
                await trio.sleep(interval)

    async def _first_commit_after(self, t: float, term_gt: int, limit: float) -> dict[str, Any]:
        """The first probe commit at or after ``t`` (time.monotonic) of an entry of a
        term above ``term_gt``, i.e. committed by a leader elected after the old one, and
        when this node first heard of such a leader."""
        import trio

        with trio.move_on_after(limit):
            while True:
                commit = next((c for c in self.probes if c[0] >= t and c[1] > term_gt), None)
                if commit is not None:
                    known = next(
                        (x for x in self.leaders if x[0] >= t and x[1] and x[2] > term_gt), None
                    )
                    return {
                        "t_commit": commit[0],
                        "term": commit[1],
                        "t_leader_known": known[0] if known else None,
                        "leader": known[1] if known else None,
                    }
                await self._wait_change()
        return {"timeout": True, "probe_errors": self.probe_errors}


async def run_load(
    driver: Any, *, clients: int, duration: float, warmup: float, size: int, give_up: float
) -> dict[str, Any]:
    """The load generator (trickle side): ``clients`` tasks in this process, each a
    closed loop of ``driver.propose(<size bytes>)``: a new proposal as soon as the last
    one returned (applied here). Counts the commits that complete in the window after
    ``warmup`` and their latency (call to return). A proposal still unanswered
    ``give_up`` seconds after the window is abandoned and counted as an error
    (``GaveUp``)."""
    import trio

    from trickle.errors import TrickleError

    window = LoadWindow(warmup, duration)
    counter = iter(range(1 << 62))
    clock = time.perf_counter

    async def client() -> None:
        # one cancel scope per client, not per proposal: its cost would be the client's
        with trio.move_on_after(window.end - clock() + give_up) as scope:
            while True:
                started = clock()
                if started >= window.end:
                    return
                try:
                    await driver.propose(command(next(counter), size))
                except TrickleError as exc:
                    window.failed(type(exc).__name__)
                    await trio.sleep(0.001)
                    continue
                window.done(started, clock())
        if scope.cancelled_caught:
            window.failed("GaveUp")

    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(client)
    return window.report(clients, size)


async def _read_commands(stream: Any) -> Any:
    buffer = b""
    while True:
        while b"\n" not in buffer:
            data = await stream.receive_some(65536)
            if not data:
                return
            buffer += data
        line, _, buffer = buffer.partition(b"\n")
        if line.strip():
            yield json.loads(line)


async def _trickle_main(args: argparse.Namespace) -> None:
    import trio

    server: _TrickleServer | None = None
    try:
        async with trio.open_nursery() as nursery:
            server = _TrickleServer(args, nursery)
            address = await nursery.start(server.transport.serve)
            nursery.start_soon(server.watch_loop_lag)
            emit({"ready": True, "id": args.id, "port": address[1], "pid": os.getpid()})
            stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
            async for request in _read_commands(stdin):
                if request.get("op") == "quit":
                    break
                try:
                    reply = await server.handle(request)
                except Exception as exc:  # answer it: the benchmark decides what to do
                    logger.exception("%s failed", request.get("op"))
                    reply = {"error": f"{type(exc).__name__}: {exc}"}
                emit(reply)
            nursery.cancel_scope.cancel()
    finally:
        if server is not None:
            server.storage.close()  # once the driver is stopped


# -- PySyncObj ----------------------------------------------------------------------------


def run_pysyncobj(args: argparse.Namespace) -> None:
    # PySyncObj binds its own listener from an address: reserve a port by binding it, tell
    # the parent, and free it just before SyncObj binds it (SO_REUSEADDR) once the peers
    # are known. Another process could take the port in between; that fails the run loudly.
    reserve = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserve.bind(("127.0.0.1", 0))
    port = reserve.getsockname()[1]
    server = _PySyncObjServer(args, port, reserve)
    emit({"ready": True, "id": args.id, "port": port, "pid": os.getpid()})
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            request = json.loads(line)
            if request.get("op") == "quit":
                break
            try:
                reply = server.handle(request)
            except Exception as exc:
                logger.exception("%s failed", request.get("op"))
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            emit(reply)
    finally:
        server.close()


class _PySyncObjServer:
    def __init__(self, args: argparse.Namespace, port: int, reserve: socket.socket) -> None:
        self.args = args
        self.port = port
        self.reserve: socket.socket | None = reserve
        self.obj: Any = None
        self.ids_by_address: dict[str, str] = {}

    def close(self) -> None:
        if self.reserve is not None:
            self.reserve.close()
        if self.obj is not None:
            self.obj.destroy()

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "peers":
            self.start({p: (str(a[0]), int(a[1])) for p, a in request["peers"].items()})
            return {"ok": True}
        if op == "status":
            return self.status()
        if op == "wait_leader":
            deadline = time.monotonic() + float(request.get("timeout", 10))
            while time.monotonic() < deadline:
                st = self.status()
                if st["leader"] is not None and st["ready"]:
                    return {"leader": st["leader"], "term": st["term"]}
                time.sleep(0.01)
            raise TimeoutError("no leader known")
        if op == "load":
            return self.load(
                clients=int(request["clients"]),
                duration=float(request["duration"]),
                warmup=float(request.get("warmup", 0)),
                size=int(request.get("size", COMMAND_BYTES)),
            )
        raise ValueError(f"unknown op {op!r}")

    def start(self, peers: dict[str, tuple[str, int]]) -> None:
        from pysyncobj import SyncObj, SyncObjConf, replicated

        if self.obj is not None:
            raise RuntimeError("PySyncObj is already started (no membership changes here)")
        self.ids_by_address = {f"{h}:{p}": i for i, (h, p) in peers.items()}
        me = f"127.0.0.1:{self.port}"
        others = [a for a in self.ids_by_address if a != me]
        data = Path(self.args.data_dir)
        conf = SyncObjConf(
            appendEntriesUseBatch=not self.args.no_batch,
            journalFile=str(data / "journal.bin"),
            fullDumpFile=str(data / "dump.bin"),
        )

        class Counter(SyncObj):  # type: ignore[misc]
            def __init__(self) -> None:
                self.count = 0
                super().__init__(me, others, conf)

            @replicated  # type: ignore[misc]
            def add(self, command: bytes) -> int:
                self.count += 1
                return self.count

        assert self.reserve is not None
        self.reserve.close()
        self.reserve = None
        self.obj = Counter()

    def status(self) -> dict[str, Any]:
        obj = self.obj
        if obj is None:
            return {"role": "stopped", "leader": None, "term": 0, "ready": False}
        leader = obj._getLeader()
        return {
            "role": "leader" if obj._isLeader() else "follower",
            "leader": None if leader is None else self.ids_by_address.get(str(leader.address)),
            "term": obj._getTerm(),
            "ready": obj.isReady(),
            "log_size": obj._getRaftLogSize(),
            "count": obj.count,
        }

    def load(self, *, clients: int, duration: float, warmup: float, size: int) -> dict[str, Any]:
        """The load generator (PySyncObj side), the same closed loop as trickle's: keep
        ``clients`` calls of the replicated method outstanding; each callback (run on
        PySyncObj's thread, once the command is applied here) records the commit and
        issues the next call. PySyncObj's own benchmark likewise calls replicated
        methods with callbacks in the node's process."""
        from pysyncobj import FAIL_REASON

        window = LoadWindow(warmup, duration)
        clock = time.perf_counter
        add = self.obj.add
        finished = threading.Event()
        state = {"outstanding": clients, "next": 0}
        lock = threading.Lock()

        def issue() -> None:
            with lock:
                state["next"] += 1
                i = state["next"]
            started = clock()

            def callback(result: object, error: int) -> None:
                now = clock()
                if error == FAIL_REASON.SUCCESS:
                    window.done(started, now)
                else:
                    window.failed(f"FAIL_REASON_{error}")
                if now < window.end:
                    issue()
                    return
                with lock:
                    state["outstanding"] -= 1
                    if not state["outstanding"]:
                        finished.set()

            add(command(i, size), callback=callback)

        for _ in range(clients):
            issue()
        if not finished.wait(warmup + duration + 60):
            window.failed("unfinished_calls")
        report = window.report(clients, size)
        report["append_entries_use_batch"] = not self.args.no_batch
        return report


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("system", choices=("trickle", "pysyncobj"))
    parser.add_argument("--id", required=True, help="this node's id")
    parser.add_argument("--ids", default="", help="trickle: the initial voters, comma-separated")
    parser.add_argument("--data-dir", required=True, help="this node's data directory")
    parser.add_argument("--durability", default="fsync", help="trickle: fsync or none")
    parser.add_argument("--no-batch", action="store_true", help="PySyncObj: no batching")
    parser.add_argument(
        "--storage-inline",
        action="store_true",
        help="trickle, an experiment: the driver calls SQLite on its Trio thread "
        "(storage_in_thread=False), blocking the loop during each save, instead of "
        "handing each save to a worker thread",
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="an experiment: sys.setswitchinterval(S) (Python's default is 0.005 s: a "
        "thread back from a syscall may wait that long for the GIL)",
    )
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="cProfile the main thread (CPU time) and write PREFIX-<id>-<pid>.pstats at exit",
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, format=f"{args.id} %(levelname)s %(name)s: %(message)s"
    )
    die_with_parent()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    if args.system == "trickle" and args.id not in args.ids.split(","):
        parser.error("--ids must list the initial voters, this node included")
    run = run_trickle if args.system == "trickle" else run_pysyncobj
    if not args.profile:
        run(args)
        return
    import cProfile

    profiler = cProfile.Profile(time.thread_time)
    try:
        profiler.runcall(run, args)
    finally:
        profiler.dump_stats(f"{args.profile}-{args.id}-{os.getpid()}.pstats")


if __name__ == "__main__":
    main()
