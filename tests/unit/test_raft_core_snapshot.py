"""Snapshots: compaction with trailing entries, chunked InstallSnapshot, restarts."""

from __future__ import annotations

import random

import pytest

from trickle.errors import ValidationError
from trickle.raft.config import RaftConfig
from trickle.raft.core import ProgressState, RaftNode, Role
from trickle.raft.messages import (
    ConfState,
    DurableState,
    Entry,
    HardState,
    MessageType,
    NodeId,
    Snapshot,
    SnapshotMeta,
)
from trickle.testing.raftenv import (
    InteractionEnv,
    MemStore,
    StateMachine,
    drain,
    make_node,
    msg,
    sent,
)

MT = MessageType
VOTERS = ConfState(voters=frozenset({NodeId("1"), NodeId("2"), NodeId("3")}))


def cluster(chunk: int = 8, trailing: int = 1, **config: object) -> InteractionEnv:
    env = InteractionEnv()
    env.add_nodes(
        3,
        voters=("1", "2", "3"),
        config=RaftConfig(snapshot_chunk_bytes=chunk, trailing_entries=trailing, **config),  # type: ignore[arg-type]
    )
    env.stabilize()
    env.campaign("1")
    env.stabilize()
    return env


def st(env: InteractionEnv, node: str):  # type: ignore[no-untyped-def]
    return env.nodes[NodeId(node)].raft.status()


def lag_node_3_behind_a_compaction(env: InteractionEnv, entries: int = 5) -> None:
    env.partition(["3"])
    for i in range(entries):
        env.propose("1", b"value-%d" % i)
    env.stabilize()
    env.tick("1")  # the leader's next tick announces the commit (to 2 only: 3 is cut off)
    env.stabilize()
    env.compact("1", st(env, "1").applied)
    env.heal()


def test_compact_keeps_trailing_entries_and_returns_the_first_kept() -> None:
    env = cluster(trailing=3)
    for i in range(10):
        env.propose("1", b"v%d" % i)
    env.stabilize()
    raft = env.nodes[NodeId("1")].raft
    meta = raft.snapshot_meta(12)
    first = raft.compact(Snapshot(meta=meta, data=b"img"))
    assert first == 10  # 12 - 3 + 1
    assert raft.status().first_index == 10
    with pytest.raises(ValidationError, match="compacted"):
        raft.snapshot_meta(8)
    assert raft.snapshot_meta(9).index == 9  # the compaction point's term is known


def test_compact_keeps_no_more_trailing_bytes_than_configured() -> None:
    env = cluster(trailing=100, trailing_bytes=250)
    for i in range(10):
        env.propose("1", b"%03d" % i + b"x" * 97)  # 100 bytes each
    env.stabilize()
    raft = env.nodes[NodeId("1")].raft
    first = raft.compact(Snapshot(meta=raft.snapshot_meta(12), data=b"img"))
    assert first == 11  # entries 11 and 12: 200 bytes; a third would be 300
    assert raft.status().first_index == 11


def test_compact_refuses_a_snapshot_beyond_applied_or_with_a_wrong_label() -> None:
    env = cluster()
    raft = env.nodes[NodeId("1")].raft
    applied = raft.status().applied
    with pytest.raises(ValidationError, match="beyond the applied"):
        raft.compact(Snapshot(meta=SnapshotMeta(applied + 1, 2, VOTERS), data=b""))
    with pytest.raises(ValidationError, match="term"):
        raft.compact(Snapshot(meta=SnapshotMeta(applied, 1, VOTERS), data=b""))
    with pytest.raises(ValidationError, match="configuration"):
        raft.compact(Snapshot(meta=SnapshotMeta(applied, 2, ConfState()), data=b""))
    with pytest.raises(ValidationError, match="not applied"):
        raft.snapshot_meta(applied + 1)


def test_an_older_snapshot_than_the_one_held_changes_nothing() -> None:
    env = cluster()
    for i in range(5):
        env.propose("1", b"v%d" % i)
    env.stabilize()
    raft = env.nodes[NodeId("1")].raft
    first = raft.compact(Snapshot(meta=raft.snapshot_meta(8), data=b"new"))
    assert raft.compact(Snapshot(meta=SnapshotMeta(6, 2, VOTERS), data=b"old")) == first


