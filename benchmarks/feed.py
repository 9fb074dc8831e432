"""Live feed benchmark: delivery to 100 WebSocket subscribers, output-to-frame delay, and the
web UI's load times with 10,000 jobs.

    python benchmarks/feed.py [--subscribers 100] [--events 2000] [--latency-samples 200]
                              [--ui-jobs 10000] [--no-ui]

The server runs in a child process (this file with ``--child``): an Engine on a SQLite data
dir in a temp directory served by ``serve_http`` on 127.0.0.1 port 0, as ``trickle serve
--server`` does, plus a Python executor ``burst`` that writes ``count`` output chunks (one
engine event each, yielding to Trio every 50). The clients (trio-websocket, httpx) run in
this process. Three parts:

1. ``events_per_s_100_subscribers``: ``--subscribers`` connections subscribe to
   ``/v1/events?jobs=burst&kinds=execution_output``; one run of the burst job publishes
   ``--events`` chunk events; every connection must receive all of them. The rate is
   (events - 1) / (last frame received by the slowest connection - first frame received by
   any). The child's subscriber buffer holds ``--events`` events, so nothing is dropped: this
   is the rate the feed sustains (serialising each event once, sending it 100 times), not a
   producer's pace. ``frames_per_s`` is the same times the subscribers; ``dropped`` must be 0.
   ``server_cpu_us_per_frame`` and ``client_cpu_us_per_frame``: CPU time (user + system)
   of the server process and of this one during that part, per frame delivered; unlike the
   rate, they do not depend much on what else the machine runs (1e6 / the server's figure
   is the frames per second one otherwise idle core could send).
2. ``output_to_frame_ms_p99``: a shell job (a real process through the shell executor's
   pipe) prints ``time.time()`` every 20 ms, ``--latency-samples`` times; one connection
   receives its ``execution_output`` frames and takes, per line, the time of receipt minus
   the printed time (same machine, same clock). Nearest-rank percentiles of those delays.
3. ``ui_first_load_ms``, ``ui_jobs_page_ms_10k`` (and the other ``ui_*`` keys):
   ``benchmarks/_feed_ui.py``'s ``measure_ui(base_url)`` in headless chromium, after
   ``--ui-jobs`` jobs were restored on the server (``POST /v1/restore``). Without chromium
   or playwright, or with ``--no-ui``, they are null and ``ui_skipped`` says why.

Prints ONE JSON object. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout: the trickle package next to benchmarks/
READY_TIMEOUT = 60.0  # seconds for the child's ready line
RUN_TIMEOUT = 300.0  # seconds any one part may take before it is abandoned
LATENCY_INTERVAL = 0.02  # seconds between two printed times in the latency job
BURST_YIELD_EVERY = 50  # chunks the burst executor writes between two checkpoints


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


# -- the child: the server ------------------------------------------------------------------


def child(data_dir: str, buffer: int) -> None:
    """Serve an Engine with the ``burst`` executor; print ``{"http": url}``; stop at
    SIGTERM or when stdin closes (the parent went away)."""
    import trio

    from trickle import Engine, EngineConfig, ExecutionContext
    from trickle.http.app import serve_http

    async def burst(ctx: ExecutionContext) -> None:
        count = int(ctx.config.get("count", "1000"))
        for i in range(count):
            ctx.output.write(f"{i}\n")
            if i % BURST_YIELD_EVERY == 0:
                await trio.lowlevel.checkpoint()

    async def main() -> None:
        engine = Engine(
            EngineConfig(data_dir=Path(data_dir), node_name="feed-bench", subscriber_buffer=buffer)
        )
        engine.register_executor("burst", burst)
        stop = trio.Event()

        async def watch_stop() -> None:
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                async with trio.open_nursery() as inner:

                    async def stdin_closed() -> None:
                        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
                        inner.cancel_scope.cancel()

                    async def signalled() -> None:
                        async for _ in signals:
                            inner.cancel_scope.cancel()

                    inner.start_soon(stdin_closed)
                    inner.start_soon(signalled)
            stop.set()

        async with engine, trio.open_nursery() as nursery:
            nursery.start_soon(watch_stop)
            [url] = await nursery.start(
                lambda task_status: serve_http(
                    engine, port=0, shutdown_trigger=stop.wait, task_status=task_status
                )
            )
            print(json.dumps({"http": url}), flush=True)
            await stop.wait()
            nursery.cancel_scope.cancel()

    trio.run(main)


def start_child(data_dir: str, buffer: int) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", data_dir, "--buffer", str(buffer)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    line = b""
    import select

    while b"\n" not in line:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the feed server did not start")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                continue
            line += chunk
    return proc, json.loads(line.split(b"\n", 1)[0])["http"]


def stop_child(proc: subprocess.Popen[bytes]) -> int | None:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
    finally:
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


# -- the clients ----------------------------------------------------------------------------


async def _put(client: Any, job: dict[str, Any]) -> None:
    r = await client.post("/v1/jobs", json=job)
    if r.status_code != 201:
        raise RuntimeError(f"cannot create job {job['name']}: {r.status_code} {r.text}")


async def delivery(base: str, subscribers: int, events: int) -> dict[str, Any]:
    """Part 1: ``events`` chunk events to ``subscribers`` connections."""
    import httpx
    import trio
    from trio_websocket import open_websocket_url

    url = base.replace("http://", "ws://") + "/v1/events?jobs=burst&kinds=execution_output"
    firsts: list[float] = []
    lasts: list[float] = []
    counts: list[int] = []
    dropped = 0
    all_ready = trio.Event()
    ready = 0

    async def subscriber() -> None:
        nonlocal ready, dropped
        async with open_websocket_url(url, max_message_size=1 << 26) as ws:
            await ws.get_message()  # hello
            ready += 1
            if ready == subscribers:
                all_ready.set()
            got = 0
            first = 0.0
            while got < events:
                text = await ws.get_message()
                now = time.perf_counter()
                if text.startswith('{"type":"lagged"'):
                    missed = json.loads(text)["dropped"]
                    dropped += missed
                    got += missed
                    continue
                if got == 0:
                    first = now
                got += 1
            firsts.append(first)
            lasts.append(time.perf_counter())
            counts.append(got)

    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        await _put(
            client,
            {
                "name": "burst",
                "schedule": "@manually",
                "executor": "burst",
                "executor_config": {"count": str(events)},
            },
        )
        with trio.move_on_after(RUN_TIMEOUT) as scope:
            async with trio.open_nursery() as nursery:
                for _ in range(subscribers):
                    nursery.start_soon(subscriber)
                await all_ready.wait()
                r = await client.post("/v1/jobs/burst/run")
                r.raise_for_status()
    elapsed = (max(lasts) - min(firsts)) if len(lasts) == subscribers else None
    rate = (events - 1) / elapsed if elapsed else None
    return {
        "events_per_s_100_subscribers": round(rate, 1) if rate else None,
        "frames_per_s": round(rate * subscribers, 1) if rate else None,
        "delivery_seconds": round(elapsed, 3) if elapsed else None,
        "delivery_subscribers": subscribers,
        "delivery_events": events,
        "delivery_complete": len(lasts) == subscribers and not scope.cancelled_caught,
        "dropped": dropped,
    }


async def latency(base: str, samples: int) -> dict[str, Any]:
    """Part 2: printed-to-received delays of a shell job's lines."""
    import httpx
    import trio
    from trio_websocket import open_websocket_url

    program = (
        "import sys, time\n"
        f"for _ in range({samples}):\n"
        "    print(repr(time.time()), flush=True)\n"
        f"    time.sleep({LATENCY_INTERVAL})\n"
    )
    command = f"{sys.executable} -c '{program}'"
    url = base.replace("http://", "ws://") + "/v1/events?jobs=clock&kinds=execution_output"
    delays: list[float] = []
    others: list[str] = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        await _put(
            client,
            {
                "name": "clock",
                "schedule": "@manually",
                "executor": "shell",
                "executor_config": {"command": command, "shell": "true"},
            },
        )
        with trio.move_on_after(RUN_TIMEOUT):
            async with open_websocket_url(url) as ws:
                await ws.get_message()  # hello
                (await client.post("/v1/jobs/clock/run")).raise_for_status()
                partial = ""
                while len(delays) < samples and len(others) < samples:
                    frame = json.loads(await ws.get_message())
                    now = time.time()
                    if frame["type"] != "execution_output":
                        continue
                    *lines, partial = (partial + frame["chunk"]).split("\n")
                    for line in lines:
                        try:
                            delays.append((now - float(line)) * 1000)
                        except ValueError:  # not a printed time (a shell's complaint)
                            others.append(line)
    delays.sort()

    def ms(q: float) -> float | None:
        value = percentile(delays, q)
        return round(value, 2) if value is not None else None

    return {
        "output_to_frame_ms_p50": ms(0.5),
        "output_to_frame_ms_p99": ms(0.99),
        "output_to_frame_ms_max": round(delays[-1], 2) if delays else None,
        "output_samples": len(delays),
        **({"output_other_lines": others[:5]} if others else {}),
    }


