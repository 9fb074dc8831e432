"""A deterministic simulation of a whole trickle cluster: servers, agents, the leader's
scheduler and the runners, under a nemesis. One seed, no Trio.

It is ``trickle.testing.raftsim`` (the same event loop, simulated network and disks,
crashes that lose unsynced writes, and the Raft safety oracle) with the engine's
application on top: each server applies committed entries to the engine's real
``StateMachine`` (``replog.decode_entry``, fence rule included), its leader drives the real
``Scheduler`` core and dispatches committed runs to runner nodes through the simulated
network, and runners (agents, and each server's own) run them and report the results
until committed. ``_clustersim_server`` and ``_clustersim_runner`` say what each side
models of the engine (``_lead``, ``_fire``, ``_send_dispatch``, ``_fail_runs_of``,
``_reconcile_remote_runs``, ``_abandon_orphans``; ``RunnerService``)::

    sim = ClusterSimulation(seed=sim_seed)
    sim.setup()                                  # elect a leader, store the jobs
    sim.run_nemesis(NemesisConfig())             # faults, then heal, then settle
    sim.finish()                                 # stop deciding, drain, check everything

What varies with the seed: every node's wall clock is off by up to ``max_skew_ms`` (500
ms), and the scheduler reads it; the nemesis (``NemesisConfig``) partitions the nodes
(often isolating the leader), crashes and restarts servers and agents (a server loses its
unsynced writes, any node its runs), and makes the network drop, duplicate and reorder
messages, in a seeded random schedule; then it heals everything and lets the cluster
settle.

Invariants (a violation raises ``InvariantViolation`` with the seed, the virtual time, the
last trace lines and the ``--sim-seed`` replay command):

1. **At most one dispatch per (job, scheduled time, target node)**, counted when a runner
   starts a run (checked at every start).
2. **Every fire has exactly one fate** (checked for every scheduled instant up to the end,
   on the committed log): one run group (intents on its targets), or a ``FiresSkipped``
   whose reason is one of "no target nodes" (no alive member matches), "forbid",
   "concurrency limit" or "cluster at capacity" (or the state machine refusing an intent
   for one of the last three), or a ``FiresMissed`` that the catch-up rules allow: outside
   the catch-up window when recorded (within the skew), coalesced into the catch-up run
   of a later fire of the same job, or coalesced into a late run decided in the same
   entry ("the scheduler fell behind"). No fate is a lost fire; two are a duplicate.
   **Once the faults have healed** (from ``settle_ms`` after the heal), every fire is run:
   one group, each of its runs started exactly once by its runner and finished with
   success (a ``forbid`` job's fire may be skipped while its previous run is active).
3. **Nothing committed is lost**: raftsim's oracle (election safety, log matching, leader
   completeness, state machine safety, durability across crashes), at every step; and at
   the end every server's state machine equals the committed history replayed.
4. **No execution stays running after its node is declared failed**: once healed, the
   committed state's running set holds only runs on live nodes that really run them, but
   for those the engine may rightly still hold: committed less than ``fresh_ms`` ago or
   still being dispatched (a lost answer is settled once the dispatch expired, 10 s), or
   on a dead node that the leader has not had ``fail_after_ms`` to declare failed, or
   whose runs wait for their dispatches to expire before being failed (``_fail_runs_of``).
   After the scheduler stops and those delays pass, it is empty.
5. **Fencing**: no runner takes a dispatch whose term is older than a term it had seen,
   and none starts a run whose record is already finished (a dispatch that outlived the
   run's abandonment: the engine's dispatch expiry rules that out).

What is not modelled: job edits during the run, retries and dependent jobs (runs always
succeed), launch ahead (fires are decided at their instant), output streaming, snapshots
(the oracle reads only the key-value application's images), and membership changes (the
servers are fixed voters; gossip is replaced by the leader's failure detector, see
``ClusterConfig``). By default the engine is modelled as it is; ``ClusterConfig.fixes``
adds models of fixes for what this simulation found (``tests/sim/
test_cluster_sim_findings.py``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from trickle.engine import commands as c
from trickle.engine.fsm import StateMachine
from trickle.engine.model import Concurrency, Execution, ExecutionId, Job
from trickle.engine.replog import decode_entry, encode_entry
from trickle.errors import ValidationError
from trickle.raft.core import Role
from trickle.raft.driver import DEFAULT_CONFIG, DEFAULT_TICK_SECONDS
from trickle.raft.messages import NodeId
from trickle.testing._clustersim_check import Ledger
from trickle.testing._clustersim_runner import (
    RESPONSE_TYPES,
    RUNNER_BOUND,
    Dispatch,
    RunnerFaults,
    SimRunner,
)
from trickle.testing._clustersim_server import LeaderFaults, ServerApp, ServerControl, skew_of
from trickle.testing._raftsim_oracle import SimStore
from trickle.testing.raftsim import (
    InvariantViolation,
    NetworkConfig,
    RaftSimulation,
    SimConfig,
    SimNode,
    SimulationFailure,
)

__all__ = [
    "ALL_FIXES",
    "FIX_RECONCILE_OWN_RUNS",
    "FIX_RESTART_RECONCILE",
    "ClusterConfig",
    "ClusterSimulation",
    "InvariantViolation",
    "JobSpec",
    "LeaderFaults",
    "NemesisConfig",
    "NetworkConfig",
    "RunnerFaults",
    "ScenarioResult",
    "SimulationFailure",
    "default_jobs",
    "engine_raft_config",
    "run_scenario",
]

EPOCH = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # virtual time 0, on a node without skew
FIX_RESTART_RECONCILE = "restart-reconcile"
FIX_RECONCILE_OWN_RUNS = "reconcile-own-runs"
ALL_FIXES = frozenset({FIX_RESTART_RECONCILE, FIX_RECONCILE_OWN_RUNS})
_US = timedelta(microseconds=1)


@attrs.frozen(kw_only=True)
class JobSpec:
    """A job of the scenario: ``@every every_s`` seconds, on the nodes its ``tags`` select
    (servers carry ``role=server``, agents ``role=agent``), each run lasting a uniform
    ``run_ms``."""

    name: str
    every_s: int
    tags: dict[str, str] = attrs.field(factory=dict)
    forbid: bool = False
    catchup_window: float = 3600.0
    run_ms: tuple[float, float] = (50.0, 800.0)

    def job(self) -> Job:
        return Job(
            name=self.name,
            schedule=f"@every {self.every_s}s",
            tags=self.tags,
            concurrency=Concurrency.FORBID if self.forbid else Concurrency.ALLOW,
            catchup_window=self.catchup_window,
            executor="shell",
            executor_config={"command": "true"},
        )


def default_jobs() -> tuple[JobSpec, ...]:
    """Six jobs covering the target rules: every node, all agents, one agent at random,
    one server at random, a ``forbid`` job whose runs can outlast its period, and one
    with a 2 s catch-up window (so a long failover records missed fires)."""
    return (
        JobSpec(name="everywhere", every_s=3),
        JobSpec(name="agents", every_s=2, tags={"role": "agent"}),
        JobSpec(name="one-agent", every_s=1, tags={"role": "agent:1"}),
        JobSpec(name="one-server", every_s=3, tags={"role": "server:1"}),
        JobSpec(
            name="slow-forbid",
            every_s=2,
            tags={"role": "agent:1"},
            forbid=True,
            run_ms=(500.0, 3500.0),
        ),
        JobSpec(name="short-window", every_s=1, tags={"role": "server:1"}, catchup_window=2.0),
    )


def engine_raft_config(**overrides: Any) -> SimConfig:
    """The raftsim configuration with the engine's Raft timing (``RaftDriver``'s
    defaults: 25 ms ticks, elections after 10-20 ticks, heartbeats every 4) and the
    driver's lazy commit index. Keyword arguments override ``SimConfig`` fields."""
    fields: dict[str, Any] = {
        "tick_ms": DEFAULT_TICK_SECONDS * 1000,
        "raft": DEFAULT_CONFIG,
        "lazy_commit": True,
    }
    fields.update(overrides)
    return SimConfig(**fields)


