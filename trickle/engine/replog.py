"""The replicated command log: the engine's commands through Raft, applied on every server.

``ReplicatedLog.propose`` is the engine's one way to change state: a caller hands commands
over and gets each one's ``Applied`` once the entry holding them is committed by a quorum,
applied by the state machine and its effects stored. Concurrent proposals are batched into one
log entry (one append, one fsync for many fires), and several entries can be in flight.

Every server applies every committed entry to its own ``StateMachine`` and store, so any
server can answer reads; ``read_barrier`` makes such a read linearizable (Raft's
ReadIndex). The store is a materialised view of the log: its ``applied_index`` is a Raft
index, a restart replays the entries after it, and a Raft snapshot is the store's image.

Fencing: launches (``urgent`` proposals: run intents) carry the term of the leader that
decided them; when an entry is applied in another term (the proposer lost leadership
and someone else appended it), its launches are refused on every server alike, so a
deposed leader never launches a run the new one does not know about.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgpack
import trio

from trickle._threads import run_sync_uncancellable
from trickle.engine.commands import Command, coalesce_effects
from trickle.engine.fsm import Applied, StateMachine
from trickle.engine.guard import LaunchGuard
from trickle.engine.store import Store, encode_rows
from trickle.engine.wire import decode_command, encode_command, is_canonical
from trickle.errors import EngineClosed, NotLeader, ProposalDropped, TrickleError
from trickle.raft.messages import Entry, EntryKind, Snapshot

logger = logging.getLogger(__name__)

MAX_BATCH = 2048  # commands in one log entry
MAX_IN_FLIGHT = 4  # entries proposed and not yet applied, per node
# Proposals that may wait (run results) go at once when no entry of such proposals is in
# flight; otherwise they wait for it to be applied (as Nagle's algorithm waits for an
# ack), at most LINGER seconds, and go together, at once when LINGER_COMMANDS are
# pending. At 1,000 fires/s each result went in an entry of its own, and an entry's fixed
# cost (encoding, the Raft round, the store's transaction, the notifications) was most
# of the event loop's work per fire.
LINGER = 0.004
LINGER_COMMANDS = 64
APPLY_YIELD_COMMANDS = 256  # commands applied between two yields to other tasks (see apply)
ENCODE_SLICE = 32  # effects encoded to rows between two looks at the launch guard
NOTIFY_SLICE = 16  # applied commands reported to on_applied at once when a launch is near
ENTRY_VERSION = 1

AppliedCallback = Callable[[list[tuple[Command, Applied]], bool], None]
RestoredCallback = Callable[[], Awaitable[None]]


class _Proposal:
    __slots__ = ("commands", "fence", "linger", "since", "done", "results", "error")

    def __init__(self, commands: Sequence[Command], fence: int, linger: bool = False) -> None:
        self.commands = list(commands)
        self.fence = fence
        self.linger = linger
        self.since = trio.current_time()
        self.done = trio.Event()
        self.results: list[Applied] = []
        self.error: BaseException | None = None


def encode_entry(commands: Sequence[Command], *, term: int = 0) -> bytes:
    """The data of one log entry: a version, the fencing term (0: none), the commands."""
    return msgpack.packb([ENTRY_VERSION, term, [encode_command(c) for c in commands]])


def decode_entry(data: bytes) -> tuple[int, list[Command]]:
    """(fencing term, commands) of an entry written by ``encode_entry``."""
    version, term, payloads = msgpack.unpackb(data)
    if version != ENTRY_VERSION:
        raise ValueError(f"log entry version {version} is not {ENTRY_VERSION}")
    return int(term), [decode_command(p) for p in payloads]


class ReplicatedLog:
    """Commands replicated by a Raft driver, applied to ``fsm`` and ``store`` on each server.

    It is the driver's application (``apply``/``restore``/``snapshot``). ``on_applied(pairs,
    replay)`` is called after each applied batch is stored (``replay`` while catching up
    on entries committed before this node started); ``on_restored()`` after the state was
    replaced by a snapshot; for one batch, it may be called several times with
    consecutive slices of its pairs (see ``apply``). With a ``guard`` (the Engine's
    launch guard), batching and applying stand aside just before a run's launch.
    """

    def __init__(
        self,
        store: Store,
        fsm: StateMachine,
        *,
        on_applied: AppliedCallback,
        on_restored: RestoredCallback,
        inline: bool = False,
        guard: LaunchGuard | None = None,
    ) -> None:
        self._store = store
        self._fsm = fsm
        self._on_applied = on_applied
        self._on_restored = on_restored
        self._inline = inline
        self._guard = guard  # stood aside for before each batch proposed and while applying
        self._driver: Any = None
        self._pending: deque[_Proposal] = deque()
        self._pending_eager = 0  # pending proposals that do not linger
        self._lingering_in_flight = 0  # entries in flight holding proposals that linger
        self._pending_commands = 0
        self._urgent: deque[_Proposal] = deque()
        self._wakeup = trio.Event()
        self._closed = True
        self._in_flight = trio.Semaphore(MAX_IN_FLIGHT)
        self.replay_until = 0  # entries up to this index were committed before we started
        self.leader_term = 0  # the term this node leads in (0: not the leader)
        self._last_urgent = False
        # entries this node proposed and has not applied yet: id(data) -> (data, fence,
        # commands), so that it applies the commands it holds rather than decode its own
        # bytes again (only when they decode to equal values: ``wire.is_canonical``)
        self._own: dict[int, tuple[bytes, int, list[Command]]] = {}
        self.batches = 0
        self.commands_applied = 0

    def attach(self, driver: Any) -> None:
        """The Raft driver this log proposes through (it calls back ``apply`` etc.)."""
        self._driver = driver

    # -- the driver's application ----------------------------------------------------------
    async def apply(self, entries: Sequence[Entry]) -> list[list[Applied]]:
        """Apply committed entries in order, store their effects in one transaction. Yields
        to other tasks after every APPLY_YIELD_COMMANDS commands or so, so that a big batch
        does not hold the event loop for its whole length; with a launch guard, also
        between two commands (of one entry too) and between two slices of the
        notifications when a launch is imminent."""
        guard = self._guard
        pairs: list[tuple[Command, Applied]] = []
        results: list[list[Applied]] = []
        since_yield = 0
        for entry in entries:
            if since_yield >= APPLY_YIELD_COMMANDS:
                since_yield = 0
                await trio.lowlevel.checkpoint()
            commands: list[Command] = []
            fence = 0
            own = self._own.pop(id(entry.data), None)
            if own is not None and own[0] is entry.data:
                _data, fence, commands = own
            elif entry.kind is EntryKind.NORMAL and entry.data:
                try:
                    fence, commands = decode_entry(entry.data)
                except Exception:  # a bug or a newer writer: never silently half-applied
                    logger.exception("log entry %d cannot be decoded", entry.index)
                    raise
            if fence and fence != entry.term:
                # Proposed by a leader of another term: its launches are refused everywhere.
                self._fsm.apply_entry(entry.index, [])
                stale = Applied(error=ProposalDropped("leadership changed before the launch"))
                results.append([stale for _ in commands])
                continue
            if guard is None:
                applied = self._fsm.apply_entry(entry.index, commands)
            else:
                self._fsm.begin_entry(entry.index)
                applied = []
                for command in commands:
                    if guard.imminent():
                        await guard.stand_aside()
                    applied.append(self._fsm.apply_command(command))
            since_yield += len(commands)
            pairs.extend(zip(commands, applied, strict=True))
            results.append(applied)
        if entries:
            if guard is not None and guard.imminent():  # (the meta: up to 0.4 ms)
                await guard.stand_aside()
            effects = coalesce_effects([e for _, a in pairs for e in a.effects])
            meta = self._fsm.export_meta()
            index = entries[-1].index
            rows = None
            if not self._inline:  # encoded here, not in the writer thread (Store.apply)
                rows = []
                for i in range(0, len(effects), ENCODE_SLICE):
                    if guard is not None and guard.imminent():
                        await guard.stand_aside()
                    rows += encode_rows(effects[i : i + ENCODE_SLICE])
            await self._call(
                self._store.apply, effects, applied_index=index, fsm_meta=meta, rows=rows
            )
            self.batches += 1
            self.commands_applied += len(pairs)
            replay = index <= self.replay_until
            if guard is None:
                self._on_applied(pairs, replay)
            else:  # in slices, standing aside for a launch (before the first too: the
                for i in range(0, max(1, len(pairs)), NOTIFY_SLICE):  # store's thread
                    if guard.imminent():  # returned at any moment)
                        await guard.stand_aside()
                    self._on_applied(pairs[i : i + NOTIFY_SLICE], replay)
        return results

    async def restore(self, snapshot: Snapshot) -> None:
        """Replace the applied state with a snapshot's image (a far-behind follower)."""
        index = await self._call(self._store.import_image, snapshot.data)
        loaded = await self._call(self._store.load)
        self._fsm.restore(
            applied_index=index,
            jobs=loaded.jobs,
            running=loaded.running,
            meta=loaded.fsm_meta,
        )
        logger.info("state restored from a snapshot at index %d", index)
        await self._on_restored()

    async def snapshot(self) -> bytes:
        return await self._call(self._store.export_image)  # type: ignore[no-any-return]

    async def snapshot_concurrently(self) -> tuple[int, bytes]:
        """The store's image, taken from a read view while entries go on being applied
        (the driver then snapshots in the background), and the index it is as of."""
        return await self._call(self._store.export_image_indexed)  # type: ignore[no-any-return]

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._inline:
            await trio.lowlevel.checkpoint()
            return fn(*args, **kwargs)
        return await run_sync_uncancellable(lambda: fn(*args, **kwargs))

    # -- proposing -------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Batch pending proposals into entries; several entries may be in flight."""
        self._closed = False
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    if not self._pending and not self._urgent:
                        self._wakeup = trio.Event()
                        await self._wakeup.wait()
                        continue
                    linger_until = self._linger_until()
                    if linger_until is not None:
                        self._wakeup = trio.Event()
                        with trio.move_on_at(linger_until):
                            await self._wakeup.wait()
                        continue
                    await self._in_flight.acquire()
                    nursery.start_soon(self._propose_batch, self._take_batch())
        finally:
            self._closed = True
            for proposal in (*self._urgent, *self._pending):
                proposal.error = EngineClosed()
                proposal.done.set()
            self._urgent.clear()
            self._pending.clear()
            self._pending_eager = self._pending_commands = 0

    def _linger_until(self) -> float | None:
        """When to take the pending proposals if they all may linger, are few, and an
        entry of lingering ones is in flight; None to take them now."""
        if (
            self._urgent
            or self._pending_eager
            or not self._lingering_in_flight
            or self._pending_commands >= LINGER_COMMANDS
        ):
            return None
        until = self._pending[0].since + LINGER
        return until if until > trio.current_time() else None

    def _take_batch(self) -> list[_Proposal]:
        # Launches first, up to MAX_BATCH commands, in entries of their own: a burst of
        # fires is not held up behind results, and a stale fence refuses the whole entry,
        # so fenced and unfenced proposals (and two fences) never share one.
        # Results are not starved either: after a launch entry, pending results go next.
        batch: list[_Proposal] = []
        size = 0
        if self._urgent and not (self._last_urgent and self._pending):
            self._last_urgent = True
            fence = self._urgent[0].fence
            while self._urgent and size < MAX_BATCH and self._urgent[0].fence == fence:
                proposal = self._urgent.popleft()
                batch.append(proposal)
                size += len(proposal.commands)
            return batch
        self._last_urgent = False
        while self._pending and size < MAX_BATCH:
            proposal = self._pending.popleft()
            batch.append(proposal)
            size += len(proposal.commands)
            self._pending_commands -= len(proposal.commands)
            if not proposal.linger:
                self._pending_eager -= 1
        return batch

    async def _propose_batch(self, batch: list[_Proposal]) -> None:
        data: bytes | None = None
        lingering = any(p.linger for p in batch)
        if lingering:
            self._lingering_in_flight += 1
        try:
            if self._guard is not None:  # encoding a launch batch takes a few hundred us
                try:
                    await self._guard.stand_aside()
                except BaseException:  # cancelled (the log stops): its waiters hear of it
                    self._fail(batch, EngineClosed())
                    raise
            commands = [cmd for p in batch for cmd in p.commands]
            fence = batch[0].fence
            try:
                data = encode_entry(commands, term=fence)
            except Exception as exc:  # an unencodable command: refused, nothing applied
                logger.exception("encoding %d commands failed", len(commands))
                self._fail(batch, exc)
                return
            if all(is_canonical(cmd) for cmd in commands):
                self._own[id(data)] = (data, fence, commands)
            try:
                results = await self._driver.propose(data)
            except TrickleError as exc:  # NotLeader, ProposalDropped, ProposalUnknown...
                self._fail(batch, exc)
                return
            except BaseException:
                # cancelled (the log stops) or the outcome is unknown: whoever waits on
                # these proposals (some shielded) must hear of it now, not never
                self._fail(batch, EngineClosed())
                raise
            it = iter(results)
            for p in batch:
                p.results = [next(it) for _ in p.commands]
                p.done.set()
        finally:
            if data is not None:
                self._own.pop(id(data), None)
            self._in_flight.release()
            if lingering:
                self._lingering_in_flight -= 1
                self._wakeup.set()  # the proposals lingering behind it may go

    @staticmethod
    def _fail(batch: list[_Proposal], exc: BaseException) -> None:
        for p in batch:
            p.error = exc
            p.done.set()

    async def propose(
        self,
        commands: Sequence[Command],
        *,
        urgent: bool = False,
        fence: int | None = None,
        linger: bool = False,
    ) -> list[Applied]:
        """Commit and apply ``commands`` in order; returns one ``Applied`` per command.

        ``urgent`` proposals (run launches) go first and are fenced by the term in which
        this node leads: ``fence``, the term the caller decided in (default: the current
        one); NotLeader at once if this node does not lead in that term. ``linger``
        proposals (run results) may wait, up to LINGER seconds, for an entry of such
        proposals in flight, and share the next one.
        Raises NotLeader / ProposalDropped when the cluster could not take them (nothing
        was applied), EngineClosed when the log stopped."""
        if self._closed:
            raise EngineClosed()
        if not commands:
            return []
        if urgent:
            fence = self.leader_term if fence is None else fence
            if not fence or fence != self.leader_term:
                raise NotLeader(None)
        else:
            fence = 0
        proposal = _Proposal(commands, fence=fence, linger=linger and not urgent)
        if urgent:
            self._urgent.append(proposal)
        else:
            self._pending.append(proposal)
            self._pending_commands += len(proposal.commands)
            if not proposal.linger:
                self._pending_eager += 1
        self._wakeup.set()
        await proposal.done.wait()
        if proposal.error is not None:
            raise proposal.error
        return proposal.results

    async def read_barrier(self) -> None:
        """Return once this server's state includes every write committed before the call
        (linearizable reads)."""
        await self._driver.read_barrier()
