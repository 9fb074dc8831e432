"""`trickle serve` with a Raft listener, as a real process: the ready line names the bound
Raft address, which accepts connections, the API serves reads and writes, SIGTERM stops it
cleanly; bad Raft settings exit 2 naming the flag, a taken Raft port exits 1.

Every process is killed by the helper if the test did not stop it; waiting is on the ready
line or on the process's exit, never on a sleep.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60  # seconds for a node to print its ready line
STOP_TIMEOUT = 15  # seconds for a graceful stop
JOB = {
    "name": "raft-cli-job",
    "schedule": "@every 1h",
    "executor": "shell",
    "executor_config": {"command": "true"},
}


def clean_env() -> dict[str, str]:
    """This environment without TRICKLE_* settings, so that only the test's flags count."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TRICKLE_")}


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "trickle", "serve", "--server", *args]


@attrs.define
class Node:
    process: trio.Process
    ready: dict[str, Any]
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


async def read_line(stream: trio.abc.ReceiveStream, describe: Callable[[], str]) -> bytes:
    buffer = bytearray()
    while b"\n" not in buffer:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise AssertionError(f"trickle serve ended before its ready line:\n{describe()}")
        buffer += chunk
    return bytes(buffer.split(b"\n", 1)[0])


@asynccontextmanager
async def node(tmp_path: Path, *args: str) -> AsyncIterator[Node]:
    """A `trickle serve --server ARGS` process, once it printed its ready line."""
    stderr_path = tmp_path / "serve.stderr.log"
    with stderr_path.open("ab") as stderr:
        process = await trio.lowlevel.open_process(
            serve_command(*args), stdout=subprocess.PIPE, stderr=stderr, env=clean_env(), cwd=ROOT
        )
    try:
        assert process.stdout is not None
        with trio.fail_after(START_TIMEOUT):
            line = await read_line(
                process.stdout, lambda: stderr_path.read_text(encoding="utf-8", errors="replace")
            )
        yield Node(process, json.loads(line), stderr_path)
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


async def run_serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run `trickle serve --server ARGS` expecting it to exit by itself."""
    with trio.fail_after(START_TIMEOUT):
        return await trio.run_process(
            serve_command("--data-dir", str(tmp_path / "data"), *args),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=clean_env(),
            cwd=ROOT,
        )


def split_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


async def test_server_with_raft_addr_reports_the_listener_serves_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    args = ("--raft-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
    async with node(tmp_path, *args, "--data-dir", str(tmp_path / "data")) as server:
        ready = server.ready
        for key in ("event", "node", "http", "http_addresses", "data_dir", "version", "pid"):
            assert key in ready, key  # every key of a lone server's line is kept
        assert ready["event"] == "ready"
        host, port = split_host_port(ready["raft"])
        assert host == "127.0.0.1"
        assert port != 0  # the port that was picked, not the one asked for

        raft = await trio.open_tcp_stream(host, port)
        await raft.aclose()

        async with httpx.AsyncClient(base_url=ready["http"], timeout=30) as client:
            saved = await client.post("/v1/jobs", json=JOB)
            assert saved.status_code == 201, saved.text
            fetched = await client.get(f"/v1/jobs/{JOB['name']}")
            assert fetched.status_code == 200
            assert fetched.json()["schedule"] == JOB["schedule"]
            leader = await client.get("/v1/isleader")
            assert leader.status_code == 200

        server.process.send_signal(signal.SIGTERM)
        with trio.fail_after(STOP_TIMEOUT):
            code = await server.process.wait()
        assert code == 0, server.stderr()
        assert "stopped (received SIGTERM)" in server.stderr()
        assert "Traceback" not in server.stderr()


async def test_lone_server_without_raft_addr_has_no_raft_key(tmp_path: Path) -> None:
    args = ("--http-addr", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"))
    async with node(tmp_path, *args) as server:
        assert "raft" not in server.ready
        server.process.send_signal(signal.SIGTERM)
        with trio.fail_after(STOP_TIMEOUT):
            assert await server.process.wait() == 0


async def test_bad_peer_exits_2_naming_the_flag(tmp_path: Path) -> None:
    result = await run_serve(
        tmp_path, "--raft-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--peer", "node2"
    )
    assert result.returncode == 2
    assert result.stdout == b""  # no ready line
    assert "--peer: malformed peer 'node2': expected NAME=HOST:PORT" in result.stderr.decode()
    assert not (tmp_path / "data").exists()  # refused before anything was touched


async def test_peers_without_raft_addr_exit_2_naming_raft_addr(tmp_path: Path) -> None:
    result = await run_serve(
        tmp_path, "--node-name", "node1", "--http-addr", "127.0.0.1:0", "--peer", "node2=h2:6868"
    )
    assert result.returncode == 2
    assert "--raft-addr: a server with peers (node2, given by --peer)" in result.stderr.decode()


async def test_bad_raft_setting_in_the_environment_exits_2_naming_the_variable(
    tmp_path: Path,
) -> None:
    with trio.fail_after(START_TIMEOUT):
        result = await trio.run_process(
            serve_command("--http-addr", "127.0.0.1:0", "--data-dir", str(tmp_path / "data")),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**clean_env(), "TRICKLE_RAFT_TICK": "soon"},
            cwd=ROOT,
        )
    assert result.returncode == 2
    assert "TRICKLE_RAFT_TICK: expected a duration such as 25ms" in result.stderr.decode()


async def test_taken_raft_port_fails_fast_with_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await run_serve(
            tmp_path, "--raft-addr", f"127.0.0.1:{port}", "--http-addr", "127.0.0.1:0"
        )
    assert result.returncode == 1
    assert result.stdout == b""
    assert (
        f"error: cannot listen on 127.0.0.1:{port} (--raft-addr): the address is already in use"
        in result.stderr.decode()
    )
    assert not (tmp_path / "data").exists()  # checked before the store is touched