@attrs.frozen(kw_only=True)
class ClusterConfig:
    """The simulated cluster.

    servers / agents: how many (ids s1.., a1..). jobs: the scenario's jobs.
    max_skew_ms: each node's wall clock is off by a uniform amount in +-max_skew_ms.
    fail_after_ms: the leader's failure detector (gossip's stand-in) declares a node failed
        when it has heard nothing from it for this long; ping_ms: how often it probes.
    dispatch_timeout_ms / query_timeout_ms: a dispatch's answer, a "what do you run?";
    connect_timeout_ms: how long an unreachable node takes to fail a send;
    dispatch_attempts / dispatch_backoff_ms: sends of a dispatch while unreachable
    (``Dispatcher.send``'s rule: the request is re-sent only when it did not go out).
    raft: the raftsim configuration (network, disks, crash points); by default
        ``engine_raft_config()``.
    runner_faults / leader_faults: planted bugs, for the checker's own tests.
    amnesia: a crashed server loses its whole disk (a planted bug: the oracle objects).
    fixes: the engine's fixes for findings of this simulation, as the simulation models
        them; all on by default (the engine has them). Turning one off models the engine
        before it, which ``tests/sim/test_cluster_sim_findings.py`` does to show the
        simulation catches the finding.
        FIX_RESTART_RECONCILE: the leader asks a node what it runs, abandoning the runs
        it lost, when it notices the node's restart (a new incarnation in its answers,
        as gossip's boot tag shows one) or sees a node it declared failed come back; and
        a new leader asks a node holding inherited runs again until it answers (or is
        declared failed), not once. Without it, a node that restarts before it is
        declared failed, or that comes back while its failed runs wait for their
        dispatches to expire, keeps the runs it lost "running" for good.
        FIX_RECONCILE_OWN_RUNS: a new leader also checks the runs it inherited on itself
        against its own runner (an intent for the new leader's node that its decider
        never dispatched would otherwise stay "running" for good).
        (Two findings in the ``Scheduler`` core were fixed there: a skipped fire records
        the fires its ``next`` jumps over as missed, and ``catch_up``'s missed records
        move ``next`` to the late fire.)
    strict_ghosts: a "ghost" run (one a runner starts after the history recorded it
        finished: a dispatch that outlived the run's abandonment) is a violation; False
        only counts them (``counts["ghost_runs"]``, ``ghosts``). The engine's dispatch
        expiry rules them out.
    """

    servers: int = 3
    agents: int = 2
    jobs: tuple[JobSpec, ...] = attrs.field(factory=default_jobs)
    max_skew_ms: float = 500.0
    fail_after_ms: float = 3000.0
    ping_ms: float = 500.0
    dispatch_timeout_ms: float = 1000.0
    query_timeout_ms: float = 1000.0
    connect_timeout_ms: float = 200.0
    dispatch_attempts: int = 3
    dispatch_backoff_ms: float = 300.0
    raft: SimConfig = attrs.field(factory=lambda: engine_raft_config())
    runner_faults: RunnerFaults = attrs.field(factory=RunnerFaults)
    leader_faults: LeaderFaults = attrs.field(factory=LeaderFaults)
    amnesia: bool = False
    fixes: frozenset[str] = ALL_FIXES
    strict_ghosts: bool = True

    def __attrs_post_init__(self) -> None:
        if self.servers < 1 or self.agents < 0:
            raise ValidationError("a cluster needs a server (and no negative agents)")
        if len({j.name for j in self.jobs}) != len(self.jobs):
            raise ValidationError("job names must be distinct", field="jobs")
        unknown = set(self.fixes) - ALL_FIXES
        if unknown:
            raise ValidationError(f"unknown fixes {sorted(unknown)}", field="fixes")


