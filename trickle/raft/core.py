"""The Raft state machine: no I/O, no clock, no global random (etcd-io/raft's shape).

Feed it ``tick()``, ``step(message)`` and proposals; take a ``Ready`` with what to persist,
send and apply; do that in order; then ``advance(ready)``::

    node = RaftNode(NodeId("a"), config=RaftConfig(), rng=random.Random(seed),
                    durable=storage.load(), bootstrap=ConfState(voters=...))
    while True:
        ...  # node.tick() every tick; node.step(msg) for each message received
        if node.has_ready():
            rd = node.ready()
            send(rd.leader_messages)            # may go before the writes below
            storage.save(hard_state=rd.hard_state, entries=rd.entries, snapshot=rd.snapshot)
            send(rd.messages)                   # only once the writes are durable
            if rd.snapshot: fsm.restore(rd.snapshot)
            for entry in rd.committed_entries: fsm.apply(entry)
            node.advance(rd)

Guarantees: at most one leader per term; an entry is committed only when a quorum of the
current configuration stores it and it (or a later entry) is from the leader's term
(Figure 8); a node never sends a message that depends on state it has not been told is
durable (``messages`` vs ``leader_messages``); term and vote never go back.
"""

from __future__ import annotations

import enum
import random

import attrs

from trickle.raft.config import RaftConfig
from trickle.raft.messages import (
    ConfChange,
    ConfState,
    DurableState,
    Entry,
    HardState,
    Message,
    NodeId,
    Snapshot,
    SnapshotMeta,
)


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class ProgressState(enum.Enum):
    PROBE = "probe"  # one APPEND in flight per heartbeat until the match is found
    REPLICATE = "replicate"  # up to max_inflight APPENDs, next advanced optimistically
    SNAPSHOT = "snapshot"  # sending a snapshot; no APPENDs until it is installed


@attrs.frozen
class SoftState:
    """Volatile state worth telling the application about when it changes."""

    role: Role
    leader: NodeId | None
    term: int

    def describe(self) -> str:
        return f"{self.role.value} term={self.term} leader={self.leader or '-'}"


@attrs.frozen
class ReadState:
    """A linearizable read may be served once the state machine applied ``index``."""

    index: int
    context: bytes


