"""The programs in examples/ run as documented."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from trickle.http.schemas import job_from_json

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_embedded_example_runs_its_jobs_beside_the_service(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "embedded.py"),
            "--runs",
            "3",
            "--http-port",
            "0",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("trickle API on http://127.0.0.1:")
    finished = [line for line in lines[1:] if ": success " in line]
    assert len(finished) == 3
    assert any(line.startswith("metrics: success") for line in finished)


def test_example_job_file_is_a_valid_dkron_job():
    data = json.loads((EXAMPLES / "job.json").read_text())
    jobs = data if isinstance(data, list) else [data]
    for raw in jobs:
        job = job_from_json(raw)
        assert job.name and job.executor