@attrs.frozen(kw_only=True)
class NemesisConfig:
    """What the nemesis does, for ``fault_ms``, one action every ``step_ms``; then it heals
    everything (partitions, network, crashed nodes restart) and the cluster runs
    ``heal_ms`` more, fault-free.

    partitions: split the nodes in two (half of the time: the leader alone, perhaps with
        some agents). crashes: crash a server or an agent; it restarts after ``down_ms``.
    network: switch between a reliable network, a lossy one (drops, duplicates) and one
        with long reordering of answers. kill_agent: one agent dies for good (it is not
        restarted at the heal: its runs must be abandoned, and fires go elsewhere).
    quick_restarts: agents come back within ``quick_ms``, before the failure detector
        notices (see ``FIX_RESTART_RECONCILE``).
    """

    partitions: bool = True
    crashes: bool = True
    network: bool = True
    kill_agent: bool = False
    fault_ms: float = 16_000.0
    heal_ms: float = 14_000.0
    settle_ms: float = 6_000.0
    step_ms: tuple[float, float] = (700.0, 2500.0)
    down_ms: tuple[float, float] = (3_500.0, 7_000.0)
    quick_restarts: bool = False
    quick_ms: tuple[float, float] = (100.0, 1500.0)


@attrs.frozen
class ScenarioResult:
    """What a finished scenario did: its trace hash and counters (for determinism tests
    and for seeing that the faults happened)."""

    trace_hash: str
    counts: dict[str, int]


