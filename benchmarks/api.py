"""REST API benchmark: job creation and ``GET /v1/jobs`` pages against a real server.

    python benchmarks/api.py --jobs 10000 [--pages 200] [--page-size 100] [--seed 1]

Starts ``trickle serve --server --http-addr 127.0.0.1:0`` as a subprocess with a data dir in
a temp directory (the real SQLite store, default durability), reads its JSON ready line for
the bound URL, then with one httpx client (sequential requests, one keep-alive connection):

1. creates ``--jobs`` jobs with ``POST /v1/jobs`` (Dkron job JSON: a shell job, schedules
   ``@every 1h``/``@every 2h``/``@manually`` so nothing fires during the run, metadata
   ``team`` of five values, an owner) and times each request: ``create_ms_p50/p99``;
2. times ``GET /v1/jobs?_start=K&_end=K+100`` for ``--pages`` offsets K spread evenly over
   the whole list, in a shuffled order (``list_page_ms_p50/p99``, after 10 untimed warm-up
   pages); each response is checked: 100 jobs (fewer on the last page) and ``X-Total-Count``;
3. extras, each over ``--pages // 4`` pages: sorted (``_sort=next&_order=DESC``), searched
   (``q=`` a name prefix matching 10% of the jobs), filtered by metadata
   (``metadata[team]=...``, a fifth of the jobs), and ``GET /v1/jobs/{name}``.

Times are client-side: from sending the request to having read the whole body (JSON
parsing and checks are not timed). Nearest-rank percentiles. The server's RSS and CPU come
from psutil. Then the server gets SIGTERM (its exit code is reported), and the temp dir is
removed. Prints ONE JSON object. Nothing is asserted; the target is
``list_page_ms_p99 <= 50`` with 10,000 jobs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0  # seconds to wait for the server's ready line
STOP_TIMEOUT = 30.0  # seconds to wait for a graceful stop after SIGTERM
WARMUP_PAGES = 10
TEAMS = ("ops", "data", "web", "billing", "infra")
SCHEDULES = ("@every 1h", "@every 2h", "@manually")


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary(prefix: str, seconds: list[float]) -> dict[str, float | int | None]:
    ms = sorted(s * 1000.0 for s in seconds)

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 3)

    return {
        f"{prefix}_ms_p50": r(percentile(ms, 0.50)),
        f"{prefix}_ms_p90": r(percentile(ms, 0.90)),
        f"{prefix}_ms_p99": r(percentile(ms, 0.99)),
        f"{prefix}_ms_max": r(ms[-1] if ms else None),
        f"{prefix}_count": len(ms),
    }


def job_body(i: int) -> dict[str, Any]:
    """A Dkron job as a user would POST it."""
    return {
        "name": f"job-{i:06d}",
        "displayname": f"Benchmark job {i}",
        "schedule": SCHEDULES[i % len(SCHEDULES)],
        "owner": "bench",
        "owner_email": "bench@example.com",
        "executor": "shell",
        "executor_config": {"command": "true", "timeout": "30s"},
        "metadata": {"team": TEAMS[i % len(TEAMS)], "index": str(i)},
        "tags": {"dkron_server": "true:1"},
        "retries": 1,
        "concurrency": "forbid",
    }


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def start_server(data_dir: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``trickle serve --server`` on port 0; returns the process and its base URL."""
    cmd = [
        sys.executable,
        "-m",
        "trickle",
        "serve",
        "--server",
        "--http-addr",
        "127.0.0.1:0",
        "--data-dir",
        str(data_dir),
        "--node-name",
        "bench",
        "--log-level",
        "warning",
    ]
    log = log_path.open("wb")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=log, cwd=ROOT, start_new_session=True
    )
    log.close()
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            stop_server(proc)
            tail = log_path.read_text(errors="replace")[-2000:]
            raise SystemExit(f"the server did not print its ready line:\n{tail}")
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                continue
            buf += chunk
    line = json.loads(buf.split(b"\n", 1)[0])
    if line.get("event") != "ready" or "http" not in line:
        stop_server(proc)
        raise SystemExit(f"unexpected first line from the server: {line}")
    return proc, str(line["http"])


