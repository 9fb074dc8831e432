"""`trickle serve --server` as a real process: ready line, Dkron's getting-started job, an
http job against a local server, graceful stop on SIGTERM/SIGINT, restart on the same data.

Every process is started through `node()` (trickle.testing.processes), which kills it if
the test did not stop it.
Waiting is on the ready line, on awaited events, or on polling the API with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from trickle.testing.processes import Cluster, Node

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_JOB = ROOT / "examples" / "job.json"
RUN_TIMEOUT = 60  # seconds for scheduled runs to be recorded
POLL = 0.1  # seconds between two looks at the API while waiting for a deadline

GETTING_STARTED_JOB = {
    "name": "job1",
    "schedule": "@every 2s",
    "tags": {"dkron_server": "true:1"},
    "executor": "shell",
    "executor_config": {"command": "date"},
}


def clean_env() -> dict[str, str]:
    """This environment without TRICKLE_* settings, so that only the test's flags count."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TRICKLE_")}


@asynccontextmanager
async def node(
    data_dir: Path, *args: str, name: str | None = "e2e", env: dict[str, str] | None = None
) -> AsyncIterator[Node]:
    """A `trickle serve --server` process (no gossip) on a free port, once it printed its
    ready line; killed at the end if the test did not stop it (trickle.testing.processes).

    ``name=None`` leaves the node name to the environment or the config file."""
    label = name or "unnamed"
    async with Cluster(data_dir.parent / f"{data_dir.name}-{label}", env=env) as cluster:
        yield await cluster.start_node(
            label,
            server=True,
            args=args,
            data_dir=data_dir,
            gossip=False,
            name_flag=name is not None,
        )


