"""ReadIndex (thesis 6.4): linearizable read points confirmed by a heartbeat round."""

from __future__ import annotations

import pytest

from trickle.errors import NotLeader
from trickle.raft.config import RaftConfig
from trickle.raft.core import RaftNode, ReadState, Role
from trickle.raft.messages import MessageType, NodeId
from trickle.testing.raftenv import InteractionEnv, drain, make_node, msg, sent

MT = MessageType
CFG = RaftConfig(pre_vote=False, check_quorum=False)


def new_leader(commit_noop: bool = True) -> RaftNode:
    node = make_node(config=CFG)
    node.campaign()
    drain(node)
    node.step(msg(MT.VOTE_RESP, "2", "1", 2))
    drain(node)
    if commit_noop:
        node.step(msg(MT.APPEND_RESP, "2", "1", 2, index=4))
        drain(node)
    return node


def reads(readies: list) -> list[ReadState]:  # type: ignore[type-arg]
    return [rs for rd in readies for rs in rd.read_states]


def beat_ctx(readies: list) -> set[bytes]:  # type: ignore[type-arg]
    return {m.context for m in sent(readies) if m.type is MT.HEARTBEAT}


def test_leader_read_waits_for_a_quorum_of_heartbeat_acks() -> None:
    node = new_leader()
    node.read_index(b"r1")
    readies = drain(node)
    (ctx,) = beat_ctx(readies)
    assert reads(readies) == []
    node.step(msg(MT.HEARTBEAT_RESP, "2", "1", 2, context=ctx))
    assert reads(drain(node)) == [ReadState(index=4, context=b"r1")]


def test_new_leader_answers_reads_only_after_committing_an_entry_of_its_term() -> None:
    node = new_leader(commit_noop=False)
    node.read_index(b"early")
    readies = drain(node)
    assert beat_ctx(readies) == set() and reads(readies) == []
    node.step(msg(MT.APPEND_RESP, "2", "1", 2, index=4))  # the no-op commits
    readies = drain(node)
    (ctx,) = beat_ctx(readies) - {b""}
    node.step(msg(MT.HEARTBEAT_RESP, "3", "1", 2, context=ctx))
    assert reads(drain(node)) == [ReadState(index=4, context=b"early")]


def test_sole_voter_answers_reads_at_once() -> None:
    node = make_node(voters=("1",))
    node.tick()
    drain(node)
    node.read_index(b"solo")
    assert reads(drain(node)) == [ReadState(index=2, context=b"solo")]


def test_an_ack_for_an_earlier_round_does_not_confirm_a_later_read() -> None:
    node = new_leader()
    node.read_index(b"a")
    (ctx_a,) = beat_ctx(drain(node))
    node.read_index(b"b")
    (ctx_b,) = beat_ctx(drain(node))
    assert ctx_a != ctx_b
    node.step(msg(MT.HEARTBEAT_RESP, "2", "1", 2, context=ctx_a))
    assert reads(drain(node)) == [ReadState(index=4, context=b"a")]
    node.step(msg(MT.HEARTBEAT_RESP, "3", "1", 2, context=ctx_b))
    assert reads(drain(node)) == [ReadState(index=4, context=b"b")]


def test_a_later_round_confirms_earlier_reads_too() -> None:
    node = new_leader()
    node.read_index(b"a")
    drain(node)
    node.read_index(b"b")
    (ctx_b,) = beat_ctx(drain(node))
    node.step(msg(MT.HEARTBEAT_RESP, "2", "1", 2, context=ctx_b))
    assert [rs.context for rs in reads(drain(node))] == [b"a", b"b"]


def test_reads_before_one_ready_share_one_heartbeat_round() -> None:
    node = new_leader()
    node.read_index(b"a")
    node.read_index(b"b")
    readies = drain(node)
    assert len([m for m in sent(readies) if m.type is MT.HEARTBEAT]) == 2  # one per follower


def test_read_index_records_the_commit_at_request_time() -> None:
    node = new_leader()
    node.read_index(b"a")
    (ctx,) = beat_ctx(drain(node))
    node.propose(b"x")
    drain(node)
    node.step(msg(MT.APPEND_RESP, "2", "1", 2, index=5))
    node.step(msg(MT.HEARTBEAT_RESP, "2", "1", 2, context=ctx))
    assert reads(drain(node)) == [ReadState(index=4, context=b"a")]


def test_periodic_heartbeats_carry_the_pending_round_so_a_lost_ack_is_retried() -> None:
    node = new_leader()
    node.read_index(b"a")
    (ctx,) = beat_ctx(drain(node))
    node.tick()
    node.tick()
    assert beat_ctx(drain(node)) == {ctx}


def test_pending_reads_are_dropped_when_the_leader_steps_down() -> None:
    node = new_leader()
    node.read_index(b"a")
    (ctx,) = beat_ctx(drain(node))
    node.step(msg(MT.APPEND, "3", "1", 3, index=4, log_term=2))
    node.step(msg(MT.HEARTBEAT_RESP, "2", "1", 3, context=ctx))
    assert reads(drain(node)) == []


def test_follower_forwards_reads_to_the_leader() -> None:
    env = InteractionEnv()
    env.add_nodes(3, voters=("1", "2", "3"))
    env.stabilize()
    env.campaign("1")
    env.stabilize()
    env.propose("1", b"x")
    env.stabilize()
    env.read_index("2", b"f1")
    env.stabilize()
    assert env.read_states[NodeId("2")] == [(5, b"f1")]
    assert env.read_states[NodeId("1")] == []


def test_follower_without_a_leader_cannot_serve_reads() -> None:
    node = make_node(config=CFG)
    with pytest.raises(NotLeader):
        node.read_index(b"x")
    node.campaign()
    assert node.status().role is Role.CANDIDATE
    with pytest.raises(NotLeader):
        node.read_index(b"x")


def test_read_index_responses_from_others_than_the_leader_are_ignored() -> None:
    node = make_node("2", config=CFG)
    node.step(msg(MT.HEARTBEAT, "1", "2", 2))
    drain(node)
    node.step(msg(MT.READ_INDEX_RESP, "3", "2", 2, index=9, context=b"x"))
    assert reads(drain(node)) == []
    node.step(msg(MT.READ_INDEX_RESP, "1", "2", 2, index=9, context=b"x"))
    assert reads(drain(node)) == [ReadState(index=9, context=b"x")]
