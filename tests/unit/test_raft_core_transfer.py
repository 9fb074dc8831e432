"""Leadership transfer (thesis 3.10): TIMEOUT_NOW to a caught-up voter."""

from __future__ import annotations

import pytest

from trickle.errors import NotLeader, ProposalDropped, ValidationError
from trickle.raft.config import RaftConfig
from trickle.raft.core import Role
from trickle.raft.messages import MessageType, NodeId
from trickle.testing.raftenv import InteractionEnv, drain, make_node, msg, sent

MT = MessageType


def cluster(learners: tuple[str, ...] = ()) -> InteractionEnv:
    env = InteractionEnv()
    env.add_nodes(3 + len(learners), voters=("1", "2", "3"), learners=learners)
    env.stabilize()
    env.campaign("1")
    env.stabilize()
    return env


def st(env: InteractionEnv, node: str):  # type: ignore[no-untyped-def]
    return env.nodes[NodeId(node)].raft.status()


def test_transfer_to_a_caught_up_voter_hands_over_at_once() -> None:
    env = cluster()
    env.transfer_leadership("1", "2")
    out = env.stabilize()
    assert any("TIMEOUT_NOW" in line for line in out)
    assert any("ctx=transfer" in line for line in out)  # skips pre-vote, overrides the lease
    assert st(env, "2").role is Role.LEADER and st(env, "2").term == 3
    assert st(env, "1").role is Role.FOLLOWER and st(env, "1").leader == "2"


def test_transfer_to_a_lagging_voter_first_catches_it_up() -> None:
    env = cluster()
    env.partition(["3"])
    env.propose("1", b"x")
    env.stabilize()
    env.heal()
    env.transfer_leadership("1", "3")
    assert st(env, "1").transferee == "3"
    env.stabilize()
    assert st(env, "3").role is Role.LEADER
    assert env.nodes[NodeId("3")].fsm.applied_index >= 5


def test_proposals_are_dropped_during_a_transfer() -> None:
    env = cluster()
    env.partition(["2"])
    env.transfer_leadership("1", "2")
    with pytest.raises(ProposalDropped):
        env.nodes[NodeId("1")].raft.propose(b"x")


def test_transfer_is_abandoned_after_an_election_timeout() -> None:
    env = cluster()
    env.partition(["2"])
    env.transfer_leadership("1", "2")
    env.stabilize()
    env.tick("1", 9)
    assert st(env, "1").transferee == "2"
    env.tick("1", 1)
    assert st(env, "1").transferee is None
    assert st(env, "1").role is Role.LEADER
    env.nodes[NodeId("1")].raft.propose(b"accepted again")


def test_transfer_to_self_is_a_no_op() -> None:
    env = cluster()
    env.transfer_leadership("1", "1")
    assert st(env, "1").transferee is None
    env.nodes[NodeId("1")].raft.propose(b"x")


def test_transfer_to_a_non_voter_is_refused() -> None:
    env = cluster(learners=("4",))
    raft = env.nodes[NodeId("1")].raft
    with pytest.raises(ValidationError):
        raft.transfer_leadership(NodeId("4"))
    with pytest.raises(ValidationError):
        raft.transfer_leadership(NodeId("9"))


def test_transfer_on_a_follower_raises_not_leader() -> None:
    env = cluster()
    with pytest.raises(NotLeader) as info:
        env.nodes[NodeId("2")].raft.transfer_leadership(NodeId("3"))
    assert info.value.leader == "1"


def test_timeout_now_from_anyone_but_the_leader_is_ignored() -> None:
    node = make_node("2")
    node.step(msg(MT.HEARTBEAT, "1", "2", 2))
    drain(node)
    node.step(msg(MT.TIMEOUT_NOW, "3", "2", 2))
    assert node.status().role is Role.FOLLOWER
    node.step(msg(MT.TIMEOUT_NOW, "1", "2", 2))
    assert node.status().role is Role.CANDIDATE
    votes = [m for m in sent(drain(node)) if m.type is MT.VOTE]
    assert {m.context for m in votes} == {b"transfer"}


def test_a_second_transfer_replaces_the_first() -> None:
    env = cluster()
    env.partition(["2"])
    env.transfer_leadership("1", "2")
    env.transfer_leadership("1", "3")
    assert st(env, "1").transferee == "3"
    env.stabilize()
    assert st(env, "3").role is Role.LEADER


def test_membership_changes_are_dropped_during_a_transfer() -> None:
    env = cluster()
    env.partition(["2"])
    env.transfer_leadership("1", "2")
    assert env.propose_conf_change("1", "remove", "3")[0].startswith("error: ProposalDropped")
    env.tick("1", 10)  # abandoned
    assert env.propose_conf_change("1", "remove", "2")[0].startswith("ok")
    assert NodeId("2") not in st(env, "1").conf.voters


def test_transfer_with_pre_vote_disabled_works_too() -> None:
    env = InteractionEnv()
    env.add_nodes(3, voters=("1", "2", "3"), config=RaftConfig(pre_vote=False))
    env.stabilize()
    env.campaign("1")
    env.stabilize()
    env.transfer_leadership("1", "3")
    env.stabilize()
    assert st(env, "3").role is Role.LEADER
