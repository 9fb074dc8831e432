"""A deterministic simulator of a Raft cluster: many ``RaftNode`` cores, one seed, no Trio.

Everything happens in one synchronous discrete-event loop: a heap of (virtual time in ms,
sequence number, event). Ticks, message deliveries, disk completions, client requests,
crashes and restarts are events; all randomness comes from one ``random.Random(seed)``
(each node's core gets its own rng drawn from it), so a seed replays exactly, in any
process, whatever ``PYTHONHASHSEED`` is::

    sim = RaftSimulation(3, seed=sim_seed)
    leader = sim.check_one_leader()
    index = sim.one(b"x", expected_servers=3)
    sim.disconnect(leader)
    sim.one(b"y", expected_servers=2)

What is simulated:

- Time: one tick every ``tick_ms`` (10 ms) of virtual time per node, each node on its own
  phase. ``sim_raft_config()``: heartbeats every 10 ticks (100 ms: 10 per second, MIT
  6.824's limit), elections after 20-40 ticks (200-400 ms).
- Network (``NetworkConfig``): per-message delay, loss, duplication, reordering, "long
  reordering" of responses, partitions into groups, one-way cuts, per-node disconnect.
- Disk: a Ready's writes complete ``disk_ms`` later; until then its ``messages`` wait (a
  leader's ``leader_messages`` go at once), and the node takes no other Ready. A crash
  loses the saves in flight: the durable state is what the last completed save left.
  With ``crash_point_rate`` a node may also crash right after any storage step (save
  done, messages sent, each entry applied, advance, compaction) and restart later.
  A crash loses the node's state machine unless it "survives" (``app_survives_crash``),
  as if the application kept its own durable copy; else it is rebuilt from snapshot + log.
- Application: by default a key-value state machine (``KvApp``: put/append/get/delete as msgpack
  commands, deduplicated per client), 6.824-style ``start()`` of opaque commands, and
  ``Client``s that send operations to whoever they think leads, retry on timeout, read
  through ReadIndex (or, with ``unsafe_reads``, from any node that believes it leads) and
  record a history (``sim.history()``) for the linearizability checker. The application
  snapshots every ``snapshot_every`` applied entries (``RaftNode.compact``). Another
  application plugs in through ``app_factory`` (a ``SimApp``: ``applied``, ``chain``,
  ``apply(entry)``; ``trickle.testing.clustersim`` runs the engine's state machine so).
- Safety invariants (``trickle.testing._raftsim_oracle``) checked after every step; a
  violation raises ``InvariantViolation`` with the seed, the virtual time, the last trace
  lines and the command that replays it: ``pytest <test> --sim-seed S``.
- A trace of every delivered message and every Ready with its virtual time: a bounded ring
  printed as ``describe()`` lines (``trace_tail()``), and a running hash (``trace_hash()``)
  over a fingerprint of each: every header field, entries and snapshot data by index,
  term and length, hashed as a tuple of ints and floats (their hash does not depend on
  PYTHONHASHSEED). Rendering every ``describe()`` would cost half the simulator's time;
  messages and Readys are kept as they are and folded into the fingerprint by batches.
- Counters: messages, RPCs (requests) and bytes sent, for 6.824's Count and RPCBytes.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import math
import os
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs
import msgpack

from trickle.errors import NotLeader, ProposalDropped, ValidationError
from trickle.raft._fastinit import fast_frozen_init, frozen_factory
from trickle.raft.config import RaftConfig
from trickle.raft.core import RaftNode, Ready, Role, Status
from trickle.raft.messages import (
    ColdEntry,
    ConfChange,
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    NodeId,
    Snapshot,
)
from trickle.raft.storage import EntriesCompacted, fill_cold_entries
from trickle.raft.wire import encode_message
from trickle.testing._raftsim_kv import KvApp, KvCommand, encode_command, new_command
from trickle.testing._raftsim_net import (
    MESSAGE_OVERHEAD_BYTES,
    RESPONSES,
    Network,
    NetworkConfig,
    message_bytes,
)
from trickle.testing._raftsim_oracle import Oracle, SimStore

__all__ = [
    "Client",
    "ClientOp",
    "InvariantViolation",
    "KvApp",
    "KvCommand",
    "NetworkConfig",
    "RaftSimulation",
    "SimApp",
    "SimConfig",
    "SimNode",
    "SimStats",
    "SimulationFailure",
    "sim_raft_config",
]

TICK_MS = 10.0  # virtual milliseconds per tick
SIM_HOT_LOG_BYTES = 0  # RaftConfig.hot_log_bytes of the scenarios (see sim_raft_config)
HEARTBEAT_TICKS = 10  # 100 ms: 10 heartbeats per second (6.824's limit)
ELECTION_TICKS = 20  # elections after 200-400 ms without a leader
ELECTION_TIMEOUT_MS = 1000.0  # 6.824's RaftElectionTimeout: the time allowed for an election
TRACE_LINES = 300  # trace lines kept (and printed on a failure: the last 60)
FAILURE_TRACE_LINES = 60
STATUS_CHECK_EVERY = 8  # steps of a node between two checks of its full status()
TRACE_FOLD_ITEMS = 1024  # trace items recorded before they are folded into the fingerprint

REQUEST_TYPES = frozenset(MessageType) - RESPONSES
_FLUSHING = Ready()  # SimNode.inflight while a lazy commit index is being saved
ROLE_NUMBERS = {role: number for number, role in enumerate(Role)}
_LEADER = Role.LEADER  # (globals: an enum member read through its class is slow)
_FOLLOWER = Role.FOLLOWER


def sim_raft_config(**overrides: Any) -> RaftConfig:
    """The RaftConfig of the 6.824-style scenarios: 10 heartbeats/s, 200-400 ms elections
    (with the default ``tick_ms``). Keyword arguments override fields."""
    fields: dict[str, Any] = {
        "election_ticks": ELECTION_TICKS,
        "heartbeat_ticks": HEARTBEAT_TICKS,
        # every applied, durable entry is cold: every APPEND to a follower behind reads
        # its entries back from the store, as the driver does for a slow follower
        "hot_log_bytes": SIM_HOT_LOG_BYTES,
    }
    fields.update(overrides)
    return RaftConfig(**fields)


@attrs.frozen(kw_only=True)
class SimConfig:
    """How a simulation runs.

    tick_ms: virtual ms per tick. raft: every node's RaftConfig.
    network: delays and faults (``NetworkConfig.reliable()`` by default).
    disk_ms: uniform latency of one durable save.
    snapshot_every: the application snapshots (and compacts) every this many applied
        entries; None: never.
    crash_point_rate: probability that a node crashes right after each storage step.
    restart_after_ms: downtime of a node crashed at a crash point (then it restarts).
    app_survives_crash: probability a crash keeps the node's state machine (else it is
        rebuilt from the snapshot and the log at restart).
    client_timeout_ms / client_retry_ms: a client retries elsewhere after the timeout, and
        after a refusal waits client_retry_ms before asking again.
    trace_lines: lines kept in the trace ring.
    lazy_commit: run the Ready protocol as trickle's driver does (and etcd allows): a
        commit index that moved alone is not saved at once (not even with entries: it
        rides on a save at most every ``commit_flush_ms``, or is saved alone after that
        long idle), and committed entries that earlier saves made durable are applied
        before the Ready's save. A crash can then leave a disk whose commit index is
        behind what was applied.
    status_every_step: check each node's full ``status()`` after every one of its steps
        (slower; by default every STATUS_CHECK_EVERY steps, and at every Ready that
        reports a change of role, term or vote).
    wire_bytes: count bytes as the real wire encoding (``trickle.raft.wire``) would send
        them (slower); else estimate them (``message_bytes``).
    """

    tick_ms: float = TICK_MS
    raft: RaftConfig = attrs.field(factory=sim_raft_config)
    network: NetworkConfig = attrs.field(factory=NetworkConfig.reliable)
    disk_ms: tuple[float, float] = (0.2, 2.0)
    snapshot_every: int | None = None
    crash_point_rate: float = 0.0
    restart_after_ms: tuple[float, float] = (50.0, 800.0)
    app_survives_crash: float = 0.0
    client_timeout_ms: float = 600.0
    client_retry_ms: float = 20.0
    trace_lines: int = TRACE_LINES
    wire_bytes: bool = False
    status_every_step: bool = False
    lazy_commit: bool = False
    commit_flush_ms: float = 1000.0

    def __attrs_post_init__(self) -> None:
        if self.tick_ms <= 0:
            raise ValidationError("tick_ms must be positive", field="tick_ms")
        if self.snapshot_every is not None and self.snapshot_every < 1:
            raise ValidationError("snapshot_every must be at least 1", field="snapshot_every")
        for name in ("crash_point_rate", "app_survives_crash"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValidationError(f"{name} must be in [0, 1]", field=name)


class SimApp(Protocol):
    """A replica's application, applied from the Raft log by the simulator.

    ``applied``: the last index applied (0 at first). ``chain``: the hash chain of the
    applied prefix (``trickle.testing._raftsim_kv.chain_next`` over every entry, no-ops and
    conf changes included), which the safety oracle compares across nodes. ``apply`` is
    given every committed entry in order and returns what a waiting client is answered.
    Snapshots (``SimConfig.snapshot_every``) need ``KvApp``: the oracle reads its images.
    """

    applied: int
    chain: bytes

    def apply(self, entry: Entry) -> Any: ...


AppFactory = Callable[[NodeId], SimApp]


class SimulationFailure(AssertionError):
    """A scenario failed (a liveness expectation, or an invariant); the message carries the
    seed, the virtual time, the replay command and the last trace lines."""


class InvariantViolation(SimulationFailure):
    """A Raft safety property broke."""


@fast_frozen_init
@attrs.frozen
class ClientOp:
    """One client operation as the client saw it (plain data for the linearizability
    checker). ``op`` is put/append/get/delete; ``output`` the value a get returned (None:
    absent key; always None for writes); ``return_time`` is ``math.inf`` for an operation
    that never returned (it may or may not have taken effect). Times are virtual ms."""

    client: int
    op: str
    key: str
    value: str | None
    output: str | None
    call_time: float
    return_time: float

    @property
    def input(self) -> tuple[str, str, str | None]:
        """(op, key, value): what the client asked."""
        return self.op, self.key, self.value

    @property
    def pending(self) -> bool:
        """Never returned: it may or may not have taken effect."""
        return self.return_time == math.inf


_new_client_op = frozen_factory(ClientOp)


@attrs.define
class SimStats:
    """Counters since the start (messages include duplicates and those lost on the way)."""

    messages_sent: int = 0
    rpcs_sent: int = 0  # requests (APPEND, HEARTBEAT, VOTE, ...): 6.824's RPC count
    bytes_sent: int = 0  # message_bytes() of every message sent
    messages_delivered: int = 0
    messages_dropped: int = 0
    readies: int = 0
    saves: int = 0
    crashes: int = 0
    restarts: int = 0
    events: int = 0
    cold_fills: int = 0  # APPENDs whose cold entries were read back from the store
    cold_compacted: int = 0  # ... not sent: compacted since their Ready (the driver drops them)
    sent_by_type: dict[MessageType, int] = attrs.field(factory=dict)


class SimNode:
    """One simulated server: its disk (``store``, survives crashes), its state machine
    (``app``), and while it is up its ``raft`` core. Read-only for tests."""

    def __init__(
        self,
        id: NodeId,
        oracle: Oracle,
        bootstrap: ConfState | None,
        app: SimApp | None = None,
    ) -> None:
        self.id = id
        self.store = SimStore(id, oracle)
        self.app: Any = KvApp() if app is None else app  # KvApp unless app_factory says
        self.bootstrap = bootstrap
        self.raft: RaftNode | None = None
        self.up = False
        self.incarnation = 0
        self.inflight: Ready | None = None  # or _FLUSHING
        self.unsaved_commit: HardState | None = None  # lazy_commit: commit not yet saved
        self.commit_flushed_at = 0.0
        self.inflight_leader_term = 0
        self.role = _FOLLOWER
        self.term = 0
        self.leader: NodeId | None = None
        self.vote: NodeId | None = None
        self.steps = 0
        self.conf: ConfState | None = bootstrap
        self.last_snapshot = 0
        self.pending_writes: dict[int, tuple[int, _Request]] = {}
        self.pending_reads: dict[bytes, _Request] = {}
        self.ready_reads: list[tuple[int, _Request]] = []

    @property
    def is_leader(self) -> bool:
        return self.up and self.role is _LEADER

    def status(self) -> Status:
        if self.raft is None:
            raise SimulationFailure(f"node {self.id} is down")
        return self.raft.status()


@attrs.define(slots=True)
class _Request:
    client: Client
    seq: int
    attempt: int
    cmd: KvCommand


class Client:
    """A client of the simulated key-value service: one operation at a time, sent to the
    node it believes leads; it follows "not leader" hints, retries elsewhere after
    ``client_timeout_ms``, and keeps retrying (the same sequence number, so a write takes
    effect once) until an answer comes. ``unsafe_reads``: gets are answered from the local
    state of any node that believes it is leader, without ReadIndex (stale reads possible:
    for planting a violation the checker must find)."""

    def __init__(self, sim: RaftSimulation, id: int, *, unsafe_reads: bool = False) -> None:
        self.sim = sim
        self.id = id
        self.unsafe_reads = unsafe_reads
        self.leader: NodeId | None = None
        self.completed = 0
        self._seq = 0
        self._attempt = 0
        self._deadline = math.inf  # when the attempt in flight times out
        self._timer_at = math.inf  # when the pending timer event fires (inf: none)
        self._rr = id
        self._op: list[Any] | None = None  # the history record of the operation running
        self._cmd: KvCommand | None = None
        self._on_done: Callable[[ClientOp], None] | None = None

    @property
    def busy(self) -> bool:
        return self._op is not None

    def put(self, key: str, value: str, on_done: Callable[[ClientOp], None] | None = None) -> None:
        self._start("put", key, value, on_done)

    def append(
        self, key: str, value: str, on_done: Callable[[ClientOp], None] | None = None
    ) -> None:
        self._start("append", key, value, on_done)

    def get(self, key: str, on_done: Callable[[ClientOp], None] | None = None) -> None:
        self._start("get", key, None, on_done)

    def delete(self, key: str, on_done: Callable[[ClientOp], None] | None = None) -> None:
        self._start("delete", key, None, on_done)

    def _start(
        self, op: str, key: str, value: str | None, on_done: Callable[[ClientOp], None] | None
    ) -> None:
        if self._op is not None:
            raise ValidationError(f"client {self.id} already has an operation running")
        self._seq += 1
        self._cmd = new_command(client=self.id, seq=self._seq, op=op, key=key, value=value)
        self._op = [self.id, op, key, value, None, self.sim.now, math.inf]
        self._on_done = on_done
        self.sim._history.append(self._op)
        self._send()

    def _send(self) -> None:
        assert self._cmd is not None
        self._attempt += 1
        target = self.leader
        if target is None or target not in self.sim.nodes:
            ids = self.sim.ids
            self._rr += 1
            target = ids[self._rr % len(ids)]
        req = _Request(self, self._cmd.seq, self._attempt, self._cmd)
        sim = self.sim
        sim._client_send(target, req)
        self._deadline = sim.now + sim.config.client_timeout_ms
        if self._timer_at == math.inf:
            self._arm(self._deadline)

    def _arm(self, at: float) -> None:
        """One timer event per client however many attempts: it fires at the earliest
        deadline it was armed for and is armed again for a later one (deadlines only move
        later), instead of one event per attempt that mostly finds its attempt answered."""
        self._timer_at = at
        sim = self.sim
        heapq.heappush(sim._queue, (at, next(sim._seq), self._on_timer, ()))

    def _on_timer(self) -> None:
        self._timer_at = math.inf
        if self._op is None:
            return
        if self.sim.now < self._deadline:
            self._arm(self._deadline)
            return
        self.leader = None  # the attempt in flight timed out: retry elsewhere
        self._send()

    def _retry(self, seq: int, attempt: int) -> None:
        if self._op is not None and self._seq == seq and self._attempt == attempt:
            self._send()

    def _on_reply(
        self, req: _Request, ok: bool, output: str | None, hint: NodeId | None, frm: NodeId
    ) -> None:
        if self._op is None or req.seq != self._seq:
            return
        if ok:
            op = self._op
            op[4] = output
            op[6] = self.sim.now
            self._op = None
            self.leader = frm  # it answered: ask it first next time
            self.completed += 1
            if self._on_done is not None:
                self._on_done(_new_client_op(*op))
            return
        if req.attempt != self._attempt:
            return
        self.leader = hint if hint is not None and hint != frm else None
        self.sim._schedule(self.sim.config.client_retry_ms, self._retry, req.seq, req.attempt)


class RaftSimulation:
    """A cluster of ``nodes`` (a count: ids "1".."n"; or explicit ids) bootstrapped with all
    of them as voters, at virtual time 0. See the module docstring.

    ``app_factory(node_id)`` makes each replica's application (at boot, and again after a
    crash that loses it); the default is ``KvApp``, which the clients use."""

    def __init__(
        self,
        nodes: int | Sequence[str] = 3,
        *,
        seed: int,
        config: SimConfig | None = None,
        app_factory: AppFactory | None = None,
    ) -> None:
        ids = [str(i) for i in range(1, nodes + 1)] if isinstance(nodes, int) else list(nodes)
        if not ids or len(set(ids)) != len(ids):
            raise ValidationError("a simulation needs distinct node ids", field="nodes")
        self.seed = seed
        self.config = config or SimConfig()
        if app_factory is not None and self.config.snapshot_every is not None:
            raise ValidationError(
                "snapshots need the KvApp application (the oracle reads its images)",
                field="snapshot_every",
            )
        self._app_factory = app_factory
        self.now = 0.0
        self.stats = SimStats()
        self._rng = random.Random(seed)
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        # trace items not yet folded into the fingerprint (see _fold_trace), then the ring
        # of the last trace_lines ones
        self._trace_log: list[tuple[Any, ...]] = []
        self._trace_ring: deque[tuple[Any, ...]] = deque(maxlen=self.config.trace_lines)
        self._hash = hashlib.blake2b(digest_size=16)
        self._fp = 0  # running fingerprint of delivered messages and Readys
        self._id_numbers: dict[NodeId | None, int] = {None: 0}
        self.oracle = Oracle(self._violation)
        self.net = Network(self.config.network, self._rng)
        self._history: list[list[Any]] = []
        self._clients: list[Client] = []
        self._one_rr = 0
        self._wire_bytes = self.config.wire_bytes
        self._lazy_commit = self.config.lazy_commit
        self._crash_rate = self.config.crash_point_rate
        self._tick_ms = self.config.tick_ms
        self._status_every = 1 if self.config.status_every_step else STATUS_CHECK_EVERY
        # bound once: the queue holds one per message, save and tick
        self._deliver_cb = self._deliver
        self._on_saved_cb = self._on_saved
        self._on_tick_cb = self._on_tick
        bootstrap = ConfState(voters=frozenset(NodeId(i) for i in ids))
        self.nodes: dict[NodeId, SimNode] = {}
        for i in ids:
            nid = NodeId(i)
            self.nodes[nid] = SimNode(nid, self.oracle, bootstrap, self._new_app(nid))
        for node in self.nodes.values():
            self._boot(node)

    def _new_app(self, id: NodeId) -> Any:
        return KvApp() if self._app_factory is None else self._app_factory(id)

    # --- ids and state -------------------------------------------------------------------
    @property
    def ids(self) -> list[NodeId]:
        return list(self.nodes)

    def node(self, id: str) -> SimNode:
        try:
            return self.nodes[NodeId(id)]
        except KeyError:
            raise ValidationError(f"no node {id!r} in the simulation", field="id") from None

    def state(self, id: str) -> tuple[int, bool]:
        """(term, is_leader) of an up node, like 6.824's GetState()."""
        st = self.node(id).status()
        return st.term, st.role is _LEADER

    def up(self, id: str) -> bool:
        return self.node(id).up

    def other(self, id: str, k: int) -> NodeId:
        """The node ``k`` places after ``id`` in id order, wrapping (6.824's (i+k)%n)."""
        ids = self.ids
        return ids[(ids.index(NodeId(id)) + k) % len(ids)]

    def connected(self, id: str) -> bool:
        """Up and not disconnected (6.824's ``connected[i]`` of a running server)."""
        return self.node(id).up and self.net.is_connected(id)

    # --- the event loop ------------------------------------------------------------------
    def _schedule(self, delay_ms: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._queue, (self.now + delay_ms, next(self._seq), fn, args))

    def at(self, delay_ms: float, fn: Callable[[], None]) -> None:
        """Run ``fn()`` ``delay_ms`` virtual ms from now (a scenario's own event)."""
        self._schedule(delay_ms, fn)

    def step(self) -> bool:
        """Process the next event; False when nothing is scheduled."""
        if not self._queue:
            return False
        t, _, fn, args = heapq.heappop(self._queue)
        self.now = t
        self.stats.events += 1
        fn(*args)
        return True

    def run_for(self, ms: float) -> None:
        """Let ``ms`` of virtual time pass."""
        deadline = self.now + ms
        queue = self._queue
        pop = heapq.heappop
        events = 0
        try:
            while queue:  # step(), inlined: the hottest loop
                item = pop(queue)
                t = item[0]
                if t > deadline:
                    heapq.heappush(queue, item)  # (the same tuple: its place is unchanged)
                    break
                self.now = t
                events += 1
                item[2](*item[3])
        finally:
            self.stats.events += events
        self.now = deadline

    def run_until(self, predicate: Callable[[], bool], timeout_ms: float) -> bool:
        """Run until ``predicate()`` holds (checked after every event); False if it still
        does not after ``timeout_ms`` (the clock then stands at the deadline)."""
        if predicate():
            return True
        deadline = self.now + timeout_ms
        queue = self._queue
        while queue and queue[0][0] <= deadline:
            self.step()
            if predicate():
                return True
        self.now = deadline
        return predicate()

    # --- trace and failures --------------------------------------------------------------
    def _trace(self, text: str) -> None:
        self._trace_log.append((self.now, text))
        self._hash.update(msgpack.packb((self.now, text)))

    def _num(self, id: NodeId | None) -> int:
        """A node id as an int for the fingerprint (str hashes depend on PYTHONHASHSEED)."""
        try:
            return self._id_numbers[id]
        except KeyError:
            number = self._id_numbers[id] = 0 if id is None else len(self._id_numbers)
            return number

    def _fold_trace(self) -> None:
        """Fold the trace items recorded since the last fold into the fingerprint, in order,
        and move them to the ring of the last lines. Delivered messages and Readys are
        recorded as they are (``(time, message)``, ``(time, node, ready)``) and folded here
        by batches: a message by its fields, a Ready by its counts, index ranges, hard and
        soft state; ints, bools and floats only (their hash is the same in every process;
        str, bytes and None hashes are not; hash(None) depends on its address before
        Python 3.12). Text lines went into the digest when traced."""
        items = self._trace_log
        if not items:
            return
        fp = self._fp
        ids = self._id_numbers
        num = self._num
        message_type = Message
        roles = ROLE_NUMBERS
        for item in items:
            if len(item) == 3:  # a Ready
                now, node, rd = item
                hs = rd.hard_state
                entries, committed = rd.entries, rd.committed_entries
                fp = hash(
                    (
                        fp,
                        now,
                        num(node),
                        hs.term if hs else -1,
                        num(hs.vote) if hs else -1,
                        hs.commit if hs else -1,
                        entries[0].index if entries else 0,
                        entries[-1].index if entries else 0,
                        entries[-1].term if entries else 0,
                        len(rd.leader_messages),
                        len(rd.messages),
                        committed[0].index if committed else 0,
                        committed[-1].index if committed else 0,
                    )
                )
                soft, conf, snapshot, reads = rd.soft_state, rd.conf, rd.snapshot, rd.read_states
                if soft or conf or snapshot or reads:  # (most Readys have none of these)
                    fp = hash(
                        (
                            fp,
                            snapshot.meta.index if snapshot else 0,
                            tuple([r.index for r in reads]),
                            soft.term if soft else -1,
                            num(soft.leader) if soft else -1,
                            roles[soft.role] if soft else -1,
                            len(conf.voters) if conf else -1,
                            len(conf.learners) if conf else -1,
                        )
                    )
                continue
            now, msg = item
            if type(msg) is not message_type:
                continue  # a text line
            entries = msg.entries
            src, dst = msg.src, msg.dst
            fp = hash(
                (
                    fp,
                    now,
                    msg.type,
                    ids[src] if src in ids else num(src),
                    ids[dst] if dst in ids else num(dst),
                    msg.term,
                    msg.log_term,
                    msg.index,
                    msg.commit,
                    msg.reject,
                    msg.reject_hint,
                    len(entries),
                    entries[-1].index if entries else 0,
                    entries[-1].term if entries else 0,
                )
            )
            if msg.context or msg.snapshot is not None or msg.offset or msg.data or msg.done:
                # (reads, snapshots: the fields most messages leave at their defaults)
                snapshot = msg.snapshot
                fp = hash(
                    (
                        fp,
                        len(msg.context),
                        snapshot.index if snapshot else 0,
                        msg.offset,
                        len(msg.data),
                        msg.done,
                    )
                )
        self._fp = fp
        ring = self._trace_ring
        if ring.maxlen:
            ring.extend(items[-ring.maxlen :])
        items.clear()

    def trace_hash(self) -> str:
        """Hex digest of everything traced so far: equal seeds give equal hashes, in any
        process, whatever PYTHONHASHSEED is."""
        self._fold_trace()
        h = self._hash.copy()
        h.update(self._fp.to_bytes(8, "little", signed=True))
        return h.hexdigest()

    def trace_tail(self, lines: int = FAILURE_TRACE_LINES) -> list[str]:
        """The last ``lines`` trace lines: virtual time, then a delivered message's or a
        Ready's ``describe()`` or a simulator event."""
        self._fold_trace()
        out = []
        for item in list(self._trace_ring)[-lines:] if lines > 0 else ():
            if len(item) == 3:
                t, node, rd = item
                text = f"{node} ready {rd.describe()}"
            else:
                t, thing = item
                text = thing.describe() if isinstance(thing, Message) else thing
            out.append(f"{t:.3f} {text}")
        return out

    def replay_command(self) -> str:
        current = os.environ.get("PYTEST_CURRENT_TEST", "")
        test = current.rsplit(" ", 1)[0].split("[", 1)[0] if current else "<test>"
        return f"pytest '{test}' --sim-seed {self.seed}"

    def failure_message(self, message: str) -> str:
        tail = "\n".join("    " + line for line in self.trace_tail())
        return (
            f"{message}\nseed={self.seed} virtual time={self.now:.3f} ms\n"
            f"replay: {self.replay_command()}\nlast trace lines:\n{tail}"
        )

    def fail(self, message: str) -> None:
        """Raise SimulationFailure with the seed, replay command and trace tail."""
        raise SimulationFailure(self.failure_message(message))

    def _violation(self, message: str) -> None:
        raise InvariantViolation(self.failure_message(f"invariant violated: {message}"))

    # --- nodes: boot, crash, restart -----------------------------------------------------
    def _boot(self, node: SimNode) -> None:
        durable = node.store.load()
        node.raft = RaftNode(
            node.id,
            config=self.config.raft,
            rng=random.Random(self._rng.getrandbits(64)),
            durable=durable,
            applied=node.app.applied,
            bootstrap=node.bootstrap,
        )
        node.up = True
        node.inflight = None
        node.commit_flushed_at = self.now
        node.role = _FOLLOWER
        node.leader = None
        st = node.raft.status()
        node.term = st.term
        node.vote = st.vote
        self.oracle.on_restart(node.id, st.term, st.vote)
        self._trace(f"{node.id} start term={st.term} applied={node.app.applied}")
        self._schedule(
            self._rng.uniform(0, self.config.tick_ms), self._on_tick, node, node.incarnation
        )
        self._pump(node)
        self._check(node)

    def crash(self, id: str) -> None:
        """Stop a node now: saves in flight are lost, so is its state machine unless it
        survives (``app_survives_crash``); its disk stays. No-op if it is down."""
        node = self.node(id)
        if not node.up:
            return
        node.up = False
        node.incarnation += 1
        node.raft = None
        node.inflight = None
        node.unsaved_commit = None
        node.pending_writes.clear()
        node.pending_reads.clear()
        node.ready_reads.clear()
        node.role = _FOLLOWER
        survives = (
            self.config.app_survives_crash > 0
            and self._rng.random() < self.config.app_survives_crash
        )
        if not survives:
            node.app = self._new_app(node.id)
        self.oracle.forget_leader(node.id)
        self.stats.crashes += 1
        self._trace(f"{node.id} crash (state machine {'kept' if survives else 'lost'})")

    def restart(self, id: str) -> None:
        """Start a crashed node again from its disk (6.824's start1). No-op if it is up."""
        node = self.node(id)
        if node.up:
            return
        self.stats.restarts += 1
        self._boot(node)

    def reboot(self, id: str) -> None:
        """Crash (if up) and restart a node at once (6.824's start1 on a live server)."""
        self.crash(id)
        self.restart(id)

    def add_node(self, id: str) -> SimNode:
        """A new, empty server (not in any configuration: it waits for a leader to contact
        it; add it with ``propose_conf_change``)."""
        nid = NodeId(id)
        if nid in self.nodes:
            raise ValidationError(f"node {id} already exists", field="id")
        node = SimNode(nid, self.oracle, None, self._new_app(nid))
        node.conf = None
        self.nodes[nid] = node
        self._boot(node)
        return node

    # --- network -------------------------------------------------------------------------
    def disconnect(self, id: str) -> None:
        """Cut a node from every other node and client (6.824's disconnect)."""
        self.node(id)
        self.net.disconnect(id)
        self._trace(f"disconnect {id}")

    def connect(self, id: str) -> None:
        self.node(id)
        self.net.connect(id)
        self._trace(f"connect {id}")

    def partition(self, *groups: Iterable[str]) -> None:
        """Only nodes within one group talk; nodes in no group form one more group."""
        lists = [sorted(g) for g in groups]
        self.net.partition(lists)
        self._trace(f"partition {' | '.join(','.join(g) for g in lists)}")

    def heal(self) -> None:
        """Remove partitions and one-way cuts (disconnected nodes stay disconnected)."""
        self.net.heal()
        self._trace("heal")

    def cut(self, src: str, dst: str) -> None:
        """Lose every message from ``src`` to ``dst`` (one way)."""
        self.net.cut(src, dst)
        self._trace(f"cut {src}->{dst}")

    def uncut(self, src: str, dst: str) -> None:
        self.net.uncut(src, dst)
        self._trace(f"uncut {src}->{dst}")

    def set_network(self, network: NetworkConfig) -> None:
        """Change loss/delay/reordering from now on (messages in flight keep theirs)."""
        self.net.config = network
        self._trace(f"network {network}")

    def _send(self, src: SimNode, msg: Message) -> None:
        entries = msg.entries
        if entries and type(entries[0]) is ColdEntry:
            self.stats.cold_fills += 1
            try:
                msg = fill_cold_entries(msg, src.store.memory.entries)
            except EntriesCompacted:  # a snapshot since the Ready: dropped (the driver's rule)
                self.stats.cold_compacted += 1
                if src.raft is not None:
                    src.raft.report_unreachable(msg.dst)
                return
        stats = self.stats
        stats.messages_sent += 1
        if self._wire_bytes:
            stats.bytes_sent += len(encode_message(msg))
        elif msg.entries or msg.snapshot is not None:
            stats.bytes_sent += message_bytes(msg)
        else:  # message_bytes(msg) of a message without entries or snapshot, inlined
            stats.bytes_sent += MESSAGE_OVERHEAD_BYTES + len(msg.context) + len(msg.data)
        by_type = stats.sent_by_type
        mtype = msg.type
        by_type[mtype] = by_type.get(mtype, 0) + 1
        is_response = mtype in RESPONSES
        if not is_response:
            stats.rpcs_sent += 1
        net = self.net
        if not net.whole and not net.link_ok(src.id, msg.dst):
            stats.messages_dropped += 1
            return
        if net.plain:  # one copy, after net.plan()'s one draw: inlined
            delay = net.delay_lo + net.delay_span * self._rng.random()
            heapq.heappush(
                self._queue, (self.now + delay, next(self._seq), self._deliver_cb, (msg,))
            )
            return
        delays = net.plan(is_response)
        if not delays:
            stats.messages_dropped += 1
        queue, now, seq, deliver = self._queue, self.now, self._seq, self._deliver_cb
        for d in delays:  # self._schedule(d, self._deliver, msg), inlined
            heapq.heappush(queue, (now + d, next(seq), deliver, (msg,)))

    def _deliver(self, msg: Message) -> None:
        node = self.nodes.get(msg.dst)
        net = self.net
        if node is None or not node.up or not (net.whole or net.link_ok(msg.src, msg.dst)):
            self.stats.messages_dropped += 1
            return
        self.stats.messages_delivered += 1
        trace = self._trace_log
        trace.append((self.now, msg))
        if len(trace) >= TRACE_FOLD_ITEMS:
            self._fold_trace()
        raft = node.raft
        assert raft is not None
        raft.step(msg)
        if node.inflight is None:  # (a message mostly leaves a Ready: _pump asks)
            self._pump(node)
        node.steps += 1  # self._check(node), inlined
        if not node.steps % self._status_every:
            self._check_status(node)

    # --- the node loop: tick, ready, persist, send, apply, advance ------------------------
    def _on_tick(self, node: SimNode, incarnation: int) -> None:
        if node.incarnation != incarnation or not node.up:
            return
        raft = node.raft
        assert raft is not None
        raft.tick()
        heapq.heappush(  # self._schedule(tick_ms, self._on_tick, ...), inlined
            self._queue,
            (self.now + self._tick_ms, next(self._seq), self._on_tick_cb, (node, incarnation)),
        )
        if (
            node.unsaved_commit is not None
            and node.inflight is None
            and self.now - node.commit_flushed_at >= self.config.commit_flush_ms
        ):
            self._flush_commit(node)
        if node.inflight is None and raft.has_ready():
            self._pump(node)
        node.steps += 1  # self._check(node), inlined
        if not node.steps % self._status_every:
            self._check_status(node)

    def _check(self, node: SimNode) -> None:
        """After every step of a node: every STATUS_CHECK_EVERY steps (and always with
        ``SimConfig.status_every_step``), its live status against the invariants. Every
        change of role, term or vote is also checked when a Ready reports it."""
        node.steps += 1
        if not node.steps % self._status_every:
            self._check_status(node)

    def _check_status(self, node: SimNode) -> None:
        raft = node.raft
        if node.up and raft is not None:
            self._observe(node, raft.role, raft.term, raft.vote, raft.leader)

    def _observe(
        self, node: SimNode, role: Role, term: int, vote: NodeId | None, leader: NodeId | None
    ) -> None:
        node.leader = leader
        if role is node.role and term == node.term and vote == node.vote:
            return  # what the oracle saw last (node's fields are only set with it): no news
        if node.role is _LEADER and role is not _LEADER:
            self.oracle.forget_leader(node.id)
        node.role = role
        node.term = term
        node.vote = vote
        self.oracle.on_status(node.id, term, vote, role is _LEADER)

    def _pump(self, node: SimNode) -> None:
        """Take Readys while the node has one and no save is in flight."""
        stats, trace, oracle = self.stats, self._trace_log, self.oracle
        while node.up and node.inflight is None:
            raft = node.raft
            assert raft is not None
            if not raft.has_ready():
                return
            rd = raft.ready()
            stats.readies += 1
            trace.append((self.now, node.id, rd))
            if len(trace) >= TRACE_FOLD_ITEMS:
                self._fold_trace()
            soft, hard_state = rd.soft_state, rd.hard_state
            if soft is not None or hard_state is not None:
                self._observe(
                    node,
                    soft.role if soft else node.role,
                    hard_state.term if hard_state else soft.term if soft else node.term,
                    hard_state.vote if hard_state else node.vote,
                    soft.leader if soft else node.leader,
                )
            if rd.conf is not None:
                node.conf = rd.conf
            for m in rd.leader_messages:
                oracle.on_send(node.id, m, node.store, True)
                self._send(node, m)
            entries, snapshot = rd.entries, rd.snapshot
            must_sync = hard_state is not None or bool(entries) or snapshot is not None
            applied_early = False
            if self._lazy_commit:
                committed = rd.committed_entries
                if (
                    committed
                    and snapshot is None
                    and (not entries or committed[-1].index < entries[0].index)
                ):
                    # durable since earlier Readys: applied before this Ready's save
                    node.inflight = rd
                    if not self._apply(node, committed):
                        return
                    applied_early = True
                saved = node.store.hard
                if (
                    hard_state is not None
                    and snapshot is None
                    and (hard_state.term, hard_state.vote) == (saved.term, saved.vote)
                ):
                    # only the commit moved: not worth a sync, nor a row in every save
                    node.unsaved_commit = hard_state
                    hard_state = None
                    must_sync = bool(entries)
                if (
                    hard_state is None
                    and must_sync
                    and node.unsaved_commit is not None
                    and (
                        snapshot is not None
                        or self.now - node.commit_flushed_at >= self.config.commit_flush_ms
                    )
                ):
                    hard_state = node.unsaved_commit  # saved with the writes, once in a while
                    node.commit_flushed_at = self.now
            node.inflight = rd
            if must_sync:
                node.inflight_leader_term = node.term if node.role is _LEADER else 0
                lo, hi = self.config.disk_ms  # self._schedule(self._disk_ms(), ...), inlined
                heapq.heappush(
                    self._queue,
                    (
                        self.now + (lo + (hi - lo) * self._rng.random()),
                        next(self._seq),
                        self._on_saved_cb,
                        (node, node.incarnation, rd, hard_state, applied_early),
                    ),
                )
                return
            if not self._finish(node, rd, applied_early):
                return

    def _on_saved(
        self,
        node: SimNode,
        incarnation: int,
        rd: Ready,
        hard_state: HardState | None,
        applied_early: bool,
    ) -> None:
        if node.incarnation != incarnation:
            return  # the node crashed while this save was in flight: it is lost
        entries = rd.entries
        node.store.save(hard_state=hard_state, entries=entries, snapshot=rd.snapshot)
        if hard_state is not None:
            node.unsaved_commit = None
        self.stats.saves += 1
        term = node.inflight_leader_term
        if term and entries and (entries[-1].term == term or any(e.term == term for e in entries)):
            self.oracle.on_leader_log_durable(node.id, term, node.store)
        if self._crash_rate and self._crash_point(node, "saved"):
            return
        if self._finish(node, rd, applied_early):
            if node.inflight is None and node.up:
                raft = node.raft
                assert raft is not None
                if raft.has_ready():
                    self._pump(node)
            node.steps += 1  # self._check(node), inlined
            if not node.steps % self._status_every:
                self._check_status(node)

    def _flush_commit(self, node: SimNode) -> None:
        """lazy_commit: save a commit index that moved with nothing else to save."""
        hard_state, node.unsaved_commit = node.unsaved_commit, None
        node.commit_flushed_at = self.now
        node.inflight = _FLUSHING
        self._schedule(
            self._disk_ms(),
            self._on_flushed,
            node,
            node.incarnation,
            hard_state,
        )

    def _on_flushed(self, node: SimNode, incarnation: int, hard_state: HardState) -> None:
        if node.incarnation != incarnation:
            return
        node.store.save(hard_state=hard_state)
        self.stats.saves += 1
        node.inflight = None
        if self._crash_point(node, "flushed"):
            return
        self._pump(node)
        self._check(node)

    def _finish(self, node: SimNode, rd: Ready, applied_early: bool = False) -> bool:
        """Send, apply, advance (the Ready's writes are durable). False if it crashed."""
        messages = rd.messages
        if messages:
            oracle, store, src = self.oracle, node.store, node.id
            for m in messages:
                oracle.on_send(src, m, store, False)
                self._send(node, m)
        crash_rate = self._crash_rate
        if crash_rate and self._crash_point(node, "sent"):
            return False
        if rd.snapshot is not None:
            self._restore(node, rd.snapshot)
        committed = rd.committed_entries
        if committed and not applied_early and not self._apply(node, committed):
            return False
        app = node.app
        for rs in rd.read_states:
            req = node.pending_reads.pop(rs.context, None)
            if req is not None:
                node.ready_reads.append((rs.index, req))
        if node.ready_reads:
            waiting = []
            for index, req in node.ready_reads:
                if index <= app.applied:
                    self._reply(node, req, True, app.get(req.cmd.key))
                else:
                    waiting.append((index, req))
            node.ready_reads = waiting
        assert node.raft is not None
        node.raft.advance(rd)
        node.inflight = None
        if crash_rate and self._crash_point(node, "advanced"):
            return False
        every = self.config.snapshot_every
        if every is not None and app.applied - node.last_snapshot >= every:
            self._take_snapshot(node)
            if crash_rate and self._crash_point(node, "compacted"):
                return False
        return True

    def _apply(self, node: SimNode, entries: Sequence[Entry]) -> bool:
        """Apply committed entries in order, answering clients; False if it crashed."""
        app = node.app
        oracle = self.oracle
        pending_writes = node.pending_writes
        crash_rate = self._crash_rate
        for e in entries:
            if e.index != app.applied + 1:
                self._violation(
                    f"node {node.id} is given entry {e.index} to apply after {app.applied}"
                )
            output = app.apply(e)
            oracle.on_applied(node.id, e, app.chain, node.term)
            if pending_writes:
                pending = pending_writes.pop(e.index, None)
                if pending is not None:
                    term, req = pending
                    if term == e.term:
                        oracle.acknowledge(e.index, e.data)
                        self._reply(node, req, True, output)
                    else:
                        self._reply(node, req, False, None, node.leader)
            if crash_rate and self._crash_point(node, "applied"):
                return False
        return True

    def _restore(self, node: SimNode, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        if meta.index < node.app.applied:
            self._violation(
                f"node {node.id} is told to restore snapshot {meta.term}/{meta.index} "
                f"behind its state machine at {node.app.applied}"
            )
        node.app = KvApp.decode(bytes(snapshot.data))
        node.last_snapshot = meta.index
        self.oracle.on_restored(node.id, meta.index, node.app.chain)
        self._trace(f"{node.id} restore {meta.describe()}")

    def _take_snapshot(self, node: SimNode) -> None:
        assert node.raft is not None
        index = node.app.applied
        meta = node.raft.snapshot_meta(index)
        snapshot = Snapshot(meta=meta, data=node.app.encode())
        keep_from = node.raft.compact(snapshot)
        node.store.compact(snapshot, keep_from=keep_from)
        node.last_snapshot = index
        self._trace(f"{node.id} compact {meta.describe()} keep_from={keep_from}")

    def _disk_ms(self) -> float:
        """One save's latency: rng.uniform(*disk_ms), inlined (same draws)."""
        lo, hi = self.config.disk_ms
        return lo + (hi - lo) * self._rng.random()

    def _crash_point(self, node: SimNode, point: str) -> bool:
        rate = self._crash_rate
        if not rate or self._rng.random() >= rate:
            return False
        self._trace(f"{node.id} crash point: {point}")
        self.crash(node.id)
        self._schedule(self._rng.uniform(*self.config.restart_after_ms), self.restart, str(node.id))
        return True

    # --- 6.824-style helpers -------------------------------------------------------------
    def start(self, id: str, command: bytes) -> tuple[int, int, bool]:
        """6.824's Start(command) on node ``id``: (index, term, is_leader); index is -1
        when the node is down or not leader."""
        node = self.node(id)
        if not node.up or node.raft is None:
            return -1, 0, False
        try:
            term, index = node.raft.propose(command)
        except (NotLeader, ProposalDropped):
            return -1, node.raft.status().term, False
        self._trace(f"{id} start {index}")
        self._pump(node)
        self._check(node)
        return index, term, True

    def leaders(self) -> list[tuple[int, NodeId]]:
        """(term, id) of every connected node that believes it leads."""
        out = []
        for node in self.nodes.values():
            if node.up and self.net.is_connected(node.id) and node.role is _LEADER:
                out.append((node.term, node.id))
        return sorted(out)

    def check_one_leader(self, timeout_ms: float = 5000.0) -> NodeId:
        """Wait for a leader among connected nodes and return the latest term's one (6.824's
        checkOneLeader); fail if none appears within ``timeout_ms``."""
        if not self.run_until(lambda: bool(self.leaders()), timeout_ms):
            self.fail(f"expected one leader within {timeout_ms:.0f} ms, got none")
        return self.leaders()[-1][1]

    def wait_leader(self, timeout_ms: float = 5000.0) -> NodeId:
        """The leader of the latest term among connected nodes, once there is one (same as
        ``check_one_leader``)."""
        return self.check_one_leader(timeout_ms)

    def check_no_leader(self) -> None:
        """Fail if a connected node believes it leads."""
        found = self.leaders()
        if found:
            self.fail(f"expected no leader among connected servers, found {found}")

    def check_terms(self) -> int:
        """Every connected node is in the same term; return it."""
        terms = {n.term for n in self.nodes.values() if n.up and self.net.is_connected(n.id)}
        if len(terms) != 1:
            self.fail(f"servers disagree on term: {sorted(terms)}")
        return terms.pop()

    def n_committed(self, index: int) -> tuple[int, bytes | None]:
        """How many up nodes applied ``index``, and the entry's data (6.824's nCommitted)."""
        count = sum(1 for n in self.nodes.values() if n.up and n.app.applied >= index)
        known = self.oracle.committed.get(index)
        return count, known[0].data if known else None

    def one(
        self,
        command: bytes,
        expected_servers: int,
        *,
        retry: bool = True,
        timeout_ms: float = 10_000,
    ) -> int:
        """6.824's one(): offer ``command`` to nodes in turn until a leader takes it, then wait
        up to 2 s for ``expected_servers`` to apply it; with ``retry`` keep trying for
        ``timeout_ms``. Returns the index; fails otherwise."""
        deadline = self.now + timeout_ms
        ids = self.ids
        while self.now < deadline:
            index = -1
            for _ in range(len(ids)):
                self._one_rr = (self._one_rr + 1) % len(ids)
                nid = ids[self._one_rr]
                if self.connected(nid):
                    idx, _, ok = self.start(nid, command)
                    if ok:
                        index = idx
                        break
            if index != -1:

                def done(index: int = index) -> bool:
                    count, data = self.n_committed(index)
                    return count >= expected_servers and data == command

                if self.run_until(done, 2000):
                    self.oracle.acknowledge(index, command)
                    return index
                if not retry:
                    count, data = self.n_committed(index)
                    self.fail(
                        f"one({command!r}) failed to reach agreement at {index}: "
                        f"{count} of {expected_servers} servers applied {data!r}"
                    )
            else:
                self.run_for(50)
        self.fail(f"one({command!r}) failed to reach agreement within {timeout_ms:.0f} ms")
        raise AssertionError("unreachable")

    def wait_applied_everywhere(self, timeout_ms: float = 5000.0) -> int:
        """Wait until every up, connected node applied the leader's last entry; returns that
        index (the next proposal's index is one more, if leadership holds)."""
        leader = self.check_one_leader(timeout_ms)

        def done() -> bool:
            node = self.nodes[leader]
            if not node.is_leader:
                return False
            last = node.status().last_index
            return all(
                n.app.applied >= last
                for n in self.nodes.values()
                if n.up and self.net.is_connected(n.id)
            )

        if not self.run_until(done, timeout_ms):
            self.fail(f"nodes did not all apply the leader's log within {timeout_ms:.0f} ms")
        applied: int = self.nodes[leader].app.applied
        return applied

    def wait_committed(
        self, index: int, n: int, start_term: int, timeout_ms: float = 5000
    ) -> bytes | None:
        """6.824's wait(): until ``n`` nodes applied ``index``; None if some node moved past
        ``start_term`` meanwhile (the caller should retry in the new term)."""

        def moved() -> bool:
            return start_term >= 0 and any(
                n.up and n.term > start_term for n in self.nodes.values()
            )

        def done() -> bool:
            return self.n_committed(index)[0] >= n or moved()

        if not self.run_until(done, timeout_ms):
            count, _ = self.n_committed(index)
            self.fail(f"only {count} of {n} servers applied index {index} in {timeout_ms:.0f} ms")
        count, data = self.n_committed(index)
        if count < n:
            return None
        return data

    # --- more inputs ---------------------------------------------------------------------
    def propose_conf_change(self, id: str, change: ConfChange) -> tuple[int, int]:
        """``RaftNode.propose_conf_change`` on node ``id`` (raises what it raises)."""
        raft = self._live(id)
        result = raft.propose_conf_change(change)
        self._trace(f"{id} propose {change.describe()} at {result[1]}")
        self._after_input(id)
        return result

    def transfer_leadership(self, id: str, to: str) -> None:
        raft = self._live(id)
        raft.transfer_leadership(NodeId(to))
        self._trace(f"{id} transfer leadership to {to}")
        self._after_input(id)

    def campaign(self, id: str) -> None:
        self._live(id).campaign()
        self._trace(f"{id} campaign")
        self._after_input(id)

    def read_index(self, id: str, context: bytes) -> None:
        self._live(id).read_index(context)
        self._after_input(id)

    def _live(self, id: str) -> RaftNode:
        node = self.node(id)
        if node.raft is None:
            self.fail(f"node {id} is down")
        assert node.raft is not None
        return node.raft

    def _after_input(self, id: str) -> None:
        node = self.node(id)
        self._pump(node)
        self._check(node)

    # --- clients -------------------------------------------------------------------------
    def client(self, *, unsafe_reads: bool = False) -> Client:
        """A new client (ids 1, 2, ...)."""
        c = Client(self, len(self._clients) + 1, unsafe_reads=unsafe_reads)
        self._clients.append(c)
        return c

    def history(self) -> list[ClientOp]:
        """Every client operation so far, in call order (pending ones return at inf)."""
        return [ClientOp(*op) for op in self._history]

    def start_workload(
        self,
        clients: Sequence[Client],
        *,
        keys: Sequence[str] = ("a", "b", "c"),
        duration_ms: float,
        weights: tuple[float, float, float, float] = (0.25, 0.35, 0.35, 0.05),
        think_ms: tuple[float, float] = (0.0, 20.0),
    ) -> None:
        """Each client runs random operations back to back (put/append/get/delete by
        ``weights``) on ``keys`` for ``duration_ms``; values are unique per operation."""
        stop = self.now + duration_ms
        ops = ("put", "append", "get", "delete")
        if len(weights) != len(ops):
            raise ValidationError(f"workload weights: one per operation {ops}", field="weights")
        cum_weights = list(itertools.accumulate(weights))
        total = cum_weights[-1] + 0.0
        if not 0.0 < total < math.inf:
            raise ValidationError(
                "workload weights must add up to a positive number", field="weights"
            )
        key_list = list(keys)

        def next_op(c: Client) -> None:
            if self.now >= stop:
                return
            # rng.choices(ops, weights)[0], inlined (the same draw)
            op = ops[bisect.bisect(cum_weights, self._rng.random() * total, 0, len(ops) - 1)]
            key = self._rng.choice(key_list)
            value = f"{c.id}.{c._seq + 1};"
            done = lambda _op: self._schedule(self._rng.uniform(*think_ms), next_op, c)  # noqa: E731
            if op == "put":
                c.put(key, value, done)
            elif op == "append":
                c.append(key, value, done)
            elif op == "get":
                c.get(key, done)
            else:
                c.delete(key, done)

        for c in clients:
            self._schedule(self._rng.uniform(*think_ms), next_op, c)

    def _client_send(self, target: NodeId, req: _Request) -> None:
        for d in self.net.plan(False):
            self._schedule(d, self._on_request, target, req)

    def _on_request(self, target: NodeId, req: _Request) -> None:
        node = self.nodes.get(target)
        if node is None or not node.up or not self.net.is_connected(target):
            return
        raft = node.raft
        assert raft is not None
        cmd = req.cmd
        if cmd.op == "get" and req.client.unsafe_reads:
            st = raft.status()
            if st.role is _LEADER:
                self._reply(node, req, True, node.app.get(cmd.key))
            else:
                self._reply(node, req, False, None, st.leader)
            return
        try:
            if cmd.op == "get":
                ctx = f"r{cmd.client}.{cmd.seq}.{req.attempt}".encode()
                raft.read_index(ctx)
                node.pending_reads[ctx] = req
            else:
                term, index = raft.propose(encode_command(cmd))
                node.pending_writes[index] = (term, req)
        except NotLeader as exc:
            self._reply(node, req, False, None, NodeId(exc.leader) if exc.leader else None)
            return
        except ProposalDropped:
            self._reply(node, req, False, None, None)
            return
        self._pump(node)
        self._check(node)

    def _reply(
        self,
        node: SimNode,
        req: _Request,
        ok: bool,
        output: str | None,
        hint: NodeId | None = None,
    ) -> None:
        if not self.net.is_connected(node.id):
            return
        for d in self.net.plan(True):
            self._schedule(d, req.client._on_reply, req, ok, output, hint, node.id)

    # --- measurements --------------------------------------------------------------------
    def persisted_bytes(self, id: str) -> int:
        """Raft state on ``id``'s disk besides the snapshot (6.824's RaftStateSize)."""
        return self.node(id).store.persisted_bytes()

    def rpc_count(self) -> int:
        return self.stats.rpcs_sent
