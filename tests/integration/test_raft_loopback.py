"""Three Raft drivers over real TCP on loopback with durable SQLite logs: commit, lose the
leader, commit on the new one, bring the old one back and watch it catch up."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgpack
import trio

from trickle.raft.core import Role
from trickle.raft.driver import RaftDriver
from trickle.raft.messages import ConfState, Entry, EntryKind, NodeId, Snapshot
from trickle.raft.sqlstore import SqliteRaftStorage
from trickle.raft.transport import TcpTransport

IDS = [NodeId("s1"), NodeId("s2"), NodeId("s3")]
TIMEOUT = 30  # seconds for a step; a healthy run takes a fraction of a second


class KvApp:
    def __init__(self) -> None:
        self.state: dict[bytes, bytes] = {}

    async def apply(self, entries: Sequence[Entry]) -> list[object]:
        out: list[object] = []
        for entry in entries:
            if entry.kind is EntryKind.NORMAL and entry.data:
                key, _, value = entry.data.partition(b"=")
                self.state[key] = value
                out.append(value)
            else:
                out.append(None)
        return out

    async def restore(self, snapshot: Snapshot) -> None:
        self.state = dict(msgpack.unpackb(snapshot.data))

    async def snapshot(self) -> bytes:
        return msgpack.packb(self.state)


class Server:
    """One node: its TCP transport, SQLite storage and driver in one cancel scope."""

    def __init__(self, node: NodeId, data_dir: Path) -> None:
        self.node = node
        self.data_dir = data_dir
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        self.scope = trio.CancelScope()
        self.driver: RaftDriver | None = None
        self.app = KvApp()
        self.transport: TcpTransport | None = None

    async def run(self, peers: dict[NodeId, tuple[str, int]] | None, task_status) -> None:
        self.scope = trio.CancelScope()
        self.app = KvApp()
        storage = SqliteRaftStorage(self.data_dir / f"{self.node}.db")
        try:
            with self.scope:
                transport = self.transport = TcpTransport(self.node, bind=self.address)
                async with trio.open_nursery() as nursery:
                    self.address = await nursery.start(transport.serve)
                    if peers is not None:
                        transport.set_peers(peers)
                    self.driver = RaftDriver(
                        self.node,
                        storage=storage,
                        transport=transport,
                        app=self.app,
                        bootstrap=ConfState(voters=frozenset(IDS)),
                        snapshot_entries=50,
                    )
                    await nursery.start(self.driver.run)
                    task_status.started()
        finally:
            storage.close()


async def test_three_nodes_over_tcp_fail_over_and_catch_up(tmp_path):
    servers = {i: Server(i, tmp_path) for i in IDS}
    async with trio.open_nursery() as nursery:
        with trio.fail_after(TIMEOUT):
            for server in servers.values():
                await nursery.start(server.run, None)
            peers = {i: s.address for i, s in servers.items()}
            for server in servers.values():
                assert server.transport is not None
                server.transport.set_peers(peers)
            drivers = {i: s.driver for i, s in servers.items()}
            old = await drivers[IDS[0]].wait_leader()
            assert await drivers[old].propose(b"before=1") == b"1"
            follower = next(i for i in IDS if i != old)
            for n in range(60):  # enough for a snapshot and compaction (every 50 entries)
                assert await drivers[follower].propose(f"k{n % 5}={n}".encode()) == str(n).encode()

        # the leader's task dies; the other two elect a new leader and commit
        servers[old].scope.cancel()
        rest = [i for i in IDS if i != old]
        with trio.fail_after(TIMEOUT):
            for i in rest:
                await drivers[i].wait_state(lambda s: s.leader not in (None, old))
            new = drivers[rest[0]].soft_state.leader
            assert new in rest
            assert await drivers[new].propose(b"after=2") == b"2"
            assert drivers[new].soft_state.role is Role.LEADER

        # the old leader restarts from its SQLite file on its old address and catches up
        with trio.fail_after(TIMEOUT):
            await nursery.start(servers[old].run, {i: s.address for i, s in servers.items()})
            back = servers[old].driver
            assert back is not None
            await back.read_barrier()
        assert servers[old].app.state == servers[new].app.state
        assert servers[old].app.state[b"after"] == b"2"
        assert servers[old].app.state[b"before"] == b"1"
        nursery.cancel_scope.cancel()
