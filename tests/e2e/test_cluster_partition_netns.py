"""A partition of real processes: three ``trickle serve --server`` processes, each in a
network namespace of its own (trickle.testing.netns), form a cluster with
``--bootstrap-expect 3``; two jobs fire ``@every 1s``. The leader is cut off the network
(UDP and TCP, both ways). Through the majority's API: a new leader is elected and fires
keep being dispatched. The isolated leader stops leading (``/v1/isleader``) and runs
nothing more (a log its jobs append to, one line per run that really happened, by node).
After healing: the old leader is a follower again and runs jobs again, and every server's
history has no duplicate (job, scheduled time, node); every run in the log has its record.

A second test cuts off a follower that a job is pinned to: the dispatches the leader
recorded failed must not run when the partition heals.

Needs root and iproute2: skipped with the reason otherwise, failed under ``CI=true``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from trickle.testing.netns import NetnsNetwork, NetnsNode, require_netns
from trickle.testing.processes import Cluster, Node

pytestmark = pytest.mark.e2e

NAMES = ("s1", "s2", "s3")
TEST_TIMEOUT = 240  # seconds for the whole test, a bound on a hang only
WAIT = 30.0  # seconds: bounds each wait for the cluster to do something (a slow machine)
FENCE_MARGIN = 2.0  # seconds after the cut in which runs launched before it may still run
# Raft's timing x3 (a 75 ms tick: a leader that hears from no quorum for 750 ms steps
# down): at the default 250 ms, the stalls of a shared 2-core machine under load (load
# average 10+) sometimes depose a healthy leader, which is not what these tests are about
RAFT_MULTIPLIER = 3
FIRES = 3  # fires of each job to see in each phase (before, during, after the partition)
EVERY_NODE = "partition-every-node"  # no tags: each fire runs on every alive node
ONE_SERVER = "partition-one-server"  # server:1: each fire runs on one server
JOBS = (EVERY_NODE, ONE_SERVER)


def job(name: str, log: Path, tags: dict[str, str]) -> dict[str, Any]:
    """@every 1s, appending '<node> <job> <unix time>' to ``log`` where it really runs."""
    line = '"$PARTITION_NODE $ENV_JOB_NAME $(date +%s.%N)"'
    return {
        "name": name,
        "schedule": "@every 1s",
        "tags": tags,
        "executor": "shell",
        "executor_config": {"command": f"echo {line} >> {log}", "shell": "true"},
    }


def when(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def history(node: Node, name: str) -> list[dict[str, Any]]:
    executions: list[dict[str, Any]] = await node.get(f"/v1/jobs/{name}/executions", _end=100000)
    return executions


async def runs_since(
    node: Node, since: float, *, on: set[str] | None = None, success: bool = True
) -> list[dict[str, Any]]:
    """Executions of either job, read on ``node``, scheduled after ``since`` on a node of
    ``on`` (any when None), finished successfully (if ``success``)."""
    found = []
    for name in JOBS:
        for e in await history(node, name):
            if when(e["scheduled_at"]) <= since or (on is not None and e["node_name"] not in on):
                continue
            if success and not e["success"]:
                continue
            found.append(e)
    return found


def log_lines(log: Path) -> list[tuple[str, str, float]]:
    """(node, job, unix time) per run that really happened."""
    if not log.exists():
        return []
    lines = []
    for raw in log.read_text().splitlines():
        node, name, at = raw.split()
        lines.append((node, name, float(at)))
    return lines


async def is_leader(node: Node) -> bool | None:
    """``/v1/isleader`` of ``node`` (None if it does not answer)."""
    try:
        response = await node.request("GET", "/v1/isleader", timeout=2.0)
    except httpx.HTTPError:
        return None
    return response.status_code == 200


async def ran_on(reader: Node, node: str, since: float) -> bool:
    """Whether ``reader`` shows a successful run on ``node`` scheduled after ``since``."""
    return bool(await runs_since(reader, since, on={node}))


async def stepped_down(node: Node) -> bool:
    """Whether ``node`` answers ``/v1/isleader`` with "I am a follower"."""
    return await is_leader(node) is False


async def leader_named_by(node: Node) -> str | None:
    """The name ``/v1/leader`` of ``node`` gives (None: no leader known, or no answer)."""
    try:
        response = await node.request("GET", "/v1/leader", timeout=2.0)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return str(response.json()["Name"])


@asynccontextmanager
async def servers_in_namespaces(tmp_path: Path) -> AsyncIterator[tuple[NetnsNetwork, Cluster]]:
    """Three servers (``NAMES``), each in its own namespace, bound and advertised on its
    address, formed with ``--bootstrap-expect 3``; each has the tag ``node=<name>`` and
    ``PARTITION_NODE=<name>`` in its jobs' environment. Skips (fails under CI=true) where
    namespaces cannot be made."""
    await require_netns()
    async with (
        NetnsNetwork(len(NAMES)) as net,
        net.open_http_transport() as transport,
        Cluster(tmp_path / "cluster", transport=transport) as cluster,
    ):
        servers = await cluster.start_servers(
            list(NAMES),
            args=["--history-limit", "10000", "--raft-multiplier", str(RAFT_MULTIPLIER)],
            hosts=[n.address for n in net.nodes],
            command_prefixes=[
                [*n.command_prefix, "env", f"PARTITION_NODE={name}", f"TRICKLE_TAGS=node={name}"]
                for name, n in zip(NAMES, net.nodes, strict=True)
            ],
        )
        for server, node in zip(servers, net.nodes, strict=True):
            assert server.raft.startswith(f"{node.address}:"), server.describe()
            assert server.gossip.startswith(f"{node.address}:"), server.describe()
        yield net, cluster


def netns_node(net: NetnsNetwork, server: Node) -> NetnsNode:
    return net.nodes[NAMES.index(server.name)]


async def test_an_isolated_leader_stops_dispatching_and_the_majority_carries_on(
    tmp_path: Path,
) -> None:
    log = tmp_path / "runs.log"
    with trio.fail_after(TEST_TIMEOUT):
        async with servers_in_namespaces(tmp_path) as (net, cluster):
            await _isolated_leader(net, cluster, log)


async def _isolated_leader(net: NetnsNetwork, cluster: Cluster, log: Path) -> None:
    servers = cluster.servers()
    old = await cluster.leader(WAIT)
    majority = [s for s in servers if s is not old]
    for spec in (job(EVERY_NODE, log, {}), job(ONE_SERVER, log, {"server": "true:1"})):
        response = await old.request("POST", "/v1/jobs", json=spec)
        assert response.status_code == 201, response.text

    # before: every node runs the every-node job
    start = time.time()

    async def every_node_ran_since(since: float, reader: Node) -> bool:
        done = Counter(e["node_name"] for e in await runs_since(reader, since))
        return all(done[name] >= FIRES for name in NAMES)

    await cluster.wait_for(
        lambda: every_node_ran_since(start, old), timeout=WAIT, what="runs on every node"
    )

    # the cut
    await net.isolate(netns_node(net, old))
    cut = time.time()
    new = await cluster.leader(WAIT, among=majority)
    assert new is not old
    await cluster.wait_for(
        lambda: stepped_down(old),
        timeout=WAIT,
        what=f"the isolated {old.name} to step down",
    )
    named = await leader_named_by(old)
    assert named != old.name, f"{old.name} still names itself leader while isolated"
    fenced = cut + FENCE_MARGIN
    majority_names = {s.name for s in majority}

    async def majority_ran_since(since: float) -> bool:
        done = Counter((e["job_name"], e["node_name"]) for e in await runs_since(new, since))
        return all(done[(EVERY_NODE, name)] >= FIRES for name in majority_names) and (
            sum(done[(ONE_SERVER, name)] for name in majority_names) >= FIRES
        )

    await cluster.wait_for(
        lambda: majority_ran_since(fenced),
        timeout=WAIT,
        what="the majority to keep running both jobs under the new leader",
    )
    assert await is_leader(old) is False
    heal = time.time()
    ran_isolated = [
        line for line in log_lines(log) if line[0] == old.name and fenced < line[2] < heal
    ]
    assert ran_isolated == [], f"the isolated old leader ran {ran_isolated}"

    # heal: the old leader follows the new one and runs jobs again
    await net.heal()
    assert await cluster.leader(WAIT) is new
    assert await is_leader(old) is False
    assert await leader_named_by(old) == new.name
    peers = await new.get("/v1/raft/peers")
    assert sorted((p["id"], p["voter"]) for p in peers) == [(n, True) for n in NAMES]

    healed = time.time()
    await cluster.wait_for(
        lambda: ran_on(new, old.name, healed),
        timeout=WAIT,
        what=f"{old.name} to run jobs again after healing",
    )

    # settle: stop the jobs, wait for the last runs to be recorded finished
    for name in JOBS:
        response = await new.request("POST", f"/v1/jobs/{name}/toggle")
        assert response.status_code == 200, response.text

    async def nothing_running() -> bool:
        for name in JOBS:
            if any(e["status"] == "running" for e in await history(new, name)):
                return False
        return True

    await cluster.wait_for(nothing_running, timeout=WAIT, what="the last runs to finish")

    # every server's history: the same, no duplicate (job, scheduled_at, node)
    views: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for server in servers:
        views[server.name] = {name: await history(server, name) for name in JOBS}
    for holder, view in views.items():
        for name, executions in view.items():
            keys = Counter((name, e["scheduled_at"], e["node_name"]) for e in executions)
            duplicates = {key: n for key, n in keys.items() if n > 1}
            assert duplicates == {}, f"{holder} shows duplicate runs {duplicates}"
    reference = views[new.name]
    for holder, view in views.items():
        for name in JOBS:
            mine = sorted((e["id"], e["status"]) for e in view[name])
            theirs = sorted((e["id"], e["status"]) for e in reference[name])
            assert mine == theirs, f"{holder} and {new.name} differ on {name}"

    # what really ran: at most one run per record, and every success did run
    lines = Counter((node, name) for node, name, _ in log_lines(log))
    for name in JOBS:
        for node in NAMES:
            records = [e for e in reference[name] if e["node_name"] == node]
            successes = sum(e["success"] for e in records)
            assert successes <= lines[(node, name)] <= len(records), (
                f"{name} on {node}: {lines[(node, name)]} runs in the log, "
                f"{len(records)} records of which {successes} succeeded"
            )


PINNED = "partition-pinned"  # runs on the cut-off node only, stopped while it is cut off
PROBE = "partition-probe"  # runs on the cut-off node only, throughout


async def test_a_run_recorded_failed_while_its_node_was_cut_off_never_runs_afterwards(
    tmp_path: Path,
) -> None:
    """The leader dispatches to a follower it cannot reach (gossip still has it alive):
    the dispatch frames written to the established connection wait in TCP's buffers and
    reach the node when the partition heals, seconds later. Each dispatch carries an
    expiry (the leader's clock + DISPATCH_EXPIRY): the node refuses one that arrives after
    it, and the leader records a dispatch of unknown outcome, or a run on a node gossip
    declared failed, as failed only once that expiry plus the allowed clock skew has
    passed. So a run recorded failed never runs afterwards (before the fix, every late
    frame ran, unrecorded, and with ``retries`` a fire could run twice on the node)."""
    log = tmp_path / "runs.log"
    with trio.fail_after(TEST_TIMEOUT):
        async with servers_in_namespaces(tmp_path) as (net, cluster):
            await _late_dispatch(net, cluster, log)


async def _late_dispatch(net: NetnsNetwork, cluster: Cluster, log: Path) -> None:
    servers = cluster.servers()
    leader = await cluster.leader(WAIT)
    cut_off = next(s for s in servers if s is not leader)
    for name in (PINNED, PROBE):
        spec = job(name, log, {"node": cut_off.name})
        response = await leader.request("POST", "/v1/jobs", json=spec)
        assert response.status_code == 201, response.text

    async def ran(name: str, since: float) -> bool:
        return any(
            e["success"] and e["node_name"] == cut_off.name and when(e["scheduled_at"]) > since
            for e in await history(leader, name)
        )

    start = time.time()
    await cluster.wait_for(lambda: ran(PINNED, start), timeout=WAIT, what="a pinned run")
    await net.isolate(netns_node(net, cut_off))
    cut = time.time()

    async def failed_after_cut() -> list[dict[str, Any]] | None:
        failed = [
            e
            for e in await history(leader, PINNED)
            if e["status"] == "failed" and when(e["scheduled_at"]) > cut + 0.5
        ]
        return failed if len(failed) >= 2 else None

    failed = await cluster.wait_for(
        failed_after_cut, timeout=WAIT, what="runs on the cut-off node recorded failed"
    )
    response = await leader.request("POST", f"/v1/jobs/{PINNED}/toggle")
    assert response.status_code == 200 and response.json()["disabled"], response.text
    await net.heal()
    heal = time.time()
    # the probe's first run after healing went over the same TCP connection,
    # after whatever the leader had sent while the node was cut off
    await cluster.wait_for(lambda: ran(PROBE, heal), timeout=WAIT, what="a probe run after healing")
    late = [
        round(at - cut, 2)
        for node, name, at in log_lines(log)
        if node == cut_off.name and name == PINNED and at > cut + FENCE_MARGIN
    ]
    if not late and (await cluster.leader(WAIT) is not leader or "stale term" in cut_off.stderr()):
        # a newer term fenced the late dispatches: the scenario did not happen as planned
        pytest.skip(f"inconclusive: the leader changed while {cut_off.name} was cut off")
    recorded = [
        (round(when(e["scheduled_at"]) - cut, 2), e.get("output", "").strip()) for e in failed
    ]
    assert late == [], (
        f"{cut_off.name} ran {PINNED} at {late} s after the cut (healed at "
        f"{heal - cut:.2f} s), though the leader recorded those runs failed: {recorded}"
    )
