"""Clusters formed through gossip on trio's MockClock: bootstrap-expect, servers that join
a running cluster (learner, then voter), and a server that leaves (removed from Raft)."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime

import trio
import trio.testing

from trickle import Engine, EngineConfig, Job
from trickle.engine.clock import TrioClock
from trickle.gossip.config import local
from trickle.raft.messages import NodeId
from trickle.testing.gossipnet import MemoryNetwork as GossipNetwork
from trickle.testing.raftnet import MemoryNetwork as RaftNetwork

START = datetime(2026, 1, 1, tzinfo=UTC)
NAMES = ("a", "b", "c")


class Cluster:
    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.raft = RaftNetwork()
        self.gossip = GossipNetwork(rng=random.Random(5))
        self.clock = TrioClock(START)
        self.engines: dict[str, Engine] = {}
        self.scopes: dict[str, trio.CancelScope] = {}
        self.stopped: dict[str, trio.Event] = {}

    @staticmethod
    def address(name: str) -> tuple[str, int]:
        return (f"10.0.1.{NAMES.index(name) + 1}", 8946)

    def start_soon(self, name: str, *, expect: int = 0, join: bool = True) -> None:
        """Start a server in the background (bootstrap-expect servers wait for each other
        before they are ready, so they cannot be started one after the other)."""
        engine = Engine(
            EngineConfig(
                data_dir=None,
                node_name=name,
                gossip_bind="0.0.0.0:8946",
                join=(f"{self.address('a')[0]}:8946",) if join and name != "a" else (),
                bootstrap_expect=expect,
            ),
            clock=self.clock,
            rng=random.Random(NAMES.index(name)),
            raft_transport=self.raft.transport(NodeId(name)),
            gossip_transport=self.gossip.transport(self.address(name)),
            gossip_config=local(),
        )
        scope = trio.CancelScope()
        stopped = trio.Event()

        async def run() -> None:
            try:
                with scope:
                    await engine.run()
            finally:
                stopped.set()

        self.engines[name], self.scopes[name], self.stopped[name] = engine, scope, stopped
        self.nursery.start_soon(run)

    async def stop(self, name: str) -> None:
        self.scopes[name].cancel()
        await self.stopped[name].wait()

    async def until(self, done: Callable[[], bool], seconds: float = 120) -> None:
        with trio.fail_after(seconds):
            while not done():  # noqa: ASYNC110 (Raft's configuration has no event)
                await trio.sleep(0.1)

    def leader(self) -> Engine | None:
        leaders = [e for e in self.engines.values() if e.running and e.is_leader()]
        return leaders[0] if len(leaders) == 1 else None

    def voters(self) -> set[str]:
        leader = self.leader()
        if leader is None:
            return set()
        return {p.name for p in leader.raft_peers() if p.voter}


async def test_bootstrap_expect_forms_one_cluster_of_all_the_servers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        for name in NAMES:
            cluster.start_soon(name, expect=3)
        await cluster.until(lambda: cluster.voters() == set(NAMES))
        leader = cluster.leader()
        assert leader is not None
        await leader.put_job(
            Job(
                name="j",
                schedule="@every 1h",
                executor="shell",
                executor_config={"command": "true"},
            )
        )
        for engine in cluster.engines.values():
            assert (await engine.get_job("j")).name == "j"
        nursery.cancel_scope.cancel()


async def test_servers_that_join_become_voters_and_one_that_leaves_is_removed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        cluster.start_soon("a")  # forms a cluster alone
        await cluster.until(lambda: cluster.voters() == {"a"})
        cluster.start_soon("b")
        cluster.start_soon("c")
        await cluster.until(lambda: cluster.voters() == set(NAMES))
        leader = cluster.leader()
        assert leader is not None
        await leader.put_job(
            Job(
                name="j",
                schedule="@every 1h",
                executor="shell",
                executor_config={"command": "true"},
            )
        )
        leaving = next(n for n in NAMES if cluster.engines[n] is not leader)
        assert await cluster.engines[leaving].leave(timeout=10)
        await cluster.stop(leaving)
        await cluster.until(lambda: cluster.voters() == set(NAMES) - {leaving})
        # the two left commit on their own
        leader = cluster.leader()
        assert leader is not None
        await leader.put_job(
            Job(
                name="k",
                schedule="@every 1h",
                executor="shell",
                executor_config={"command": "true"},
            )
        )
        nursery.cancel_scope.cancel()


async def test_a_leader_that_leaves_hands_over_and_is_removed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        for name in NAMES:
            cluster.start_soon(name, expect=3)
        await cluster.until(lambda: cluster.voters() == set(NAMES))
        old = cluster.leader()
        assert old is not None
        assert await old.leave(timeout=10)
        await cluster.stop(old.node_name)
        await cluster.until(lambda: cluster.voters() == set(NAMES) - {old.node_name})
        nursery.cancel_scope.cancel()
