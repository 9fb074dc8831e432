"""RaftNode log replication and commitment (Raft paper 5.3-5.4, etcd's raft_test.go)."""

from __future__ import annotations

from trickle.raft.config import RaftConfig
from trickle.raft.core import ProgressState, RaftNode, Role
from trickle.raft.messages import (
    ConfChange,
    ConfChangeOp,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    MessageType,
    NodeId,
)
from trickle.raft.wire import encode_conf_change
from trickle.testing.raftenv import InteractionEnv, drain, make_node, msg, sent

MT = MessageType
NO_PREVOTE = RaftConfig(pre_vote=False, check_quorum=False)


def leader(config: RaftConfig = NO_PREVOTE, voters: tuple[str, ...] = ("1", "2", "3")) -> RaftNode:
    """Node 1 elected at term 2 with its no-op (index len(voters)+1) durable; followers
    still at match 0 (probe)."""
    node = make_node(config=config, voters=voters)
    node.campaign()
    drain(node)
    for v in voters[1:]:
        node.step(msg(MT.VOTE_RESP, v, "1", 2))
    assert node.status().role is Role.LEADER
    drain(node)
    return node


def ack(node: RaftNode, src: str, index: int, term: int = 2) -> None:
    node.step(msg(MT.APPEND_RESP, src, "1", term, index=index))


def test_proposal_goes_out_at_once_to_followers_without_a_tick() -> None:
    node = leader()
    ack(node, "2", 4)
    ack(node, "3", 4)
    drain(node)
    node.propose(b"x")
    rd = node.ready()
    assert rd.entries == (Entry(2, 5, EntryKind.NORMAL, b"x"),)
    appends = [m for m in rd.leader_messages if m.type is MT.APPEND]
    assert [(m.dst, m.index, m.log_term, [e.index for e in m.entries]) for m in appends] == [
        ("2", 4, 2, [5]),
        ("3", 4, 2, [5]),
    ]


def test_proposals_before_one_ready_are_batched_in_one_append() -> None:
    node = leader()
    ack(node, "2", 4)
    ack(node, "3", 4)
    drain(node)
    for data in (b"a", b"b", b"c"):
        node.propose(data)
    rd = node.ready()
    appends = [m for m in rd.leader_messages if m.dst == "2"]
    assert len(appends) == 1
    assert [e.data for e in appends[0].entries] == [b"a", b"b", b"c"]


def test_leader_counts_its_own_entries_only_once_durable() -> None:
    node = leader()
    ack(node, "2", 4)
    ack(node, "3", 4)
    drain(node)
    node.propose(b"x")  # index 5
    rd = node.ready()
    ack(node, "2", 5)  # one follower + leader (not yet durable) is not a quorum of... yes
    # with only follower 2's ack the entry has 1 durable copy outside the leader: no commit
    assert node.status().commit == 4
    node.advance(rd)  # the leader's write is done: now 2 of 3 hold it
    assert node.status().commit == 5


def test_commit_needs_a_majority_of_voters() -> None:
    node = leader(voters=("1", "2", "3", "4", "5"))
    node.propose(b"x")  # index 7
    drain(node)
    ack(node, "2", 7)
    assert node.status().commit < 7
    ack(node, "3", 7)
    assert node.status().commit == 7
    rd = node.ready()
    assert [e.index for e in rd.committed_entries] == [6, 7]


def test_leader_never_commits_an_old_term_entry_by_counting_figure_8() -> None:
    # Node 1 was leader in term 2 and appended 2/6 on few nodes; now it leads term 4.
    durable = DurableState(
        hard_state=HardState(term=3, vote=None, commit=5),
        entries=(*_bootstrap(["1", "2", "3", "4", "5"]), Entry(2, 6, EntryKind.NORMAL, b"old")),
    )
    node = make_node(durable=durable, config=NO_PREVOTE, voters=())
    node.campaign()
    drain(node)
    node.step(msg(MT.VOTE_RESP, "2", "1", 4))
    node.step(msg(MT.VOTE_RESP, "3", "1", 4))
    assert node.status().role is Role.LEADER
    drain(node)  # no-op 4/7 durable on the leader
    # a majority stores the old entry 2/6 but not the no-op: 2/6 must stay uncommitted
    ack(node, "2", 6, term=4)
    ack(node, "3", 6, term=4)
    assert node.status().commit == 5
    ack(node, "2", 7, term=4)
    ack(node, "3", 7, term=4)
    assert node.status().commit == 7


