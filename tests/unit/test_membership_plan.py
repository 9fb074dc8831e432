"""The pure side of Raft membership following gossip: the planner, the successor of a
leaving leader, bootstrap-expect and the recovery of a cluster that lost its quorum."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trickle.engine.membership import (
    ALIVE,
    FAILED,
    LEAVING,
    LEFT,
    BootstrapExpectMismatch,
    ServerView,
    bootstrap_plan,
    formed_servers,
    membership_tags,
    pick_successor,
    plan_from_status,
    plan_membership,
    recover_storage,
    recovery_plan,
    server_view,
    server_views,
)
from trickle.engine.model import Member
from trickle.errors import ValidationError
from trickle.raft._conf import apply_change
from trickle.raft.config import RaftConfig
from trickle.raft.core import RaftNode, Role
from trickle.raft.messages import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    NodeId,
    Snapshot,
    SnapshotMeta,
)
from trickle.raft.storage import MemoryStorage
from trickle.raft.wire import decode_conf_change, encode_conf_change

ADD, PROMOTE, REMOVE = ConfChangeOp.ADD_LEARNER, ConfChangeOp.PROMOTE, ConfChangeOp.REMOVE


def conf(voters: str = "", learners: str = "") -> ConfState:
    return ConfState(
        voters=frozenset(NodeId(n) for n in voters.split(",") if n),
        learners=frozenset(NodeId(n) for n in learners.split(",") if n),
    )


def view(name: str, status: str = ALIVE, **kwargs: object) -> ServerView:
    kwargs.setdefault("rpc_addr", f"10.0.0.{ord(name[0]) % 200}:6868")
    return ServerView(name=name, status=status, **kwargs)  # type: ignore[arg-type]


def servers(*views: ServerView) -> dict[str, ServerView]:
    return {v.name: v for v in views}


def plan(
    c: ConfState,
    views: dict[str, ServerView],
    progress: dict[str, int] | None = None,
    commit: int = 100,
    leader: str = "a",
    slack: int = 10,
) -> tuple[str, str] | None:
    change = plan_membership(c, views, progress or {}, commit, leader=leader, catch_up_slack=slack)
    return None if change is None else (change.op.name, change.node)


# -- the planner: one case per rule ----------------------------------------------------------


PLANNER_CASES = [
    (
        "alive server outside the configuration is added as a learner",
        conf("a"),
        servers(view("a"), view("b")),
        {},
        ("ADD_LEARNER", "b"),
    ),
    (
        "a server gossiping no rpc_addr cannot be reached: not added",
        conf("a"),
        servers(view("a"), view("b", rpc_addr="")),
        {},
        None,
    ),
    (
        "a failed server outside the configuration is not added",
        conf("a"),
        servers(view("a"), view("b", FAILED)),
        {},
        None,
    ),
    (
        "a left server outside the configuration is not added",
        conf("a"),
        servers(view("a"), view("b", LEFT)),
        {},
        None,
    ),
    (
        "caught-up alive learner is promoted",
        conf("a", "b"),
        servers(view("a"), view("b")),
        {"a": 100, "b": 95},
        ("PROMOTE", "b"),
    ),
    (
        "a learner exactly at the slack is promoted",
        conf("a", "b"),
        servers(view("a"), view("b")),
        {"b": 90},
        ("PROMOTE", "b"),
    ),
    (
        "a learner beyond the slack waits",
        conf("a", "b"),
        servers(view("a"), view("b")),
        {"b": 89},
        None,
    ),
    (
        "a learner with no progress known waits",
        conf("a", "b"),
        servers(view("a"), view("b")),
        {},
        None,
    ),
    (
        "a failed learner is not promoted even when caught up",
        conf("a", "b"),
        servers(view("a"), view("b", FAILED)),
        {"b": 100},
        None,
    ),
    (
        "a learner gossip does not know is not promoted",
        conf("a", "b"),
        servers(view("a")),
        {"b": 100},
        None,
    ),
    (
        "a voter that left is removed",
        conf("a,b,c"),
        servers(view("a"), view("b"), view("c", LEFT)),
        {},
        ("REMOVE", "c"),
    ),
    (
        "a learner that left is removed",
        conf("a", "b"),
        servers(view("a"), view("b", LEFT)),
        {"b": 100},
        ("REMOVE", "b"),
    ),
    (
        "a server that is leaving is removed",
        conf("a,b"),
        servers(view("a"), view("b", LEAVING)),
        {},
        ("REMOVE", "b"),
    ),
    (
        "a failed voter is never removed automatically",
        conf("a,b,c"),
        servers(view("a"), view("b"), view("c", FAILED)),
        {},
        None,
    ),
    (
        "a voter gossip does not know is left alone (a leader's gossip view is young)",
        conf("a,b,c"),
        servers(view("a")),
        {},
        None,
    ),
    (
        "a leader that left plans nothing, even with other changes due",
        conf("a,b,c", "d"),
        servers(view("a", LEFT), view("b", LEFT), view("d"), view("e")),
        {"d": 100},
        None,
    ),
    (
        "a leaving leader plans nothing: it hands over first",
        conf("a,b"),
        servers(view("a", LEAVING), view("b"), view("c")),
        {},
        None,
    ),
    (
        "removals come before promotions",
        conf("a,c", "b"),
        servers(view("a"), view("b"), view("c", LEFT)),
        {"b": 100},
        ("REMOVE", "c"),
    ),
    (
        "promotions come before additions",
        conf("a", "c"),
        servers(view("a"), view("b"), view("c")),
        {"c": 100},
        ("PROMOTE", "c"),
    ),
    (
        "a lagging learner does not hold up additions",
        conf("a", "c"),
        servers(view("a"), view("b"), view("c")),
        {"c": 0},
        ("ADD_LEARNER", "b"),
    ),
    (
        "several removals are due: the first name goes first",
        conf("a,b,c,d,e"),
        servers(view("a"), view("e", LEFT), view("c", LEFT), view("d", LEFT)),
        {},
        ("REMOVE", "c"),
    ),
    (
        "several additions are due: the first name goes first",
        conf("a"),
        servers(view("a"), view("z"), view("m"), view("q")),
        {},
        ("ADD_LEARNER", "m"),
    ),
    (
        "in step: nothing to do",
        conf("a,b,c"),
        servers(view("a"), view("b"), view("c")),
        {"b": 100, "c": 100},
        None,
    ),
    (
        "a leader not in the voters (its removal pending) plans nothing",
        conf("b,c"),
        servers(view("a"), view("b"), view("c"), view("d")),
        {},
        None,
    ),
]


@pytest.mark.parametrize(
    ("c", "views", "progress", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in PLANNER_CASES],
)
def test_planner_rules(c, views, progress, expected):
    assert plan(c, views, progress) == expected


def test_an_added_learner_carries_its_rpc_addr_as_context():
    change = plan_membership(
        conf("a"), servers(view("a"), view("b", rpc_addr="10.1.2.3:7000")), {}, 5, leader="a"
    )
    assert change == ConfChange(ADD, NodeId("b"), b"10.1.2.3:7000")


def test_planner_rejects_bad_numbers_and_mismatched_keys():
    with pytest.raises(ValidationError, match="commit"):
        plan_membership(conf("a"), {}, {}, -1, leader="a")
    with pytest.raises(ValidationError, match="catch_up_slack"):
        plan_membership(conf("a"), {}, {}, 1, leader="a", catch_up_slack=-1)
    with pytest.raises(ValidationError, match="servers"):
        plan_membership(conf("a"), {"b": view("c")}, {}, 1, leader="a")


def test_a_view_with_an_unknown_status_is_refused():
    with pytest.raises(ValidationError, match="status"):
        ServerView(name="a", status="zombie")


def test_plan_from_status_uses_the_leaders_view_and_plans_nothing_on_a_follower():
    node = RaftNode(
        NodeId("a"),
        config=RaftConfig(),
        rng=random.Random(1),
        bootstrap=conf("a"),
    )
    node.tick()
    assert node.status().role is Role.LEADER
    views = [view("a"), view("b")]
    assert plan_from_status(node.status(), views) == ConfChange(
        ADD, NodeId("b"), views[1].rpc_addr.encode()
    )
    follower = RaftNode(NodeId("b"), config=RaftConfig(), rng=random.Random(1))
    assert plan_from_status(follower.status(), views) is None


# -- the planner as a process: it converges and never does harm ------------------------------

NAMES = "abcdefgh"


@st.composite
def cluster_states(draw):
    leader = "a"
    members = draw(st.lists(st.sampled_from(NAMES[1:]), unique=True, max_size=7))
    voters = {leader} | {m for m in members if draw(st.booleans())}
    learners = set(members) - voters
    statuses = {}
    for name in NAMES[1:]:
        status = draw(st.sampled_from([ALIVE, FAILED, LEFT, LEAVING, None]))
        if status is not None:
            statuses[name] = status
    no_addr = {n for n in statuses if draw(st.integers(0, 9)) == 0}
    lag = {n: draw(st.integers(0, 3)) for n in NAMES}  # rounds before a learner catches up
    return leader, voters, learners, statuses, no_addr, lag


@settings(max_examples=200, deadline=None)
@given(cluster_states())
def test_applying_plans_one_at_a_time_converges_and_never_removes_a_failed_server_or_the_leader(
    state,
):
    leader, voters, learners, statuses, no_addr, lag = state
    views = {leader: view(leader)}
    for name, status in statuses.items():
        views[name] = view(name, status, rpc_addr="" if name in no_addr else f"{name}:6868")
    current = ConfState(
        voters=frozenset(NodeId(v) for v in voters),
        learners=frozenset(NodeId(v) for v in learners),
    )
    start = current
    commit = 1000
    rounds_behind = dict(lag)  # a learner catches up after this many rounds
    for step in range(6 * len(NAMES)):
        progress = {
            n: commit if rounds_behind.get(n, 0) <= 0 else 0
            for n in current.voters | current.learners
        }
        for name in rounds_behind:
            rounds_behind[name] -= 1
        change = plan_membership(current, views, progress, commit, leader=leader, catch_up_slack=0)
        if change is None:
            if any(rounds_behind[n] >= 0 for n in current.learners):
                continue  # replication goes on: the learner catches up later
            break
        node = change.node
        gossip = views.get(node)
        if change.op is REMOVE:
            assert node != leader
            assert gossip is not None and gossip.status in (LEFT, LEAVING)
        else:
            assert gossip is not None and gossip.status == ALIVE
        if change.op is ADD:
            assert change.context == gossip.rpc_addr.encode()
        if change.op is PROMOTE:
            assert progress[node] == commit, "promoted before catching up"
        after = apply_change(current, change)
        assert after != current, f"step {step}: {change.describe()} changed nothing"
        current = after
    else:
        pytest.fail("the planner did not converge")

    def status(name: str) -> str | None:
        v = views.get(name)
        return None if v is None else v.status

    members = start.voters | start.learners
    removed = {n for n in members if n != leader and status(n) in (LEFT, LEAVING)}
    added = {n for n, v in views.items() if v.status == ALIVE and v.rpc_addr and n not in members}
    promoted = {n for n in start.learners if status(n) == ALIVE}
    assert current.voters == (start.voters - removed) | promoted | added
    assert current.learners == {n for n in start.learners if status(n) in (FAILED, None)}
    # failed voters and voters gossip does not know are never removed
    assert {n for n in start.voters if status(n) in (FAILED, None)} <= current.voters


# -- the successor of a leaving leader -------------------------------------------------------


def test_successor_is_the_most_caught_up_alive_voter():
    c = conf("a,b,c,d", "e")
    views = servers(view("a"), view("b"), view("c"), view("d", FAILED), view("e"))
    assert pick_successor(c, views, {"b": 5, "c": 9, "d": 50, "e": 99}, leader="a") == "c"


def test_successor_ties_go_to_the_first_name_and_unknown_voters_come_last():
    c = conf("a,b,c,x")
    views = servers(view("a"), view("c"), view("b"))
    assert pick_successor(c, views, {"b": 7, "c": 7, "x": 100}, leader="a") == "b"
    assert pick_successor(conf("a,x"), servers(view("a")), {}, leader="a") == "x"


def test_no_successor_for_a_lone_leader_or_when_every_other_voter_is_down():
    assert pick_successor(conf("a"), servers(view("a")), {}, leader="a") is None
    views = servers(view("a"), view("b", LEFT), view("c", FAILED))
    assert pick_successor(conf("a,b,c"), views, {"b": 1, "c": 1}, leader="a") is None


# -- gossip members as server views ----------------------------------------------------------


def member(name: str, status: str = "alive", **tags: str) -> Member:
    return Member(name=name, addr="10.0.0.1", port=8946, tags=tags, status=status)


def test_server_views_keep_servers_of_the_region_and_read_their_tags():
    members = [
        member("agent1", region="eu"),
        member("s2", server="true", rpc_addr="10.0.0.2:6868", region="eu", raft_formed="1"),
        member("s1", "failed", server="true", rpc_addr="10.0.0.1:6868", region="eu", expect="3"),
        member("s3", server="true", rpc_addr="10.0.0.3:6868", region="us"),
        member("s4", server="true"),
    ]
    views = server_views(members, region="eu")
    assert [v.name for v in views] == ["s1", "s2", "s4"]
    s1, s2, s4 = views
    assert s1 == ServerView(
        name="s1", status=FAILED, rpc_addr="10.0.0.1:6868", region="eu", expect=3
    )
    assert s2.raft_formed and s2.expect is None
    assert s4.rpc_addr == "" and s4.region is None
    assert [v.name for v in server_views(members)] == ["s1", "s2", "s3", "s4"]


@pytest.mark.parametrize("raw", ["three", "-1", "", "3.0", "٣", "9999999999"])
def test_a_malformed_expect_tag_from_the_network_is_read_as_zero(raw):
    found = server_view(member("s", server="true", expect=raw))
    assert found is not None and found.expect == 0


def test_a_member_with_an_unknown_status_counts_as_failed():
    found = server_view(member("s", "weird", server="true"))
    assert found is not None and found.status == FAILED


def test_membership_tags():
    assert membership_tags(expect=3, raft_formed=False) == {"expect": "3"}
    assert membership_tags(expect=None, raft_formed=True) == {"raft_formed": "1"}
    assert membership_tags(expect=None, raft_formed=False) == {}


# -- bootstrap-expect ------------------------------------------------------------------------


def waiting(name: str, status: str = ALIVE, expect: int | None = 3, formed: bool = False):
    return ServerView(name=name, status=status, expect=expect, raft_formed=formed)


def test_every_server_bootstraps_the_same_configuration_once_expect_servers_are_alive():
    seen = [waiting("c"), waiting("a"), waiting("b")]
    plans = {name: bootstrap_plan(name, seen, 3) for name in "abc"}
    assert set(plans.values()) == {conf("a,b,c")}


def test_bootstrap_waits_for_expect_servers():
    assert bootstrap_plan("a", [waiting("a"), waiting("b")], 3) is None
    assert bootstrap_plan("a", [], 3) is None


def test_bootstrap_waits_while_one_of_the_expected_servers_is_not_alive():
    assert bootstrap_plan("a", [waiting("a"), waiting("b"), waiting("c", FAILED)], 3) is None


def test_this_server_counts_even_before_gossip_lists_it():
    assert bootstrap_plan("a", [waiting("b"), waiting("c")], 3) == conf("a,b,c")
    assert bootstrap_plan("solo", [], 1) == conf("solo")


def test_a_server_with_raft_state_never_bootstraps():
    seen = [waiting("a"), waiting("b"), waiting("c")]
    assert bootstrap_plan("a", seen, 3, has_state=True) is None


@pytest.mark.parametrize("status", [ALIVE, FAILED])
def test_a_formed_cluster_in_sight_means_join_it_not_bootstrap(status):
    seen = [waiting("a"), waiting("b"), waiting("c"), waiting("old", status, None, True)]
    assert bootstrap_plan("a", seen, 3) is None
    assert formed_servers("a", seen) == ["old"]


def test_a_formed_server_that_left_does_not_stop_a_bootstrap():
    seen = [waiting("a"), waiting("b"), waiting("c"), waiting("old", LEFT, 3, True)]
    assert bootstrap_plan("a", seen, 3) == conf("a,b,c")
    assert formed_servers("a", seen) == []


def test_servers_without_expect_do_not_count_and_are_not_bootstrapped():
    seen = [waiting("a"), waiting("b"), waiting("joiner", expect=None), waiting("c")]
    assert bootstrap_plan("a", seen, 3) == conf("a,b,c")
    assert bootstrap_plan("a", [waiting("a", expect=2), waiting("j1", expect=None)], 2) is None


def test_this_servers_own_expect_is_the_one_given_not_its_gossiped_tag():
    seen = [waiting("a", expect=None), waiting("b", expect=2)]
    assert bootstrap_plan("a", seen, 2) == conf("a,b")


def test_servers_that_left_before_the_bootstrap_do_not_count():
    seen = [waiting("a"), waiting("b"), waiting("gone", LEFT), waiting("c")]
    assert bootstrap_plan("a", seen, 3) == conf("a,b,c")


def test_mismatched_expect_values_are_refused_naming_the_odd_servers():
    seen = [waiting("a"), waiting("b", expect=5), waiting("c")]
    with pytest.raises(BootstrapExpectMismatch) as info:
        bootstrap_plan("a", seen, 3)
    assert "a has --bootstrap-expect 3 but b=5" in info.value.message
    assert info.value.field == "bootstrap_expect"
    # the server with the odd value refuses too, naming the others
    with pytest.raises(BootstrapExpectMismatch, match="b has --bootstrap-expect 5 but a=3, c=3"):
        bootstrap_plan("b", seen, 5)


def test_a_malformed_expect_tag_is_a_mismatch():
    with pytest.raises(BootstrapExpectMismatch, match="b=malformed"):
        bootstrap_plan("a", [waiting("a"), waiting("b", expect=0)], 2)


def test_more_servers_than_expected_are_refused_rather_than_chosen_among():
    seen = [waiting(n) for n in "abcd"]
    with pytest.raises(BootstrapExpectMismatch, match="4 servers wait to bootstrap"):
        bootstrap_plan("a", seen, 3)


@pytest.mark.parametrize("expect", [0, -1, True, 2.0])
def test_bootstrap_expect_must_be_a_positive_integer(expect):
    with pytest.raises(ValidationError, match="bootstrap_expect"):
        bootstrap_plan("a", [], expect)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from("abcdef"),
            st.sampled_from([ALIVE, FAILED, LEFT]),
            st.sampled_from([None, 3, 3, 3, 4]),
            st.booleans(),
        ),
        unique_by=lambda t: t[0],
        max_size=6,
    )
)
def test_servers_sharing_one_gossip_view_never_bootstrap_different_configurations(entries):
    seen = [waiting(n, s, e, f) for n, s, e, f in entries]
    outcomes = set()
    for server in seen:
        if server.expect != 3 or server.raft_formed or server.status != ALIVE:
            continue
        try:
            result = bootstrap_plan(server.name, seen, 3)
        except BootstrapExpectMismatch:
            continue
        if result is not None:
            assert server.name in result.voters
            assert len(result.voters) == 3
            outcomes.add(result)
    assert len(outcomes) <= 1


# -- recovery after a permanent loss of quorum -----------------------------------------------


def conf_entry(term: int, index: int, op: ConfChangeOp, node: str) -> Entry:
    return Entry(
        term, index, EntryKind.CONF_CHANGE, encode_conf_change(ConfChange(op, NodeId(node)))
    )


def three_server_log(commit: int = 8) -> DurableState:
    """Voters a, b, c (entries 1-3); d added as a learner (4); data up to 10, term 3."""
    entries = [
        conf_entry(1, 1, ConfChangeOp.ADD_VOTER, "a"),
        conf_entry(1, 2, ConfChangeOp.ADD_VOTER, "b"),
        conf_entry(1, 3, ConfChangeOp.ADD_VOTER, "c"),
        conf_entry(2, 4, ConfChangeOp.ADD_LEARNER, "d"),
    ]
    entries += [Entry(2, i, EntryKind.NORMAL, f"x{i}".encode()) for i in range(5, 11)]
    return DurableState(
        hard_state=HardState(term=3, vote=NodeId("b"), commit=commit), entries=tuple(entries)
    )


def test_recovery_to_the_surviving_server_alone_appends_removals_in_a_new_term():
    recovered = recovery_plan(three_server_log(), node="a")
    assert recovered.before == conf("a,b,c", "d")
    assert recovered.after == conf("a")
    assert [(e.term, e.index) for e in recovered.entries] == [(4, 11), (4, 12), (4, 13)]
    changes = [decode_conf_change(e.data) for e in recovered.entries]
    assert [(c.op, c.node) for c in changes] == [(REMOVE, "b"), (REMOVE, "c"), (REMOVE, "d")]
    assert recovered.hard_state == HardState(term=4, vote=None, commit=13)
    assert recovered.changed
    text = recovered.describe()
    assert text.startswith("a: last entry 2/10, commit 8; voters=(a,b,c) learners=(d) -> ")
    assert "-> voters=(a): 3 membership entries at 11..13 in term 4, committed" in text
    assert "the 2 entries after the stored commit index 8 are kept and committed too" in text


def test_a_recovered_server_leads_alone_and_holds_every_stored_entry():
    storage = MemoryStorage()
    durable = three_server_log()
    storage.save(hard_state=durable.hard_state, entries=durable.entries)
    recovered = recover_storage(storage, node="a")
    node = RaftNode(NodeId("a"), config=RaftConfig(), rng=random.Random(3), durable=storage.load())
    assert node.status().conf == conf("a")
    node.tick()
    assert node.status().role is Role.LEADER
    applied: list[Entry] = []
    for _ in range(5):
        if not node.has_ready():
            break
        ready = node.ready()
        storage.save(hard_state=ready.hard_state, entries=ready.entries)
        applied.extend(ready.committed_entries)
        node.advance(ready)
    assert [e.index for e in applied][:13] == list(range(1, 14))
    term, index = node.propose(b"after recovery")
    ready = node.ready()
    storage.save(hard_state=ready.hard_state, entries=ready.entries)
    node.advance(ready)
    assert node.status().commit == index > recovered.entries[-1].index
    assert term > recovered.hard_state.term


def test_recovery_keeps_chosen_voters_and_promotes_a_learner_among_them():
    recovered = recovery_plan(three_server_log(), node="d", voters=["a", "d"])
    changes = [decode_conf_change(e.data) for e in recovered.entries]
    assert [(c.op, c.node) for c in changes] == [
        (ConfChangeOp.ADD_VOTER, "d"),
        (REMOVE, "b"),
        (REMOVE, "c"),
    ]
    assert recovered.after == conf("a,d")


def test_recovery_of_a_compacted_log_appends_after_the_snapshot():
    meta = SnapshotMeta(index=500, term=6, conf=conf("a,b,c"))
    trailing = tuple(Entry(6, i, EntryKind.NORMAL, b"t") for i in range(490, 501))
    durable = DurableState(
        hard_state=HardState(term=7, vote=None, commit=480),
        snapshot=Snapshot(meta=meta, data=b"image"),
        entries=trailing,
    )
    recovered = recovery_plan(durable, node="c")
    assert recovered.last_index == 500 and recovered.commit == 500
    assert [(e.term, e.index) for e in recovered.entries] == [(8, 501), (8, 502)]
    assert "kept and committed" not in recovered.describe()
    storage = MemoryStorage()
    storage.save(snapshot=durable.snapshot, hard_state=durable.hard_state)
    recover_storage(storage, node="c")
    assert storage.load().hard_state.commit == 502


def test_recovery_reads_conf_changes_after_the_snapshot():
    meta = SnapshotMeta(index=10, term=2, conf=conf("a,b,c"))
    durable = DurableState(
        hard_state=HardState(term=2, commit=11),
        snapshot=Snapshot(meta=meta, data=b""),
        entries=(conf_entry(2, 11, REMOVE, "c"),),
    )
    recovered = recovery_plan(durable, node="a")
    assert recovered.before == conf("a,b")
    assert [decode_conf_change(e.data).node for e in recovered.entries] == ["b"]


def test_recovery_with_nothing_to_change_changes_nothing():
    storage = MemoryStorage()
    entries = (conf_entry(1, 1, ConfChangeOp.ADD_VOTER, "a"),)
    storage.save(hard_state=HardState(term=1, commit=1), entries=entries)
    before = storage.load()
    recovered = recover_storage(storage, node="a")
    assert not recovered.changed and recovered.hard_state is None
    assert "nothing to recover" in recovered.describe()
    assert storage.load() == before


def test_a_dry_run_writes_nothing():
    storage = MemoryStorage()
    durable = three_server_log()
    storage.save(hard_state=durable.hard_state, entries=durable.entries)
    recovered = recover_storage(storage, node="a", dry_run=True)
    assert recovered.changed
    assert storage.load() == durable


def test_recovery_twice_is_harmless():
    storage = MemoryStorage()
    durable = three_server_log()
    storage.save(hard_state=durable.hard_state, entries=durable.entries)
    assert recover_storage(storage, node="a").changed
    assert not recover_storage(storage, node="a").changed


@pytest.mark.parametrize(
    ("durable", "node", "voters", "message"),
    [
        (DurableState(), "a", None, "holds no Raft configuration"),
        (three_server_log(), "x", None, "x is not a member of the stored configuration"),
        (three_server_log(), "a", ["b"], "must include a"),
        (three_server_log(), "a", ["a", "z"], "z not in the stored configuration"),
        (three_server_log(), "a", [], "at least one voter"),
        (three_server_log(), "a", ["a", ""], "non-empty"),
        (three_server_log(), "", None, "non-empty name"),
    ],
)
def test_recovery_refuses_what_it_cannot_do_safely(durable, node, voters, message):
    with pytest.raises(ValidationError, match=message):
        recovery_plan(durable, node=node, voters=voters)
