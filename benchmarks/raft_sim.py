"""How much faster than real time the Raft simulator runs a 5-node cluster under load.

Prints one JSON object: ``sim_speedup_5_nodes`` is simulated seconds per CPU second of the
simulating process (``time.process_time()``: on a shared machine, other processes' load does
not decide the figure; ``wall_speedup`` is the same per wall second) for a 5-node cluster (10 ms ticks, 10 heartbeats/s, all safety invariants checked) with
HEADLINE_CLIENTS closed-loop client (about 60 operations and 40 committed entries per
simulated second: puts, appends and ReadIndex gets over a reliable network); ``loads``
gives the same figure idle and with more clients, since the cost is per event (a
committed entry is ~30 events on 5 nodes). The Raft benchmark (``benchmarks/raft.py``)
calls ``sim_speedup()`` for its figure.

    python benchmarks/raft_sim.py --seconds 30
"""

from __future__ import annotations

import argparse
import json
import time

from trickle.testing.raftsim import RaftSimulation, SimConfig

DEFAULT_SECONDS = 30.0  # simulated seconds per load
HEADLINE_CLIENTS = 1  # closed-loop clients of the headline figure (0-20 ms think time)
LOADS = (0, 1, 4, 8)  # clients per measured load
CLOCK = "process_time"  # speed-ups count the simulating process's CPU time, not wall time


def run(
    *,
    nodes: int = 5,
    seconds: float = DEFAULT_SECONDS,
    clients: int = HEADLINE_CLIENTS,
    seed: int = 0,
) -> dict[str, float | int]:
    """Simulate ``seconds`` of a ``nodes``-node cluster under client load; the figures."""
    sim = RaftSimulation(nodes, seed=seed, config=SimConfig(snapshot_every=1000))
    sim.check_one_leader()
    load = [sim.client() for _ in range(clients)]
    sim.start_workload(load, keys=[f"k{i}" for i in range(16)], duration_ms=seconds * 1000)
    start_virtual = sim.now
    t0, c0 = time.perf_counter(), time.process_time()
    sim.run_for(seconds * 1000)
    cpu = time.process_time() - c0
    wall = time.perf_counter() - t0
    simulated = (sim.now - start_virtual) / 1000
    ops = sum(c.completed for c in load)
    return {
        "nodes": nodes,
        "clients": clients,
        "simulated_s": seconds,
        "clock": CLOCK,
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "sim_speedup": round(simulated / cpu, 1),
        "wall_speedup": round(simulated / wall, 1),
        "client_ops": ops,
        "client_ops_per_simulated_s": round(ops / seconds, 1),
        "committed_entries": sim.oracle.max_committed,
        "events": sim.stats.events,
        "events_per_cpu_s": round(sim.stats.events / cpu),
    }


def sim_speedup(seconds: float = DEFAULT_SECONDS) -> float:
    """Simulated seconds per CPU second of a 5-node cluster with HEADLINE_CLIENTS
    client(s): the ``sim_speedup_5_nodes`` figure of benchmarks/raft.py."""
    return float(headline(seconds)["sim_speedup"])


def headline(seconds: float = DEFAULT_SECONDS) -> dict[str, float | int]:
    """The whole run behind ``sim_speedup_5_nodes`` (CPU and wall seconds, events, ...)."""
    return run(nodes=5, seconds=seconds, clients=HEADLINE_CLIENTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="simulated s")
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    loads = [run(nodes=args.nodes, seconds=args.seconds, clients=c, seed=args.seed) for c in LOADS]
    headline = next(r for r in loads if r["clients"] == HEADLINE_CLIENTS)
    name = "sim_speedup_5_nodes" if args.nodes == 5 else f"sim_speedup_{args.nodes}_nodes"
    print(json.dumps({name: headline["sim_speedup"], "loads": loads}))


if __name__ == "__main__":
    main()