def test_follower_appends_and_answers_only_after_persisting() -> None:
    node = make_node("2", config=NO_PREVOTE)
    node.step(
        msg(
            MT.APPEND,
            "1",
            "2",
            2,
            index=3,
            log_term=1,
            commit=3,
            entries=(Entry(2, 4), Entry(2, 5)),
        )
    )
    rd = node.ready()
    assert [e.index for e in rd.entries] == [4, 5]
    assert rd.leader_messages == ()
    assert [(m.type, m.index) for m in rd.messages] == [(MT.APPEND_RESP, 5)]


def test_follower_commit_is_bounded_by_the_entries_it_matched() -> None:
    node = make_node("2", config=NO_PREVOTE)
    node.step(msg(MT.APPEND, "1", "2", 2, index=3, log_term=1, commit=9, entries=(Entry(2, 4),)))
    assert node.status().commit == 4


def test_follower_truncates_a_conflicting_suffix() -> None:
    node = make_node("2", config=NO_PREVOTE)
    node.step(msg(MT.APPEND, "1", "2", 2, index=3, log_term=1, entries=(Entry(2, 4), Entry(2, 5))))
    drain(node)
    node.step(msg(MT.APPEND, "3", "2", 3, index=4, log_term=2, entries=(Entry(3, 5), Entry(3, 6))))
    rd = node.ready()
    assert [(e.term, e.index) for e in rd.entries] == [(3, 5), (3, 6)]
    assert rd.messages[-1].index == 6


def test_follower_rejects_append_with_a_hint_by_term() -> None:
    # follower log: 1/1..1/3, 2/4, 2/5, 2/6; leader probes at (5/8)
    node = make_node("2", config=NO_PREVOTE)
    node.step(
        msg(
            MT.APPEND,
            "3",
            "2",
            2,
            index=3,
            log_term=1,
            entries=(Entry(2, 4), Entry(2, 5), Entry(2, 6)),
        )
    )
    drain(node)
    node.step(msg(MT.APPEND, "1", "2", 5, index=8, log_term=5))
    (resp,) = sent(drain(node))
    assert resp.reject and resp.index == 8
    # last index <= 8 whose term <= 5 is 6 (term 2)
    assert (resp.reject_hint, resp.log_term) == (6, 2)


def test_leader_backs_up_over_a_whole_conflicting_term_in_one_step() -> None:
    # leader log: 1/1..3, 2/4, 4/5..4/7 (term 5 now); follower has 3/5..3/9 (another term)
    durable = DurableState(
        hard_state=HardState(term=4, commit=3),
        entries=(
            *_bootstrap(["1", "2", "3"]),
            Entry(2, 4),
            Entry(4, 5),
            Entry(4, 6),
            Entry(4, 7),
        ),
    )
    node = make_node(durable=durable, config=NO_PREVOTE, voters=())
    node.campaign()
    drain(node)
    node.step(msg(MT.VOTE_RESP, "2", "1", 5))
    drain(node)  # no-op 5/8; probes sent with prev 4/7
    # follower 3 has 3/5..3/9: rejects prev (4/7) with hint (7, 3)
    node.step(msg(MT.APPEND_RESP, "3", "1", 5, index=7, reject=True, reject_hint=7, log_term=3))
    (probe,) = [m for m in sent(drain(node)) if m.dst == "3"]
    # the leader's last index with term <= 3 is 4 (term 2): it probes there at once
    assert (probe.index, probe.log_term) == (4, 2)


def test_append_older_than_follower_commit_is_answered_with_the_commit() -> None:
    node = make_node("2", config=NO_PREVOTE)
    node.step(
        msg(
            MT.APPEND,
            "1",
            "2",
            2,
            index=3,
            log_term=1,
            commit=5,
            entries=(Entry(2, 4), Entry(2, 5)),
        )
    )
    drain(node)
    node.step(msg(MT.APPEND, "1", "2", 2, index=2, log_term=1))
    (resp,) = sent(drain(node))
    assert (resp.type, resp.reject, resp.index) == (MT.APPEND_RESP, False, 5)


