"""MIT 6.824's Raft lab tests (2A-2C) as seeded simulations of trickle's Raft core.

Each test follows the lab's test of the same name (``src/raft/test_test.go``): the same
steps, the same checks and budgets, on the deterministic simulator. Differences, all
deliberate: log indexes are offset by the bootstrap entries and each leader's no-op (the
tests compute expected indexes from the log instead of assuming 1, 2, 3); commands are
bytes; "RPCs" are request messages (6.824 counts calls); Figure8 and Figure8Unreliable run
fewer iterations per seed than the lab's 1000 (many seeds cover more ground than one long
run; ``--sim-seeds N`` for a soak); safety invariants are checked after every step.
"""

from __future__ import annotations

import random

from trickle.testing.raftsim import (
    ELECTION_TIMEOUT_MS,
    Client,
    NetworkConfig,
    RaftSimulation,
    SimConfig,
)

FIGURE8_ITERATIONS = 150  # the lab runs 1000 once; we run 150 per seed
FIGURE8_UNRELIABLE_ITERATIONS = 200  # the lab: 1000, long reordering from iteration 200
FIGURE8_UNRELIABLE_LONG_FROM = 60
CHURN_PAUSE_MS = (5.0, 40.0)  # a churn client's pause between two rounds


def scenario_rng(seed: int) -> random.Random:
    """The test's own choices (victims, sleeps, commands), separate from the simulator's."""
    return random.Random(seed * 7919 + 17)


def command(rng: random.Random) -> bytes:
    return str(rng.getrandbits(40)).encode()


# --- 2A: elections ----------------------------------------------------------------------


