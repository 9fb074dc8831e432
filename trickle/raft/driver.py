"""The Trio driver of one Raft node: time, network, storage and the application around the core.

    driver = RaftDriver(NodeId("a"), storage=SqliteRaftStorage(path), transport=transport,
                        app=my_state_machine, bootstrap=ConfState(voters=frozenset(ids)))
    await nursery.start(driver.run)
    result = await driver.propose(b"command")   # the local state machine's result
    await driver.read_barrier()                 # then read the local state: linearizable

The loop: a timer ticks the core every ``tick_seconds``; received messages are stepped
as they arrive; then, while the core has a Ready: send its leader messages, save its
writes in ONE storage call (one fsync), send the other messages, hand a received
snapshot and the committed entries to the applier task, advance. The task that received
a message carries out the Readys itself (no hop to another task); ticks and proposals
wake the loop task. The applier applies in order, in bounded batches, and snapshots;
the loop does not wait for it (only for room in its queue, APPLY_QUEUE_BYTES), and a
second receiver steps what arrives while a Ready's save is awaited. So heartbeats,
votes and responses never wait behind a long apply or a slow save: a loaded node keeps
its leader (see docs/benchmarks.md, cluster, overload).
A small save runs on the Trio thread while saves are quick (a worker-thread hand-off
costs more than a quick fsync); big or slow ones go to a worker thread, shielded from
cancellation.
Committed entries that earlier Readys already made durable are applied before the
save, and a commit index that moved alone is not saved at once (it rides on a save at
most every COMMIT_FLUSH_SECONDS, or is saved alone after that long idle): as in etcd,
the commit index is not worth an fsync, since a restarted node learns it again. So the
answer to a proposal does not wait for a second fsync, and a save writes one row less.
Messages that arrive while a save is in flight are stepped at once and their writes go
in the next save (group commit). Every ``snapshot_entries`` applied entries, or
``snapshot_bytes`` of applied entry data, whichever comes first, the application's image
is taken and the log compacted, but not before the entries since the last image carry a
quarter of its size (SNAPSHOT_IMAGE_SHARE): the state is copied at most once per a
quarter of its size of new log. The log on disk is thus bounded by the larger of the two;
in memory only its newest entries keep their data (RaftConfig.hot_log_bytes).

Defaults (``DEFAULT_TICK_SECONDS`` x ``DEFAULT_CONFIG``): tick 25 ms, election timeout
10-20 ticks (250-500 ms), heartbeat every 4 ticks (100 ms): a 3-node LAN cluster elects a
new leader some 300-500 ms after its leader dies.

Errors: NotLeader (no leader known after a short wait), ProposalDropped (the entry was
overwritten by another leader's, or the leader is transferring), ProposalUnknown (the
outcome cannot be known: the forwarding call was lost, or a snapshot replaced the entry),
ConfChangeRejected, ValidationError, EngineClosed (the driver is not running),
LeadershipTransferFailed. The application's exceptions and storage failures stop
``run`` (a node must not go on after failing to persist or apply).
"""

from __future__ import annotations

import collections
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Protocol

import attrs
import msgpack
import trio

from trickle._threads import run_sync_uncancellable
from trickle.errors import (
    ConfChangeRejected,
    EngineClosed,
    NotLeader,
    ProposalDropped,
    TrickleError,
    ValidationError,
)
from trickle.raft.config import RaftConfig
from trickle.raft.core import RaftNode, Ready, Role, SoftState, Status
from trickle.raft.messages import (
    ColdEntry,
    ConfChange,
    ConfState,
    Entry,
    HardState,
    Message,
    NodeId,
    Snapshot,
)
from trickle.raft.storage import EntriesCompacted, RaftStorage, fill_cold_entries
from trickle.raft.transport import (
    ConnectionLost,
    PeerUnreachable,
    RpcError,
    RpcTimeout,
    Transport,
    UnknownMethod,
)
from trickle.raft.wire import decode_conf_change, encode_conf_change

logger = logging.getLogger(__name__)

DEFAULT_TICK_SECONDS = 0.025  # one core tick
DEFAULT_CONFIG = RaftConfig(election_ticks=10, heartbeat_ticks=4)
SNAPSHOT_ENTRIES = 10_000  # applied entries between two snapshots (and log compactions)
SNAPSHOT_BYTES = 32 * 2**20  # or this much applied entry data, whichever comes first
SNAPSHOT_IMAGE_SHARE = 0.25  # ... but not before the entries applied since the last one
# carry this share of its image's bytes: an image copies the whole state, which a big
# state and small entries would otherwise rewrite every snapshot_entries entries
FORWARD_TIMEOUT = 5.0  # seconds for the leader to answer a forwarded proposal
READ_TIMEOUT = 5.0  # seconds a read barrier retries across leader changes
COMMIT_FLUSH_SECONDS = 1.0  # a commit index with nothing else to save is saved this often
SLOW_SAVE_SECONDS = 0.010  # median save duration above which saves go to a worker thread
SAVE_SAMPLES = 15  # recent save durations that median is taken over
STALLED_SAVE_SECONDS = 0.050  # one save this long sends the saves to a worker thread
INLINE_SAVE_BYTES = 256 * 1024  # saves with more entry data always go to a worker thread
APPLY_BATCH_ENTRIES = 64  # committed entries the application gets in one apply() call
APPLY_BATCH_BYTES = 256 * 1024  # ... or this many bytes of their data (one entry at least)
APPLY_QUEUE_BYTES = 32 * 2**20  # committed entry data handed out and not applied yet, at most
PROPOSE_METHOD = "raft.propose"
CONF_CHANGE_METHOD = "raft.conf_change"

