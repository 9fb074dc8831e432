"""Cold log entries: applied, durable entries whose data the core drops from memory
(RaftConfig.hot_log_bytes), sent to slow followers as ColdEntry and read back from storage."""

from __future__ import annotations

import random

import pytest

from trickle.errors import StorageCorrupt
from trickle.raft._log import ENTRY_OVERHEAD_BYTES, RaftLog
from trickle.raft.config import RaftConfig
from trickle.raft.core import RaftNode, Role
from trickle.raft.messages import (
    ColdEntry,
    ConfState,
    Entry,
    Message,
    MessageType,
    NodeId,
    Snapshot,
    SnapshotMeta,
)
from trickle.raft.storage import EntriesCompacted, MemoryStorage, fill_cold_entries
from trickle.raft.wire import encode_message
from trickle.testing.raftenv import drain, make_node, msg

MT = MessageType
COLD = RaftConfig(pre_vote=False, check_quorum=False, hot_log_bytes=10)


def leader(config: RaftConfig, voters: tuple[str, ...] = ("1", "2", "3")) -> RaftNode:
    """Node ``voters[0]`` elected at term 2, its no-op durable (test_raft_core_replication)."""
    node = make_node(voters[0], config=config, voters=voters)
    node.campaign()
    drain(node)
    for v in voters[1:]:
        node.step(msg(MT.VOTE_RESP, v, voters[0], 2))
    assert node.status().role is Role.LEADER
    drain(node)
    return node


def ack(node: RaftNode, src: str, index: int) -> None:
    node.step(msg(MT.APPEND_RESP, src, "1", 2, index=index))


# -- RaftLog against a list of every entry -----------------------------------------------------


class Reference:
    """Every entry of the log in a list, as the log was before cold entries."""

    def __init__(self) -> None:
        self.offset = 0
        self.offset_term = 0
        self.entries: list[Entry] = []

    def term(self, index: int) -> int | None:
        if index == self.offset:
            return self.offset_term
        pos = index - self.offset - 1
        return self.entries[pos].term if 0 <= pos < len(self.entries) else None


def check(log: RaftLog, ref: Reference, rng: random.Random) -> None:
    assert log.offset == ref.offset
    assert log.last_index == ref.offset + len(ref.entries)
    assert log.last_term() == (ref.entries[-1].term if ref.entries else ref.offset_term)
    for index in range(ref.offset - 1, log.last_index + 2):
        assert log.term(index) == ref.term(index), index
    hot = [e for e in ref.entries if e.index > log.hot_offset]
    assert log.hot_bytes == sum(len(e.data) for e in hot)
    assert log.unstable_entries() == [e for e in ref.entries if e.index >= log.unstable_from]
    if not ref.entries:
        return
    lo = rng.randint(ref.offset + 1, log.last_index)
    hi = rng.randint(lo, log.last_index)
    budget = rng.randint(0, 120)
    got = log.slice(lo, hi, budget)
    want: list[Entry] = []
    size = 0
    for e in ref.entries[lo - ref.offset - 1 : hi - ref.offset]:
        size += len(e.data) + ENTRY_OVERHEAD_BYTES
        if size > budget and want:
            break
        want.append(e)
    assert [(e.index, e.term) for e in got] == [(e.index, e.term) for e in want]
    for g, w in zip(got, want, strict=True):
        if g.index <= log.hot_offset:
            assert g == ColdEntry(w.term, w.index, len(w.data))
        else:
            assert g is w
    index = rng.randint(ref.offset, log.last_index)
    stop = rng.randint(ref.offset, index)
    remaining, expected = budget, None
    for i in range(index, stop, -1):
        remaining -= len(ref.entries[i - ref.offset - 1].data)
        if remaining < 0:
            expected = i
            break
    assert log.over_budget_from(index, stop, budget) == expected


@pytest.mark.parametrize("seed", range(40))
def test_a_log_with_cold_entries_answers_as_one_holding_them_all(seed: int) -> None:
    rng = random.Random(seed)
    log, ref = RaftLog(), Reference()
    term, applied = 1, 0
    for _ in range(300):
        r = rng.random()
        last = log.last_index
        if r < 0.4:  # append, maybe replacing an uncommitted (hot, unapplied) suffix
            first = rng.randint(max(applied, log.hot_offset) + 1, last + 1)
            if first <= last and rng.random() < 0.5:
                term += 1
            new = [
                Entry(term, first + i, data=rng.randbytes(rng.randint(0, 30)))
                for i in range(rng.randint(1, 4))
            ]
            log.append(new)
            del ref.entries[first - ref.offset - 1 :]
            ref.entries += new
        elif r < 0.55:  # a save completes
            log.stable_to(last, log.last_term())
        elif r < 0.75:  # entries are applied, then cooled
            durable = log.unstable_from - 1
            applied = rng.randint(applied, max(applied, durable))
            log.cool(applied, rng.randint(0, 60))
        elif r < 0.9 and applied > log.offset:  # compaction below what is applied
            index = rng.randint(log.offset + 1, applied)
            ref.offset_term = ref.term(index) or 0
            del ref.entries[: index - ref.offset]
            ref.offset = index
            log.compact_to(index)
        elif r >= 0.97:  # a snapshot from the leader replaces everything
            index = last + rng.randint(1, 5)
            term += 1
            log.restore(SnapshotMeta(index=index, term=term, conf=ConfState()))
            ref.offset, ref.offset_term, ref.entries = index, term, []
            applied = index
        check(log, ref, rng)


