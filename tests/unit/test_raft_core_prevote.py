"""PreVote (thesis 9.6) and CheckQuorum: disruptive nodes, lease, stuck candidates."""

from __future__ import annotations

from trickle.raft.config import RaftConfig
from trickle.raft.core import Role
from trickle.raft.messages import HardState, MessageType, NodeId
from trickle.testing.raftenv import InteractionEnv, drain, make_node, msg, sent

MT = MessageType


def cluster(n: int = 3, **config: object) -> InteractionEnv:
    env = InteractionEnv()
    ids = [str(i) for i in range(1, n + 1)]
    env.add_nodes(n, voters=ids, config=RaftConfig(**config))  # type: ignore[arg-type]
    env.stabilize()
    env.campaign("1")
    env.stabilize()
    assert env.nodes[NodeId("1")].raft.status().role is Role.LEADER
    return env


def st(env: InteractionEnv, node: str):  # type: ignore[no-untyped-def]
    return env.nodes[NodeId(node)].raft.status()


def test_pre_candidate_keeps_its_term_and_vote() -> None:
    node = make_node()
    node.campaign()
    status = node.status()
    assert (status.role, status.term, status.vote) == (Role.PRE_CANDIDATE, 1, None)
    rd = node.ready()
    assert rd.hard_state is None
    assert [(m.type, m.term) for m in rd.messages] == [(MT.PRE_VOTE, 2), (MT.PRE_VOTE, 2)]


def test_pre_vote_changes_no_term_or_vote_on_the_voter() -> None:
    node = make_node("2")
    node.step(msg(MT.PRE_VOTE, "1", "2", 2, index=3, log_term=1))
    readies = drain(node)
    assert node.status().term == 1 and node.status().vote is None
    assert all(rd.hard_state is None for rd in readies)
    (resp,) = sent(readies)
    # a granted pre-vote answers in the candidate's future term
    assert (resp.type, resp.term, resp.reject) == (MT.PRE_VOTE_RESP, 2, False)


def test_pre_vote_refused_to_a_log_that_is_behind() -> None:
    node = make_node("2")
    node.step(msg(MT.PRE_VOTE, "1", "2", 2, index=2, log_term=1))
    (resp,) = sent(drain(node))
    assert resp.reject and resp.term == 1


def test_pre_candidate_becomes_candidate_after_a_quorum_of_pre_votes() -> None:
    node = make_node()
    node.campaign()
    drain(node)
    node.step(msg(MT.PRE_VOTE_RESP, "2", "1", 2))
    assert node.status().role is Role.CANDIDATE and node.status().term == 2
    rd = node.ready()
    assert rd.hard_state == HardState(term=2, vote=NodeId("1"), commit=3)
    assert {m.type for m in rd.messages} == {MT.VOTE}


def test_rejected_pre_vote_from_a_higher_term_makes_the_pre_candidate_follow_that_term() -> None:
    node = make_node()
    node.campaign()
    node.step(msg(MT.PRE_VOTE_RESP, "2", "1", 5, reject=True))
    status = node.status()
    assert (status.role, status.term) == (Role.FOLLOWER, 5)


def test_pre_candidate_steps_down_when_a_quorum_refuses() -> None:
    node = make_node()
    node.campaign()
    node.step(msg(MT.PRE_VOTE_RESP, "2", "1", 1, reject=True))
    node.step(msg(MT.PRE_VOTE_RESP, "3", "1", 1, reject=True))
    status = node.status()
    assert (status.role, status.term) == (Role.FOLLOWER, 1)


def test_rejoining_partitioned_node_does_not_depose_the_leader_with_pre_vote() -> None:
    env = cluster(3, check_quorum=False)
    env.partition(["3"])
    env.propose("1", b"while 3 was away")  # 3's log falls behind
    env.stabilize()
    for _ in range(5):
        env.tick("3", 30)
        env.stabilize()
    assert st(env, "3").term == 2  # its pre-votes never succeed: the term stays
    env.heal()
    env.tick("3", 30)
    env.stabilize()
    assert st(env, "1").role is Role.LEADER and st(env, "1").term == 2
    env.tick("1", 2)
    env.stabilize()
    assert st(env, "3").leader == "1" and st(env, "3").role is Role.FOLLOWER


def test_without_pre_vote_a_rejoining_node_disrupts_the_term() -> None:
    env = cluster(3, check_quorum=False, pre_vote=False)
    env.partition(["3"])
    env.tick("3", 30)
    env.stabilize()
    assert st(env, "3").term > 2
    env.heal()
    env.tick("3", 30)
    env.stabilize()
    assert st(env, "1").term > 2  # deposed by the higher term


