"""Tunables of one Raft node, in ticks and bytes (the driver maps ticks to seconds)."""

from __future__ import annotations

import attrs

from trickle.errors import ValidationError

ELECTION_TICKS = 10  # ticks without a leader before campaigning (randomized in [E, 2E))
HEARTBEAT_TICKS = 2  # ticks between a leader's heartbeats; must be < ELECTION_TICKS
MAX_MSG_BYTES = 1 << 20  # bytes of entries in one APPEND
MAX_INFLIGHT = 256  # APPENDs in flight to one follower in replicate state
SNAPSHOT_CHUNK_BYTES = 1 << 20  # bytes of snapshot image in one SNAPSHOT message
TRAILING_ENTRIES = 10_240  # entries kept after a compaction for slow followers
TRAILING_BYTES = 16 << 20  # ... but no more than this many bytes of their data
HOT_LOG_BYTES = 4 << 20  # data of applied, durable entries kept in memory; older from storage


@attrs.frozen(kw_only=True)
class RaftConfig:
    """How one node behaves. The defaults suit a LAN; the driver sets the tick length.

    election_ticks: a follower that hears no leader for a random number of ticks in
        [election_ticks, 2 * election_ticks) campaigns. Longer avoids needless elections
        on a slow network; shorter fails over sooner (failover ~ 1.3 * election_ticks).
    heartbeat_ticks: a leader sends heartbeats this often; must be below election_ticks
        (a third or less keeps followers calm when one heartbeat is lost).
    pre_vote: campaign first with a PRE_VOTE that changes no term, so a node coming back
        from a partition does not depose a healthy leader (thesis section 9.6).
    check_quorum: a leader that has not heard from a quorum within election_ticks steps
        down; voters ignore campaigns while they hear from a live leader.
    max_msg_bytes: entries bytes in one APPEND (at least one entry is always sent).
    max_inflight: APPENDs in flight to one follower before the leader waits for acks.
    snapshot_chunk_bytes: bytes of snapshot image per SNAPSHOT message.
    trailing_entries: entries kept below a snapshot so slow followers catch up from the
        log, not a snapshot.
    trailing_bytes: ... as long as their data holds no more than this many bytes (the
        log stays bounded however many commands an entry batches).
    hot_log_bytes: of the applied and durable entries, only the newest holding this many
        bytes of data keep it in memory (once over it, the oldest are cooled down to three
        quarters of it); the older ones are cold (term and size only) and
        an APPEND that carries them holds ColdEntry values the driver reads back from
        storage (``RaftStorage.entries``). None keeps every entry's data in memory (what a
        harness that does not read storage back needs).
    """

    election_ticks: int = ELECTION_TICKS
    heartbeat_ticks: int = HEARTBEAT_TICKS
    pre_vote: bool = True
    check_quorum: bool = True
    max_msg_bytes: int = MAX_MSG_BYTES
    max_inflight: int = MAX_INFLIGHT
    snapshot_chunk_bytes: int = SNAPSHOT_CHUNK_BYTES
    trailing_entries: int = TRAILING_ENTRIES
    trailing_bytes: int = TRAILING_BYTES
    hot_log_bytes: int | None = HOT_LOG_BYTES

    def __attrs_post_init__(self) -> None:
        if self.heartbeat_ticks < 1:
            raise ValidationError("heartbeat_ticks must be at least 1", field="heartbeat_ticks")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValidationError(
                "election_ticks must be greater than heartbeat_ticks", field="election_ticks"
            )
        for name in ("max_msg_bytes", "max_inflight", "snapshot_chunk_bytes"):
            if getattr(self, name) < 1:
                raise ValidationError(f"{name} must be at least 1", field=name)
        if self.trailing_entries < 0:
            raise ValidationError("trailing_entries must not be negative", field="trailing_entries")
        if self.trailing_bytes < 0:
            raise ValidationError("trailing_bytes must not be negative", field="trailing_bytes")
        if self.hot_log_bytes is not None and self.hot_log_bytes < 0:
            raise ValidationError("hot_log_bytes must not be negative", field="hot_log_bytes")
