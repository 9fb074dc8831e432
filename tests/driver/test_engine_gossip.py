"""Engines with gossip on trio's MockClock: members, their tags and statuses, and the
membership events, over the in-memory Raft and gossip networks."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import attrs
import pytest
import trio
import trio.testing

from trickle import Engine, EngineConfig, Job
from trickle.engine._engine import DEAD_NODE_RECLAIM_TIME
from trickle.engine.clock import TrioClock
from trickle.engine.events import EventKind
from trickle.errors import JoinFailed, NotAServer, ValidationError
from trickle.gossip.config import local
from trickle.raft.messages import NodeId
from trickle.testing.engines import EngineGroup
from trickle.testing.gossipnet import MemoryNetwork as GossipNetwork
from trickle.testing.raftnet import MemoryNetwork as RaftNetwork

START = datetime(2026, 1, 1, tzinfo=UTC)
NAMES = ("a", "b", "c")
PEERS = {name: f"{name}.invalid:6868" for name in NAMES}


def gossip_addr(name: str) -> tuple[str, int]:
    return (f"10.0.0.{NAMES.index(name) + 1}", 8946)


# the local profile with the reclaim time the engine gives every preset by default
RECLAIMING = attrs.evolve(local(), dead_node_reclaim_time=DEAD_NODE_RECLAIM_TIME)


class Cluster(EngineGroup):
    def __init__(self, nursery: trio.Nursery) -> None:
        super().__init__(nursery)
        self.raft = RaftNetwork()
        self.gossip = GossipNetwork(rng=random.Random(7))
        self.clock = TrioClock(START)

    async def start(self, name: str, *, tags: dict[str, str] | None = None) -> Engine:
        join = () if name == "a" else ("10.0.0.1:8946",)
        engine = Engine(
            EngineConfig(data_dir=None, node_name=name, peers=PEERS, join=join, tags=tags or {}),
            clock=self.clock,
            rng=random.Random(NAMES.index(name)),
            raft_transport=self.raft.transport(NodeId(name)),
            gossip_transport=self.gossip.transport(gossip_addr(name)),
            gossip_config=RECLAIMING,
        )
        return await self.run(name, engine)


MEMBER_EVENTS = [kind for kind in EventKind if kind.startswith("member_")]


async def wait_status(engine: Engine, name: str, status: str) -> None:
    """Until `name` has `status` in engine's members, checked after every member event."""
    with trio.fail_after(120), engine.subscribe(kinds=MEMBER_EVENTS) as events:
        while {m.name: m.status for m in engine.members()}.get(name) != status:
            await events.receive()


