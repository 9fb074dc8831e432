"""The cluster commands (`trickle members`, `trickle leave`, `trickle raft ...`) against real
nodes: three Engines as a Raft cluster over TCP on 127.0.0.1, each serving its API on port
0, in the test's nursery; and `trickle serve` processes for `trickle leave`, which stops the
node it is sent to.

The click commands run with CliRunner in a worker thread, so they talk to the servers over
real sockets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from click.testing import CliRunner, Result

from trickle import Engine, EngineConfig
from trickle.cli.main import cli
from trickle.http.app import serve_http

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("a", "b", "c")
WAIT = 30  # seconds: elections, replication and stops are far quicker; this bounds a hang
START_TIMEOUT = 60  # seconds for a `trickle serve` process to print its ready line
POLL_INTERVAL = 0.05  # seconds between two reads of another process's /v1/members


async def invoke(args: Sequence[str], env: Mapping[str, str] | None = None) -> Result:
    runner = CliRunner()
    return await trio.to_thread.run_sync(
        partial(runner.invoke, cli, list(args), env=dict(env or {}), catch_exceptions=False)
    )


# -- a Raft cluster in this process --------------------------------------------------------


@attrs.define
class Server:
    engine: Engine
    url: str
    scope: trio.CancelScope
    stopped: trio.Event

    async def invoke(self, *args: str) -> Result:
        return await invoke(args, env={"TRICKLE_ADDRESS": self.url})


class Cluster:
    """Servers with their Raft listener and API on port 0; each one's peers learn its Raft
    address once it is bound."""

    def __init__(self, nursery: trio.Nursery, tmp_path: Path) -> None:
        self.nursery = nursery
        self.tmp_path = tmp_path
        self.servers: dict[str, Server] = {}

    async def start(self, name: str) -> Server:
        engine = Engine(
            EngineConfig(
                data_dir=self.tmp_path / name,
                node_name=name,
                raft_bind="127.0.0.1:0",
                peers={n: "127.0.0.1:1" for n in NAMES},  # replaced by wire_peers()
            )
        )
        scope = trio.CancelScope()
        stopped = trio.Event()

        async def run(task_status: trio.TaskStatus[str]) -> None:
            try:
                with scope:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(engine.run)
                        urls = await nursery.start(
                            partial(serve_http, engine, host="127.0.0.1", port=0)
                        )
                        task_status.started(urls[0])
            finally:
                stopped.set()

        url = await self.nursery.start(run)
        self.servers[name] = Server(engine, url, scope, stopped)
        self.wire_peers()
        return self.servers[name]

    def wire_peers(self) -> None:
        addresses = {}
        for name, server in self.servers.items():
            address = server.engine.raft_address
            if server.engine.running and address is not None:
                addresses[name] = f"{address[0]}:{address[1]}"
        for name, server in self.servers.items():
            if server.engine.running:
                server.engine.update_peers({n: a for n, a in addresses.items() if n != name})

    async def stop(self, name: str) -> None:
        self.servers[name].scope.cancel()
        await self.servers[name].stopped.wait()

    async def leader(self) -> Server:
        while True:
            leaders = [
                s for s in self.servers.values() if s.engine.running and s.engine.is_leader()
            ]
            if len(leaders) == 1:
                return leaders[0]
            await trio.sleep(0.02)


async def test_raft_commands_list_the_servers_and_remove_one_that_is_gone(
    tmp_path: Path,
) -> None:
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            cluster = Cluster(nursery, tmp_path)
            for name in NAMES:
                await cluster.start(name)
            leader = await cluster.leader()
            lead = leader.engine.node_name
            gone, asked = (n for n in NAMES if n != lead)

            result = await leader.invoke("raft", "list-peers")
            assert result.exit_code == 0, result.stderr
            header, *rows = result.stdout.splitlines()
            assert header.split() == ["Node", "ID", "Address", "State", "Voter"]
            table = {row.split()[0]: row.split() for row in rows}
            assert sorted(table) == list(NAMES)
            for name, (node, ident, address, state, voter) in table.items():
                host, port = cluster.servers[name].engine.raft_address or ("", 0)
                assert (node, ident, address) == (name, name, f"{host}:{port}")
                assert (state, voter) == ("leader" if name == lead else "follower", "true")

            result = await cluster.servers[asked].invoke("raft", "list-peers", "--json")
            assert result.exit_code == 0, result.stderr
            peers = json.loads(result.stdout)
            assert [p["id"] for p in peers] == list(NAMES)
            assert [p["node"] for p in peers if p["leader"]] == [lead]

            result = await leader.invoke("members")
            assert result.exit_code == 0, result.stderr
            header, *rows = result.stdout.splitlines()
            assert header.split() == ["NAME", "ADDRESS", "STATUS", "TAGS"]
            assert [row.split()[0] for row in rows] == list(NAMES)
            assert "server=true" in rows[NAMES.index(lead)]
            result = await leader.invoke("members", "--json")
            assert [m["Name"] for m in json.loads(result.stdout)] == list(NAMES)

            # a server dies for good; a follower is asked to remove it: the leader does
            await cluster.stop(gone)
            result = await cluster.servers[asked].invoke("raft", "remove-peer", "--peer-id", gone)
            assert result.exit_code == 0, result.stderr
            left = ", ".join(n for n in NAMES if n != gone)
            assert result.stdout == f"removed {gone} from the Raft configuration; servers: {left}\n"
            result = await leader.invoke("raft", "list-peers", "--json")
            assert [p["id"] for p in json.loads(result.stdout)] == [n for n in NAMES if n != gone]

            result = await leader.invoke("raft", "remove-peer", "--peer-id", gone)
            assert result.exit_code == 1
            assert result.stderr == f"error: 404 {gone} is not a server of the Raft configuration\n"
            nursery.cancel_scope.cancel()


# -- trickle leave -------------------------------------------------------------------------


@attrs.define
class StopThatNeverStops:
    """A stop callback that is called but stops nothing."""

    calls: int = 0

    async def __call__(self) -> None:
        self.calls += 1


async def test_leave_wait_fails_when_the_node_still_answers(tmp_path: Path) -> None:
    stop = StopThatNeverStops()
    engine = Engine(EngineConfig(data_dir=tmp_path / "data", node_name="stubborn"))
    async with engine, trio.open_nursery() as nursery:
        [url] = await nursery.start(
            lambda task_status: serve_http(engine, port=0, stop=stop, task_status=task_status)
        )
        with trio.fail_after(WAIT):
            result = await invoke(["leave", "--address", url, "--wait", "--timeout", "0.5"])
        assert result.exit_code == 1
        assert result.stderr.startswith(f"error: node stubborn still answers at {url} after 0.5s")
        assert stop.calls == 1
        nursery.cancel_scope.cancel()


@attrs.frozen
class AgentConfig:
    server: bool = False


@attrs.define
class Agent:
    """What an agent's HTTP app uses of an Engine."""

    node_name: str = "agent-1"
    running: bool = True
    config: AgentConfig = attrs.field(factory=AgentConfig)

    @property
    def metrics_registry(self) -> Any:
        from prometheus_client import CollectorRegistry

        return CollectorRegistry()

    def is_leader(self) -> bool:
        return False


