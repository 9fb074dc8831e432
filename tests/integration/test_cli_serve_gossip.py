"""`trickle serve` with gossip, as real processes: a second server joins the first through
the gossip address of its ready line, the first's /v1/members shows both alive with their
tags, and a SIGTERM makes the second leave (the first shows it "left", not "failed").
A taken gossip port (UDP or TCP) exits 1 naming --bind-addr; a bad key exits 2 without
showing it.

Every process is killed by the helper if the test did not stop it; waiting is on the ready
line, on the process's exit, or on the API's answer (polled: it lives in another process).
"""

from __future__ import annotations

import base64
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

from trickle.gossip.keyring import encode_key, generate_key

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60  # seconds for a node to print its ready line
STOP_TIMEOUT = 20  # seconds for a graceful stop (the leave takes at most 5)
MEMBERS_TIMEOUT = 30  # seconds for membership news to reach the API
POLL_INTERVAL = 0.05  # seconds between two reads of /v1/members
LOCAL = ("--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without TRICKLE_* settings, so that only the test's count."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRICKLE_")}
    env.update(extra)
    return env


def serve_command(*args: str, server: bool = True) -> list[str]:
    return [sys.executable, "-m", "trickle", "serve", *(["--server"] if server else []), *args]


@attrs.define
class Node:
    process: trio.Process
    ready: dict[str, Any]
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(STOP_TIMEOUT):
            return await self.process.wait()


async def read_line(stream: trio.abc.ReceiveStream, describe: Callable[[], str]) -> bytes:
    buffer = bytearray()
    while b"\n" not in buffer:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise AssertionError(f"trickle serve ended before its ready line:\n{describe()}")
        buffer += chunk
    return bytes(buffer.split(b"\n", 1)[0])


@asynccontextmanager
async def node(
    tmp_path: Path, name: str, *args: str, env: dict[str, str] | None = None, server: bool = True
) -> AsyncIterator[Node]:
    """`trickle serve --server --node-name NAME ARGS` with its own data dir, once it
    printed its ready line."""
    stderr_path = tmp_path / f"{name}.stderr.log"
    command = serve_command(
        "--node-name", name, "--data-dir", str(tmp_path / name), *args, server=server
    )
    with stderr_path.open("ab") as stderr:
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=stderr, env=env or clean_env(), cwd=ROOT
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


async def wait_members(
    client: httpx.AsyncClient, done: Callable[[dict[str, dict[str, Any]]], bool]
) -> dict[str, dict[str, Any]]:
    """/v1/members by name, once ``done`` holds for it (polled; fails after a while)."""
    members: dict[str, dict[str, Any]] = {}
    try:
        with trio.fail_after(MEMBERS_TIMEOUT):
            while True:
                response = await client.get("/v1/members")
                assert response.status_code == 200, response.text
                members = {m["Name"]: m for m in response.json()}
                if done(members):
                    return members
                await trio.sleep(POLL_INTERVAL)
    except trio.TooSlowError:
        raise AssertionError(f"membership did not get there; last seen: {members}") from None


def status(members: dict[str, dict[str, Any]], name: str) -> tuple[int, str] | None:
    member = members.get(name)
    return None if member is None else (member["Status"], member["statusText"])


async def test_a_server_joins_another_through_its_ready_lines_gossip_address_and_leaves_on_sigterm(
    tmp_path: Path,
) -> None:
    key = encode_key(generate_key())
    env = clean_env(TRICKLE_ENCRYPT=key)  # both encrypt gossip with the same key
    gossip = ("--bind-addr", "127.0.0.1:0")
    async with node(tmp_path, "alpha", *LOCAL, *gossip, env=env) as alpha:
        assert alpha.ready["gossip"].startswith("127.0.0.1:")
        assert not alpha.ready["gossip"].endswith(":0")  # the port picked
        join = ("--join", alpha.ready["gossip"])
        async with node(tmp_path, "beta", *LOCAL, *gossip, *join, env=env) as beta:
            async with httpx.AsyncClient(base_url=alpha.ready["http"], timeout=30) as client:
                both = await wait_members(
                    client,
                    lambda m: status(m, "alpha") == (1, "alive") == status(m, "beta"),
                )
                for name, server in (("alpha", alpha), ("beta", beta)):
                    member = both[name]
                    tags = member["Tags"]
                    assert tags["server"] == tags["dkron_server"] == "true"
                    assert (tags["dc"], tags["region"]) == ("dc1", "global")
                    assert tags["rpc_addr"] == server.ready["raft"]
                    host, port = server.ready["gossip"].rsplit(":", 1)
                    assert (member["Addr"], member["Port"]) == (host, int(port))

                assert await beta.stop() == 0, beta.stderr()
                members = await wait_members(client, lambda m: status(m, "beta") == (3, "left"))
                assert status(members, "alpha") == (1, "alive")
            logs = beta.stderr()
            # what matters is what the others see (checked above: "left", never failed); the
            # leaver's own confirmation can miss its 5 s under load (session-3 note, known issue)
            assert "leaving the cluster" in logs
            assert "stopped (received SIGTERM)" in logs
            assert "Traceback" not in logs
            assert key not in logs  # a key is never logged

        assert await alpha.stop() == 0, alpha.stderr()
        assert "member leave: beta" in alpha.stderr()
        assert "member fail: beta" not in alpha.stderr()  # beta left: never declared failed
        assert key not in alpha.stderr()


async def test_an_agent_joins_serves_only_health_and_metrics_and_runs_what_it_is_sent(
    tmp_path: Path,
) -> None:
    gossip = ("--bind-addr", "127.0.0.1:0")
    async with node(tmp_path, "alpha", *LOCAL, *gossip) as alpha:
        join = ("--join", alpha.ready["gossip"], "--tag", "pool=agents")
        async with node(tmp_path, "agent1", *LOCAL, *gossip, *join, server=False) as agent:
            async with httpx.AsyncClient(base_url=agent.ready["http"], timeout=30) as own:
                assert (await own.get("/health")).status_code == 200
                assert (await own.get("/metrics")).status_code == 200
                assert (await own.get("/v1/jobs")).status_code == 404  # the API is on servers
            async with httpx.AsyncClient(base_url=alpha.ready["http"], timeout=30) as client:
                members = await wait_members(client, lambda m: status(m, "agent1") == (1, "alive"))
                tags = members["agent1"]["Tags"]
                assert "server" not in tags and tags["pool"] == "agents"
                assert tags["rpc_addr"] == agent.ready["raft"]
                job = {
                    "name": "on-agents",
                    "schedule": "@manually",
                    "executor": "shell",
                    "executor_config": {"command": "echo ran-on-the-agent"},
                    "tags": {"pool": "agents"},
                }
                assert (await client.post("/v1/jobs", json=job)).status_code == 201
                assert (await client.post("/v1/jobs/on-agents")).status_code in (200, 202)
                with trio.fail_after(MEMBERS_TIMEOUT):
                    while True:
                        response = await client.get("/v1/jobs/on-agents/executions")
                        done = [e for e in response.json() if e["finished_at"][:4] != "0001"]
                        if done:
                            break
                        await trio.sleep(POLL_INTERVAL)
                [execution] = done
                assert execution["node_name"] == "agent1" and execution["success"], execution
                assert "ran-on-the-agent" in execution["output"]
            assert await agent.stop() == 0, agent.stderr()
        assert await alpha.stop() == 0, alpha.stderr()


async def run_serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    """Run `trickle serve --server ARGS` expecting it to exit by itself."""
    with trio.fail_after(START_TIMEOUT):
        return await trio.run_process(
            serve_command("--data-dir", str(tmp_path / "data"), *args),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=clean_env(**env),
            cwd=ROOT,
        )


async def test_taken_gossip_udp_port_fails_fast_with_exit_1_naming_bind_addr(
    tmp_path: Path,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = await run_serve(tmp_path, *LOCAL, "--bind-addr", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert result.stdout == b""
    assert (
        f"error: cannot listen on 127.0.0.1:{port} (--bind-addr): the address is already in use"
        in result.stderr.decode()
    )
    assert not (tmp_path / "data").exists()  # checked before the store is touched


async def test_bad_key_in_the_environment_exits_2_naming_it_without_showing_it(
    tmp_path: Path,
) -> None:
    bad = base64.b64encode(b"too short").decode()
    result = await run_serve(
        tmp_path, *LOCAL, "--bind-addr", "127.0.0.1:0", TRICKLE_ENCRYPT=f"{bad},{bad}x"
    )
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert "TRICKLE_ENCRYPT (key 1 of 2): the encryption key must decode to 16, 24 or 32" in stderr
    assert bad not in stderr
    assert not (tmp_path / "data").exists()
