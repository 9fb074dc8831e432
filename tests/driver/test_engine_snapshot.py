"""A server that falls behind a compacted log catches up from a snapshot of the whole
store (a SQLite image streamed from disk in chunks), on trio's MockClock."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import attrs
import pytest
import trio
import trio.testing

from trickle import Engine, EngineConfig, ExecutionContext, Job
from trickle.engine import _engine
from trickle.engine.clock import TrioClock
from trickle.raft.messages import NodeId
from trickle.raft.storage import SnapshotFile
from trickle.testing.engines import EngineGroup
from trickle.testing.raftnet import MemoryNetwork as RaftNetwork

START = datetime(2026, 1, 1, tzinfo=UTC)
SERVERS = ("a", "b", "c")
PEERS = {name: f"{name}.invalid:6868" for name in SERVERS}


class Servers(EngineGroup):
    def __init__(self, nursery: trio.Nursery) -> None:
        super().__init__(nursery)
        self.raft = RaftNetwork()
        self.clock = TrioClock(START)

    async def start(self, name: str) -> Engine:
        engine = Engine(
            EngineConfig(
                data_dir=None, node_name=name, server=True, peers=PEERS, snapshot_entries=4
            ),
            clock=self.clock,
            rng=random.Random(SERVERS.index(name)),
            raft_transport=self.raft.transport(NodeId(name)),
        )

        async def hello(ctx: ExecutionContext) -> None:
            ctx.output.write(f"hello from {name}\n")

        engine.register_executor("hello", hello)
        return await self.run(name, engine)


async def test_a_server_behind_a_compacted_log_catches_up_from_a_snapshot(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
):
    # keep no entries below a snapshot: a server that missed any must take the snapshot
    monkeypatch.setattr(
        _engine, "RAFT_CONFIG", attrs.evolve(_engine.RAFT_CONFIG, trailing_entries=0)
    )
    exported: list[SnapshotFile] = []
    export = _engine.Store.export_image_indexed

    def recording_export(self: _engine.Store) -> tuple[int, SnapshotFile]:
        index, image = export(self)
        exported.append(image)
        return index, image

    imported: list[int] = []
    import_image = _engine.Store.import_image

    def recording_import(self: _engine.Store, image: bytes | SnapshotFile) -> int:
        assert image[:16] == b"SQLite format 3\x00"  # received in chunks, as the image
        imported.append(import_image(self, image))
        return imported[-1]

    monkeypatch.setattr(_engine.Store, "export_image_indexed", recording_export)
    monkeypatch.setattr(_engine.Store, "import_image", recording_import)
    async with trio.open_nursery() as nursery:
        servers = Servers(nursery)
        for name in SERVERS:
            await servers.start(name)
        leader = await servers.leader()
        behind = next(n for n in SERVERS if n != leader.node_name)
        await servers.stop(behind)
        with leader.subscribe(kinds=["execution_finished"]) as finished:
            for i in range(12):
                await leader.put_job(Job(name=f"job{i}", schedule="@manually", executor="hello"))
                await leader.run_job(f"job{i}")
            with trio.fail_after(60):
                for _ in range(12):
                    await finished.receive()
        assert exported, "the leader took snapshots (and compacted its log)"
        assert all(isinstance(image, SnapshotFile) for image in exported)
        restarted = await servers.start(behind)  # a new, empty in-memory server
        with trio.fail_after(60):
            await restarted.list_jobs()  # a linearizable read: waits until caught up
        assert imported, "the restarted server installed a snapshot"
        assert [j.name for j in (await restarted.list_jobs())[0]] == [
            j.name for j in (await leader.list_jobs())[0]
        ]
        for i in range(12):
            mine, _ = await restarted.list_executions(f"job{i}")
            theirs, _ = await leader.list_executions(f"job{i}")
            assert [(e.id, e.success, e.output) for e in mine] == [
                (e.id, e.success, e.output) for e in theirs
            ]
        nursery.cancel_scope.cancel()