@attrs.frozen
class Ready:
    """Everything the node wants done, in this order (see the module docstring).

    hard_state: changed term/vote/commit to persist, or None.
    entries: to append durably; the first one's index replaces the stored suffix from it.
    snapshot: received from the leader: persist it (it supersedes the log it covers) and
        restore the state machine from it before applying ``committed_entries``.
    leader_messages: a leader's APPEND/HEARTBEAT/SNAPSHOT; may be sent before the writes.
    messages: everything else; send only once the writes above are durable.
    committed_entries: apply in order; they are durable once this Ready's writes are.
    read_states: reads that may be served once their index is applied.
    soft_state: role/leader/term when they changed, else None.
    conf: the configuration when it changed (peers to connect to), else None.
    """

    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    leader_messages: tuple[Message, ...] = ()
    messages: tuple[Message, ...] = ()
    committed_entries: tuple[Entry, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    soft_state: SoftState | None = None
    conf: ConfState | None = None

    @property
    def must_sync(self) -> bool:
        return self.hard_state is not None or bool(self.entries) or self.snapshot is not None

    def describe(self) -> str:
        """One line summarising the Ready (counts and ranges, not every message)."""
        raise NotImplementedError


@attrs.frozen
class Progress:
    """The leader's view of one follower."""

    match: int
    next: int
    state: ProgressState
    learner: bool
    recent_active: bool


@attrs.frozen
class Status:
    id: NodeId
    role: Role
    term: int
    vote: NodeId | None
    leader: NodeId | None
    commit: int
    applied: int
    first_index: int  # first entry held in memory (after compaction)
    last_index: int
    conf: ConfState
    progress: dict[NodeId, Progress]  # empty unless leader
    transferee: NodeId | None  # leadership transfer in progress to this node
    dropped_messages: int  # messages ignored: stale term, unknown sender, wrong dst


class RaftNode:
    """One member of a Raft group as a pure state machine.

    ``durable`` is what storage recovered (None: nothing). When it is empty and ``bootstrap`` is given,
    the node starts a new cluster: its first Ready appends one ADD_VOTER conf-change entry
    per bootstrap voter (term 1, sorted by id, committed), identical on every bootstrap
    node. A node with empty state and no ``bootstrap`` waits to be contacted by a leader.
    ``applied`` is the last index the application's state machine already holds; entries
    up to it are not delivered again (if it is below the snapshot's index, the first Ready
    carries the snapshot to restore). A sole voter becomes leader at its first tick.
    """

    def __init__(
        self,
        id: NodeId,
        *,
        config: RaftConfig,
        rng: random.Random,
        durable: DurableState | None = None,
        applied: int = 0,
        bootstrap: ConfState | None = None,
    ) -> None:
        raise NotImplementedError

    # inputs -----------------------------------------------------------------------------
    def tick(self) -> None:
        """One unit of time: election timeout for followers, heartbeats for a leader."""
        raise NotImplementedError

    def step(self, message: Message) -> None:
        """Take a message from a peer. Stale, misaddressed or unknown-sender messages are
        dropped (counted in ``status().dropped_messages``); never raises on bad input."""
        raise NotImplementedError

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append ``data`` as a new entry; returns its (term, index). The caller learns the
        outcome when an entry at that index is applied: same term -> committed, another
        term -> lost. Raises NotLeader, or ProposalDropped during a leadership transfer.
        A lone proposal is sent at once (never waits for a tick)."""
        raise NotImplementedError

    def propose_conf_change(self, change: ConfChange) -> tuple[int, int]:
        """Append a membership change, effective as soon as it is appended (thesis 4.1).
        Raises NotLeader; ConfChangeRejected when a change is still uncommitted or the
        change makes no sense (adding a member twice, promoting a non-learner, removing an
        unknown node, removing the last voter)."""
        raise NotImplementedError

    def transfer_leadership(self, to: NodeId) -> None:
        """Hand leadership to voter ``to`` once its log is caught up (TIMEOUT_NOW). New
        proposals are dropped meanwhile; the transfer is abandoned after election_ticks.
        Raises NotLeader, or ValidationError if ``to`` is not a voter."""
        raise NotImplementedError

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point; a ReadState with ``context`` comes in a later
        Ready once a quorum confirmed this leader (followers ask the leader). Raises
        NotLeader when no leader is known. A request lost to a leader change is dropped
        silently: callers time out and retry."""
        raise NotImplementedError

    def campaign(self) -> None:
        """Start an election now (tests; the target of a transfer does it itself)."""
        raise NotImplementedError

    def report_unreachable(self, node: NodeId) -> None:
        """The transport lost ``node``: a leader falls back to probing it."""
        raise NotImplementedError

    def compact(self, snapshot: Snapshot) -> int:
        """The application took ``snapshot`` of its state at ``snapshot.meta.index``
        (<= applied) and made it durable; keep it for slow followers and drop in-memory
        entries below ``index - trailing_entries + 1``. Returns the first index kept, which
        the caller passes to its storage's compact()."""
        raise NotImplementedError

    def snapshot_meta(self, index: int) -> SnapshotMeta:
        """Term and configuration as of applied ``index`` (to label a snapshot taken there).
        Raises ValidationError if ``index`` is not applied or no longer known."""
        raise NotImplementedError

    # outputs ----------------------------------------------------------------------------
    def has_ready(self) -> bool:
        raise NotImplementedError

    def ready(self) -> Ready:
        """What to do now. Call ``advance(ready)`` once it is done before the next one."""
        raise NotImplementedError

    def advance(self, ready: Ready) -> None:
        """The Ready was carried out: its writes are durable, its committed entries applied."""
        raise NotImplementedError

    def status(self) -> Status:
        raise NotImplementedError
