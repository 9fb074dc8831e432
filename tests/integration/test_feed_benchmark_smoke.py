"""benchmarks/feed.py runs end to end with tiny sizes and prints its one JSON object with
every key of the issue's interface. No speed is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "feed.py"
TIMEOUT = 300  # seconds; a tiny run takes 10-30 s on a loaded 2-core machine


def test_feed_benchmark_tiny_run_prints_one_json_object() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--subscribers",
            "3",
            "--events",
            "50",
            "--latency-samples",
            "5",
            "--no-ui",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.strip().splitlines()
    result = json.loads(line)
    for key in (
        "events_per_s_100_subscribers",
        "output_to_frame_ms_p99",
        "ui_first_load_ms",
        "ui_jobs_page_ms_10k",
    ):
        assert key in result
    assert result["delivery_complete"] is True and result["dropped"] == 0
    assert result["delivery_subscribers"] == 3 and result["delivery_events"] == 50
    assert result["events_per_s_100_subscribers"] > 0
    assert result["output_samples"] == 5 and result["output_to_frame_ms_p99"] is not None
    assert result["ui_first_load_ms"] is None and result["ui_skipped"] == "--no-ui"
    assert result["server_exit_code"] == 0
