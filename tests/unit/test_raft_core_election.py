"""RaftNode leader election (Raft paper section 5.2, etcd's raft_paper_test.go spirit)."""

from __future__ import annotations

import random

import pytest

from trickle.errors import NotLeader, StorageCorrupt, ValidationError
from trickle.raft.config import RaftConfig
from trickle.raft.core import RaftNode, Role
from trickle.raft.messages import (
    ConfState,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    MessageType,
    NodeId,
)
from trickle.raft.wire import decode_conf_change
from trickle.testing.raftenv import InteractionEnv, drain, make_node, msg, sent

MT = MessageType
NO_PREVOTE = RaftConfig(pre_vote=False, check_quorum=False)


def ticks_until_campaign(node: RaftNode, limit: int = 100) -> int:
    for i in range(1, limit + 1):
        node.tick()
        if node.status().role is not Role.FOLLOWER:
            return i
    raise AssertionError("never campaigned")


def test_bootstrap_appends_one_sorted_add_voter_entry_per_voter_at_term_1() -> None:
    raft = RaftNode(
        NodeId("b"),
        config=RaftConfig(),
        rng=random.Random(1),
        bootstrap=ConfState(voters=frozenset({NodeId("c"), NodeId("a"), NodeId("b")})),
    )
    rd = raft.ready()
    assert [(e.term, e.index, e.kind) for e in rd.entries] == [
        (1, 1, EntryKind.CONF_CHANGE),
        (1, 2, EntryKind.CONF_CHANGE),
        (1, 3, EntryKind.CONF_CHANGE),
    ]
    assert [decode_conf_change(e.data).node for e in rd.entries] == ["a", "b", "c"]
    assert rd.hard_state == HardState(term=1, vote=None, commit=3)
    assert rd.committed_entries == rd.entries
    assert rd.conf == ConfState(voters=frozenset({NodeId("a"), NodeId("b"), NodeId("c")}))


def test_bootstrap_is_identical_on_every_node() -> None:
    voters = ConfState(voters=frozenset({NodeId("1"), NodeId("2"), NodeId("3")}))
    firsts = [
        RaftNode(NodeId(n), config=RaftConfig(), rng=random.Random(n), bootstrap=voters)
        .ready()
        .entries
        for n in ("1", "2", "3")
    ]
    assert firsts[0] == firsts[1] == firsts[2]


def test_node_without_state_or_bootstrap_waits_for_a_leader() -> None:
    raft = RaftNode(NodeId("4"), config=RaftConfig(), rng=random.Random(4))
    for _ in range(100):
        raft.tick()
    assert raft.status().role is Role.FOLLOWER
    assert not raft.has_ready()


def test_follower_campaigns_within_randomized_election_timeout() -> None:
    for seed in range(30):
        node = make_node(config=NO_PREVOTE, seed=seed)
        n = ticks_until_campaign(node)
        assert 10 <= n < 20
        assert node.status().role is Role.CANDIDATE


def test_election_timeouts_differ_between_nodes() -> None:
    timeouts = {ticks_until_campaign(make_node(config=NO_PREVOTE, seed=s)) for s in range(30)}
    assert len(timeouts) > 3


def test_sole_voter_becomes_leader_at_first_tick() -> None:
    node = make_node(voters=("1",))
    node.tick()
    st = node.status()
    assert st.role is Role.LEADER and st.term == 2 and st.leader == "1"
    rd = node.ready()
    assert rd.entries == (Entry(2, 2, EntryKind.NORMAL, b""),)
    assert rd.hard_state == HardState(term=2, vote=NodeId("1"), commit=1)
    node.advance(rd)
    # its own entry counts once durable: the no-op commits in the next Ready
    rd = node.ready()
    assert rd.hard_state is not None and rd.hard_state.commit == 2
    assert [e.index for e in rd.committed_entries] == [2]


def test_candidate_asks_every_other_voter_after_persisting_its_vote() -> None:
    node = make_node(config=NO_PREVOTE, voters=("1", "2", "3"), learners=("4",))
    node.campaign()
    rd = node.ready()
    assert rd.hard_state == HardState(term=2, vote=NodeId("1"), commit=4)
    assert rd.leader_messages == ()
    # the learner (bootstrap entry 4) is not asked
    assert [(m.type, m.dst, m.term, m.log_term, m.index) for m in rd.messages] == [
        (MT.VOTE, "2", 2, 1, 4),
        (MT.VOTE, "3", 2, 1, 4),
    ]