def seed_jobs(base: str, count: int) -> float:
    """Restore ``count`` jobs (one request); returns the seconds it took."""
    import httpx

    schedules = ("@every 1h", "@every 2h", "@manually")
    jobs = [
        {
            "name": f"job-{i:05d}",
            "schedule": schedules[i % 3],
            "executor": "shell",
            "executor_config": {"command": "true"},
            "owner": "bench",
            "metadata": {"team": ("ops", "data", "web", "billing", "infra")[i % 5]},
        }
        for i in range(count)
    ]
    started = time.perf_counter()
    r = httpx.post(base + "/v1/restore", json=jobs, timeout=RUN_TIMEOUT)
    r.raise_for_status()
    return time.perf_counter() - started


def ui(base: str, jobs: int, enabled: bool) -> dict[str, Any]:
    """Part 3: the UI's load times in chromium (``benchmarks/_feed_ui.py``)."""
    nulls: dict[str, Any] = {"ui_first_load_ms": None, "ui_jobs_page_ms_10k": None}
    if not enabled:
        return {**nulls, "ui_skipped": "--no-ui"}
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _feed_ui import measure_ui  # type: ignore[import-not-found]
    except ImportError as exc:
        return {**nulls, "ui_skipped": f"benchmarks/_feed_ui.py cannot be imported: {exc}"}
    seeded = seed_jobs(base, jobs) if jobs else 0.0
    try:
        measured = measure_ui(base)
    except RuntimeError as exc:  # chromium or playwright missing
        return {**nulls, "ui_skipped": str(exc), "ui_jobs_seeded": jobs}
    return {**measured, "ui_jobs_seeded": jobs, "ui_seed_seconds": round(seeded, 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--events", type=int, default=2_000)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--ui-jobs", type=int, default=10_000)
    parser.add_argument("--no-ui", action="store_true", help="skip the browser part")
    parser.add_argument("--child", metavar="DATA_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--buffer", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.buffer)
        return

    import psutil
    import trio

    result: dict[str, Any] = {
        "benchmark": "feed",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory(prefix="trickle-feed-bench-") as tmp:
        proc, base = start_child(str(Path(tmp) / "data"), max(args.events + 10, 1000))
        try:
            server = psutil.Process(proc.pid)
            server_cpu, client_cpu = sum(server.cpu_times()[:2]), time.process_time()
            result.update(trio.run(delivery, base, args.subscribers, args.events))
            frames = args.subscribers * args.events
            if frames and result.get("delivery_complete"):
                server_cpu = sum(server.cpu_times()[:2]) - server_cpu
                client_cpu = time.process_time() - client_cpu
                result["server_cpu_us_per_frame"] = round(server_cpu / frames * 1e6, 1)
                result["client_cpu_us_per_frame"] = round(client_cpu / frames * 1e6, 1)
            result.update(trio.run(latency, base, args.latency_samples))
            result.update(ui(base, args.ui_jobs, not args.no_ui))
        finally:
            result["server_exit_code"] = stop_child(proc)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