def test_probe_sends_one_append_until_answered() -> None:
    node = leader()
    node.propose(b"a")
    node.propose(b"b")
    msgs = [m for m in sent(drain(node)) if m.dst == "2"]
    assert msgs == []  # the no-op probe is still unanswered
    ack(node, "2", 4)
    appends = [m for m in sent(drain(node)) if m.dst == "2"]
    assert [[e.index for e in m.entries] for m in appends] == [[5, 6]]
    assert node.status().progress[NodeId("2")].state is ProgressState.REPLICATE


def test_replicate_window_limits_appends_in_flight() -> None:
    node = leader(config=RaftConfig(pre_vote=False, check_quorum=False, max_inflight=2))
    ack(node, "2", 4)
    drain(node)
    for i in range(5):
        node.propose(b"p%d" % i)
        drain(node)
    appends = []
    # after the ack only 2 APPENDs may be in flight
    node.propose(b"more")
    appends = [m for m in sent(drain(node)) if m.dst == "2"]
    assert appends == []
    ack(node, "2", 5)
    appends = [m for m in sent(drain(node)) if m.dst == "2"]
    assert len(appends) == 1 and appends[0].index == 6


def test_append_size_is_bounded_by_max_msg_bytes_but_carries_at_least_one_entry() -> None:
    node = leader(config=RaftConfig(pre_vote=False, check_quorum=False, max_msg_bytes=100))
    ack(node, "2", 4)
    drain(node)
    for _ in range(3):
        node.propose(b"x" * 60)
    node.propose(b"y" * 500)
    appends = [m for m in sent(drain(node)) if m.dst == "2"]
    assert [len(m.entries) for m in appends] == [1, 1, 1, 1]


def test_commit_reaches_followers_in_heartbeats_bounded_by_their_match() -> None:
    node = leader()
    ack(node, "2", 4)
    drain(node)
    for _ in range(2):  # heartbeat_ticks
        node.tick()
    beats = {m.dst: m.commit for m in sent(drain(node)) if m.type is MT.HEARTBEAT}
    assert beats == {"2": 4, "3": 0}


def replicating_leader() -> RaftNode:
    """leader() with both followers acknowledged up to the no-op (4), announced."""
    node = leader()
    ack(node, "2", 4)
    ack(node, "3", 4)
    node.tick()  # the no-op's commit is announced at the next tick
    drain(node)
    return node


def test_a_new_commit_is_not_announced_alone_at_once() -> None:
    node = replicating_leader()
    node.propose(b"x")
    drain(node)
    ack(node, "2", 5)
    ack(node, "3", 5)
    readies = drain(node)
    assert node.status().commit == 5
    assert [e.index for rd in readies for e in rd.committed_entries] == [5]
    assert sent(readies) == []  # no empty APPEND per follower (and no answer to each)


def test_a_new_commit_rides_on_the_next_append() -> None:
    node = replicating_leader()
    node.propose(b"x")
    drain(node)
    ack(node, "2", 5)
    ack(node, "3", 5)
    drain(node)
    node.propose(b"y")
    appends = [m for m in sent(drain(node)) if m.type is MT.APPEND]
    assert [(m.dst, m.commit, [e.index for e in m.entries]) for m in appends] == [
        ("2", 5, [6]),
        ("3", 5, [6]),
    ]
    node.tick()
    # carried already: nothing to announce at the tick (a heartbeat may go out)
    assert [m for m in sent(drain(node)) if m.type is MT.APPEND] == []


def test_an_idle_leader_announces_a_new_commit_at_its_next_tick() -> None:
    node = replicating_leader()
    node.propose(b"x")
    drain(node)
    ack(node, "2", 5)
    ack(node, "3", 5)
    drain(node)
    node.tick()
    appends = [m for m in sent(drain(node)) if m.type is MT.APPEND]
    assert [(m.dst, m.index, m.commit, m.entries) for m in appends] == [
        ("2", 5, 5, ()),
        ("3", 5, 5, ()),
    ]


def test_an_expedited_commit_is_announced_the_moment_it_commits() -> None:
    node = replicating_leader()
    _, index = node.propose(b"forwarded")
    node.expedite_commit(index)
    drain(node)
    ack(node, "2", index)  # with the leader's own copy: a quorum
    appends = [m for m in sent(drain(node)) if m.type is MT.APPEND]
    assert [(m.dst, m.commit) for m in appends] == [("2", index), ("3", index)]