def test_candidate_becomes_leader_with_a_majority_and_appends_a_noop() -> None:
    node = make_node(config=NO_PREVOTE)
    node.campaign()
    drain(node)
    node.step(msg(MT.VOTE_RESP, "2", "1", 2))
    assert node.status().role is Role.LEADER
    rd = node.ready()
    assert rd.entries == (Entry(2, 4, EntryKind.NORMAL, b""),)
    # the term is durable (it went out with the VOTEs): APPENDs may go before the write
    assert {m.dst for m in rd.leader_messages} == {"2", "3"}
    assert all(m.type is MT.APPEND and m.entries == rd.entries for m in rd.leader_messages)


def test_candidate_steps_down_when_a_majority_rejects() -> None:
    node = make_node(config=NO_PREVOTE)
    node.campaign()
    node.step(msg(MT.VOTE_RESP, "2", "1", 2, reject=True))
    assert node.status().role is Role.CANDIDATE
    node.step(msg(MT.VOTE_RESP, "3", "1", 2, reject=True))
    assert node.status().role is Role.FOLLOWER
    assert node.status().term == 2


def test_candidate_follows_a_leader_of_its_term() -> None:
    node = make_node(config=NO_PREVOTE)
    node.campaign()
    node.step(msg(MT.APPEND, "2", "1", 2, index=3, log_term=1, commit=3))
    st = node.status()
    assert (st.role, st.leader, st.term) == (Role.FOLLOWER, "2", 2)


def test_node_votes_at_most_once_per_term() -> None:
    node = make_node("3", config=NO_PREVOTE)
    node.step(msg(MT.VOTE, "1", "3", 2, index=3, log_term=1))
    node.step(msg(MT.VOTE, "2", "3", 2, index=3, log_term=1))
    readies = drain(node)
    resps = [(m.dst, m.reject) for m in sent(readies)]
    assert resps == [("1", False), ("2", True)]
    assert readies[0].hard_state == HardState(term=2, vote=NodeId("1"), commit=3)
    # every VOTE_RESP waits for the vote to be durable
    assert all(not rd.leader_messages for rd in readies)
    # asking again gets the same answer
    node.step(msg(MT.VOTE, "1", "3", 2, index=3, log_term=1))
    assert [m.reject for m in sent(drain(node))] == [False]


@pytest.mark.parametrize(
    ("log_term", "index", "granted"),
    [(1, 2, False), (1, 3, True), (1, 4, True), (0, 9, False), (2, 1, True)],
)
def test_vote_granted_only_to_an_up_to_date_log(log_term: int, index: int, granted: bool) -> None:
    node = make_node("3", config=NO_PREVOTE)  # log ends at 1/3
    node.step(msg(MT.VOTE, "1", "3", 2, index=index, log_term=log_term))
    (resp,) = sent(drain(node))
    assert resp.reject is not granted


def test_higher_term_turns_any_role_into_follower() -> None:
    for make_role in ("candidate", "leader"):
        node = make_node(config=NO_PREVOTE)
        node.campaign()
        if make_role == "leader":
            node.step(msg(MT.VOTE_RESP, "2", "1", 2))
        node.step(msg(MT.APPEND, "3", "1", 7, index=3, log_term=1))
        st = node.status()
        assert (st.role, st.term, st.leader, st.vote) == (Role.FOLLOWER, 7, "3", None)


def test_stale_term_messages_are_dropped_and_counted() -> None:
    node = make_node(config=NO_PREVOTE)
    node.step(msg(MT.APPEND, "2", "1", 5, index=3, log_term=1))
    drain(node)
    before = node.status().dropped_messages
    node.step(msg(MT.VOTE, "3", "1", 4, index=9, log_term=4))
    node.step(msg(MT.VOTE_RESP, "3", "1", 4))
    assert node.status().dropped_messages == before + 2
    assert node.status().term == 5
    assert sent(drain(node)) == []


def test_misaddressed_unknown_and_malformed_messages_are_dropped() -> None:
    node = make_node(config=NO_PREVOTE)
    bad = [
        msg(MT.APPEND, "2", "9", 2),  # wrong dst
        msg(MT.APPEND, "1", "1", 2),  # from itself
        msg(MT.APPEND, "2", "1", 2, index=3, log_term=1, entries=(Entry(2, 9),)),  # gap
        msg(MT.APPEND, "2", "1", 2, index=3, log_term=1, entries=(Entry(3, 4),)),  # term > msg
        msg(MT.APPEND, "2", "1", 2, index=-1),
        msg(MT.APPEND, "2", "1", 2, index=3, log_term=1, entries=(Entry(2, 4, 7),)),  # type: ignore[arg-type]
        msg(MT.SNAPSHOT, "2", "1", 2),  # no snapshot meta
        msg(MT.APPEND_RESP, "9", "1", 1, index=3),  # not a member
        msg(MT.READ_INDEX, "9", "1", 1, context=b"x"),
        msg(MT.HEARTBEAT_RESP, "2", "1", 1),  # followers expect no responses
    ]
    for m in bad:
        node.step(m)
    assert node.status().dropped_messages == len(bad)
    assert node.status().term == 1


