"""Three `trickle serve --server --bootstrap-expect 3` processes on 127.0.0.1 (every port 0,
each its own data dir) form one Raft cluster: the first prints a waiting line with its
gossip address, the others --join it; `trickle raft list-peers` then shows three voters,
and a job written on the leader is read on another server. Also: a node whose join
address never answers exits 1 after --retry-max attempts, naming the address."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio
from click.testing import CliRunner, Result

from trickle.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("s1", "s2", "s3")
WAIT = 60  # seconds: bootstrap takes ~2 s of stable membership; this only bounds a hang
POLL = 0.05  # seconds between two looks at the cluster


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRICKLE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def invoke(args: Sequence[str], env: Mapping[str, str] | None = None) -> Result:
    runner = CliRunner()
    return await trio.to_thread.run_sync(
        partial(runner.invoke, cli, list(args), env=dict(env or {}), catch_exceptions=False)
    )


class Node:
    """A `trickle serve` process; its stdout is read line by line, its stderr is a file."""

    def __init__(self, process: trio.Process, stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path
        self.buffer = bytearray()

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    async def line(self) -> dict[str, Any]:
        """The next JSON line on stdout."""
        assert self.process.stdout is not None
        while b"\n" not in self.buffer:
            chunk = await self.process.stdout.receive_some(4096)
            if not chunk:
                raise AssertionError(f"trickle serve ended before its next line:\n{self.stderr()}")
            self.buffer += chunk
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        decoded: dict[str, Any] = json.loads(line)
        return decoded


@asynccontextmanager
async def serve(tmp_path: Path, name: str, *args: str) -> AsyncIterator[Node]:
    """`trickle serve --server` named ``name`` with its own data dir, every port 0 on
    127.0.0.1; killed at the end if still running."""
    stderr_path = tmp_path / f"{name}.stderr.log"
    command = [
        sys.executable,
        "-m",
        "trickle",
        "serve",
        "--server",
        "--node-name",
        name,
        "--data-dir",
        str(tmp_path / name),
        "--http-addr",
        "127.0.0.1:0",
        "--bind-addr",
        "127.0.0.1:0",
        "--rpc-port",
        "0",
        "--profile",
        "local",
        *args,
    ]
    with stderr_path.open("ab") as stderr:
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=stderr, env=clean_env(), cwd=ROOT
        )
    try:
        yield Node(process, stderr_path)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        with trio.CancelScope(shield=True):
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


async def three_voters(address: str) -> list[dict[str, Any]]:
    """`trickle raft list-peers --json` once it shows three voters, one of them leading."""
    peers: Any = None
    while True:
        result = await invoke(["raft", "list-peers", "--json", "--address", address])
        if result.exit_code == 0:
            peers = json.loads(result.stdout)
            if sum(p["voter"] for p in peers) == 3 and any(p["leader"] for p in peers):
                return list(peers)
        await trio.sleep(POLL)


async def test_three_servers_with_bootstrap_expect_form_one_cluster(tmp_path: Path) -> None:
    expect = ("--bootstrap-expect", "3")
    with trio.fail_after(WAIT):
        async with AsyncExitStack() as stack:
            first = await stack.enter_async_context(serve(tmp_path, "s1", *expect))
            waiting = await first.line()
            assert waiting["event"] == "waiting", first.stderr()
            assert (waiting["node"], waiting["bootstrap_expect"]) == ("s1", 3)
            join = ("--join", waiting["gossip"])
            nodes = {"s1": first}
            for name in NAMES[1:]:
                nodes[name] = await stack.enter_async_context(serve(tmp_path, name, *expect, *join))
            ready: dict[str, dict[str, Any]] = {}

            async def read_ready(name: str) -> None:
                line = await nodes[name].line()
                if line["event"] == "waiting":
                    line = await nodes[name].line()
                assert line["event"] == "ready", nodes[name].stderr()
                ready[name] = line

            async with trio.open_nursery() as nursery:
                for name in NAMES:
                    nursery.start_soon(read_ready, name)

            # the table, then the JSON: three voters, one leader
            peers = await three_voters(ready["s1"]["http"])
            assert sorted(p["id"] for p in peers) == list(NAMES)
            for peer in peers:
                assert peer["address"] == ready[peer["id"]]["raft"]
            result = await invoke(["raft", "list-peers", "--address", ready["s2"]["http"]])
            assert result.exit_code == 0, result.stderr
            rows = [row.split() for row in result.stdout.splitlines()[1:]]
            assert sorted(row[0] for row in rows) == list(NAMES)
            assert all(row[4] == "true" for row in rows)

            leader = next(p["id"] for p in peers if p["leader"])
            other = next(n for n in NAMES if n != leader)
            job = {"name": "formed", "schedule": "@every 1h", "executor": "shell"}
            job["executor_config"] = {"command": "true"}
            async with httpx.AsyncClient() as client:
                response = await client.post(f"{ready[leader]['http']}/v1/jobs", json=job)
                assert response.status_code == 201, response.text
                response = await client.get(f"{ready[other]['http']}/v1/jobs/formed")
                assert response.status_code == 200, response.text
                assert response.json()["schedule"] == "@every 1h"
            for node in nodes.values():
                assert node.process.returncode is None, node.stderr()
                node.process.send_signal(signal.SIGTERM)
            for node in nodes.values():
                assert await node.process.wait() == 0, node.stderr()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed): a join there fails."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_node_that_cannot_join_exits_1_after_retry_max(tmp_path: Path) -> None:
    target = f"127.0.0.1:{closed_port()}"
    args = ("--join", target, "--retry-max", "2", "--retry-interval", "50ms")
    with trio.fail_after(WAIT):
        async with serve(tmp_path, "lonely", *args) as node:
            assert await node.process.wait() == 1
    stderr = node.stderr()
    assert (
        f"error: lonely could not join the cluster: none of {target} answered in 2 attempts; "
        "gave up (--retry-max)"
    ) in stderr
