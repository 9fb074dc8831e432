"""Raft's values: log entries, durable state, configurations, snapshots and messages.

Plain frozen values with no behaviour beyond ``describe()``, the one-line form used in
logs and golden interaction scripts. Their wire encoding lives in ``trickle.raft.wire``.
"""

from __future__ import annotations

import enum
from typing import NewType, Protocol

import attrs

from trickle.raft._fastinit import fast_frozen_init

NodeId = NewType("NodeId", str)

NO_NODE: NodeId | None = None


class EntryKind(enum.IntEnum):
    NORMAL = 0  # application data (an empty NORMAL entry is the leader's no-op)
    CONF_CHANGE = 1  # ``data`` is an encoded ConfChange (trickle.raft.wire)


@fast_frozen_init
@attrs.frozen
class Entry:
    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    def describe(self) -> str:
        if self.kind is EntryKind.CONF_CHANGE:
            from trickle.raft.wire import decode_conf_change  # wire imports this module

            try:
                body = decode_conf_change(self.data).describe()
            except ValueError:
                body = f"?{_short(self.data)}"
            return f"{self.term}/{self.index} conf:{body}"
        body = _short(self.data) if self.data else "noop"
        return f"{self.term}/{self.index} {body}"


@attrs.frozen
class ColdEntry:
    """An applied entry whose data the core no longer holds in memory (``RaftConfig.
    hot_log_bytes``): it is read back from the node's storage when a slow follower needs
    it. Only ever in the ``entries`` of an APPEND a Ready hands out: the driver replaces
    each one by the stored Entry (``fill_cold_entries``) before the message leaves, and a
    node stepping a message with one rejects it."""

    term: int
    index: int
    size: int  # bytes of its data (what batching counts)

    def describe(self) -> str:
        return f"{self.term}/{self.index} cold:{self.size}B"


@fast_frozen_init
@attrs.frozen
class HardState:
    """What must be durable before a message that depends on it is sent."""

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0

    def describe(self) -> str:
        return f"term={self.term} vote={self.vote or '-'} commit={self.commit}"


@attrs.frozen
class ConfState:
    """The cluster's membership: voters decide; learners only receive the log."""

    voters: frozenset[NodeId] = frozenset()
    learners: frozenset[NodeId] = frozenset()

    def describe(self) -> str:
        voters = ",".join(sorted(self.voters))
        learners = ",".join(sorted(self.learners))
        return f"voters=({voters})" + (f" learners=({learners})" if learners else "")


class ConfChangeOp(enum.IntEnum):
    ADD_LEARNER = 0  # a new non-voting member; it catches up before promotion
    PROMOTE = 1  # a learner becomes a voter
    REMOVE = 2  # a voter or learner leaves (the leader too: it steps down once committed)
    ADD_VOTER = 3  # straight to voter (bootstrap and tests; prefer ADD_LEARNER + PROMOTE)


@attrs.frozen
class ConfChange:
    """One membership change; one server at a time (Ongaro's thesis, section 4.1).

    ``context`` is opaque to Raft (trickle puts the member's address there).
    """

    op: ConfChangeOp
    node: NodeId
    context: bytes = b""

    def describe(self) -> str:
        return f"{self.op.name.lower()} {self.node}"


@attrs.frozen
class SnapshotMeta:
    index: int  # last log index the snapshot covers
    term: int  # term of that entry
    conf: ConfState  # membership as of ``index``

    def describe(self) -> str:
        return f"snapshot {self.term}/{self.index} {self.conf.describe()}"


class SnapshotData(Protocol):
    """A snapshot's image as Raft reads it: its size and contiguous slices. ``bytes``, or
    a file read by slices (``trickle.raft.storage.SnapshotFile``)."""

    def __len__(self) -> int: ...

    def __getitem__(self, key: slice, /) -> bytes: ...

    def __bytes__(self) -> bytes: ...


@attrs.frozen
class Snapshot:
    meta: SnapshotMeta
    data: bytes | SnapshotData  # the application state machine's image, opaque to Raft

    def describe(self) -> str:
        return f"{self.meta.describe()} ({len(self.data)} bytes)"