def test_voter_hearing_from_a_live_leader_ignores_campaigns_with_check_quorum() -> None:
    node = make_node("2")
    node.step(msg(MT.HEARTBEAT, "1", "2", 2))
    drain(node)
    before = node.status().dropped_messages
    node.step(msg(MT.VOTE, "3", "2", 3, index=9, log_term=2))
    node.step(msg(MT.PRE_VOTE, "3", "2", 3, index=9, log_term=2))
    assert sent(drain(node)) == []
    assert node.status().term == 2 and node.status().dropped_messages == before + 2


def test_transfer_campaign_overrides_the_lease() -> None:
    node = make_node("2")
    node.step(msg(MT.HEARTBEAT, "1", "2", 2))
    drain(node)
    node.step(msg(MT.VOTE, "3", "2", 3, index=9, log_term=2, context=b"transfer"))
    (resp,) = sent(drain(node))
    assert (resp.type, resp.reject, node.status().vote) == (MT.VOTE_RESP, False, "3")


def test_lease_expires_after_an_election_timeout_without_the_leader() -> None:
    node = make_node("2")
    node.step(msg(MT.HEARTBEAT, "1", "2", 2))
    drain(node)
    for _ in range(10):
        node.tick()
        if node.status().role is not Role.FOLLOWER:
            break
    node.step(msg(MT.PRE_VOTE, "3", "2", 3, index=9, log_term=2))
    resp = [m for m in sent(drain(node)) if m.type is MT.PRE_VOTE_RESP]
    assert [m.reject for m in resp] == [False]


def test_leader_steps_down_without_contact_from_a_quorum() -> None:
    env = cluster(3)
    env.partition(["1"])
    for _ in range(5):
        env.tick("1", 2)
        env.stabilize()
    assert st(env, "1").role is Role.LEADER  # within one election timeout
    for _ in range(5):
        env.tick("1", 2)
        env.stabilize()
    assert st(env, "1").role is Role.FOLLOWER and st(env, "1").term == 2


def test_leader_with_a_responsive_quorum_stays() -> None:
    env = cluster(3)
    env.partition(["3"])
    for _ in range(20):
        env.tick("1", 1)
        env.stabilize()
    assert st(env, "1").role is Role.LEADER


def test_check_quorum_frees_a_stuck_candidate() -> None:
    # etcd's TestFreeStuckCandidateWithCheckQuorum: without pre-vote, a partitioned node
    # campaigns to higher terms; when it rejoins, the leader hears its term and steps
    # down so that the cluster can move on past it.
    env = cluster(3, pre_vote=False)
    env.partition(["3"])
    env.tick("3", 30)
    env.stabilize()
    stuck = st(env, "3")
    assert stuck.role is Role.CANDIDATE and stuck.term > 2
    env.heal()
    env.tick("1", 2)  # heartbeat to 3 at the old term: 3 answers with its own
    env.stabilize()
    assert st(env, "1").role is Role.FOLLOWER and st(env, "1").term == stuck.term
    # the cluster elects again, at or above the stuck candidate's term
    for _ in range(30):
        for n in ("1", "2", "3"):
            env.tick(n)
        env.stabilize()
    leaders = [n for n in ("1", "2", "3") if st(env, n).role is Role.LEADER]
    assert len(leaders) == 1 and st(env, leaders[0]).term > stuck.term


def test_learner_never_campaigns() -> None:
    node = make_node("4", voters=("1", "2", "3"), learners=("4",))
    for _ in range(100):
        node.tick()
    node.campaign()
    assert node.status().role is Role.FOLLOWER
    assert sent(drain(node)) == []


def test_removed_node_never_campaigns() -> None:
    node = make_node("9", voters=("1", "2", "3"))
    for _ in range(100):
        node.tick()
    assert node.status().role is Role.FOLLOWER


def test_learner_answers_votes_but_candidates_do_not_count_it() -> None:
    # A learner may already be promoted in the candidate's newer configuration (etcd's
    # TestLearnerCanVote); the candidate counts only voters of its own configuration.
    learner = make_node(
        "4", voters=("1", "2", "3"), learners=("4",), config=RaftConfig(pre_vote=False)
    )
    learner.step(msg(MT.VOTE, "1", "4", 2, index=4, log_term=1))
    assert [m.reject for m in sent(drain(learner))] == [False]
    cand = make_node(
        "1", voters=("1", "2", "3"), learners=("4",), config=RaftConfig(pre_vote=False)
    )
    cand.campaign()
    cand.step(msg(MT.VOTE_RESP, "4", "1", 2))
    assert cand.status().role is Role.CANDIDATE
