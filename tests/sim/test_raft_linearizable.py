"""Client histories of the simulated Raft key-value service, checked for linearizability.

Several clients run put/append/get/delete on a few keys against a 5-node cluster while a
nemesis partitions it (majority/minority splits, an isolated leader) and crashes and
restarts nodes; writes go through the log, reads through ReadIndex. The recorded history,
with the operations still unanswered when it is taken (``return_time = inf``), must be
linearizable (``trickle.testing.linearizability``). The converse shows the checker is not
vacuous: with the simulator's UNSAFE local reads, a leader partitioned away keeps
answering from its stale state, and the checker reports the stale read.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from trickle.raft.core import Role
from trickle.testing.linearizability import (
    CheckResult,
    KvInput,
    KvModel,
    KvOp,
    Operation,
    Outcome,
    check,
)
from trickle.testing.raftsim import (
    ELECTION_TIMEOUT_MS,
    Client,
    ClientOp,
    NetworkConfig,
    RaftSimulation,
    SimConfig,
    sim_raft_config,
)

NODES = 5
CLIENTS = 5
KEYS = ("a", "b", "c")
LOAD_MS = 5_000.0  # virtual ms of client load under faults per seed
NEMESIS_PAUSE_MS = (150.0, 900.0)  # between two nemesis actions
SETTLE_MS = 30_000.0  # virtual ms allowed for clients to finish once faults stop


def operations(history: Sequence[ClientOp]) -> list[Operation[KvInput, str | None]]:
    """The simulator's client records as the checker's operations (times in virtual ms)."""
    return [
        Operation(
            client_id=op.client,
            input=KvInput(KvOp(op.op), op.key, op.value),
            output=op.output,
            call_time=op.call_time,
            return_time=op.return_time,
        )
        for op in history
    ]


def check_history(sim: RaftSimulation) -> CheckResult:
    # Virtual time: an operation a client starts at the instant another returned (a
    # scenario reacting to the answer) comes after it.
    return check(KvModel(), operations(sim.history()), order_touching=True)


def nemesis_rng(seed: int) -> random.Random:
    """The scenario's own choices (faults and pauses), separate from the simulator's."""
    return random.Random(seed * 104_729 + 3)


def run_nemesis(sim: RaftSimulation, rng: random.Random, duration_ms: float) -> dict[str, int]:
    """Random faults for ``duration_ms``: split the cluster (a random minority, or the
    leader with at most one follower) or heal it, crash a node (at most two down at once)
    or restart one; and, whatever the dice say, crash the leader once in the first half
    (restarted an election timeout later). Returns how many of each were done."""
    done = {"partition": 0, "isolate-leader": 0, "heal": 0, "crash": 0, "restart": 0}
    end = sim.now + duration_ms
    down: list[str] = []

    def restart(victim: str) -> None:
        if victim in down:
            down.remove(victim)
            sim.restart(victim)
            done["restart"] += 1

    def crash_leader() -> None:
        if sim.now >= end:
            return
        leaders = [n for n in sim.ids if sim.node(n).is_leader]
        if leaders and len(down) < 2:
            sim.crash(leaders[0])
            down.append(leaders[0])
            done["crash"] += 1
            sim.at(ELECTION_TIMEOUT_MS, lambda: restart(leaders[0]))
        else:  # none yet, or two down already: try again shortly
            sim.at(rng.uniform(*NEMESIS_PAUSE_MS), crash_leader)

    sim.at(rng.uniform(0, duration_ms / 2), crash_leader)
    while sim.now < end:
        sim.run_for(rng.uniform(*NEMESIS_PAUSE_MS))
        ids = list(sim.ids)
        roll = rng.random()
        leaders = [n for n in ids if sim.node(n).is_leader]
        if roll < 0.2:
            rng.shuffle(ids)
            k = rng.randint(1, 2)
            sim.partition(ids[:k], ids[k:])
            done["partition"] += 1
        elif roll < 0.35 and leaders:
            leader = leaders[0]
            others = [n for n in ids if n != leader]
            minority = [leader, *rng.sample(others, rng.randint(0, 1))]
            sim.partition(minority, [n for n in ids if n not in minority])
            done["isolate-leader"] += 1
        elif roll < 0.55:
            sim.heal()
            done["heal"] += 1
        elif roll < 0.8 and len(down) < 2:
            victim = rng.choice([n for n in ids if n not in down])
            sim.crash(victim)
            down.append(victim)
            done["crash"] += 1
        elif down:
            restart(rng.choice(down))
    return done


def settle(sim: RaftSimulation, clients: Sequence[Client]) -> None:
    """Stop the faults and let every client's last operation finish."""
    sim.heal()
    sim.set_network(NetworkConfig.reliable())
    for nid in sim.ids:
        sim.restart(nid)
    if not sim.run_until(lambda: not any(c.busy for c in clients), SETTLE_MS):
        sim.fail("clients did not finish after the faults stopped")


def assert_linearizable(sim: RaftSimulation) -> CheckResult:
    result = check_history(sim)
    assert result.ok, (
        f"{result.describe()}\nseed {sim.seed}; replay: {sim.replay_command()}\n"
        + "\n".join(sim.trace_tail())
    )
    return result


