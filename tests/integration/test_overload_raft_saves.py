"""A Raft driver whose inline save once hangs (a disk flushing under load) runs its next
saves in a worker thread, so that one more such save cannot block its event loop and
heartbeats; they come back to the Trio thread once the disk has been quick for a while."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import trio

from trickle.raft import driver as driver_module
from trickle.raft.driver import RaftDriver
from trickle.raft.messages import ConfState, Entry, NodeId, Snapshot
from trickle.raft.storage import MemoryStorage
from trickle.testing.raftnet import MemoryNetwork

ME = NodeId("solo")
TIMEOUT = 20  # seconds a test may take before it fails (never reached when it works)


class App:
    async def apply(self, entries: Sequence[Entry]) -> list[object]:
        return [None] * len(entries)

    async def restore(self, snapshot: Snapshot) -> None:
        pass

    async def snapshot(self) -> bytes:
        return b""


class Disk(MemoryStorage):
    """MemoryStorage that records the thread of each save; the next ``stalls`` saves
    block for ``stall`` seconds each."""

    def __init__(self) -> None:
        super().__init__()
        self.stalls = 0
        self.stall = 0.0
        self.threads: list[bool] = []  # per save: ran on the main (Trio) thread

    def save(self, **writes: Any) -> None:
        self.threads.append(threading.current_thread() is threading.main_thread())
        if self.stalls:
            self.stalls -= 1
            time.sleep(self.stall)
        super().save(**writes)


async def test_one_stalled_save_moves_the_next_ones_off_the_event_loop_for_a_while() -> None:
    disk = Disk()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            transport = MemoryNetwork().transport(ME)
            driver = RaftDriver(
                ME,
                storage=disk,
                transport=transport,
                app=App(),
                bootstrap=ConfState(voters=frozenset({ME})),
            )
            await nursery.start(transport.serve)
            await nursery.start(driver.run)
            await driver.wait_leader()

            async def saves(n: int) -> list[bool]:
                first = len(disk.threads)
                for i in range(n):
                    await driver.propose(b"x%d" % i)
                return disk.threads[first:]

            assert all(await saves(20))  # quick: inline
            disk.stalls, disk.stall = 1, 2 * driver_module.STALLED_SAVE_SECONDS
            after = await saves(10)
            assert after[0]  # the stalled one ran inline (nobody could know)...
            assert not any(after[1:])  # ... the next ones not, though the disk is quick
            later = await saves(2 * driver_module.SAVE_SAMPLES)
            assert all(later[-5:])  # back inline once it left the recent samples
            nursery.cancel_scope.cancel()
