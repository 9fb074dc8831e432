"""Crashes at every storage step, with loss of the writes in flight, under client load.

A node may crash right after any storage step (save completed, messages sent, each entry
applied, advance, compaction; ``crash_point_rate``) or at any instant from a scheduled
crash, which loses the saves still in flight (slow disks make that likely). It restarts
from what its completed saves left, with or without its state machine. The invariants
(one leader per term, log matching, leader completeness, same applied prefix, no committed
entry overwritten, term and vote never back, persistence before send) are checked after
every step; at the end every acknowledged write must be in the final state exactly once.
Each runs with the plain Ready protocol and with ``lazy_commit`` (trickle's driver: the
commit index alone is not synced, durable committed entries are applied before a save).
"""

from __future__ import annotations

import random

import attrs
import pytest

from trickle.errors import ValidationError
from trickle.testing.raftsim import (
    ELECTION_TIMEOUT_MS,
    InvariantViolation,
    NetworkConfig,
    RaftSimulation,
    SimConfig,
    sim_raft_config,
)

LOAD_MS = 10_000.0  # virtual ms of client load per seed


def appends_acknowledged_exactly_once(sim: RaftSimulation) -> None:
    """Every append a client saw succeed is in the final value once; none twice."""
    final = sim.node(sim.check_one_leader()).app.data
    seen: dict[str, int] = {}
    for key, value in final.items():
        for part in value.split(";"):
            if part:
                seen[f"{key}/{part}"] = seen.get(f"{key}/{part}", 0) + 1
    for op in sim.history():
        if op.op != "append":
            continue
        token = f"{op.key}/{(op.value or '').rstrip(';')}"
        if op.return_time != float("inf"):
            assert seen.get(token) == 1, (
                f"acknowledged append {token} appears {seen.get(token, 0)}x"
            )
        else:
            assert seen.get(token, 0) <= 1, f"pending append {token} applied twice"


def run_load(sim: RaftSimulation, rng: random.Random, *, crash_every_ms: float) -> None:
    clients = [sim.client() for _ in range(3)]
    sim.start_workload(clients, duration_ms=LOAD_MS, weights=(0.0, 0.8, 0.2, 0.0))
    end = sim.now + LOAD_MS
    while sim.now < end:
        sim.run_for(rng.uniform(0, 2 * crash_every_ms))
        victim = rng.choice(sim.ids)
        if sim.up(victim):
            sim.crash(victim)
            sim.at(rng.uniform(0, ELECTION_TIMEOUT_MS), lambda v=victim: sim.restart(v))
    for nid in sim.ids:
        sim.restart(nid)
    sim.set_network(NetworkConfig.reliable())
    if not sim.run_until(lambda: not any(c.busy for c in clients), 30_000):
        sim.fail("clients did not finish after the faults stopped")
    sim.one(b"final", len(sim.ids))
    sim.wait_applied_everywhere()
    appends_acknowledged_exactly_once(sim)


MODES = pytest.mark.parametrize("lazy_commit", [False, True], ids=["strict", "lazy-commit"])


@MODES
def test_crash_points_after_every_storage_step_keep_safety(
    sim_seed: int, lazy_commit: bool
) -> None:
    config = SimConfig(
        lazy_commit=lazy_commit,
        crash_point_rate=0.003,
        app_survives_crash=0.5,
        disk_ms=(0.5, 8.0),
        snapshot_every=25,
        raft=sim_raft_config(trailing_entries=5, snapshot_chunk_bytes=256),
    )
    sim = RaftSimulation(5, seed=sim_seed, config=config)
    run_load(sim, random.Random(sim_seed * 31 + 1), crash_every_ms=1500)
    assert sim.stats.crashes > 0


@MODES
def test_crashes_losing_in_flight_saves_on_a_lossy_network_keep_safety(
    sim_seed: int, lazy_commit: bool
) -> None:
    config = SimConfig(
        lazy_commit=lazy_commit,
        network=NetworkConfig.unreliable(),
        disk_ms=(1.0, 30.0),  # slow disks: a crash often loses a save in flight
        app_survives_crash=0.3,
        snapshot_every=40,
        raft=sim_raft_config(trailing_entries=10),
    )
    sim = RaftSimulation(3, seed=sim_seed, config=config)
    run_load(sim, random.Random(sim_seed * 31 + 2), crash_every_ms=600)
    assert sim.stats.crashes > 0


