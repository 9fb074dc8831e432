"""The simulator's durable stores and the oracle that checks Raft's safety properties on them.

``SimStore`` is one node's disk: what the last COMPLETED save left (the simulator applies a
save only when its simulated latency has passed, so a crash loses saves in flight). The
bytes live in a ``MemoryStorage`` (so simulations exercise it, and its checks of the
``RaftStorage`` contract); beside it the store keeps a hash chain per stored entry.

``Oracle`` sees every node's disk, every applied entry and every message sent, and raises
``InvariantViolation`` the moment one of these breaks:

- election safety: at most one leader per term;
- log matching: two stored entries with the same index and term have the same content and
  the same prefix (compared by hash chains, through snapshots too);
- leader completeness: a leader of term T holds every entry committed in a term below T;
- state machine safety: every node applies the same entry at each index, in order, no gap,
  and a snapshot restores exactly the prefix it claims;
- no acknowledged (applied) entry is ever overwritten in a log;
- term and vote never go back on disk, also across restarts, nor in a live node;
- persistence before send: a message is sent only when what it promises is on disk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from trickle.errors import ValidationError
from trickle.raft.messages import (
    DurableState,
    Entry,
    HardState,
    Message,
    MessageType,
    NodeId,
    Snapshot,
)
from trickle.raft.storage import MemoryStorage
from trickle.testing._raftsim_kv import GENESIS_CHAIN, KvApp, chain_next

ENTRY_STORED_BYTES = 16  # per-entry bookkeeping counted in persisted_bytes (term, index, kind)
HARD_STATE_BYTES = 24

Fail = Callable[[str], None]  # raises; never returns


_PRE_VOTES = frozenset({MessageType.PRE_VOTE, MessageType.PRE_VOTE_RESP})
_EARLY_TYPES = frozenset({MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT})
_VOTE_RESP = MessageType.VOTE_RESP  # (globals: an enum member read through its class is slow)
_APPEND_RESP = MessageType.APPEND_RESP


class SimStore:
    """One node's durable state. Raises (through the oracle) when a write would break an
    invariant: overwriting a committed entry, term or vote going back, a gap in the log."""

    def __init__(self, node: NodeId, oracle: Oracle) -> None:
        self.node = node
        self._oracle = oracle
        self.hard = HardState()
        self.snapshot: Snapshot | None = None
        self.snap_chain = GENESIS_CHAIN
        self.entries: list[Entry] = []
        self.chains: list[bytes] = []
        self.memory = MemoryStorage()
        self.saves = 0

    # reads ------------------------------------------------------------------------------
    @property
    def snap_index(self) -> int:
        return self.snapshot.meta.index if self.snapshot else 0

    @property
    def first_index(self) -> int:
        return self.entries[0].index if self.entries else self.snap_index + 1

    @property
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snap_index

    def entry(self, index: int) -> Entry | None:
        if self.entries and self.entries[0].index <= index <= self.entries[-1].index:
            return self.entries[index - self.entries[0].index]
        return None

    def chain_at(self, index: int) -> bytes | None:
        """The hash chain of the stored log up to ``index``, if known."""
        if self.entries and self.entries[0].index <= index <= self.entries[-1].index:
            return self.chains[index - self.entries[0].index]
        if index == self.snap_index:
            return self.snap_chain
        return None

    def load(self) -> DurableState:
        """What a restarting node reads: MemoryStorage's view, checked against this one."""
        durable = self.memory.load()
        mine = DurableState(
            hard_state=self.hard, snapshot=self.snapshot, entries=tuple(self.entries)
        )
        if durable != mine:
            self._oracle.fail(
                f"node {self.node}: MemoryStorage loads {_brief(durable)}, the simulator "
                f"expected {_brief(mine)}"
            )
        return durable

    def persisted_bytes(self) -> int:
        """Bytes of Raft state on disk besides the snapshot (6.824's RaftStateSize)."""
        return HARD_STATE_BYTES + sum(ENTRY_STORED_BYTES + len(e.data) for e in self.entries)

    # writes -----------------------------------------------------------------------------
    def save(
        self,
        *,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: Snapshot | None = None,
    ) -> None:
        self.saves += 1
        try:
            self.memory.save(hard_state=hard_state, entries=entries, snapshot=snapshot)
        except ValidationError as exc:
            self._oracle.fail(f"node {self.node} saves what its storage refuses: {exc}")
        if snapshot is not None:
            self._install(snapshot)
        if entries:
            self._append(entries)
        if hard_state is not None:
            self._oracle.on_hard_state(self.node, self.hard, hard_state)
            self.hard = hard_state

    def compact(self, snapshot: Snapshot, *, keep_from: int) -> None:
        """The application's own snapshot at an applied index; entries below keep_from go."""
        try:
            self.memory.compact(snapshot, keep_from=keep_from)
        except ValidationError as exc:
            self._oracle.fail(f"node {self.node} compacts what its storage refuses: {exc}")
        if snapshot.meta.index > self.snap_index:
            chain = self._oracle.snapshot_chain(self.node, snapshot)
            self.snapshot = snapshot
            self.snap_chain = chain
        drop = max(0, min(keep_from, self.last_index + 1) - self.first_index)
        if drop and self.entries:
            del self.entries[:drop]
            del self.chains[:drop]

    def _install(self, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        if meta.index < self.snap_index:
            self._oracle.fail(
                f"node {self.node} persists snapshot {meta.term}/{meta.index} older than its "
                f"stored snapshot at {self.snap_index}"
            )
        chain = self._oracle.snapshot_chain(self.node, snapshot)
        mine = self.entry(meta.index)
        term = mine.term if mine is not None else None
        if term is None and self.snapshot is not None and meta.index == self.snap_index:
            term = self.snapshot.meta.term
        if term != meta.term:
            self._check_overwrite(self.entries, replacement=(), covered=meta.index)
            self.entries = []
            self.chains = []
        self.snapshot = snapshot
        self.snap_chain = chain

    def _append(self, entries: Sequence[Entry]) -> None:
        first = entries[0].index
        if len(entries) > 1:
            for offset, e in enumerate(entries):
                if e.index != first + offset:
                    self._oracle.fail(f"node {self.node} saves non-contiguous entries at {e.index}")
        mine = self.entries
        snap_index = self.snapshot.meta.index if self.snapshot else 0
        last = mine[-1].index if mine else snap_index
        if first > last + 1:
            self._oracle.fail(
                f"node {self.node} saves entries from {first} after a log ending at {last}: a gap"
            )
        if first <= snap_index:
            self._oracle.fail(
                f"node {self.node} saves entry {first} inside its snapshot (up to {snap_index})"
            )
        if mine and first < mine[0].index:
            self._oracle.fail(
                f"node {self.node} saves entry {first} below its first stored entry {mine[0].index}"
            )
        if mine and first <= last:
            cut = first - mine[0].index
            removed = mine[cut:]
            self._check_overwrite(removed, replacement=entries)
            del mine[cut:]
            del self.chains[cut:]
        if mine and mine[-1].index == first - 1:
            prev: bytes | None = self.chains[-1]  # self.chain_at(first - 1), the usual case
        else:
            prev = self.chain_at(first - 1)
        if prev is None:
            self._oracle.fail(f"node {self.node}: no chain below entry {first}")
            return
        on_stored = self._oracle.on_stored
        chains = self.chains
        for e in entries:
            prev = chain_next(prev, e)
            on_stored(self.node, e, prev)
            mine.append(e)
            chains.append(prev)

    def _check_overwrite(
        self, removed: Sequence[Entry], *, replacement: Sequence[Entry], covered: int = 0
    ) -> None:
        """A removed entry that some node applied (committed) must come back unchanged,
        unless a snapshot now covers its index (``covered``)."""
        by_index = {e.index: e for e in replacement}
        for old in removed:
            if old.index <= covered:
                continue
            committed = self._oracle.committed.get(old.index)
            if committed is None or committed[0] != old:
                continue
            new = by_index.get(old.index)
            if new != old:
                self._oracle.fail(
                    f"node {self.node} overwrites committed entry {old.describe()} "
                    f"with {new.describe() if new else 'nothing'}"
                )


def _brief(state: DurableState) -> str:
    entries = state.entries
    span = f"{entries[0].index}..{entries[-1].index}" if entries else "none"
    snap = state.snapshot.meta.describe() if state.snapshot else "no snapshot"
    return f"[{state.hard_state.describe()}; {snap}; entries {span}]"


class Oracle:
    """Global knowledge of the simulation, checked on every write, apply and send."""

    def __init__(self, fail: Fail) -> None:
        self.fail = fail
        self.chains: dict[tuple[int, int], bytes] = {}  # (index, term) -> chain
        # index -> (entry, chain, lowest term of a node when it applied it)
        self.committed: dict[int, tuple[Entry, bytes, int]] = {}
        self.max_committed = 0
        self.acked: dict[int, bytes] = {}  # index -> data acknowledged to a client / one()
        self.leaders: dict[int, NodeId] = {}  # term -> leader
        self.durable_max: dict[NodeId, HardState] = {}  # highest hard state ever on disk
        self.live_term: dict[NodeId, tuple[int, NodeId | None]] = {}  # per incarnation
        self.leader_checked: dict[tuple[NodeId, int], SimStore] = {}

    # logs ---------------------------------------------------------------------------------
    def on_stored(self, node: NodeId, entry: Entry, chain: bytes) -> None:
        key = (entry.index, entry.term)
        known = self.chains.setdefault(key, chain)
        if known != chain:
            self.fail(
                f"log matching: node {node} stores {entry.describe()} after a different "
                f"prefix (or with different content) than another node's entry "
                f"{entry.term}/{entry.index}"
            )
        committed = self.committed.get(entry.index)
        if committed is not None and committed[0].term == entry.term and committed[1] != chain:
            self.fail(f"node {node} stores {entry.describe()} unlike the committed entry")

    def snapshot_chain(self, node: NodeId, snapshot: Snapshot) -> bytes:
        """The chain a snapshot stands for; checks its image against the logs."""
        meta = snapshot.meta
        try:
            image = KvApp.decode(bytes(snapshot.data))
        except Exception as exc:
            self.fail(f"node {node}: snapshot {meta.term}/{meta.index} image unreadable: {exc}")
            raise
        if image.applied != meta.index:
            self.fail(
                f"node {node}: snapshot labelled {meta.term}/{meta.index} holds the state "
                f"at index {image.applied}"
            )
        known = self.chains.get((meta.index, meta.term))
        if known is not None and known != image.chain:
            self.fail(
                f"node {node}: snapshot {meta.term}/{meta.index} does not hold the log prefix "
                f"stored under that index and term"
            )
        committed = self.committed.get(meta.index)
        if committed is not None and committed[1] != image.chain:
            self.fail(f"node {node}: snapshot at {meta.index} differs from the committed prefix")
        return image.chain

    # state machines -------------------------------------------------------------------------
    def on_applied(self, node: NodeId, entry: Entry, chain: bytes, term: int) -> None:
        known = self.committed.get(entry.index)
        if known is None:
            self.committed[entry.index] = (entry, chain, term)
            self.max_committed = max(self.max_committed, entry.index)
            self._check_leaders_hold(entry, term)
            return
        if (known[0] is not entry and known[0] != entry) or known[1] != chain:
            self.fail(
                f"state machine safety: node {node} applies {entry.describe()} at index "
                f"{entry.index}, another node applied {known[0].describe()}"
            )
        if term < known[2]:
            self.committed[entry.index] = (known[0], known[1], term)

    def on_restored(self, node: NodeId, index: int, chain: bytes) -> None:
        known = self.committed.get(index)
        if known is not None and known[1] != chain:
            self.fail(
                f"state machine safety: node {node} restores a snapshot at {index} unlike "
                f"the prefix other nodes applied"
            )

    def acknowledge(self, index: int, data: bytes) -> None:
        """A client (or one()) was told ``data`` committed at ``index``."""
        known = self.committed.get(index)
        if known is None or known[0].data != data:
            self.fail(f"acknowledged entry at {index} is not the committed one")
        self.acked[index] = data

    # elections and terms ----------------------------------------------------------------------
    def on_status(self, node: NodeId, term: int, vote: NodeId | None, leader: bool) -> None:
        """A live node's in-memory term and vote, after every step it took."""
        last = self.live_term.get(node)
        if last is not None:
            if term < last[0]:
                self.fail(f"node {node}'s term went back from {last[0]} to {term}")
            if term == last[0] and last[1] is not None and vote != last[1]:
                self.fail(f"node {node} changed its vote in term {term}: {last[1]} -> {vote}")
        self.live_term[node] = (term, vote)
        if leader:
            other = self.leaders.setdefault(term, node)
            if other != node:
                self.fail(f"election safety: {other} and {node} are both leaders of term {term}")

    def on_restart(self, node: NodeId, term: int, vote: NodeId | None) -> None:
        """A new incarnation starts from disk: its term must not be below any term that was
        durable on that disk."""
        self.live_term.pop(node, None)
        durable = self.durable_max.get(node)
        if durable is not None and (
            term < durable.term or (term == durable.term and durable.vote and vote != durable.vote)
        ):
            self.fail(
                f"node {node} restarts at term={term} vote={vote}, its disk once held "
                f"{durable.describe()}"
            )
        self.on_status(node, term, vote, leader=False)

    def on_hard_state(self, node: NodeId, old: HardState, new: HardState) -> None:
        if new.term < old.term:
            self.fail(f"node {node} persists term {new.term} below its stored {old.term}")
        if new.term == old.term and old.vote is not None and new.vote != old.vote:
            self.fail(
                f"node {node} persists vote {new.vote} in term {new.term}, it had voted {old.vote}"
            )
        best = self.durable_max.get(node)
        if best is None or (new.term, new.vote is not None) > (best.term, best.vote is not None):
            self.durable_max[node] = new

    # persistence before send ----------------------------------------------------------------
    def on_send(self, node: NodeId, msg: Message, store: SimStore, early: bool) -> None:
        """``early``: a leader message sent before the Ready's writes completed."""
        t = msg.type
        if t in _PRE_VOTES:
            return  # pre-votes are about a term nobody holds yet
        if early and t not in _EARLY_TYPES:
            self.fail(f"node {node} sends {msg.describe()} before its writes are durable")
        if msg.term > store.hard.term:
            self.fail(
                f"persistence order: node {node} sends {msg.describe()} while its disk holds "
                f"term {store.hard.term}"
            )
        if t is _VOTE_RESP and not msg.reject:
            if store.hard.vote != msg.dst or store.hard.term != msg.term:
                self.fail(
                    f"persistence order: node {node} grants a vote to {msg.dst} in term "
                    f"{msg.term} while its disk holds {store.hard.describe()}"
                )
        elif t is _APPEND_RESP and not msg.reject:
            if msg.index > store.last_index:
                self.fail(
                    f"persistence order: node {node} acknowledges entries up to {msg.index}, "
                    f"its disk ends at {store.last_index}"
                )

    # leader completeness ----------------------------------------------------------------------
    def on_leader_log_durable(self, node: NodeId, term: int, store: SimStore) -> None:
        """Leader ``node`` of ``term`` has its own first entries on disk: its log must hold
        every entry known committed in a lower term."""
        key = (node, term)
        if key in self.leader_checked:
            return
        self.leader_checked[key] = store
        for index in range(max(store.first_index, 1), self.max_committed + 1):
            known = self.committed.get(index)
            if known is not None and known[2] < term:
                self._compare_leader_entry(node, term, store, known[0])

    def forget_leader(self, node: NodeId) -> None:
        for key in [k for k in self.leader_checked if k[0] == node]:
            del self.leader_checked[key]

    def _check_leaders_hold(self, entry: Entry, bound: int) -> None:
        for (node, term), store in sorted(self.leader_checked.items()):
            if term > bound and entry.index >= store.first_index:
                self._compare_leader_entry(node, term, store, entry)

    def _compare_leader_entry(self, node: NodeId, term: int, store: SimStore, want: Entry) -> None:
        have = store.entry(want.index)
        if have != want:
            self.fail(
                f"leader completeness: leader {node} of term {term} holds "
                f"{have.describe() if have else 'nothing'} at {want.index}, committed "
                f"{want.describe()} in an earlier term"
            )
