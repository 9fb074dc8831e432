"""A server that launched a run its own Raft log had not yet received, then stopped, fails
that run after it restarts: its first orphan pass cannot see the run (the intent is not
applied there yet), so it passes again after a read barrier, once everything committed
before the restart is applied. No leader fails the run for it: the restarted node says it
knows the run (its launch journal), and a node that knows a run settles it itself.

Real time (SQLite writes in worker threads do not mix with an autojumping MockClock),
three servers with data dirs over the in-memory Raft and gossip networks."""

from __future__ import annotations

import random
from pathlib import Path

import trio

from trickle import Engine, EngineConfig, ExecutionContext, Job
from trickle.gossip.config import local
from trickle.raft.messages import Message, NodeId
from trickle.testing.engines import EngineGroup, wait_alive
from trickle.testing.gossipnet import MemoryNetwork as GossipNetwork
from trickle.testing.raftnet import MemoryNetwork as RaftNetwork
from trickle.testing.raftnet import MemoryTransport

SERVERS = ("a", "b", "c")
PEERS = {name: f"{name}.invalid:6868" for name in SERVERS}
ADDRESSES = {"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"}
WAIT = 30  # seconds: bounds a hang; the steps take well under a second each


class LaggingRaftNetwork(RaftNetwork):
    """Raft messages to the nodes in ``deaf`` are dropped; RPC calls (the dispatch of a
    run) still reach them. Their logs fall behind while they keep taking runs."""

    def __init__(self) -> None:
        super().__init__()
        self.deaf: set[str] = set()

    def _route(self, message: Message) -> MemoryTransport | None:
        if message.dst in self.deaf:
            return None
        return super()._route(message)


class Cluster(EngineGroup):
    def __init__(self, nursery: trio.Nursery, data_dir: Path) -> None:
        super().__init__(nursery)
        self.raft = LaggingRaftNetwork()
        self.gossip = GossipNetwork(rng=random.Random(3))
        self.data_dir = data_dir
        self.started = trio.Event()  # a "hang" run began

    async def start(self, name: str) -> Engine:
        engine = Engine(
            EngineConfig(
                data_dir=self.data_dir / name,
                node_name=name,
                peers=PEERS,
                join=() if name == "a" else (f"{ADDRESSES['a']}:8946",),
                tags={"box": name},
            ),
            rng=random.Random(SERVERS.index(name)),
            raft_transport=self.raft.transport(NodeId(name)),
            gossip_transport=self.gossip.transport((ADDRESSES[name], 8946)),
            gossip_config=local(),
        )

        async def hang(ctx: ExecutionContext) -> None:
            ctx.output.write("started\n")
            self.started.set()
            await trio.sleep_forever()

        engine.register_executor("hang", hang)
        return await self.run(name, engine)


async def run_on_a_lagging_follower_then_restart_it(tmp_path: Path) -> tuple[str, str]:
    """(the follower, the output of the job's one execution once it finished): it ran on
    a follower whose log lagged, which stopped and started again under it."""
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            cluster = Cluster(nursery, tmp_path)
            for name in SERVERS:
                await cluster.start(name)
            leader = await cluster.leader()
            await wait_alive(leader, set(SERVERS))
            lagging = next(name for name in SERVERS if name != leader.node_name)
            cluster.raft.deaf.add(lagging)  # it takes runs; its log hears nothing more
            await leader.put_job(
                Job(name="h", schedule="@manually", executor="hang", tags={"box": f"{lagging}:1"})
            )
            await leader.run_job("h")
            await cluster.started.wait()
            [running], _ = await leader.list_executions("h")
            assert running.node_name == lagging and running.finished_at is None
            assert "h" not in applied_jobs(cluster.engines[lagging])  # the log lags indeed
            await cluster.stop(lagging)
            cluster.raft.deaf.clear()
            await cluster.start(lagging)
            with leader.subscribe(kinds=["execution_finished"], jobs=["h"]) as events:
                while True:
                    [execution], _ = await leader.list_executions("h")
                    if execution.finished_at is not None:
                        break
                    await events.receive()
            assert not execution.success and execution.node_name == lagging
            nursery.cancel_scope.cancel()
    return lagging, execution.output


def applied_jobs(engine: Engine) -> set[str]:
    """The names of the jobs ``engine`` has applied so far (a local read: no barrier)."""
    return set(engine._fsm.jobs)


async def test_a_run_launched_before_its_intent_reached_the_nodes_log_is_failed_after_restart(
    tmp_path: Path,
) -> None:
    lagging, output = await run_on_a_lagging_follower_then_restart_it(tmp_path)
    assert f"node {lagging} stopped while the execution was running" in output
