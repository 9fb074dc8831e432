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

Between ``ready()`` and ``advance()`` the node may keep taking ticks, messages and
proposals (the driver persists in a worker thread meanwhile); ``has_ready()`` is False
until the outstanding Ready is advanced.

Followers hear of a new commit index with the next APPEND, or at the leader's next tick
at the latest (hashicorp/raft's CommitTimeout): a busy leader's APPENDs carry it anyway,
and announcing every commit at once would double the messages of a lone client (an
empty APPEND and its answer per follower per commit). ``expedite_commit(index)`` has it
announced the moment ``index`` commits, for a follower that waits for that entry.

Roles are swapped step functions (follower, pre-candidate/candidate, leader). Membership
changes one server at a time and counts from the moment its entry is appended (thesis
4.1). Reads: ReadIndex (thesis 6.4) confirmed by a heartbeat round.
"""

from __future__ import annotations

import enum
import heapq
import random
from collections.abc import Callable
from typing import cast

import attrs

from trickle.errors import (
    ConfChangeRejected,
    NotLeader,
    ProposalDropped,
    StorageCorrupt,
    ValidationError,
)
from trickle.raft import _quorum
from trickle.raft._conf import rejection_reason
from trickle.raft._fastinit import fast_frozen_init, frozen_factory
from trickle.raft._log import ENTRY_OVERHEAD_BYTES, RaftLog
from trickle.raft._progress import PeerProgress, ProgressState
from trickle.raft.config import RaftConfig
from trickle.raft.messages import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    NodeId,
    Snapshot,
    SnapshotMeta,
)
from trickle.raft.wire import encode_conf_change

__all__ = [
    "ProgressState",
    "Progress",
    "RaftNode",
    "ReadState",
    "Ready",
    "Role",
    "SoftState",
    "Status",
]

TRANSFER_CONTEXT = b"transfer"  # VOTE context of a campaign started by TIMEOUT_NOW
COMMITTED_BYTES_FACTOR = 8  # committed entries per Ready: up to max_msg_bytes * this
SNAPSHOT_RESEND_HEARTBEATS = 2  # heartbeat intervals without an ack before a chunk is resent

# Enum members as module constants: reading one through its class (MessageType.APPEND)
# goes through the enum's metaclass, ~10x slower than a global on Python 3.11.
_MT_APPEND = MessageType.APPEND
_MT_APPEND_RESP = MessageType.APPEND_RESP
_MT_HEARTBEAT = MessageType.HEARTBEAT
_MT_HEARTBEAT_RESP = MessageType.HEARTBEAT_RESP
_MT_PRE_VOTE = MessageType.PRE_VOTE
_MT_PRE_VOTE_RESP = MessageType.PRE_VOTE_RESP
_MT_READ_INDEX = MessageType.READ_INDEX
_MT_READ_INDEX_RESP = MessageType.READ_INDEX_RESP
_MT_SNAPSHOT = MessageType.SNAPSHOT
_MT_SNAPSHOT_RESP = MessageType.SNAPSHOT_RESP
_MT_TIMEOUT_NOW = MessageType.TIMEOUT_NOW
_MT_VOTE = MessageType.VOTE
_MT_VOTE_RESP = MessageType.VOTE_RESP
_PS_PROBE = ProgressState.PROBE
_PS_REPLICATE = ProgressState.REPLICATE
_PS_SNAPSHOT = ProgressState.SNAPSHOT
_KIND_CONF_CHANGE = EntryKind.CONF_CHANGE
_KIND_NORMAL = EntryKind.NORMAL
_VOTE_LOST = _quorum.VoteResult.LOST
_VOTE_WON = _quorum.VoteResult.WON
_LEADER_TYPES = frozenset({_MT_APPEND, _MT_HEARTBEAT, _MT_SNAPSHOT})
_ENTRY_KINDS = frozenset(EntryKind)
_RESPONSE_TYPES = frozenset(
    {_MT_PRE_VOTE_RESP, _MT_VOTE_RESP, _MT_APPEND_RESP, _MT_HEARTBEAT_RESP, _MT_SNAPSHOT_RESP}
)


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


_ROLE_CANDIDATE = Role.CANDIDATE
_ROLE_FOLLOWER = Role.FOLLOWER
_ROLE_LEADER = Role.LEADER
_ROLE_PRE_CANDIDATE = Role.PRE_CANDIDATE


@fast_frozen_init
@attrs.frozen
class SoftState:
    """Volatile state worth telling the application about when it changes."""

    role: Role
    leader: NodeId | None
    term: int

    def describe(self) -> str:
        return f"{self.role.value} term={self.term} leader={self.leader or '-'}"


@fast_frozen_init
@attrs.frozen
class ReadState:
    """A linearizable read may be served once the state machine applied ``index``."""

    index: int
    context: bytes


@fast_frozen_init
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
        """One line summarising the Ready (counts and ranges, not every message), e.g.
        ``Ready hs=(term=2 vote=1 commit=3) entries=4..5 lead-msgs=2 msgs=1 apply=3..5``."""
        parts = ["Ready"]
        if self.hard_state is not None:
            parts.append(f"hs=({self.hard_state.describe()})")
        if self.entries:
            parts.append(f"entries={_range(self.entries)}")
        if self.snapshot is not None:
            meta = self.snapshot.meta
            parts.append(f"snapshot={meta.term}/{meta.index}")
        if self.leader_messages:
            parts.append(f"lead-msgs={len(self.leader_messages)}")
        if self.messages:
            parts.append(f"msgs={len(self.messages)}")
        if self.committed_entries:
            parts.append(f"apply={_range(self.committed_entries)}")
        if self.read_states:
            parts.append(f"reads={len(self.read_states)}")
        if self.soft_state is not None:
            parts.append(f"soft=({self.soft_state.describe()})")
        if self.conf is not None:
            parts.append(f"conf=({self.conf.describe()})")
        if len(parts) == 1:
            parts.append("(empty)")
        return " ".join(parts)


def _range(entries: tuple[Entry, ...]) -> str:
    first, last = entries[0].index, entries[-1].index
    return str(first) if first == last else f"{first}..{last}"


# The values built per message and per Ready, built without type.__call__ (see _fastinit).
_new_message = frozen_factory(Message)
_new_entry = frozen_factory(Entry)
_new_hard_state = frozen_factory(HardState)
_new_soft_state = frozen_factory(SoftState)
_new_read_state = frozen_factory(ReadState)
_new_ready = frozen_factory(Ready)


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


@attrs.define(eq=False)
class _PendingRead:
    """A read-index request recorded by the leader: serve it once round ``round`` is
    confirmed by a quorum. ``requester`` is this node or a follower that forwarded it."""

    round: int
    index: int
    context: bytes
    requester: NodeId


@attrs.define(eq=False)
class _SnapshotReceiver:
    """Chunks of one snapshot received so far from one leader."""

    source: NodeId
    meta: SnapshotMeta
    data: bytearray


class RaftNode:
    """One member of a Raft group as a pure state machine.

    ``durable`` is what storage recovered (None: nothing). When it is empty and ``bootstrap`` is given,
    the node starts a new cluster: its first Ready appends one ADD_VOTER conf-change entry
    per bootstrap voter (term 1, sorted by id, committed), identical on every bootstrap
    node. A node with empty state and no ``bootstrap`` waits to be contacted by a leader.
    ``applied`` is the last index the application's state machine already holds; entries
    up to it are not delivered again (if it is below the snapshot's index, the first Ready
    carries the snapshot to restore). A sole voter becomes leader at its first tick.

    Bootstrap learners (``bootstrap.learners``) get one ADD_LEARNER entry each, sorted,
    after the voters'. Raises ValidationError for a bad id, bootstrap or ``applied``, and
    StorageCorrupt when ``durable`` is inconsistent (entries with gaps, a commit beyond
    the log, entries of a term above the stored term).
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
        if not isinstance(id, str) or not id:
            raise ValidationError("a Raft node id must be a non-empty string", field="id")
        if not isinstance(config, RaftConfig):
            raise ValidationError("config must be a RaftConfig", field="config")
        if not isinstance(rng, random.Random):
            raise ValidationError("rng must be a random.Random", field="rng")
        if isinstance(applied, bool) or not isinstance(applied, int) or applied < 0:
            raise ValidationError("applied must be a non-negative int", field="applied")
        self._id = id
        self._config = config
        self._rng = rng
        self._dropped = 0

        self._snapshot: Snapshot | None = None  # latest snapshot (sent to slow followers)
        self._unstable_snapshot: Snapshot | None = None  # to persist/restore in next Ready
        if durable is None or durable.is_empty():
            hs, self._log, prev_hs = self._initial_log(bootstrap)
        else:
            hs, self._log = self._recovered_log(durable)
            prev_hs = durable.hard_state
            self._snapshot = durable.snapshot
        self._term = hs.term
        self._vote: NodeId | None = hs.vote
        self._commit = hs.commit
        if applied > self._log.last_index:
            raise ValidationError(
                f"applied {applied} is beyond the log's last index {self._log.last_index}",
                field="applied",
            )
        if applied > self._commit:
            # The application applied only committed entries: the commit was not saved.
            self._commit = applied
        self._applied = applied
        if self._snapshot is not None and applied < self._log.offset:
            # The state machine is behind the log's start: restore it from the snapshot.
            self._unstable_snapshot = self._snapshot
        self._cool()

        # Ready bookkeeping
        self._prev_hs = prev_hs  # hard state as last handed out
        self._durable_term = prev_hs.term  # term known durable (leader messages may go early)
        self._outstanding: Ready | None = None
        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._prev_soft = SoftState(role=_ROLE_FOLLOWER, leader=None, term=prev_hs.term)
        self._conf = self._log.conf_latest()
        self._conf_dirty = bool(self._conf.voters or self._conf.learners)
        self._voters: tuple[NodeId, ...] = tuple(sorted(self._conf.voters))
        # A leader replicates to the members of the latest and of the committed
        # configuration: a removed node still learns of its removal.
        self._targets: tuple[NodeId, ...] = ()
        self._committed_conf: ConfState | None = None
        # Nodes whose removal committed, tracked until they hold the commit index
        # given here (then told it) or for an election timeout (ticks left).
        self._leaving: dict[NodeId, list[int]] = {}

        # volatile role state
        self._role = _ROLE_FOLLOWER
        self._step_role: Callable[[Message], None] = self._step_follower
        self._tick_role: Callable[[], None] = self._tick_election
        self._lead: NodeId | None = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = config.election_ticks
        self._votes: dict[NodeId, bool] = {}
        self._prs: dict[NodeId, PeerProgress] = {}
        self._transferee: NodeId | None = None
        self._bcast_pending = False
        self._commit_bcast = False  # followers must hear of a new commit (next flush/tick)
        self._expedite: list[int] = []  # heap: indexes whose commit is announced at once
        self._reads_waiting: list[tuple[bytes, NodeId]] = []  # until committed in term
        self._reads: list[_PendingRead] = []
        self._read_round = 0
        self._read_round_open = False
        self._snap_recv: _SnapshotReceiver | None = None
        self._become_follower(self._term, None)

    # loading ------------------------------------------------------------------------------
    def _initial_log(self, bootstrap: ConfState | None) -> tuple[HardState, RaftLog, HardState]:
        log = RaftLog()
        if bootstrap is None:
            return HardState(), log, HardState()
        if not isinstance(bootstrap, ConfState) or not bootstrap.voters:
            raise ValidationError("bootstrap needs at least one voter", field="bootstrap")
        for node in bootstrap.voters | bootstrap.learners:
            if not isinstance(node, str) or not node:
                raise ValidationError(
                    "bootstrap member ids must be non-empty strings", field="bootstrap"
                )
        if bootstrap.voters & bootstrap.learners:
            raise ValidationError(
                "a bootstrap member cannot be voter and learner", field="bootstrap"
            )
        changes = [ConfChange(op=ConfChangeOp.ADD_VOTER, node=n) for n in sorted(bootstrap.voters)]
        changes += [
            ConfChange(op=ConfChangeOp.ADD_LEARNER, node=n) for n in sorted(bootstrap.learners)
        ]
        entries = [
            Entry(1, i, _KIND_CONF_CHANGE, encode_conf_change(change))
            for i, change in enumerate(changes, start=1)
        ]
        log.append(entries)
        return HardState(term=1, vote=None, commit=len(entries)), log, HardState()

    def _recovered_log(self, durable: DurableState) -> tuple[HardState, RaftLog]:
        hs = durable.hard_state
        entries = list(durable.entries)
        for i in range(1, len(entries)):
            if entries[i].index != entries[i - 1].index + 1:
                raise StorageCorrupt(
                    f"stored entries jump from {entries[i - 1].index} to {entries[i].index}"
                )
        snap = durable.snapshot
        offset = offset_term = 0
        conf_base_index, conf_base = 0, ConfState()
        if snap is not None:
            s_index, s_term = snap.meta.index, snap.meta.term
            conf_base_index, conf_base = s_index, snap.meta.conf
            offset, offset_term = s_index, s_term
            if entries:
                first, last = entries[0].index, entries[-1].index
                if first > s_index + 1:
                    raise StorageCorrupt(
                        f"stored entries start at {first}, after snapshot {s_index}"
                    )
                if last <= s_index or (
                    first <= s_index and entries[s_index - first].term != s_term
                ):
                    entries = []  # all covered by the snapshot, or another history
                elif first == 1:
                    offset, offset_term = 0, 0
                elif first <= s_index:
                    # The term before the first kept entry is unknown: it becomes the offset.
                    offset, offset_term = first, entries[0].term
                    entries = entries[1:]
        elif entries and entries[0].index != 1:
            raise StorageCorrupt(f"stored entries start at {entries[0].index} with no snapshot")
        log = RaftLog(
            offset=offset,
            offset_term=offset_term,
            entries=entries,
            conf_base_index=conf_base_index,
            conf_base=conf_base,
        )
        if log.last_term() > hs.term:
            raise StorageCorrupt(f"stored entries of term {log.last_term()} above term {hs.term}")
        commit = max(hs.commit, snap.meta.index if snap is not None else 0)
        if commit > log.last_index:
            raise StorageCorrupt(f"stored commit {commit} beyond the last index {log.last_index}")
        return HardState(term=hs.term, vote=hs.vote, commit=commit), log

    # inputs -----------------------------------------------------------------------------
    def tick(self) -> None:
        """One unit of time: election timeout for followers, heartbeats for a leader."""
        self._tick_role()

    def step(self, message: Message) -> None:
        """Take a message from a peer. Stale, misaddressed or unknown-sender messages are
        dropped (counted in ``status().dropped_messages``); never raises on bad input."""
        m = message
        if not self._valid(m):
            self._dropped += 1
            return
        t = m.type
        if t in _RESPONSE_TYPES or t is _MT_READ_INDEX:
            src = m.src
            if (
                src not in self._conf.voters
                and src not in self._conf.learners
                and src not in self._prs
            ):
                self._dropped += 1  # from outside the configuration
                return
        if m.term > self._term:
            if t is _MT_VOTE or t is _MT_PRE_VOTE:
                in_lease = (
                    self._config.check_quorum
                    and self._lead is not None
                    and self._election_elapsed < self._config.election_ticks
                )
                if in_lease and m.context != TRANSFER_CONTEXT:
                    self._dropped += 1  # we hear from a live leader: ignore the campaign
                    return
            if t is _MT_PRE_VOTE or (t is _MT_PRE_VOTE_RESP and not m.reject):
                pass  # a pre-vote changes no term; a granted one comes from our future term
            elif t in _LEADER_TYPES:
                self._become_follower(m.term, m.src)
            else:
                self._become_follower(m.term, None)
        elif m.term < self._term:
            if (self._config.check_quorum or self._config.pre_vote) and (
                t is _MT_APPEND or t is _MT_HEARTBEAT
            ):
                # A deposed leader (or one cut off by our pre-votes) learns our term.
                self._send(_MT_APPEND_RESP, m.src)
            elif t is _MT_PRE_VOTE:
                self._send(_MT_PRE_VOTE_RESP, m.src, reject=True)
            self._dropped += 1
            return
        if t is _MT_VOTE or t is _MT_PRE_VOTE:
            self._handle_vote_request(m)
        else:
            self._step_role(m)

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append ``data`` as a new entry; returns its (term, index). The caller learns the
        outcome when an entry at that index is applied: same term -> committed, another
        term -> lost. Raises NotLeader, or ProposalDropped during a leadership transfer.
        A lone proposal is sent at once (never waits for a tick)."""
        if not isinstance(data, bytes):
            raise ValidationError("a proposal's data must be bytes", field="data")
        self._check_can_propose()
        index = self._log.last_index + 1
        self._append_local(_new_entry(self._term, index, _KIND_NORMAL, data))
        return self._term, index

    def propose_conf_change(self, change: ConfChange) -> tuple[int, int]:
        """Append a membership change, effective as soon as it is appended (thesis 4.1).
        Raises NotLeader; ConfChangeRejected when a change is still uncommitted or the
        change makes no sense (adding a member twice, promoting a non-learner, removing an
        unknown node, removing the last voter)."""
        if not isinstance(change, ConfChange):
            raise ValidationError("propose_conf_change needs a ConfChange", field="change")
        self._check_can_propose()
        pending = self._log.last_conf_index()
        if pending > self._commit:
            raise ConfChangeRejected(
                f"the membership change at index {pending} is not committed yet"
            )
        reason = rejection_reason(self._conf, change)
        if reason is not None:
            raise ConfChangeRejected(f"cannot {change.describe()}: {reason}")
        index = self._log.last_index + 1
        data = encode_conf_change(change)
        self._append_local(Entry(self._term, index, _KIND_CONF_CHANGE, data))
        return self._term, index

    def transfer_leadership(self, to: NodeId) -> None:
        """Hand leadership to voter ``to`` once its log is caught up (TIMEOUT_NOW). New
        proposals are dropped meanwhile; the transfer is abandoned after election_ticks.
        Raises NotLeader, or ValidationError if ``to`` is not a voter."""
        if self._role is not _ROLE_LEADER:
            raise NotLeader(self._lead)
        if to == self._id:
            return
        if to not in self._conf.voters:
            raise ValidationError(f"cannot transfer leadership to {to}: not a voter", field="to")
        if self._transferee == to:
            return
        self._transferee = to
        self._election_elapsed = 0  # the transfer must finish within an election timeout
        pr = self._prs[to]
        if pr.match == self._log.last_index:
            self._send(_MT_TIMEOUT_NOW, to)
        else:
            self._send_append(to)

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point; a ReadState with ``context`` comes in a later
        Ready once a quorum confirmed this leader (followers ask the leader). Raises
        NotLeader when no leader is known. A request lost to a leader change is dropped
        silently: callers time out and retry."""
        if not isinstance(context, bytes):
            raise ValidationError("a read context must be bytes", field="context")
        if self._role is _ROLE_LEADER:
            self._leader_read(context, self._id)
        elif self._role is _ROLE_FOLLOWER and self._lead is not None:
            self._send(_MT_READ_INDEX, self._lead, context=context)
        else:
            raise NotLeader(None)

    def expedite_commit(self, index: int) -> None:
        """On a leader: announce the commit of ``index`` to the followers as soon as it
        commits, instead of with the next APPEND or tick (call it for an entry a follower
        waits for, such as a proposal it forwarded). A no-op on other roles."""
        if self._role is not _ROLE_LEADER:
            return
        if index > self._commit:
            heapq.heappush(self._expedite, index)
        elif self._commit_bcast:
            self._bcast_pending = True

    def campaign(self) -> None:
        """Start an election now (tests; the target of a transfer does it itself)."""
        self._hup(transfer=False)

    def report_unreachable(self, node: NodeId) -> None:
        """The transport lost ``node``: a leader falls back to probing it."""
        if self._role is not _ROLE_LEADER:
            return
        pr = self._prs.get(node)
        if pr is not None and node != self._id and pr.state is _PS_REPLICATE:
            pr.become_probe()

    def compact(self, snapshot: Snapshot) -> int:
        """The application took ``snapshot`` of its state at ``snapshot.meta.index``
        (<= applied) and made it durable; keep it for slow followers and drop in-memory
        entries below ``index - trailing_entries + 1`` (or more: the entries kept below the
        snapshot hold at most ``trailing_bytes`` of data). Returns the first index kept, which
        the caller passes to its storage's compact(). Raises ValidationError when the
        snapshot is beyond ``applied`` or its term or configuration do not match the log
        (label it with ``snapshot_meta``); an older snapshot than the one held changes
        nothing."""
        if not isinstance(snapshot, Snapshot):
            raise ValidationError("compact needs a Snapshot", field="snapshot")
        meta = snapshot.meta
        if meta.index > self._applied:
            raise ValidationError(
                f"snapshot index {meta.index} is beyond the applied index {self._applied}",
                field="snapshot",
            )
        held = self._snapshot.meta.index if self._snapshot is not None else 0
        if meta.index <= held or meta.index <= self._log.offset:
            return self._log.first_index
        term = self._log.term(meta.index)
        if term != meta.term:
            raise ValidationError(
                f"snapshot term {meta.term} at index {meta.index} does not match the log's {term}",
                field="snapshot",
            )
        conf = self._log.conf(meta.index)
        if conf is not None and conf != meta.conf:
            raise ValidationError(
                f"snapshot configuration {meta.conf.describe()} does not match the log's "
                f"{conf.describe()} at index {meta.index}",
                field="snapshot",
            )
        self._snapshot = snapshot
        new_offset = meta.index - self._config.trailing_entries
        # ... and no more than trailing_bytes of them (big batched entries add up)
        over = self._log.over_budget_from(
            meta.index, max(new_offset, self._log.offset), self._config.trailing_bytes
        )
        if over is not None:
            new_offset = over
        if new_offset > self._log.offset:
            self._log.compact_to(new_offset)
        return self._log.first_index

    def _cool(self) -> None:
        """Keep the data of at most hot_log_bytes of applied, durable entries in memory:
        once over, down to three quarters of it (cooling moves the list of hot entries,
        so it is done in steps, not at every Ready)."""
        keep = self._config.hot_log_bytes
        log = self._log
        if keep is not None and log.hot_bytes > keep:
            log.cool(min(self._applied, log.unstable_from - 1), keep - keep // 4)

    def snapshot_meta(self, index: int) -> SnapshotMeta:
        """Term and configuration as of applied ``index`` (to label a snapshot taken there).
        Raises ValidationError if ``index`` is not applied or no longer known."""
        if index > self._applied:
            raise ValidationError(
                f"index {index} is not applied (applied {self._applied})", field="index"
            )
        term = self._log.term(index)
        conf = self._log.conf(index)
        if term is None or conf is None:
            raise ValidationError(f"index {index} is no longer known (compacted)", field="index")
        return SnapshotMeta(index=index, term=term, conf=conf)

    # outputs ----------------------------------------------------------------------------
    def has_ready(self) -> bool:
        """True when ``ready()`` has something; False while a Ready is outstanding."""
        if self._outstanding is not None:
            return False
        if self._msgs or self._bcast_pending or self._read_states or self._conf_dirty:
            return True
        log = self._log
        last = log.last_index
        if log.unstable_from <= last or self._unstable_snapshot is not None:
            return True
        applied = self._applied
        commit = self._commit
        if commit > applied and last > applied:
            return True
        term = self._term
        hs = self._prev_hs
        if hs.term != term or hs.vote != self._vote or hs.commit != commit:
            return True
        soft = self._prev_soft
        return soft.role is not self._role or soft.leader != self._lead or soft.term != term

    def ready(self) -> Ready:
        """What to do now. Call ``advance(ready)`` once it is done before the next one.
        Raises RuntimeError while the previous Ready is not advanced."""
        if self._outstanding is not None:
            raise RuntimeError("ready() called before advance() of the previous Ready")
        if self._bcast_pending:
            self._flush_appends()
        term, vote, commit = self._term, self._vote, self._commit
        hs = self._prev_hs
        hard_state = None
        if hs.term != term or hs.vote != vote or hs.commit != commit:
            hs = hard_state = _new_hard_state(term, vote, commit)
        leader_msgs: tuple[Message, ...] = ()
        msgs: tuple[Message, ...] = ()
        pending = self._msgs
        if pending:
            self._msgs = []
            durable_term = self._durable_term
            early = 0  # leader messages that may go before the writes
            for m in pending:
                if m.type in _LEADER_TYPES and m.term <= durable_term:
                    early += 1
            if not early:
                msgs = tuple(pending)
            elif early == len(pending):
                leader_msgs = tuple(pending)
            else:
                leader_msgs = tuple(
                    [m for m in pending if m.type in _LEADER_TYPES and m.term <= durable_term]
                )
                msgs = tuple(
                    [m for m in pending if m.type not in _LEADER_TYPES or m.term > durable_term]
                )
        soft = self._prev_soft
        soft_state = None
        role, lead = self._role, self._lead
        if soft.role is not role or soft.leader != lead or soft.term != term:
            soft = soft_state = _new_soft_state(role, lead, term)
        log = self._log
        read_states: tuple[ReadState, ...] = ()
        if self._read_states:
            read_states = tuple(self._read_states)
            self._read_states = []
        conf = None
        if self._conf_dirty:
            conf = self._conf
            self._conf_dirty = False
        rd = _new_ready(
            hard_state,
            tuple(log.unstable_entries()) if log.unstable_from <= log.last_index else (),
            self._unstable_snapshot,
            leader_msgs,
            msgs,
            tuple(self._next_committed()) if commit > self._applied else (),
            read_states,
            soft_state,
            conf,
        )
        self._prev_hs = hs
        self._prev_soft = soft
        self._read_round_open = False
        self._outstanding = rd
        return rd

    def advance(self, ready: Ready) -> None:
        """The Ready was carried out: its writes are durable, its committed entries applied.
        Raises RuntimeError if ``ready`` is not the Ready handed out last."""
        if ready is not self._outstanding:
            raise RuntimeError("advance() needs the Ready returned by the last ready()")
        self._outstanding = None
        if ready.hard_state is not None:
            self._durable_term = ready.hard_state.term
        if ready.snapshot is not None:
            if ready.snapshot is self._unstable_snapshot:
                self._unstable_snapshot = None
            self._applied = max(self._applied, ready.snapshot.meta.index)
        if ready.entries:
            last = ready.entries[-1]
            self._log.stable_to(last.index, last.term)
        if ready.committed_entries:
            self._applied = max(self._applied, ready.committed_entries[-1].index)
        hot = self._config.hot_log_bytes
        if hot is not None and self._log.hot_bytes > hot:
            self._cool()
        if self._role is _ROLE_LEADER:
            pr = self._prs.get(self._id)
            if pr is not None and pr.maybe_update(self._log.unstable_from - 1):
                if self._maybe_commit():
                    self._announce_commit()

    @property
    def role(self) -> Role:
        """This node's role now (as ``status().role``, without building a Status)."""
        return self._role

    @property
    def term(self) -> int:
        return self._term

    @property
    def vote(self) -> NodeId | None:
        return self._vote

    @property
    def leader(self) -> NodeId | None:
        return self._lead

    def status(self) -> Status:
        progress: dict[NodeId, Progress] = {}
        if self._role is _ROLE_LEADER:
            for node in self._targets:
                pr = self._prs[node]
                progress[node] = Progress(
                    match=pr.match,
                    next=pr.next,
                    state=pr.state,
                    learner=pr.learner,
                    recent_active=pr.recent_active,
                )
        return Status(
            id=self._id,
            role=self._role,
            term=self._term,
            vote=self._vote,
            leader=self._lead,
            commit=self._commit,
            applied=self._applied,
            first_index=self._log.first_index,
            last_index=self._log.last_index,
            conf=self._conf,
            progress=progress,
            transferee=self._transferee,
            dropped_messages=self._dropped,
        )

    # validation ---------------------------------------------------------------------------
    def _valid(self, m: object) -> bool:
        """Is ``m`` a well-formed message for this node? (cheap structural checks)"""
        if not isinstance(m, Message):
            return False
        src = m.src
        if m.dst != self._id or src == self._id or not isinstance(src, str) or not src:
            return False
        t = m.type
        if type(t) is not MessageType:
            return False
        try:
            if m.term < 0 or m.index < 0 or m.log_term < 0 or m.commit < 0 or m.offset < 0:
                return False
            if t is _MT_APPEND:
                if m.log_term > m.term:
                    return False
                index, term = m.index, m.log_term
                for e in m.entries:
                    index += 1
                    if (
                        not isinstance(e, Entry)
                        or e.index != index
                        or e.term < term
                        or e.term > m.term
                        or e.kind not in _ENTRY_KINDS
                        or not isinstance(e.data, bytes)
                    ):
                        return False
                    term = e.term
            elif t is _MT_SNAPSHOT:
                meta = m.snapshot
                if (
                    not isinstance(meta, SnapshotMeta)
                    or meta.index < 1
                    or meta.term < 1
                    or meta.term > m.term
                    or not isinstance(meta.conf, ConfState)
                    or not isinstance(m.data, bytes)
                ):
                    return False
            elif t is _MT_READ_INDEX or t is _MT_READ_INDEX_RESP:
                if not isinstance(m.context, bytes):
                    return False
        except TypeError:
            return False
        return True

    # role changes -------------------------------------------------------------------------
    def _reset(self, term: int) -> None:
        if term != self._term:
            self._term = term
            self._vote = None
        self._lead = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self._votes = {}
        self._prs = {}
        self._transferee = None
        self._leaving = {}
        self._bcast_pending = False
        self._commit_bcast = False
        self._expedite = []
        self._reads_waiting = []
        self._reads = []
        self._read_round = 0
        self._read_round_open = False

    def _reset_randomized_timeout(self) -> None:
        e = self._config.election_ticks
        self._randomized_timeout = self._rng.randrange(e, 2 * e)

    def _become_follower(self, term: int, lead: NodeId | None) -> None:
        self._reset(term)
        self._role = _ROLE_FOLLOWER
        self._step_role = self._step_follower
        self._tick_role = self._tick_election
        self._lead = lead

    def _become_pre_candidate(self) -> None:
        # A pre-candidate keeps its term and vote: nothing changes until it wins.
        self._votes = {}
        self._lead = None
        self._role = _ROLE_PRE_CANDIDATE
        self._step_role = self._step_candidate
        self._tick_role = self._tick_election
        self._reset_randomized_timeout()

    def _become_candidate(self) -> None:
        self._reset(self._term + 1)
        self._vote = self._id
        self._role = _ROLE_CANDIDATE
        self._step_role = self._step_candidate
        self._tick_role = self._tick_election

    def _become_leader(self) -> None:
        self._reset(self._term)
        self._role = _ROLE_LEADER
        self._step_role = self._step_leader
        self._tick_role = self._tick_heartbeat
        self._lead = self._id
        last = self._log.last_index
        self._committed_conf = self._log.conf(self._commit)
        self._targets = self._replication_targets()
        for node in self._targets:
            pr = self._new_progress(node, last + 1)
            if node == self._id:
                pr.match = self._log.unstable_from - 1
                pr.recent_active = True
                pr.become_replicate()
                pr.next = last + 1
            self._prs[node] = pr
        # The no-op of the new term: committing it commits everything before (Figure 8).
        self._append_local(Entry(self._term, last + 1, _KIND_NORMAL, b""))

    def _new_progress(self, node: NodeId, next_index: int) -> PeerProgress:
        return PeerProgress(
            next=next_index,
            max_inflight=self._config.max_inflight,
            learner=node not in self._conf.voters,
        )

    def _replication_targets(self) -> tuple[NodeId, ...]:
        conf, committed = self._conf, self._committed_conf
        nodes = conf.voters | conf.learners | self._leaving.keys()
        if committed is not None:
            nodes = nodes | committed.voters | committed.learners
        return tuple(sorted(nodes))

    # ticks --------------------------------------------------------------------------------
    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if (
            self._election_elapsed >= self._randomized_timeout or self._voters == (self._id,)
        ) and self._promotable():
            self._election_elapsed = 0
            self._hup(transfer=False)

    def _tick_heartbeat(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        cfg = self._config
        if self._election_elapsed >= cfg.election_ticks:
            self._election_elapsed = 0
            if cfg.check_quorum:
                if not self._quorum_active():
                    self._become_follower(self._term, None)
                    return
            if self._transferee is not None:
                self._transferee = None  # abandoned: it did not take over in time
        if self._leaving:
            for node, state in list(self._leaving.items()):
                state[1] -= 1
                if state[1] <= 0:
                    del self._leaving[node]  # it did not answer: stop waiting for it
                    self._sync_progress()
        if self._commit_bcast:
            self._bcast_pending = True  # a commit not carried by an APPEND since: announce
        if self._heartbeat_elapsed >= cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            ctx = str(self._read_round).encode() if self._reads else b""
            self._bcast_heartbeat(ctx)
            self._resend_stalled_snapshots()

    def _quorum_active(self) -> bool:
        active = []
        for node in self._voters:
            pr = self._prs[node]
            active.append(1 if node == self._id or pr.recent_active else 0)
        for node, pr in self._prs.items():
            if node != self._id:
                pr.recent_active = False
        return _quorum.quorum_value(active) == 1 if active else True

    def _promotable(self) -> bool:
        """May this node campaign? A voter of its latest configuration may; so may a voter
        of the committed one while the change removing it is uncommitted (thesis 4.2.2:
        it may still be needed, e.g. a leader that lost its lease before its own removal
        committed, whose vote the remaining voters need)."""
        if self._id in self._conf.voters:
            return True
        if self._log.last_conf_index() > self._commit:
            committed = self._log.conf(self._commit)
            return committed is not None and self._id in committed.voters
        return False

    # elections ----------------------------------------------------------------------------
    def _hup(self, *, transfer: bool) -> None:
        if self._role is _ROLE_LEADER or not self._promotable():
            return
        if self._config.pre_vote and not transfer:
            self._start_campaign(pre=True, transfer=False)
        else:
            self._start_campaign(pre=False, transfer=transfer)

    def _start_campaign(self, *, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            vote_term, vote_type = self._term + 1, _MT_PRE_VOTE
        else:
            self._become_candidate()
            vote_term, vote_type = self._term, _MT_VOTE
        self._votes = {self._id: True}
        if _quorum.vote_result(self._voters, self._votes) is _VOTE_WON:
            self._won_election(pre)
            return
        last_index, last_term = self._log.last_index, self._log.last_term()
        context = TRANSFER_CONTEXT if transfer else b""
        for node in self._voters:
            if node != self._id:
                self._msgs.append(
                    _new_message(
                        type=vote_type,
                        src=self._id,
                        dst=node,
                        term=vote_term,
                        index=last_index,
                        log_term=last_term,
                        context=context,
                    )
                )

    def _won_election(self, pre: bool) -> None:
        if pre:
            self._start_campaign(pre=False, transfer=False)
        else:
            self._become_leader()

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type is _MT_PRE_VOTE
        can_vote = (
            self._vote == m.src
            or (self._vote is None and self._lead is None)
            or (pre and m.term > self._term)
        )
        resp_type = _MT_PRE_VOTE_RESP if pre else _MT_VOTE_RESP
        if can_vote and self._log.is_up_to_date(m.log_term, m.index):
            # A granted pre-vote answers in the candidate's future term.
            self._msgs.append(_new_message(type=resp_type, src=self._id, dst=m.src, term=m.term))
            if not pre:
                self._election_elapsed = 0
                self._vote = m.src
        else:
            self._send(resp_type, m.src, reject=True)

    # step functions per role --------------------------------------------------------------
    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t in _LEADER_TYPES:
            if self._lead is None:
                self._lead = m.src
            elif self._lead != m.src:
                self._dropped += 1  # a second leader in one term cannot be: ignore it
                return
            self._election_elapsed = 0
            if t is _MT_APPEND:
                self._handle_append(m)
            elif t is _MT_HEARTBEAT:
                self._handle_heartbeat(m)
            else:
                self._handle_snapshot(m)
        elif t is _MT_TIMEOUT_NOW:
            if m.src == self._lead and self._promotable():
                self._hup(transfer=True)
            else:
                self._dropped += 1
        elif t is _MT_READ_INDEX_RESP:
            if m.src == self._lead and not m.reject:
                self._read_states.append(_new_read_state(index=m.index, context=m.context))
            else:
                self._dropped += 1
        else:
            self._dropped += 1

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in _LEADER_TYPES:
            # Someone won this term: follow it (m.term == our term here).
            self._become_follower(m.term, m.src)
            self._step_follower(m)
            return
        pre = self._role is _ROLE_PRE_CANDIDATE
        if t is (_MT_PRE_VOTE_RESP if pre else _MT_VOTE_RESP):
            self._votes.setdefault(m.src, not m.reject)
            result = _quorum.vote_result(self._voters, self._votes)
            if result is _VOTE_WON:
                self._won_election(pre)
                if not pre:
                    self._flush_appends()
            elif result is _VOTE_LOST:
                self._become_follower(self._term, None)
        else:
            self._dropped += 1

    def _step_leader(self, m: Message) -> None:
        t = m.type
        pr = self._prs.get(m.src)
        if pr is None:
            self._dropped += 1
            return
        if t is _MT_APPEND_RESP:
            self._handle_append_resp(m, pr)
        elif t is _MT_HEARTBEAT_RESP:
            self._handle_heartbeat_resp(m, pr)
        elif t is _MT_SNAPSHOT_RESP:
            self._handle_snapshot_resp(m, pr)
        elif t is _MT_READ_INDEX:
            self._leader_read(m.context, m.src)
        else:
            self._dropped += 1

    # follower handlers --------------------------------------------------------------------
    def _handle_append(self, m: Message) -> None:
        log = self._log
        if m.index < self._commit:
            # Older than what we committed: everything up to our commit matches the leader.
            self._send(_MT_APPEND_RESP, m.src, index=self._commit)
            return
        if log.term(m.index) == m.log_term:
            entries = cast("tuple[Entry, ...]", m.entries)  # _valid: no ColdEntry
            last_new = m.index + len(entries)
            conflict = log.find_conflict(entries) if entries else 0
            if conflict:
                if conflict <= self._commit:
                    self._dropped += 1  # would rewrite a committed entry: not from a true leader
                    return
                log.append(entries[conflict - m.index - 1 :])
                self._check_conf()
            commit = min(m.commit, last_new)
            if commit > self._commit:  # self._commit_to(commit), inlined
                self._commit = commit
            self._send(_MT_APPEND_RESP, m.src, index=last_new)
            return
        hint_index, hint_term = log.find_conflict_by_term(min(m.index, log.last_index), m.log_term)
        self._send(
            _MT_APPEND_RESP,
            m.src,
            index=m.index,
            reject=True,
            reject_hint=hint_index,
            log_term=hint_term,
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self._commit_to(min(m.commit, self._log.last_index))
        self._send(_MT_HEARTBEAT_RESP, m.src, context=m.context)

    def _handle_snapshot(self, m: Message) -> None:
        meta = m.snapshot
        assert meta is not None
        if meta.index <= self._commit:
            # We already hold all of it: say how far we are committed.
            self._snap_recv = None
            self._send(_MT_SNAPSHOT_RESP, m.src, index=self._commit, snapshot=meta, done=True)
            return
        recv = self._snap_recv
        if recv is None or recv.meta != meta or recv.source != m.src:
            if m.offset != 0:
                self._snap_recv = None
                self._send(_MT_SNAPSHOT_RESP, m.src, index=0, snapshot=meta, reject=True)
                return
            recv = self._snap_recv = _SnapshotReceiver(source=m.src, meta=meta, data=bytearray())
        have = len(recv.data)
        if m.offset > have:
            # A gap: a chunk was lost. Start over from offset 0.
            self._snap_recv = None
            self._send(_MT_SNAPSHOT_RESP, m.src, index=0, snapshot=meta, reject=True)
            return
        end = m.offset + len(m.data)
        if end > have:
            recv.data += m.data[have - m.offset :]
        if m.done and end == len(recv.data):
            self._snap_recv = None
            self._install_snapshot(Snapshot(meta=meta, data=bytes(recv.data)))
            self._send(_MT_SNAPSHOT_RESP, m.src, index=self._commit, snapshot=meta, done=True)
        else:
            self._send(_MT_SNAPSHOT_RESP, m.src, index=len(recv.data), snapshot=meta)

    def _install_snapshot(self, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        if self._log.term(meta.index) == meta.term:
            # Our log holds the snapshot's last entry: keep the log, commit up to it.
            self._commit_to(meta.index)
            return
        self._log.restore(meta)
        self._snapshot = snapshot
        self._unstable_snapshot = snapshot
        self._commit = max(self._commit, meta.index)
        self._check_conf()

    def _commit_to(self, index: int) -> None:
        if index > self._commit:
            self._commit = index

    # leader handlers ----------------------------------------------------------------------
    def _handle_append_resp(self, m: Message, pr: PeerProgress) -> None:
        pr.recent_active = True
        log = self._log
        if m.reject:
            hint = m.reject_hint
            if m.log_term > 0:
                hint, _ = log.find_conflict_by_term(min(hint, log.last_index), m.log_term)
            if pr.maybe_decr_to(m.index, hint):
                if pr.state is _PS_REPLICATE:
                    pr.become_probe()
                self._send_append(m.src)
            return
        if m.index > log.last_index:
            self._dropped += 1  # acknowledges entries we never had
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state is _PS_PROBE:
            pr.become_replicate()
        elif pr.state is _PS_SNAPSHOT:
            if pr.match + 1 >= log.first_index:
                # Caught up through appends after all: the snapshot is no longer needed.
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.free_le(pr.match)
        if m.src in self._leaving:
            self._maybe_say_farewell(m.src)  # it holds its removal: tell it and forget it
            return
        if self._maybe_commit() or (was_paused and pr.sent_commit < self._commit):
            # (a follower that was paused may have missed the latest commit index: like a
            # new one, it hears of it with the next APPEND or tick)
            self._announce_commit()
        if self._role is not _ROLE_LEADER:
            return  # committing our own removal made us step down
        while self._maybe_send_append(m.src, send_if_empty=False):
            pass
        if m.src == self._transferee and pr.match == log.last_index:
            self._send(_MT_TIMEOUT_NOW, m.src)

    def _handle_heartbeat_resp(self, m: Message, pr: PeerProgress) -> None:
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state is _PS_REPLICATE and len(pr.inflights) >= pr.max_inflight:
            pr.free_first_one()
        if pr.match < self._log.last_index:
            self._send_append(m.src)
        if m.context and self._reads:
            try:
                round_ = int(m.context)
            except ValueError:
                return
            if round_ > pr.read_ack:
                pr.read_ack = round_
                self._release_reads()

    def _handle_snapshot_resp(self, m: Message, pr: PeerProgress) -> None:
        pr.recent_active = True
        if pr.state is not _PS_SNAPSHOT or pr.snapshot is None:
            if m.done and m.index <= self._log.last_index:
                pr.maybe_update(m.index)
            return
        if m.snapshot != pr.snapshot.meta:
            return  # about another snapshot than the one being sent
        if m.done:
            pr.maybe_update(min(m.index, self._log.last_index))
            pr.become_probe()
            if pr.match + 1 >= self._log.first_index:
                pr.become_replicate()
            self._send_append(m.src)
            return
        if m.reject:
            pr.snap_offset = 0
        elif m.index > pr.snap_offset:
            pr.snap_offset = min(m.index, len(pr.snapshot.data))
        else:
            return  # a stale or duplicate acknowledgement: the chunk in flight stands
        self._send_snapshot_chunk(m.src, pr)

    def _maybe_commit(self) -> bool:
        prs = self._prs
        index = _quorum.quorum_value([prs[v].match for v in self._voters if v in prs])
        if index <= self._commit or self._log.term(index) != self._term:
            return False  # never commit an older term's entry by counting (Figure 8)
        first_in_term = self._log.term(self._commit) != self._term
        self._commit = index
        if first_in_term and self._reads_waiting:
            waiting, self._reads_waiting = self._reads_waiting, []
            for context, requester in waiting:
                self._leader_read(context, requester)
        conf = self._log.conf(index)
        if conf is not self._committed_conf:
            self._committed_conf = conf
            self._start_farewells()
            self._sync_progress()
        if conf is not None and self._id not in conf.voters:
            # Our removal is committed: tell the others, hand over, and step down.
            self._bcast_append()
            self._hand_over_after_removal()
            self._become_follower(self._term, None)
        return True

    def _hand_over_after_removal(self) -> None:
        last = self._log.last_index
        best: NodeId | None = None
        for node in self._voters:
            pr = self._prs.get(node)
            if node != self._id and pr is not None and pr.match == last:
                best = node
                break
        if best is not None:
            self._send(_MT_TIMEOUT_NOW, best)

    # sending ------------------------------------------------------------------------------
    def _send(
        self,
        type: MessageType,
        to: NodeId,
        *,
        index: int = 0,
        reject: bool = False,
        reject_hint: int = 0,
        log_term: int = 0,
        context: bytes = b"",
        commit: int = 0,
        snapshot: SnapshotMeta | None = None,
        done: bool = False,
    ) -> None:
        self._msgs.append(
            _new_message(
                type=type,
                src=self._id,
                dst=to,
                term=self._term,
                index=index,
                reject=reject,
                reject_hint=reject_hint,
                log_term=log_term,
                context=context,
                commit=commit,
                snapshot=snapshot,
                done=done,
            )
        )

    def _append_local(self, entry: Entry) -> None:
        self._log.append((entry,))
        if entry.kind == _KIND_CONF_CHANGE:
            self._check_conf()
        self._bcast_pending = True

    def _check_can_propose(self) -> None:
        if self._role is not _ROLE_LEADER:
            raise NotLeader(self._lead)
        if self._transferee is not None:
            raise ProposalDropped(f"leadership transfer to {self._transferee} in progress")

    def _flush_appends(self) -> None:
        """Send new entries to every follower that may take them (one APPEND per follower
        for all proposals since the last flush), and a new commit index to those that got
        nothing else (one empty APPEND however many times the commit moved)."""
        self._bcast_pending = False
        commit_bcast, self._commit_bcast = self._commit_bcast, False
        if self._role is not _ROLE_LEADER:
            return
        for node in self._targets:
            if node != self._id:
                sent = False
                while self._maybe_send_append(node, send_if_empty=False):
                    sent = True
                if commit_bcast and not sent and self._prs[node].sent_commit < self._commit:
                    self._maybe_send_append(node, send_if_empty=True)

    def _announce_commit(self) -> None:
        """Followers hear of the new commit with the next flush of APPENDs: at the next
        proposal or tick, or at once for an expedited index now committed."""
        self._commit_bcast = True
        expedite = self._expedite
        if expedite and expedite[0] <= self._commit:
            while expedite and expedite[0] <= self._commit:
                heapq.heappop(expedite)
            self._bcast_pending = True

    def _bcast_append(self) -> None:
        if self._role is not _ROLE_LEADER:
            return
        for node in self._targets:
            if node != self._id:
                self._send_append(node)

    def _send_append(self, to: NodeId) -> None:
        self._maybe_send_append(to, send_if_empty=True)

    def _maybe_send_append(self, to: NodeId, *, send_if_empty: bool) -> bool:
        pr = self._prs.get(to)
        if pr is None or pr.is_paused():
            return False
        log = self._log
        if pr.next == log.last_index + 1 and not send_if_empty:
            return False  # nothing new (what the full path below finds, sooner)
        prev = pr.next - 1
        prev_term = log.term(prev)
        if prev_term is None:
            return self._maybe_send_snapshot(to, pr)
        last = log.last_index
        entries = log.slice(pr.next, last, self._config.max_msg_bytes) if pr.next <= last else []
        if not entries and not send_if_empty:
            return False
        self._msgs.append(
            _new_message(
                type=_MT_APPEND,
                src=self._id,
                dst=to,
                term=self._term,
                index=prev,
                log_term=prev_term,
                entries=tuple(entries),
                commit=self._commit,
            )
        )
        pr.sent_entries(len(entries), entries[-1].index if entries else prev)
        pr.sent_commit = self._commit
        return True

    def _maybe_send_snapshot(self, to: NodeId, pr: PeerProgress) -> bool:
        if not pr.recent_active or self._snapshot is None:
            return False  # wait until it answers (a heartbeat) before streaming an image
        pr.become_snapshot(self._snapshot)
        self._send_snapshot_chunk(to, pr)
        return True

    def _send_snapshot_chunk(self, to: NodeId, pr: PeerProgress) -> None:
        snapshot = pr.snapshot
        assert snapshot is not None
        offset = pr.snap_offset
        chunk = snapshot.data[offset : offset + self._config.snapshot_chunk_bytes]
        self._msgs.append(
            _new_message(
                type=_MT_SNAPSHOT,
                src=self._id,
                dst=to,
                term=self._term,
                snapshot=snapshot.meta,
                offset=offset,
                data=chunk,
                done=offset + len(chunk) >= len(snapshot.data),
            )
        )
        pr.snap_inflight = True
        pr.snap_wait = 0

    def _resend_stalled_snapshots(self) -> None:
        for node in self._targets:
            pr = self._prs[node]
            if pr.state is _PS_SNAPSHOT and pr.snap_inflight:
                pr.snap_wait += 1
                if pr.snap_wait > SNAPSHOT_RESEND_HEARTBEATS:
                    self._send_snapshot_chunk(node, pr)

    def _bcast_heartbeat(self, context: bytes) -> None:
        commit = self._commit
        for node in self._targets:
            if node != self._id:
                pr = self._prs[node]
                self._msgs.append(
                    _new_message(
                        type=_MT_HEARTBEAT,
                        src=self._id,
                        dst=node,
                        term=self._term,
                        commit=min(pr.match, commit),
                        context=context,
                    )
                )

    # reads --------------------------------------------------------------------------------
    def _leader_read(self, context: bytes, requester: NodeId) -> None:
        if self._log.term(self._commit) != self._term:
            # Until an entry of this term commits, the commit index may be stale.
            self._reads_waiting.append((context, requester))
            return
        if self._voters == (self._id,):
            self._deliver_read(self._commit, context, requester)
            return
        if not self._read_round_open:
            # Heartbeats sent from now on confirm this read; requests arriving before
            # they leave share them.
            self._read_round += 1
            self._read_round_open = True
            self._bcast_heartbeat(str(self._read_round).encode())
        self._reads.append(_PendingRead(self._read_round, self._commit, context, requester))
        self._release_reads()

    def _release_reads(self) -> None:
        reads = self._reads
        if not reads:
            return
        prs = self._prs
        confirmed = _quorum.quorum_value(
            [
                self._read_round if v == self._id else prs[v].read_ack
                for v in self._voters
                if v in prs
            ]
        )
        while reads and reads[0].round <= confirmed:
            read = reads.pop(0)
            self._deliver_read(read.index, read.context, read.requester)

    def _deliver_read(self, index: int, context: bytes, requester: NodeId) -> None:
        if requester == self._id:
            self._read_states.append(_new_read_state(index=index, context=context))
        else:
            self._send(_MT_READ_INDEX_RESP, requester, index=index, context=context)

    # membership ---------------------------------------------------------------------------
    def _check_conf(self) -> None:
        """React to a configuration change in the log (append, truncation, snapshot)."""
        conf = self._log.conf_latest()
        if conf is self._conf or conf == self._conf:
            return
        self._conf = conf
        self._conf_dirty = True
        self._voters = tuple(sorted(conf.voters))
        if self._role is not _ROLE_LEADER:
            return
        self._sync_progress()
        if self._transferee is not None and self._transferee not in conf.voters:
            self._transferee = None
        self._release_reads()
        if self._maybe_commit():
            self._announce_commit()

    def _start_farewells(self) -> None:
        """Nodes whose removal just committed must learn it (or, still counting themselves
        needed, they would campaign): keep replicating to each until it holds the commit
        index, then tell it in a heartbeat (never paused); give up after an election
        timeout."""
        self._leaving = {}
        keep = self._replication_targets()
        for node in self._targets:
            if node not in keep and node != self._id and node in self._prs:
                self._leaving[node] = [self._commit, self._config.election_ticks]
                self._maybe_say_farewell(node)

    def _maybe_say_farewell(self, node: NodeId) -> None:
        state = self._leaving.get(node)
        pr = self._prs.get(node)
        if state is None or pr is None or pr.match < state[0]:
            return
        self._msgs.append(
            _new_message(
                type=_MT_HEARTBEAT,
                src=self._id,
                dst=node,
                term=self._term,
                commit=min(pr.match, self._commit),
            )
        )
        del self._leaving[node]
        self._sync_progress()

    def _sync_progress(self) -> None:
        """Track exactly the replication targets (leader only)."""
        self._targets = targets = self._replication_targets()
        next_index = self._log.last_index + 1
        for node in list(self._prs):
            if node not in targets:
                del self._prs[node]
        voters = self._conf.voters
        for node in targets:
            pr = self._prs.get(node)
            if pr is None:
                pr = self._prs[node] = self._new_progress(node, next_index)
                pr.recent_active = True  # just added: give it a chance before CheckQuorum
            pr.learner = node not in voters

    # committed entries --------------------------------------------------------------------
    def _next_committed(self) -> list[Entry]:
        lo = self._applied + 1
        if self._unstable_snapshot is not None:
            lo = max(lo, self._unstable_snapshot.meta.index + 1)
        hi = min(self._commit, self._log.last_index)
        if hi < lo:
            return []
        budget = self._config.max_msg_bytes * COMMITTED_BYTES_FACTOR
        return self._log.hot_slice(lo, hi, max(budget, ENTRY_OVERHEAD_BYTES))
