"""The leader's mutable view of one follower: match/next, flow control and snapshot sending."""

from __future__ import annotations

import enum
from collections import deque

from trickle.raft.messages import Snapshot


class ProgressState(enum.Enum):
    PROBE = "probe"  # one APPEND in flight per heartbeat until the match is found
    REPLICATE = "replicate"  # up to max_inflight APPENDs, next advanced optimistically
    SNAPSHOT = "snapshot"  # sending a snapshot; no APPENDs until it is installed


# (module constants: an enum member read through its class costs ~10x a global)
_PS_PROBE = ProgressState.PROBE
_PS_REPLICATE = ProgressState.REPLICATE
_PS_SNAPSHOT = ProgressState.SNAPSHOT


class PeerProgress:
    """Replication state of one member, as the leader sees it (etcd's tracker.Progress).

    ``inflights`` holds the last index of each APPEND sent in REPLICATE state and not yet
    acknowledged; the window is full at ``max_inflight``. In SNAPSHOT state ``snapshot``
    is the image being sent, ``snap_offset`` the bytes acknowledged so far and
    ``snap_inflight`` whether a chunk awaits its acknowledgement (one at a time).
    ``read_ack`` is the highest read-index round this member has confirmed;
    ``sent_commit`` the commit index of the last APPEND sent to it.
    """

    __slots__ = (
        "inflights",
        "learner",
        "match",
        "max_inflight",
        "next",
        "probe_sent",
        "read_ack",
        "recent_active",
        "sent_commit",
        "snap_inflight",
        "snap_offset",
        "snap_wait",
        "snapshot",
        "state",
    )

    def __init__(self, *, next: int, max_inflight: int, learner: bool, match: int = 0) -> None:
        self.match = match
        self.next = next
        self.state = _PS_PROBE
        self.learner = learner
        self.recent_active = False
        self.probe_sent = False
        self.max_inflight = max_inflight
        self.inflights: deque[int] = deque()
        self.snapshot: Snapshot | None = None
        self.snap_offset = 0
        self.snap_inflight = False
        self.snap_wait = 0
        self.read_ack = 0
        self.sent_commit = 0  # the commit index carried by the last APPEND sent

    def _reset_state(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.inflights.clear()
        self.snapshot = None
        self.snap_offset = 0
        self.snap_inflight = False
        self.snap_wait = 0

    def become_probe(self) -> None:
        self._reset_state(_PS_PROBE)
        self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(_PS_REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot: Snapshot) -> None:
        self._reset_state(_PS_SNAPSHOT)
        self.snapshot = snapshot

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged entries up to ``index``; True if match advanced."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decr_to(self, rejected: int, hint: int) -> bool:
        """The follower rejected the APPEND after ``rejected``; ``hint`` is where its log
        may match. False when the rejection is stale (etcd's MaybeDecrTo)."""
        if self.state is _PS_REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        if rejected <= self.match:
            # The follower rejects an entry it acknowledged: it lost its log (a server
            # whose data was wiped, back under the same id). Raft's promise does not hold
            # for it; at least resume from what it says it holds instead of sending the
            # same APPEND forever (a snapshot follows when that is compacted).
            self.match = min(self.match, hint)
        self.next = max(min(rejected, hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        """No APPEND may be sent now (a probe is out, the window is full, or a snapshot)."""
        state = self.state
        if state is _PS_REPLICATE:
            return len(self.inflights) >= self.max_inflight
        if state is _PS_PROBE:
            return self.probe_sent
        return True

    def sent_entries(self, count: int, last: int) -> None:
        """An APPEND with ``count`` entries ending at ``last`` was sent."""
        if self.state is _PS_REPLICATE:
            if count:
                self.next = last + 1
                self.inflights.append(last)
        elif self.state is _PS_PROBE:
            self.probe_sent = True

    def free_le(self, index: int) -> None:
        """Acknowledged up to ``index``: free the window slots of APPENDs ending there."""
        inflights = self.inflights
        while inflights and inflights[0] <= index:
            inflights.popleft()

    def free_first_one(self) -> None:
        if self.inflights:
            self.inflights.popleft()