async def test_leave_sent_to_an_agent_says_to_stop_it_with_sigterm() -> None:
    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(
            lambda task_status: serve_http(Agent(), port=0, task_status=task_status)  # type: ignore[arg-type]
        )
        with trio.fail_after(WAIT):
            result = await invoke(["leave", "--address", url])
        assert result.exit_code == 1
        assert "agent-1 is an agent" in result.stderr
        assert "stop an agent with SIGTERM" in result.stderr
        nursery.cancel_scope.cancel()


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without TRICKLE_* settings, so that only the test's count."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRICKLE_")}
    env.update(extra)
    return env


@attrs.define
class Node:
    process: trio.Process
    ready: dict[str, Any]
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


async def _read_line(stream: trio.abc.ReceiveStream, describe: Callable[[], str]) -> bytes:
    buffer = bytearray()
    while b"\n" not in buffer:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise AssertionError(f"trickle serve ended before its ready line:\n{describe()}")
        buffer += chunk
    return bytes(buffer.split(b"\n", 1)[0])


@asynccontextmanager
async def node(tmp_path: Path, name: str, *args: str) -> AsyncIterator[Node]:
    """`trickle serve --server` as a process, once it printed its ready line; killed at the
    end if it is still running."""
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
        *args,
    ]
    with stderr_path.open("ab") as stderr:
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=stderr, env=clean_env(), cwd=ROOT
        )
    try:
        assert process.stdout is not None
        with trio.fail_after(START_TIMEOUT):
            line = await _read_line(
                process.stdout, lambda: stderr_path.read_text(encoding="utf-8", errors="replace")
            )
        yield Node(process, json.loads(line), stderr_path)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        with trio.CancelScope(shield=True):
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


async def wait_statuses(address: str, want: dict[str, str]) -> list[dict[str, Any]]:
    """/v1/members of the node at ``address`` once every named member has its status."""
    members: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=address) as client:
        try:
            with trio.fail_after(WAIT):
                while True:
                    members = (await client.get("/v1/members")).json()
                    seen = {m["Name"]: m["statusText"] for m in members}
                    if all(seen.get(name) == status for name, status in want.items()):
                        return members
                    await trio.sleep(POLL_INTERVAL)
        except trio.TooSlowError:
            raise AssertionError(f"members did not get to {want}; last seen: {members}") from None


