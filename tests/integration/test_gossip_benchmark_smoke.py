"""benchmarks/gossip.py --quick runs end to end and prints its one JSON object with every key
of issue 4 part 7. No figure is asserted (a smoke run's trial counts mean nothing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "gossip.py"
KEYS = {
    "detect_s_median_lan_n100",
    "detect_s_median_fast_n100",
    "detect_s_p99_fast_n100",
    "converge_s_999_n1000",
    "converge_s_999_n1000_loss10",
    "false_positives_lifeguard",
    "false_positives_no_lifeguard",
    "bytes_per_node_per_s",
    "sim_speedup_n1000",
    "detect_s_real_udp_n10",
}
TIMEOUT = 120  # seconds; a quick run takes 2-5 s


def test_quick_run_prints_one_json_object_with_every_key() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--skip-real-udp", "--workers", "1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT,
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout
    result = json.loads(lines[0])
    assert KEYS <= set(result)
    simulated = KEYS - {"detect_s_real_udp_n10"}
    assert all(result[key] is not None for key in simulated), result
    assert result["detect_s_real_udp_n10"] is None
    assert "skipped" in result["detect_s_real_udp_n10_error"]
    assert result["settings"]["quick"] is True
    assert result["false_positives_lifeguard"] >= 0
    assert 0 < result["detect_s_median_fast_n100"] < result["detect_s_median_lan_n100"]
