"""The Raft driver keeps its leader while applying or saving takes longer than an election
timeout (a loaded host): heartbeats, responses and votes never wait behind them."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from typing import Any

import trio

from trickle.raft.core import Role, SoftState
from trickle.raft.driver import APPLY_BATCH_BYTES, APPLY_BATCH_ENTRIES, RaftDriver, _apply_batch
from trickle.raft.messages import ConfState, Entry, EntryKind, HardState, NodeId, Snapshot
from trickle.raft.storage import MemoryStorage
from trickle.testing.raftnet import MemoryNetwork

IDS = [NodeId("n1"), NodeId("n2"), NodeId("n3")]
SLOW = 2.0  # seconds a slow step takes: 4-8 election timeouts at the default settings


class KvApp:
    """Entries are b"key=value"."""

    def __init__(self) -> None:
        self.state: dict[bytes, bytes] = {}

    async def apply(self, entries: Sequence[Entry]) -> list[object]:
        for entry in entries:
            if entry.kind is EntryKind.NORMAL and entry.data:
                key, _, value = entry.data.partition(b"=")
                self.state[key] = value
        return [None] * len(entries)

    async def restore(self, snapshot: Snapshot) -> None:
        raise AssertionError("no snapshot is sent in these tests")

    async def snapshot(self) -> bytes:
        return b""


class Cluster:
    """Three drivers on one MemoryNetwork, 25 ms ticks, the default Raft settings."""

    def __init__(self, nursery: trio.Nursery, *, storage_in_thread: bool = False) -> None:
        self.nursery = nursery
        self.net = MemoryNetwork(rng=random.Random(0))
        self.storage: dict[NodeId, Any] = {i: MemoryStorage() for i in IDS}
        self.apps: dict[NodeId, KvApp] = {}
        self.drivers: dict[NodeId, RaftDriver] = {}
        self.soft_states: dict[NodeId, list[SoftState]] = {i: [] for i in IDS}
        self.app_class: type[KvApp] = KvApp
        self.storage_in_thread = storage_in_thread

    async def start_all(self) -> None:
        for n, node in enumerate(IDS):
            app = self.apps[node] = self.app_class()
            transport = self.net.transport(node)
            driver = self.drivers[node] = RaftDriver(
                node,
                storage=self.storage[node],
                transport=transport,
                app=app,
                bootstrap=ConfState(voters=frozenset(IDS)),
                rng=random.Random(n),
                storage_in_thread=self.storage_in_thread,
                on_soft_state=self.soft_states[node].append,
            )
            await self.nursery.start(transport.serve)
            await self.nursery.start(driver.run)

    async def leader(self) -> NodeId:
        while True:
            leaders = {await d.wait_leader() for d in self.drivers.values()}
            if len(leaders) == 1:
                (leader,) = leaders
                if self.drivers[leader].soft_state.role is Role.LEADER:
                    return leader
            await trio.sleep(0.025)

    def followers(self, leader: NodeId) -> list[NodeId]:
        return [i for i in IDS if i != leader]


class SlowApplyApp(KvApp):
    """Applying an entry whose data starts with b"slow" takes SLOW seconds (a big batch
    written to the store in a worker thread)."""

    async def apply(self, entries: Sequence[Entry]) -> list[object]:
        if any(e.data.startswith(b"slow") for e in entries):
            await trio.sleep(SLOW)
        return await super().apply(entries)


async def test_a_leader_and_followers_applying_for_longer_than_an_election_timeout_keep_the_leader(
    autojump_clock,
):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        cluster.app_class = SlowApplyApp
        await cluster.start_all()
        with trio.fail_after(30):
            leader = await cluster.leader()
            term = cluster.drivers[leader].soft_state.term
            marks = {n: len(s) for n, s in cluster.soft_states.items()}
            await cluster.drivers[leader].propose(b"slow=1")  # every node applies it slowly
            await cluster.drivers[leader].propose(b"after=1")
            for node in IDS:  # every node applied both
                await cluster.drivers[node].read_barrier()
        assert cluster.drivers[leader].soft_state.role is Role.LEADER
        assert {cluster.drivers[n].soft_state.term for n in IDS} == {term}
        assert not any(len(s) > marks[n] for n, s in cluster.soft_states.items()), (
            cluster.soft_states
        )
        assert all(cluster.apps[n].state[b"after"] == b"1" for n in IDS)
        nursery.cancel_scope.cancel()


class GatedStorage(MemoryStorage):
    """A MemoryStorage whose saves of entries holding b"slow" block, once ``gated``, until
    ``gate`` is set: a slow disk. (Such saves are big: the driver runs them in a worker
    thread.)"""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.gated = False

    def save(
        self,
        *,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: Snapshot | None = None,
    ) -> None:
        if self.gated and any(e.data.startswith(b"slow") for e in entries):
            self.gate.wait(30)
        super().save(hard_state=hard_state, entries=entries, snapshot=snapshot)


async def test_a_follower_whose_disk_stalls_goes_on_hearing_the_leader_and_does_not_campaign(
    autojump_clock,
):
    gate = threading.Event()
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        cluster.storage = {i: GatedStorage(gate) for i in IDS}
        await cluster.start_all()
        with trio.fail_after(30):
            leader = await cluster.leader()
            term = cluster.drivers[leader].soft_state.term
            stalled = cluster.followers(leader)[0]
            cluster.storage[stalled].gated = True
            # Only the stalled follower runs its big saves in a worker thread (as with
            # SQLite). The others save on the Trio thread: a save of theirs running for
            # real in a thread would let the MockClock jump past election timeouts.
            cluster.drivers[stalled]._in_thread = True
            # big enough to be saved in a worker thread (INLINE_SAVE_BYTES)
            await cluster.drivers[leader].propose(b"slow=" + b"x" * 300_000)
            # its save hangs for 4-8 election timeouts; the leader's heartbeats arrive
            await trio.sleep(SLOW)
            status = cluster.drivers[stalled].status()
            gate.set()
            await cluster.drivers[leader].propose(b"after=1")
        # it stepped them meanwhile: no election timeout, no campaign
        assert (status.role, status.leader, status.term) == (Role.FOLLOWER, leader, term)
        nursery.cancel_scope.cancel()


def test_applied_batches_are_bounded_in_entries_and_bytes():
    small = [Entry(1, i, EntryKind.NORMAL, b"x") for i in range(1, 201)]
    assert len(_apply_batch(small)) == APPLY_BATCH_ENTRIES
    big = [Entry(1, i, EntryKind.NORMAL, b"x" * (APPLY_BATCH_BYTES // 3)) for i in range(1, 9)]
    assert len(_apply_batch(big)) == 3  # a fourth would pass APPLY_BATCH_BYTES
    huge = [Entry(1, 1, EntryKind.NORMAL, b"x" * (2 * APPLY_BATCH_BYTES))]
    assert len(_apply_batch(huge)) == 1  # one at least
    assert RaftDriver  # the module under test imports