def test_step_never_raises_on_random_garbage() -> None:
    rng = random.Random(7)
    node = make_node(config=NO_PREVOTE)
    values = [-1, 0, 1, 2, 3, 10**9]
    for _ in range(3000):
        t = rng.choice(list(MT))
        entries: tuple[Entry, ...] = ()
        if rng.random() < 0.3:
            start = rng.choice(values)
            entries = tuple(Entry(rng.choice(values), start + i) for i in range(rng.randint(0, 3)))
        m = msg(
            t,
            rng.choice(["1", "2", "3", "9", ""]),
            rng.choice(["1", "1", "2"]),
            rng.choice(values),
            index=rng.choice(values),
            log_term=rng.choice(values),
            commit=rng.choice(values),
            entries=entries,
            reject=rng.random() < 0.5,
            reject_hint=rng.choice(values),
        )
        node.step(m)
        if rng.random() < 0.2:
            drain(node)
        if rng.random() < 0.05:
            node.tick()
    assert node.status().dropped_messages > 0


def test_restarted_node_recovers_term_vote_and_log() -> None:
    entries = (
        Entry(1, 1, EntryKind.NORMAL, b"a"),
        Entry(2, 2, EntryKind.NORMAL, b"b"),
    )
    durable = DurableState(
        hard_state=HardState(term=3, vote=NodeId("2"), commit=1), entries=entries
    )
    node = make_node(durable=durable, voters=())
    st = node.status()
    assert (st.term, st.vote, st.commit, st.last_index) == (3, "2", 1, 2)
    # it voted in term 3 already: another candidate of term 3 is refused
    node.step(msg(MT.VOTE, "3", "1", 3, index=9, log_term=3))
    assert [m.reject for m in sent(drain(node))] == [True]
    # the entry committed before the crash is delivered (applied=0)
    node2 = make_node(durable=durable, voters=())
    (rd,) = drain(node2)
    assert [e.index for e in rd.committed_entries] == [1]
    assert rd.hard_state is None and rd.entries == ()


def test_restart_does_not_deliver_entries_already_applied() -> None:
    entries = tuple(Entry(1, i, EntryKind.NORMAL, b"x") for i in range(1, 6))
    durable = DurableState(hard_state=HardState(term=1, commit=5), entries=entries)
    node = make_node(durable=durable, applied=3, voters=())
    assert [e.index for rd in drain(node) for e in rd.committed_entries] == [4, 5]


def test_inconsistent_durable_state_is_refused() -> None:
    with pytest.raises(StorageCorrupt):
        make_node(
            durable=DurableState(hard_state=HardState(term=1), entries=(Entry(1, 1), Entry(1, 3))),
            voters=(),
        )
    with pytest.raises(StorageCorrupt):
        make_node(
            durable=DurableState(hard_state=HardState(term=1, commit=4), entries=(Entry(1, 1),)),
            voters=(),
        )
    with pytest.raises(StorageCorrupt):
        make_node(
            durable=DurableState(hard_state=HardState(term=1), entries=(Entry(2, 1),)), voters=()
        )
    with pytest.raises(ValidationError):
        make_node(
            durable=DurableState(hard_state=HardState(term=1), entries=(Entry(1, 1),)),
            applied=5,
            voters=(),
        )


def test_proposals_on_a_follower_raise_not_leader_with_a_hint() -> None:
    node = make_node(config=NO_PREVOTE)
    with pytest.raises(NotLeader) as info:
        node.propose(b"x")
    assert info.value.leader is None
    node.step(msg(MT.HEARTBEAT, "2", "1", 2))
    with pytest.raises(NotLeader) as info:
        node.propose(b"x")
    assert info.value.leader == "2"


def test_three_nodes_elect_exactly_one_leader_by_ticking() -> None:
    env = InteractionEnv()
    env.add_nodes(3, voters=("1", "2", "3"))
    env.stabilize()
    for _ in range(40):
        for n in ("1", "2", "3"):
            env.nodes[NodeId(n)].raft.tick()
        env.stabilize()
    roles = [env.nodes[NodeId(n)].raft.status() for n in ("1", "2", "3")]
    leaders = [st for st in roles if st.role is Role.LEADER]
    assert len(leaders) == 1
    assert all(st.leader == leaders[0].id and st.term == leaders[0].term for st in roles)


def test_same_seed_gives_the_same_run() -> None:
    def run() -> list[str]:
        env = InteractionEnv()
        out = env.add_nodes(5, voters=("1", "2", "3", "4", "5"))
        for _ in range(60):
            for n in sorted(env.nodes):
                out += env.tick(n)
            out += env.stabilize()
        return out

    assert run() == run()