def test_expediting_a_commit_already_made_announces_it_at_once() -> None:
    node = replicating_leader()
    _, index = node.propose(b"x")
    drain(node)
    ack(node, "2", index)
    drain(node)
    node.expedite_commit(index)  # e.g. the forwarding follower's answer came late
    appends = [m for m in sent(drain(node)) if m.type is MT.APPEND]
    assert [(m.dst, m.commit) for m in appends] == [("2", index), ("3", index)]


def test_expedite_commit_is_a_no_op_on_a_follower() -> None:
    node = make_node("2", config=NO_PREVOTE)
    node.expedite_commit(7)
    assert not node.has_ready() or sent(drain(node)) == []


def test_committed_entries_are_delivered_once_in_order_and_bounded_per_ready() -> None:
    entries = tuple(Entry(1, i, EntryKind.NORMAL, b"z" * 100) for i in range(1, 201))
    durable = DurableState(hard_state=HardState(term=1, commit=200), entries=entries)
    node = make_node(durable=durable, voters=(), config=RaftConfig(max_msg_bytes=1000))
    readies = drain(node)
    delivered = [e.index for rd in readies for e in rd.committed_entries]
    assert delivered == list(range(1, 201))
    assert len(readies) >= 3
    assert all(sum(len(e.data) for e in rd.committed_entries) <= 8000 for rd in readies)


def test_committed_entries_are_never_ahead_of_the_entries_written() -> None:
    env = InteractionEnv()
    env.add_nodes(3, voters=("1", "2", "3"))
    env.stabilize()
    env.campaign("1")
    env.stabilize()
    for i in range(20):
        env.propose("1", b"v%d" % i)
        env.stabilize()
    env.tick("1")  # the last commit reaches the followers at the leader's next tick
    env.stabilize()
    for n in ("1", "2", "3"):
        store = env.nodes[NodeId(n)].store
        applied = env.nodes[NodeId(n)].fsm.applied_index
        assert applied == 24
        assert store.entries[-1].index >= applied


def test_readys_carry_persisted_state_so_a_restart_resumes() -> None:
    env = InteractionEnv()
    env.add_nodes(3, voters=("1", "2", "3"))
    env.stabilize()
    env.campaign("1")
    env.stabilize()
    env.propose("1", b"x")
    env.stabilize()
    env.tick("1")
    env.stabilize()
    env.restart("2")
    st = env.nodes[NodeId("2")].raft.status()
    assert (st.term, st.vote, st.commit, st.last_index) == (2, "1", 5, 5)


def test_lost_appends_are_resent_after_a_heartbeat_response() -> None:
    env = InteractionEnv()
    env.add_nodes(3, voters=("1", "2", "3"))
    env.stabilize()
    env.campaign("1")
    env.stabilize()
    env.propose("1", b"lost")
    env.process_ready("1")
    env.deliver_msgs("2", drop=True)
    env.deliver_msgs("3", drop=True)
    env.stabilize()
    assert env.nodes[NodeId("1")].raft.status().commit == 4
    env.tick("1", 2)  # heartbeat; the responses show the followers lag: resend
    env.stabilize()
    env.tick("1")  # and the commit of the resent entry is announced at the next tick
    env.stabilize()
    assert all(env.nodes[NodeId(n)].fsm.applied_index == 5 for n in ("1", "2", "3"))


def test_follower_that_missed_an_append_catches_up_from_the_commit_announcement() -> None:
    env = InteractionEnv()
    env.add_nodes(3, voters=("1", "2", "3"))
    env.stabilize()
    env.campaign("1")
    env.stabilize()
    env.propose("1", b"lost")
    env.process_ready("1")
    env.deliver_msgs("2", drop=True)
    env.stabilize()  # 3 acks: 5 commits on the leader
    assert env.nodes[NodeId("2")].fsm.applied_index < 5
    env.tick("1")  # the commit goes out, 2 rejects the gap and is sent 5
    env.stabilize()
    assert env.nodes[NodeId("2")].fsm.applied_index == 5


def _bootstrap(voters: list[str]) -> tuple[Entry, ...]:
    return tuple(
        Entry(
            1,
            i,
            EntryKind.CONF_CHANGE,
            encode_conf_change(ConfChange(op=ConfChangeOp.ADD_VOTER, node=NodeId(v))),
        )
        for i, v in enumerate(voters, start=1)
    )