async def trickle(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a client command as a process (`python -m trickle ARGS`)."""
    return await trio.run_process(
        [sys.executable, "-m", "trickle", *args],
        stdin=input,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=clean_env(),
        cwd=ROOT,
    )


async def wait_for_executions(address: str, job: str, count: int) -> list[dict[str, Any]]:
    """Poll the API until ``count`` finished executions of ``job`` are recorded."""
    async with httpx.AsyncClient(base_url=address) as client:
        with trio.fail_after(RUN_TIMEOUT):
            while True:
                response = await client.get(f"/v1/jobs/{job}/executions")
                response.raise_for_status()
                finished = [
                    e
                    for e in response.json()
                    if e.get("finished_at") and not e["finished_at"].startswith("0001")
                ]
                if len(finished) >= count:
                    return finished
                await trio.sleep(POLL)


async def test_ready_line_reports_the_bound_port(tmp_path: Path) -> None:
    async with node(tmp_path / "data") as n:
        assert n.ready["event"] == "ready"
        assert n.ready["node"] == "e2e"
        assert n.ready["data_dir"] == str(tmp_path / "data")
        assert n.ready["http"].startswith("http://127.0.0.1:")
        assert not n.ready["http"].endswith(":0")
        assert n.ready["pid"] == n.pid
        async with httpx.AsyncClient(base_url=n.http) as client:
            assert (await client.get("/health")).status_code == 200
            agent = (await client.get("/v1")).json()
        assert agent["tags"]["dkron_server"] == "true"
        assert await n.stop() == 0, n.stderr()


async def test_getting_started_job_runs_on_schedule(tmp_path: Path) -> None:
    async with node(tmp_path / "data") as n:
        async with httpx.AsyncClient(base_url=n.http) as client:
            created = await client.post("/v1/jobs", json=GETTING_STARTED_JOB)
        assert created.status_code == 201, created.text
        executions = await wait_for_executions(n.http, "job1", 2)
        for execution in executions:
            assert execution["success"] is True, execution
            assert execution["node_name"] == "e2e"
            assert execution["output"].strip()  # what `date` printed
        table = await trickle("executions", "job1", "--address", n.http)
        assert table.returncode == 0, table.stderr
        assert b"success" in table.stdout
        assert await n.stop() == 0, n.stderr()


async def test_example_job_file_is_accepted_by_the_cli(tmp_path: Path) -> None:
    async with node(tmp_path / "data") as n:
        put = await trickle("jobs", "put", str(EXAMPLE_JOB), "--address", n.http)
        assert put.returncode == 0, put.stderr
        listed = await trickle("jobs", "list", "--json", "--address", n.http)
        jobs = json.loads(listed.stdout)
        assert [job["name"] for job in jobs] == ["job1"]
        assert jobs[0]["schedule"] == "@every 10s"


async def test_http_job_calls_a_local_server(tmp_path: Path, nursery: trio.Nursery) -> None:
    hits: list[bytes] = []
    hit = trio.Event()

    async def handle(stream: trio.SocketStream) -> None:
        request = bytearray()
        while b"\r\n\r\n" not in request:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            request += chunk
        hits.append(bytes(request))
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\npong\n"
        )
        await stream.aclose()
        hit.set()

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    job = {
        "name": "ping",
        "schedule": "@every 2s",
        "tags": {"dkron_server": "true:1"},
        "executor": "http",
        "executor_config": {
            "method": "GET",
            "url": f"http://127.0.0.1:{port}/hook",
            "expectCode": "200",
            "expectBody": "pong",
            "timeout": "10",
        },
    }
    async with node(tmp_path / "data") as n:
        async with httpx.AsyncClient(base_url=n.http) as client:
            created = await client.post("/v1/jobs", json=job)
        assert created.status_code == 201, created.text
        with trio.fail_after(RUN_TIMEOUT):
            await hit.wait()
        assert hits[0].startswith(b"GET /hook HTTP/1.1\r\n")
        executions = await wait_for_executions(n.http, "ping", 1)
        assert executions[0]["success"] is True, executions[0]
        assert await n.stop() == 0, n.stderr()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_stop_signal_exits_zero_and_frees_the_port(tmp_path: Path, signum: int) -> None:
    async with node(tmp_path / "data") as n:
        assert await n.stop(signum) == 0, n.stderr()
        assert f"received {signal.Signals(signum).name}" in n.stderr()
        port = n.http.rsplit(":", 1)[1]
    async with node(tmp_path / "data", "--http-addr", f"127.0.0.1:{port}", name="again") as m:
        assert m.http == n.http  # the port was released
        assert await m.stop() == 0, m.stderr()


async def test_restart_on_the_same_data_dir_keeps_jobs_and_history(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with node(data) as n:
        body = json.dumps({**GETTING_STARTED_JOB, "schedule": "@every 1h"}).encode()
        put = await trickle("jobs", "put", "-", "--address", n.http, input=body)
        assert put.returncode == 0, put.stderr
        run = await trickle("jobs", "run", "job1", "--address", n.http)
        assert run.returncode == 0, run.stderr
        before = await wait_for_executions(n.http, "job1", 1)
        assert await n.stop() == 0, n.stderr()
    async with node(data) as n:
        got = await trickle("jobs", "get", "job1", "--json", "--address", n.http)
        assert got.returncode == 0, got.stderr
        job = json.loads(got.stdout)
        assert job["schedule"] == "@every 1h"
        assert job["success_count"] >= 1
        after = await wait_for_executions(n.http, "job1", 1)
        assert before[0]["id"] in {e["id"] for e in after}
        assert await n.stop() == 0, n.stderr()


async def test_second_node_on_a_taken_port_exits_1(tmp_path: Path) -> None:
    async with node(tmp_path / "one") as n:
        addr = n.http.removeprefix("http://")
        result = await trio.run_process(
            [
                sys.executable,
                "-m",
                "trickle",
                "serve",
                "--server",
                "--http-addr",
                addr,
                "--data-dir",
                str(tmp_path / "two"),
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=clean_env(),
        )
        assert result.returncode == 1
        assert result.stdout == b""
        assert f"cannot listen on {addr}: the address is already in use".encode() in (result.stderr)
        assert await n.stop() == 0, n.stderr()


async def test_config_file_and_environment_reach_the_node(tmp_path: Path) -> None:
    config = tmp_path / "trickle.toml"
    config.write_text(
        'node-name = "from-file"\nregion = "file-region"\nlog-level = "debug"\n'
        '[tags]\nrack = "r1"\n',
        encoding="utf-8",
    )
    environment = {"TRICKLE_NODE_NAME": "from-env", "TRICKLE_LOG_LEVEL": "warn"}
    async with node(tmp_path / "data", "--config", str(config), name=None, env=environment) as n:
        assert n.ready["node"] == "from-env"  # environment > file
        async with httpx.AsyncClient(base_url=n.http) as client:
            tags = (await client.get("/v1")).json()["tags"]
        assert tags["rack"] == "r1"
        assert tags["region"] == "file-region"
        assert await n.stop() == 0, n.stderr()
        assert " INFO " not in n.stderr()  # warn, from the environment, beat the file's debug


async def test_sigterm_lets_a_running_execution_finish_within_the_grace(tmp_path: Path) -> None:
    job = {
        "name": "slow",
        "schedule": "@manually",
        "executor": "shell",
        "executor_config": {"command": "echo start; sleep 1; echo done", "shell": "true"},
    }
    async with node(tmp_path / "data", "--shutdown-grace", "30s") as n:
        async with httpx.AsyncClient(base_url=n.http) as client:
            assert (await client.post("/v1/jobs", json=job)).status_code == 201
            assert (await client.post("/v1/jobs/slow/run")).status_code == 200
            with trio.fail_after(RUN_TIMEOUT):
                while True:  # the API is another process: poll it
                    if (await client.get("/v1/busy")).json():
                        break
                    await trio.sleep(POLL)
        assert await n.stop() == 0, n.stderr()
    async with node(tmp_path / "data") as n:
        [execution] = await wait_for_executions(n.http, "slow", 1)
        assert execution["success"] is True, execution
        assert execution["output"] == "start\ndone\n"
        assert await n.stop() == 0, n.stderr()


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_a_run_committed_but_not_started_when_the_server_is_killed_runs_after_restart(
    tmp_path: Path,
) -> None:
    """A server commits each fire's intent ~200 ms before its instant and launches it at
    the instant. Killed -9 in between, it used to record that run failed at its restart
    ("stopped while the execution was running"), not knowing whether it had started it.
    Its launch journal tells: the run never started, so it runs now, late, as the same
    execution (trigger "schedule", not a catch-up)."""
    data = tmp_path / "data"
    job = {**GETTING_STARTED_JOB, "name": "held", "schedule": "@every 2s"}
    async with node(data) as n:
        async with httpx.AsyncClient(base_url=n.http) as client:
            held: list[datetime] = []  # the instants killed between intent and launch
            for _attempt in range(3):
                response = await client.post("/v1/jobs", json=job)
                assert response.status_code in (200, 201), response.text
                fire = _instant((await client.get("/v1/jobs/held")).json()["next"])
                wait = (fire - datetime.now(UTC)).total_seconds() - 0.05
                assert wait > 0.3, f"the next fire is {wait:.2f} s away"
                await trio.sleep(wait)  # the intent commits ~200 ms before the fire
                n.kill()
                await n.wait()
                await n.restart()
                with trio.fail_after(RUN_TIMEOUT):
                    while True:
                        response = await client.get("/v1/jobs/held/executions")
                        runs = [
                            e
                            for e in response.json()
                            if e.get("scheduled_at") and _instant(e["scheduled_at"]) == fire
                        ]
                        if runs and all(e["status"] != "running" for e in runs):
                            break
                        await trio.sleep(POLL)
                assert [e["status"] for e in runs] == ["success"], runs
                if runs[0]["trigger"] == "schedule":  # its intent was committed: held
                    held.append(fire)
                    break
                # killed before the intent was committed: a catch-up run, another try
            assert held, "the kill never fell between a fire's intent and its launch"
            executions = (await client.get("/v1/jobs/held/executions")).json()
            failed = [e for e in executions if e["status"] == "failed"]
            assert failed == [], failed
        assert await n.stop() == 0, n.stderr()
