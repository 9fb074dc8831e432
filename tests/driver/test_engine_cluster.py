"""Three Engines as one Raft cluster on trio's MockClock, over the in-memory network."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
import trio
import trio.testing

from trickle import Engine, EngineConfig, ExecutionContext, Job
from trickle.engine.clock import TrioClock
from trickle.errors import JobNotFound, NotFound
from trickle.raft.messages import NodeId
from trickle.testing.engines import EngineGroup
from trickle.testing.raftnet import MemoryNetwork

START = datetime(2026, 1, 1, tzinfo=UTC)
NAMES = ("a", "b", "c")
PEERS = {name: f"{name}.invalid:6868" for name in NAMES}  # unused: the network is injected


class Cluster(EngineGroup):
    def __init__(self, nursery: trio.Nursery) -> None:
        super().__init__(nursery)
        self.network = MemoryNetwork()
        self.runs: list[tuple[str, str, datetime | None]] = []  # (node, job, scheduled_at)
        self.ran = trio.Event()  # set at the first run
        self.clock = TrioClock(START)  # one wall clock for all, as servers share real time

    async def start(self, name: str, seed: int) -> Engine:
        engine = Engine(
            EngineConfig(data_dir=None, node_name=name, peers=PEERS),
            clock=self.clock,
            rng=random.Random(seed),
            raft_transport=self.network.transport(NodeId(name)),
        )

        async def record(ctx: ExecutionContext) -> None:
            self.runs.append((name, ctx.execution.job_name, ctx.execution.scheduled_at))
            self.ran.set()

        engine.register_executor("record", record)
        return await self.run(name, engine)


async def test_a_write_on_a_follower_is_read_everywhere(autojump_clock: trio.testing.MockClock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        for i, name in enumerate(NAMES):
            await cluster.start(name, i)
        leader = await cluster.leader()
        follower = next(e for e in cluster.engines.values() if e is not leader)
        stored, created = await follower.put_job(
            Job(name="j", schedule="@every 1h", executor="record")
        )
        assert created and stored.name == "j"
        for engine in cluster.engines.values():  # linearizable: no waiting for replication
            assert (await engine.get_job("j")).schedule == "@every 1h"
        assert {m.name for m in follower.members()} == set(NAMES)
        assert follower.leader() is not None and follower.leader().name == leader.node_name
        await follower.delete_job("j")
        for engine in cluster.engines.values():
            try:
                await engine.get_job("j")
            except JobNotFound:
                continue
            raise AssertionError(f"{engine.node_name} still has the deleted job")
        nursery.cancel_scope.cancel()


async def test_a_manual_run_asked_of_a_follower_runs_on_the_leader(
    autojump_clock: trio.testing.MockClock,
):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        for i, name in enumerate(NAMES):
            await cluster.start(name, i)
        leader = await cluster.leader()
        follower = next(e for e in cluster.engines.values() if e is not leader)
        await follower.put_job(Job(name="m", schedule="@manually", executor="record"))
        await follower.run_job("m")
        await cluster.ran.wait()
        assert cluster.runs == [(leader.node_name, "m", None)]
        nursery.cancel_scope.cancel()


async def test_when_the_leader_dies_the_next_one_fires_every_schedule_once(
    autojump_clock: trio.testing.MockClock,
):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        for i, name in enumerate(NAMES):
            await cluster.start(name, i)
        first = await cluster.leader()
        await first.put_job(Job(name="tick", schedule="@every 10s", executor="record"))
        await trio.sleep(31)
        await cluster.stop(first.node_name)
        second = await cluster.leader()
        assert second is not first
        await trio.sleep(60)
        # stop the schedule and let the last fire finish: a fire whose execution is
        # committed but whose executor has not been called yet would be in one view only
        await second.toggle_job("tick")
        while True:
            survivor_view, _ = await second.list_executions("tick", end=1000)
            if not any(e.running for e in survivor_view):
                break
            await trio.sleep(1)
        nursery.cancel_scope.cancel()

    fires = [at for _node, job, at in cluster.runs if job == "tick"]
    assert len(fires) == len(set(fires)), "a fire ran twice"
    assert {node for node, _job, _at in cluster.runs} == {first.node_name, second.node_name}
    # every 10 s from the first fire to the last ran, across the failover
    first_fire, last_fire = min(fires), max(fires)
    expected = int((last_fire - first_fire).total_seconds() // 10) + 1
    assert len(fires) == expected
    assert last_fire >= START + timedelta(seconds=80)
    # and the new leader's history holds them all
    assert {e.scheduled_at for e in survivor_view} == set(fires)


async def test_raft_peers_lists_the_servers_and_remove_peer_shrinks_the_configuration(
    autojump_clock: trio.testing.MockClock,
):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        for i, name in enumerate(NAMES):
            await cluster.start(name, i)
        leader = await cluster.leader()
        peers = leader.raft_peers()
        assert [p.name for p in peers] == list(NAMES)
        assert all(p.voter for p in peers)
        assert [p.name for p in peers if p.leader] == [leader.node_name]
        assert all(p.match_index is not None for p in peers)  # the leader tracks them
        gone = next(n for n in NAMES if n != leader.node_name)
        await cluster.stop(gone)
        follower = next(e for n, e in cluster.engines.items() if n not in (gone, leader.node_name))
        await follower.remove_raft_peer(gone)  # asked on a follower: the leader does it
        # applied on the asking server when the call returns
        assert gone not in {p.name for p in follower.raft_peers()}
        with pytest.raises(NotFound):
            await leader.remove_raft_peer("nobody")
        # two servers still commit
        await follower.put_job(Job(name="after", schedule="@every 1h", executor="record"))
        assert (await leader.get_job("after")).name == "after"
        nursery.cancel_scope.cancel()


async def test_every_server_publishes_leader_changed_when_the_leader_moves(
    autojump_clock: trio.testing.MockClock,
):
    from trickle import EventKind

    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        for i, name in enumerate(NAMES):
            await cluster.start(name, i)
        first = await cluster.leader()
        watcher = next(e for e in cluster.engines.values() if e is not first)
        with watcher.subscribe(kinds=[EventKind.LEADER_CHANGED]) as sub, trio.fail_after(60):
            await cluster.stop(first.node_name)
            leaders = []
            while not leaders or leaders[-1] in (None, first.node_name):
                leaders.append((await sub.receive()).data["leader"])
        second = await cluster.leader()
        assert leaders[-1] == second.node_name != first.node_name
        nursery.cancel_scope.cancel()
