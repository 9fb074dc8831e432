"""benchmarks/raft.py runs end to end with tiny settings, prints its one JSON object, and
leaves no server process behind, also when interrupted. No speed is asserted."""

from __future__ import annotations

import importlib.util
import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "raft.py"
HAS_PYSYNCOBJ = importlib.util.find_spec("pysyncobj") is not None
TIMEOUT = 180  # seconds; a healthy tiny run takes 15-30 s on a loaded 2-core machine


def _tiny(tmp_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(BENCH),
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
        "--clients",
        "8",
        "--failover-trials",
        "1",
        "--sim-seconds",
        "0.5",
        "--no-pysyncobj-no-batch",
        "--dir",
        str(tmp_path),
        *extra,
    ]


def _servers_under(path: Path) -> list[psutil.Process]:
    """Live server processes (``_raft_server.py``) with a data dir under ``path``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if (
            proc.info["status"] != psutil.STATUS_ZOMBIE
            and any(a.endswith("_raft_server.py") for a in cmdline)
            and any(str(path) in a for a in cmdline)
        ):
            found.append(proc)
    return found


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_side(side: dict, *, fsync: bool) -> None:
    assert side["fsync"] is fsync
    assert _is_number(side["commits_per_s"]) and side["commits_per_s"] > 0
    assert _is_number(side["latency_ms_p50"]) and side["latency_ms_p50"] > 0
    assert _is_number(side["latency_ms_p99"])
    assert side["latency_ms_p50"] <= side["latency_ms_p99"]
    for run in (side["throughput"], side["sequential"]):
        assert run["commits"] > 0
        assert run["command_bytes"] == 64
        assert set(run["cpu_s_by_node"]) == {"s1", "s2", "s3"}
    assert side["throughput"]["clients"] == 8
    assert side["sequential"]["clients"] == 1


def test_tiny_run_prints_one_json_object_and_leaves_no_process(tmp_path):
    systems = "trickle,pysyncobj" if HAS_PYSYNCOBJ else "trickle"
    proc = subprocess.run(
        _tiny(tmp_path, "--systems", systems), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert {"trickle", "pysyncobj", "sim_speedup_5_nodes"} <= set(result)

    trickle = result["trickle"]
    _check_side(trickle, fsync=True)
    assert trickle["failover_trials"] == 1
    assert trickle["failover_failures"] == 0
    assert _is_number(trickle["failover_ms_p50"]) and trickle["failover_ms_p50"] > 0
    assert trickle["failover_ms_p50"] <= trickle["failover_ms_p99"]
    detail = trickle["failover_trials_detail"][0]
    assert detail["new_leader"] in {"s1", "s2", "s3"} - {detail["killed"]}
    assert trickle["processes_started"] == 4  # three, and the killed leader once more

    if HAS_PYSYNCOBJ:
        _check_side(result["pysyncobj"], fsync=False)
        assert "fsync" in result["pysyncobj"]["fsync_note"]
    else:
        assert result["pysyncobj"] is None
    assert _is_number(result["sim_speedup_5_nodes"]) and result["sim_speedup_5_nodes"] > 0
    assert result["host"]["cpus"] >= 1
    assert set(result["targets"]) >= {"latency_ms_p50", "failover_ms_p50"}

    assert _servers_under(tmp_path) == []
    assert list(tmp_path.iterdir()) == []  # the temp data dirs are removed


def test_interrupted_run_kills_every_server(tmp_path):
    proc = subprocess.Popen(
        _tiny(tmp_path, "--systems", "trickle", "--duration", "30"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the servers are up once a leader is reported
            if "trickle: leader" in line:
                break
        else:
            raise AssertionError("the benchmark ended before its servers were up")
        assert len(_servers_under(tmp_path)) == 3
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert out == ""
    assert _servers_under(tmp_path) == []


async def test_a_benchmark_server_restores_its_counter_from_a_stored_snapshot(
    tmp_path: Path,
) -> None:
    # A restarted server restores a snapshot read back from raft.db: a SnapshotFile, not
    # bytes (every failover trial after the first snapshot crashed the restarted server).
    import importlib.util

    from trickle.raft.messages import ConfState, Snapshot, SnapshotMeta
    from trickle.raft.storage import SnapshotFile

    spec = importlib.util.spec_from_file_location(
        "_raft_server", BENCH.with_name("_raft_server.py")
    )
    assert spec is not None and spec.loader is not None
    server = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(server)
    app = server.CounterApp()
    app.count = 41
    image = SnapshotFile.write([await app.snapshot()], dir=tmp_path)
    restored = server.CounterApp()
    await restored.restore(
        Snapshot(meta=SnapshotMeta(index=9, term=2, conf=ConfState()), data=image)
    )
    assert restored.count == 41
    image.close()


def test_the_benchmark_servers_storage_reads_entries_back_for_a_slow_follower() -> None:
    # the driver reads cold entries back through it (RaftStorage.entries)
    import importlib.util

    from trickle.raft.messages import Entry
    from trickle.raft.storage import MemoryStorage

    spec = importlib.util.spec_from_file_location(
        "_raft_server", BENCH.with_name("_raft_server.py")
    )
    assert spec is not None and spec.loader is not None
    server = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(server)
    storage = server.TimedStorage(MemoryStorage())
    storage.save(entries=[Entry(1, i, data=b"x") for i in range(1, 6)])
    assert [e.index for e in storage.entries(2, 4)] == [2, 3, 4]