async def test_leave_makes_a_server_leave_the_cluster_and_exit_0(tmp_path: Path) -> None:
    gossip = ("--bind-addr", "127.0.0.1:0", "--rpc-port", "0")
    async with node(tmp_path, "alpha", *gossip) as alpha:
        join = ("--join", alpha.ready["gossip"])
        async with node(tmp_path, "beta", *gossip, *join) as beta:
            await wait_statuses(alpha.ready["http"], {"alpha": "alive", "beta": "alive"})
            result = await invoke(["members", "--address", beta.ready["http"]])
            assert result.exit_code == 0, result.stderr
            rows = {row.split()[0]: row.split() for row in result.stdout.splitlines()[1:]}
            assert sorted(rows) == ["alpha", "beta"]
            assert rows["alpha"][1:3] == [alpha.ready["gossip"], "alive"]

            result = await invoke(["leave", "--wait", "--address", beta.ready["http"]])
            assert result.exit_code == 0, result.stderr + beta.stderr()
            assert result.stdout == "node beta left the cluster and stopped\n"
            with trio.fail_after(WAIT):
                assert await beta.process.wait() == 0, beta.stderr()
            await wait_statuses(alpha.ready["http"], {"alpha": "alive", "beta": "left"})
            logs = beta.stderr()
            assert "stopped (asked to leave by POST /v1/leave)" in logs
            # what matters is what the others see (checked above: "left", never failed); the
            # leaver's own confirmation can miss its 5 s under load (session-3 note, known issue)
            assert "leaving the cluster" in logs
            assert "Traceback" not in logs

        # alpha, now alone: the leave has nobody to tell, the stop is the same; --json
        # prints the members as it saw them, itself leaving
        result = await invoke(["leave", "--json", "--address", alpha.ready["http"]])
        assert result.exit_code == 0, result.stderr
        me = next(m for m in json.loads(result.stdout) if m["Name"] == "alpha")
        assert me["statusText"] == "leaving"
        with trio.fail_after(WAIT):
            assert await alpha.process.wait() == 0, alpha.stderr()
        assert "stopped (asked to leave by POST /v1/leave)" in alpha.stderr()


async def _wait_raft_peers(address: str, want: list[str]) -> None:
    peers: Any = None
    async with httpx.AsyncClient(base_url=address) as client:
        try:
            with trio.fail_after(WAIT):
                while True:
                    peers = (await client.get("/v1/raft/peers")).json()
                    if sorted(p["node"] for p in peers) == want:
                        return
                    await trio.sleep(POLL_INTERVAL)
        except trio.TooSlowError:
            raise AssertionError(f"raft peers did not get to {want}; last seen: {peers}") from None


async def test_a_server_that_left_restarts_on_its_data_dir_and_is_added_back(
    tmp_path: Path,
) -> None:
    gossip = ("--bind-addr", "127.0.0.1:0", "--rpc-port", "0")
    async with node(tmp_path, "alpha", *gossip) as alpha:
        join = ("--join", alpha.ready["gossip"])
        async with node(tmp_path, "beta", *gossip, *join) as beta:
            await _wait_raft_peers(alpha.ready["http"], ["alpha", "beta"])
            result = await invoke(["leave", "--wait", "--address", beta.ready["http"]])
            assert result.exit_code == 0, result.stderr + beta.stderr()
        await _wait_raft_peers(alpha.ready["http"], ["alpha"])
        async with httpx.AsyncClient(base_url=alpha.ready["http"]) as client:
            job = {"name": "after", "schedule": "@manually", "executor": "shell"}
            job["executor_config"] = {"command": "true"}
            assert (await client.post("/v1/jobs", json=job)).status_code == 201

        # the same data dir, whose Raft log ends with beta's own removal
        async with node(tmp_path, "beta", *gossip, *join) as again:
            await _wait_raft_peers(alpha.ready["http"], ["alpha", "beta"])
            async with httpx.AsyncClient(base_url=again.ready["http"]) as client:
                with trio.fail_after(WAIT):
                    while True:  # polling another process: no event to wait on
                        if (await client.get("/v1/jobs/after")).status_code == 200:
                            break
                        await trio.sleep(POLL_INTERVAL)
            logs = again.stderr()
            assert "it was removed from the cluster; it starts anew" in logs
            assert "Traceback" not in logs
        assert (tmp_path / "beta" / "raft.db.removed").exists()