def test_initial_election_elects_one_leader_and_keeps_its_term(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    sim.check_one_leader()
    sim.run_for(50)
    term1 = sim.check_terms()
    assert term1 >= 1
    sim.run_for(2 * ELECTION_TIMEOUT_MS)
    term2 = sim.check_terms()
    assert term2 == term1, f"term changed from {term1} to {term2} with no failures"
    sim.check_one_leader()


def test_re_election_after_leader_disconnect_and_none_without_quorum(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    leader1 = sim.check_one_leader()
    sim.disconnect(leader1)
    sim.check_one_leader()
    # the old leader rejoins: it must not disturb the new one
    sim.connect(leader1)
    leader2 = sim.check_one_leader()
    # no quorum: no leader
    sim.disconnect(leader2)
    sim.disconnect(sim.other(leader2, 1))
    sim.run_for(2 * ELECTION_TIMEOUT_MS)
    sim.check_no_leader()
    # quorum again
    sim.connect(sim.other(leader2, 1))
    sim.check_one_leader()
    sim.connect(leader2)
    sim.check_one_leader()


def test_many_elections_keep_one_leader_among_a_majority(sim_seed: int) -> None:
    sim = RaftSimulation(7, seed=sim_seed)
    rng = scenario_rng(sim_seed)
    sim.check_one_leader()
    for _ in range(10):
        victims = rng.sample(sim.ids, 3)
        for v in victims:
            sim.disconnect(v)
        sim.check_one_leader()
        for v in victims:
            sim.connect(v)
    sim.check_one_leader()


# --- 2B: agreement ----------------------------------------------------------------------


def test_basic_agree_commits_each_start_at_the_next_index(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    base = sim.wait_applied_everywhere()
    for i in range(1, 4):
        count, _ = sim.n_committed(base + i)
        assert count == 0, f"index {base + i} committed before Start()"
        index = sim.one(b"%d" % (i * 100), 3, retry=False)
        assert index == base + i


def test_rpc_bytes_sends_each_entry_once_per_peer(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed, config=SimConfig(wire_bytes=True))
    rng = scenario_rng(sim_seed)
    sim.one(b"99", 3)
    bytes0 = sim.stats.bytes_sent
    sent = 0
    for _ in range(10):
        cmd = rng.randbytes(5000)
        sim.one(cmd, 3, retry=False)
        sent += len(cmd)
    got = sim.stats.bytes_sent - bytes0
    expected = 3 * sent + 50_000
    assert got <= expected, f"too many RPC bytes: {got}, expected at most {expected}"


def test_follower_failure_progress_with_one_down_none_with_two(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    sim.one(b"101", 3)
    leader1 = sim.check_one_leader()
    sim.disconnect(sim.other(leader1, 1))
    sim.one(b"102", 2)
    sim.run_for(ELECTION_TIMEOUT_MS)
    sim.one(b"103", 2)
    leader2 = sim.check_one_leader()
    sim.disconnect(sim.other(leader2, 1))
    sim.disconnect(sim.other(leader2, 2))
    index, _, ok = sim.start(leader2, b"104")
    assert ok, "leader rejected Start()"
    sim.run_for(2 * ELECTION_TIMEOUT_MS)
    count, _ = sim.n_committed(index)
    assert count == 0, f"{count} committed but no majority"


def test_leader_failure_progress_then_no_commit_without_majority(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    sim.one(b"101", 3)
    leader1 = sim.check_one_leader()
    sim.disconnect(leader1)
    sim.one(b"102", 2)
    sim.run_for(ELECTION_TIMEOUT_MS)
    sim.one(b"103", 2)
    leader2 = sim.check_one_leader()
    sim.disconnect(leader2)
    committed = sim.oracle.max_committed
    for nid in sim.ids:
        sim.start(nid, b"104")
    sim.run_for(2 * ELECTION_TIMEOUT_MS)
    assert sim.oracle.max_committed == committed, "an entry committed with 2 of 3 down"
    count, _ = sim.n_committed(committed + 1)
    assert count == 0


def test_fail_agree_disconnected_follower_catches_up(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    sim.one(b"101", 3)
    leader = sim.check_one_leader()
    sim.disconnect(sim.other(leader, 1))
    sim.one(b"102", 2)
    sim.one(b"103", 2)
    sim.run_for(ELECTION_TIMEOUT_MS)
    sim.one(b"104", 2)
    sim.one(b"105", 2)
    sim.connect(sim.other(leader, 1))
    sim.one(b"106", 3)
    sim.run_for(ELECTION_TIMEOUT_MS)
    sim.one(b"107", 3)


def test_fail_no_agree_without_majority_then_resumes(sim_seed: int) -> None:
    sim = RaftSimulation(5, seed=sim_seed)
    first = sim.one(b"10", 5)
    leader = sim.check_one_leader()
    for k in (1, 2, 3):
        sim.disconnect(sim.other(leader, k))
    index, _, ok = sim.start(leader, b"20")
    assert ok, "leader rejected Start()"
    assert index == first + 1, f"expected index {first + 1}, got {index}"
    sim.run_for(2 * ELECTION_TIMEOUT_MS)
    count, _ = sim.n_committed(index)
    assert count == 0, f"{count} committed but no majority"
    for k in (1, 2, 3):
        sim.connect(sim.other(leader, k))
    # the disconnected majority may have chosen a leader from among their own ranks,
    # forgetting index 2 (the lab's words); with a new leader's no-op, one more
    leader2 = sim.check_one_leader()
    index2, _, ok2 = sim.start(leader2, b"30")
    assert ok2, "leader2 rejected Start()"
    assert first + 1 <= index2 <= first + 4, f"unexpected index {index2}"
    sim.one(b"1000", 5)


def test_concurrent_starts_in_one_term_all_commit(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    for _attempt in range(5):
        leader = sim.check_one_leader()
        _, term, ok = sim.start(leader, b"1")
        if not ok:
            continue
        indexes = []
        cmds = []
        for i in range(5):
            cmd = b"%d" % (100 + i)
            index, term1, ok = sim.start(leader, cmd)
            if not ok or term1 != term:
                break
            indexes.append(index)
            cmds.append(cmd)
        if len(indexes) < 5:
            continue
        got = []
        for index in indexes:
            data = sim.wait_committed(index, 3, term)
            if data is None:
                break
            got.append(data)
        if len(got) < 5:
            continue  # the term moved on: try again
        assert sorted(got) == sorted(cmds)
        return
    sim.fail("term changed too often")


def test_rejoin_of_partitioned_leader_overwrites_its_uncommitted_entries(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    sim.one(b"101", 3)
    leader1 = sim.check_one_leader()
    sim.disconnect(leader1)
    for cmd in (b"102", b"103", b"104"):
        sim.start(leader1, cmd)
    leader2 = sim.check_one_leader()
    sim.one(b"103", 2)
    sim.disconnect(leader2)
    sim.connect(leader1)
    sim.one(b"104", 2)
    sim.connect(leader2)
    sim.one(b"105", 3)
    # the old leader's log now matches the others (the invariants checked log matching);
    # its uncommitted entries are gone
    last = sim.wait_applied_everywhere()
    logs = {
        nid: [e.data for e in sim.node(nid).store.entries if e.index <= last] for nid in sim.ids
    }
    assert len({tuple(v) for v in logs.values()}) == 1, logs


def test_backup_leader_skips_conflicting_logs_quickly(sim_seed: int) -> None:
    sim = RaftSimulation(5, seed=sim_seed)
    rng = scenario_rng(sim_seed)
    sim.one(command(rng), 5)
    # put the leader and one follower in a partition
    leader1 = sim.check_one_leader()
    for k in (2, 3, 4):
        sim.disconnect(sim.other(leader1, k))
    # lots of commands that won't commit
    for _ in range(50):
        sim.start(leader1, command(rng))
    sim.run_for(ELECTION_TIMEOUT_MS / 2)
    sim.disconnect(leader1)
    sim.disconnect(sim.other(leader1, 1))
    # allow the other partition to recover
    for k in (2, 3, 4):
        sim.connect(sim.other(leader1, k))
    for _ in range(50):
        sim.one(command(rng), 3)
    # now another partitioned leader and one follower
    leader2 = sim.check_one_leader()
    other = sim.other(leader1, 2)
    if leader2 == other:
        other = sim.other(leader2, 1)
    sim.disconnect(other)
    for _ in range(50):
        sim.start(leader2, command(rng))
    sim.run_for(ELECTION_TIMEOUT_MS / 2)
    # bring the original leader back to life
    for nid in sim.ids:
        sim.disconnect(nid)
    sim.connect(leader1)
    sim.connect(sim.other(leader1, 1))
    sim.connect(other)
    for _ in range(50):
        sim.one(command(rng), 3)
    for nid in sim.ids:
        sim.connect(nid)
    sim.one(command(rng), 5)


def test_count_rpcs_to_elect_to_agree_and_when_idle(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    sim.check_one_leader()
    total1 = sim.rpc_count()
    assert 1 <= total1 <= 30, f"too many or few RPCs ({total1}) to elect initial leader"

    for _attempt in range(5):
        if _attempt:
            sim.run_for(3000)
        leader = sim.check_one_leader()
        total1 = sim.rpc_count()
        iters = 10
        start_index, term, ok = sim.start(leader, b"1")
        if not ok:
            continue
        cmds = []
        ok_all = True
        for i in range(1, iters + 1):
            cmd = b"%d" % (1000 + i)
            index1, term1, ok = sim.start(leader, cmd)
            if term1 != term or not ok:
                ok_all = False
                break
            assert index1 == start_index + i, "Start() failed"
            cmds.append(cmd)
        if not ok_all:
            continue
        for i in range(1, iters + 1):
            data = sim.wait_committed(start_index + i, 3, term)
            if data is None:
                ok_all = False
                break
            assert data == cmds[i - 1], f"wrong value {data!r} committed for index {i}"
        if not ok_all:
            continue
        if any(sim.state(nid)[0] != term for nid in sim.ids):
            continue
        total2 = sim.rpc_count()
        assert total2 - total1 <= (iters + 1 + 3) * 3, (
            f"too many RPCs ({total2 - total1}) for {iters} entries"
        )
        break
    else:
        sim.fail("term changed too often")

    sim.run_for(ELECTION_TIMEOUT_MS)
    total2 = sim.rpc_count()
    sim.run_for(ELECTION_TIMEOUT_MS)
    total3 = sim.rpc_count()
    assert total3 - total2 <= 3 * 20, f"too many RPCs ({total3 - total2}) for 1 second of idleness"


# --- 2C: persistence --------------------------------------------------------------------


def test_persist1_agreement_survives_crashes_of_all_leader_and_follower(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    sim.one(b"11", 3)
    # crash and re-start all
    for nid in sim.ids:
        sim.reboot(nid)
    sim.one(b"12", 3)
    leader1 = sim.check_one_leader()
    sim.reboot(leader1)
    sim.one(b"13", 3)
    leader2 = sim.check_one_leader()
    sim.disconnect(leader2)
    index = sim.one(b"14", 2)
    sim.reboot(leader2)
    sim.connect(leader2)
    sim.wait_committed(index, 3, -1)  # wait for leader2 to join before killing i3
    i3 = sim.other(sim.check_one_leader(), 1)
    sim.disconnect(i3)
    sim.one(b"15", 2)
    sim.reboot(i3)
    sim.connect(i3)
    sim.one(b"16", 3)


def test_persist2_partitions_and_minority_crashes(sim_seed: int) -> None:
    sim = RaftSimulation(5, seed=sim_seed)
    index = 1
    for _ in range(5):
        sim.one(b"%d" % (10 + index), 5)
        index += 1
        leader1 = sim.check_one_leader()
        sim.disconnect(sim.other(leader1, 1))
        sim.disconnect(sim.other(leader1, 2))
        sim.one(b"%d" % (10 + index), 3)
        index += 1
        sim.disconnect(leader1)
        sim.disconnect(sim.other(leader1, 3))
        sim.disconnect(sim.other(leader1, 4))
        for k in (1, 2):
            sim.reboot(sim.other(leader1, k))
            sim.connect(sim.other(leader1, k))
        sim.run_for(ELECTION_TIMEOUT_MS)
        sim.reboot(sim.other(leader1, 3))
        sim.connect(sim.other(leader1, 3))
        sim.one(b"%d" % (10 + index), 3)
        index += 1
        sim.connect(leader1)
        sim.connect(sim.other(leader1, 4))
    sim.one(b"1000", 5)


def test_persist3_partitioned_leader_and_follower_crash(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed)
    sim.one(b"101", 3)
    leader = sim.check_one_leader()
    sim.disconnect(sim.other(leader, 2))
    sim.one(b"102", 2)
    sim.crash(leader)
    sim.crash(sim.other(leader, 1))
    sim.connect(sim.other(leader, 2))
    sim.restart(leader)
    sim.one(b"103", 2)
    sim.restart(sim.other(leader, 1))
    sim.one(b"104", 3)


def _figure8_sleep(rng: random.Random) -> float:
    if rng.randrange(1000) < 100:
        return rng.randrange(int(ELECTION_TIMEOUT_MS / 2))
    return rng.randrange(13)


def test_figure8_commits_only_current_term_entries_by_counting(sim_seed: int) -> None:
    """The lab's 1000 iterations are FIGURE8_ITERATIONS here, per seed."""
    sim = RaftSimulation(5, seed=sim_seed)
    rng = scenario_rng(sim_seed)
    sim.one(command(rng), 1)
    nup = 5
    for _ in range(FIGURE8_ITERATIONS):
        leader = None
        for nid in sim.ids:
            if sim.up(nid):
                _, _, ok = sim.start(nid, command(rng))
                if ok:
                    leader = nid
        sim.run_for(_figure8_sleep(rng))
        if leader is not None:
            sim.crash(leader)
            nup -= 1
        if nup < 3:
            s = rng.choice(sim.ids)
            if not sim.up(s):
                sim.restart(s)
                nup += 1
    for nid in sim.ids:
        sim.restart(nid)
    sim.one(command(rng), 5)


def test_unreliable_agree_with_concurrent_clients(sim_seed: int) -> None:
    sim = RaftSimulation(5, seed=sim_seed, config=SimConfig(network=NetworkConfig.unreliable()))
    clients = [sim.client() for _ in range(4)]
    expected: dict[str, str] = {}
    for it in range(1, 51):
        for c in clients:
            key = f"k{c.id}"
            c.append(key, f"{it};")
            expected[key] = expected.get(key, "") + f"{it};"
        sim.one(b"%d" % it, 1)
        if not sim.run_until(lambda: not any(c.busy for c in clients), 20_000):
            sim.fail("client operations did not complete")
    sim.set_network(NetworkConfig.reliable())
    sim.one(b"100", 5)
    sim.wait_applied_everywhere()
    for nid in sim.ids:
        assert sim.node(nid).app.data == expected


def test_figure8_unreliable_with_long_reordering(sim_seed: int) -> None:
    """The lab's 1000 iterations (long reordering from 200) are scaled to
    FIGURE8_UNRELIABLE_ITERATIONS (from FIGURE8_UNRELIABLE_LONG_FROM) per seed."""
    sim = RaftSimulation(5, seed=sim_seed, config=SimConfig(network=NetworkConfig.unreliable()))
    rng = scenario_rng(sim_seed)
    sim.one(b"%d" % rng.randrange(10_000), 1)
    nup = 5
    for it in range(FIGURE8_UNRELIABLE_ITERATIONS):
        if it == FIGURE8_UNRELIABLE_LONG_FROM:
            sim.set_network(NetworkConfig.unreliable_long_reordering())
        leader = None
        for nid in sim.ids:
            _, _, ok = sim.start(nid, b"%d" % rng.randrange(10_000))
            if ok and sim.connected(nid):
                leader = nid
        sim.run_for(_figure8_sleep(rng))
        if leader is not None and rng.randrange(1000) < 500:
            sim.disconnect(leader)
            nup -= 1
        if nup < 3:
            s = rng.choice(sim.ids)
            if not sim.connected(s):
                sim.connect(s)
                nup += 1
    for nid in sim.ids:
        sim.connect(nid)
    sim.one(b"%d" % rng.randrange(10_000), 5, timeout_ms=20_000)


class _ChurnClient:
    """6.824's churn client: Start() on every live server, then look for the value at
    the returned index after 10, 20, 50, 100, 200 ms; remember values seen committed.
    Unlike the lab's loop it pauses CHURN_PAUSE_MS between rounds (the lab's clients spin;
    here that only multiplies identical work and test time)."""

    def __init__(self, sim: RaftSimulation, rng: random.Random, me: int) -> None:
        self.sim = sim
        self.rng = rng
        self.me = me
        self.stopped = False
        self.seen: list[bytes] = []
        sim.at(0, self._round)

    def _round(self) -> None:
        if self.stopped:
            return
        x = command(self.rng)
        index = -1
        for nid in self.sim.ids:
            idx, _, ok = self.sim.start(nid, x)
            if ok:
                index = idx
        if index == -1:
            self.sim.at(79 + self.me * 17, self._round)
            return
        self._poll(index, x, [10, 20, 50, 100, 200])

    def _poll(self, index: int, x: bytes, waits: list[int]) -> None:
        count, data = self.sim.n_committed(index)
        if count > 0 or not waits:
            if count > 0 and data == x:
                self.seen.append(x)
            self.sim.at(self.rng.uniform(*CHURN_PAUSE_MS), self._round)
            return
        self.sim.at(waits[0], lambda: self._poll(index, x, waits[1:]))


def _churn(sim_seed: int, *, unreliable: bool) -> None:
    network = NetworkConfig.unreliable() if unreliable else NetworkConfig.reliable()
    sim = RaftSimulation(5, seed=sim_seed, config=SimConfig(network=network))
    rng = scenario_rng(sim_seed)
    clients = [_ChurnClient(sim, random.Random(rng.getrandbits(32)), me) for me in range(3)]
    for _ in range(20):
        if rng.randrange(1000) < 200:
            sim.disconnect(rng.choice(sim.ids))
        if rng.randrange(1000) < 500:
            i = rng.choice(sim.ids)
            sim.restart(i)
            sim.connect(i)
        if rng.randrange(1000) < 200:
            sim.crash(rng.choice(sim.ids))
        sim.run_for(ELECTION_TIMEOUT_MS * 7 / 10)
    sim.run_for(ELECTION_TIMEOUT_MS)
    sim.set_network(NetworkConfig.reliable())
    for nid in sim.ids:
        sim.restart(nid)
        sim.connect(nid)
    for c in clients:
        c.stopped = True
    sim.run_for(ELECTION_TIMEOUT_MS)
    last = sim.one(command(rng), 5)
    really = set()
    for index in range(1, last + 1):
        data = sim.wait_committed(index, 5, -1)
        assert data is not None
        really.add(data)
    for c in clients:
        for v in c.seen:
            assert v in really, f"didn't find a value {v!r} a client saw committed"
    assert any(c.seen for c in clients), "no client saw anything committed"


def test_reliable_churn_keeps_every_value_seen_committed(sim_seed: int) -> None:
    _churn(sim_seed, unreliable=False)


def test_unreliable_churn_keeps_every_value_seen_committed(sim_seed: int) -> None:
    _churn(sim_seed, unreliable=True)


def test_clients_see_their_writes_after_a_leader_crash(sim_seed: int) -> None:
    """Not a lab test: Client plumbing (retry, dedup) across a leader crash."""
    sim = RaftSimulation(3, seed=sim_seed)
    c: Client = sim.client()
    leader = sim.check_one_leader()
    c.put("x", "1")
    sim.at(1, lambda: sim.crash(leader))
    assert sim.run_until(lambda: not c.busy, 10_000)
    c.append("x", "2")
    assert sim.run_until(lambda: not c.busy, 10_000)
    c.get("x")
    assert sim.run_until(lambda: not c.busy, 10_000)
    assert sim.history()[-1].output == "12"