def run_faulty_workload(sim: RaftSimulation, seed: int) -> list[Client]:
    sim.wait_leader()
    clients = [sim.client() for _ in range(CLIENTS)]
    sim.start_workload(clients, keys=KEYS, duration_ms=LOAD_MS)
    faults = run_nemesis(sim, nemesis_rng(seed), LOAD_MS)
    assert faults["crash"] > 0
    # Taken in the middle of the faults: some operations are unanswered (pending).
    mid = assert_linearizable(sim)
    assert sum(len(p.operations) for p in mid.partitions) > 0
    settle(sim, clients)
    return clients


def test_histories_under_partitions_and_crashes_are_linearizable(sim_seed: int) -> None:
    sim = RaftSimulation(
        NODES,
        seed=sim_seed,
        config=SimConfig(network=NetworkConfig(delay_ms=(0.5, 5.0), drop_rate=0.02)),
    )
    run_faulty_workload(sim, sim_seed)
    result = assert_linearizable(sim)
    ops = sim.history()
    assert not any(op.pending for op in ops), "clients retry until answered once healed"
    assert sum(op.op == "get" for op in ops) >= 20
    assert sum(op.op != "get" for op in ops) >= 20
    assert [p.label for p in result.partitions] == list(KEYS)


def test_histories_with_lossy_reordering_network_crash_points_and_snapshots_are_linearizable(
    sim_seed: int,
) -> None:
    sim = RaftSimulation(
        NODES,
        seed=sim_seed,
        config=SimConfig(
            network=NetworkConfig(
                delay_ms=(0.0, 27.0), drop_rate=0.1, duplicate_rate=0.02, long_reorder_rate=0.1
            ),
            snapshot_every=40,
            crash_point_rate=0.0005,
            app_survives_crash=0.5,
            lazy_commit=True,
        ),
    )
    run_faulty_workload(sim, sim_seed)
    assert_linearizable(sim)


def run_until_done(sim: RaftSimulation, client: Client, start: Callable[[], None]) -> ClientOp:
    """Start one operation of ``client`` and run until it is answered; its record."""
    start()
    if not sim.run_until(lambda: not client.busy, 60_000):
        sim.fail(f"client {client.id} got no answer")
    return [op for op in sim.history() if op.client == client.id][-1]


def deposed_leader_scenario(
    sim_seed: int, *, unsafe_reads: bool
) -> tuple[RaftSimulation, ClientOp]:
    """Background clients load keys a-c; a writer and a reader use key x. The leader is
    partitioned away with one follower; the majority elects a new leader, the writer's
    put of "new" returns, and only then the reader (who last talked to the old leader)
    reads x. CheckQuorum is off, so the deposed leader keeps believing it leads (as etcd
    0.4 and early Consul did; with CheckQuorum the window is about an election timeout).
    Returns the simulation and the reader's last get."""
    sim = RaftSimulation(
        NODES,
        seed=sim_seed,
        config=SimConfig(raft=sim_raft_config(check_quorum=False)),
    )
    old = sim.wait_leader()
    background = [sim.client() for _ in range(3)]
    sim.start_workload(background, keys=KEYS, duration_ms=4 * ELECTION_TIMEOUT_MS)
    writer = sim.client()
    reader = sim.client(unsafe_reads=unsafe_reads)
    run_until_done(sim, writer, lambda: writer.put("x", "old"))
    first = run_until_done(sim, reader, lambda: reader.get("x"))
    assert first.output == "old"
    minority = [old, sim.other(old, 1)]
    sim.partition(minority, [n for n in sim.ids if n not in minority])

    def new_leader() -> bool:
        return any(sim.node(n).is_leader for n in sim.ids if n not in minority)

    if not sim.run_until(new_leader, 10 * ELECTION_TIMEOUT_MS):
        sim.fail("the majority elected no leader")
    run_until_done(sim, writer, lambda: writer.put("x", "new"))
    assert sim.node(old).role is Role.LEADER, "the deposed leader still believes it leads"
    last = run_until_done(sim, reader, lambda: reader.get("x"))
    settle(sim, [*background, writer, reader])
    return sim, last


def test_checker_reports_a_stale_read_from_a_deposed_leader_in_unsafe_mode(
    sim_seed: int,
) -> None:
    sim, stale = deposed_leader_scenario(sim_seed, unsafe_reads=True)
    assert stale.output == "old"  # the deposed leader answered from its own state
    result = check_history(sim)
    assert result.outcome is Outcome.ILLEGAL, "the checker missed the stale read"
    (failure,) = result.failures  # the background keys stay linearizable
    assert failure.label == "x"
    assert failure.blocking is not None
    assert (failure.blocking.client_id, failure.blocking.output) == (stale.client, "old")
    assert failure.blocking.call_time == stale.call_time
    report = result.describe()
    assert "part 'x'" in report
    assert "put('x', 'new')" in report
    assert f"[{stale.client}] get('x') -> 'old'" in report
    assert "the model gives 'new'" in report


def test_the_same_scenario_with_readindex_reads_is_linearizable(sim_seed: int) -> None:
    sim, read = deposed_leader_scenario(sim_seed, unsafe_reads=False)
    assert read.output == "new"  # the old leader could not confirm it leads; another did
    assert_linearizable(sim)
