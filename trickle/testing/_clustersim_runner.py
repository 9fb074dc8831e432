"""The whole-cluster simulation's runners and messages: what a node does with a dispatched run.

A ``SimRunner`` models ``trickle.engine.dispatch.RunnerService`` plus its ``Runner`` on one
node (an agent, or a server's own runner): it refuses a dispatch whose term is older than
the newest leader term it has seen, runs each execution id at most once per life (a
dispatch seen again is accepted as a duplicate), runs for a simulated duration, and
delivers each result to the leader it knows (else the servers in turn) until one answers
that it is committed. Everything lives in memory: a crash loses the runs, the results not
yet delivered and the term it had seen, exactly like the real service.

No I/O, no clock: the simulation passes events in and takes messages out through ``host``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import attrs

from trickle.engine.commands import Command, RunFinished
from trickle.engine.model import Execution, ExecutionId, Job

REPORT_BACKOFF_MS = (100.0, 2000.0)  # first retry delay, cap (doubling, jittered)


# --- messages (one RPC = a request and its answer, both through the simulated network) ---
@attrs.frozen
class Dispatch:
    """leader -> runner: run this committed intent (``term``: the sender's leader term)."""

    job: Job
    execution: Execution
    term: int
    leader: str
    expires_at: datetime | None = None  # the leader's clock; a runner refuses it later

    def describe(self) -> str:
        return f"Dispatch {self.execution.id} {self.execution.job_name} term={self.term}"


@attrs.frozen
class DispatchAnswer:
    execution_id: ExecutionId
    accepted: bool
    duplicate: bool
    reason: str
    term: int

    def describe(self) -> str:
        verdict = "dup" if self.duplicate else "ok" if self.accepted else f"no: {self.reason}"
        return f"DispatchAnswer {self.execution_id} {verdict} term={self.term}"


@attrs.frozen
class Query:
    """leader -> runner: what do you run? (``term`` > 0 fences older leaders off)."""

    qid: int
    term: int
    leader: str

    def describe(self) -> str:
        return f"Query #{self.qid} term={self.term} from {self.leader}"


@attrs.frozen
class RunnerState:
    qid: int
    node: str
    known: frozenset[ExecutionId]  # running, or finished with the result not delivered

    def describe(self) -> str:
        return f"RunnerState #{self.qid} {self.node} knows {len(self.known)}"


@attrs.frozen
class Report:
    """runner -> a server: commit these (RunFinished results; a restarted server's
    AbandonExecutions of its orphans). ``keys`` name them for the answer."""

    keys: tuple[str, ...]
    commands: tuple[Command, ...]

    def describe(self) -> str:
        return f"Report {len(self.keys)}: {','.join(self.keys)}"


@attrs.frozen
class ReportAnswer:
    """server -> runner: ``committed`` keys are settled; otherwise ``leader`` is a hint."""

    committed: tuple[str, ...]
    leader: str

    def describe(self) -> str:
        return f"ReportAnswer committed={len(self.committed)} leader={self.leader or '-'}"


@attrs.frozen
class Ping:
    """The leader's failure detector probing a node (gossip's job in the engine)."""

    seq: int

    def describe(self) -> str:
        return f"Ping {self.seq}"


@attrs.frozen
class Pong:
    """``incarnation``: the node's life (gossip's incarnation numbers tell a restart)."""

    seq: int
    incarnation: int

    def describe(self) -> str:
        return f"Pong {self.seq} life={self.incarnation}"


Message = Dispatch | DispatchAnswer | Query | RunnerState | Report | ReportAnswer | Ping | Pong
RUNNER_BOUND = (Dispatch, Query, ReportAnswer, Ping)  # delivered to a node's runner
RESPONSE_TYPES = (DispatchAnswer, RunnerState, ReportAnswer, Pong)


class RunnerHost(Protocol):
    """What a runner needs from the simulation."""

    now: float

    def wall(self, node: str) -> datetime: ...
    def send(self, src: str, dst: str, msg: Any) -> None: ...
    def schedule(self, delay_ms: float, fn: Any, *args: Any) -> None: ...
    def servers(self) -> Sequence[str]: ...
    def raft_leader(self, node: str) -> str | None: ...
    def on_run_start(self, node: str, dispatch: Dispatch, *, seen_term: int) -> None: ...
    def run_ms(self, node: str, job: Job) -> float: ...
    def trace(self, text: str) -> None: ...


@attrs.frozen(kw_only=True)
class RunnerFaults:
    """Planted bugs, for tests that show the checker catches them. ``ignore_term``: take
    dispatches of stale leaders. ``forget_runs``: no dedupe by execution id (a
    dispatch that arrives twice runs twice)."""

    ignore_term: bool = False
    forget_runs: bool = False


class SimRunner:
    """One node's runner service. See the module docstring."""

    def __init__(
        self, node: str, host: RunnerHost, rng: random.Random, faults: RunnerFaults
    ) -> None:
        self.node = node
        self.host = host
        self.rng = rng
        self.faults = faults
        self.up = True
        self.incarnation = 0
        self.term = 0  # highest leader term seen (in memory only)
        self.leader = ""
        self.active: dict[ExecutionId, Execution] = {}
        self.finished: set[ExecutionId] = set()
        self.pending: dict[str, Command] = {}  # key -> command to commit
        self._report_due = False
        self._failures = 0
        self.hint = ""  # where a server said the leader is
        self._rr = rng.randrange(1 << 16)
        self.starts = 0

    # life -------------------------------------------------------------------------------
    def crash(self) -> None:
        """Lose everything: runs, results not delivered, the term seen."""
        self.up = False
        self.incarnation += 1
        self.term = 0
        self.leader = ""
        self.active.clear()
        self.finished.clear()
        self.pending.clear()
        self._report_due = False

    def restart(self) -> None:
        self.up = True
        self._failures = 0

    def known(self) -> frozenset[ExecutionId]:
        """Runs active here, and runs whose result waits for a commit."""
        waiting = {c.execution_id for c in self.pending.values() if isinstance(c, RunFinished)}
        return frozenset(self.active) | frozenset(waiting)

    def note_leader(self, term: int, leader: str) -> None:
        if term > self.term:
            self.term = term
            self.leader = leader

    # messages ---------------------------------------------------------------------------
    def receive(self, src: str, msg: Any) -> None:
        if isinstance(msg, Dispatch):
            self._on_dispatch(src, msg)
        elif isinstance(msg, Query):
            if msg.term:
                self.note_leader(msg.term, msg.leader)
            self.host.send(self.node, src, RunnerState(msg.qid, self.node, self.known()))
        elif isinstance(msg, ReportAnswer):
            self._on_report_answer(src, msg)
        elif isinstance(msg, Ping):
            self.host.send(self.node, src, Pong(msg.seq, self.incarnation))

    def accept(self, dispatch: Dispatch) -> DispatchAnswer:
        """Take a dispatch (the message handler). Refused: a term below the highest
        seen, or past its expiry by this node's clock."""
        ex = dispatch.execution
        if dispatch.term < self.term and not self.faults.ignore_term:
            return DispatchAnswer(
                ex.id, False, False, f"stale term {dispatch.term}: seen {self.term}", self.term
            )
        now = self.host.wall(self.node)
        if dispatch.expires_at is not None and now > dispatch.expires_at:
            return DispatchAnswer(ex.id, False, False, "the dispatch expired", self.term)
        seen = self.term
        self.note_leader(dispatch.term, dispatch.leader)
        if not self.faults.forget_runs and (
            ex.id in self.active or ex.id in self.finished or ex.id in self.pending
        ):
            return DispatchAnswer(ex.id, True, True, "", self.term)
        self._start(dispatch, seen_term=seen)
        return DispatchAnswer(ex.id, True, False, "", self.term)

    def start_local(self, dispatch: Dispatch) -> None:
        """A server's run on itself: handed to its Runner directly (the engine's
        ``_dispatch``), without the term check of a dispatch from another node."""
        ex = dispatch.execution
        if ex.id in self.active or ex.id in self.finished or ex.id in self.pending:
            return
        self._start(dispatch, seen_term=0)

    def _start(self, dispatch: Dispatch, *, seen_term: int) -> None:
        ex = dispatch.execution
        self.active[ex.id] = ex
        self.starts += 1
        self.host.on_run_start(self.node, dispatch, seen_term=seen_term)
        self.host.schedule(
            self.host.run_ms(self.node, dispatch.job), self._finish, ex, self.incarnation
        )

    def _on_dispatch(self, src: str, dispatch: Dispatch) -> None:
        self.host.send(self.node, src, self.accept(dispatch))

    def _finish(self, ex: Execution, incarnation: int) -> None:
        if incarnation != self.incarnation or self.active.pop(ex.id, None) is None:
            return
        self.finished.add(ex.id)
        result = RunFinished(
            job_name=ex.job_name,
            execution_id=ex.id,
            finished_at=self.host.wall(self.node),
            success=True,
            output="ok",
            exit_code=0,
        )
        self.host.trace(f"{self.node} finished {ex.id}")
        self.submit(ex.id, result)

    # results ----------------------------------------------------------------------------
    def submit(self, key: str, command: Command) -> None:
        """Deliver ``command`` to the leader until it is committed."""
        self.pending[key] = command
        if not self._report_due:
            self._report_due = True
            self.host.schedule(0.0, self._report, self.incarnation)

    def _target(self) -> str | None:
        leader = self.host.raft_leader(self.node)  # a server's runner asks its own Raft
        if leader:
            return leader
        servers = [s for s in self.host.servers() if s != self.node]
        for known in (self.hint, self.leader):
            if known and known in servers and self._failures == 0:
                return known
        if not servers:
            return None
        self._rr += 1
        return servers[self._rr % len(servers)]

    def _report(self, incarnation: int) -> None:
        if incarnation != self.incarnation:
            return
        if not self.pending:
            self._report_due = False
            return
        target = self._target()
        if target is not None:
            keys = tuple(sorted(self.pending))
            self.host.send(self.node, target, Report(keys, tuple(self.pending[k] for k in keys)))
        lo, hi = REPORT_BACKOFF_MS
        delay = min(hi, lo * 2**self._failures) * self.rng.uniform(0.5, 1.0)
        self._failures = min(self._failures + 1, 8)
        self.host.schedule(delay, self._report, incarnation)

    def _on_report_answer(self, src: str, answer: ReportAnswer) -> None:
        for key in answer.committed:
            self.pending.pop(key, None)
        if answer.committed:
            self._failures = 0
        elif answer.leader and answer.leader != src:
            self.hint = answer.leader
            self._failures = 0