_OK, _ERROR = 0, 1
_FORWARDED_ERRORS: dict[str, type[TrickleError]] = {
    cls.__name__: cls for cls in (NotLeader, ProposalDropped, ConfChangeRejected, ValidationError)
}


class ProposalUnknown(TrickleError):
    """A proposal whose fate cannot be known: it may or may not be committed."""

    http_status = 503


class LeadershipTransferFailed(TrickleError):
    """The target did not become leader in time (lagging, unreachable, or not a voter)."""

    http_status = 503


class RaftApplication(Protocol):
    """The replicated state machine the driver feeds. Called from the driver's loop, one
    call at a time; an exception stops the driver."""

    async def apply(self, entries: Sequence[Entry]) -> Sequence[object]:
        """Apply committed entries in order; one result per entry (conf changes and the
        leaders' empty no-op entries included: return anything, e.g. None)."""
        ...

    async def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole state with ``snapshot.data`` (as of ``snapshot.meta.index``)."""
        ...

    async def snapshot(self) -> bytes:
        """The state's image as of the last applied entry."""
        ...


class ConcurrentSnapshots(Protocol):
    """An application that can take its image while entries go on being applied (e.g.
    from a database's consistent read view). The driver then takes snapshots in the
    background instead of pausing the application for each."""

    async def snapshot_concurrently(self) -> tuple[int, bytes]:
        """The image of a consistent state and the index of the last entry applied in it
        (any index the application has applied, up to the last)."""
        ...


@attrs.define(eq=False)
class _Waiter:
    """One proposal waiting for the entry at its index to be applied."""

    term: int
    done: trio.Event = attrs.Factory(trio.Event)
    result: object = None
    error: TrickleError | None = None

    def resolve(self, term: int, result: object) -> None:
        if term == self.term:
            self.result = result
        else:
            self.error = ProposalDropped(
                f"the entry was replaced by one of term {term} (proposed in term {self.term})"
            )
        self.done.set()

    def fail(self, error: TrickleError) -> None:
        self.error = error
        self.done.set()


@attrs.define(eq=False)
class _Read:
    done: trio.Event = attrs.Factory(trio.Event)
    index: int | None = None  # None: no read state came (yet)


