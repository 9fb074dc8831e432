"""The whole-cluster simulation's servers: the engine's state machine on Raft, and the leader.

``ServerApp`` is a server's replicated application (a raftsim ``SimApp``): every committed
entry is decoded with ``replog.decode_entry`` and applied to the engine's real
``StateMachine`` under replog's fence rule (an entry whose fencing term is not its own
term applies no command). ``ServerControl`` is what the Engine does around it:

- while leading in term T, once an entry of term T is applied (``_lead``'s read barrier:
  everything of earlier terms is applied), the ``Scheduler`` core: ``catch_up``, its
  missed records proposed, its late fires decided (``catchup=True``); then at every
  wake-up ``due``/``decide``, each decision proposed as one entry fenced by T, and each
  ``RunStarted`` applied without error dispatched to its node (``_fire``);
- dispatch as ``Dispatcher.send`` and ``_send_dispatch``: each dispatch expires 10 s
  after it is sent (by the leader's clock; a runner refuses it later); it is re-sent
  (with backoff) only while the node cannot be reached; when the answer is lost the node
  is asked what it runs, and if it does not list the run, asked again once the dispatch
  has expired (plus 1 s of skew); a run refused or not handed over is recorded failed;
  the dispatches of a decision applied after its leader lost the lead still go out;
- results and records from runners proposed and answered once committed;
- a failure detector standing in for gossip: a node the leader has not heard from for
  ``fail_after_ms`` is declared failed and is no target until heard again; its running
  executions are abandoned ("node X failed during execution", ``_fail_runs_of``) once no
  dispatch of theirs can still arrive (``_dispatch_settled_at``), unless it is back;
- a new leader asks each node holding inherited runs what it runs, fencing older leaders
  off it, and abandons the runs the node does not know (``_reconcile_remote_runs``);
- a restarted server abandons the runs its previous life held (``_abandon_orphans``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs

from trickle.engine import commands as c
from trickle.engine.fsm import Applied, StateMachine
from trickle.engine.model import Execution, ExecutionId, Job, Member
from trickle.engine.replog import encode_entry
from trickle.engine.scheduler import Decision, Scheduler
from trickle.errors import NotLeader, ProposalDropped
from trickle.raft.messages import Entry, EntryKind
from trickle.testing._clustersim_runner import (
    Dispatch,
    DispatchAnswer,
    Ping,
    Pong,
    Query,
    Report,
    ReportAnswer,
    RunnerState,
    SimRunner,
)
from trickle.testing._raftsim_kv import GENESIS_CHAIN, chain_next

DISPATCH_EXPIRY = timedelta(seconds=10)  # as trickle.engine.dispatch.DISPATCH_EXPIRY
MAX_CLOCK_SKEW = timedelta(seconds=1)  # as trickle.engine.dispatch.MAX_CLOCK_SKEW

if TYPE_CHECKING:
    from trickle.testing.clustersim import ClusterSimulation


class ServerApp:
    """One server's replicated state (see the module docstring). ``results`` of an entry
    are None when its fence refused it."""

    def __init__(self, control: ServerControl) -> None:
        self.control = control
        self.fsm = StateMachine()
        self.applied = 0
        self.chain = GENESIS_CHAIN
        self.last_term = 0

    def apply(self, entry: Entry) -> None:
        self.applied = entry.index
        self.last_term = entry.term
        self.chain = chain_next(self.chain, entry)
        commands: list[c.Command] = []
        fence = 0
        if entry.kind is EntryKind.NORMAL and entry.data:
            fence, commands = self.control.sim.decoded(entry.data)
        results: list[Applied] | None
        if fence and fence != entry.term:
            self.fsm.apply_entry(entry.index, [])
            results = None
        else:
            results = self.fsm.apply_entry(entry.index, commands)
        self.control.on_applied(self, entry, commands, results)


@attrs.define
class _Proposal:
    term: int
    kind: str  # decision | catchup | report | abandon
    payload: Any = None
    then_loop: bool = False  # a catch-up step: go on leading once it is applied
    scheduler: Scheduler | None = None  # the leadership that decided it


@attrs.define
class _Sending:
    job: Job
    execution: Execution
    term: int
    expires_at: datetime
    attempt: int = 1
    qid: int = 0
    confirmed_once: bool = False  # the first confirmation failed: waiting out the expiry


@attrs.frozen(kw_only=True)
class LeaderFaults:
    """Planted bugs for the checker's own tests. ``drop_fire``: each round silently drops
    the due fires of this job. ``no_abandon``: a failed node's runs are not abandoned.
    ``no_reconcile``: a new leader does not ask runners what they run.
    ``concurrent_decisions``: the loop decides again before its last decision is applied
    (the engine awaits each launch; the Scheduler re-plans a fire whose intent is in
    flight when a stale ``JobSaved`` of the job is applied meanwhile)."""

    drop_fire: str = ""
    no_abandon: bool = False
    no_reconcile: bool = False
    concurrent_decisions: bool = False


class ServerControl:
    """The engine around one server's state machine (see the module docstring)."""

    def __init__(self, sim: ClusterSimulation, node: str, skew_us: int, rng: random.Random) -> None:
        self.sim = sim
        self.id = node
        self.skew_us = skew_us
        self.rng = rng
        self.runner: SimRunner  # set by the simulation
        self.faults: LeaderFaults = sim.cluster.leader_faults
        self._reset()
        self._forget_sends()
        self.orphans_due = False
        self.boot_commit = 0
        self.incarnation = 0

    def _reset(self) -> None:
        self.lead_term = 0
        self.ready = False
        self.looping = False
        self.deciding = False  # a decision is proposed, not yet applied
        self.scheduler: Scheduler | None = None
        self.wake_gen = 0
        self.wake_at = float("inf")
        self.lead_since: datetime | None = None
        self.last_heard: dict[str, float] = {}
        self.failed: set[str] = set()
        self.lives: dict[str, int] = {}  # node -> the incarnation its pongs carry
        self.abandon_due: dict[str, float] = {}  # node -> when its runs are to be failed
        self.ping_seq = 0
        self.decisions = 0

    def _forget_sends(self) -> None:
        # Dispatches and their confirmations are not tied to leadership: as the engine's
        # ``_send_dispatch`` tasks, they go on after this server stops leading (a run
        # that cannot be handed over is then recorded failed all the same); a crash ends
        # them.
        self.sending: dict[ExecutionId, _Sending] = {}
        self.queries: dict[int, tuple[str, Any]] = {}
        self.proposals: dict[int, _Proposal] = {}  # by log index

    @property
    def app(self) -> ServerApp:
        app: ServerApp = self.sim.nodes[self.id].app  # type: ignore[index]
        return app

    @property
    def fsm(self) -> StateMachine:
        return self.app.fsm

    def leading(self, term: int | None = None) -> bool:
        node = self.sim.nodes[self.id]  # type: ignore[index]
        ok = self.lead_term != 0 and node.up and node.is_leader and node.term == self.lead_term
        return ok and (term is None or term == self.lead_term)

    # --- life ----------------------------------------------------------------------------
    def crashed(self) -> None:
        self._reset()
        self._forget_sends()
        self.incarnation += 1
        self.orphans_due = False

    def restarted(self) -> None:
        """After a restart: once the state is replayed up to the commit index the disk
        held, abandon the runs this node held before (``_abandon_orphans``)."""
        self.boot_commit = self.sim.nodes[self.id].store.hard.commit  # type: ignore[index]
        self.orphans_due = True
        self.sim.schedule(0.0, self._maybe_abandon_orphans, self.incarnation)

    def _maybe_abandon_orphans(self, incarnation: int) -> None:
        if incarnation != self.incarnation or not self.orphans_due:
            return
        if self.app.applied < self.boot_commit:
            return  # on_applied calls again
        self.orphans_due = False
        orphans = tuple(
            (ex.job_name, ex.id)
            for ex in self.fsm.running.values()
            if ex.node_name == self.id and ex.id not in self.runner.active
        )
        if orphans:
            self.sim.trace(f"{self.id} orphans {len(orphans)}")
            self.runner.submit(
                f"orphans/{self.id}/{self.incarnation}",
                c.AbandonExecutions(
                    execution_ids=orphans,
                    finished_at=self.sim.wall(self.id),
                    reason=f"node {self.id} stopped while the execution was running",
                ),
            )

    # --- leadership ----------------------------------------------------------------------
    def role_changed(self, leader: bool, term: int) -> None:
        if leader and self.lead_term != term:
            self._reset()
            self.lead_term = term
            self.sim.trace(f"{self.id} leads term {term}")
            if self.app.last_term == term:
                self.ready = True
                self.sim.schedule(0.0, self._start_leading, term)
        elif not leader and self.lead_term:
            self.sim.trace(f"{self.id} no longer leads (term {self.lead_term})")
            self._reset()

    def _start_leading(self, term: int) -> None:
        """``_lead`` after its read barrier: reconcile, catch up, then schedule."""
        if not self.leading(term):
            return
        sim = self.sim
        self.scheduler = Scheduler(
            self.fsm, node_name=self.id, rng=random.Random(self.rng.getrandbits(64))
        )
        self.lead_since = self.wall()
        self.last_heard = {n: sim.now for n in sim.all_nodes if n != self.id}
        self.sim.schedule(0.0, self._ping_round, term)
        if not self.faults.no_reconcile:
            self._reconcile(term)
        catch = self.scheduler.catch_up(self.wall())
        commands = catch.commands
        if commands:
            self._propose(commands, kind="catchup", payload=catch.fires)
        else:
            self._catch_up_fires(catch.fires)

    def _catch_up_fires(self, fires: list[tuple[str, datetime]]) -> None:
        assert self.scheduler is not None
        if fires:
            now = self.wall()
            decision = self.scheduler.decide(
                fires, now, self._members(), catchup=True, unreachable=self._unreachable()
            )
            if decision.commands:
                if not self._propose(
                    decision.commands, kind="decision", payload=decision, fenced=True
                ):
                    self.scheduler.settle(decision.runs)
                    return
                self.proposals[max(self.proposals)].then_loop = True
                return
        self._start_loop()

    def _start_loop(self) -> None:
        self.looping = True
        self._wake(self.wake_gen)

    def _members(self) -> list[Member]:
        sim = self.sim
        return [
            Member(name=n, addr=n, port=0, tags=sim.tags[n], status="alive")
            for n in sim.all_nodes
            if n not in self.failed
        ]

    def _unreachable(self) -> frozenset[str]:
        """Members this server cannot connect to now: "any N" takes them last, as the
        Engine does with the nodes its transport failed to dial (``Engine._unreachable``)."""
        sim = self.sim
        return frozenset(
            n
            for n in sim.all_nodes
            if n != self.id and n not in self.failed and not sim.reachable(self.id, n)
        )

    def wall(self) -> datetime:
        return self.sim.wall(self.id)

    # --- the schedule loop ---------------------------------------------------------------
    def _wake(self, gen: int) -> None:
        if gen != self.wake_gen or not self.looping or self.deciding or not self.leading():
            return
        self.wake_at = float("inf")
        sched = self.scheduler
        assert sched is not None
        if self.sim.quiescent:
            return  # the scenario stopped deciding fires
        now = self.wall()
        due = sched.due(now)
        if self.faults.drop_fire:
            due = [(n, t) for n, t in due if n != self.faults.drop_fire]
        if due:
            self.sim.trace(
                f"{self.id} due "
                + " ".join(f"{n}@{t.time().isoformat('milliseconds')}" for n, t in due)
            )
            decision = sched.decide(due, now, self._members(), unreachable=self._unreachable())
            self.decisions += 1
            if decision.commands:
                if self._propose(decision.commands, kind="decision", payload=decision, fenced=True):
                    if not self.faults.concurrent_decisions:
                        self.deciding = True  # the loop awaits its launch (``_fire``)
                        return
                    self._rewake()
                    return
                sched.settle(decision.runs)
        self._rewake()

    def _rewake(self) -> None:
        sched = self.scheduler
        if sched is None or not self.looping or self.deciding or self.sim.quiescent:
            return
        at = sched.next_wakeup()
        if at is None:
            return
        when = self.sim.sim_time_of(self.id, at)
        if when >= self.wake_at:
            return
        self.wake_gen += 1
        self.wake_at = when
        self.sim.schedule(max(0.0, when - self.sim.now), self._wake, self.wake_gen)

    # --- proposals -----------------------------------------------------------------------
    def _propose(
        self, commands: Sequence[c.Command], *, kind: str, payload: Any = None, fenced: bool = False
    ) -> bool:
        node = self.sim.nodes[self.id]  # type: ignore[index]
        if node.raft is None or not self.lead_term:
            return False
        data = encode_entry(commands, term=self.lead_term if fenced else 0)
        try:
            term, index = node.raft.propose(data)
        except (NotLeader, ProposalDropped):
            return False
        self.proposals[index] = _Proposal(
            term=term, kind=kind, payload=payload, scheduler=self.scheduler
        )
        self.sim.trace(f"{self.id} propose {kind} {len(commands)} at {index}")
        self.sim.poke(self.id)
        return True

    def on_applied(
        self,
        app: ServerApp,
        entry: Entry,
        commands: list[c.Command],
        results: list[Applied] | None,
    ) -> None:
        """Called by ``ServerApp.apply`` for every applied entry (also on replay)."""
        if app is not self.sim.nodes[self.id].app:  # type: ignore[index]
            return  # an application being built before it is installed (never happens)
        if self.lead_term and entry.term == self.lead_term and not self.ready:
            self.ready = True
            self.sim.schedule(0.0, self._start_leading, self.lead_term)
        sched = self.scheduler
        if sched is not None and results:
            replanned = False
            for applied in results:
                for effect in applied.effects:
                    if isinstance(effect, c.JobSaved):
                        sched.plan(effect.job)
                        replanned = True
                    elif isinstance(effect, c.JobRemoved):
                        sched.forget(effect.name)
            if replanned:
                self._rewake()
        proposal = self.proposals.pop(entry.index, None)
        if proposal is not None:
            if proposal.term == entry.term:
                self.sim.schedule(0.0, self._committed, proposal, commands, results)
            elif proposal.kind == "decision" and proposal.scheduler is not None:
                proposal.scheduler.settle(proposal.payload.runs)  # lost: never applied
        if self.orphans_due and app.applied >= self.boot_commit:
            self.sim.schedule(0.0, self._maybe_abandon_orphans, self.incarnation)

    def _committed(
        self, proposal: _Proposal, commands: list[c.Command], results: list[Applied] | None
    ) -> None:
        """An entry this server proposed was applied in the term it was proposed in. As
        in the engine, the wait for it outlives leadership: a decision's runs are
        dispatched and a report is answered even by a server that no longer leads (its
        dispatches then carry its current term, 0 if none); a catch-up step goes on only
        while it leads."""
        if proposal.kind == "decision":
            decision: Decision = proposal.payload
            if proposal.scheduler is not None:
                proposal.scheduler.settle(decision.runs)
            if results is not None:
                runs = iter(decision.runs)
                for command, applied in zip(commands, results, strict=True):
                    if isinstance(command, c.RunStarted):
                        job, ex = next(runs)
                        if applied.error is None:
                            self._dispatch(job, ex)
            if not self.leading(proposal.term):
                return
            if proposal.then_loop:
                self._start_loop()
            elif self.deciding:
                self.deciding = False
                self.wake_at = float("inf")
                self._rewake()
        elif proposal.kind == "catchup":
            if self.leading(proposal.term):
                self._catch_up_fires(proposal.payload)
        elif proposal.kind == "report":
            src, keys = proposal.payload
            self.sim.send(self.id, src, ReportAnswer(keys, self.id))

    # --- dispatch ------------------------------------------------------------------------
    def _dispatch(self, job: Job, ex: Execution) -> None:
        if ex.node_name == self.id:  # ``Runner.submit``: no fence on itself
            self.runner.start_local(
                Dispatch(job=job, execution=ex, term=self.lead_term, leader=self.id)
            )
            return
        expires = self.wall() + DISPATCH_EXPIRY
        self.sending[ex.id] = _Sending(
            job=job, execution=ex, term=self.lead_term, expires_at=expires
        )
        self._send_dispatch(ex.id, self.incarnation)

    def _send_dispatch(self, ex_id: ExecutionId, incarnation: int) -> None:
        """``Dispatcher.send``: re-sent only while the node cannot be reached."""
        s = self.sending.get(ex_id)
        if s is None or incarnation != self.incarnation:
            return
        sim, cfg, node = self.sim, self.sim.cluster, s.execution.node_name
        if not sim.reachable(self.id, node):  # PeerUnreachable: the request did not go out
            if s.attempt >= cfg.dispatch_attempts:
                del self.sending[ex_id]
                self._fail_run(s.execution, f"could not reach node {node}: unreachable")
                return
            delay = cfg.dispatch_backoff_ms * 2 ** (s.attempt - 1) * self.rng.uniform(0.5, 1.0)
            s.attempt += 1
            sim.schedule(cfg.connect_timeout_ms + delay, self._send_dispatch, ex_id, incarnation)
            return
        dispatch = Dispatch(
            job=s.job, execution=s.execution, term=s.term, leader=self.id, expires_at=s.expires_at
        )
        sim.send(self.id, node, dispatch)
        sim.schedule(cfg.dispatch_timeout_ms, self._dispatch_timeout, ex_id, s.attempt, incarnation)

    def _dispatch_timeout(self, ex_id: ExecutionId, attempt: int, incarnation: int) -> None:
        s = self.sending.get(ex_id)
        if s is None or s.attempt != attempt or s.qid or incarnation != self.incarnation:
            return
        # the outcome is unknown: ask the node whether it has the run (``_confirm``)
        s.qid = self._query(s.execution.node_name, s.term, ("confirm", ex_id))

    def _unconfirmed(self, s: _Sending) -> None:
        """The node does not list the run (or did not answer): the dispatch may still be
        on its way. The first time, wait until it has expired and ask again (the engine's
        ``_send_dispatch``); the second, record the run failed."""
        node = s.execution.node_name
        if s.confirmed_once:
            self.sending.pop(s.execution.id, None)
            self._fail_run(s.execution, f"could not reach node {node}: no answer")
            return
        s.confirmed_once = True
        s.qid = 0
        at = self.sim.sim_time_of(self.id, s.expires_at + MAX_CLOCK_SKEW)
        self.sim.schedule(
            max(0.0, at - self.sim.now), self._confirm_again, s.execution.id, self.incarnation
        )

    def _confirm_again(self, ex_id: ExecutionId, incarnation: int) -> None:
        s = self.sending.get(ex_id)
        if s is None or incarnation != self.incarnation:
            return
        s.qid = self._query(s.execution.node_name, s.term, ("confirm", ex_id))

    def _on_dispatch_answer(self, answer: DispatchAnswer) -> None:
        s = self.sending.get(answer.execution_id)
        if s is None or s.confirmed_once:
            return
        del self.sending[answer.execution_id]
        if not answer.accepted:
            node = s.execution.node_name
            self._fail_run(s.execution, f"node {node} refused the run: {answer.reason}")

    def settled_at(self, ex: Execution) -> datetime | None:
        """``_dispatch_settled_at``: when no dispatch of ``ex`` can still start it."""
        s = self.sending.get(ex.id)
        if s is not None:
            return s.expires_at + MAX_CLOCK_SKEW
        if self.lead_since is not None and ex.started_at < self.lead_since:
            return self.lead_since + DISPATCH_EXPIRY + MAX_CLOCK_SKEW
        return None

    def _fail_run(self, ex: Execution, reason: str) -> None:
        """A run that could not be handed over: recorded failed (through the log)."""
        self.sim.trace(f"{self.id} run {ex.id} failed: {reason}")
        self.runner.submit(
            ex.id,
            c.RunFinished(
                job_name=ex.job_name,
                execution_id=ex.id,
                finished_at=self.wall(),
                success=False,
                output=reason,
            ),
        )

    # --- queries: confirm a dispatch, reconcile a new leader's inherited runs -------------
    def _query(self, node: str, term: int, purpose: tuple[str, Any]) -> int:
        sim = self.sim
        qid = sim.next_qid()
        self.queries[qid] = purpose
        sim.send(self.id, node, Query(qid=qid, term=term, leader=self.id))
        sim.schedule(sim.cluster.query_timeout_ms, self._query_timeout, qid, self.incarnation)
        return qid

    def _query_timeout(self, qid: int, incarnation: int) -> None:
        purpose = self.queries.pop(qid, None)
        if purpose is None or incarnation != self.incarnation:
            return
        if purpose[0] == "confirm":
            s = self.sending.get(purpose[1])
            if s is not None and s.qid == qid:
                self._unconfirmed(s)
        # a reconciliation without an answer is left to the failure detector; with
        # ``restart_reconcile`` (a fix) it is asked again until it answers or is failed
        if purpose[0] == "reconcile" and "restart-reconcile" in self.sim.cluster.fixes:
            node, ids, term = purpose[1]
            if self.leading(term) and node not in self.failed:
                self._query(node, term, purpose)

    def _on_runner_state(self, state: RunnerState) -> None:
        purpose = self.queries.pop(state.qid, None)
        if purpose is None:
            return
        if purpose[0] == "confirm":
            s = self.sending.get(purpose[1])
            if s is not None and s.qid == state.qid:
                if s.execution.id in state.known:
                    del self.sending[s.execution.id]  # it arrived after all
                else:
                    self._unconfirmed(s)
            return
        _, (node, ids, term) = purpose
        if not self.leading(term):
            return
        lost = tuple(
            (self.fsm.running[i].job_name, i)
            for i in ids
            if i in self.fsm.running and i not in state.known and i not in self.sending
        )
        if lost:
            self._abandon_lost(node, lost)

    def _abandon_lost(self, node: str, lost: tuple[tuple[str, ExecutionId], ...]) -> None:
        """As ``Engine._abandon_lost``: the runs ``node`` does not know are failed."""
        self._propose(
            [
                c.AbandonExecutions(
                    execution_ids=lost,
                    finished_at=self.wall(),
                    reason=f"node {node} no longer knows the run "
                    "(it restarted, or the dispatch was lost)",
                )
            ],
            kind="abandon",
        )

    def _reconcile(self, term: int) -> None:
        if "reconcile-own-runs" in self.sim.cluster.fixes:
            # the engine's _abandon_own_unknown: its own inherited runs it does not run
            mine = self.runner.known()
            lost = tuple(
                (ex.job_name, ex.id)
                for ex in self.fsm.running.values()
                if ex.node_name == self.id and ex.id not in mine
            )
            if lost:
                self._abandon_lost(self.id, lost)
        by_node: dict[str, list[ExecutionId]] = {}
        for ex in self.fsm.running.values():
            if ex.node_name != self.id:
                by_node.setdefault(ex.node_name, []).append(ex.id)
        for node in sorted(by_node):
            self._query(node, term, ("reconcile", (node, by_node[node], term)))

    # --- the failure detector ------------------------------------------------------------
    def heard(self, src: str) -> None:
        if self.lead_term and src != self.id:
            self.last_heard[src] = self.sim.now
            if src in self.failed:
                self.failed.discard(src)
                self.sim.trace(f"{self.id} sees {src} alive again")
                if "restart-reconcile" in self.sim.cluster.fixes:
                    self._reconcile_node(src)  # back from the dead: it may have restarted

    def _on_pong(self, src: str, pong: Pong) -> None:
        """``FIX_RESTART_RECONCILE`` (the engine's boot tag and _notice_life): a node seen in a
        new life is asked what it runs, and the runs it lost are abandoned."""
        known = self.lives.get(src)
        self.lives[src] = pong.incarnation
        if (
            known is not None
            and known != pong.incarnation
            and "restart-reconcile" in self.sim.cluster.fixes
            and self.ready
            and self.leading()
        ):
            self.sim.trace(f"{self.id} sees {src} restarted: reconcile")
            self._reconcile_node(src)

    def _reconcile_node(self, node: str) -> None:
        """Ask ``node`` what it runs; its runs it does not know are abandoned (the runs
        this leader is still dispatching to it excepted)."""
        if not self.ready or not self.leading():
            return
        ids = [
            ex.id
            for ex in self.fsm.running.values()
            if ex.node_name == node and ex.id not in self.sending
        ]
        if ids:
            self._query(node, self.lead_term, ("reconcile", (node, ids, self.lead_term)))

    def _ping_round(self, term: int) -> None:
        if not self.leading(term):
            return
        sim = self.sim
        self.ping_seq += 1
        for node in sim.all_nodes:
            if node == self.id:
                continue
            sim.send(self.id, node, Ping(self.ping_seq))
            silent = sim.now - self.last_heard.get(node, sim.now)
            if silent > sim.cluster.fail_after_ms and node not in self.failed:
                self._declare_failed(node)
        sim.schedule(sim.cluster.ping_ms, self._ping_round, term)

    def _declare_failed(self, node: str) -> None:
        self.failed.add(node)
        self.sim.trace(f"{self.id} declares {node} failed")
        runs = tuple(
            (ex.job_name, ex.id) for ex in self.fsm.running.values() if ex.node_name == node
        )
        self.sim.on_declared_failed(self.id, node, [i for _, i in runs])
        if not runs or self.faults.no_abandon:
            return
        held = [self.settled_at(self.fsm.running[i]) for _, i in runs]
        wait = max((at for at in held if at is not None), default=None)
        if wait is not None and wait > self.wall():
            # ``_fail_runs_of``: a dispatch may still be on its way; fail once it expired
            at = self.sim.sim_time_of(self.id, wait)
            self.abandon_due[node] = at
            self.sim.schedule(at - self.sim.now, self._fail_runs_of, node, self.lead_term)
            return
        self._fail_runs_of(node, self.lead_term)

    def _fail_runs_of(self, node: str, term: int) -> None:
        if not self.leading(term) or node not in self.failed:
            # back meanwhile (the engine asks gossip), or no longer leading: the engine
            # would forward its proposal to the new leader; here that leader's own
            # detector and reconciliation take over
            return
        runs = tuple(
            (ex.job_name, ex.id) for ex in self.fsm.running.values() if ex.node_name == node
        )
        if runs:
            self._propose(
                [
                    c.AbandonExecutions(
                        execution_ids=runs,
                        finished_at=self.wall(),
                        reason=f"node {node} failed during execution",
                    )
                ],
                kind="abandon",
            )

    # --- messages to the server ----------------------------------------------------------
    def receive(self, src: str, msg: Any) -> None:
        self.heard(src)
        if isinstance(msg, DispatchAnswer):
            self._on_dispatch_answer(msg)
        elif isinstance(msg, RunnerState):
            self._on_runner_state(msg)
        elif isinstance(msg, Report):
            self._on_report(src, msg)
        elif isinstance(msg, Pong):
            self._on_pong(src, msg)

    def _on_report(self, src: str, report: Report) -> None:
        if not self.ready or not self.leading():
            node = self.sim.nodes[self.id]  # type: ignore[index]
            self.sim.send(self.id, src, ReportAnswer((), str(node.leader or "")))
            return
        self._propose(report.commands, kind="report", payload=(src, report.keys))


def skew_of(rng: random.Random, max_skew_ms: float) -> int:
    """A node's wall-clock offset in whole microseconds, uniform in +-max_skew_ms."""
    return round(rng.uniform(-max_skew_ms, max_skew_ms) * 1000)