def test_cool_keeps_the_newest_bytes_and_never_cools_what_is_not_applied() -> None:
    log = RaftLog(entries=[Entry(1, i, data=b"x" * 10) for i in range(1, 11)])
    log.stable_to(10, 1)
    log.cool(6, keep_bytes=25)  # entries 1..6 may go: 1..6 go, 7..10 (40 bytes) are not applied
    assert log.hot_offset == 6
    assert log.hot_bytes == 40
    log.cool(10, keep_bytes=25)  # now 7 and 8 go; 9 and 10 (20 bytes) fit in 25
    assert log.hot_offset == 8
    assert log.entry(9).data == b"x" * 10
    with pytest.raises(KeyError, match="cold"):
        log.entry(8)
    with pytest.raises(AssertionError, match="cold"):
        log.append([Entry(2, 8)])  # only committed entries are cold: never replaced


# -- the core ----------------------------------------------------------------------------------


def test_an_append_to_a_slow_follower_carries_the_applied_entries_cold() -> None:
    node = leader(COLD)
    ack(node, "2", 4)
    drain(node)
    for _ in range(5):
        node.propose(b"x" * 8)  # 5..9
    drain(node)
    ack(node, "2", 9)
    drain(node)  # committed and applied: all but the newest 10 bytes go cold
    ack(node, "3", 4)
    (append,) = [m for m in node.ready().leader_messages if m.dst == "3"]
    assert [type(e).__name__ for e in append.entries] == ["ColdEntry"] * 4 + ["Entry"]
    assert append.entries[0] == ColdEntry(2, 5, 8)


def test_a_node_drops_an_append_that_still_holds_cold_entries() -> None:
    follower = leader(COLD, voters=("2", "1", "3"))  # any node: it validates before acting
    before = follower.status()
    follower.step(msg(MT.APPEND, "9", "2", 9, index=4, log_term=2, entries=(ColdEntry(9, 5, 3),)))
    assert follower.status().term == before.term  # not even the term was taken


def test_a_cold_entry_is_never_encoded_on_the_wire() -> None:
    m = Message(
        type=MT.APPEND, src=NodeId("1"), dst=NodeId("2"), term=2, entries=(ColdEntry(2, 5, 3),)
    )
    with pytest.raises(TypeError, match="cold"):
        encode_message(m)


# -- reading them back ---------------------------------------------------------------------------


def test_fill_cold_entries_replaces_the_leading_cold_entries_by_the_stored_ones() -> None:
    stored = [Entry(2, i, data=f"e{i}".encode()) for i in range(5, 10)]
    store = MemoryStorage()
    store.save(entries=[Entry(1, i) for i in range(1, 5)] + stored)
    cold = tuple(ColdEntry(2, i, 2) for i in range(5, 8))
    m = Message(
        type=MT.APPEND, src=NodeId("1"), dst=NodeId("2"), term=2, entries=(*cold, *stored[3:])
    )
    assert fill_cold_entries(m, store.entries).entries == tuple(stored)
    heartbeat = Message(type=MT.HEARTBEAT, src=NodeId("1"), dst=NodeId("2"), term=2)
    assert fill_cold_entries(heartbeat, store.entries) is heartbeat


def test_fill_cold_entries_refuses_stored_entries_of_another_term() -> None:
    store = MemoryStorage()
    store.save(entries=[Entry(1, i) for i in range(1, 6)])
    m = Message(
        type=MT.APPEND, src=NodeId("1"), dst=NodeId("2"), term=2, entries=(ColdEntry(2, 5, 0),)
    )
    with pytest.raises(StorageCorrupt, match="do not match"):
        fill_cold_entries(m, store.entries)


def test_fill_cold_entries_says_when_a_compaction_deleted_them() -> None:
    store = MemoryStorage()
    store.save(entries=[Entry(1, i) for i in range(1, 6)])
    m = Message(
        type=MT.APPEND, src=NodeId("1"), dst=NodeId("2"), term=2, entries=(ColdEntry(1, 2, 0),)
    )
    store.compact(
        Snapshot(meta=SnapshotMeta(index=4, term=1, conf=ConfState()), data=b""), keep_from=4
    )
    with pytest.raises(EntriesCompacted):
        fill_cold_entries(m, store.entries)