class ClusterSimulation(RaftSimulation):
    """See the module docstring. Servers are Raft nodes ``s1..``; agents ``a1..`` are
    runner-only endpoints of the same simulated network."""

    def __init__(self, *, seed: int, cluster: ClusterConfig | None = None) -> None:
        self.cluster = cluster or ClusterConfig()
        cfg = self.cluster
        self.crng = random.Random(f"trickle.clustersim/{seed}")  # the application's draws
        self.server_ids = [f"s{i}" for i in range(1, cfg.servers + 1)]
        self.agent_ids = [f"a{i}" for i in range(1, cfg.agents + 1)]
        self.all_nodes = [*self.server_ids, *self.agent_ids]
        self.tags = {n: {"role": "server", "server": "true"} for n in self.server_ids}
        self.tags.update({n: {"role": "agent"} for n in self.agent_ids})
        self.skew_us = {n: skew_of(self.crng, cfg.max_skew_ms) for n in self.all_nodes}
        self.specs = {j.name: j for j in cfg.jobs}
        self.controls = {
            n: ServerControl(self, n, self.skew_us[n], random.Random(self.crng.getrandbits(64)))
            for n in self.server_ids
        }
        self.runners = {
            n: SimRunner(n, self, random.Random(self.crng.getrandbits(64)), cfg.runner_faults)
            for n in self.all_nodes
        }
        for n, control in self.controls.items():
            control.runner = self.runners[n]
        self._decoded: dict[bytes, tuple[int, list[c.Command]]] = {}
        self.ledger = Ledger(self.decoded)
        self.quiescent = False
        self.starts: dict[tuple[str, datetime, str], int] = {}
        self.start_times: dict[ExecutionId, float] = {}
        self.counts: dict[str, int] = {}
        self.declared: list[tuple[float, str, str, list[ExecutionId]]] = []
        self.ghosts: list[str] = []
        self.killed: set[str] = set()
        self.heal_at: float | None = None
        self._qid = 0
        self._app_incarnation: dict[str, int] = {}
        super().__init__(
            self.server_ids,
            seed=seed,
            config=cfg.raft,
            app_factory=lambda nid: ServerApp(self.controls[str(nid)]),
        )

    # --- the host interface of servers and runners ---------------------------------------
    def wall(self, node: str) -> datetime:
        """``node``'s wall clock (skewed), to the microsecond."""
        return EPOCH + _US * (math.floor(self.now * 1000) + self.skew_us.get(node, 0))

    def true_wall(self) -> datetime:
        return EPOCH + _US * math.floor(self.now * 1000)

    def sim_time_of(self, node: str, at: datetime) -> float:
        """The virtual time (ms) at which ``node``'s wall clock reads ``at``."""
        return ((at - EPOCH) // _US - self.skew_us.get(node, 0) + 0.5) / 1000

    def decoded(self, data: bytes) -> tuple[int, list[c.Command]]:
        """``replog.decode_entry(data)``, decoded once for every server (the commands are
        frozen values; the state machine never changes them)."""
        found = self._decoded.get(data)
        if found is None:
            found = self._decoded[data] = decode_entry(data)
        return found

    def schedule(self, delay_ms: float, fn: Callable[..., None], *args: Any) -> None:
        self._schedule(delay_ms, fn, *args)

    def trace(self, text: str) -> None:
        self._trace(text)

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def next_qid(self) -> int:
        self._qid += 1
        return self._qid

    def servers(self) -> Sequence[str]:
        return self.server_ids

    def raft_leader(self, node: str) -> str | None:
        sn = self.nodes.get(NodeId(node))
        if sn is None or not sn.up or sn.leader is None:
            return None
        return str(sn.leader)

    def run_ms(self, node: str, job: Job) -> float:
        spec = self.specs.get(job.name)
        lo, hi = spec.run_ms if spec is not None else (50.0, 500.0)
        return self.crng.uniform(lo, hi)

    def leader_fsm(self) -> StateMachine:
        """The state machine of the latest leader (fail if there is none)."""
        leader = self.check_one_leader()
        app: ServerApp = self.node(leader).app
        return app.fsm

    def node_up(self, node: str) -> bool:
        sn = self.nodes.get(NodeId(node))
        if sn is not None:
            return sn.up
        return self.runners[node].up

    def reachable(self, src: str, dst: str) -> bool:
        """Whether a connection from ``src`` to ``dst`` can be made now."""
        return self.node_up(dst) and self.net.link_ok(src, dst)

    def poke(self, node: str) -> None:
        """Let a server's Raft take the Ready a proposal made."""
        sn = self.nodes[NodeId(node)]
        self._pump(sn)
        self._check(sn)

    def send(self, src: str, dst: str, msg: Any) -> None:
        """One application message through the simulated network (drops, duplicates,
        delays, partitions); a node talking to itself skips the network."""
        self.count("app_messages")
        if src == dst:
            self._schedule(0.0, self._deliver_app, src, dst, msg)
            return
        if not self.net.link_ok(src, dst):
            self.count("app_dropped")
            return
        delays = self.net.plan(isinstance(msg, RESPONSE_TYPES))
        if not delays:
            self.count("app_dropped")
        for d in delays:
            self._schedule(d, self._deliver_app, src, dst, msg)

    def _deliver_app(self, src: str, dst: str, msg: Any) -> None:
        if not self.node_up(dst) or (src != dst and not self.net.link_ok(src, dst)):
            self.count("app_dropped")
            return
        self._trace(f"{src}->{dst} {msg.describe()}")
        if dst in self.controls and not isinstance(msg, RUNNER_BOUND):
            self.controls[dst].receive(src, msg)
        else:
            if dst in self.controls:
                self.controls[dst].heard(src)
            self.runners[dst].receive(src, msg)

    # --- observations and live checks ----------------------------------------------------
    def on_run_start(self, node: str, dispatch: Dispatch, *, seen_term: int) -> None:
        ex = dispatch.execution
        self.count("runs_started")
        self._trace(f"{node} starts {ex.id} ({ex.job_name} @{_iso(ex.scheduled_at)})")
        if ex.scheduled_at is not None:
            key = (ex.job_name, ex.scheduled_at, node)
            n = self.starts[key] = self.starts.get(key, 0) + 1
            if n > 1:
                self._violation(
                    f"at most one dispatch per (job, scheduled time, node): {ex.job_name} "
                    f"@{_iso(ex.scheduled_at)} started {n} times on {node} (now {ex.id})"
                )
        self.start_times[ex.id] = self.now
        if dispatch.term < seen_term:
            self._violation(
                f"fencing: {node} starts {ex.id} from term {dispatch.term} after seeing "
                f"term {seen_term}"
            )
        self.ledger.advance(self.oracle.committed)
        if ex.id in self.ledger.finished:
            # a run the history already calls failed (abandoned, or given up on) starts
            # all the same: counted, and an invariant only with ``strict_ghosts``
            self.count("ghost_runs")
            self.ghosts.append(
                f"{node} starts {ex.id} ({ex.job_name}) at {self.now:.0f} ms, "
                f"recorded {self.ledger.finished[ex.id][1]!r}"
            )
            if self.cluster.strict_ghosts:
                self._violation(
                    f"fencing: {node} starts {ex.id} ({ex.job_name}) whose record is already "
                    f"finished: {self.ledger.finished[ex.id][1]!r}"
                )

    def on_declared_failed(self, leader: str, node: str, runs: list[ExecutionId]) -> None:
        self.count("declared_failed")
        self.declared.append((self.now, leader, node, runs))

    # --- raftsim hooks: roles, crashes, restarts -----------------------------------------
    def _observe(
        self, node: SimNode, role: Role, term: int, vote: NodeId | None, leader: NodeId | None
    ) -> None:
        super()._observe(node, role, term, vote, leader)
        control = self.controls[str(node.id)]
        leading = role is Role.LEADER
        if leading != bool(control.lead_term) or (leading and control.lead_term != term):
            control.role_changed(leading, term)

    def crash(self, id: str) -> None:
        """Crash a server (unsynced writes, state machine and runs lost) or an agent
        (runs and undelivered results lost)."""
        if id in self.controls:
            node = self.node(id)
            if not node.up:
                return
            super().crash(id)
            self.controls[id].crashed()
            if self.cluster.amnesia:
                node.store = SimStore(node.id, self.oracle)
        elif not self.runners[id].up:
            return
        else:
            self._trace(f"{id} crash")
            self.stats.crashes += 1
        self.runners[id].crash()
        self.count("crashes")

    def restart(self, id: str) -> None:
        if id in self.controls:
            if self.node(id).up:
                return
            super().restart(id)
            self.controls[id].restarted()
        elif self.runners[id].up:
            return
        else:
            self._trace(f"{id} restart")
        self.runners[id].restart()

    # --- the scenario --------------------------------------------------------------------
    def setup(self, timeout_ms: float = 5000.0) -> str:
        """Elect a leader and store the jobs; returns the leader."""
        leader = self.check_one_leader(timeout_ms)
        now = self.wall(leader)
        puts = [c.PutJob(job=spec.job(), now=now) for spec in self.cluster.jobs]
        self.one(encode_entry(puts), expected_servers=len(self.server_ids))
        return leader

    def run_nemesis(self, nemesis: NemesisConfig) -> None:
        """``fault_ms`` of seeded faults, then heal everything and run ``heal_ms`` more."""
        rng = random.Random(self.crng.getrandbits(64))
        if nemesis.kill_agent and self.agent_ids:
            victim = rng.choice(self.agent_ids)
            self.at(rng.uniform(0, nemesis.fault_ms / 2), lambda: self._kill(victim))
        end = self.now + nemesis.fault_ms
        kinds = [
            k
            for k, on in (
                ("partition", nemesis.partitions),
                ("crash", nemesis.crashes),
                ("network", nemesis.network),
            )
            if on
        ]
        while kinds and self.now < end:
            self.run_for(rng.uniform(*nemesis.step_ms))
            if self.now >= end:
                break
            self._act(rng.choice(kinds), rng, nemesis)
        self.run_for(max(0.0, end - self.now))
        self.heal_all()
        self.run_for(nemesis.heal_ms)

    def _act(self, kind: str, rng: random.Random, nemesis: NemesisConfig) -> None:
        if kind == "partition":
            if rng.random() < 0.3:
                self.heal()
                return
            nodes = [n for n in self.all_nodes if n not in self.killed]
            leaders = [str(n) for _, n in self.leaders()]
            if leaders and rng.random() < 0.5:
                side = [leaders[-1], *[a for a in self.agent_ids if rng.random() < 0.3]]
            else:
                side = [n for n in nodes if rng.random() < 0.5]
            other = [n for n in nodes if n not in side]
            self.partition(side, other)
            self.count("partitions")
        elif kind == "crash":
            up = [n for n in self.all_nodes if self.node_up(n) and n not in self.killed]
            if not up:
                return
            victim = rng.choice(up)
            self.crash(victim)
            quick = nemesis.quick_restarts and victim in self.agent_ids
            down = rng.uniform(*(nemesis.quick_ms if quick else nemesis.down_ms))
            self.at(down, lambda: None if victim in self.killed else self.restart(victim))
        else:
            choice = rng.randrange(3)
            network = (
                NetworkConfig.reliable(),
                NetworkConfig.unreliable(),
                NetworkConfig.unreliable_long_reordering(),
            )[choice]
            self.set_network(network)
            self.count("network_changes")

    def kill(self, node: str) -> None:
        """Crash ``node`` for good: ``heal_all`` does not restart it."""
        self._kill(node)

    def _kill(self, node: str) -> None:
        self.killed.add(node)
        self.crash(node)
        self._trace(f"{node} killed for good")

    def heal_all(self) -> None:
        """End every fault: partitions, cuts, a faulty network; crashed nodes restart
        (except one killed for good)."""
        self.heal()
        for n in self.all_nodes:
            self.net.connect(n)
        self.set_network(NetworkConfig.reliable())
        for n in self.all_nodes:
            if n not in self.killed:
                self.restart(n)
        self.heal_at = self.now
        self._trace("heal all")

    def finish(
        self, *, drain_ms: float = 7000.0, fresh_ms: float = 1500.0, settle_ms: float = 6000.0
    ) -> None:
        """Check the running set against the runners, stop deciding new fires, let the
        runs drain, then check every invariant on the whole history."""
        self.check_running_is_real(fresh_ms)
        stop = self.true_wall()
        self.quiescent = True
        drained_by = self.now + drain_ms  # (sooner once nothing runs or waits)
        while self.now < drained_by and (
            self.ledger_running()
            or any(r.pending or r.active for r in self.runners.values())
            or any(c.sending for c in self.controls.values())
        ):
            self.run_for(250.0)
        # runs of a dead node are failed once no dispatch of theirs can arrive (up to
        # DISPATCH_EXPIRY + MAX_CLOCK_SKEW after a new leader took over): wait that out
        # and a dispatch whose answer was lost is recorded failed once it expired
        deadline = self.now + 20_000.0
        while (
            self.now < deadline
            and self.ledger_running()
            and (
                any(c.sending for c in self.controls.values())
                or any(self._excused_until(ex) is not None for ex in self.ledger_running())
            )
        ):
            self.run_for(500.0)
        self.run_for(1000.0)
        self.check_fires(until=stop - timedelta(seconds=3), settle_ms=settle_ms)
        self.check_drained()
        self.check_servers_agree()

    # --- the invariants ------------------------------------------------------------------
    def check_running_is_real(self, fresh_ms: float) -> None:
        """Invariant 4 while fires go on: every run the committed state holds running is
        on a live node that runs it (or holds its result), unless committed moments ago."""
        self.ledger.advance(self.oracle.committed)
        now = self.true_wall()
        for ex in sorted(self.ledger.fsm.running.values(), key=lambda e: e.id):
            if (now - ex.started_at) < timedelta(milliseconds=fresh_ms + 1000):
                continue  # its dispatch may be on the way (started_at: a skewed clock)
            node = ex.node_name
            runner = self.runners.get(node)
            if node in self.killed or runner is None or not self.node_up(node):
                if self._excused_until(ex) is not None:
                    continue
                why = "which is dead"
            elif ex.id not in runner.known():
                if any(ex.id in c.sending for c in self.controls.values()):
                    continue  # its dispatch is still being handed over (or waits to expire)
                why = "which does not run it"
            else:
                continue
            self._violation(
                f"execution {ex.id} ({ex.job_name}) stays running on {node}, {why} "
                f"(declared failed: {self._declarations_of(node)})"
            )

    def ledger_running(self) -> list[Execution]:
        """The committed state's running executions, by id."""
        self.ledger.advance(self.oracle.committed)
        return sorted(self.ledger.fsm.running.values(), key=lambda e: e.id)

    def _excused_until(self, ex: Execution) -> float | None:
        """The virtual time until which a run on a dead node may rightly stay running:
        the current leader has not been leading ``fail_after_ms`` yet (its detector has
        not had the time to declare the node failed), or has declared it and waits for
        the run's dispatch to settle. None: not excused."""
        leaders = [self.controls[str(n)] for _, n in self.leaders()]
        if not leaders or not leaders[-1].ready or leaders[-1].lead_since is None:
            return self.now + 1.0  # no leader yet: nobody to record anything
        control = leaders[-1]
        assert control.lead_since is not None
        since = self.sim_time_of(control.id, control.lead_since)
        margin = self.cluster.fail_after_ms + 2 * self.cluster.ping_ms
        detect = since + margin
        if ex.node_name not in control.failed:
            return detect if self.now < detect else None
        # ``_fail_runs_of`` fails a node's runs together, at the latest settling time of
        # their dispatches when it declared the node failed
        due = control.abandon_due.get(ex.node_name)
        if due is None:
            return None
        until = due + 1000.0  # + the abandon's commit
        return until if self.now < until else None

    def _declarations_of(self, node: str) -> str:
        found = [f"{t:.0f} ms by {leader}" for t, leader, n, _ in self.declared if n == node]
        return ", ".join(found) or "never"

    def check_drained(self) -> None:
        """Invariant 4 at the end: no scheduler decides, every run ended, every result was
        committed or the run abandoned: nothing is running."""
        self.ledger.advance(self.oracle.committed)
        running = sorted(self.ledger.fsm.running.values(), key=lambda e: e.id)
        if running:
            ex = running[0]
            self._violation(
                f"{len(running)} executions still running after the drain, e.g. {ex.id} "
                f"({ex.job_name}) on {ex.node_name} (up: {self.node_up(ex.node_name)}, "
                f"declared failed: {self._declarations_of(ex.node_name)})"
            )

    def check_servers_agree(self) -> None:
        """Invariant 3 for the application: every server that applied as far as the
        ledger holds the same jobs and running set."""
        ledger = self.ledger
        ledger.advance(self.oracle.committed)
        for sid in self.server_ids:
            node = self.node(sid)
            app: ServerApp = node.app
            if not node.up or app.applied != ledger.index:
                continue
            if app.fsm.jobs != ledger.fsm.jobs or set(app.fsm.running) != set(ledger.fsm.running):
                self._violation(f"server {sid}'s state differs from the committed history")

    def check_fires(self, *, until: datetime, settle_ms: float) -> None:
        """Invariant 2 (and 1 once more) on the committed history, for every scheduled
        instant up to ``until``."""
        ledger = self.ledger
        ledger.advance(self.oracle.committed)
        max_skew = timedelta(milliseconds=2 * self.cluster.max_skew_ms)
        healed = (
            None
            if self.heal_at is None
            else EPOCH + timedelta(milliseconds=self.heal_at + settle_ms)
        )
        covered: dict[tuple[str, datetime], list[str]] = {}
        for m in ledger.missed:
            rec = m.record
            reason = self._missed_violation(m.record, m.index, max_skew)
            if reason:
                self._violation(f"fires of {rec.job_name} recorded missed wrongly: {reason}")
            for at in ledger.missed_fires(rec):
                covered.setdefault((rec.job_name, at), []).append(rec.reason)
        for spec in self.cluster.jobs:
            name = spec.name
            for at in ledger.fires_of(name, until):
                key = (name, at)
                groups = ledger.groups.get(key, set())
                skipped = ledger.skipped.get(key, [])
                missed = covered.get(key, [])
                fates = len(groups) + len(skipped) + len(missed)
                where = f"fire {name} @{_iso(at)}"
                if fates == 0:
                    self._violation(f"{where} was lost: never run, skipped nor missed")
                if fates > 1:
                    self._violation(
                        f"{where} has {fates} fates: groups {sorted(groups)}, skipped "
                        f"{skipped}, missed {missed}"
                    )
                for reason in skipped:
                    if not _allowed_skip(reason):
                        self._violation(f"{where} skipped for a reason the rules deny: {reason}")
                if healed is None or at < healed:
                    continue
                if skipped and spec.forbid and skipped[0].startswith(("forbid", "refused")):
                    continue
                if not groups:
                    self._violation(
                        f"{where} fell after the heal but did not run: "
                        f"skipped {skipped}, missed {missed}"
                    )
                self._check_group_ran(where, key)

    def _check_group_ran(self, where: str, key: tuple[str, datetime]) -> None:
        runs = [(i, r) for i, r in self.ledger.runs.items() if (r.job_name, r.scheduled_at) == key]
        for ex_id, record in runs:
            started = self.starts.get((key[0], key[1], record.node), 0)
            outcome = self.ledger.finished.get(ex_id)
            if started != 1 or outcome is None or not outcome[0]:
                self._violation(
                    f"{where} fell after the heal: its run {ex_id} on {record.node} started "
                    f"{started} times, finished {outcome}"
                )

    def _missed_violation(self, rec: c.FiresMissed, index: int, max_skew: timedelta) -> str:
        """Why a missed record breaks the catch-up rules ("" if it does not)."""
        ledger = self.ledger
        job = ledger.fsm.jobs.get(rec.job_name)
        window = timedelta(seconds=job.catchup_window if job is not None else 0)
        if "outside the catch-up window" in rec.reason:
            if rec.recorded_at - rec.last + max_skew < window:
                return f"{rec.reason}, yet its last fire was {rec.recorded_at - rec.last} old"
            return ""
        if "one catch-up run covers the latest at " in rec.reason:
            # the latest fire is decided with catchup=True, and so has a fate of its own
            # (run or skipped; or missed by the next leader, when this one was lost
            # before deciding it: checked as every fire's fate)
            latest = datetime.fromisoformat(rec.reason.rsplit(" ", 1)[1])
            key = (rec.job_name, latest)
            if latest <= rec.last:
                return f"{rec.reason}, yet the record covers that fire"
            if (
                not ledger.groups.get(key)
                and key not in ledger.skipped
                and not any(
                    m.record.job_name == rec.job_name and m.record.first <= latest <= m.record.last
                    for m in ledger.missed
                )
            ):
                return f"{rec.reason}, yet that fire has no fate"
            return ""
        if rec.reason.startswith("the scheduler fell behind") and "was skipped" in rec.reason:
            at = datetime.fromisoformat(rec.reason.split("the fire at ", 1)[1].split(" ", 1)[0])
            if not any(_allowed_skip(r) for r in ledger.skipped.get((rec.job_name, at), [])):
                return f"{rec.reason}, yet that fire was not skipped"
            return ""
        if rec.reason.startswith("the scheduler fell behind"):
            if not any(
                r.job_name == rec.job_name and r.index == index for r in ledger.runs.values()
            ):
                return f"{rec.reason}, yet no run of the job was committed with it"
            return ""
        return f"unknown reason {rec.reason!r}"

    def result(self) -> ScenarioResult:
        counts = dict(self.counts)
        counts["leaders"] = len(self.oracle.leaders)
        counts["fires_run"] = len({(r.job_name, r.scheduled_at) for r in self.ledger.runs.values()})
        counts["fires_skipped"] = len(self.ledger.skipped)
        counts["fire_records_missed"] = len(self.ledger.missed)
        counts["runs_abandoned"] = sum(
            1 for ok, out in self.ledger.finished.values() if not ok and "trickle:" in out
        )
        counts["runs_failed_dispatch"] = sum(
            1 for ok, out in self.ledger.finished.values() if not ok and "trickle:" not in out
        )
        return ScenarioResult(trace_hash=self.trace_hash(), counts=counts)


def _allowed_skip(reason: str) -> bool:
    return reason.startswith(
        ("no target nodes", "forbid", "concurrency limit", "cluster at capacity", "refused: ")
    )


def _iso(at: datetime | None) -> str:
    return at.isoformat(timespec="milliseconds") if at is not None else "-"


def run_scenario(
    seed: int,
    *,
    cluster: ClusterConfig | None = None,
    nemesis: NemesisConfig | None = None,
) -> ScenarioResult:
    """Set up a cluster, run the nemesis, heal, finish with every check; returns the trace
    hash and counters. Raises ``InvariantViolation`` / ``SimulationFailure``."""
    nemesis = nemesis or NemesisConfig()
    sim = ClusterSimulation(seed=seed, cluster=cluster)
    sim.setup()
    sim.run_nemesis(nemesis)
    sim.finish(settle_ms=nemesis.settle_ms)
    return sim.result()
