"""Three `trickle serve --server --bootstrap-expect 3` processes on 127.0.0.1 (every port 0,
each its own data dir; trickle.testing.processes) form one Raft cluster: the first prints a
waiting line with its gossip address, the others --join it; `trickle raft list-peers` then
shows three voters, and a job written on the leader is read on another server. Also: a node whose join
address never answers exits 1 after --retry-max attempts, naming the address."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import trio
from click.testing import CliRunner, Result

from trickle.cli.main import cli
from trickle.testing.processes import Cluster

NAMES = ("s1", "s2", "s3")
WAIT = 60  # seconds: bootstrap takes ~2 s of stable membership; this only bounds a hang
POLL = 0.05  # seconds between two looks at the cluster


async def invoke(args: Sequence[str], env: Mapping[str, str] | None = None) -> Result:
    runner = CliRunner()
    return await trio.to_thread.run_sync(
        partial(runner.invoke, cli, list(args), env=dict(env or {}), catch_exceptions=False)
    )


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
    with trio.fail_after(WAIT):
        async with Cluster(tmp_path) as cluster:
            # the first prints a waiting line with its gossip address, the others --join
            # it, and all three print their ready lines once the cluster formed
            servers = await cluster.start_servers(NAMES, bootstrap_expect=3)
            first = servers[0]
            assert first.waiting is not None, first.describe()
            assert (first.waiting["node"], first.waiting["bootstrap_expect"]) == ("s1", 3)
            assert first.waiting["gossip"] == first.gossip
            ready = {s.name: s.ready for s in servers}
            assert all(line["event"] == "ready" for line in ready.values())

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

            leader = cluster.nodes[next(p["id"] for p in peers if p["leader"])]
            other = next(s for s in servers if s is not leader)
            job: dict[str, Any] = {"name": "formed", "schedule": "@every 1h"}
            job |= {"executor": "shell", "executor_config": {"command": "true"}}
            response = await leader.request("POST", "/v1/jobs", json=job)
            assert response.status_code == 201, response.text
            assert (await other.get("/v1/jobs/formed"))["schedule"] == "@every 1h"
            for server in servers:
                assert server.running, server.describe()
                server.kill(signal.SIGTERM)
            for server in servers:
                assert await server.wait() == 0, server.describe()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed): a join there fails."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_node_that_cannot_join_exits_1_after_retry_max(tmp_path: Path) -> None:
    target = f"127.0.0.1:{closed_port()}"
    args = ("--retry-max", "2", "--retry-interval", "50ms")
    with trio.fail_after(WAIT):
        async with Cluster(tmp_path) as cluster:
            node = await cluster.start_node(
                "lonely", server=True, join=[target], args=args, wait_ready=False
            )
            assert await node.wait(WAIT) == 1, node.describe()
    stderr = node.stderr()
    assert (
        f"error: lonely could not join the cluster: none of {target} answered in 2 attempts; "
        "gave up (--retry-max)"
    ) in stderr