def test_lagging_follower_gets_the_snapshot_in_chunks_one_at_a_time() -> None:
    env = cluster(chunk=8)
    lag_node_3_behind_a_compaction(env)
    env.tick("1", 2)
    out = env.stabilize()
    chunks = [line for line in out if "SNAPSHOT term" in line and line.startswith("  send")]
    image = env.nodes[NodeId("1")].fsm.image(9)
    assert len(chunks) == -(-len(image) // 8) > 1
    assert chunks[-1].endswith("done")
    # one chunk in flight: each chunk is sent after the previous one's ack was received
    sends = [i for i, line in enumerate(out) if "send 1->3 SNAPSHOT" in line]
    acks = [i for i, line in enumerate(out) if line.startswith("  3->1 SNAPSHOT_RESP")]
    assert all(acks[k] < sends[k + 1] for k in range(len(sends) - 1))
    node3 = env.nodes[NodeId("3")]
    assert node3.store.snapshot is not None and node3.store.snapshot.data == image
    assert node3.fsm.applied_index == 9 and node3.fsm.image(9) == image
    assert st(env, "3").commit == 9
    assert st(env, "1").progress[NodeId("3")].state is ProgressState.REPLICATE
    env.propose("1", b"after")
    env.stabilize()
    env.tick("1")  # followers hear of the commit at the leader's next tick
    env.stabilize()
    assert node3.fsm.applied_index == 10


def test_installed_snapshot_is_in_the_ready_and_replaces_the_log() -> None:
    node = make_node("3", config=RaftConfig(pre_vote=False))
    meta = SnapshotMeta(20, 2, VOTERS)
    node.step(msg(MT.SNAPSHOT, "1", "3", 2, snapshot=meta, offset=0, data=b"abc", done=True))
    rd = node.ready()
    assert rd.snapshot == Snapshot(meta=meta, data=b"abc")
    assert rd.hard_state == HardState(term=2, vote=None, commit=20)
    assert [(m.type, m.index, m.done) for m in rd.messages] == [(MT.SNAPSHOT_RESP, 20, True)]
    assert rd.committed_entries == ()
    node.advance(rd)
    status = node.status()
    assert (status.first_index, status.last_index, status.applied) == (21, 20, 20)


def test_snapshot_matching_the_follower_log_keeps_the_log() -> None:
    node = make_node("3", config=RaftConfig(pre_vote=False))
    ents = tuple(Entry(2, i) for i in range(4, 8))
    node.step(msg(MT.APPEND, "1", "3", 2, index=3, log_term=1, entries=ents))
    drain(node)
    meta = SnapshotMeta(5, 2, VOTERS)
    node.step(msg(MT.SNAPSHOT, "1", "3", 2, snapshot=meta, offset=0, data=b"x", done=True))
    readies = drain(node)
    assert all(rd.snapshot is None for rd in readies)
    assert node.status().last_index == 7 and node.status().commit == 5
    assert [e.index for rd in readies for e in rd.committed_entries] == [4, 5]


def test_a_gap_in_the_chunks_restarts_the_transfer_from_offset_zero() -> None:
    node = make_node("3", config=RaftConfig(pre_vote=False))
    meta = SnapshotMeta(20, 2, VOTERS)
    node.step(msg(MT.SNAPSHOT, "1", "3", 2, snapshot=meta, offset=0, data=b"abcd"))
    node.step(msg(MT.SNAPSHOT, "1", "3", 2, snapshot=meta, offset=8, data=b"ijkl"))
    resps = [(m.index, m.reject) for m in sent(drain(node))]
    assert resps == [(4, False), (0, True)]
    # a fresh start works
    node.step(msg(MT.SNAPSHOT, "1", "3", 2, snapshot=meta, offset=0, data=b"ab"))
    node.step(msg(MT.SNAPSHOT, "1", "3", 2, snapshot=meta, offset=2, data=b"cd", done=True))
    readies = drain(node)
    assert readies[0].snapshot == Snapshot(meta=meta, data=b"abcd")


def test_duplicate_chunks_are_acknowledged_without_corrupting_the_image() -> None:
    node = make_node("3", config=RaftConfig(pre_vote=False))
    meta = SnapshotMeta(20, 2, VOTERS)
    for offset, data in ((0, b"ab"), (0, b"ab"), (2, b"cd"), (2, b"cd")):
        node.step(msg(MT.SNAPSHOT, "1", "3", 2, snapshot=meta, offset=offset, data=data))
    node.step(msg(MT.SNAPSHOT, "1", "3", 2, snapshot=meta, offset=4, data=b"e", done=True))
    readies = drain(node)
    assert [m.index for m in sent(readies)] == [2, 2, 4, 4, 20]
    assert readies[0].snapshot == Snapshot(meta=meta, data=b"abcde")


def run_until_first_chunk(env: InteractionEnv) -> None:
    env.tick("1", 2)
    for _ in range(10):
        env.process_ready("1")
        if any(m.type is MT.SNAPSHOT and m.dst == "3" for m in env.network):
            return
        env.deliver_msgs("3")
        env.process_ready("3")
        env.deliver_msgs("1")
    raise AssertionError("no snapshot chunk was sent")


def test_a_lost_chunk_is_resent_after_heartbeats_without_an_ack() -> None:
    env = cluster(chunk=8)
    lag_node_3_behind_a_compaction(env)
    run_until_first_chunk(env)
    assert env.deliver_msgs("3", drop=True)[0].startswith("  dropped 1->3 SNAPSHOT")
    resent = []
    for _ in range(4):
        env.tick("1", 2)
        resent += [line for line in env.process_ready("1") if "send 1->3 SNAPSHOT" in line]
        env.deliver_msgs("3", type="HEARTBEAT", drop=True)
    assert len(resent) == 1 and "offset=0" in resent[0]
    env.stabilize()
    assert env.nodes[NodeId("3")].fsm.applied_index == 9


def test_leader_restarts_from_offset_zero_when_the_follower_rejects_a_chunk() -> None:
    env = cluster(chunk=8)
    lag_node_3_behind_a_compaction(env)
    run_until_first_chunk(env)
    env.deliver_msgs("3")
    env.process_ready("3")
    env.deliver_msgs("1")  # ack of chunk 0
    env.process_ready("1")  # chunk 1 goes out
    (chunk,) = [m for m in env.network if m.type is MT.SNAPSHOT]
    assert chunk.offset == 8
    raft = env.nodes[NodeId("1")].raft
    raft.step(msg(MT.SNAPSHOT_RESP, "3", "1", 2, index=0, reject=True, snapshot=chunk.snapshot))
    rd = raft.ready()
    assert [(m.type, m.offset) for m in rd.leader_messages] == [(MT.SNAPSHOT, 0)]
    raft.advance(rd)


def test_follower_catching_up_by_appends_abandons_the_snapshot() -> None:
    # etcd's snapshot_succeed_via_app_resp: while in snapshot state, an APPEND_RESP
    # showing the follower can continue from the log ends the snapshot transfer.
    env = cluster(chunk=8)
    lag_node_3_behind_a_compaction(env)
    run_until_first_chunk(env)
    raft = env.nodes[NodeId("1")].raft
    assert raft.status().progress[NodeId("3")].state is ProgressState.SNAPSHOT
    raft.step(msg(MT.APPEND_RESP, "3", "1", 2, index=9))
    pr = raft.status().progress[NodeId("3")]
    assert (pr.state, pr.match) == (ProgressState.REPLICATE, 9)


def test_report_unreachable_sends_a_replicating_follower_back_to_probing() -> None:
    env = cluster()
    raft = env.nodes[NodeId("1")].raft
    assert raft.status().progress[NodeId("3")].state is ProgressState.REPLICATE
    raft.report_unreachable(NodeId("3"))
    assert raft.status().progress[NodeId("3")].state is ProgressState.PROBE


def test_snapshot_is_sent_only_to_a_recently_active_follower() -> None:
    env = cluster(chunk=8)
    lag_node_3_behind_a_compaction(env)
    raft = env.nodes[NodeId("1")].raft
    # a check-quorum round marks 3 inactive; it stays cut off
    env.partition(["3"])
    env.tick("1", 10)
    env.stabilize()
    assert not raft.status().progress[NodeId("3")].recent_active
    raft.report_unreachable(NodeId("3"))
    env.propose("1", b"x")
    out = env.stabilize()
    assert not any("SNAPSHOT term" in line for line in out)


def test_restart_with_snapshot_and_trailing_entries() -> None:
    snap = Snapshot(meta=SnapshotMeta(10, 2, VOTERS), data=b"img")
    entries = tuple(Entry(2, i, data=b"e%d" % i) for i in range(8, 13))
    durable = DurableState(hard_state=HardState(term=3, commit=12), snapshot=snap, entries=entries)
    # the state machine holds nothing: restore from the snapshot, then apply 11 and 12
    node = make_node(durable=durable, voters=())
    readies = drain(node)
    assert readies[0].snapshot == snap
    assert [e.index for rd in readies for e in rd.committed_entries] == [11, 12]
    status = node.status()
    assert (status.first_index, status.last_index, status.conf) == (9, 12, VOTERS)
    # the state machine is at 9: replay 10..12 from the kept entries, no snapshot
    node = make_node(durable=durable, voters=(), applied=9)
    readies = drain(node)
    assert all(rd.snapshot is None for rd in readies)
    assert [e.index for rd in readies for e in rd.committed_entries] == [10, 11, 12]
    # entries of another history below the snapshot are dropped
    bad = DurableState(
        hard_state=HardState(term=3, commit=10),
        snapshot=snap,
        entries=tuple(Entry(1, i) for i in range(8, 13)),
    )
    node = make_node(durable=bad, voters=(), applied=10)
    assert node.status().last_index == 10


def test_restarted_follower_after_install_rejoins() -> None:
    env = cluster(chunk=8)
    lag_node_3_behind_a_compaction(env)
    env.tick("1", 2)
    env.stabilize()
    env.restart("3")
    assert st(env, "3").last_index == 9 and st(env, "3").role is Role.FOLLOWER
    env.propose("1", b"more")
    env.stabilize()
    env.tick("1")
    env.stabilize()
    assert env.nodes[NodeId("3")].fsm.applied_index == 10


def test_new_leader_after_compaction_serves_snapshots_from_its_own() -> None:
    env = cluster(chunk=8)
    for i in range(4):
        env.propose("1", b"v%d" % i)
    env.stabilize()
    env.compact("2", st(env, "2").applied)
    env.partition(["3"])
    env.transfer_leadership("1", "2")
    env.stabilize()
    assert st(env, "2").role is Role.LEADER
    env.propose("2", b"x")
    env.stabilize()
    env.compact("2", st(env, "2").applied)
    env.heal()
    env.tick("2", 2)
    env.stabilize()
    assert env.nodes[NodeId("3")].fsm.applied_index == st(env, "2").applied


def test_a_follower_that_lost_its_log_is_caught_up_not_sent_the_same_append_forever() -> None:
    # Node 3's data is wiped and it comes back under the same id, while the leader's log
    # starts exactly where node 3 had acknowledged. Its rejections were read as stale
    # (below its match) and the leader sent the same APPEND forever.
    env = cluster(trailing=0)
    for i in range(5):
        env.propose("1", b"v%d" % i)
    env.stabilize()
    env.tick("1")
    env.stabilize()
    applied = st(env, "1").applied
    assert st(env, "1").progress[NodeId("3")].match == applied
    env.compact("1", applied)
    node3 = env.nodes[NodeId("3")]
    node3.store, node3.fsm = MemStore(), StateMachine()
    node3.raft = RaftNode(node3.id, config=node3.config, rng=random.Random(3), bootstrap=VOTERS)
    env.nodes[NodeId("1")].raft.report_unreachable(NodeId("3"))  # it was down: probe it
    env.propose("1", b"after")
    for _ in range(3):  # heartbeats find it, a snapshot follows
        env.tick("1", 2)
        env.stabilize()  # raised "did not converge" before
    assert node3.fsm.applied_index == applied + 1  # the snapshot, then "after"
    assert node3.store.snapshot is not None