async def test_members_come_from_gossip_with_each_nodes_tags(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        for name in NAMES:
            await cluster.start(name, tags={"zone": f"z-{name}"})
        a = cluster.engines["a"]
        for name in NAMES:
            await wait_status(a, name, "alive")
        members = {m.name: m for m in a.members()}
        assert set(members) == set(NAMES)
        c = members["c"]
        assert (c.addr, c.port) == gossip_addr("c")
        assert c.tags["zone"] == "z-c"
        assert c.tags["server"] == "true" and c.tags["dkron_server"] == "true"
        assert c.tags["region"] == "global" and c.tags["dc"] == "dc1"
        assert "version" in c.tags
        assert a.gossip_address == gossip_addr("a")
        nursery.cancel_scope.cancel()


async def test_a_killed_node_is_failed_and_a_leaving_one_left(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        for name in NAMES:
            await cluster.start(name)
        a = cluster.engines["a"]
        for name in NAMES:
            await wait_status(a, name, "alive")
        seen: list[tuple[EventKind, str]] = []

        async def record(task_status: trio.TaskStatus[None]) -> None:
            async with a.subscribe(kinds=MEMBER_EVENTS) as sub:
                task_status.started()
                async for event in sub:
                    seen.append((event.kind, event.data["member"]))

        await nursery.start(record)
        assert await cluster.engines["b"].leave(timeout=10)
        await cluster.stop("b")
        await wait_status(a, "b", "left")

        cluster.gossip.kill(gossip_addr("c"))
        await cluster.stop("c")
        await wait_status(a, "c", "failed")
        await trio.testing.wait_all_tasks_blocked()  # the recorder has read what was published
        assert (EventKind.MEMBER_LEFT, "b") in seen
        assert (EventKind.MEMBER_FAILED, "c") in seen
        assert (EventKind.MEMBER_FAILED, "b") not in seen  # left is not failed
        nursery.cancel_scope.cancel()


async def test_tags_reach_other_nodes_on_restart(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        for name in NAMES:
            await cluster.start(name)
        a = cluster.engines["a"]
        await wait_status(a, "c", "alive")
        await cluster.stop("c")
        cluster.gossip.kill(gossip_addr("c"))
        await wait_status(a, "c", "failed")
        await cluster.start("c", tags={"gpu": "true"})
        with trio.fail_after(120), a.subscribe(kinds=MEMBER_EVENTS) as events:
            while True:
                c = next(m for m in a.members() if m.name == "c")
                if c.status == "alive" and c.tags.get("gpu") == "true":
                    break
                await events.receive()
        nursery.cancel_scope.cancel()


def test_bad_gossip_settings_name_the_field() -> None:
    cases = {
        "join": {"join": ["host:99999"]},
        "encrypt": {"encrypt": ["not a key"]},
        "gossip_profile": {"gossip_profile": "moon"},
        "gossip_bind": {"gossip_bind": "nohostport"},
    }
    for field, kwargs in cases.items():
        with pytest.raises(ValidationError) as caught:
            EngineConfig(data_dir=None, **kwargs)  # type: ignore[arg-type]
        assert caught.value.field == field


async def test_an_agent_gossips_and_refuses_job_operations(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        a = await cluster.start("a")
        agent = Engine(
            EngineConfig(
                data_dir=None,
                node_name="x",
                server=False,
                join=("10.0.0.1:8946",),
                tags={"gpu": "1"},
            ),
            clock=cluster.clock,
            raft_transport=cluster.raft.transport(NodeId("x")),
            gossip_transport=cluster.gossip.transport(("10.0.0.9", 8946)),
            gossip_config=local(),
        )
        await nursery.start(agent.run)
        await wait_status(a, "x", "alive")
        x = next(m for m in a.members() if m.name == "x")
        assert x.tags["gpu"] == "1" and "server" not in x.tags
        assert {m.name for m in agent.members()} >= {"a", "x"}
        assert not agent.is_leader() and agent.leader() is None
        with pytest.raises(NotAServer):
            await agent.put_job(Job(name="j", schedule="@every 1h"))
        with pytest.raises(NotAServer):
            await agent.list_jobs()
        nursery.cancel_scope.cancel()


async def test_an_agent_without_gossip_does_not_start() -> None:
    with pytest.raises(ValidationError) as caught:
        async with Engine(EngineConfig(data_dir=None, server=False, raft_bind="127.0.0.1:0")):
            pass
    assert caught.value.field == "join"


def test_an_agent_has_no_peers() -> None:
    with pytest.raises(ValidationError) as caught:
        EngineConfig(data_dir=None, server=False, join=("h",), peers={"a": "h:1"})
    assert caught.value.field == "peers"


async def test_an_agent_without_an_rpc_listener_does_not_start() -> None:
    agent = Engine(EngineConfig(data_dir=None, node_name="x", server=False, join=("h",)))
    with pytest.raises(ValidationError) as caught:
        async with agent:
            pass
    assert caught.value.field == "raft_bind"


async def test_a_node_that_cannot_join_within_join_retry_max_stops_with_join_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = GossipNetwork(rng=random.Random(1))
    engine = Engine(
        EngineConfig(
            data_dir=None,
            node_name="lonely",
            join=("10.9.9.9:8946",),  # nobody there
            join_retry_max=3,
            join_retry_interval=1.0,
        ),
        raft_transport=RaftNetwork().transport(NodeId("lonely")),
        gossip_transport=network.transport(("10.0.0.7", 8946)),
        gossip_config=local(),
    )
    with pytest.raises(BaseExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            await trio.sleep_forever()
    leaf: BaseException = caught.value
    while isinstance(leaf, BaseExceptionGroup):
        [leaf] = leaf.exceptions
    assert isinstance(leaf, JoinFailed)
    assert "none of 10.9.9.9:8946 answered in 3 attempts" in str(leaf)


async def test_a_node_joining_under_a_name_already_taken_stops_with_join_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two nodes of one host started without --node-name share the host name: the second
    must say so and stop, not run half-joined and ignored by everyone."""
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        await cluster.start("a")
        twin = Engine(
            EngineConfig(data_dir=None, node_name="a", join=("10.0.0.1:8946",)),
            raft_transport=RaftNetwork().transport(NodeId("a")),
            gossip_transport=cluster.gossip.transport(("10.0.0.9", 8946)),
            gossip_config=local(),
        )
        with pytest.raises(BaseExceptionGroup) as caught:
            async with trio.open_nursery() as inner:
                await inner.start(twin.run)
                await trio.sleep_forever()
        leaf: BaseException = caught.value
        while isinstance(leaf, BaseExceptionGroup):
            [leaf] = leaf.exceptions
        assert isinstance(leaf, JoinFailed)
        assert "another node named 'a' is already in the cluster, at 10.0.0.1:8946" in str(leaf)
        [me] = [m for m in cluster.engines["a"].members() if m.name == "a"]
        assert me.addr == "10.0.0.1"  # the first owner of the name keeps it
        nursery.cancel_scope.cancel()


async def test_a_dead_node_restarted_at_another_address_is_taken_back_under_its_name(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A container restarted with a new IP keeps its node name: once the old address has
    been dead for DEAD_NODE_RECLAIM_TIME, the name moves to the new address."""
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        a = await cluster.start("a")
        await cluster.start("b")
        await wait_status(a, "b", "alive")
        await cluster.stop("b")
        await wait_status(a, "b", "failed")
        moved = Engine(
            EngineConfig(data_dir=None, node_name="b", peers=PEERS, join=("10.0.0.1:8946",)),
            clock=cluster.clock,
            rng=random.Random(99),
            raft_transport=cluster.raft.transport(NodeId("b")),
            gossip_transport=cluster.gossip.transport(("10.0.0.42", 8946)),
            gossip_config=RECLAIMING,
        )
        await nursery.start(moved.run)
        with trio.fail_after(120):
            while True:
                [b] = [m for m in a.members() if m.name == "b"]
                if b.status == "alive" and b.addr == "10.0.0.42":
                    break
                await trio.sleep(1)
        nursery.cancel_scope.cancel()