class RaftDriver:
    """Runs one RaftNode: see the module docstring.

    storage: a RaftStorage (the driver neither opens nor closes it).
    transport: a TcpTransport or MemoryTransport, served by the caller; the driver
        registers the RPC methods ``raft.propose`` and ``raft.conf_change`` on it.
    bootstrap: the initial voters when starting a new cluster (ignored when the storage
        holds state); None to wait for a leader to contact this node.
    applied: the last index the application already holds (entries up to it are not
        applied again).
    snapshot_entries: take a snapshot and compact every this many applied entries.
    snapshot_bytes: ... or once the entries applied since the last snapshot carry this many
        bytes of data, whichever comes first; in both cases only once they carry at least
        SNAPSHOT_IMAGE_SHARE of the last image's bytes (an image copies the whole state).
    storage_in_thread: True (SQLite): load, compaction and big saves run in a worker
        thread, and so do all saves while the disk is slow (see ``_save_took``); quick
        small saves run on the Trio thread. False: every call on the Trio thread
        (in-memory stores; keeps MockClock tests deterministic).
    inline_saves: with storage_in_thread, whether quick small saves may run on the Trio
        thread (True: the lowest commit latency, for a lone client). False: every save
        runs in a worker thread, so a slow commit never stalls the event loop (the
        Engine, whose timers launch runs at their instant: an inline commit taking
        10-60 ms on a loaded host made runs that late).
    on_soft_state: called (synchronously, in the loop) when role/leader/term change.
    on_conf: called with the new membership when it changes.
    pace: awaited before each piece of work the driver's tasks start (a Ready carried
        out, a batch applied): the application may hold them back for a moment (the
        Engine, just before it launches a run: see ``trickle.engine.guard``).
    """

    def __init__(
        self,
        node_id: NodeId,
        *,
        config: RaftConfig = DEFAULT_CONFIG,
        storage: RaftStorage,
        transport: Transport,
        app: RaftApplication,
        tick_seconds: float = DEFAULT_TICK_SECONDS,
        bootstrap: ConfState | None = None,
        applied: int = 0,
        rng: random.Random | None = None,
        snapshot_entries: int = SNAPSHOT_ENTRIES,
        snapshot_bytes: int = SNAPSHOT_BYTES,
        storage_in_thread: bool = True,
        inline_saves: bool = True,
        forward_timeout: float = FORWARD_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        on_soft_state: Callable[[SoftState], None] | None = None,
        on_conf: Callable[[ConfState], None] | None = None,
        pace: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if tick_seconds <= 0:
            raise ValidationError("tick_seconds must be positive", field="tick_seconds")
        if snapshot_entries < 1:
            raise ValidationError("snapshot_entries must be at least 1", field="snapshot_entries")
        if snapshot_bytes < 1:
            raise ValidationError("snapshot_bytes must be at least 1", field="snapshot_bytes")
        if applied < 0:
            raise ValidationError("applied must not be negative", field="applied")
        self.id = node_id
        self.config = config
        self.tick_seconds = tick_seconds
        self._storage = storage
        self._transport = transport
        self._app = app
        self._bootstrap = bootstrap
        self._rng = rng or random.Random()
        self._snapshot_entries = snapshot_entries
        self._snapshot_bytes = snapshot_bytes
        self._bytes_since_snapshot = 0  # data of the entries applied since the last one
        self._image_bytes = 0  # size of the latest snapshot's image (SNAPSHOT_IMAGE_SHARE)
        self._in_thread = storage_in_thread
        self._inline_allowed = inline_saves
        self._forward_timeout = forward_timeout
        self._read_timeout = read_timeout
        self._on_soft_state = on_soft_state
        self._on_conf = on_conf
        self._pace = pace or _no_pace
        # a leader is normally known within two election timeouts
        self._leader_wait = 4 * config.election_ticks * tick_seconds
        self._node: RaftNode | None = None
        self._started = False
        self._soft = SoftState(role=Role.FOLLOWER, leader=None, term=0)
        self._conf = ConfState()
        self._applied = applied
        self._applied_term = 0  # term of the last applied entry (as far as applied here)
        self._snapshot_index = 0
        self._saved_hard_state = HardState()
        self._unsaved_commit: HardState | None = None  # commit moved, not saved yet
        self._commit_flushed_at = 0.0
        self._wake = trio.Event()
        self._processing = False  # a task is carrying out Readys (see _process)
        self._receiving = trio.Lock()  # held by the receiver stepping messages
        # committed entries and snapshots handed out by Readys, applied in order by
        # the applier task (see _applier): ("entries", [Entry...]) or ("snapshot", Snapshot)
        self._to_apply: collections.deque[tuple[str, Any]] = collections.deque()
        self._to_apply_bytes = 0
        self._apply_wake = trio.Event()
        self._apply_room = trio.Event()
        self._save_samples: collections.deque[float] = collections.deque(maxlen=SAVE_SAMPLES)
        self._inline_saves = True  # small saves run on the Trio thread (see _save_took)
        self._state_changed = trio.Event()
        self._applied_changed = trio.Event()
        self._waiters: dict[int, list[_Waiter]] = {}
        self._reads: dict[bytes, _Read] = {}
        self._read_seq = 0
        self._read_nonce = os.urandom(4).hex()
        self._forward_starts: collections.Counter[int] = collections.Counter()
        self._captured: dict[int, tuple[int, object]] = {}
        self.snapshots_taken = 0
        self.campaigns = 0  # election timeouts that made this follower campaign
        self.quorum_losses = 0  # times this leader stepped down (check quorum)
        self.stalls = 0  # ticks that ran an election timeout late (a blocked event loop)
        self.longest_tick_lag = 0.0  # seconds
        self.slow_saves = 0  # saves that took an election timeout or more
        self.cold_reads = 0  # APPENDs whose entries were read back from storage
        self.cold_compacted = 0  # ... dropped: a snapshot had compacted them meanwhile
        self._nursery: trio.Nursery | None = None
        self._snapshotting = False  # a background snapshot is being taken

    # lifecycle ------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover from storage and run the node until cancelled. Started once the node
        is running (it may not know a leader yet: see ``wait_leader``)."""
        if self._started:
            raise RuntimeError("this driver is already running")
        self._started = True
        # what an earlier run handed out and did not apply is handed out again: the core
        # starts from what the application holds (``_applied``)
        self._to_apply.clear()
        self._to_apply_bytes = 0
        try:
            durable = await self._storage_call(self._storage.load)
            # a second run continues from what the application holds now
            node = RaftNode(
                self.id,
                config=self.config,
                rng=self._rng,
                durable=durable,
                applied=self._applied,
                bootstrap=self._bootstrap,
            )
        except BaseException:
            self._started = False
            raise
        self._snapshot_index = durable.snapshot.meta.index if durable.snapshot else 0
        self._image_bytes = len(durable.snapshot.data) if durable.snapshot else 0
        self._saved_hard_state = durable.hard_state
        del durable  # its entries: the core keeps those it needs (this frame lives on)
        self._unsaved_commit = None
        self._commit_flushed_at = trio.current_time()
        status = node.status()
        self._soft = SoftState(role=status.role, leader=status.leader, term=status.term)
        self._conf = status.conf
        self._node = node
        registered: list[str] = []
        try:
            for method, handler in (
                (PROPOSE_METHOD, self._serve_propose),
                (CONF_CHANGE_METHOD, self._serve_conf_change),
            ):
                self._transport.register(method, handler)
                registered.append(method)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._ticker, node)
                nursery.start_soon(self._receiver, node)
                nursery.start_soon(self._receiver, node)
                nursery.start_soon(self._applier, node)
                nursery.start_soon(self._loop, node)
                task_status.started()
        finally:
            self._node = None
            self._nursery = None
            self._started = False
            for method in registered:
                self._transport.unregister(method)
            for waiters in self._waiters.values():
                for waiter in waiters:
                    waiter.fail(EngineClosed())
            self._waiters.clear()
            for read in self._reads.values():
                read.done.set()
            self._reads.clear()
            self._changed()
            self._wake_appliers()

    async def _ticker(self, node: RaftNode) -> None:
        deadline = trio.current_time()
        while True:
            while self._alone():
                # A lone voter that leads has nothing to time: no heartbeats to send, no
                # election to fear. Sleeping here keeps an idle single server (and tests on
                # a MockClock jumping through months) from waking every tick.
                await self._state_changed.wait()
                deadline = trio.current_time()
            # after a stall, tick once and go on: lost ticks are not replayed in a burst
            deadline = max(deadline + self.tick_seconds, trio.current_time())
            await trio.sleep_until(deadline)
            self._tick_lag(trio.current_time() - deadline)
            node.tick()
            self._wake.set()

    def _tick_lag(self, lag: float) -> None:
        """Note how late a tick ran: the event loop was blocked (synchronous work of the
        application, the GC) or the process waited for a CPU. A lag of an election
        timeout on a leader is enough for its followers to campaign."""
        if lag > self.longest_tick_lag:
            self.longest_tick_lag = lag
        timeout = self.config.election_ticks * self.tick_seconds
        if lag >= timeout:
            self.stalls += 1
            logger.warning(
                "%s: the event loop was blocked for %.0f ms (%s's election timeout is %.0f "
                "ms or more)",
                self.id,
                lag * 1000,
                "its followers" if self._soft.role is Role.LEADER else "this node",
                timeout * 1000,
            )

    async def _receiver(self, node: RaftNode) -> None:
        """Step what arrives and carry out its Readys in this task (no hop to the loop
        task); while another task is carrying out Readys, only step: that task picks the
        new state up before it stops.

        Two of these run. Whichever holds ``_receiving`` receives and steps; it lets go
        before carrying out Readys, so the other one goes on stepping while a Ready's
        save is awaited: heartbeats, votes and responses are never left unstepped in the
        queue behind a slow save (a follower would campaign though its leader is alive,
        a leader would fail its quorum check). The lock is fair: messages are stepped in
        the order they arrived."""
        receive = self._transport.messages.receive
        lock = self._receiving
        while True:
            try:
                lock.acquire_nowait()  # no checkpoint when free (the common case)
            except trio.WouldBlock:
                await lock.acquire()
            try:
                node.step(await receive())
                self._drain(node)
            finally:
                lock.release()
            await self._process(node)

    async def _loop(self, node: RaftNode) -> None:
        """Carry out the Readys of ticks, proposals and reads (see ``_receiver``)."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await self._process(node)

    def _drain(self, node: RaftNode) -> None:
        """Step every message already received, without waiting."""
        receive_nowait = self._transport.messages.receive_nowait
        while True:
            try:
                message = receive_nowait()
            except trio.WouldBlock:
                return
            node.step(message)

    async def _process(self, node: RaftNode) -> None:
        """Carry out Readys until there is none; a no-op while another task does it (it
        checks ``has_ready`` again after each await, and nothing else awaits in between)."""
        if self._processing:
            return
        self._processing = True
        try:
            while True:
                self._drain(node)
                if node.has_ready():
                    await self._pace()
                    self._drain(node)  # what arrived meanwhile goes in the same Ready
                    if node.has_ready():
                        await self._handle(node, node.ready())
                    continue
                if await self._flush_commit():
                    continue
                for peer in self._transport.take_unreachable():
                    node.report_unreachable(peer)
                if not node.has_ready():
                    return
        finally:
            self._processing = False

    async def _handle(self, node: RaftNode, rd: Ready) -> None:
        send = self._transport.send
        if rd.soft_state is not None:
            self._set_soft_state(rd.soft_state)
        for message in rd.leader_messages:
            if message.entries and type(message.entries[0]) is ColdEntry:
                filled = await self._fill_cold(node, message)
                if filled is None:
                    continue
                message = filled
            send(message)
        committed = rd.committed_entries
        if committed:
            # Applying waits for room in the applier's queue (bounded in bytes), not for
            # the entries to be applied: see _applier.
            await self._wait_apply_room()
        if (
            committed
            and rd.snapshot is None
            and (not rd.entries or committed[-1].index < rd.entries[0].index)
        ):
            # Already durable here (saved by earlier Readys): applied while this Ready's
            # save goes on, so a proposer's answer does not wait for the commit index's
            # fsync.
            self._hand_to_applier("entries", committed)
            committed = ()
        if rd.must_sync:
            await self._save(rd)
        for message in rd.messages:
            if message.entries and type(message.entries[0]) is ColdEntry:
                filled = await self._fill_cold(node, message)
                if filled is None:
                    continue
                message = filled
            send(message)
        if rd.snapshot is not None:
            self._hand_to_applier("snapshot", rd.snapshot)
        if committed:
            self._hand_to_applier("entries", committed)
        for rs in rd.read_states:
            read = self._reads.get(rs.context)
            if read is not None:
                read.index = rs.index
                read.done.set()
        if rd.conf is not None:
            self._conf = rd.conf
            self._changed()  # wakes the ticker of a lone leader that gained a member
            if self._on_conf is not None:
                self._call_back(self._on_conf, rd.conf)
        node.advance(rd)

    async def _fill_cold(self, node: RaftNode, message: Message) -> Message | None:
        """An APPEND to a slow follower carries entries whose data the core no longer
        holds (RaftConfig.hot_log_bytes): read them back from storage, in a worker thread.
        None if a snapshot compacted them meanwhile: the message is dropped and the
        follower probed again (it gets the snapshot)."""
        read = self._storage.entries
        self.cold_reads += 1
        try:
            filled: Message = await self._storage_call(lambda: fill_cold_entries(message, read))
        except EntriesCompacted:
            self.cold_compacted += 1
            node.report_unreachable(message.dst)
            return None
        return filled

    # applying ---------------------------------------------------------------------------
    def _hand_to_applier(self, kind: str, item: Any) -> None:
        self._to_apply.append((kind, item))
        if kind == "entries":
            self._to_apply_bytes += sum(len(e.data) for e in item)
        self._apply_wake.set()

    async def _wait_apply_room(self) -> None:
        """Wait while the entries handed to the applier and not applied yet hold more
        than APPLY_QUEUE_BYTES (a follower catching up must not queue its whole backlog
        in memory). Each wait lasts one applied batch at most (APPLY_BATCH_*)."""
        while self._to_apply_bytes > APPLY_QUEUE_BYTES:
            self._apply_room = trio.Event()
            await self._apply_room.wait()

    async def _applier(self, node: RaftNode) -> None:
        """Apply what Readys hand over, in order, in batches of at most APPLY_BATCH_ENTRIES
        entries and APPLY_BATCH_BYTES bytes, then snapshot when due.

        Applying is not part of carrying out a Ready (as in etcd's raft node): the loop
        goes on saving, sending heartbeats, votes and responses, and stepping messages
        while the application applies a big batch in a worker thread. Before, a leader's
        heartbeats and a follower's answers waited behind each apply: under load its
        followers campaigned against a live leader and the leader failed its quorum
        check (an election every few seconds at 1,000 fires/s on a 2-core host)."""
        queue = self._to_apply
        while True:
            while not queue:
                self._apply_wake = trio.Event()
                await self._apply_wake.wait()
            await self._pace()
            kind, item = queue[0]
            if kind == "snapshot":
                queue.popleft()
                await self._app.restore(item)
                self._restored(item.meta.index)
                self._image_bytes = len(item.data)
            else:
                batch = _apply_batch(item)
                if len(batch) == len(item):
                    queue.popleft()
                else:
                    queue[0] = (kind, item[len(batch) :])
                size = sum(len(e.data) for e in batch)
                await self._apply(batch)
                self._to_apply_bytes -= size
            if self._to_apply_bytes <= APPLY_QUEUE_BYTES:
                self._apply_room.set()
            self._wake_appliers()
            await self._maybe_snapshot(node)

    async def _save(self, rd: Ready) -> None:
        hard_state = rd.hard_state
        saved = self._saved_hard_state
        if (
            hard_state is not None
            and (hard_state.term, hard_state.vote) == (saved.term, saved.vote)
            and rd.snapshot is None
        ):
            # Only the commit index moved: it need not be durable at once (a restarted
            # node learns it again; etcd's MustSync), so it is saved at most every
            # COMMIT_FLUSH_SECONDS: one row less to write per save.
            self._unsaved_commit = hard_state
            if not rd.entries:
                return
            hard_state = None
        if hard_state is None and self._unsaved_commit is not None:
            now = trio.current_time()
            if rd.snapshot is not None or now - self._commit_flushed_at >= COMMIT_FLUSH_SECONDS:
                hard_state = self._unsaved_commit
                self._commit_flushed_at = now
        save = partial(
            self._storage.save, hard_state=hard_state, entries=rd.entries, snapshot=rd.snapshot
        )
        size = sum(len(e.data) for e in rd.entries) if rd.snapshot is None else INLINE_SAVE_BYTES
        started = trio.current_time()
        await self._storage_call(save, size=size)
        took = trio.current_time() - started
        if took >= self.config.election_ticks * self.tick_seconds:
            self.slow_saves += 1
            logger.warning(
                "%s: a save of %d entries (%d bytes) took %.0f ms",
                self.id,
                len(rd.entries),
                size,
                took * 1000,
            )
        if hard_state is not None:  # the latest hard state: nothing is left unsaved
            self._saved_hard_state = hard_state
            self._unsaved_commit = None

    async def _flush_commit(self) -> bool:
        """Persist a commit index that moved with nothing else to save, once in a while;
        True if it did (it awaited)."""
        if self._unsaved_commit is None:
            return False
        now = trio.current_time()
        if now - self._commit_flushed_at < COMMIT_FLUSH_SECONDS:
            return False
        self._commit_flushed_at = now
        hard_state, self._unsaved_commit = self._unsaved_commit, None
        await self._storage_call(partial(self._storage.save, hard_state=hard_state), size=0)
        self._saved_hard_state = hard_state
        return True

    async def _apply(self, entries: Sequence[Entry]) -> None:
        results = await self._app.apply(entries)
        if len(results) != len(entries):
            raise RuntimeError(
                f"the application returned {len(results)} results for {len(entries)} entries"
            )
        capture = bool(self._forward_starts)
        for entry, result in zip(entries, results, strict=True):
            waiters = self._waiters.pop(entry.index, None)
            if waiters:
                for waiter in waiters:
                    waiter.resolve(entry.term, result)
            if capture:
                self._captured[entry.index] = (entry.term, result)
        last = entries[-1]
        self._applied = last.index
        self._bytes_since_snapshot += sum(len(e.data) for e in entries)
        if last.term > self._applied_term:
            self._applied_term = last.term
            self._drop_superseded()

    def _drop_superseded(self) -> None:
        """Waiters of an older term above the last applied entry can never be resolved:
        log matching puts only entries of this term or later after it (a deposed leader's
        proposals beyond the new leader's log would otherwise wait forever)."""
        term, index = self._applied_term, self._applied
        for i in [i for i in self._waiters if i > index]:
            keep = []
            for waiter in self._waiters[i]:
                if waiter.term < term:
                    waiter.fail(
                        ProposalDropped(
                            f"entry {i} of term {waiter.term} was superseded by term {term}"
                        )
                    )
                else:
                    keep.append(waiter)
            if keep:
                self._waiters[i] = keep
            else:
                del self._waiters[i]

    def _restored(self, index: int) -> None:
        for i in sorted(i for i in self._waiters if i <= index):
            for waiter in self._waiters.pop(i):
                waiter.fail(ProposalUnknown(f"entry {i} was replaced by a snapshot up to {index}"))
        self._applied = index
        self._snapshot_index = index
        self._bytes_since_snapshot = 0

    async def _snapshot_in_background(
        self, node: RaftNode, take: Callable[[], Awaitable[tuple[int, bytes]]]
    ) -> None:
        """Take the application's image while entries go on being applied, then compact
        up to the index it is as of (once the node has applied that far). Nothing is
        compacted if a snapshot from the leader replaced the log meanwhile."""
        try:
            index, data = await take()
            while index > self._applied:  # its apply is still being carried out
                await self._applied_changed.wait()
            if index <= self._snapshot_index or self._node is not node:
                return
            try:
                meta = node.snapshot_meta(index)
            except ValidationError:  # replaced by a snapshot from the leader meanwhile
                return
            snapshot = Snapshot(meta=meta, data=data)
            keep_from = node.compact(snapshot)
            await self._storage_call(partial(self._storage.compact, snapshot, keep_from=keep_from))
            self._snapshot_index = max(self._snapshot_index, index)
            self._image_bytes = len(data)
            self.snapshots_taken += 1
            logger.debug("%s: snapshot at %d, log kept from %d", self.id, index, keep_from)
        finally:
            self._snapshotting = False

    async def _maybe_snapshot(self, node: RaftNode) -> None:
        if (
            (
                self._applied - self._snapshot_index < self._snapshot_entries
                and self._bytes_since_snapshot < self._snapshot_bytes
            )
            or self._applied <= self._snapshot_index
            or self._bytes_since_snapshot < self._image_bytes * SNAPSHOT_IMAGE_SHARE
        ):
            return
        concurrently = getattr(self._app, "snapshot_concurrently", None)
        if concurrently is not None and self._nursery is not None:
            if not self._snapshotting:
                self._snapshotting = True
                self._bytes_since_snapshot = 0  # what is applied from now on counts to the next
                self._nursery.start_soon(self._snapshot_in_background, node, concurrently)
            return
        index = self._applied
        try:
            node.snapshot_meta(index)
        except ValidationError:
            # Entries handed to the applier before their Ready was carried out (already
            # durable: see _handle) can be applied before the core hears of it in
            # advance(): it does not count them applied yet. The next batch tries again.
            return
        data = await self._app.snapshot()  # nothing is applied meanwhile: it is as of index
        try:
            snapshot = Snapshot(meta=node.snapshot_meta(index), data=data)
        except ValidationError:  # replaced by a snapshot from the leader meanwhile
            return
        keep_from = node.compact(snapshot)
        await self._storage_call(partial(self._storage.compact, snapshot, keep_from=keep_from))
        self._snapshot_index = index
        self._bytes_since_snapshot = 0
        self._image_bytes = len(data)
        self.snapshots_taken += 1
        logger.debug("%s: snapshot at %d, log kept from %d", self.id, index, keep_from)

    async def _storage_call(self, fn: Callable[[], Any], *, size: int | None = None) -> Any:
        """Run a storage call: on this thread without storage_in_thread. Else a save of
        ``size`` bytes below INLINE_SAVE_BYTES runs here too while saves are quick
        (handing one to a worker thread costs more CPU and time than a quick save);
        anything else (load, compact, big saves, and every save while the disk is slow)
        runs in a worker thread, shielded from cancellation (a write once started is
        finished)."""
        if not self._in_thread:
            return fn()
        if size is None or size >= INLINE_SAVE_BYTES:
            with trio.CancelScope(shield=True):
                return await run_sync_uncancellable(fn)
        if self._inline_saves and self._inline_allowed:
            started = time.perf_counter()
            result = fn()
            self._save_took(time.perf_counter() - started)
            return result

        def timed() -> Any:
            started = time.perf_counter()
            result = fn()
            self._save_took(time.perf_counter() - started)
            return result

        with trio.CancelScope(shield=True):
            return await run_sync_uncancellable(timed)

    def _save_took(self, seconds: float) -> None:
        """Small saves run inline unless the median of the last SAVE_SAMPLES (inline or
        not) is above SLOW_SAVE_SECONDS (a slow disk must not stall the Trio loop); they
        come back once it is below half of that. A median, so that stalls of a busy
        machine (the process waiting for a CPU) do not count as a slow disk. But one save
        of STALLED_SAVE_SECONDS or more moves them to a worker thread at once, and they
        come back only once no such save is among the last SAVE_SAMPLES: an inline save
        that hangs for hundreds of ms (a disk flushing under load) blocks the whole loop,
        heartbeats included, and its followers campaign. (Called from a worker thread
        too: the decision is a bool store.)"""
        samples = self._save_samples
        samples.append(seconds)
        median = sorted(samples)[len(samples) // 2]
        if median > SLOW_SAVE_SECONDS or seconds >= STALLED_SAVE_SECONDS:
            self._inline_saves = False
        elif median < SLOW_SAVE_SECONDS / 2 and max(samples) < STALLED_SAVE_SECONDS:
            self._inline_saves = True

    def _set_soft_state(self, soft: SoftState) -> None:
        before = self._soft
        if soft.leader != before.leader or soft.role != before.role:
            logger.info("%s: %s", self.id, soft.describe())
        if before.role is Role.LEADER and soft.role is not Role.LEADER and soft.term == before.term:
            self.quorum_losses += 1
            logger.warning(
                "%s: stepped down in term %d: no quorum of voters answered within the "
                "election timeout (check quorum)",
                self.id,
                soft.term,
            )
        elif before.role is Role.FOLLOWER and soft.role in (Role.PRE_CANDIDATE, Role.CANDIDATE):
            self.campaigns += 1
            logger.warning(
                "%s: campaigning in term %d: no message from leader %s within the election timeout",
                self.id,
                soft.term,
                before.leader or "-",
            )
        self._soft = soft
        self._changed()
        if self._on_soft_state is not None:
            self._call_back(self._on_soft_state, soft)

    def _call_back(self, fn: Callable[[Any], None], value: object) -> None:
        try:
            fn(value)
        except Exception:
            logger.exception("%s: callback %r failed", self.id, fn)

    def _alone(self) -> bool:
        conf = self._conf
        return (
            self._soft.role is Role.LEADER
            and conf.voters == frozenset({self.id})
            and not conf.learners
        )

    def _changed(self) -> None:
        self._state_changed.set()
        self._state_changed = trio.Event()

    def _wake_appliers(self) -> None:
        self._applied_changed.set()
        self._applied_changed = trio.Event()

    # public API -----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._node is not None

    @property
    def soft_state(self) -> SoftState:
        """Role, leader and term as of the last Ready."""
        return self._soft

    @property
    def applied(self) -> int:
        """The last index the application applied."""
        return self._applied

    @property
    def conf(self) -> ConfState:
        return self._conf

    def status(self) -> Status:
        """The core's status (role, term, commit, applied, progress of followers...)."""
        return self._running_node().status()

    async def wait_state(self, predicate: Callable[[SoftState], bool]) -> SoftState:
        """Return the soft state once ``predicate`` holds for it (checked now and at
        every change). Raises EngineClosed if the driver stops meanwhile."""
        while not predicate(self._soft):
            self._running_node()
            await self._state_changed.wait()
        return self._soft

    async def wait_leader(self) -> NodeId:
        """Return the leader's id once one is known (blocks while there is none)."""
        soft = await self.wait_state(lambda s: s.leader is not None)
        assert soft.leader is not None
        return soft.leader

    async def propose(self, data: bytes) -> object:
        """Replicate ``data`` and return the local application's result for its entry
        once applied here. On a follower the leader appends it (``raft.propose``) and
        this node waits until it applies that index. Raises NotLeader(hint) if no leader
        is known after a short wait, ProposalDropped if another entry took that index,
        ProposalUnknown if the outcome cannot be known, EngineClosed if not running.
        Never times out by itself while the cluster cannot commit: cancel to give up."""
        node = self._running_node()
        return await self._submit(partial(node.propose, data), PROPOSE_METHOD, data)

    async def propose_conf_change(self, change: ConfChange) -> object:
        """Propose one membership change (forwarded to the leader like ``propose``);
        returns the application's result for its entry. Raises ConfChangeRejected."""
        node = self._running_node()
        return await self._submit(
            partial(node.propose_conf_change, change),
            CONF_CHANGE_METHOD,
            encode_conf_change(change),
        )

    async def transfer_leadership(self, to: NodeId, *, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Hand leadership to voter ``to`` and return once it leads. Raises NotLeader on
        a follower, ValidationError if ``to`` is not a voter, LeadershipTransferFailed if
        ``to`` does not lead within ``timeout`` (default: two election timeouts)."""
        node = self._running_node()
        node.transfer_leadership(to)
        self._wake.set()
        limit = (
            timeout if timeout is not None else 4 * self.config.election_ticks * self.tick_seconds
        )
        with trio.move_on_after(limit):
            while self._soft.leader != to:
                self._running_node()
                await self._state_changed.wait()
            return
        raise LeadershipTransferFailed(f"{to} did not become leader within {limit:.3g} s")

    async def read_barrier(self, *, timeout: float | None = None) -> int:  # noqa: ASYNC109
        """Wait until a read of the local state is linearizable (ReadIndex: the leader
        confirms it still leads, then this node applies up to that commit index);
        returns that index. Retries across leader changes for ``timeout`` seconds
        (default READ_TIMEOUT), then raises NotLeader."""
        limit = self._read_timeout if timeout is None else timeout
        deadline = trio.current_time() + limit
        retry = 2 * self.config.election_ticks * self.tick_seconds
        while True:
            node = self._running_node()
            self._read_seq += 1
            ctx = f"{self.id}/{self._read_nonce}/{self._read_seq}".encode()
            try:
                node.read_index(ctx)
            except NotLeader:
                if trio.current_time() >= deadline:
                    raise
                with trio.move_on_at(deadline):
                    await self._state_changed.wait()
                continue
            read = self._reads[ctx] = _Read()
            self._wake.set()
            try:
                with trio.move_on_at(min(deadline, trio.current_time() + retry)):
                    await read.done.wait()
            finally:
                self._reads.pop(ctx, None)
            if read.index is not None:
                with trio.move_on_at(deadline):
                    while self._applied < read.index:
                        self._running_node()
                        await self._applied_changed.wait()
                    return read.index
            self._running_node()
            if trio.current_time() >= deadline:
                raise NotLeader(self._soft.leader if self._soft.leader != self.id else None)

    # proposals ------------------------------------------------------------------------
    async def _submit(
        self, local: Callable[[], tuple[int, int]], method: str, payload: bytes
    ) -> object:
        deadline = trio.current_time() + self._leader_wait
        while True:
            self._running_node()
            leader = self._soft.leader
            if leader == self.id or leader is None:
                try:
                    term, index = local()
                except NotLeader:
                    pass
                else:
                    self._wake.set()
                    return await self._wait_entry(term, index)
            else:
                forwarded = await self._forward(leader, method, payload)
                if forwarded is not None:
                    return await self._wait_registered(*forwarded)
            if trio.current_time() >= deadline:
                hint = self._soft.leader
                raise NotLeader(hint if hint != self.id else None)
            with trio.move_on_at(deadline):
                await self._state_changed.wait()

    async def _forward(
        self, leader: NodeId, method: str, payload: bytes
    ) -> tuple[int, _Waiter] | None:
        """Ask ``leader`` to append; returns the entry's index and a waiter for its result
        (already resolved if it was applied before the answer came), or None when the
        leader could not be reached (no request went out) or is no longer leader."""
        start = self._applied
        self._forward_starts[start] += 1
        try:
            try:
                reply = await self._transport.call(
                    leader, method, payload, timeout=self._forward_timeout
                )
            except (ConnectionLost, RpcTimeout) as exc:
                raise ProposalUnknown(f"forwarded to {leader}, no answer: {exc}") from None
            except (PeerUnreachable, UnknownMethod):
                return None  # nothing ran there: ask again once the leader is known
            except RpcError as exc:
                raise ProposalDropped(f"the leader {leader} failed the proposal: {exc}") from None
            status, *rest = _unpack_reply(reply)
            if status == _ERROR:
                name, text = rest
                if name == NotLeader.__name__:
                    return None
                raise _FORWARDED_ERRORS.get(name, ProposalDropped)(text)
            term, index = rest
            if index > self._applied:
                return index, self._register(term, index)
            # applied here before the leader's answer arrived: the result was captured
            waiter = _Waiter(term)
            found = self._captured.get(index)
            if found is None:
                waiter.fail(ProposalUnknown(f"entry {index} was applied from a snapshot"))
            else:
                waiter.resolve(*found)
            return index, waiter
        finally:
            self._forward_done(start)

    def _forward_done(self, start: int) -> None:
        self._forward_starts[start] -= 1
        if not self._forward_starts[start]:
            del self._forward_starts[start]
        low = min(self._forward_starts) if self._forward_starts else None
        while self._captured:
            first = next(iter(self._captured))
            if low is not None and first > low:
                break
            del self._captured[first]

    def _register(self, term: int, index: int) -> _Waiter:
        waiter = _Waiter(term)
        if term < self._applied_term and index > self._applied:
            waiter.fail(
                ProposalDropped(
                    f"entry {index} of term {term} was superseded by term {self._applied_term}"
                )
            )
            return waiter
        self._waiters.setdefault(index, []).append(waiter)
        return waiter

    async def _wait_entry(self, term: int, index: int) -> object:
        return await self._wait_registered(index, self._register(term, index))

    async def _wait_registered(self, index: int, waiter: _Waiter) -> object:
        try:
            await waiter.done.wait()
        finally:
            waiters = self._waiters.get(index)
            if waiters and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[index]
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    async def _serve_propose(self, src: NodeId, payload: bytes) -> bytes:
        return self._append_for_peer(lambda node: node.propose(payload))

    async def _serve_conf_change(self, src: NodeId, payload: bytes) -> bytes:
        def append(node: RaftNode) -> tuple[int, int]:
            return node.propose_conf_change(decode_conf_change(payload))

        return self._append_for_peer(append)

    def _append_for_peer(self, append: Callable[[RaftNode], tuple[int, int]]) -> bytes:
        """Append on behalf of a follower and answer at once with (term, index); the
        follower waits to apply that entry, so its commit is announced at once."""
        node = self._node
        try:
            if node is None:
                raise NotLeader(None)
            term, index = append(node)
        except TrickleError as exc:
            return msgpack.packb([_ERROR, type(exc).__name__, exc.message])
        node.expedite_commit(index)
        self._wake.set()
        return msgpack.packb([_OK, term, index])

    def _running_node(self) -> RaftNode:
        if self._node is None:
            raise EngineClosed()
        return self._node


def _apply_batch(entries: Sequence[Entry]) -> Sequence[Entry]:
    """The first entries of ``entries`` the application gets in one call: at most
    APPLY_BATCH_ENTRIES of them and APPLY_BATCH_BYTES of data, one at least."""
    size = 0
    for n, entry in enumerate(entries[:APPLY_BATCH_ENTRIES]):
        size += len(entry.data)
        if size > APPLY_BATCH_BYTES and n:
            return entries[:n]
    return entries[:APPLY_BATCH_ENTRIES]


def _unpack_reply(reply: bytes) -> list[Any]:
    try:
        value = msgpack.unpackb(reply)
        if (
            isinstance(value, list)
            and len(value) == 3
            and (
                (value[0] == _OK and all(type(v) is int for v in value[1:]))
                or (value[0] == _ERROR and all(type(v) is str for v in value[1:]))
            )
        ):
            return value
    except Exception:
        pass
    raise ProposalUnknown(f"the leader answered a forwarded proposal with garbage: {reply[:40]!r}")


async def _no_pace() -> None:
    """The default ``pace``: never holds the driver back (and does not checkpoint)."""
