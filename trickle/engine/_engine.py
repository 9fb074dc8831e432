"""The Engine: one trickle node embedded in a Trio program.

Data flow of one scheduled run: the scheduler sleeps until the planner's earliest fire is
LAUNCH_AHEAD_MIN away, takes what is due within LAUNCH_AHEAD, proposes ``RunStarted``
commands (batched) through the command log, and once they are committed the dispatcher
hands each run to the runner at its scheduled instant (launch ahead). The runner executes, streams
output as events, runs processors and proposes ``RunFinished``. The state machine applies
every command; the engine reacts to what it applied (events, the plan, retries, children).
"""

from __future__ import annotations

import heapq
import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

import attrs
import msgpack
import trio

from trickle._version import __version__
from trickle.engine import commands as c
from trickle.engine.clock import Clock, SystemClock
from trickle.engine.config import EngineConfig, parse_host_port
from trickle.engine.dispatch import (
    DISPATCH_EXPIRY,
    MAX_CLOCK_SKEW,
    MAX_IDS_ASKED,
    Dispatch,
    Dispatcher,
    DispatchRefused,
    RunnerService,
)
from trickle.engine.events import EarlyOutput, Event, EventHub, EventKind, Subscription
from trickle.engine.executors.base import PythonExecutorFn, PythonProcessorFn
from trickle.engine.fsm import Applied, DependentsDue, Reaction, RetryDue, StateMachine
from trickle.engine.guard import LaunchGuard
from trickle.engine.journal import LaunchJournal, ResultJournal
from trickle.engine.ledger import ProcessLedger
from trickle.engine.membership import (
    BootstrapWaiter,
    MembershipReconciler,
    ServerView,
    membership_tags,
    pick_successor,
    server_views,
)
from trickle.engine.metrics import EngineMetrics
from trickle.engine.model import (
    BusyExecution,
    DayStats,
    Execution,
    ExecutionId,
    Job,
    Member,
    RaftPeer,
    Trigger,
)
from trickle.engine.replog import ReplicatedLog
from trickle.engine.runner import Runner
from trickle.engine.schedule import parse_schedule, upcoming
from trickle.engine.scheduler import Decision, NoTargetNodes, Scheduler
from trickle.engine.store import Store, empty_image
from trickle.engine.validate import validate_job
from trickle.errors import (
    EngineClosed,
    ExecutionNotFound,
    JobNotFound,
    JoinFailed,
    NotAServer,
    NotFound,
    NotLeader,
    ProposalDropped,
    SubmissionsPaused,
    TrickleError,
    ValidationError,
)
from trickle.gossip.config import PRESETS as GOSSIP_PRESETS
from trickle.gossip.config import GossipConfig
from trickle.gossip.driver import LEAVE_TIMEOUT as GOSSIP_LEAVE_TIMEOUT
from trickle.gossip.driver import EventsLost, GossipDriver, GossipDriverStats, GossipSubscription
from trickle.gossip.keyring import Keyring, decode_key
from trickle.gossip.messages import EventKind as GossipEventKind
from trickle.gossip.messages import Member as GossipMember
from trickle.gossip.messages import MemberEvent as GossipMemberEvent
from trickle.gossip.messages import State as GossipState
from trickle.raft.config import RaftConfig
from trickle.raft.core import Role, SoftState
from trickle.raft.driver import ProposalUnknown, RaftDriver
from trickle.raft.messages import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    DurableState,
    EntryKind,
    NodeId,
)
from trickle.raft.sqlstore import SqliteRaftStorage
from trickle.raft.storage import MemoryStorage, RaftStorage
from trickle.raft.transport import PeerUnreachable, RpcError, TcpTransport
from trickle.raft.wire import decode_conf_change
from trickle.testing.raftnet import MemoryNetwork

logger = logging.getLogger(__name__)
T = TypeVar("T")

RAFT_DB = "raft.db"  # the Raft log, term/vote and snapshots, beside the store's trickle.db
RAFT_CONFIG = RaftConfig(election_ticks=10, heartbeat_ticks=4)  # x raft_tick seconds
OUTPUT_TAIL_CHARS = 4096  # of a remote run's output, kept for /v1/busy (as a local run's)
RUN_JOB_METHOD = "trickle.run_job"  # a follower hands a manual run to the leader
LAUNCH_TIMEOUT = 60.0  # seconds a launch waits for its intent to commit before giving up
MAX_FIRES_PER_BATCH = 256  # due fires proposed in one batch: the first start sooner
DECIDE_CHUNK = 16  # due fires decided in one step of the event loop (see _fire)
# Launch ahead: the scheduler commits the intents of the fires due in the next LAUNCH_AHEAD
# once the earliest is LAUNCH_AHEAD_MIN away, and the dispatcher launches each at its instant.
# The lead hides the commit's latency from the run's lateness: a batch's commit (propose,
# save, apply) takes a few ms on a quiet host but 30-200 ms on a loaded one (measured at
# 1,000 fires/s: with a 20 ms lead the p99 lateness was 49-91 ms, with 200 ms 31-46 ms).
# A failover costs none of these runs: the next leader launches what was never launched.
LAUNCH_AHEAD_MIN = timedelta(milliseconds=200)
LAUNCH_AHEAD = timedelta(milliseconds=250)
RESTORE_STAGGER = timedelta(milliseconds=1)  # between the anchors of restored jobs
GOSSIP_PORT = 8946  # Dkron's serf port: gossip's default, reported for nodes without gossip
# A node declared dead this long ago may come back under its name at another address (a
# restart in a container with a new IP, or on new ports); memberlist's default is never,
# which left such a node silently ignored by everyone.
DEAD_NODE_RECLAIM_TIME = 30.0
RECONCILE_RETRY = 2.0  # seconds between two "what do you run?" to a node that did not answer
DEFAULT_GOSSIP_BIND = "0.0.0.0"  # gossip binds every interface unless gossip_bind says
_MEMBER_EVENT_KINDS = {
    GossipEventKind.JOIN: EventKind.MEMBER_JOINED,
    GossipEventKind.UPDATE: EventKind.MEMBER_UPDATED,
    GossipEventKind.LEAVE: EventKind.MEMBER_LEFT,
    GossipEventKind.FAIL: EventKind.MEMBER_FAILED,
    GossipEventKind.REAP: EventKind.MEMBER_REAPED,
}
_MEMBER_STATUS = {
    GossipState.ALIVE: "alive",
    GossipState.SUSPECT: "alive",  # serf reports a suspect as alive until it is declared dead
    GossipState.DEAD: "failed",
    GossipState.LEFT: "left",
}
_MICRO = timedelta(microseconds=1)
JOB_SORTS = {
    "id": "name",
    "name": "name",
    "displayname": "displayname",
    "schedule": "schedule",
    "success_count": "success_count",
    "error_count": "error_count",
    "last_success": "last_success",
    "last_error": "last_error",
    "next": "next",
}
JOB_STATUSES = {"success", "failed", "partially_failed", "untriggered"}
EXECUTION_SORTS = {
    "id": "started_at",
    "started_at": "started_at",
    "finished_at": "finished_at",
    "attempt": "attempt",
}


class LeaderRefused(TrickleError):
    """The leader refused a request this server handed it; carries the leader's status."""

    def __init__(self, message: str, *, http_status: int) -> None:
        super().__init__(message)
        self.http_status = http_status  # type: ignore[misc]


@attrs.frozen(kw_only=True)
class JobQuery:
    """Filters, sorting and slicing of ``Engine.list_jobs`` (Dkron's ``GET /v1/jobs``).

    q: substring of name or displayname (case-sensitive). status: success, failed,
    partially_failed or untriggered. disabled: True/False. metadata: every pair must match.
    sort: name (also 'id'), displayname, schedule, success_count, error_count,
    last_success, last_error, next. order: 'asc' or 'desc'. start/end: 0-based slice after
    filtering (end exclusive, None = to the end).
    """

    q: str | None = None
    status: str | None = None
    disabled: bool | None = None
    metadata: Mapping[str, str] | None = None
    sort: str = "name"
    order: str = "asc"
    start: int = 0
    end: int | None = None


@attrs.frozen(kw_only=True)
class EngineStatistics:
    """A snapshot of the engine's counters (trio's ``statistics()`` style)."""

    jobs: int
    running_executions: int
    queued_executions: int
    commands_applied: int
    fires_total: int
    fires_skipped: int
    fires_missed: int
    executions_succeeded: int
    executions_failed: int
    subscribers: int
    events_published: int
    events_dropped: int
    paused: bool
    is_leader: bool
    # runs an earlier leader committed but never launched, launched by this one as leader
    runs_relaunched: int = 0