class MessageType(enum.IntEnum):
    PRE_VOTE = 1  # would you vote for me at term+1? (changes nobody's term)
    PRE_VOTE_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    APPEND = 5  # entries after (log_term, index); commit = leader's commit
    APPEND_RESP = 6  # index = match (accept) or rejected index; hint = conflict back-up
    HEARTBEAT = 7  # commit = min(leader commit, follower match); context = read-index ctx
    HEARTBEAT_RESP = 8
    SNAPSHOT = 9  # one chunk: snapshot meta, offset, data, done
    SNAPSHOT_RESP = 10  # index = bytes received so far (or the installed index when done)
    TIMEOUT_NOW = 11  # leadership transfer: campaign now, skipping PreVote
    READ_INDEX = 12  # follower -> leader: what index serves a read with this context?
    READ_INDEX_RESP = 13  # leader -> follower: index (0 and reject=True if it cannot)


@fast_frozen_init
@attrs.frozen(kw_only=True)
class Message:
    """One Raft message. Fields a type does not use keep their defaults.

    APPEND: ``index``/``log_term`` locate the entry before ``entries``; ``commit``.
    APPEND_RESP: accept -> ``index`` is the follower's match; reject -> ``index`` is the
        rejected APPEND's index, ``reject_hint`` the follower's guess of where to resume and
        ``log_term`` the term at that hint (fast back-up by term).
    VOTE/PRE_VOTE: ``index``/``log_term`` are the candidate's last entry; ``context`` is
        b"transfer" when the campaign comes from a leadership transfer.
    SNAPSHOT: ``snapshot`` meta, ``offset`` of ``data`` in the image, ``done`` on the last.
    """

    type: MessageType
    src: NodeId
    dst: NodeId
    term: int
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry | ColdEntry, ...] = ()  # ColdEntry: see there
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: SnapshotMeta | None = None
    offset: int = 0
    data: bytes = b""
    done: bool = False

    def describe(self) -> str:
        """One line, e.g. ``1->2 APPEND term=3 log=3/5 commit=4 entries=[3/6 noop]``."""
        head = f"{self.src}->{self.dst} {self.type.name} term={self.term}"
        t = self.type
        if t in (MessageType.VOTE, MessageType.PRE_VOTE):
            tail = f" last={self.log_term}/{self.index}"
            if self.context:
                tail += f" ctx={_short(self.context)}"
        elif t in (MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP):
            tail = " rejected" if self.reject else " granted"
        elif t is MessageType.APPEND:
            entries = " ".join(e.describe() for e in self.entries)
            tail = f" log={self.log_term}/{self.index} commit={self.commit} entries=[{entries}]"
        elif t is MessageType.APPEND_RESP:
            if self.reject:
                tail = f" reject index={self.index} hint={self.log_term}/{self.reject_hint}"
            else:
                tail = f" match={self.index}"
        elif t in (MessageType.HEARTBEAT, MessageType.HEARTBEAT_RESP):
            tail = f" commit={self.commit}" if t is MessageType.HEARTBEAT else ""
            if self.context:
                tail += f" ctx={_short(self.context)}"
        elif t is MessageType.SNAPSHOT:
            meta = self.snapshot.describe() if self.snapshot else "?"
            tail = f" {meta} offset={self.offset} len={len(self.data)}"
            tail += " done" if self.done else ""
        elif t is MessageType.SNAPSHOT_RESP:
            tail = f" {'reject ' if self.reject else ''}index={self.index}"
            tail += " done" if self.done else ""
        elif t in (MessageType.READ_INDEX, MessageType.READ_INDEX_RESP):
            tail = f" index={self.index} ctx={_short(self.context)}"
            tail += " rejected" if self.reject else ""
        else:
            tail = ""
        return head + tail


def _short(data: bytes, limit: int = 16) -> str:
    """Printable, bounded form of opaque bytes for describe() lines."""
    text = data[:limit].decode("utf-8", "backslashreplace")
    return text + (f"...({len(data)})" if len(data) > limit else "")


@attrs.frozen
class DurableState:
    """What a node recovers from its storage at start.

    ``entries`` are contiguous; when there is a snapshot they may start at or below
    ``snapshot.meta.index + 1`` (entries kept below a snapshot for slow followers).
    """

    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()

    def is_empty(self) -> bool:
        return self.hard_state == HardState() and self.snapshot is None and not self.entries