@MODES
def test_whole_cluster_crashes_repeatedly_and_recovers_every_acknowledged_write(
    sim_seed: int, lazy_commit: bool
) -> None:
    config = SimConfig(
        disk_ms=(1.0, 15.0), app_survives_crash=0.5, snapshot_every=30, lazy_commit=lazy_commit
    )
    sim = RaftSimulation(3, seed=sim_seed, config=config)
    rng = random.Random(sim_seed * 31 + 3)
    clients = [sim.client() for _ in range(2)]
    sim.start_workload(clients, duration_ms=8000, weights=(0.0, 0.9, 0.1, 0.0))
    for _ in range(6):
        sim.run_for(rng.uniform(200, 1500))
        for nid in sim.ids:
            sim.crash(nid)
        sim.run_for(rng.uniform(0, 100))
        for nid in sim.ids:
            sim.restart(nid)
    if not sim.run_until(lambda: not any(c.busy for c in clients), 30_000):
        sim.fail("clients did not finish")
    sim.one(b"final", 3)
    sim.wait_applied_everywhere()
    appends_acknowledged_exactly_once(sim)


def test_invariants_catch_a_disk_that_forgets_the_vote(sim_seed: int) -> None:
    """The checks can fail: a node whose disk forgets its vote at a crash (PySyncObj never
    persists it) could vote twice in a term; it is caught when it restarts."""
    sim = RaftSimulation(3, seed=sim_seed)
    sim.one(b"1", 3)
    victim = sim.other(sim.check_one_leader(), 1)
    store = sim.node(victim).store
    sim.crash(victim)
    durable = store.memory.load()
    assert durable.hard_state.vote is not None
    amnesiac = attrs.evolve(durable.hard_state, vote=None)
    fresh = type(store.memory)()
    fresh.save(hard_state=amnesiac, entries=durable.entries, snapshot=durable.snapshot)
    store.memory = fresh
    store.hard = amnesiac
    with pytest.raises(InvariantViolation, match="restarts at term=.* vote=None"):
        sim.restart(victim)


def test_crash_loses_the_save_in_flight_and_keeps_completed_ones(sim_seed: int) -> None:
    """The disk model itself: what survives a crash is what the completed saves left."""
    sim = RaftSimulation(3, seed=sim_seed, config=SimConfig(disk_ms=(100.0, 100.0)))
    sim.one(b"before", 3)
    leader = sim.check_one_leader()
    store = sim.node(leader).store
    index, _, ok = sim.start(leader, b"in-flight")
    assert ok
    sim.run_for(50)  # the leader's save takes 100 ms
    sim.crash(leader)
    assert store.last_index < index
    assert all(e.data != b"in-flight" for e in store.load().entries)
    sim.restart(leader)
    index2 = sim.one(b"after", 3)
    sim.run_for(200)
    entries = {e.index: e.data for e in sim.node(leader).store.load().entries}
    assert entries[index2] == b"after"
    assert b"before" in entries.values()


@MODES
def test_random_nemesis_keeps_safety_and_recovers(sim_seed: int, lazy_commit: bool) -> None:
    """Jepsen-style: every 50-400 ms one random fault (partition into random halves, a
    one-way cut, a crash, a restart, a leadership transfer, a lossy or long-reordering
    network, healing) under client load; then everything heals and every acknowledged
    write must be there exactly once."""
    config = SimConfig(
        lazy_commit=lazy_commit,
        snapshot_every=20,
        app_survives_crash=0.5,
        disk_ms=(0.5, 10.0),
        raft=sim_raft_config(trailing_entries=5, snapshot_chunk_bytes=128),
    )
    sim = RaftSimulation(5, seed=sim_seed, config=config)
    rng = random.Random(sim_seed * 31 + 4)
    clients = [sim.client() for _ in range(3)]
    sim.start_workload(clients, duration_ms=LOAD_MS, weights=(0.0, 0.8, 0.2, 0.0))
    end = sim.now + LOAD_MS
    while sim.now < end:
        sim.run_for(rng.uniform(50, 400))
        fault = rng.randrange(8)
        ids = list(sim.ids)
        if fault == 0:
            rng.shuffle(ids)
            cut = rng.randrange(1, len(ids))
            sim.partition(ids[:cut], ids[cut:])
        elif fault == 1:
            a, b = rng.sample(ids, 2)
            sim.cut(a, b)
        elif fault == 2:
            sim.crash(rng.choice(ids))
        elif fault == 3:
            sim.restart(rng.choice(ids))
        elif fault == 4:
            leaders = sim.leaders()
            if leaders:
                leader = leaders[-1][1]
                try:
                    sim.transfer_leadership(leader, rng.choice([i for i in ids if i != leader]))
                except ValidationError:
                    pass
        elif fault == 5:
            sim.set_network(
                rng.choice([NetworkConfig.unreliable(), NetworkConfig.unreliable_long_reordering()])
            )
        else:
            sim.heal()
            sim.set_network(NetworkConfig.reliable())
    sim.heal()
    sim.set_network(NetworkConfig.reliable())
    for nid in sim.ids:
        sim.restart(nid)
    if not sim.run_until(lambda: not any(c.busy for c in clients), 30_000):
        sim.fail("clients did not finish after the faults stopped")
    sim.one(b"final", 5)
    sim.wait_applied_everywhere()
    appends_acknowledged_exactly_once(sim)
