"""MIT 6.824's snapshot tests (2D) as seeded simulations of trickle's Raft core.

The application snapshots every SNAPSHOT_INTERVAL applied entries (``RaftNode.compact``);
``trailing_entries=0`` so a follower that falls behind a compaction must be sent the
snapshot (chunked InstallSnapshot, small chunks so several are needed). The persisted Raft
state (hard state and log, not the snapshot) must stay under MAX_LOG_BYTES, the lab's 2000.
"""

from __future__ import annotations

import random

from trickle.raft.messages import MessageType
from trickle.testing.raftsim import NetworkConfig, RaftSimulation, SimConfig, sim_raft_config

SNAPSHOT_INTERVAL = 10
MAX_LOG_BYTES = 2000
ITERATIONS = 30  # as the lab


def scenario_rng(seed: int) -> random.Random:
    return random.Random(seed * 7919 + 29)


def command(rng: random.Random) -> bytes:
    return str(rng.getrandbits(40)).encode()


def snapshot_config(*, reliable: bool = True, **overrides: object) -> SimConfig:
    network = NetworkConfig.reliable() if reliable else NetworkConfig.unreliable()
    return SimConfig(
        raft=sim_raft_config(trailing_entries=0, snapshot_chunk_bytes=64),
        network=network,
        snapshot_every=SNAPSHOT_INTERVAL,
        **overrides,  # type: ignore[arg-type]
    )


def check_log_size(sim: RaftSimulation) -> None:
    for nid in sim.ids:
        size = sim.persisted_bytes(nid)
        assert size <= MAX_LOG_BYTES, f"node {nid}: log size too large ({size} bytes)"


def snapcommon(sim_seed: int, *, disconnect: bool, reliable: bool, crash: bool) -> RaftSimulation:
    sim = RaftSimulation(3, seed=sim_seed, config=snapshot_config(reliable=reliable))
    rng = scenario_rng(sim_seed)
    sim.one(command(rng), 3)
    leader1 = sim.check_one_leader()
    for i in range(ITERATIONS):
        victim = sim.other(leader1, 1)
        sender = leader1
        if i % 3 == 1:
            sender = sim.other(leader1, 1)
            victim = leader1
        if disconnect:
            sim.disconnect(victim)
            sim.one(command(rng), 2)
        if crash:
            sim.crash(victim)
            sim.one(command(rng), 2)
        # perhaps send enough to get a snapshot
        for _ in range(SNAPSHOT_INTERVAL // 2 + rng.randrange(SNAPSHOT_INTERVAL)):
            sim.start(sender, command(rng))
        # let the appliers catch up with the starts
        if not disconnect and not crash:
            # all followers caught up: no InstallSnapshot needed for SnapshotBasic
            sim.one(command(rng), 3)
        else:
            sim.one(command(rng), 2)
        check_log_size(sim)
        if disconnect:
            # a follower that may be behind and need a snapshot to catch up
            sim.connect(victim)
            sim.one(command(rng), 3)
            leader1 = sim.check_one_leader()
        if crash:
            sim.restart(victim)
            sim.connect(victim)
            sim.one(command(rng), 3)
            leader1 = sim.check_one_leader()
    return sim


def snapshots_sent(sim: RaftSimulation) -> int:
    return sim.stats.sent_by_type.get(MessageType.SNAPSHOT, 0)


def test_snapshot_basic_compacts_and_keeps_the_log_small(sim_seed: int) -> None:
    sim = snapcommon(sim_seed, disconnect=False, reliable=True, crash=False)
    for nid in sim.ids:
        assert sim.node(nid).store.snapshot is not None, f"node {nid} never snapshotted"


def test_snapshot_install_catches_up_a_disconnected_follower(sim_seed: int) -> None:
    sim = snapcommon(sim_seed, disconnect=True, reliable=True, crash=False)
    assert snapshots_sent(sim) > 0, "no follower needed a snapshot"


def test_snapshot_install_unreliable(sim_seed: int) -> None:
    sim = snapcommon(sim_seed, disconnect=True, reliable=False, crash=False)
    assert snapshots_sent(sim) > 0, "no follower needed a snapshot"


def test_snapshot_install_crash_restarts_from_snapshot_and_catches_up(sim_seed: int) -> None:
    sim = snapcommon(sim_seed, disconnect=False, reliable=True, crash=True)
    assert sim.stats.restarts == ITERATIONS


def test_snapshot_install_uncrash_unreliable(sim_seed: int) -> None:
    snapcommon(sim_seed, disconnect=False, reliable=False, crash=True)


def test_snapshot_all_crash_index_never_decreases(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed, config=snapshot_config())
    rng = scenario_rng(sim_seed)
    sim.one(command(rng), 3)
    for _ in range(5):
        for _ in range(SNAPSHOT_INTERVAL // 2 + rng.randrange(SNAPSHOT_INTERVAL)):
            sim.one(command(rng), 3)
        index1 = sim.one(command(rng), 3)
        for nid in sim.ids:
            sim.crash(nid)
        for nid in sim.ids:
            sim.restart(nid)
        index2 = sim.one(command(rng), 3)
        assert index2 >= index1 + 1, f"index decreased from {index1} to {index2}"


def test_snapshot_init_restarts_from_snapshot_twice(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed, config=snapshot_config())
    rng = scenario_rng(sim_seed)
    sim.one(command(rng), 3)
    for _ in range(SNAPSHOT_INTERVAL + 1):
        sim.one(command(rng), 3)
    for nid in sim.ids:
        sim.crash(nid)
    for nid in sim.ids:
        sim.restart(nid)
    # one op, to get something written back to persistent storage
    sim.one(command(rng), 3)
    for nid in sim.ids:
        sim.crash(nid)
    for nid in sim.ids:
        sim.restart(nid)
    # another op, to trigger a potential bug
    sim.one(command(rng), 3)
    for nid in sim.ids:
        assert sim.node(nid).store.snapshot is not None


def test_snapshot_state_machine_survives_crash_without_replay(sim_seed: int) -> None:
    """Not a lab test: a node whose state machine survives the crash restarts with
    ``applied`` set and gets only the entries after it."""
    config = snapshot_config(app_survives_crash=1.0)
    sim = RaftSimulation(3, seed=sim_seed, config=config)
    rng = scenario_rng(sim_seed)
    for _ in range(SNAPSHOT_INTERVAL + 3):
        sim.one(command(rng), 3)
    victim = sim.other(sim.check_one_leader(), 1)
    applied = sim.node(victim).app.applied
    sim.crash(victim)
    assert sim.node(victim).app.applied == applied
    sim.restart(victim)
    sim.one(command(rng), 3)
