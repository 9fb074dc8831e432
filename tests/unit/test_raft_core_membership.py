"""Single-server membership changes (thesis 4.1) and learners."""

from __future__ import annotations

import pytest

from trickle.errors import ConfChangeRejected, NotLeader
from trickle.raft.config import RaftConfig
from trickle.raft.core import Role
from trickle.raft.messages import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    MessageType,
    NodeId,
)
from trickle.raft.wire import encode_conf_change
from trickle.testing.raftenv import InteractionEnv, drain, make_node, msg

MT = MessageType
Op = ConfChangeOp


def cluster(n: int = 3, extra: int = 0, **config: object) -> InteractionEnv:
    env = InteractionEnv()
    ids = [str(i) for i in range(1, n + 1)]
    env.add_nodes(n, voters=ids, config=RaftConfig(**config))  # type: ignore[arg-type]
    if extra:
        env.add_nodes(extra, config=RaftConfig(**config))  # type: ignore[arg-type]
    env.stabilize()
    env.campaign("1")
    env.stabilize()
    return env


def st(env: InteractionEnv, node: str):  # type: ignore[no-untyped-def]
    return env.nodes[NodeId(node)].raft.status()


def conf(voters: str, learners: str = "") -> ConfState:
    return ConfState(
        voters=frozenset(NodeId(v) for v in voters),
        learners=frozenset(NodeId(v) for v in learners),
    )


def change(op: ConfChangeOp, node: str) -> ConfChange:
    return ConfChange(op=op, node=NodeId(node))


def tick_all(env: InteractionEnv, rounds: int) -> None:
    for _ in range(rounds):
        for n in sorted(env.nodes):
            env.tick(n)
        env.stabilize()


def test_new_learner_catches_up_from_an_empty_log_without_counting_for_quorum() -> None:
    env = cluster(extra=1)
    env.propose("1", b"before")
    env.stabilize()
    leader = env.nodes[NodeId("1")].raft
    leader.propose_conf_change(change(Op.ADD_LEARNER, "4"))
    # effective as soon as appended, and announced in the Ready
    assert st(env, "1").conf == conf("123", "4")
    rd_lines = env.stabilize()
    assert any("conf=(voters=(1,2,3) learners=(4))" in line for line in rd_lines)
    assert env.nodes[NodeId("4")].fsm.applied_index == st(env, "1").commit
    assert st(env, "4").conf == conf("123", "4")
    assert st(env, "1").progress[NodeId("4")].learner
    # the learner alone cannot make a quorum with the leader
    env.partition(["2", "3"])
    env.propose("1", b"needs a voter")
    env.stabilize()
    assert st(env, "1").commit < st(env, "1").last_index


def test_promoted_learner_counts_from_the_moment_the_change_is_appended() -> None:
    env = cluster(extra=1)
    env.nodes[NodeId("1")].raft.propose_conf_change(change(Op.ADD_LEARNER, "4"))
    env.stabilize()
    env.nodes[NodeId("1")].raft.propose_conf_change(change(Op.PROMOTE, "4"))
    assert st(env, "1").conf == conf("1234")
    env.stabilize()
    assert st(env, "4").conf == conf("1234")
    assert not st(env, "1").progress[NodeId("4")].learner
    # 4 voters: the leader needs two others now
    env.partition(["3", "4"])
    env.propose("1", b"x")
    env.stabilize()
    assert st(env, "1").commit < st(env, "1").last_index
    env.heal()
    env.tick("1", 2)
    env.stabilize()
    assert st(env, "1").commit == st(env, "1").last_index


def test_only_one_uncommitted_change_at_a_time() -> None:
    env = cluster(extra=2)
    env.partition(["2", "3"])
    leader = env.nodes[NodeId("1")].raft
    leader.propose_conf_change(change(Op.ADD_LEARNER, "4"))
    with pytest.raises(ConfChangeRejected, match="not committed"):
        leader.propose_conf_change(change(Op.ADD_LEARNER, "5"))
    env.heal()
    env.stabilize()
    leader.propose_conf_change(change(Op.ADD_LEARNER, "5"))


@pytest.mark.parametrize(
    ("op", "node", "reason"),
    [
        (Op.ADD_VOTER, "2", "already a voter"),
        (Op.ADD_LEARNER, "3", "already a voter"),
        (Op.PROMOTE, "2", "not a learner"),
        (Op.PROMOTE, "9", "not a learner"),
        (Op.REMOVE, "9", "not a member"),
        (Op.ADD_VOTER, "", "non-empty"),
    ],
)
def test_nonsensical_changes_are_rejected(op: ConfChangeOp, node: str, reason: str) -> None:
    env = cluster()
    with pytest.raises(ConfChangeRejected, match=reason):
        env.nodes[NodeId("1")].raft.propose_conf_change(change(op, node))


def test_removing_the_last_voter_is_rejected() -> None:
    node = make_node(voters=("1",))
    node.tick()
    drain(node)
    with pytest.raises(ConfChangeRejected, match="last voter"):
        node.propose_conf_change(change(Op.REMOVE, "1"))


def test_conf_change_on_a_follower_raises_not_leader() -> None:
    env = cluster()
    with pytest.raises(NotLeader):
        env.nodes[NodeId("2")].raft.propose_conf_change(change(Op.ADD_LEARNER, "4"))


