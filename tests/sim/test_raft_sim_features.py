"""PreVote, CheckQuorum, leadership transfer and membership changes on the simulated cluster.

In the spirit of etcd-io/raft's raft_test.go (disruptive follower, free stuck candidate,
TestLeaderTransfer*, conf change add/remove/remove-leader) and hashicorp/raft's fuzzy
RemoveLeader, each over ``--sim-seeds`` seeds with the safety invariants checked after
every step.
"""

from __future__ import annotations

import random

import pytest

from trickle.errors import ConfChangeRejected, ValidationError
from trickle.raft.core import Role
from trickle.raft.messages import ConfChange, ConfChangeOp, NodeId
from trickle.testing.raftsim import (
    ELECTION_TIMEOUT_MS,
    RaftSimulation,
    SimConfig,
    sim_raft_config,
)


def command(rng: random.Random) -> bytes:
    return str(rng.getrandbits(40)).encode()


def rng_for(seed: int) -> random.Random:
    return random.Random(seed * 7919 + 43)


def config(**raft: object) -> SimConfig:
    return SimConfig(raft=sim_raft_config(**raft))


# --- PreVote and CheckQuorum ------------------------------------------------------------


def test_rejoining_partitioned_follower_does_not_depose_the_leader(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    sim.one(b"1", 3)
    leader = sim.check_one_leader()
    term = sim.check_terms()
    follower = sim.other(leader, 1)
    sim.disconnect(follower)
    sim.run_for(5 * ELECTION_TIMEOUT_MS)  # it times out many times, alone
    assert sim.node(follower).term == term, "pre-vote let an isolated node raise its term"
    sim.connect(follower)
    sim.run_for(2 * ELECTION_TIMEOUT_MS)
    assert sim.check_one_leader() == leader
    assert sim.check_terms() == term
    sim.one(b"2", 3)


def test_without_prevote_a_rejoining_follower_does_disrupt(sim_seed: int) -> None:
    """The control for the test above: the same scenario with PreVote and CheckQuorum off
    raises the term (so the test above can fail)."""
    sim = RaftSimulation(3, seed=sim_seed, config=config(pre_vote=False, check_quorum=False))
    sim.one(b"1", 3)
    leader = sim.check_one_leader()
    term = sim.check_terms()
    follower = sim.other(leader, 1)
    sim.disconnect(follower)
    sim.run_for(5 * ELECTION_TIMEOUT_MS)
    assert sim.node(follower).term > term
    sim.connect(follower)
    sim.run_for(2 * ELECTION_TIMEOUT_MS)
    sim.check_one_leader()
    assert sim.check_terms() > term


def test_follower_cut_off_from_the_leader_cannot_win_pre_votes(sim_seed: int) -> None:
    """Disruptive follower: it cannot hear the leader (one-way cut) but reaches the others,
    which still hear the leader and refuse its (pre-)votes."""
    sim = RaftSimulation(3, seed=sim_seed)
    sim.one(b"1", 3)
    leader = sim.check_one_leader()
    term = sim.check_terms()
    follower = sim.other(leader, 1)
    sim.cut(leader, follower)
    sim.run_for(5 * ELECTION_TIMEOUT_MS)
    assert sim.node(leader).is_leader and sim.node(leader).term == term
    sim.uncut(leader, follower)
    sim.one(b"2", 3)


def test_leader_without_quorum_steps_down(sim_seed: int) -> None:
    sim = RaftSimulation(5, seed=sim_seed)
    sim.one(b"1", 5)
    leader = sim.check_one_leader()
    sim.partition([leader, sim.other(leader, 1)])
    sim.run_for(2 * ELECTION_TIMEOUT_MS)
    assert not sim.node(leader).is_leader, "a leader cut from its quorum still leads"
    sim.heal()
    sim.one(b"2", 5)


@pytest.mark.parametrize("pre_vote", [True, False], ids=["prevote", "no-prevote"])
def test_stuck_candidate_is_freed_when_it_rejoins(sim_seed: int, pre_vote: bool) -> None:
    sim = RaftSimulation(3, seed=sim_seed, config=config(pre_vote=pre_vote))
    sim.one(b"1", 3)
    leader = sim.check_one_leader()
    stuck = sim.other(leader, 2)
    sim.disconnect(stuck)
    sim.run_for(5 * ELECTION_TIMEOUT_MS)
    assert sim.node(stuck).role in (Role.PRE_CANDIDATE, Role.CANDIDATE)
    sim.one(b"2", 2)
    sim.connect(stuck)

    def settled() -> bool:
        node = sim.node(stuck)
        terms = {sim.node(n).term for n in sim.ids}
        return node.role is Role.FOLLOWER and node.leader is not None and len(terms) == 1

    assert sim.run_until(settled, 5 * ELECTION_TIMEOUT_MS), "the candidate stayed stuck"
    sim.one(b"3", 3)


# --- leadership transfer ----------------------------------------------------------------


def test_transfer_to_a_caught_up_follower_is_quick(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    sim.one(b"1", 3)
    leader = sim.check_one_leader()
    term = sim.check_terms()
    target = sim.other(leader, 1)
    sim.transfer_leadership(leader, target)
    assert sim.run_until(lambda: sim.node(target).is_leader, ELECTION_TIMEOUT_MS / 4), (
        "transfer took longer than a quarter of an election timeout"
    )
    assert sim.node(target).term == term + 1
    sim.one(b"2", 3)


def test_transfer_to_a_lagging_follower_catches_it_up_first(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    rng = rng_for(sim_seed)
    sim.one(b"1", 3)
    leader = sim.check_one_leader()
    target = sim.other(leader, 1)
    sim.disconnect(target)
    for _ in range(20):
        sim.one(command(rng), 2)
    sim.connect(target)
    sim.transfer_leadership(leader, target)
    assert sim.run_until(lambda: sim.node(target).is_leader, ELECTION_TIMEOUT_MS)
    sim.one(b"2", 3)


def test_transfer_to_an_unreachable_follower_times_out_and_leadership_stays(
    sim_seed: int,
) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    sim.one(b"1", 3)
    leader = sim.check_one_leader()
    term = sim.check_terms()
    target = sim.other(leader, 1)
    sim.disconnect(target)
    sim.transfer_leadership(leader, target)
    _, _, ok = sim.start(leader, b"dropped")
    assert not ok, "a proposal was taken during a leadership transfer"
    sim.run_for(2 * ELECTION_TIMEOUT_MS)
    assert sim.node(leader).is_leader and sim.node(leader).term == term
    assert sim.node(leader).status().transferee is None
    sim.one(b"2", 2)
    sim.connect(target)
    sim.one(b"3", 3)


def test_transfer_to_self_is_a_no_op_and_to_a_stranger_is_refused(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    sim.one(b"1", 3)
    leader = sim.check_one_leader()
    term = sim.check_terms()
    sim.transfer_leadership(leader, leader)
    sim.one(b"2", 3)
    assert sim.check_one_leader() == leader and sim.check_terms() == term
    with pytest.raises(ValidationError):
        sim.transfer_leadership(leader, "9")


def test_transfer_target_crash_mid_transfer_leaves_a_working_cluster(sim_seed: int) -> None:
    sim = RaftSimulation(5, seed=sim_seed)
    rng = rng_for(sim_seed)
    sim.one(b"1", 5)
    leader = sim.check_one_leader()
    target = sim.other(leader, 1 + rng.randrange(4))
    sim.transfer_leadership(leader, target)
    sim.run_for(rng.uniform(0, 20))
    sim.crash(target)
    sim.one(b"2", 4)
    sim.restart(target)
    sim.one(b"3", 5)


# --- membership -------------------------------------------------------------------------


def change(op: ConfChangeOp, node: str) -> ConfChange:
    return ConfChange(op=op, node=NodeId(node))


def wait_conf_applied(sim: RaftSimulation, index: int) -> None:
    """Until the leader applied index (the change is committed)."""
    if not sim.run_until(lambda: sim.oracle.max_committed >= index, 5000):
        sim.fail(f"conf change at {index} did not commit")


def test_learner_catches_up_then_is_promoted_and_counts_for_quorum(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    rng = rng_for(sim_seed)
    for _ in range(30):
        sim.one(command(rng), 3)
    leader = sim.check_one_leader()
    sim.add_node("4")
    _, index = sim.propose_conf_change(leader, change(ConfChangeOp.ADD_LEARNER, "4"))
    wait_conf_applied(sim, index)
    last = sim.one(command(rng), 4)  # the learner applies it too
    assert sim.node("4").app.applied >= last
    # a learner does not vote: two voters down leave no quorum, learner or not
    leader = sim.check_one_leader()
    down = [sim.other(leader, 1) if sim.other(leader, 1) != "4" else sim.other(leader, 2)]
    sim.disconnect(leader)
    sim.disconnect(down[0])
    sim.run_for(2 * ELECTION_TIMEOUT_MS)
    sim.check_no_leader()
    sim.connect(leader)
    sim.connect(down[0])
    leader = sim.check_one_leader()
    _, index = sim.propose_conf_change(leader, change(ConfChangeOp.PROMOTE, "4"))
    wait_conf_applied(sim, index)
    sim.one(command(rng), 4)
    assert NodeId("4") in sim.node(leader).status().conf.voters
    # four voters: two down is no quorum any more
    voters = [n for n in sim.ids if n != leader]
    sim.disconnect(voters[0])
    sim.disconnect(voters[1])
    idx, _, ok = sim.start(leader, b"no-quorum")
    sim.run_for(2 * ELECTION_TIMEOUT_MS)
    assert not ok or sim.n_committed(idx)[0] == 0
    sim.connect(voters[0])
    sim.connect(voters[1])
    sim.one(command(rng), 4)


def test_removed_follower_leaves_and_does_not_disturb(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    sim.one(b"1", 3)
    leader = sim.check_one_leader()
    gone = sim.other(leader, 1)
    _, index = sim.propose_conf_change(leader, change(ConfChangeOp.REMOVE, gone))
    wait_conf_applied(sim, index)
    term = sim.node(leader).term
    sim.disconnect(gone)
    sim.one(b"2", 2)
    sim.connect(gone)
    sim.run_for(5 * ELECTION_TIMEOUT_MS)
    assert sim.node(leader).is_leader and sim.node(leader).term == term
    sim.one(b"3", 2)


def test_removing_the_leader_hands_over_to_the_rest(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    sim.one(b"1", 3)
    leader = sim.check_one_leader()
    _, index = sim.propose_conf_change(leader, change(ConfChangeOp.REMOVE, leader))
    wait_conf_applied(sim, index)

    def new_leader() -> bool:
        return any(sim.node(n).is_leader for n in sim.ids if n != leader)

    assert sim.run_until(new_leader, 5000), "no new leader after the leader removed itself"
    assert not sim.node(leader).is_leader
    sim.disconnect(leader)
    sim.one(b"2", 2)


@pytest.mark.parametrize("remove", ["follower", "leader"])
def test_two_node_cluster_removes_one_without_getting_stuck(sim_seed: int, remove: str) -> None:
    sim = RaftSimulation(2, seed=sim_seed)
    sim.one(b"1", 2)
    leader = sim.check_one_leader()
    gone = leader if remove == "leader" else sim.other(leader, 1)
    stays = sim.other(gone, 1)
    _, index = sim.propose_conf_change(leader, change(ConfChangeOp.REMOVE, gone))
    wait_conf_applied(sim, index)
    assert sim.run_until(lambda: sim.node(stays).is_leader, 5000), "the survivor does not lead"
    sim.crash(gone)
    sim.one(b"2", 1)
    assert sim.node(stays).status().conf.voters == frozenset({NodeId(stays)})


def test_second_conf_change_is_refused_while_one_is_pending(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    sim.one(b"1", 3)
    leader = sim.check_one_leader()
    sim.add_node("4")
    sim.add_node("5")
    sim.propose_conf_change(leader, change(ConfChangeOp.ADD_LEARNER, "4"))
    with pytest.raises(ConfChangeRejected):
        sim.propose_conf_change(leader, change(ConfChangeOp.ADD_LEARNER, "5"))
    with pytest.raises(ConfChangeRejected):
        sim.propose_conf_change(leader, change(ConfChangeOp.REMOVE, "9"))


def test_membership_churn_under_crashes_keeps_safety(sim_seed: int) -> None:
    """Add a learner, promote it, remove an old voter, with a random crash and restart in
    between, and a client writing all along."""
    sim = RaftSimulation(3, seed=sim_seed)
    rng = rng_for(sim_seed)
    client = sim.client()
    sim.start_workload([client], duration_ms=60_000)
    members = list(sim.ids)
    for round_ in range(3):
        new = str(4 + round_)
        sim.add_node(new)
        for op, target in (
            (ConfChangeOp.ADD_LEARNER, new),
            (ConfChangeOp.PROMOTE, new),
            (ConfChangeOp.REMOVE, members[0]),
        ):
            for _attempt in range(20):
                leader = sim.check_one_leader(10_000)
                try:
                    _, index = sim.propose_conf_change(leader, change(op, target))
                except ConfChangeRejected:
                    sim.run_for(100)  # the previous change is still pending
                    continue
                if sim.run_until(lambda i=index: sim.oracle.max_committed >= i, 3000):
                    conf = sim.node(sim.check_one_leader(10_000)).status().conf
                    if (op is ConfChangeOp.REMOVE) != (
                        NodeId(target) in conf.voters | conf.learners
                    ):
                        break
            else:
                sim.fail(f"{op.name} {target} never took effect")
            if rng.random() < 0.5:
                victim = rng.choice([m for m in members if m != target])
                sim.crash(victim)
                sim.run_for(rng.uniform(0, ELECTION_TIMEOUT_MS))
                sim.restart(victim)
        sim.crash(members[0])
        members = members[1:] + [new]
    sim.one(command(rng), 3)
    assert sim.run_until(lambda: not client.busy, 20_000)
