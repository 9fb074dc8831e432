"""Where the Raft driver runs its saves (real threads and clock): quick small saves on the
Trio thread, slow or big ones (and those after a stalled one) in a worker thread, and back
once the disk is quick again."""

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
    """MemoryStorage that records the thread of each save and can be made slow: every
    save (``slow``), or only the next ``stalls`` saves, by ``stall`` seconds each."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = 0.0  # seconds each save blocks
        self.stalls = 0
        self.stall = 0.0
        self.threads: list[bool] = []  # per save: ran on the main (Trio) thread

    def save(self, **writes: Any) -> None:
        self.threads.append(threading.current_thread() is threading.main_thread())
        if self.slow:
            time.sleep(self.slow)  # a slow disk, blocking whoever calls
        if self.stalls:
            self.stalls -= 1
            time.sleep(self.stall)  # a disk flushing under load, once
        super().save(**writes)


async def one_node(disk: Disk, nursery: trio.Nursery, *, inline_saves: bool = True) -> RaftDriver:
    transport = MemoryNetwork().transport(ME)
    driver = RaftDriver(
        ME,
        storage=disk,
        transport=transport,
        app=App(),
        bootstrap=ConfState(voters=frozenset({ME})),
        inline_saves=inline_saves,
    )
    await nursery.start(transport.serve)
    await nursery.start(driver.run)
    await driver.wait_leader()
    return driver


async def proposals(driver: RaftDriver, disk: Disk, n: int) -> list[bool]:
    """Threads of the saves of ``n`` proposals, one at a time."""
    first = len(disk.threads)
    for i in range(n):
        await driver.propose(b"x%d" % i)
    return disk.threads[first:]


async def test_quick_saves_run_on_the_trio_thread_and_slow_ones_move_to_a_worker() -> None:
    disk = Disk()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            driver = await one_node(disk, nursery)
            assert all(await proposals(driver, disk, 20))  # quick: inline
            disk.slow = 2 * driver_module.SLOW_SAVE_SECONDS
            slow = await proposals(driver, disk, 20)
            # once most recent saves are slow, they run in worker threads
            assert slow[0] and not any(slow[-10:])
            disk.slow = 0.0
            quick = await proposals(driver, disk, 20)
            assert not quick[0] and all(quick[-10:])  # and back once most are quick
            nursery.cancel_scope.cancel()


async def test_without_inline_saves_every_save_runs_in_a_worker_thread() -> None:
    """The Engine's setting: a quick disk still never gets a save on the event loop."""
    disk = Disk()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            driver = await one_node(disk, nursery, inline_saves=False)
            assert not any(await proposals(driver, disk, 20))
            nursery.cancel_scope.cancel()


async def test_a_big_save_runs_in_a_worker_thread() -> None:
    disk = Disk()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            driver = await one_node(disk, nursery)
            big = b"z" * driver_module.INLINE_SAVE_BYTES
            first = len(disk.threads)
            await driver.propose(big)
            assert disk.threads[first:] == [False]
            assert all(await proposals(driver, disk, 3))
            nursery.cancel_scope.cancel()


async def test_one_stalled_save_moves_the_next_ones_off_the_event_loop_for_a_while() -> None:
    """A save that hangs once (a disk flushing under load) sends the next saves to a
    worker thread, so that one more such save cannot block the event loop and heartbeats;
    they come back to the Trio thread once the disk has been quick for a while."""
    disk = Disk()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            driver = await one_node(disk, nursery)
            assert all(await proposals(driver, disk, 20))  # quick: inline
            disk.stalls, disk.stall = 1, 2 * driver_module.STALLED_SAVE_SECONDS
            after = await proposals(driver, disk, 10)
            assert after[0]  # the stalled one ran inline (nobody could know)...
            assert not any(after[1:])  # ... the next ones not, though the disk is quick
            later = await proposals(driver, disk, 2 * driver_module.SAVE_SAMPLES)
            assert all(later[-5:])  # back inline once it left the recent samples
            nursery.cancel_scope.cancel()
