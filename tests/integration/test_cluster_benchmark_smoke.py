"""benchmarks/cluster.py --quick runs its three phases on real server processes, prints one
JSON object with every key of issue 5 item 6, and leaves no server behind, also when
interrupted. No speed is asserted: a smoke run's figures mean nothing."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "cluster.py"
KEYS = {
    "fires_per_s_at_p99_50ms",
    "failover_gap_ms_p99",
    "rss_mb_100k_executions",
    "rss_mb_1m_executions",
    "raft_entries_per_run",
}
TIMEOUT = 300  # seconds; a quick run takes 50-90 s on a loaded 2-core machine
NAMES = {"s1", "s2", "s3"}


def _servers_under(path: Path) -> list[psutil.Process]:
    """Live server processes (``_cluster_node.py``) with a data dir under ``path``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            cmdline = proc.info["cmdline"] or []
        except psutil.Error:
            continue
        if (
            proc.info["status"] != psutil.STATUS_ZOMBIE
            and any(a.endswith("_cluster_node.py") for a in cmdline)
            and any(str(path) in a for a in cmdline)
        ):
            found.append(proc)
    return found


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_quick_run_prints_one_json_object_with_every_key_and_leaves_no_process(
    tmp_path: Path,
) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert KEYS <= set(result)
    assert "errors" not in result

    steps = result["ramp"]["steps"]
    assert steps and all(s["runs"] > 0 for s in steps)  # the noop runs were timed
    assert _is_number(result["fires_per_s_at_p99_50ms"])
    assert _is_number(result["raft_entries_per_run"]) and result["raft_entries_per_run"] > 0

    [trial] = result["failover"]["trials"]
    assert trial["new_leader"] in NAMES - {trial["killed"]}
    assert _is_number(result["failover_gap_ms_p99"]) and result["failover_gap_ms_p99"] > 0
    # the jobs' fires spread over the second (10 jobs: 100 ms apart when the API keeps up)
    assert 0 < result["failover"]["jobs_phase_gap_ms_max"] < 1000
    assert result["failover"]["runs_twice"] == 0  # no fire ran twice on a node

    rss = result["rss"]
    assert rss["executions"] == [300, 1000]
    assert _is_number(result["rss_mb_100k_executions"]) and result["rss_mb_100k_executions"] > 0
    assert _is_number(result["rss_mb_1m_executions"])
    # every server stores the whole history: real runs and seeded ones, replicated
    assert set(rss["stored_executions_by_node"]) == NAMES
    assert all(n >= 1000 for n in rss["stored_executions_by_node"].values())
    assert rss["produced"]["real_runs"] >= 300
    assert rss["produced"]["real_runs"] + rss["produced"]["seeded"] >= 1000

    assert set(result["targets_met"]) >= {"fires_per_s_at_p99_50ms", "failover_gap_ms_p99"}
    assert result["host"]["cpus"] >= 1
    assert _servers_under(tmp_path) == []
    assert list(tmp_path.iterdir()) == []  # the work dir is removed


def test_interrupted_run_kills_every_server(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(BENCH), "--quick", "--phases", "failover", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(_servers_under(tmp_path)) < 3:  # all three started (forming or formed)
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the three servers did not start"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert out == ""
    assert _servers_under(tmp_path) == []
    assert list(tmp_path.iterdir()) == []
