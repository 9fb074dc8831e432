"""The single-node command log: propose -> commit (durable append) -> apply -> persist.

``LocalLog.propose`` is the seam the Raft issue replaces with a replicated log: a caller
hands commands over and gets each one's ``Applied`` once it is committed, applied by the
state machine and its effects are stored. Concurrent proposals are batched: the commands
and their effects go to the store in one transaction, so many fires cost one fsync.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgpack
import trio

from trickle.engine.commands import Command, Effect, coalesce_effects
from trickle.engine.fsm import Applied, StateMachine
from trickle.engine.store import Store
from trickle.engine.wire import decode_command, encode_command
from trickle.errors import EngineClosed

logger = logging.getLogger(__name__)

MAX_BATCH = 2048  # commands applied in one store transaction
MIN_OTHERS = 512  # room in each batch kept for proposals that are not launches
COMPACT_EVERY = 1000  # commands: small, frequent compactions (a big one stalls the writer)
KEEP_COMMANDS = 1000

T = TypeVar("T")

AppliedCallback = Callable[[list[tuple[Command, Applied]], bool], None]


class _Proposal:
    __slots__ = ("commands", "done", "results", "error")

    def __init__(self, commands: Sequence[Command]) -> None:
        self.commands = list(commands)
        self.done = trio.Event()
        self.results: list[Applied] = []
        self.error: BaseException | None = None


class LocalLog:
    """Commands persisted in the store on this node, applied in order by ``fsm``.

    ``on_applied(pairs, replay)`` is called synchronously after each batch is durable
    (``replay`` is true while recovering at start).
    """

    def __init__(
        self,
        store: Store,
        fsm: StateMachine,
        *,
        on_applied: AppliedCallback,
        inline: bool = False,
    ) -> None:
        self._store = store
        self._inline = inline  # an in-memory store is called on the Trio thread
        self._fsm = fsm
        self._on_applied = on_applied
        self._pending: deque[_Proposal] = deque()
        self._urgent: deque[_Proposal] = deque()
        self._wakeup = trio.Event()
        self._closed = True
        self._last_compacted = 0
        self.batches = 0
        self.commands_applied = 0

    async def recover(self) -> int:
        """Apply logged commands that the stored state does not hold yet; returns how many."""
        entries = await self._call(self._store.read_commands, self._fsm.applied_index)
        pairs = []
        for index, payload in entries:
            command = decode_command(payload)
            pairs.append((command, self._fsm.apply(index, command)))
        if pairs:
            await self._persist(pairs, replay=True)
        self._last_compacted = self._fsm.applied_index
        return len(pairs)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._closed = False
        task_status.started()
        try:
            while True:
                if not self._pending and not self._urgent:
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                # Launches first, then results, up to MAX_BATCH commands: a burst of fires
                # is not held up behind the results of earlier runs, and under a steady
                # load both share one transaction. Results always get some of the room.
                batch, size = [], 0
                for queue, room in (
                    (self._urgent, MAX_BATCH - MIN_OTHERS),
                    (self._pending, MAX_BATCH),
                ):
                    while queue and size < room:
                        proposal = queue.popleft()
                        batch.append(proposal)
                        size += len(proposal.commands)
                with trio.CancelScope(shield=True):
                    await self._commit(batch)
        finally:
            self._closed = True
            for proposal in (*self._urgent, *self._pending):
                proposal.error = EngineClosed()
                proposal.done.set()
            self._urgent.clear()
            self._pending.clear()

    async def propose(self, commands: Sequence[Command], *, urgent: bool = False) -> list[Applied]:
        """Commit and apply ``commands`` in order; returns one ``Applied`` per command.

        ``urgent`` proposals (run launches) are committed before the others pending."""
        if self._closed:
            raise EngineClosed()
        if not commands:
            return []
        proposal = _Proposal(commands)
        (self._urgent if urgent else self._pending).append(proposal)
        self._wakeup.set()
        await proposal.done.wait()
        if proposal.error is not None:
            raise proposal.error
        return proposal.results

    async def _commit(self, batch: list[_Proposal]) -> None:
        first = self._fsm.applied_index + 1
        commands = [cmd for p in batch for cmd in p.commands]
        try:
            entries = [(first + i, encode_command(cmd)) for i, cmd in enumerate(commands)]
        except Exception as exc:  # an unencodable command: refused, nothing applied
            logger.exception("encoding %d commands failed", len(commands))
            for p in batch:
                p.error = exc
                p.done.set()
            return
        pairs = [(cmd, self._fsm.apply(first + i, cmd)) for i, cmd in enumerate(commands)]
        # Applied in memory; the commands and their effects are now stored in one
        # transaction. If that fails the in-memory state is ahead of the disk: the error is
        # fatal (the engine stops) and the next start reloads what was stored.
        await self._persist(pairs, replay=False, entries=entries)
        it = iter(pairs)
        for p in batch:
            p.results = [next(it)[1] for _ in p.commands]
            p.done.set()

    async def _persist(
        self,
        pairs: list[tuple[Command, Applied]],
        *,
        replay: bool,
        entries: list[tuple[int, bytes]] | None = None,
    ) -> None:
        effects = coalesce_effects([e for _, applied in pairs for e in applied.effects])
        meta = msgpack.packb(self._fsm.export_meta(), use_bin_type=True)
        index = self._fsm.applied_index
        compact = index - self._last_compacted >= COMPACT_EVERY
        await self._call(self._store_batch, entries or [], effects, index, meta, compact)
        if compact:
            self._last_compacted = index
        self.batches += 1
        self.commands_applied += len(pairs)
        self._on_applied(pairs, replay)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call in a worker thread (file store) or inline (in-memory store,
        whose calls are short; this keeps tests on a MockClock deterministic)."""
        if self._inline:
            await trio.lowlevel.checkpoint()
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args)

    def _store_batch(
        self,
        entries: list[tuple[int, bytes]],
        effects: list[Effect],
        index: int,
        meta: bytes,
        compact: bool,
    ) -> None:
        self._store.commit(entries, effects, applied_index=index, fsm_meta=meta)
        if compact:
            self._store.compact_commands(index - KEEP_COMMANDS)


def decode_meta(raw: bytes | None) -> dict | None:
    if not raw:
        return None
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)  # type: ignore[no-any-return]