class Engine:
    """One trickle node. ``async with Engine(config) as engine:`` or
    ``await nursery.start(engine.run)``.

    Job and execution methods raise the ``trickle.errors`` tree: ``ValidationError`` (400,
    with ``field``), ``JobNotFound`` / ``ParentNotFound`` / ``ExecutionNotFound`` (404),
    ``Conflict`` subclasses (409), ``SubmissionsPaused`` (503), ``EngineClosed`` (503).
    A call that raises has changed nothing.
    """

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        raft_transport: Any = None,
        gossip_transport: Any = None,
        gossip_config: GossipConfig | None = None,
    ) -> None:
        from trickle.engine.executors.registry import ExecutorRegistry
        from trickle.engine.processors import ProcessorRegistry

        self.config = config or EngineConfig()
        self.node_name = self.config.node_name
        self.clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._executors = ExecutorRegistry()
        self._processors = ProcessorRegistry()
        self._hub = EventHub(default_maxsize=self.config.subscriber_buffer)
        self._metrics = EngineMetrics()
        self._metrics.watch_gossip(self._gossip_statistics)
        self._fsm = StateMachine()
        self._sched = Scheduler(
            self._fsm,
            node_name=self.node_name,
            region=self.config.region,
            rng=self._rng,
            max_running=self.config.cluster_max_running,
            max_lateness=None
            if self.config.max_lateness is None
            else timedelta(seconds=self.config.max_lateness),
        )
        self._store: Store | None = None
        self._log: ReplicatedLog | None = None
        self._raft: RaftDriver | None = None
        self._transport: Any = raft_transport
        self._own_transport = raft_transport is None
        self._peer_addresses: dict[str, str] = dict(self.config.peers)
        self._gossip_transport: Any = gossip_transport
        self._gossip_config = gossip_config
        self._gossip: GossipDriver | None = None
        self._leaving_cluster = False
        self._runner_service: RunnerService | None = None
        self._dispatcher: Dispatcher | None = None
        self._raft_formed = False  # this server holds a Raft configuration (gossiped)
        self._bootstrap_waiter: BootstrapWaiter | None = None
        self._reconciler: MembershipReconciler | None = None
        self._lead_scope: trio.CancelScope | None = None
        self._lead_term = 0
        self._lead_since: datetime | None = None  # when this server last became the leader
        self._known_leader: str | None = None  # the leader Raft last named (events on change)
        self._boot = ""  # this life of the node (gossiped; set at each start)
        self._boots: dict[str, str] = {}  # the life each member last gossiped
        # dispatches sent and not yet answered: execution id -> the dispatch's expiry
        self._dispatch_pending: dict[ExecutionId, datetime] = {}
        # runs committed for this node that its earlier process never started, being
        # launched late after a restart (see _abandon_orphans)
        self._never_started: set[ExecutionId] = set()
        self._led = trio.Event()  # set once this node acts as leader (single server: start)
        self._runner: Runner | None = None
        self._nursery: trio.Nursery | None = None
        self._wake_scope: trio.CancelScope | None = None
        self._wake_at: datetime | None = None
        self._paused = False
        self._open = False
        self._draining = False
        self._sched_scope: trio.CancelScope | None = None
        self._launching = 0
        self._launch_idle = trio.Event()
        # committed runs waiting for their instant: (at, seq, job name, execution)
        self._ahead: list[tuple[datetime, int, str, Execution, int]] = []  # ..., term
        self._ahead_seq = 0
        self._dispatch_scope: trio.CancelScope | None = None
        self._dispatch_at: datetime | None = None
        self._guard = LaunchGuard()  # background work stands aside before launches
        self._metrics.watch_guard(self._guard)
        # runs are launched this much before their instant and start on it, on a clock
        # that can busy-wait (SystemClock.spin_until; not a test clock)
        spins = hasattr(self.clock, "spin_until")
        self._spin_lead = timedelta(seconds=self.config.launch_spin if spins else 0.0)
        self._batches_counted = 0  # of the log's applied batches, in the metrics
        self._ahead_ids: set[str] = set()  # runs launched ahead, until launched or failed
        self._started_events: dict[str, Event] = {}  # of runs committed ahead, by id
        self._early_output = EarlyOutput()  # of remote runs not yet applied here
        self._output_tails: dict[str, str] = {}  # of remote runs: /v1/busy's output so far
        self._counts = {
            "fires": 0,
            "skipped": 0,
            "missed": 0,
            "succeeded": 0,
            "failed": 0,
            "relaunched": 0,
        }
        self._retries_waiting: set[tuple[int, str, int]] = set()
        self._cm_nursery: Any = None
        self._read_limiter = trio.CapacityLimiter(4)
        self._addr = "127.0.0.1"
        self._member: Member | None = None

    # -- lifecycle -----------------------------------------------------------------------
    async def __aenter__(self) -> Engine:
        self._cm_nursery = trio.open_nursery()
        nursery = await self._cm_nursery.__aenter__()
        try:
            await nursery.start(self.run)
        except BaseException as exc:
            try:
                await self._cm_nursery.__aexit__(type(exc), exc, exc.__traceback__)
            except BaseExceptionGroup as group:
                # a start that failed for one reason raises that reason, not a group
                only = _sole_exception(group)
                if only is None:
                    raise
                raise only from None
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Stop the engine. An exception from the ``async with`` body propagates as it is
        (not wrapped in an exception group); a failure of the engine itself raises."""
        assert self._cm_nursery is not None
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        await self._cm_nursery.__aexit__(None, None, None)
        return False

    async def run(self, *, task_status: trio.TaskStatus[Engine] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the store, recover, start scheduling; ``task_status.started(self)``.

        Runs until cancelled. Executions still running when it is cancelled are killed;
        the next start records them as failed.
        """
        if self._open:
            raise RuntimeError("this engine is already running")
        # new at every start; os.urandom, not the engine's rng or clock: a seeded engine
        # in a test draws and reads the time as it did before
        self._boot = os.urandom(6).hex()
        if not self.config.server:
            await self._run_agent(task_status)
            return
        cfg = self.config
        self._led = trio.Event()
        store = await self._blocking(
            lambda: Store(cfg.data_dir, durability=cfg.durability, history_limit=cfg.history_limit)
        )
        if cfg.data_dir is not None:  # written in worker threads, which stand aside
            store.pace = self._guard.pause  # for launches (an in-memory one: inline)
        self._store = store
        raft_storage: RaftStorage | None = None
        try:
            self._addr = await self._blocking(_local_address)
            self._member = None
            raft_storage = await self._blocking(self._open_raft_storage)
            durable = await self._raft_storage_call(raft_storage.load)
            loaded = await self._db(store.load)
            if durable.is_empty() and loaded.applied_index > 0:
                loaded = await self._adopt_pre_raft_state(loaded)
            self._fsm.restore(
                applied_index=loaded.applied_index,
                jobs=loaded.jobs,
                running=loaded.running,
                meta=loaded.fsm_meta,
            )
            self._batches_counted = 0
            self._log = ReplicatedLog(
                store,
                self._fsm,
                on_applied=self._on_applied,
                on_restored=self._on_restored,
                inline=cfg.data_dir is None,
                guard=self._guard,
            )
            stored = _stored_conf(durable)
            if stored is not None and self.node_name not in stored.voters | stored.learners:
                if cfg.join and not cfg.peers and stored.voters:
                    raft_storage = await self._start_anew_after_removal(raft_storage, stored)
                else:
                    raft_storage = await self._adopt_renamed_server(raft_storage, durable, stored)
                durable = DurableState()
            # entries committed before this start are replayed quietly (no events again)
            self._log.replay_until = durable.hard_state.commit
            self._runner = await self._open_runner(report=self._report)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                transport = await self._start_transport(nursery)
                self._raft_formed = not durable.is_empty()
                await self._start_gossip(nursery)
                bootstrap = await self._bootstrap_conf(durable)
                self._raft = RaftDriver(
                    NodeId(self.node_name),
                    config=RAFT_CONFIG,
                    storage=raft_storage,
                    transport=transport,
                    app=self._log,
                    tick_seconds=cfg.raft_tick,
                    bootstrap=bootstrap,
                    applied=self._fsm.applied_index,
                    rng=random.Random(self._rng.getrandbits(64)),
                    snapshot_entries=cfg.snapshot_entries,
                    storage_in_thread=cfg.data_dir is not None,
                    inline_saves=False,  # a slow commit must not stall the loop that launches runs
                    on_soft_state=self._on_soft_state,
                    pace=self._guard.stand_aside,
                )
                self._log.attach(self._raft)
                transport.register(RUN_JOB_METHOD, self._serve_run_job)
                await nursery.start(self._raft.run)
                await nursery.start(self._log.run)
                await nursery.start(self._runner.run)
                await self._start_runner_service(nursery, transport)
                self._open = True
                nursery.start_soon(self._abandon_orphans_when_possible)
                starting_conf = bootstrap if durable.is_empty() else _stored_conf(durable)
                if bootstrap is not None:
                    self._note_raft_formed()
                voters = starting_conf.voters if starting_conf is not None else frozenset()
                if voters == {self.node_name}:
                    await self._led.wait()  # a lone server leads from its first tick
                logger.info(
                    "engine %s ready: %d jobs, data in %s, %s",
                    self.node_name,
                    len(self._fsm.jobs),
                    cfg.data_dir or "memory",
                    f"{len(voters)} Raft voters" if voters else "waiting to be added to a cluster",
                )
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self._open = False
            self._nursery = None
            self._raft = None
            self._lead_term = 0
            self._metrics.is_leader.set(0)
            self._hub.close_all()
            if self._runner_service is not None:
                self._runner_service.close()
            with trio.CancelScope(shield=True):
                await self._blocking(store.close)  # inline in memory: no MockClock race
                if raft_storage is not None:
                    await self._blocking(raft_storage.close)

    async def _bootstrap_conf(self, durable: DurableState) -> ConfState | None:
        """How a server with no Raft state starts: with its static peers, with the
        servers bootstrap-expect finds, alone, or (joining) waiting to be added."""
        cfg = self.config
        me = NodeId(self.node_name)
        if cfg.peers or not durable.is_empty():
            return ConfState(voters=frozenset(NodeId(n) for n in {me, *cfg.peers}))
        if cfg.bootstrap_expect:
            waiter = BootstrapWaiter(self.node_name, cfg.bootstrap_expect, self._server_views)
            self._bootstrap_waiter = waiter
            try:
                logger.info(
                    "%s: waiting for %d servers to bootstrap", self.node_name, cfg.bootstrap_expect
                )
                return await waiter.wait()
            finally:
                self._bootstrap_waiter = None
        if cfg.join:
            return None  # the cluster's leader adds this server (learner, then voter)
        return ConfState(voters=frozenset({me}))

    def _server_views(self) -> list[ServerView]:
        views = server_views(self.members(), region=self.config.region)
        if not isinstance(self._transport, TcpTransport):  # an injected network: by name
            views = [attrs.evolve(v, rpc_addr=v.rpc_addr or v.name) for v in views]
        return views

    def _note_raft_formed(self) -> None:
        """Tell gossip this server belongs to a formed cluster (bootstrap-expect: no
        other server may bootstrap a second one with it)."""
        gossip = self._gossip
        told = gossip is None or gossip.tags.get("raft_formed") == "1"
        if self._raft_formed and told:
            return
        self._raft_formed = True
        if gossip is not None and gossip.serving:
            gossip.set_tags(self._gossip_tags())

    async def _run_agent(self, task_status: trio.TaskStatus[Engine]) -> None:
        """An agent: gossip, the RPC listener and the runner; no store, no Raft."""
        cfg = self.config
        if not cfg.gossip_enabled and self._gossip_transport is None:
            raise ValidationError(
                "an agent needs join (or gossip_bind): it finds the servers by gossip",
                field="join",
            )
        if cfg.raft_bind is None and self._own_transport:
            raise ValidationError(
                "an agent needs raft_bind: its RPC listener, where servers dispatch runs",
                field="raft_bind",
            )
        self._addr = await self._blocking(_local_address)
        self._member = None
        self._runner = await self._open_runner(report=self._report_to_servers)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                transport = await self._start_transport(nursery)
                await self._start_gossip(nursery)
                await nursery.start(self._runner.run)
                await self._start_runner_service(nursery, transport)
                self._open = True
                logger.info("agent %s ready, joining %s", self.node_name, ", ".join(cfg.join))
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self._open = False
            self._nursery = None
            self._hub.close_all()

    async def _open_runner(self, *, report: Callable[[c.RunFinished], Awaitable[None]]) -> Runner:
        """The runner, after killing what the previous process of this node left running."""
        cfg = self.config
        ledger = ProcessLedger(cfg.data_dir / "processes" if cfg.data_dir else None)
        reaped = await self._blocking(ledger.reap)
        if reaped:
            logger.warning(
                "killed the processes of %d executions left running when this node stopped: %s",
                len(reaped),
                ", ".join(reaped),
            )
        return Runner(
            processes=ledger,
            node_name=self.node_name,
            executors=self._executors,
            processors=self._processors,
            clock=self.clock,
            output_limit=cfg.output_limit,
            max_concurrent=cfg.max_concurrent,
            executor_limits=cfg.executor_limits,
            on_output=self._on_output,
            on_start=self._on_run_start,
            report=report,
        )

    async def _report_to_servers(self, finished: c.RunFinished) -> None:
        """An agent's results go to the servers, retried until one commits them."""
        assert self._runner_service is not None
        await self._runner_service.report(finished)

    async def _start_runner_service(self, nursery: trio.Nursery, transport: Any) -> None:
        """Take dispatched runs (every node), and on a server send them and take results."""
        assert self._runner is not None
        self._runner_service = RunnerService(
            node_name=self.node_name,
            transport=transport,
            runner=self._runner,
            servers=self._server_names,
            rng=random.Random(self._rng.getrandbits(64)),
            clock=self.clock.now,
            journal=ResultJournal(
                self.config.data_dir / "results" if self.config.data_dir else None
            ),
            # a server's own runs (held for their instant) are what a restart can leave
            # never launched; an agent's orphans are settled by the leader (known: failed)
            launches=LaunchJournal(self.config.data_dir)
            if self.config.server and self.config.data_dir
            else None,
        )
        await nursery.start(self._runner_service.run)
        if self.config.server:
            self._dispatcher = Dispatcher(
                node_name=self.node_name,
                transport=transport,
                on_output=self._on_remote_output,
                commit=self._commit_result,
                rng=random.Random(self._rng.getrandbits(64)),
                local=self._runner_service,
            )
            await nursery.start(self._dispatcher.run)

    def _server_names(self) -> list[str]:
        """Alive servers by gossip (where an agent sends results), this one excluded."""
        gossip = self._gossip
        if gossip is None:
            return sorted(set(self._peer_addresses) - {self.node_name})
        return [
            m.name
            for m in gossip.members()
            if m.name != self.node_name
            and m.state in (GossipState.ALIVE, GossipState.SUSPECT)
            and m.tags.get("server") == "true"
        ]

    def _on_remote_output(self, job_name: str, execution_id: str, chunk: str) -> None:
        """Output of a run on another node, as it prints it (every server's live feed).
        A run this server has not applied the start of yet (a follower a moment behind)
        has its chunks held until it starts here."""
        execution = self._fsm.running.get(ExecutionId(execution_id))
        if execution is None:
            self._early_output.hold(job_name, execution_id, chunk)
            return
        self._keep_tail(execution.id, chunk)
        self._on_output_event(execution, chunk)

    def _keep_tail(self, execution_id: str, chunk: str) -> None:
        """The last OUTPUT_TAIL_CHARS of a remote run's output (forgotten when it ends)."""
        tails = self._output_tails
        tails[execution_id] = (tails.get(execution_id, "") + chunk)[-OUTPUT_TAIL_CHARS:]
        if len(tails) > 2 * len(self._fsm.running) + 64:  # ends this server did not see
            for ex_id in [i for i in tails if i not in self._fsm.running]:
                del tails[ex_id]

    async def _commit_result(self, finished: c.RunFinished) -> None:
        """A result another node reports: return once committed (a duplicate too)."""
        [applied] = await self._propose([finished], linger=True)
        if applied.error is not None:
            logger.info("result of %s refused: %s", finished.execution_id, applied.error.message)

    def _dispatch_settled_at(self, ex: Execution) -> datetime | None:
        """When a dispatch of ``ex`` that may still be on its way can no longer start it
        (its expiry, plus the clock skew allowed), or None when none can be on its way: a
        dispatch this leader sent and saw answered. A run from before this leadership may
        have been sent by the previous leader up to about when this one took over."""
        expiry = timedelta(seconds=DISPATCH_EXPIRY + MAX_CLOCK_SKEW)
        pending = self._dispatch_pending.get(ex.id)
        if pending is not None:
            return pending + timedelta(seconds=MAX_CLOCK_SKEW)
        if self._lead_since is not None and ex.started_at < self._lead_since:
            return self._lead_since + expiry
        return None

    async def _fail_runs_of(self, node: str, reason: str = "") -> None:
        """Record the runs of a node gossip declared failed as failed: never left running.
        A run whose dispatch may still be held up in the network is failed only once that
        dispatch has expired (the node would refuse it), unless the node is back meanwhile."""
        held = [
            self._dispatch_settled_at(ex)
            for ex in self._fsm.running.values()
            if ex.node_name == node
        ]
        wait = max((at for at in held if at is not None), default=None)
        if wait is not None and wait > self.clock.now():
            await self.clock.sleep_until(wait)
            gossip = self._gossip
            member = gossip.member(node) if gossip is not None else None
            if member is not None and member.state not in (GossipState.DEAD, GossipState.LEFT):
                logger.info("%s is back: it is asked what it runs instead", node)
                if self._lead_term:
                    await self._reconcile_node(node, self._lead_term)
                return
        runs = [(ex.job_name, ex.id) for ex in self._fsm.running.values() if ex.node_name == node]
        if not runs:
            return
        reason = reason or f"node {node} failed during execution"
        logger.warning("%s: %d runs failed: %s", self.node_name, len(runs), reason)
        try:
            await self._propose(
                [
                    c.AbandonExecutions(
                        execution_ids=tuple(runs), finished_at=self.clock.now(), reason=reason
                    )
                ]
            )
        except (NotLeader, ProposalDropped, ProposalUnknown, EngineClosed) as exc:
            logger.info("failing the runs of %s is left to the next leader: %s", node, exc)

    def _notice_life(self, kind: GossipEventKind, member: GossipMember) -> None:
        """A member came back (after it was declared failed) or restarted (a new boot
        tag): the leader asks it what it runs, so the runs it lost are failed rather
        than left running."""
        name = member.name
        boot = member.tags.get("boot", "")
        before = self._boots.get(name)
        self._boots[name] = boot
        if name == self.node_name or not self._lead_term or self._dispatcher is None:
            return
        if kind is GossipEventKind.JOIN or (before is not None and before != boot):
            term = self._lead_term
            self._nursery_start(self._reconcile_node, name, term)

    async def _reconcile_node(self, node: str, term: int) -> None:
        """While leading in ``term``: ask ``node`` what it runs (again and again until it
        answers, or gossip declares it failed) and fail the runs the history holds
        running there that it does not know. Only runs whose dispatch was answered
        before the question are judged: a run dispatched meanwhile is not lost."""
        assert self._dispatcher is not None
        while self._lead_term == term:
            gossip = self._gossip
            member = gossip.member(node) if gossip is not None else None
            if member is not None and member.state in (GossipState.DEAD, GossipState.LEFT):
                await self._fail_runs_of(node)
                return
            asked = [
                ex.id
                for ex in self._fsm.running.values()
                if ex.node_name == node and ex.id not in self._dispatch_pending
            ]
            if not asked:
                return
            try:
                state = await self._dispatcher.query(node, term=term, ids=asked[:MAX_IDS_ASKED])
                known = set(state.known)
                known.update(ref.execution_id for ref in (*state.active, *state.pending))
                for start in range(MAX_IDS_ASKED, len(asked), MAX_IDS_ASKED):
                    more = asked[start : start + MAX_IDS_ASKED]
                    known.update((await self._dispatcher.query(node, term=term, ids=more)).known)
            except RpcError as exc:
                logger.info("cannot ask %s what it runs (%s): asking again", node, exc)
                await trio.sleep(RECONCILE_RETRY)
                continue
            unknown = [
                self._fsm.running[i] for i in asked if i in self._fsm.running and i not in known
            ]
            if unknown and self._lead_term == term:
                await self._settle_unknown(node, unknown, state.since, term)
            return

    async def _settle_unknown(
        self, node: str, runs: list[Execution], since: datetime | None, term: int
    ) -> None:
        """Settle runs the history holds on ``node`` that the node does not know (asked by
        this leader of ``term``, which fences earlier leaders off the node). Those whose
        intent was committed after the node's runner started (``since``, allowing for
        clock skew) never reached it: a leader committed them ahead of their instant and
        lost its leadership first, or its dispatch never arrived. They are launched now,
        as this leader's (``_relaunch``). The others are failed: the node may have run
        them in an earlier life (it restarted), so running them again could run them
        twice."""
        margin = timedelta(seconds=MAX_CLOCK_SKEW)
        fresh = [ex for ex in runs if since is not None and ex.started_at > since + margin]
        fresh_ids = {ex.id for ex in fresh}
        lost = [(ex.job_name, ex.id) for ex in runs if ex.id not in fresh_ids]
        if lost:
            await self._abandon_lost(node, lost)
        if fresh:
            await self._relaunch(fresh, term)

    async def _relaunch(self, runs: list[Execution], term: int) -> None:
        """Launch committed runs that never reached their node, as this leader's: at their
        scheduled instant if still ahead, else now, unless past their job's catch-up
        window (a scheduled fire) or their job is gone; those are failed with the
        reason. Their node was asked in this term first (see ``_settle_unknown``), so no
        earlier leader's dispatch of them can start there any more."""
        now = self.clock.now()
        failed: dict[str, list[tuple[str, ExecutionId]]] = {}
        for ex in runs:
            if self._lead_term != term:
                return
            if ex.id not in self._fsm.running:  # settled meanwhile
                continue
            job = self._fsm.jobs.get(ex.job_name)
            reason = _late_launch_refusal(ex, job, now, "the leader changed")
            if reason or job is None:
                failed.setdefault(reason, []).append((ex.job_name, ex.id))
                continue
            logger.info(
                "%s: launching %s of job %s (committed by an earlier leader, never launched)",
                self.node_name,
                ex.id,
                ex.job_name,
            )
            self._counts["relaunched"] += 1
            if ex.scheduled_at is not None and ex.scheduled_at > now:
                self._ahead_ids.add(ex.id)
                self._hold(ex, term)
            else:
                self._dispatch(job, ex)
        await self._fail_unlaunched(failed)

    async def _fail_unlaunched(self, failed: dict[str, list[tuple[str, ExecutionId]]]) -> None:
        """Record committed runs that will not be launched as failed, one command per
        reason (``failed``: reason -> runs); without a leader, left to the next one."""
        for reason, ids in failed.items():
            try:
                await self._propose(
                    [
                        c.AbandonExecutions(
                            execution_ids=tuple(ids), finished_at=self.clock.now(), reason=reason
                        )
                    ]
                )
            except (NotLeader, ProposalDropped, ProposalUnknown, EngineClosed) as exc:
                logger.info("failing %d runs is left to the next leader: %s", len(ids), exc)
                return

    async def _abandon_lost(self, node: str, lost: list[tuple[str, ExecutionId]]) -> None:
        try:
            await self._propose(
                [
                    c.AbandonExecutions(
                        execution_ids=tuple(lost),
                        finished_at=self.clock.now(),
                        reason=f"node {node} no longer knows the run "
                        "(it restarted, or the dispatch was lost)",
                    )
                ]
            )
        except (NotLeader, ProposalDropped, ProposalUnknown, EngineClosed) as exc:
            logger.info("failing the lost runs of %s is left to the next leader: %s", node, exc)

    async def _reconcile_remote_runs(self, term: int, inherited: list[Execution]) -> None:
        """A new leader asks each node that holds ``inherited`` runs (running on other
        nodes when it took over) what it runs, which fences the previous leader off that
        node; inherited runs that the node does not know, or on failed nodes, are failed.
        Each node is asked until it answers (or is declared failed), all at once."""
        for node in sorted({ex.node_name for ex in inherited}):
            self._nursery_start(self._reconcile_node, node, term)

    async def _abandon_own_unknown(self, term: int) -> None:
        """A new leader's own runs that its runner does not know (an intent the previous
        leader committed for this node but never dispatched) are failed: nothing else
        would ever end them. A dispatch of the previous leader still on its way is
        refused here now (its term is stale), so none of them can start later."""
        service = self._runner_service
        if service is None:
            return
        unknown = [
            ex
            for ex in self._fsm.running.values()
            if ex.node_name == self.node_name
            and not service.knows(ex.id)
            and not (self._runner is not None and self._runner.is_active(ex.id))
        ]
        if unknown and self._lead_term == term:
            await self._settle_unknown(self.node_name, unknown, service.since, term)

    async def _send_dispatch(self, job: Job, execution: Execution, term: int) -> None:
        """Hand a committed run to its node; a run that cannot be handed over is failed."""
        assert self._dispatcher is not None
        node = execution.node_name
        expires = self.clock.now() + timedelta(seconds=DISPATCH_EXPIRY)
        dispatch = Dispatch(
            job=job, execution=execution, term=term, leader=self.node_name, expires_at=expires
        )
        self._dispatch_pending[execution.id] = expires
        try:
            await self._dispatcher.send(node, dispatch)
            return
        except DispatchRefused as exc:
            reason = exc.message  # "node N refused the run: why"
        except PeerUnreachable as exc:  # never sent
            reason = f"could not reach node {node}: {exc.message}"
        except RpcError as exc:
            # it may still arrive (held in a partition's buffers): past its expiry the node
            # refuses it, so then the node's own answer is final
            reason = f"could not reach node {node}: {exc.message}"
            await self.clock.sleep_until(expires + timedelta(seconds=MAX_CLOCK_SKEW))
            try:
                state = await self._dispatcher.query(node, term=term)
            except RpcError:
                pass
            else:
                if any(r.execution_id == execution.id for r in (*state.active, *state.pending)):
                    return  # it arrived in time after all
        finally:
            self._dispatch_pending.pop(execution.id, None)
        logger.warning("%s: %s", execution.id, reason)
        await self._report(
            c.RunFinished(
                job_name=execution.job_name,
                execution_id=execution.id,
                finished_at=self.clock.now(),
                success=False,
                output=reason,
            )
        )

    def _open_raft_storage(self) -> RaftStorage:
        cfg = self.config
        if cfg.data_dir is None:
            return MemoryStorage()
        durability = "fsync" if cfg.raft_durability == "fsync" else "none"
        storage = SqliteRaftStorage(cfg.data_dir / RAFT_DB, durability=durability)
        storage.pace = self._guard.pause  # its saves run in worker threads
        return storage

    async def _raft_storage_call(self, fn: Callable[[], T]) -> T:
        if self.config.data_dir is None:
            return fn()
        return await trio.to_thread.run_sync(fn)

    async def _adopt_pre_raft_state(self, loaded: Any) -> Any:
        """A data dir written by a single-node trickle from before Raft: its state is kept
        as the start of a new log (indexes start again at 1). Refused in a cluster: the
        other servers would not hold that state."""
        if set(self.config.peers) - {self.node_name}:
            raise ValidationError(
                f"{self.config.data_dir} holds state from a single-node trickle without a "
                "Raft log; start it alone once (no peers) to adopt it, then add peers",
                field="data_dir",
            )
        logger.warning("adopting the state of a data dir from before Raft into a new log")
        await self._db(self._store_reset_index)
        return attrs.evolve(loaded, applied_index=0)

    async def _adopt_renamed_server(
        self, storage: RaftStorage, durable: DurableState, stored: ConfState
    ) -> RaftStorage:
        """This server's name is not in its stored Raft configuration. A lone server whose
        name changed (the default name is the host name, which containers change) keeps
        its state: committed entries are applied, then a new log starts with it under the
        new name. Anywhere else this is refused: the cluster does not know this name."""
        cfg = self.config
        voters = ", ".join(sorted(stored.voters)) or "none"
        if set(cfg.peers) - {self.node_name} or len(stored.voters) != 1:
            raise ValidationError(
                f"node name {self.node_name!r} is not a member of the Raft configuration "
                f"stored in {cfg.data_dir} (voters: {voters}): it was removed from that "
                "cluster, or renamed. Start it with --join to rejoin the cluster (it starts "
                "anew and is added back), with its old --node-name, or with a new data dir",
                field="node_name",
            )
        assert self._log is not None and self._store is not None
        applied, commit = self._fsm.applied_index, durable.hard_state.commit
        pending = [e for e in durable.entries if applied < e.index <= commit]
        if pending:
            self._log.replay_until = commit
            await self._log.apply(pending)
        logger.warning(
            "node name changed from %s to %s: the state is kept and a new Raft log starts",
            voters,
            self.node_name,
        )
        await trio.to_thread.run_sync(storage.close)
        if cfg.data_dir is None:
            fresh: RaftStorage = MemoryStorage()
        else:
            for suffix in ("", "-wal", "-shm"):
                (cfg.data_dir / (RAFT_DB + suffix)).unlink(missing_ok=True)
            fresh = await trio.to_thread.run_sync(self._open_raft_storage)
        await self._raft_storage_call(fresh.load)
        await self._db(self._store_reset_index)
        self._fsm.applied_index = 0
        return fresh

    async def _start_anew_after_removal(
        self, storage: RaftStorage, stored: ConfState
    ) -> RaftStorage:
        """This server was removed from its cluster (``trickle leave``, ``raft
        remove-peer``) and starts again with ``join``: its old Raft log is set aside
        (``raft.db.removed``) and its applied state emptied, so that it starts as a new
        server, waits to be added back by the leader, and receives the cluster's state
        from it (a log that starts again at 1 must not be applied on top of the old one)."""
        cfg = self.config
        assert self._store is not None
        logger.warning(
            "%s is not in its stored Raft configuration (voters: %s): it was removed from "
            "the cluster; it starts anew, waits to be added back and takes the cluster's "
            "state from the leader (the old Raft log is kept as %s.removed)",
            self.node_name,
            ", ".join(sorted(stored.voters)),
            RAFT_DB,
        )
        await trio.to_thread.run_sync(storage.close)
        if cfg.data_dir is None:
            fresh: RaftStorage = MemoryStorage()
        else:
            for suffix in ("", "-wal", "-shm"):
                path = cfg.data_dir / (RAFT_DB + suffix)
                if path.exists():
                    path.replace(cfg.data_dir / (RAFT_DB + suffix + ".removed"))
            fresh = await trio.to_thread.run_sync(self._open_raft_storage)
        await self._raft_storage_call(fresh.load)
        await self._db(self._store.import_image, empty_image())
        self._fsm.restore(applied_index=0, jobs=[], running=[], meta=None)
        self._sched.replan_all()
        return fresh

    def _store_reset_index(self) -> None:
        assert self._store is not None
        self._store.reset_applied_index(0)

    async def _start_transport(self, nursery: trio.Nursery) -> Any:
        """The Raft/RPC listener, or an in-process one for a server without peers."""
        cfg = self.config
        if not self._own_transport:
            if not getattr(self._transport, "serving", False):
                await nursery.start(self._transport.serve)
            return self._transport
        if cfg.raft_bind is None:
            if set(cfg.peers) - {self.node_name}:
                raise ValidationError(
                    "a server with peers needs raft_bind (its Raft listener)", field="raft_bind"
                )
            self._transport = MemoryNetwork().transport(NodeId(self.node_name))
        else:
            host, port = parse_host_port(cfg.raft_bind, field="raft_bind")
            self._transport = TcpTransport(NodeId(self.node_name), bind=(host, port))
            self._transport.set_peers(
                {
                    NodeId(name): parse_host_port(addr, field=f"peers.{name}")
                    for name, addr in cfg.peers.items()
                    if name != self.node_name
                }
            )
        await nursery.start(self._transport.serve)
        return self._transport

    async def _start_gossip(self, nursery: trio.Nursery) -> None:
        """Gossip (SWIM membership), when configured: serve it, follow its events, and
        join the configured addresses in the background (retried until one answers)."""
        cfg = self.config
        if not cfg.gossip_enabled and self._gossip_transport is None:
            self._gossip = None
            return
        if self._gossip is None:
            keys = [decode_key(k) for k in cfg.encrypt]
            keyring = Keyring(keys, primary=keys[0]) if keys else Keyring()
            bind = cfg.gossip_bind or f"{DEFAULT_GOSSIP_BIND}:{GOSSIP_PORT}"
            own_transport = self._gossip_transport is None
            self._gossip = GossipDriver(
                self.node_name,
                config=self._gossip_config
                or attrs.evolve(
                    GOSSIP_PRESETS[cfg.gossip_profile](),
                    dead_node_reclaim_time=DEAD_NODE_RECLAIM_TIME,
                ),
                transport=self._gossip_transport,
                bind=bind if own_transport else None,
                advertise=cfg.gossip_advertise if own_transport else None,
                keyring=keyring,
                tags=self._gossip_tags(),
                rng=random.Random(self._rng.getrandbits(64)),
            )
        else:
            self._gossip.set_tags(self._gossip_tags())  # the Raft port may have changed
        subscription = self._gossip.subscribe()
        await nursery.start(self._gossip.serve)
        self._member = None
        nursery.start_soon(self._follow_gossip, subscription, name="trickle gossip events")
        if cfg.join:
            nursery.start_soon(self._join_gossip, name="trickle gossip join")

    def _gossip_tags(self) -> dict[str, str]:
        """What this node tells the cluster: its tags (with the reserved ones), its
        version and, on a server with a Raft/RPC listener, ``rpc_addr``."""
        tags = self.config.node_tags
        tags["version"] = __version__
        tags["boot"] = self._boot  # a new one per start: the leader notices a restart
        if self.config.server:
            tags.update(
                membership_tags(
                    expect=self.config.bootstrap_expect or None, raft_formed=self._raft_formed
                )
            )
        address = self.raft_address
        if address is not None:
            host = address[0] if address[0] not in ("0.0.0.0", "::", "") else self._addr
            tags["rpc_addr"] = f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
            tags["port"] = str(address[1])
        return tags

    async def _join_gossip(self) -> None:
        assert self._gossip is not None
        cfg = self.config
        attempts = cfg.join_retry_max or None
        answered = await self._gossip.join(
            cfg.join, attempts=attempts, retry_interval=cfg.join_retry_interval
        )
        if not answered:
            raise JoinFailed(
                f"{self.node_name} could not join the cluster: none of {', '.join(cfg.join)} "
                f"answered in {attempts} attempts"
            )
        conflict = self._gossip.name_conflict()
        if conflict is not None:
            raise JoinFailed(
                f"another node named {self.node_name!r} is already in the cluster, at "
                f"{conflict[0]}:{conflict[1]}: node names must be unique (the default is the "
                "host name; give each node of one host its own --node-name)"
            )
        logger.info("%s joined the cluster through %d of %s", self.node_name, answered, cfg.join)

    async def _follow_gossip(self, subscription: GossipSubscription) -> None:
        """Membership changes become engine events (member_joined, ...)."""
        with subscription:
            async for event in subscription:
                if isinstance(event, GossipMemberEvent):
                    for waiting in (self._bootstrap_waiter, self._reconciler):
                        if waiting is not None:
                            waiting.wake()
                    if event.kind in (GossipEventKind.JOIN, GossipEventKind.UPDATE):
                        self._learn_rpc_address(event.member)
                        self._notice_life(event.kind, event.member)
                        if event.kind is GossipEventKind.JOIN and isinstance(
                            self._transport, TcpTransport
                        ):  # back (a restart): no dispatch lost to a reconnect backoff
                            self._transport.redial(NodeId(event.member.name))
                    elif event.kind is GossipEventKind.FAIL and self.is_leader():
                        self._nursery_start(self._fail_runs_of, event.member.name)
                    kind = _MEMBER_EVENT_KINDS[event.kind]
                    member = _member_from_gossip(event.member)
                    self._publish(
                        Event(
                            kind=kind,
                            at=self.clock.now(),
                            data={
                                "member": member.name,
                                "status": member.status,
                                "addr": member.addr,
                                "port": member.port,
                                "tags": dict(member.tags),
                            },
                        )
                    )
                    if event.member.name != self.node_name:
                        logger.info("member %s: %s", event.kind.value, event.member.describe())
                elif isinstance(event, EventsLost):
                    logger.warning("%s: %s", self.node_name, event.describe())

    async def leave(self, timeout: float = GOSSIP_LEAVE_TIMEOUT) -> bool:  # noqa: ASYNC109
        """Leave the cluster gracefully: the other nodes see this one as "left", not
        "failed". Waits up to ``timeout`` seconds for the news to spread; returns True if
        it did (or there is no gossip, so nobody to tell). Stop the engine afterwards."""
        self._check_open()
        if self._gossip is None:
            return True
        self._leaving_cluster = True
        await self._hand_over_leadership(timeout)
        return await self._gossip.leave(timeout)

    async def _hand_over_leadership(self, timeout: float) -> None:  # noqa: ASYNC109
        """A leader that leaves first hands leadership to a caught-up voter, so that the
        next leader removes it from the Raft configuration."""
        raft = self._raft
        if raft is None or not self.is_leader():
            return
        status = raft.status()
        progress = {str(name): p.match for name, p in status.progress.items()}
        servers = {view.name: view for view in self._server_views()}
        successor = pick_successor(status.conf, servers, progress, leader=self.node_name)
        if successor is None:
            return
        try:
            await raft.transfer_leadership(NodeId(successor), timeout=timeout)
            logger.info("%s: leadership handed to %s before leaving", self.node_name, successor)
        except TrickleError as exc:  # LeadershipTransferFailed, NotLeader, ...
            logger.warning("%s: could not hand leadership over: %s", self.node_name, exc)

    @property
    def gossip_address(self) -> tuple[str, int] | None:
        """Where this node's gossip listens (advertised host, bound port); None without
        gossip."""
        gossip = self._gossip
        if gossip is None or not gossip.serving:
            return None
        address = gossip.address
        return None if address is None else (str(address[0]), int(address[1]))

    def _gossip_statistics(self) -> GossipDriverStats | None:
        gossip = self._gossip
        return None if gossip is None else gossip.statistics()

    @property
    def gossip(self) -> GossipDriver | None:
        """The gossip member of this node (None without gossip): statistics, keyring
        rotation (``install_key``/``use_key``/``remove_key``), user events."""
        return self._gossip

    def _learn_rpc_address(self, member: GossipMember) -> None:
        """Dial a node at the RPC address it gossips (``rpc_addr``): Raft for servers,
        dispatch for every node. A later address replaces an earlier or configured one."""
        address = member.tags.get("rpc_addr")
        if member.name == self.node_name or not address:
            return
        if self._peer_addresses.get(member.name) == address:
            return
        try:
            parsed = parse_host_port(address, field="rpc_addr")
        except ValidationError:
            logger.warning("member %s gossips a bad rpc_addr %r", member.name, address)
            return
        self._peer_addresses[member.name] = address
        if self._own_transport and isinstance(self._transport, TcpTransport):
            current = dict(self._transport.peers())
            current[NodeId(member.name)] = parsed
            self._transport.set_peers(current)

    def update_peers(self, addresses: Mapping[str, str]) -> None:
        """Tell this server where peers' Raft listeners are now, ``{name: "host:port"}``
        (e.g. after a peer restarted on another port). Names must be in ``peers``."""
        parsed = {}
        for name, address in addresses.items():
            if name not in self.config.peers:
                raise ValidationError(f"{name} is not a peer of this server", field="peers")
            parsed[NodeId(name)] = parse_host_port(address, field=f"peers.{name}")
        self._peer_addresses.update(addresses)
        if self._own_transport and isinstance(self._transport, TcpTransport):
            current = dict(self._transport.peers())
            current.update(parsed)
            self._transport.set_peers(current)

    @property
    def raft_address(self) -> tuple[str, int] | None:
        """Where this server's Raft/RPC listener is bound (None: no listener)."""
        address = getattr(self._transport, "address", None)
        return None if address is None else (str(address[0]), int(address[1]))

    # -- leadership ----------------------------------------------------------------------
    def _on_soft_state(self, soft: SoftState) -> None:
        if soft.leader != self._known_leader:
            self._known_leader = soft.leader
            self._publish(
                Event(
                    kind=EventKind.LEADER_CHANGED,
                    at=self.clock.now(),
                    data={"leader": soft.leader, "term": soft.term},
                )
            )
        if soft.leader is not None and self._runner_service is not None:
            self._runner_service.note_leader(soft.term, soft.leader)
        if soft.leader is not None and not self._raft_formed:
            self._note_raft_formed()  # a joining server was added to a cluster
        leading = soft.role is Role.LEADER
        self._metrics.is_leader.set(1 if leading else 0)
        if leading and self._lead_term != soft.term:
            if self._lead_scope is not None:
                self._lead_scope.cancel()
            self._lead_term = soft.term
            if self._nursery is not None:
                self._nursery.start_soon(self._lead, soft.term, name="trickle leadership")
        elif not leading and self._lead_term:
            logger.info("%s: no longer the leader (term %d)", self.node_name, soft.term)
            self._lead_term = 0
            if self._log is not None:
                self._log.leader_term = 0
            if self._lead_scope is not None:
                self._lead_scope.cancel()

    async def _lead(self, term: int) -> None:
        """While this server leads in ``term``: catch up, then schedule (fenced by term)."""
        assert self._raft is not None and self._log is not None
        scope = trio.CancelScope()
        self._lead_scope = scope
        try:
            with scope:
                # every entry of earlier terms is applied here before we decide anything
                await self._raft.read_barrier()
                if self._lead_term != term or self._nursery is None:
                    return
                self._log.leader_term = term
                self._lead_since = self.clock.now()
                logger.info("%s: leading in term %d", self.node_name, term)
                for retry in self._fsm.pending_retries():
                    self._spawn_retry(retry)
                for due in self._fsm.pending_dependents():
                    self._nursery.start_soon(self._run_dependents, due)
                inherited = [
                    ex for ex in self._fsm.running.values() if ex.node_name != self.node_name
                ]
                self._nursery.start_soon(self._reconcile_remote_runs, term, inherited)
                self._nursery.start_soon(self._abandon_own_unknown, term)
                await self._plan_all_and_catch_up(term)
                self._led.set()
                if self._draining:
                    return
                self._sched_scope = trio.CancelScope()
                async with trio.open_nursery() as lead_nursery:
                    if self._gossip is not None:
                        # Raft's membership follows gossip's servers while this one leads
                        self._reconciler = MembershipReconciler(self._raft, self._server_views)
                        await lead_nursery.start(self._reconciler.run)
                    await self._schedule_loop(term)
                    lead_nursery.cancel_scope.cancel()
        except (NotLeader, ProposalDropped, ProposalUnknown, EngineClosed) as exc:
            logger.info("%s: leadership in term %d ended: %s", self.node_name, term, exc)
        finally:
            self._reconciler = None
            if self._log.leader_term == term:
                self._log.leader_term = 0
            held = self._take_held(term)
            if held:
                self._leave_intents(held)

    async def _on_restored(self) -> None:
        """The state was replaced by a snapshot: plan every job again."""
        self._sched.replan_all()
        self._wake_scheduler()

    async def _launch_never_started(self, runs: list[Execution]) -> None:
        """Launch, here, runs committed for this node that no process of it started (the
        launch journal says so): at their scheduled instant if still ahead, else now,
        unless past their job's catch-up window or their job is gone (then failed with
        the reason). A leader that asked this node meanwhile may launch them too; this
        node runs each once (``RunnerService.knows``, checked right before starting)."""
        service, runner = self._runner_service, self._runner
        assert service is not None and runner is not None
        failed: dict[str, list[tuple[str, ExecutionId]]] = {}
        for ex in sorted(runs, key=lambda e: e.started_at):
            if ex.scheduled_at is not None and ex.scheduled_at > self.clock.now():
                await self.clock.sleep_until(ex.scheduled_at)
            if self._raft is not None:
                try:  # a leader may have settled it meanwhile (failed, or dispatched here)
                    await self._raft.read_barrier()
                except (NotLeader, EngineClosed):
                    return  # the next leader asks this node (a new boot) and settles them
            job = self._fsm.jobs.get(ex.job_name)
            if ex.id not in self._fsm.running or service.knows(ex.id):
                continue  # settled meanwhile, or launched by a leader's dispatch
            restarted = f"node {self.node_name} restarted"
            reason = _late_launch_refusal(ex, job, self.clock.now(), restarted)
            if reason or job is None:
                failed.setdefault(reason, []).append((ex.job_name, ex.id))
                continue
            if not runner.accepting:
                return  # stopping: the next start sees them again
            logger.info(
                "%s: launching %s of job %s (committed for this node, never started before "
                "its restart)",
                self.node_name,
                ex.id,
                ex.job_name,
            )
            self._counts["relaunched"] += 1
            service.launched_here(ex.id)
            runner.submit(job, ex)
        await self._fail_unlaunched(failed)

    async def _abandon_orphans_when_possible(self) -> None:
        """Fail this node's executions left running by its previous life, once a leader
        takes the command (retried while there is none)."""
        assert self._raft is not None
        while True:
            try:
                await self._abandon_orphans()
                return
            except (NotLeader, ProposalDropped, ProposalUnknown) as exc:
                logger.info("recording interrupted runs waits for a leader: %s", exc)
                await self._raft.wait_leader()
                await trio.sleep(self.config.raft_tick * RAFT_CONFIG.election_ticks)

    async def _serve_run_job(self, src: str, payload: bytes) -> bytes:
        """RUN_JOB_METHOD: a follower's manual run, launched here on the leader."""
        try:
            job = await self.run_job(payload.decode())
        except TrickleError as exc:
            return msgpack.packb([False, exc.http_status, exc.message])
        return msgpack.packb([True, job.name, ""])

    async def _forward_run(self, name: str) -> Job:
        assert self._raft is not None and self._transport is not None
        leader = self._raft.soft_state.leader
        if leader is None:
            raise NotLeader(None)
        try:
            reply = await self._transport.call(
                leader, RUN_JOB_METHOD, name.encode(), timeout=LAUNCH_TIMEOUT
            )
        except RpcError as exc:
            raise NotLeader(leader) from exc
        ok, status, message = msgpack.unpackb(reply)
        if not ok:
            raise LeaderRefused(message, http_status=status)
        await self._read_barrier()
        return self._job(name)

    async def _blocking(self, fn: Callable[[], T]) -> T:
        """A blocking step of starting: in a worker thread, or inline for an in-memory
        engine (quick there; a thread would let a MockClock race ahead while it runs)."""
        if self.config.data_dir is None:
            await trio.lowlevel.checkpoint()
            return fn()
        return await trio.to_thread.run_sync(fn)

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """A store read: in a worker thread, or inline for the in-memory store (short
        calls; keeps tests on a MockClock deterministic)."""
        if self.config.data_dir is None:
            await trio.lowlevel.checkpoint()
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args, limiter=self._read_limiter)

    def _check_open(self) -> None:
        if not self._open:
            raise EngineClosed()

    def _check_server(self) -> None:
        if not self.config.server:
            raise NotAServer(self.node_name)

    async def drain(self, grace: float) -> bool:
        """Stop launching runs (fires, retries, children, manual runs) and wait up to
        ``grace`` seconds for this node's running and queued executions to finish.

        Returns True if the node is idle. Reads and job writes keep working; cancel the
        engine afterwards to stop it. Executions still running when it is cancelled are
        recorded as failed at the next start.
        """
        self._draining = True
        if self._sched_scope is not None:
            self._sched_scope.cancel()
        if self._runner is None:
            return True
        held = self._take_held()  # committed ahead, not launched yet: failed, not launched
        with trio.move_on_after(grace):
            if held:
                await self._fail_intents(held, self._drained_reason())
            while self._launching:
                self._launch_idle = trio.Event()
                await self._launch_idle.wait()
            await self._runner.wait_idle()
            return True
        return False

    def _check_launch(self) -> None:
        self._check_open()
        if self._draining:
            raise EngineClosed()

    async def _propose(
        self,
        commands: list[c.Command],
        *,
        urgent: bool = False,
        fence: int | None = None,
        linger: bool = False,
    ) -> list[Applied]:
        self._check_open()
        assert self._log is not None
        return await self._log.propose(commands, urgent=urgent, fence=fence, linger=linger)

    async def _propose_one(self, command: c.Command) -> Any:
        [applied] = await self._propose([command])
        if applied.error is not None:
            raise applied.error
        return applied.result

    # -- jobs ------------------------------------------------------------------------------
    async def put_job(self, job: Job) -> tuple[Job, bool]:
        """Create or fully replace ``job``; returns (stored job, created?).

        Dkron's full-replace semantics: fields not given return to their defaults, while
        the counters, ``status``, ``last_*``, ``next`` (same schedule) and
        ``dependent_jobs`` are kept. Refused while paused (``SubmissionsPaused``).
        """
        self._check_server()
        self._check_open()
        if self._paused:
            raise SubmissionsPaused()
        now = self.clock.now()
        validate_job(job, executors=self._executors, processors=self._processors, now=now)
        result: tuple[Job, bool] = await self._propose_one(c.PutJob(job=job, now=now))
        return result

    async def get_job(self, name: str) -> Job:
        """The job as of now: linearizable (see ``EngineConfig.linearizable_reads``). On
        a stopped engine: as it last knew it."""
        self._check_server()
        await self._read_barrier()
        return self._job(name)

    def _job(self, name: str) -> Job:
        job = self._fsm.jobs.get(name)
        if job is None:
            raise JobNotFound(name)
        return job

    async def _read_barrier(self) -> None:
        """Wait until this server's state holds every write committed before the call."""
        if self.config.linearizable_reads and self._open and self._log is not None:
            await self._log.read_barrier()

    async def list_jobs(self, query: JobQuery | None = None) -> tuple[list[Job], int]:
        """One page of jobs and the count after filtering, before slicing (linearizable;
        on a stopped engine: as it last knew them)."""
        self._check_server()
        await self._read_barrier()
        return self._list_jobs(query)

    def _list_jobs(self, query: JobQuery | None) -> tuple[list[Job], int]:
        q = query or JobQuery()
        sort = JOB_SORTS.get(q.sort)
        if sort is None:
            raise ValidationError(
                f"unknown sort {q.sort!r}; use one of {', '.join(sorted(JOB_SORTS))}",
                field="_sort",
            )
        order = q.order.lower()
        if order not in ("asc", "desc"):
            raise ValidationError("order must be ASC or DESC", field="_order")
        if q.status is not None and q.status not in JOB_STATUSES:
            raise ValidationError(
                f"unknown status {q.status!r}; use one of {', '.join(sorted(JOB_STATUSES))}",
                field="status",
            )
        if q.start < 0 or (q.end is not None and q.end < 0):
            raise ValidationError("_start and _end cannot be negative", field="_start")
        jobs: Iterable[Job] = self._fsm.jobs.values()
        if q.q:
            needle = q.q
            jobs = [j for j in jobs if needle in j.name or needle in j.displayname]
        if q.status is not None:
            want = "" if q.status == "untriggered" else q.status
            jobs = [j for j in jobs if j.status == want]
        if q.disabled is not None:
            jobs = [j for j in jobs if j.disabled == q.disabled]
        if q.metadata:
            md = dict(q.metadata)
            jobs = [j for j in jobs if all(j.metadata.get(k) == v for k, v in md.items())]
        items = list(jobs)
        if sort == "name":
            items.sort(key=lambda j: j.name, reverse=order == "desc")
        else:
            items.sort(key=lambda j: j.name)
            items.sort(key=lambda j: _sort_key(getattr(j, sort)), reverse=order == "desc")
        total = len(items)
        end = total if q.end is None else min(q.end, total)
        return items[q.start : end] if q.start < end else [], total

    async def delete_job(self, name: str) -> Job:
        """Delete a job and its history. ``JobHasDependents`` (409) if it has children."""
        self._check_server()
        job: Job = await self._propose_one(c.DeleteJob(name=name, now=self.clock.now()))
        return job

    async def toggle_job(self, name: str) -> Job:
        """Flip ``disabled``. Enabling plans from now: fires while disabled are not missed."""
        self._check_server()
        job: Job = await self._propose_one(c.ToggleJob(name=name, now=self.clock.now()))
        return job

    async def run_job(self, name: str) -> Job:
        """Run now, on the job's target nodes (manual trigger); returns once dispatched.

        Refused with ``JobDisabled`` (409) for a disabled job, ``ConcurrencyForbidden``
        (409) for a forbid job already running, ``NoTargetNodes`` (404) if no node matches,
        ``EngineClosed`` (503) while draining.
        """
        self._check_server()
        self._check_launch()
        if not self.is_leader():
            return await self._forward_run(name)
        job = self._job(name)
        decision = self._sched.manual(
            job, self.clock.now(), self._target_members(), unreachable=self._unreachable()
        )
        try:
            results = await self._launch(decision.commands)
        finally:
            self._sched.settle(decision.runs)
        self._log_trimmed(decision)
        for _job, ex, applied in decision.started(results):
            if applied.error is not None:
                raise applied.error
            self._dispatch(job, ex)
        return self._job(name)

    async def restore(self, jobs: list[Job]) -> list[str]:
        """Create or replace many jobs, parents first (Dkron's ``/v1/restore``).

        Every job is validated first; if one is invalid, nothing is stored and the
        ``ValidationError`` names it. Returns one message per job, in the order applied.
        """
        self._check_server()
        self._check_open()
        now = self.clock.now()
        names = {j.name for j in jobs}
        if len(names) != len(jobs):
            raise ValidationError("the restore file names a job more than once", field="file")
        for job in jobs:
            try:
                validate_job(job, executors=self._executors, processors=self._processors, now=now)
            except ValidationError as exc:
                raise ValidationError(f"job {job.name}: {exc.message}", field=exc.field) from None
            if (
                job.parent_job
                and job.parent_job not in names
                and job.parent_job not in self._fsm.jobs
            ):
                raise ValidationError(
                    f"job {job.name}: parent job {job.parent_job} is neither in the file "
                    "nor stored",
                    field="parent_job",
                )
        ordered = _parents_first(jobs)
        # Each job is set a millisecond after the previous one: a restore of 10,000
        # `@every 10s` jobs must not make 10,000 fires fall in the same instant forever.
        results = await self._propose(
            [c.PutJob(job=j, now=now + i * RESTORE_STAGGER) for i, j in enumerate(ordered)]
        )
        messages = []
        for job, applied in zip(ordered, results, strict=True):
            if applied.error is not None:
                messages.append(f"fail create {job.name}: {applied.error.message}")
            else:
                _, created = applied.result
                messages.append(f"success {'create' if created else 'update'} {job.name}")
        return messages

    # -- executions ------------------------------------------------------------------------
    async def list_executions(
        self,
        job_name: str,
        *,
        sort: str = "started_at",
        order: str = "desc",
        start: int = 0,
        end: int | None = None,
    ) -> tuple[list[Execution], int]:
        """One page of a job's history (newest first by default) and its total size."""
        self._check_server()
        self._check_open()
        await self._read_barrier()
        self._job(job_name)
        column = EXECUTION_SORTS.get(sort)
        if column is None:
            raise ValidationError(
                f"unknown sort {sort!r}; use one of {', '.join(sorted(EXECUTION_SORTS))}",
                field="_sort",
            )
        if order.lower() not in ("asc", "desc"):
            raise ValidationError("order must be ASC or DESC", field="_order")
        if start < 0 or (end is not None and end < 0):
            raise ValidationError("_start and _end cannot be negative", field="_start")
        assert self._store is not None
        store = self._store
        return await self._db(
            lambda: store.list_executions(
                job_name, sort=column, order=order.lower(), start=start, end=end
            )
        )

    async def get_execution(self, job_name: str, execution_id: str) -> Execution:
        self._check_server()
        self._check_open()
        await self._read_barrier()
        self._job(job_name)
        assert self._store is not None
        found = await self._db(self._store.get_execution, job_name, execution_id)
        if found is None:
            raise ExecutionNotFound(job_name, execution_id)
        return found

    async def delete_executions(self, job_name: str) -> Job:
        """Delete a job's history and reset its counters; running executions stay."""
        self._check_server()
        job: Job = await self._propose_one(c.DeleteExecutions(job_name=job_name))
        return job

    def busy(self, *, cluster: bool = False) -> list[BusyExecution]:
        """Executions this node runs or queues, oldest first. ``cluster`` (a server):
        every execution running anywhere in the cluster, as this server's state has them
        (Dkron's ``/v1/busy``), each with the tail of its output as streamed to this
        server so far; ``queued`` is known only for this node's runs."""
        local = self._runner.busy() if self._runner is not None else []
        if not cluster or not self.config.server:
            return local
        mine = {b.execution.id: b for b in local}
        out = list(local)
        for ex in self._fsm.running.values():
            if ex.id not in mine:
                tail = self._output_tails.get(ex.id, "")
                out.append(BusyExecution(execution=ex, queued=False, output_tail=tail))
        out.sort(key=lambda b: (b.execution.started_at, b.execution.id))
        return out

    async def stats(self, days: int = 30) -> list[DayStats]:
        """Executions finished per UTC day over the last ``days`` days, oldest first."""
        self._check_server()
        self._check_open()
        await self._read_barrier()
        days = max(1, min(days, 365))
        today = self.clock.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        first = today - timedelta(days=days - 1)
        assert self._store is not None
        return await self._db(self._store.daily_stats, first, today)

    # -- events, extension, control ----------------------------------------------------------
    def subscribe(
        self,
        *,
        kinds: Iterable[EventKind | str] | None = None,
        jobs: Iterable[str] | None = None,
        maxsize: int | None = None,
    ) -> Subscription:
        """Events as they happen, filtered by kind and job name (None: all).

        Each subscription buffers up to ``maxsize`` events (the config's default); past
        that its events are dropped and it receives one ``lagged`` event with the count.
        """
        sub = self._hub.subscribe(kinds=kinds, jobs=jobs, maxsize=maxsize)
        self._metrics.subscribers.set(self._hub.subscriber_count)
        return sub

    def register_executor(self, name: str, fn: PythonExecutorFn) -> None:
        """Make ``async def fn(ctx)`` available as executor ``name``."""
        self._executors.register_python(name, fn)

    def register_processor(self, name: str, fn: PythonProcessorFn) -> None:
        """Make ``async def fn(ctx) -> str | None`` available as processor ``name``."""
        self._processors.register_python(name, fn)

    def executor_names(self) -> list[str]:
        return list(self._executors.names())

    def processor_names(self) -> list[str]:
        return list(self._processors.names())

    def pause(self) -> None:
        """Refuse new and updated jobs (503) until ``unpause``; scheduling goes on."""
        if not self._paused:
            self._paused = True
            self._metrics.paused.set(1)
            self._publish(Event(kind=EventKind.PAUSED, at=self.clock.now()))

    def unpause(self) -> None:
        if self._paused:
            self._paused = False
            self._metrics.paused.set(0)
            self._publish(Event(kind=EventKind.UNPAUSED, at=self.clock.now()))

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def running(self) -> bool:
        """True from ``task_status.started`` until the engine stops."""
        return self._open

    def members(self) -> list[Member]:
        """The members of the cluster, sorted by name: every node gossip knows (alive,
        failed or left, until reaped), and the servers of the Raft configuration that
        gossip does not know (static peers: "alive" while this server has a connection
        to them). Without gossip: this node and its Raft peers."""
        found: dict[str, Member] = {}
        gossip = self._gossip
        if gossip is not None and gossip.serving:
            for gm in gossip.members():
                found[gm.name] = _member_from_gossip(
                    gm, leaving=self._leaving_cluster and gm.name == self.node_name
                )
        raft = self._raft
        names: set[str] = {self.node_name}
        if raft is not None and self._open:
            names |= raft.conf.voters | raft.conf.learners
        for name in names - found.keys():
            found[name] = self._member_of(name)
        return [found[name] for name in sorted(found)]

    def leader(self) -> Member | None:
        raft = self._raft
        if raft is None or not self._open or raft.soft_state.leader is None:
            return None
        name = raft.soft_state.leader
        gossip = self._gossip
        if gossip is not None:
            gm = gossip.member(name)
            if gm is not None:
                return _member_from_gossip(
                    gm, leaving=self._leaving_cluster and gm.name == self.node_name
                )
        return self._member_of(name)

    def raft_peers(self) -> list[RaftPeer]:
        """The servers of the Raft configuration, voters and learners, sorted by name."""
        self._check_server()
        self._check_open()
        raft = self._raft
        assert raft is not None
        status = raft.status()
        conf = status.conf
        peers = []
        for name in sorted(conf.voters | conf.learners):
            progress = status.progress.get(name)
            peers.append(
                RaftPeer(
                    name=name,
                    address=self._raft_address_of(name),
                    voter=name in conf.voters,
                    leader=name == status.leader,
                    match_index=None if progress is None else progress.match,
                )
            )
        return peers

    def _raft_address_of(self, name: str) -> str:
        if name == self.node_name:
            address = self.raft_address
            return "" if address is None else f"{address[0]}:{address[1]}"
        return self._peer_addresses.get(name, "")

    async def remove_raft_peer(self, name: str) -> None:
        """Remove server ``name`` from the Raft configuration (a server that will not come
        back; ``trickle raft remove-peer``). Any server may ask: the leader does it.
        Raises NotFound if ``name`` is not a member, ConfChangeRejected if the change
        cannot be made now (another one is in progress)."""
        self._check_server()
        self._check_open()
        raft = self._raft
        assert raft is not None
        conf = raft.conf
        if name not in conf.voters | conf.learners:
            raise NotFound(f"{name} is not a server of the Raft configuration")
        await raft.propose_conf_change(ConfChange(ConfChangeOp.REMOVE, NodeId(name)))

    def is_leader(self) -> bool:
        raft = self._raft
        return self._open and raft is not None and raft.soft_state.role is Role.LEADER

    def _member_of(self, name: str) -> Member:
        if name == self.node_name:
            return self._self_member()
        address = self._peer_addresses.get(name, "")
        host = parse_host_port(address, field="peers")[0] if address else ""
        connected = getattr(self._transport, "is_connected", None)
        alive = connected is None or bool(connected(NodeId(name)))
        return Member(
            name=name,
            addr=host,
            port=GOSSIP_PORT,
            tags={"server": "true", "dkron_server": "true"},
            status="alive" if alive else "failed",
        )

    def next_fires(
        self, schedule: str, *, timezone: str = "", job_name: str = "", count: int = 5
    ) -> list[datetime]:
        """The next ``count`` fires of a schedule from now (``ScheduleError`` if bad)."""
        now = self.clock.now()
        parsed = parse_schedule(schedule, timezone=timezone, job_name=job_name, anchor=now)
        return upcoming(parsed, now, max(0, min(count, 100)))

    def statistics(self) -> EngineStatistics:
        runner = self._runner
        return EngineStatistics(
            jobs=len(self._fsm.jobs),
            running_executions=runner.running_count if runner else 0,
            queued_executions=runner.queued_count if runner else 0,
            commands_applied=self._log.commands_applied if self._log else 0,
            fires_total=self._counts["fires"],
            fires_skipped=self._counts["skipped"],
            fires_missed=self._counts["missed"],
            executions_succeeded=self._counts["succeeded"],
            executions_failed=self._counts["failed"],
            runs_relaunched=self._counts["relaunched"],
            subscribers=self._hub.subscriber_count,
            events_published=self._hub.published,
            events_dropped=self._hub.dropped,
            paused=self._paused,
            is_leader=self.is_leader(),
        )

    @property
    def metrics_registry(self) -> Any:
        """The prometheus ``CollectorRegistry`` of this engine (one per engine)."""
        runner = self._runner
        m = self._metrics
        m.jobs.set(len(self._fsm.jobs))
        m.running.set(runner.running_count if runner else 0)
        m.queued.set(runner.queued_count if runner else 0)
        m.subscribers.set(self._hub.subscriber_count)
        m.events_dropped.set(self._hub.dropped)
        return m.registry

    # -- internals: members and targets ----------------------------------------------------------
    def _self_member(self) -> Member:
        gossip = self._gossip
        if gossip is not None and self._open:
            gm = gossip.member(self.node_name)
            if gm is not None:
                return _member_from_gossip(
                    gm, leaving=self._leaving_cluster and gm.name == self.node_name
                )
        if self._member is None:
            self._member = Member(
                name=self.node_name,
                addr=self._addr,
                port=GOSSIP_PORT,
                tags=self.config.node_tags,
                status="alive",
            )
        return self._member

    def _target_members(self) -> list[Member]:
        """The members a run can go to: the alive members gossip knows (with an RPC
        address); without gossip this server knows no other node to hand runs to, so it
        runs them itself."""
        if self._gossip is None:
            return [self._self_member()]
        dispatchable = self._dispatchable()
        return [m for m in self.members() if m.name in dispatchable]

    def _unreachable(self) -> frozenset[str]:
        """Other nodes this server failed to connect to just now (a node killed a moment
        ago, before gossip declares it failed): "any N" targets them last."""
        check = getattr(self._transport, "is_unreachable", None)
        gossip = self._gossip
        if check is None or gossip is None:
            return frozenset()
        return frozenset(
            m.name for m in gossip.members() if m.name != self.node_name and check(NodeId(m.name))
        )

    def _dispatchable(self) -> set[str]:
        """Nodes a run can be handed to: this one, and those with a known RPC address."""
        names = {self.node_name}
        gossip = self._gossip
        if gossip is not None:
            by_name = not isinstance(self._transport, TcpTransport)  # an injected network
            names.update(m.name for m in gossip.members() if by_name or m.tags.get("rpc_addr"))
        return names

    def _dispatch(
        self, job: Job, execution: Execution, *, start_at: datetime | None = None
    ) -> None:
        """Hand a committed run to the runner: once its intent is in the log, it runs."""
        assert self._runner is not None
        if execution.node_name != self.node_name:
            if not self._lead_term:
                # deposed since the intent committed: the new leader asks the node what it
                # runs and settles the run (a dispatch of term 0 would only be refused)
                logger.info("not dispatching %s: no longer the leader", execution.id)
                return
            self._nursery_start(self._send_dispatch, job, execution, self._lead_term)
            return
        if not self._runner.accepting:  # stopping: the next start records it as failed
            logger.info("not starting %s: the node is stopping", execution.id)
            return
        service = self._runner_service
        if service is not None:
            if service.term > self._lead_term:
                # a newer leader asked this node what it runs: that leader settles the run
                # (and launches it if it is still due), so it must not start here as well
                logger.info(
                    "not starting %s: a leader of term %d settles it", execution.id, service.term
                )
                return
            if service.knows(execution.id):  # launched here already (after a restart, this
                # node launches the runs committed for it that it never started)
                logger.info("not starting %s again: this node launched it", execution.id)
                return
            service.launched_here(execution.id)
        self._runner.submit(job, execution, start_at=start_at)

    async def _launch(self, commands: list[c.Command], *, term: int | None = None) -> list[Applied]:
        """Propose run intents, fenced by this leader's term (``term``: the one the caller
        decided in; a scheduler of an earlier term is refused); shielded, so that a run
        committed is also dispatched (the caller dispatches right after), and ``drain``
        waits for launches in flight. Raises NotLeader / ProposalDropped when this server
        does not lead (then nothing was launched), EngineClosed when it stops or after
        LAUNCH_TIMEOUT without a commit (the cluster lost its quorum)."""
        self._launching += 1
        try:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + LAUNCH_TIMEOUT
                results = await self._propose(commands, urgent=True, fence=term)
            if scope.cancelled_caught:
                raise EngineClosed()
            return results
        finally:
            self._launching -= 1
            if self._launching == 0:
                self._launch_idle.set()

    # -- internals: reacting to applied commands ---------------------------------------------------
    def _publish(self, event: Event) -> None:
        self._hub.publish(event)
        if event.kind == EventKind.EXECUTION_FINISHED and event.execution is not None:
            self._output_tails.pop(event.execution.id, None)
        if self._early_output and event.execution is not None:
            if event.kind == EventKind.EXECUTION_STARTED:
                for chunk in self._early_output.release(event.execution.id):
                    if event.execution.node_name != self.node_name:
                        self._keep_tail(event.execution.id, chunk)
                    self._on_output_event(event.execution, chunk)
            elif event.kind == EventKind.EXECUTION_FINISHED:
                self._early_output.drop(event.execution.id)

    def _on_applied(self, pairs: list[tuple[c.Command, Applied]], replay: bool) -> None:
        m = self._metrics
        m.commands.inc(len(pairs))
        log = self._log
        if log is not None and log.batches != self._batches_counted:  # a batch may come in
            m.log_batches.inc(log.batches - self._batches_counted)  # several calls
            self._batches_counted = log.batches
        for _command, applied in pairs:
            for effect in applied.effects:
                if isinstance(effect, c.JobSaved):
                    self._plan(effect.job)
                elif isinstance(effect, c.JobRemoved):
                    self._sched.forget(effect.name)
            if replay:
                continue
            for event in applied.events:
                if event.kind == EventKind.EXECUTION_FINISHED and event.execution is not None:
                    ex = event.execution
                    if self._runner_service is not None:
                        self._runner_service.settled(ex.id)
                    if ex.success:
                        self._counts["succeeded"] += 1
                        m.succeeded.inc(ex.job_name)
                    else:
                        self._counts["failed"] += 1
                        m.failed.inc(ex.job_name)
                if (
                    event.kind == EventKind.EXECUTION_STARTED
                    and event.execution is not None
                    and event.execution.id in self._ahead_ids
                ):  # committed ahead: published when it is launched
                    self._started_events[event.execution.id] = event
                    continue
                self._publish(event)
            for reaction in applied.reactions:
                self._react(reaction)

    def _plan(self, job: Job) -> None:
        self._sched.plan(job)
        if job.next is not None and (self._wake_at is None or job.next < self._wake_at):
            self._wake_scheduler()

    def _wake_scheduler(self) -> None:
        """Make the scheduler look at its plan again (it changed)."""
        if self._wake_scope is not None:
            self._wake_scope.cancel()

    def _react(self, reaction: Reaction) -> None:
        if self._nursery is None:
            return
        if isinstance(reaction, RetryDue):
            self._spawn_retry(reaction)
        elif isinstance(reaction, DependentsDue):
            self._nursery.start_soon(self._run_dependents, reaction)

    def _spawn_retry(self, retry: RetryDue) -> None:
        key = (retry.group, retry.node_name, retry.attempt)
        if self._nursery is None or key in self._retries_waiting:
            return
        self._retries_waiting.add(key)
        self._nursery.start_soon(self._retry, retry)

    async def _retry(self, retry: RetryDue) -> None:
        key = (retry.group, retry.node_name, retry.attempt)
        try:
            await self.clock.sleep_until(retry.at)
            job = self._fsm.jobs.get(retry.job_name)
            if job is None or self._draining:
                return
            decision = self._sched.retry(retry, self.clock.now())
            try:
                [applied] = await self._launch(decision.commands)
            finally:
                self._sched.settle(decision.runs)
            [(job, ex)] = decision.runs
            if applied.error is None:
                self._dispatch(job, ex)
            else:
                logger.warning("retry of %s refused: %s", job.name, applied.error.message)
        except (EngineClosed, NotLeader, ProposalDropped, ProposalUnknown):
            pass
        finally:
            self._retries_waiting.discard(key)

    async def _run_dependents(self, due: DependentsDue) -> None:
        if self._draining:
            return
        decision = self._sched.dependents(
            due, self.clock.now(), self._target_members(), unreachable=self._unreachable()
        )
        for skip in decision.skipped:
            self._note_skip(skip.job_name, skip.scheduled_at, skip.reason)
        self._log_trimmed(decision)
        try:
            results = await self._launch(decision.commands)
        except (EngineClosed, NotLeader, ProposalDropped, ProposalUnknown):
            return
        finally:
            self._sched.settle(decision.runs)
        for child, ex, applied in decision.started(results):
            if applied.error is None:
                self._dispatch(child, ex)

    def _note_skip(self, name: str, at: datetime, reason: str) -> None:
        """Count and log a fire not run (its FiresSkipped record publishes the event)."""
        self._counts["skipped"] += 1
        self._metrics.fires_skipped.labels(reason=reason.split(":")[0]).inc()
        logger.info("job %s: fire at %s skipped: %s", name, at.isoformat(), reason)

    def _note_missed(self, records: list[c.FiresMissed]) -> None:
        for record in records:
            self._counts["missed"] += record.count
            self._metrics.fires_missed.inc(record.count)

    def _log_trimmed(self, decision: Decision) -> None:
        for note in decision.trimmed:
            logger.info("%s", note)

    # -- internals: runner callbacks ------------------------------------------------------------
    def _on_output(self, execution: Execution, chunk: str) -> None:
        """A chunk printed by a run on this node: published here, and streamed to the
        leader and every other server."""
        if self.config.server and execution.id not in self._fsm.running:
            # a follower runs what the leader dispatched before applying its start here
            self._early_output.hold(execution.job_name, execution.id, chunk)
        else:
            self._on_output_event(execution, chunk)
        if self._runner_service is not None:
            self._runner_service.on_output(execution, chunk)

    def _on_output_event(self, execution: Execution, chunk: str) -> None:
        self._publish(
            Event(
                kind=EventKind.EXECUTION_OUTPUT,
                at=self.clock.now(),
                job_name=execution.job_name,
                execution=execution,
                chunk=chunk,
            )
        )

    def _on_run_start(self, execution: Execution, at: datetime) -> None:
        self._guard.started(execution.id)
        if execution.scheduled_at is not None and execution.trigger in (
            Trigger.SCHEDULE,
            Trigger.CATCHUP,
        ):
            late = (at - execution.scheduled_at).total_seconds()
            if execution.trigger == Trigger.SCHEDULE:
                self._metrics.lateness.observe(max(0.0, late))

    async def _report(self, finished: c.RunFinished) -> None:
        """Commit a run's result; across leader changes it is offered again until a leader
        takes it (a result committed twice is refused the second time, harmlessly)."""
        while True:
            try:
                [applied] = await self._propose([finished], linger=True)
                break
            except (NotLeader, ProposalDropped, ProposalUnknown) as exc:
                logger.info("result of %s waits for a leader: %s", finished.execution_id, exc)
                if self._raft is None:
                    raise EngineClosed() from exc
                with trio.move_on_after(self.config.raft_tick * RAFT_CONFIG.election_ticks * 4):
                    await self._raft.wait_leader()
                await trio.sleep(self.config.raft_tick * RAFT_CONFIG.heartbeat_ticks)
        if applied.error is not None:
            logger.warning("result of %s refused: %s", finished.execution_id, applied.error.message)

    # -- internals: scheduling ----------------------------------------------------------------
    async def _abandon_orphans(self) -> None:
        """Executions this node ran when it stopped are failed, never left running.

        With a trusted launch journal (a restart of the process, not of the machine) the
        runs committed for this node that it never launched are told apart: they are
        launched now, late, within their job's catch-up window (``_launch_never_started``)
        rather than failed. Runs it may have launched are failed as before."""
        await self._settle_orphans()
        service = self._runner_service
        if service is not None and service.journal_trusted and self._raft is not None:
            # and once more when every intent committed before the restart is applied: a
            # run the journal says was launched must be found here and failed, as no leader
            # fails a run its node says it knows (NotLeader: retried by the caller)
            await self._raft.read_barrier()
            await self._settle_orphans()

    async def _settle_orphans(self) -> None:
        """One pass of ``_abandon_orphans`` over the state applied so far."""
        assert self._runner is not None
        service = self._runner_service
        mine = [
            ex
            for ex in self._fsm.running.values()
            if ex.node_name == self.node_name and not self._runner.is_active(ex.id)
        ]
        never: list[Execution] = []
        if service is not None and service.journal_trusted:
            # launched in this process: its result is on its way, not an orphan
            mine = [
                ex
                for ex in mine
                if service.launched_before_restart(ex.id) or not service.knows(ex.id)
            ]
            margin = timedelta(seconds=MAX_CLOCK_SKEW)
            never = [
                ex
                for ex in mine
                if not service.knows(ex.id) and ex.started_at > service.since + margin
            ]
        fresh = [ex for ex in never if ex.id not in self._never_started]
        if fresh and self._nursery is not None:
            self._never_started.update(ex.id for ex in fresh)
            self._nursery.start_soon(self._launch_never_started, fresh)
        never_ids = {ex.id for ex in never}
        orphans = [(ex.job_name, ex.id) for ex in mine if ex.id not in never_ids]
        if not orphans:
            return
        logger.warning("marking %d executions interrupted by a restart as failed", len(orphans))
        await self._propose(
            [
                c.AbandonExecutions(
                    execution_ids=tuple(orphans),
                    finished_at=self.clock.now(),
                    reason=f"node {self.node_name} stopped while the execution was running",
                )
            ]
        )

    async def _plan_all_and_catch_up(self, term: int) -> None:
        """Plan every job; fires that fell while no scheduler ran are run once, late, if
        still inside the job's catch-up window, and recorded as missed otherwise."""
        catch_up = self._sched.catch_up(self.clock.now())
        for job in catch_up.unparsable:
            logger.warning(
                "job %s has a schedule this version cannot parse (%r): it will not fire "
                "until it is updated",
                job.name,
                job.schedule,
            )
        self._note_missed(catch_up.missed)
        if catch_up.commands:
            await self._propose(catch_up.commands)
        if catch_up.fires:
            self._metrics.catchup_runs.inc(len(catch_up.fires))
            await self._fire(catch_up.fires, term=term, catchup=True)

    async def _schedule_loop(self, term: int) -> None:
        assert self._sched_scope is not None
        with self._sched_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._dispatch_forever, name="trickle dispatcher")
                await self._schedule_forever(term)

    async def _schedule_forever(self, term: int) -> None:
        """Wake when the earliest planned fire is LAUNCH_AHEAD_MIN away (or a held-back fire
        is due), commit the intents of the fires due within LAUNCH_AHEAD, and hand them to
        the dispatcher, which launches each at its scheduled instant."""
        while self._lead_term == term:
            self._wake_at = self._sched.planner.next_wakeup()
            wake = self._sched.next_wakeup(lead=LAUNCH_AHEAD_MIN)
            with trio.CancelScope() as scope:
                self._wake_scope = scope
                if wake is None:
                    await trio.sleep_forever()
                else:
                    await self.clock.sleep_until(wake)
            self._wake_scope = None
            due = self._sched.due(self.clock.now(), ahead=LAUNCH_AHEAD, limit=MAX_FIRES_PER_BATCH)
            if due:
                await self._fire(due, term=term)

    async def _dispatch_forever(self) -> None:
        """Launch committed runs at their scheduled instants (all those due at once)."""
        guard = self._guard
        try:
            while True:
                await self._dispatch_due(guard)
        finally:
            guard.expect(None)
            guard.launched()

    async def _dispatch_due(self, guard: LaunchGuard) -> None:
        """Sleep until the earliest held run's instant (or until an earlier one is held),
        then launch every run due."""
        at = self._ahead[0][0] if self._ahead else None
        self._dispatch_at = at
        with trio.CancelScope() as scope:
            self._dispatch_scope = scope
            if at is None:
                guard.expect(None)
                await trio.sleep_forever()
            else:  # a run of this node is launched spin_lead early, another's on time
                remote = self._ahead[0][3].node_name != self.node_name
                wake = at if remote else at - self._spin_lead
                guard.expect(trio.current_time() + (wake - self.clock.now()).total_seconds())
                await self.clock.sleep_until(wake)
        self._dispatch_scope = None
        try:
            spun: list[str] = []
            latest = self._launch_due(spun)
            if latest is not None:  # held until they start (_on_run_start)
                until = trio.current_time() + (latest - self.clock.now()).total_seconds()
                guard.hold(until, spun)
        finally:
            guard.launched()

    def _launch_due(self, spun: list[str]) -> datetime | None:
        """Launch the held runs due by now, and those due within the clock's spin lead:
        those start at their instant (see ``Runner.submit``; their ids are added to
        ``spun``). Returns the latest such instant (None: none)."""
        now = self.clock.now()
        horizon = now + self._spin_lead
        gone: list[Execution] = []
        moved: list[Execution] = []
        latest: datetime | None = None
        while self._ahead and self._ahead[0][0] <= horizon:
            at, _seq, name, ex, term = self._ahead[0]
            if at > now and ex.node_name != self.node_name:
                break  # another node's run is sent at its instant (the next wake)
            heapq.heappop(self._ahead)
            job = self._fsm.jobs.get(name)
            if term != self._lead_term:  # committed by an earlier leadership of ours
                moved.append(ex)
            elif job is None:
                gone.append(ex)
            else:
                start_at = at if at > now else None
                self._launch_now(job, ex, start_at=start_at)
                if start_at is not None:
                    latest = start_at
                    spun.append(ex.id)
        if moved:
            self._leave_intents(moved)
        if gone:
            self._nursery_start(
                self._fail_intents,
                gone,
                "the job was deleted before the run's scheduled launch",
            )
        return latest

    def _nursery_start(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    def _launch_now(self, job: Job, ex: Execution, *, start_at: datetime | None = None) -> None:
        """Dispatch a committed run, publishing its held-back start event first.
        ``start_at``: its instant, a moment ahead (within the spin lead; a run of this
        node only): the run starts then."""
        self._ahead_ids.discard(ex.id)
        event = self._started_events.pop(ex.id, None)
        if event is not None:
            self._publish(event)
        self._dispatch(job, ex, start_at=start_at)

    def _hold(self, ex: Execution, term: int) -> None:
        """Give the dispatcher a run committed in ``term`` to launch at its instant."""
        assert ex.scheduled_at is not None
        at = ex.scheduled_at
        self._ahead_seq += 1
        heapq.heappush(self._ahead, (at, self._ahead_seq, ex.job_name, ex, term))
        if self._dispatch_scope is not None and (
            self._dispatch_at is None or at < self._dispatch_at
        ):
            self._dispatch_scope.cancel()

    def _take_held(self, term: int | None = None) -> list[Execution]:
        """Remove and return the committed runs still waiting for their instant: those
        committed in ``term``, or all of them (None)."""
        held = [e for e in sorted(self._ahead) if term is None or e[4] == term]
        if term is None:
            self._ahead.clear()
        else:
            self._ahead = [e for e in self._ahead if e[4] != term]
            heapq.heapify(self._ahead)
        return [e[3] for e in held]

    def _leave_intents(self, executions: list[Execution]) -> None:
        """Runs committed ahead in a leadership that ended before their instant: left to
        the next leader, which asks their nodes and launches those still due (see
        ``_settle_unknown``). Failing them here would lose runs a failover need not lose."""
        for ex in executions:
            self._ahead_ids.discard(ex.id)
            event = self._started_events.pop(ex.id, None)
            if event is not None:
                self._publish(event)
        logger.info(
            "%s: %d runs committed ahead are left to the next leader",
            self.node_name,
            len(executions),
        )

    async def _fail_intents(self, executions: list[Execution], reason: str) -> None:
        """Record committed runs that will not be launched as failed, with ``reason``.
        Shielded and counted as a launch, so ``drain`` waits for it."""
        self._launching += 1
        try:
            logger.info("not launching %d committed runs: %s", len(executions), reason)
            for ex in executions:  # started (as committed), then finished with the reason
                self._ahead_ids.discard(ex.id)
                event = self._started_events.pop(ex.id, None)
                if event is not None:
                    self._publish(event)
            with trio.CancelScope(shield=True):
                await self._propose(
                    [
                        c.AbandonExecutions(
                            execution_ids=tuple((ex.job_name, ex.id) for ex in executions),
                            finished_at=self.clock.now(),
                            reason=reason,
                        )
                    ]
                )
        except (EngineClosed, NotLeader, ProposalDropped, ProposalUnknown):
            pass
        finally:
            self._launching -= 1
            if self._launching == 0:
                self._launch_idle.set()

    async def _fire(
        self, due: list[tuple[str, datetime]], *, term: int, catchup: bool = False
    ) -> None:
        """Launch fires: one batch of commands; each run is dispatched once committed, at
        its scheduled instant if that is still ahead (launch ahead), else at once."""
        decision = Decision()
        guard = self._guard
        try:
            i = 0
            while i < len(due):
                # in slices, standing aside for launches: a slice is one step of the loop,
                # of DECIDE_CHUNK fires at most, and it ends early when a launch comes near
                # (a slice of 16 took up to 0.8 ms: launches waited for its end)
                await guard.stand_aside()
                now = self.clock.now()
                members, unreachable = self._target_members(), self._unreachable()
                end = min(len(due), i + DECIDE_CHUNK)
                while i < end:
                    decision.extend(
                        self._sched.decide(
                            due[i : i + 1], now, members, catchup=catchup, unreachable=unreachable
                        )
                    )
                    i += 1
                    if guard.imminent():
                        break
        except BaseException:  # cancelled between slices: nothing decided is launched
            self._sched.settle(decision.runs)
            raise
        for skip in decision.skipped:
            self._note_skip(skip.job_name, skip.scheduled_at, skip.reason)
        if decision.missed:  # one line per decision: under overload, one per job floods
            logger.warning(
                "%d fires of %d jobs missed (scheduler behind), e.g. job %s",
                sum(record.count for record in decision.missed),
                len(decision.missed),
                decision.missed[0].job_name,
            )
        self._note_missed(decision.missed)
        self._log_trimmed(decision)
        self._counts["fires"] += decision.fires
        self._metrics.fires.inc(decision.fires)
        if not decision.commands:
            return
        ahead = {ex.id for _job, ex in decision.runs if _at_of(ex) > now}
        self._ahead_ids.update(ahead)
        try:
            results = await self._launch(decision.commands, term=term)
        except (EngineClosed, NotLeader, ProposalDropped, ProposalUnknown):
            self._ahead_ids.difference_update(ahead)
            return
        finally:
            self._sched.settle(decision.runs)
        with trio.CancelScope(shield=True):  # what committed is held or dispatched below
            await self._guard.stand_aside()  # (50 runs to hold: a step of its own)
        unlaunched: list[Execution] = []
        for job, ex, applied in decision.started(results):
            if applied.error is None:
                if ex.id not in self._ahead_ids or _at_of(ex) <= self.clock.now():
                    self._launch_now(job, ex)
                elif self._draining:
                    unlaunched.append(ex)
                else:
                    self._hold(ex, term)
            else:
                self._ahead_ids.discard(ex.id)
                if isinstance(applied.error, TrickleError):
                    logger.info("job %s: run refused: %s", job.name, applied.error.message)
        if unlaunched:
            await self._fail_intents(unlaunched, self._drained_reason())

    def _drained_reason(self) -> str:
        return f"node {self.node_name} was drained before the run's scheduled launch"


def _at_of(ex: Execution) -> datetime:
    """The instant a run is launched at: its scheduled instant (runs launched ahead)."""
    return ex.scheduled_at or ex.started_at


def _stored_conf(durable: DurableState) -> ConfState | None:
    """The Raft configuration a durable state holds: the snapshot's, then each membership
    change in the log (None: nothing stored yet)."""
    conf = durable.snapshot.meta.conf if durable.snapshot is not None else None
    start = durable.snapshot.meta.index if durable.snapshot is not None else 0
    for entry in durable.entries:
        if entry.index <= start or entry.kind is not EntryKind.CONF_CHANGE:
            continue
        change = decode_conf_change(entry.data)
        voters = set(conf.voters) if conf else set()
        learners = set(conf.learners) if conf else set()
        node = change.node
        if change.op is ConfChangeOp.ADD_LEARNER:
            learners.add(node)
        elif change.op in (ConfChangeOp.PROMOTE, ConfChangeOp.ADD_VOTER):
            learners.discard(node)
            voters.add(node)
        elif change.op is ConfChangeOp.REMOVE:
            voters.discard(node)
            learners.discard(node)
        conf = ConfState(voters=frozenset(voters), learners=frozenset(learners))
    return conf


def _sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception a (nested) group holds, or None if it holds several."""
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        if len(found.exceptions) != 1:
            return None
        found = found.exceptions[0]
    return found


def _member_from_gossip(member: GossipMember, *, leaving: bool = False) -> Member:
    """A gossip member as the API shows it (serf's statuses; "leaving" while this node's
    own leave spreads)."""
    status = _MEMBER_STATUS[member.state]
    if leaving and status == "alive":
        status = "leaving"
    return Member(
        name=member.name,
        addr=member.addr[0],
        port=member.addr[1],
        tags=dict(member.tags),
        status=status,
    )


def _local_address() -> str:
    """This host's address as others would reach it (blocking: call in a thread)."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    return (1, value)


def _late_launch_refusal(ex: Execution, job: Job | None, now: datetime, why: str) -> str:
    """Why a committed run that was never launched is not launched now, late ("" if it
    is): its job is gone, or its scheduled instant is past the job's catch-up window
    (``why``: what kept it from its launch, e.g. "the leader changed")."""
    if job is None:
        return "the job was deleted before the run was launched"
    if ex.scheduled_at is not None and (now - ex.scheduled_at).total_seconds() > job.catchup_window:
        return (
            f"{why} before the run was launched, and the job's catch-up window "
            f"({job.catchup_window:g}s) has passed"
        )
    return ""


def _parents_first(jobs: list[Job]) -> list[Job]:
    by_name = {j.name: j for j in jobs}
    ordered: list[Job] = []
    seen: set[str] = set()

    def visit(job: Job, stack: tuple[str, ...]) -> None:
        if job.name in seen:
            return
        if job.name in stack:
            raise ValidationError(f"parent cycle through {job.name}", field="parent_job")
        parent = by_name.get(job.parent_job)
        if parent is not None:
            visit(parent, (*stack, job.name))
        seen.add(job.name)
        ordered.append(job)

    for job in jobs:
        visit(job, ())
    return ordered


__all__ = ["Engine", "EngineStatistics", "JobQuery", "NoTargetNodes", "__version__"]
