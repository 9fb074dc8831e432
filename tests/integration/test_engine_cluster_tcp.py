"""Three Engines as a Raft cluster over real TCP on 127.0.0.1, with SQLite data dirs."""

from __future__ import annotations

from pathlib import Path

import trio

from trickle import Engine, EngineConfig, Job
from trickle.testing.engines import EngineGroup

NAMES = ("a", "b", "c")
WAIT = 20  # seconds: elections and replication are far quicker; this only bounds a hang


def shell_job(name: str) -> Job:
    return Job(
        name=name, schedule="@every 1h", executor="shell", executor_config={"command": "true"}
    )


class TcpCluster(EngineGroup):
    """Servers on port 0: each one's peers learn its address once it is bound."""

    def __init__(self, nursery: trio.Nursery, tmp_path: Path) -> None:
        super().__init__(nursery)
        self.tmp_path = tmp_path

    async def start(self, name: str) -> Engine:
        engine = Engine(
            EngineConfig(
                data_dir=self.tmp_path / name,
                node_name=name,
                raft_bind="127.0.0.1:0",
                peers={n: "127.0.0.1:1" for n in NAMES},  # replaced by wire_peers()
            )
        )
        await self.run(name, engine)
        self.wire_peers()
        return engine

    def wire_peers(self) -> None:
        addresses = {}
        for name, engine in self.engines.items():
            if engine.running and engine.raft_address is not None:
                host, port = engine.raft_address
                addresses[name] = f"{host}:{port}"
        for name, engine in self.engines.items():
            if engine.running:
                engine.update_peers({n: a for n, a in addresses.items() if n != name})


async def test_a_cluster_survives_its_leader_and_the_leader_catches_up_after(tmp_path: Path):
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            cluster = TcpCluster(nursery, tmp_path)
            for name in NAMES:
                await cluster.start(name)
            first = await cluster.leader()
            follower = next(e for e in cluster.engines.values() if e is not first)
            await follower.put_job(shell_job("one"))

            # the leader dies; the others elect a new one and keep taking writes
            await cluster.stop(first.node_name)
            second = await cluster.leader()
            assert second is not first
            await second.put_job(shell_job("two"))

            # it comes back on its data dir (on a new port) and catches up
            back = await cluster.start(first.node_name)
            assert [j.name for j in (await back.list_jobs())[0]] == ["one", "two"]
            nursery.cancel_scope.cancel()