def test_follower_configuration_follows_appends_and_reverts_on_truncation() -> None:
    node = make_node("2", config=RaftConfig(pre_vote=False))
    add4 = Entry(2, 4, EntryKind.CONF_CHANGE, encode_conf_change(change(Op.ADD_VOTER, "4")))
    node.step(msg(MT.APPEND, "1", "2", 2, index=3, log_term=1, entries=(add4,)))
    rd = node.ready()
    assert rd.conf == conf("1234")
    node.advance(rd)
    # a new leader of term 3 never had that entry: it is cut and the change undone
    node.step(msg(MT.APPEND, "3", "2", 3, index=3, log_term=1, entries=(Entry(3, 4),)))
    rd = node.ready()
    assert rd.conf == conf("123")
    assert node.status().conf == conf("123")


def test_removed_follower_no_longer_counts_and_stops_campaigning() -> None:
    env = cluster(5)
    env.nodes[NodeId("1")].raft.propose_conf_change(change(Op.REMOVE, "5"))
    assert st(env, "1").conf == conf("1234")
    env.stabilize()
    assert NodeId("5") not in st(env, "1").progress
    assert st(env, "5").conf == conf("1234")
    env.tick("5", 100)
    assert st(env, "5").role is Role.FOLLOWER


def test_removing_a_follower_of_two_commits_without_it() -> None:
    # The two-node case: the remaining node alone is the quorum as soon as the change is
    # appended, so removing a dead peer cannot get stuck.
    env = cluster(2)
    env.partition(["2"])
    env.nodes[NodeId("1")].raft.propose_conf_change(change(Op.REMOVE, "2"))
    env.stabilize()
    assert st(env, "1").commit == st(env, "1").last_index
    assert st(env, "1").conf == conf("1")
    env.propose("1", b"alone")
    env.stabilize()
    assert st(env, "1").commit == st(env, "1").last_index


def test_removing_the_leader_of_two_hands_over_to_the_other() -> None:
    env = cluster(2)
    env.nodes[NodeId("1")].raft.propose_conf_change(change(Op.REMOVE, "1"))
    assert st(env, "1").role is Role.LEADER  # keeps managing until the change commits
    env.stabilize()
    assert st(env, "1").role is Role.FOLLOWER
    tick_all(env, 3)
    assert st(env, "2").role is Role.LEADER and st(env, "2").conf == conf("2")
    env.propose("2", b"after")
    env.stabilize()
    assert st(env, "2").commit == st(env, "2").last_index


def test_removed_leader_commits_without_counting_itself_then_steps_down() -> None:
    env = cluster(3)
    env.partition(["3"])
    env.nodes[NodeId("1")].raft.propose_conf_change(change(Op.REMOVE, "1"))
    env.stabilize()
    # voters are now 2 and 3: node 2's copy alone is not a quorum of {2, 3}
    assert st(env, "1").role is Role.LEADER
    assert st(env, "1").commit < st(env, "1").last_index
    env.heal()
    env.tick("1", 2)
    env.stabilize()
    assert st(env, "1").role is Role.FOLLOWER
    leaders = [n for n in ("2", "3") if st(env, n).role is Role.LEADER]
    assert len(leaders) == 1  # TIMEOUT_NOW handed over at once
    assert st(env, leaders[0]).conf == conf("23")


def test_removed_leader_takes_no_part_afterwards() -> None:
    env = cluster(3)
    env.nodes[NodeId("1")].raft.propose_conf_change(change(Op.REMOVE, "1"))
    env.stabilize()
    tick_all(env, 30)
    assert st(env, "1").role is Role.FOLLOWER
    assert sum(st(env, n).role is Role.LEADER for n in ("2", "3")) == 1


def test_snapshot_meta_labels_an_index_with_its_term_and_configuration() -> None:
    env = cluster(extra=1)
    env.nodes[NodeId("1")].raft.propose_conf_change(change(Op.ADD_LEARNER, "4"))
    env.stabilize()
    raft = env.nodes[NodeId("1")].raft
    assert raft.snapshot_meta(4).conf == conf("123")
    assert raft.snapshot_meta(4).term == 2
    assert raft.snapshot_meta(5).conf == conf("123", "4")


def test_leader_that_lost_its_lease_before_its_removal_committed_still_campaigns() -> None:
    # Thesis 4.2.2 (fuzz seed 299 regression): node 1 appends its own removal, cannot
    # reach node 2 and steps down (CheckQuorum). Node 2 lacks the entry: its voters are
    # still (1, 2) and node 1, whose log is longer, refuses it. Node 1 must campaign
    # although its latest configuration leaves it out; it then commits its removal and
    # hands over.
    env = cluster(2)
    env.partition(["2"])
    env.nodes[NodeId("1")].raft.propose_conf_change(change(Op.REMOVE, "1"))
    env.stabilize()
    env.tick("1", 20)
    assert st(env, "1").role is Role.FOLLOWER
    env.heal()
    tick_all(env, 40)
    assert st(env, "2").role is Role.LEADER and st(env, "2").conf == conf("2")
    assert st(env, "1").role is Role.FOLLOWER
    assert st(env, "2").commit == st(env, "2").last_index