def stop_server(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM, wait for a graceful stop, SIGKILL the process group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


def timed_get(
    client: httpx.Client, url: str, params: dict[str, Any] | None = None
) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    resp = client.get(url, params=params)
    elapsed = time.perf_counter() - t0
    if resp.status_code != 200:
        raise SystemExit(f"GET {resp.request.url} answered {resp.status_code}: {resp.text}")
    return elapsed, resp


def check_page(resp: httpx.Response, *, expect_total: int, start: int, size: int) -> None:
    jobs = resp.json()
    want = max(0, min(size, expect_total - start))
    total = int(resp.headers.get("X-Total-Count", "-1"))
    if len(jobs) != want or total != expect_total:
        raise SystemExit(
            f"GET {resp.request.url}: {len(jobs)} jobs, X-Total-Count {total}; "
            f"expected {want} and {expect_total}"
        )


def run(args: argparse.Namespace, base: str, proc: psutil.Process) -> dict[str, Any]:
    rng = random.Random(args.seed)
    n, size = args.jobs, args.page_size
    out: dict[str, Any] = {"jobs": n, "page_size": size}
    with httpx.Client(base_url=base, timeout=60.0) as client:
        create: list[float] = []
        cpu0 = _cpu(proc)
        t_all = time.perf_counter()
        for i in range(n):
            body = job_body(i)
            t0 = time.perf_counter()
            resp = client.post("/v1/jobs", json=body)
            create.append(time.perf_counter() - t0)
            if resp.status_code != 201:
                raise SystemExit(
                    f"POST /v1/jobs ({body['name']}) answered {resp.status_code}: {resp.text}"
                )
            if (i + 1) % 2000 == 0:
                _log(f"created {i + 1} jobs")
        create_wall = time.perf_counter() - t_all
        out.update(summary("create", create))
        out["create_per_s"] = round(n / create_wall, 1)
        out["server_cpu_create_s"] = round(_cpu(proc) - cpu0, 2)
        out["server_rss_mb"] = round(proc.memory_info().rss / 2**20, 1)

        last = max(0, n - size)
        pages = args.pages
        offsets = sorted({round(j * last / max(1, pages - 1)) for j in range(pages)})
        rng.shuffle(offsets)
        for k in offsets[:WARMUP_PAGES]:
            timed_get(client, "/v1/jobs", {"_start": k, "_end": k + size})
        cpu0 = _cpu(proc)
        times = []
        for k in offsets:
            elapsed, resp = timed_get(client, "/v1/jobs", {"_start": k, "_end": k + size})
            times.append(elapsed)
            check_page(resp, expect_total=n, start=k, size=size)
        out.update(summary("list_page", times))
        out["server_cpu_per_list_page_ms"] = round(1000 * (_cpu(proc) - cpu0) / len(times), 3)

        extra = offsets[: max(1, pages // 4)]
        times = []
        for k in extra:
            elapsed, resp = timed_get(
                client,
                "/v1/jobs",
                {"_start": k, "_end": k + size, "_sort": "next", "_order": "DESC"},
            )
            times.append(elapsed)
            check_page(resp, expect_total=n, start=k, size=size)
        out.update(summary("list_sorted", times))

        # a name prefix matching about a tenth of the jobs: job-000... for 10,000
        digits = max(0, math.floor(math.log10(n / 10))) if n >= 10 else 6
        prefix = "job-" + "0" * (6 - digits)
        matching = sum(1 for i in range(n) if f"job-{i:06d}".startswith(prefix))
        times = []
        for k in extra:
            start = k % max(1, matching)
            elapsed, resp = timed_get(
                client, "/v1/jobs", {"q": prefix, "_start": start, "_end": start + size}
            )
            times.append(elapsed)
            check_page(resp, expect_total=matching, start=start, size=size)
        out.update(summary("list_search", times))
        out["list_search_matching"] = matching

        team_total = sum(1 for i in range(n) if i % len(TEAMS) == 0)
        times = []
        for k in extra:
            start = k % max(1, team_total)
            elapsed, resp = timed_get(
                client,
                "/v1/jobs",
                {"metadata[team]": TEAMS[0], "_start": start, "_end": start + size},
            )
            times.append(elapsed)
            check_page(resp, expect_total=team_total, start=start, size=size)
        out.update(summary("list_metadata", times))

        times = []
        for k in extra:
            elapsed, _ = timed_get(client, f"/v1/jobs/job-{k:06d}")
            times.append(elapsed)
        out.update(summary("get_job", times))
    out["server_rss_end_mb"] = round(proc.memory_info().rss / 2**20, 1)
    return out


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="trickle's REST API: create and list-page latency against a real "
        "server (see the module docstring)."
    )
    parser.add_argument("--jobs", type=int, default=1000, help="jobs to create")
    parser.add_argument("--pages", type=int, default=200, help="list pages to time")
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1, help="seed of the page order")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.pages < 1:
        parser.error("--pages must be at least 1")
    if args.page_size < 1:
        parser.error("--page-size must be at least 1")

    with tempfile.TemporaryDirectory(prefix="trickle-api-bench-") as tmp:
        server, base = start_server(Path(tmp) / "data", Path(tmp) / "server.log")
        _log(f"server {server.pid} ready at {base}")
        exit_code: int | None = None
        try:
            result = run(args, base, psutil.Process(server.pid))
        except BaseException:
            tail = (Path(tmp) / "server.log").read_text(errors="replace")[-2000:]
            if tail:
                print(f"server log tail:\n{tail}", file=sys.stderr)
            raise
        finally:
            exit_code = stop_server(server)
        result["server_exit_code"] = exit_code
        store = Path(tmp) / "data"
        result["store_mb"] = round(
            sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) / 2**20, 1
        )
    result["host"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
