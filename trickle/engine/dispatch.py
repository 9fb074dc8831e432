"""Dispatch of committed runs to other nodes: the messages, the runner side, the leader side.

A run travels like this (docs/dispatch.md tells the whole story)::

    leader                                         runner (any node, server or agent)
    RunStarted committed
    Dispatcher.send(node, Dispatch) ---- DISPATCH_METHOD ----> RunnerService: fence by
                                                               term, dedupe by execution
                                                               id, submit to the Runner
    Dispatcher <--- OUTPUT_METHOD (batched, best effort) ----- on_output(execution, chunk)
    (and every other server's Dispatcher: each server's feed shows the run live)
    commit(finished) <---- REPORT_METHOD (until committed) --- report(finished)  [agents]
    Dispatcher.query(node) ---- QUERY_METHOD ----------------> "what do you run?"

The four methods ride on the Raft listener (``Transport.register`` / ``call``). Every
payload is a msgpack array ``[version, kind, ...]``, bounded by MAX_MESSAGE_BYTES; jobs,
executions and results inside it use ``trickle.engine.wire``. Decoding anything else
raises ``DispatchWireError`` (a ``wire.WireError``), which handlers turn into a refusal:
nothing a peer sends crashes a node.

Errors raised to the leader by ``Dispatcher.send`` / ``query``::

    TrickleError
    ├── DispatchRefused   the runner answered no (stale term, wrong node, stopping...);
    │                     ``reason`` says why; the run did not start
    └── RpcError          (trickle.raft.transport) no answer: PeerUnreachable (it did not
                          start), ConnectionLost / RpcTimeout (it may have: ``send`` asks
                          the node before giving up), RemoteError (a failed handler or a
                          malformed answer)

No Engine import: the Engine passes callbacks in (its Runner, ``commit``, ``on_output``,
the servers known to gossip).
"""

from __future__ import annotations

import collections
import enum
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import attrs
import msgpack
import trio

from trickle.engine.commands import RunFinished
from trickle.engine.journal import LaunchJournal, ResultJournal
from trickle.engine.model import BusyExecution, Execution, ExecutionId, Job
from trickle.engine.wire import (
    WireError,
    decode_command,
    decode_execution,
    decode_job,
    encode_command,
    encode_execution,
    encode_job,
)
from trickle.errors import EngineClosed, NotLeader, ProposalDropped, TrickleError
from trickle.raft.driver import ProposalUnknown
from trickle.raft.messages import NodeId
from trickle.raft.transport import (
    ConnectionLost,
    Handler,
    PeerUnreachable,
    RemoteError,
    RpcError,
    RpcTimeout,
)
from trickle.raft.wire import MAX_FRAME_BYTES

logger = logging.getLogger(__name__)

# RPC methods on the Raft listener
DISPATCH_METHOD = "trickle.dispatch.run"  # leader -> runner: run this committed intent
OUTPUT_METHOD = "trickle.dispatch.output"  # runner -> leader: output chunks, batched
REPORT_METHOD = "trickle.dispatch.report"  # runner -> any server: results to commit
QUERY_METHOD = "trickle.dispatch.query"  # leader -> runner: what do you run?

WIRE_VERSION = 1
MAX_MESSAGE_BYTES = MAX_FRAME_BYTES - 64 * 1024  # room for the RPC frame around a payload
MAX_NAME_CHARS = 1024  # node names, job names, execution ids
MAX_REASON_CHARS = 4096  # refusal and error texts
MAX_CHUNKS_PER_BATCH = 4096
MAX_RESULTS_PER_REPORT = 1024
MAX_RUNS_LISTED = 100_000  # runs in one "what do you run?" answer (each list)
MAX_IDS_ASKED = 4096  # execution ids one query asks about (``Query.ids``)

# runner side
OUTPUT_INTERVAL = 0.1  # seconds: at most one output batch per server this often
MAX_BATCH_BYTES = 256 * 1024  # UTF-8 bytes of chunk text in one output batch
MAX_CHUNK_CHARS = 16 * 1024  # a longer chunk is split (each piece gets its own seq)
MAX_OUTBOX_BYTES = 4 * 1024 * 1024  # output queued per server; the oldest dropped beyond
SERVERS_REFRESH = 1.0  # seconds the list of servers output goes to is reused
OUTPUT_TIMEOUT = 2.0  # seconds one output batch may take; then it is dropped
OUTPUT_FLUSH_WAIT = 1.0  # seconds a result waits for its run's last chunks to go first
REPORT_TIMEOUT = 30.0  # seconds for a server to commit a report batch and answer
MAX_REPORT_BATCH_BYTES = 4 * 1024 * 1024  # results per report call (at least one)
MAX_PENDING_RESULTS = 10_000  # results waiting for a commit; the oldest dropped beyond
MAX_PENDING_BYTES = 128 * 1024 * 1024  # their output, about (characters)
REPORT_BACKOFF_INITIAL = 0.1  # seconds before the second round of report attempts
REPORT_BACKOFF_MAX = 5.0  # seconds: the cap of the exponential backoff (jittered)
FINISHED_MEMORY = 16_384  # execution ids remembered as finished here (dedupe)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

# leader side
DISPATCH_TIMEOUT = 5.0  # seconds for a runner to accept a dispatch
DISPATCH_EXPIRY = 10.0  # seconds after sending when a runner refuses a dispatch still arriving
MAX_CLOCK_SKEW = 1.0  # seconds between two nodes' wall clocks that expiry allows for
DISPATCH_ATTEMPTS = 3  # sends of one dispatch while the node is unreachable
DISPATCH_BACKOFF = 0.5  # seconds before the second send, doubling (jittered)
QUERY_TIMEOUT = 5.0  # seconds for a "what do you run?" answer
COMMIT_TIMEOUT = 20.0  # seconds a report handler waits for its commits (< REPORT_TIMEOUT)
SEQ_MEMORY = 16_384  # executions whose last output seq a server remembers


class DispatchWireError(WireError):
    """A dispatch-protocol payload that cannot be decoded: malformed, oversized, unknown
    kind or version, or fields of the wrong type."""


class DispatchRefused(TrickleError):
    """The runner refused the dispatch (stale term, wrong node, stopping...): the run did
    not start there. ``reason`` says why, as the runner put it."""

    http_status = 503

    def __init__(self, node: str, reason: str) -> None:
        super().__init__(f"node {node} refused the run: {reason}")
        self.node = node
        self.reason = reason


# -- messages ------------------------------------------------------------------------------


class Kind(enum.IntEnum):
    DISPATCH = 1
    DISPATCH_ANSWER = 2
    OUTPUT = 3
    ACK = 4
    REPORT = 5
    REPORT_ANSWER = 6
    QUERY = 7
    RUNNER_STATE = 8


@attrs.frozen(kw_only=True)
class Dispatch:
    """The run intent as committed. ``job`` is the job as of the fire; ``term`` is the Raft
    term in which the sending leader leads (the one that committed the intent): the fencing
    token; ``leader`` is its node name (output is streamed there). ``expires_at``: the
    leader's wall-clock instant after which the runner refuses it (None: never): a
    dispatch held up in the network (a partition's TCP buffers) must not start a run the
    leader has meanwhile recorded failed."""

    job: Job
    execution: Execution
    term: int
    leader: str
    expires_at: datetime | None = None


@attrs.frozen(kw_only=True)
class DispatchAnswer:
    """accepted: the run is (or already was) running or finished on the node.
    duplicate: it already was (the dispatch was a repeat; it did not run again).
    reason: why it was refused. term: the highest leader term the node has seen."""

    accepted: bool
    duplicate: bool = False
    reason: str = ""
    term: int = 0


@attrs.frozen(kw_only=True)
class OutputChunk:
    """A piece of a run's output. ``seq`` counts from 0 per execution: a gap means pieces
    were lost on the way (the full output still comes with the result)."""

    execution_id: ExecutionId
    job_name: str
    seq: int
    chunk: str


@attrs.frozen(kw_only=True)
class OutputBatch:
    chunks: tuple[OutputChunk, ...]


@attrs.frozen(kw_only=True)
class Ack:
    ok: bool
    error: str = ""


@attrs.frozen(kw_only=True)
class Report:
    """Finished runs for the leader to commit (one or more)."""

    results: tuple[RunFinished, ...]


@attrs.frozen(kw_only=True)
class ReportAnswer:
    """committed: results now committed (or already were; the state machine took or
    refused them for good). rejected: (id, reason) of results that can never commit.
    leader: who leads, when this server does not (a hint). error: why nothing was taken."""

    committed: tuple[ExecutionId, ...] = ()
    rejected: tuple[tuple[ExecutionId, str], ...] = ()
    leader: str | None = None
    error: str = ""


@attrs.frozen(kw_only=True)
class Query:
    """ "What do you run?" from ``leader`` leading in ``term`` (0: no fencing news).
    ``ids``: runs the asker asks about; the answer's ``known`` lists those this node ran,
    runs or still reports in this process's life."""

    term: int = 0
    leader: str = ""
    ids: tuple[ExecutionId, ...] = ()


@attrs.frozen(kw_only=True)
class RunRef:
    job_name: str
    execution_id: ExecutionId


@attrs.frozen(kw_only=True)
class RunnerState:
    """A node's answer to a query. active: runs queued or running there. pending: runs
    finished there whose results no server has acknowledged yet (they are being reported).
    term/leader: the highest leader term the node has seen, and that leader. since: when
    (the node's clock) its runner began to accept dispatches, None if it did not say (a
    node from before this field): a run it does not know and whose intent was committed
    after ``since`` never reached it, so a new leader may launch it (see the Engine)."""

    node: str
    term: int
    leader: str
    active: tuple[RunRef, ...] = ()
    pending: tuple[RunRef, ...] = ()
    since: datetime | None = None
    known: tuple[ExecutionId, ...] = ()


DispatchMessage = (
    Dispatch | DispatchAnswer | OutputBatch | Ack | Report | ReportAnswer | Query | RunnerState
)
M = TypeVar("M", bound=DispatchMessage)


# -- encoding ------------------------------------------------------------------------------


def _pack(kind: Kind, *fields: Any) -> bytes:
    data: bytes = msgpack.packb([WIRE_VERSION, int(kind), *fields], use_bin_type=True)
    if len(data) > MAX_MESSAGE_BYTES:
        raise DispatchWireError(
            f"{kind.name.lower()} message of {len(data)} bytes is over the "
            f"{MAX_MESSAGE_BYTES} limit"
        )
    return data


def encode(message: DispatchMessage) -> bytes:
    """The payload for ``message``. Raises DispatchWireError if it is over
    MAX_MESSAGE_BYTES (a result with a huge output: the caller trims it)."""
    if isinstance(message, Dispatch):
        return _pack(
            Kind.DISPATCH,
            encode_job(message.job),
            encode_execution(message.execution),
            message.term,
            message.leader,
            None if message.expires_at is None else _micros(message.expires_at),
        )
    if isinstance(message, DispatchAnswer):
        return _pack(
            Kind.DISPATCH_ANSWER, message.accepted, message.duplicate, message.reason, message.term
        )
    if isinstance(message, OutputBatch):
        return _pack(
            Kind.OUTPUT, [[c.execution_id, c.job_name, c.seq, c.chunk] for c in message.chunks]
        )
    if isinstance(message, Ack):
        return _pack(Kind.ACK, message.ok, message.error)
    if isinstance(message, Report):
        return _pack(Kind.REPORT, [encode_command(r) for r in message.results])
    if isinstance(message, ReportAnswer):
        return _pack(
            Kind.REPORT_ANSWER,
            list(message.committed),
            [[i, r] for i, r in message.rejected],
            message.leader,
            message.error,
        )
    if isinstance(message, Query):
        return _pack(Kind.QUERY, message.term, message.leader, list(message.ids))
    if isinstance(message, RunnerState):
        return _pack(
            Kind.RUNNER_STATE,
            message.node,
            message.term,
            message.leader,
            [[r.job_name, r.execution_id] for r in message.active],
            [[r.job_name, r.execution_id] for r in message.pending],
            None if message.since is None else _micros(message.since),
            list(message.known),
        )
    raise TypeError(f"not a dispatch message: {type(message).__name__}")


def _str(value: Any, what: str, limit: int = MAX_NAME_CHARS, *, empty: bool = False) -> str:
    if type(value) is not str:
        raise DispatchWireError(f"{what} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise DispatchWireError(f"{what} is longer than {limit} characters")
    if not empty and not value:
        raise DispatchWireError(f"{what} is empty")
    return value


def _int(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise DispatchWireError(f"{what} must be a non-negative integer, not {value!r:.40}")
    return value


def _bool(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise DispatchWireError(f"{what} must be a boolean, not {type(value).__name__}")
    return value


def _list(value: Any, what: str, limit: int) -> list[Any]:
    if type(value) is not list:
        raise DispatchWireError(f"{what} must be a list, not {type(value).__name__}")
    if len(value) > limit:
        raise DispatchWireError(f"{what} has {len(value)} items, over the {limit} limit")
    return value


def _fields(value: Any, what: str, n: int) -> list[Any]:
    if type(value) is not list or len(value) != n:
        raise DispatchWireError(f"{what} must be a list of {n} fields")
    return value


def _bin(value: Any, what: str) -> bytes:
    if type(value) is not bytes:
        raise DispatchWireError(f"{what} must be bytes, not {type(value).__name__}")
    return value


def _refs(value: Any, what: str) -> tuple[RunRef, ...]:
    out = []
    for item in _list(value, what, MAX_RUNS_LISTED):
        job, ex = _fields(item, f"an entry of {what}", 2)
        out.append(
            RunRef(
                job_name=_str(job, "job name"), execution_id=ExecutionId(_str(ex, "execution id"))
            )
        )
    return tuple(out)


def _decode_dispatch(f: list[Any]) -> Dispatch:
    if type(f) is list and len(f) == 4:  # from a node that sets no expiry
        f = [*f, None]
    job_data, ex_data, term, leader, expires = _fields(f, "a dispatch", 5)
    try:
        job = decode_job(_bin(job_data, "job"))
        execution = decode_execution(_bin(ex_data, "execution"))
    except DispatchWireError:
        raise
    except WireError as exc:
        raise DispatchWireError(f"dispatch: {exc}") from exc
    if execution.job_name != job.name:
        raise DispatchWireError(
            f"dispatch: execution {execution.id} is of job {execution.job_name!r}, not {job.name!r}"
        )
    if not execution.running:
        raise DispatchWireError(f"dispatch: execution {execution.id} is already finished")
    return Dispatch(
        job=job,
        execution=execution,
        term=_int(term, "term"),
        leader=_str(leader, "leader"),
        expires_at=None if expires is None else _EPOCH + _int(expires, "expires_at") * _MICRO,
    )


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // _MICRO


def _decode_result(data: Any) -> RunFinished:
    try:
        command = decode_command(_bin(data, "result"))
    except DispatchWireError:
        raise
    except WireError as exc:
        raise DispatchWireError(f"result: {exc}") from exc
    if not isinstance(command, RunFinished):
        raise DispatchWireError(f"result: not a RunFinished but a {type(command).__name__}")
    return command


def decode(data: bytes) -> DispatchMessage:
    """Inverse of ``encode``. Raises DispatchWireError (only) on anything invalid."""
    if type(data) is not bytes:
        raise DispatchWireError(f"payload must be bytes, not {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise DispatchWireError(
            f"payload of {len(data)} bytes is over the {MAX_MESSAGE_BYTES} limit"
        )
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:
        raise DispatchWireError(f"malformed payload: {exc}") from exc
    if type(raw) is not list or len(raw) < 2:
        raise DispatchWireError("malformed payload: not a [version, kind, ...] array")
    version, kind, *f = raw
    if version != WIRE_VERSION or type(version) is not int:
        raise DispatchWireError(f"unsupported dispatch protocol version {version!r:.20}")
    decoder = _DECODERS.get(kind) if type(kind) is int else None
    if decoder is None:
        raise DispatchWireError(f"unknown dispatch message kind {kind!r:.20}")
    try:
        return decoder(f)
    except DispatchWireError:
        raise
    except Exception as exc:  # a shape no check above foresaw: still just a bad payload
        raise DispatchWireError(f"invalid {Kind(kind).name.lower()} message: {exc}") from exc


def _decode_answer(f: list[Any]) -> DispatchAnswer:
    accepted, duplicate, reason, term = _fields(f, "a dispatch answer", 4)
    return DispatchAnswer(
        accepted=_bool(accepted, "accepted"),
        duplicate=_bool(duplicate, "duplicate"),
        reason=_str(reason, "reason", MAX_REASON_CHARS, empty=True),
        term=_int(term, "term"),
    )


def _decode_output(f: list[Any]) -> OutputBatch:
    (items,) = _fields(f, "an output batch", 1)
    chunks = []
    for item in _list(items, "chunks", MAX_CHUNKS_PER_BATCH):
        ex, job, seq, chunk = _fields(item, "an output chunk", 4)
        chunks.append(
            OutputChunk(
                execution_id=ExecutionId(_str(ex, "execution id")),
                job_name=_str(job, "job name"),
                seq=_int(seq, "seq"),
                chunk=_str(chunk, "chunk", MAX_MESSAGE_BYTES, empty=True),
            )
        )
    return OutputBatch(chunks=tuple(chunks))


def _decode_ack(f: list[Any]) -> Ack:
    ok, error = _fields(f, "an ack", 2)
    return Ack(ok=_bool(ok, "ok"), error=_str(error, "error", MAX_REASON_CHARS, empty=True))


def _decode_report(f: list[Any]) -> Report:
    (items,) = _fields(f, "a report", 1)
    results = tuple(_decode_result(r) for r in _list(items, "results", MAX_RESULTS_PER_REPORT))
    return Report(results=results)


def _decode_report_answer(f: list[Any]) -> ReportAnswer:
    committed, rejected, leader, error = _fields(f, "a report answer", 4)
    rej = []
    for item in _list(rejected, "rejected", MAX_RESULTS_PER_REPORT):
        ex, reason = _fields(item, "a rejected result", 2)
        rej.append(
            (ExecutionId(_str(ex, "execution id")), _str(reason, "reason", MAX_REASON_CHARS))
        )
    return ReportAnswer(
        committed=tuple(
            ExecutionId(_str(i, "execution id"))
            for i in _list(committed, "committed", MAX_RESULTS_PER_REPORT)
        ),
        rejected=tuple(rej),
        leader=None if leader is None else _str(leader, "leader"),
        error=_str(error, "error", MAX_REASON_CHARS, empty=True),
    )


def _decode_query(f: list[Any]) -> Query:
    if type(f) is not list or len(f) not in (2, 3):
        raise DispatchWireError("a query must be a list of 2 or 3 fields")
    if len(f) == 2:  # from a node before ``ids``
        f = [*f, []]
    term, leader, ids = f
    return Query(
        term=_int(term, "term"),
        leader=_str(leader, "leader", empty=True),
        ids=_ids(ids, "ids", MAX_IDS_ASKED),
    )


def _ids(value: Any, what: str, limit: int) -> tuple[ExecutionId, ...]:
    return tuple(ExecutionId(_str(i, "execution id")) for i in _list(value, what, limit))


def _decode_state(f: list[Any]) -> RunnerState:
    if type(f) is not list or len(f) not in (5, 7):
        raise DispatchWireError("a runner state must be a list of 5 or 7 fields")
    if len(f) == 5:  # from a node before ``since`` and ``known``
        f = [*f, None, []]
    node, term, leader, active, pending, since, known = f
    return RunnerState(
        node=_str(node, "node"),
        term=_int(term, "term"),
        leader=_str(leader, "leader", empty=True),
        active=_refs(active, "active"),
        pending=_refs(pending, "pending"),
        since=None if since is None else _EPOCH + _int(since, "since") * _MICRO,
        known=_ids(known, "known", MAX_IDS_ASKED),
    )


_DECODERS: dict[int, Callable[[list[Any]], DispatchMessage]] = {
    Kind.DISPATCH: _decode_dispatch,
    Kind.DISPATCH_ANSWER: _decode_answer,
    Kind.OUTPUT: _decode_output,
    Kind.ACK: _decode_ack,
    Kind.REPORT: _decode_report,
    Kind.REPORT_ANSWER: _decode_report_answer,
    Kind.QUERY: _decode_query,
    Kind.RUNNER_STATE: _decode_state,
}


def _expect(data: bytes, cls: type[M]) -> M:
    message = decode(data)
    if not isinstance(message, cls):
        raise DispatchWireError(f"expected a {cls.__name__}, got a {type(message).__name__}")
    return message


def _truncate(text: str, limit: int = MAX_REASON_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- what both sides need from the outside -----------------------------------------------


class RpcTransport(Protocol):
    """The RPC half of a Raft transport (TcpTransport, MemoryTransport)."""

    node_id: NodeId

    def register(self, method: str, handler: Handler) -> None: ...

    def unregister(self, method: str) -> None: ...

    async def call(
        self,
        peer: NodeId,
        method: str,
        payload: bytes,
        *,
        timeout: float = ...,  # noqa: ASYNC109
    ) -> bytes: ...


class LocalRunner(Protocol):
    """What the runner service needs from this node's runner (``engine.runner.Runner``)."""

    def submit(self, job: Job, execution: Execution) -> None:
        """Queue the run; never blocks. Raises RuntimeError when the runner has stopped."""
        ...

    def is_active(self, execution_id: str) -> bool:
        """The run is queued or running here."""
        ...

    def busy(self) -> list[BusyExecution]:
        """Every run queued or running here."""
        ...


# -- runner side ---------------------------------------------------------------------------


@attrs.frozen
class RunnerStatistics:
    term: int  # the highest leader term seen
    leader: str  # that term's leader ("" if none seen)
    accepted: int  # dispatches that started a run
    duplicates: int  # dispatches of a run already active or finished here (not rerun)
    refused: int  # dispatches refused (stale term, wrong node, stopping)
    malformed: int  # payloads that did not decode (refused)
    output_batches_sent: int
    output_chunks_sent: int
    output_batches_dropped: int  # a failed or refused send: its chunks are lost
    output_chunks_dropped: int  # lost in failed batches or pushed out of a full outbox
    results_pending: int  # results waiting for a server to commit them
    results_committed: int
    results_rejected: int  # a server said they can never commit: dropped
    results_dropped: int  # pushed out of a full pending map: dropped
    report_failures: int  # report calls that failed or committed nothing


@attrs.define(eq=False)
class _Origin:
    """A run dispatched here over RPC: who to stream its output to."""

    leader: str
    term: int
    job_name: str
    seq: int = 0


@attrs.define(eq=False)
class _Outbox:
    """Output chunks queued for one server, sent by one task at a time."""

    chunks: collections.deque[tuple[OutputChunk, int]] = attrs.Factory(collections.deque)
    size: int = 0  # UTF-8 bytes queued
    sending: bool = False  # a sender task runs (it exits once the queue is empty)
    last_send: float = float("-inf")


@attrs.define(eq=False)
class _Pending:
    finished: RunFinished
    size: int


class RunnerService:
    """The runner's end of dispatch, on every node (servers and agents).

    Handles DISPATCH_METHOD and QUERY_METHOD (registered by ``run``); streams the output of
    its runs to the leader and every other server (``on_output``: whichever server a
    client watches shows it live); on an agent, delivers results to a server until one
    commits them (``report``).

    Fencing: the service keeps the highest term it has seen from a leader (in dispatches,
    queries and ``note_leader``) and refuses dispatches of lower terms. That memory, and
    the memory of which runs finished here, live in memory only: after a restart the node
    accepts any term until a leader dispatches to it or queries it.

    node_name: this node. runner: its Runner (submit, is_active, busy). servers: the
    servers gossip knows (report targets besides the leader). rng: jitter of the report
    backoff (injected, seeded in tests). journal: where results not yet committed are kept
    across a restart (loaded at construction); None keeps them in memory only.
    """

    def __init__(
        self,
        *,
        node_name: str,
        transport: RpcTransport,
        runner: LocalRunner,
        servers: Callable[[], Iterable[str]],
        rng: random.Random,
        max_pending_results: int = MAX_PENDING_RESULTS,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        clock: Callable[[], datetime] | None = None,
        journal: ResultJournal | None = None,
        launches: LaunchJournal | None = None,
    ) -> None:
        self.node_name = node_name
        self._now = clock or (lambda: datetime.now(UTC))
        self._since = trio.current_time()  # dispatches reach this service from here on
        # runs launched by this node's earlier processes of this boot, and since when the
        # launch journal holds every one (None: no journal, or not trusted)
        self._launches = launches
        self._prior_since: datetime | None = None
        self._prior: frozenset[ExecutionId] = frozenset()
        if launches is not None:
            since, prior = launches.open(self._now())
            self._prior_since = since
            self._prior = frozenset(ExecutionId(i) for i in prior)
        self._transport = transport
        self._runner = runner
        self._servers = servers
        self._rng = rng
        self._max_pending_results = max_pending_results
        self._max_pending_bytes = max_pending_bytes
        self._term = 0
        self._leader = ""
        self._hint: str | None = None  # where the last report went through (or was sent)
        self._origins: dict[ExecutionId, _Origin] = {}
        self._launched: set[ExecutionId] = set()  # see launched_here
        self._prune_at = 64
        # runs not dispatched here over RPC (a leader's own): their output's seq and job
        self._local_streams: dict[ExecutionId, _Origin] = {}
        self._local_prune_at = 64
        self._server_cache: tuple[float, tuple[str, ...]] = (float("-inf"), ())
        self._finished: collections.OrderedDict[ExecutionId, None] = collections.OrderedDict()
        self._outboxes: dict[str, _Outbox] = {}
        self._unsent: collections.Counter[ExecutionId] = collections.Counter()
        self._output_moved = trio.Event()
        self._pending: collections.OrderedDict[ExecutionId, _Pending] = collections.OrderedDict()
        self._pending_bytes = 0
        self._has_pending = trio.Event()
        self._leader_news = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._stats: collections.Counter[str] = collections.Counter()
        self._journal = journal or ResultJournal(None)
        for finished in self._journal.load():  # kept by this node before a restart
            self._remember_finished(finished.execution_id)
            self._add_pending(finished)
        if self._pending:
            logger.info(
                "%s: %d results kept from before the restart wait for a server",
                node_name,
                len(self._pending),
            )

    # lifecycle ---------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register the handlers and serve until cancelled (then unregister them). Output
        still queued and results not yet committed stay in this object (a later ``run``
        sends them); they are lost with the process."""
        if self._nursery is not None:
            raise RuntimeError("this runner service is already running")
        self._transport.register(DISPATCH_METHOD, self._serve_dispatch)
        try:
            self._transport.register(QUERY_METHOD, self._serve_query)
        except BaseException:
            self._transport.unregister(DISPATCH_METHOD)
            raise
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._report_forever)
                for destination, box in self._outboxes.items():
                    if box.chunks and not box.sending:
                        box.sending = True
                        nursery.start_soon(self._send_output, destination, box)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._transport.unregister(DISPATCH_METHOD)
            self._transport.unregister(QUERY_METHOD)

    def close(self) -> None:
        """The node stops: its launch journal's file is closed (it stays valid for the
        next start). Nothing is launched after this."""
        if self._launches is not None:
            self._launches.close()

    # fencing -----------------------------------------------------------------------------
    @property
    def term(self) -> int:
        """The highest term seen from a leader."""
        return self._term

    @property
    def leader(self) -> str:
        return self._leader

    def note_leader(self, term: int, leader: str) -> None:
        """A leader of ``term`` exists (a server passes Raft's soft state whenever it
        names a leader): from now on dispatches of lower terms are refused; results go to
        ``leader`` first."""
        if term > self._term:
            self._term = term
            self._leader = leader
            self._hint = leader or self._hint
            self._leader_news.set()
            self._leader_news = trio.Event()

    # dispatch ----------------------------------------------------------------------------
    async def _serve_dispatch(self, src: NodeId, payload: bytes) -> bytes:
        try:
            dispatch = _expect(payload, Dispatch)
        except DispatchWireError as exc:
            self._stats["malformed"] += 1
            logger.warning("%s: malformed dispatch from %s: %s", self.node_name, src, exc)
            answer = DispatchAnswer(
                accepted=False, reason=_truncate(f"malformed dispatch: {exc}"), term=self._term
            )
            return encode(answer)
        return encode(self.accept(dispatch, src=src))

    def accept(self, dispatch: Dispatch, *, src: str | None = None) -> DispatchAnswer:
        """Take a dispatch (the DISPATCH_METHOD handler; the leader calls it directly for a
        run on itself). Refused: no term, a term below the highest seen, a run for another node, a
        sender other than the leader it names, a dispatch past its ``expires_at`` (by this
        node's clock), a stopped runner. Accepted without running
        again: a run already active or finished here. Otherwise submitted to the runner."""
        ex = dispatch.execution
        refusal = ""
        if src is not None and src != dispatch.leader:
            refusal = f"sent by {src} but on behalf of {dispatch.leader}"
        elif ex.node_name != self.node_name:
            refusal = f"execution {ex.id} is for node {ex.node_name}, not {self.node_name}"
        elif dispatch.term < 1:  # every leader's term is at least 1: no fencing without it
            refusal = f"a dispatch from {dispatch.leader} without a leader's term"
        elif dispatch.term < self._term:
            refusal = (
                f"stale term {dispatch.term} from {dispatch.leader}: this node has seen "
                f"term {self._term}" + (f" from {self._leader}" if self._leader else "")
            )
        if refusal:
            self._stats["refused"] += 1
            logger.info("%s: refused run %s: %s", self.node_name, ex.id, refusal)
            return DispatchAnswer(accepted=False, reason=refusal, term=self._term)
        self.note_leader(dispatch.term, dispatch.leader)
        if self._known(ex.id):
            self._stats["duplicates"] += 1
            logger.debug("%s: run %s dispatched again: not rerun", self.node_name, ex.id)
            return DispatchAnswer(accepted=True, duplicate=True, term=self._term)
        now = self._now()
        if dispatch.expires_at is not None and now > dispatch.expires_at:
            late = (now - dispatch.expires_at).total_seconds()
            refusal = (
                f"the dispatch expired at {dispatch.expires_at.isoformat()} ({late:.1f}s "
                "before it arrived): the leader records the run as not started"
            )
            self._stats["refused"] += 1
            self._stats["expired"] += 1
            logger.warning("%s: refused run %s: %s", self.node_name, ex.id, refusal)
            return DispatchAnswer(accepted=False, reason=refusal, term=self._term)
        if self._nursery is None:
            refusal = f"node {self.node_name} is not running jobs (its service stopped)"
        else:
            try:
                if self._launches is not None:  # before it starts (see LaunchJournal): a run
                    self._launches.record(ex.id)  # recorded but refused is failed, not rerun
                self._runner.submit(dispatch.job, ex)
            except RuntimeError as exc:
                refusal = f"node {self.node_name} is not running jobs: {exc}"
        if refusal:
            self._stats["refused"] += 1
            return DispatchAnswer(accepted=False, reason=refusal, term=self._term)
        self._origins[ex.id] = _Origin(
            leader=dispatch.leader, term=dispatch.term, job_name=ex.job_name
        )
        self._stats["accepted"] += 1
        if len(self._origins) >= self._prune_at:
            self._prune()
        return DispatchAnswer(accepted=True, term=self._term)

    def knows(self, execution_id: ExecutionId) -> bool:
        """This node runs, queues, reports or finished the run (in this process's life),
        or launched it in an earlier process of this boot (the launch journal)."""
        return self._known(execution_id)

    @property
    def since(self) -> datetime:
        """Every run launched on this node after this instant is one it ``knows``: when
        (this node's wall clock, now) this service began to accept dispatches, measured
        on Trio's monotonic clock so that a wall-clock step does not move it; or, with a
        trusted launch journal, the instant since which the journal holds every launch,
        earlier processes of this boot included."""
        if self._prior_since is not None:
            return self._prior_since
        return self._now() - timedelta(seconds=trio.current_time() - self._since)

    def launched_before_restart(self, execution_id: ExecutionId) -> bool:
        """An earlier process of this node launched the run (the launch journal)."""
        return execution_id in self._prior

    @property
    def journal_trusted(self) -> bool:
        """The launch journal tells which runs earlier processes launched (see ``since``)."""
        return self._prior_since is not None

    def launched_here(self, execution_id: ExecutionId) -> None:
        """The Engine launches this run on this node itself (a server's own run: not
        dispatched over RPC, its result reported through Raft), right after this call.
        ``knows`` it until ``settled``, so a new leader asking never takes it for a run
        that never came; the launch journal keeps it across a restart."""
        if self._launches is not None:
            self._launches.record(execution_id)
        self._launched.add(execution_id)

    def settled(self, execution_id: ExecutionId) -> None:
        """The run's end is in the replicated state: nobody asks about it any more."""
        self._launched.discard(execution_id)

    def _known(self, execution_id: ExecutionId) -> bool:
        return (
            execution_id in self._launched
            or execution_id in self._prior
            or execution_id in self._origins
            or execution_id in self._pending
            or execution_id in self._finished
            or self._runner.is_active(execution_id)
        )

    def _remember_finished(self, execution_id: ExecutionId) -> None:
        self._finished[execution_id] = None
        self._finished.move_to_end(execution_id)
        while len(self._finished) > FINISHED_MEMORY:
            self._finished.popitem(last=False)

    def _prune(self) -> None:
        """Forget the origins of runs that ended without ``report`` (a server's runs: the
        Engine reports those through Raft), remembering them as finished."""
        for ex_id in [
            i
            for i in self._origins
            if not self._runner.is_active(i) and i not in self._pending and not self._unsent[i]
        ]:
            del self._origins[ex_id]
            self._unsent.pop(ex_id, None)
            self._remember_finished(ex_id)
        self._prune_at = max(64, 2 * len(self._origins))

    # query -------------------------------------------------------------------------------
    async def _serve_query(self, src: NodeId, payload: bytes) -> bytes:
        try:
            query = _expect(payload, Query)
        except DispatchWireError as exc:
            self._stats["malformed"] += 1
            logger.warning("%s: malformed query from %s: %s", self.node_name, src, exc)
            raise  # answered as a RemoteError: the asker sees why
        if query.term and query.leader:
            self.note_leader(query.term, query.leader)
        return encode(self.state(query.ids))

    def state(self, asked: Iterable[ExecutionId] = ()) -> RunnerState:
        """What this node runs (queued or running), the results it still holds, and which
        of the runs ``asked`` about it knows (see ``knows``)."""
        self._prune()
        active = [
            RunRef(job_name=b.execution.job_name, execution_id=b.execution.id)
            for b in self._runner.busy()
        ]
        pending = [
            RunRef(job_name=p.finished.job_name, execution_id=i) for i, p in self._pending.items()
        ]
        return RunnerState(
            node=self.node_name,
            term=self._term,
            leader=self._leader,
            active=tuple(active[:MAX_RUNS_LISTED]),
            pending=tuple(pending[:MAX_RUNS_LISTED]),
            since=self.since,
            known=tuple(i for i in asked if self._known(i)),
        )

    # output ------------------------------------------------------------------------------
    def on_output(self, execution: Execution, chunk: str) -> None:
        """Queue ``chunk`` of a run for the leader and every other server gossip knows (the
        Runner's ``on_output``): each server's live feed carries it. Never blocks. The
        caller publishes it on this node itself (a server receiving a chunk publishes it
        there, once: its Dispatcher drops duplicates by seq)."""
        if not chunk:
            return
        origin = self._origins.get(execution.id)
        if origin is None:  # run here without a dispatch (a leader's own run)
            origin = self._local_streams.get(execution.id)
            if origin is None:
                origin = self._local_streams[execution.id] = _Origin(
                    leader=self.node_name, term=self._term, job_name=execution.job_name
                )
                if len(self._local_streams) >= self._local_prune_at:
                    self._prune_local()
        # output follows the leader: a newer one than the run's gets it too
        leader = self._leader if self._term > origin.term and self._leader else origin.leader
        destinations = [d for d in self._output_servers() if d != leader]
        if leader != self.node_name:
            destinations.append(leader)
        if not destinations:
            return
        pieces = [chunk[i : i + MAX_CHUNK_CHARS] for i in range(0, len(chunk), MAX_CHUNK_CHARS)]
        items = []
        for piece in pieces:
            items.append(
                (
                    OutputChunk(
                        execution_id=execution.id,
                        job_name=origin.job_name,
                        seq=origin.seq,
                        chunk=piece,
                    ),
                    len(piece.encode("utf-8")),
                )
            )
            origin.seq += 1
        for destination in destinations:
            self._queue_output(destination, items)

    def _output_servers(self) -> tuple[str, ...]:
        """The other servers (refreshed at most every SERVERS_REFRESH: a chunk is cheap)."""
        now = trio.current_time()
        at, names = self._server_cache
        if now - at >= SERVERS_REFRESH:
            names = tuple(n for n in self._servers() if n != self.node_name)
            self._server_cache = (now, names)
        return names

    def _queue_output(self, destination: str, items: list[tuple[OutputChunk, int]]) -> None:
        box = self._outboxes.get(destination)
        if box is None:
            box = self._outboxes[destination] = _Outbox()
        for item, size in items:
            box.chunks.append((item, size))
            box.size += size
            self._unsent[item.execution_id] += 1
        while box.size > MAX_OUTBOX_BYTES and len(box.chunks) > 1:
            lost, size = box.chunks.popleft()
            box.size -= size
            self._stats["output_chunks_dropped"] += 1
            self._sent(lost.execution_id, 1)
        if not box.sending and self._nursery is not None:
            box.sending = True
            self._nursery.start_soon(self._send_output, destination, box)

    def _prune_local(self) -> None:
        """Forget the output streams of local runs that ended and whose output went."""
        for ex_id in [
            i for i in self._local_streams if not self._runner.is_active(i) and not self._unsent[i]
        ]:
            del self._local_streams[ex_id]
        self._local_prune_at = max(64, 2 * len(self._local_streams))

    def _sent(self, execution_id: ExecutionId, n: int) -> None:
        left = self._unsent[execution_id] - n
        if left > 0:
            self._unsent[execution_id] = left
        else:
            self._unsent.pop(execution_id, None)

    async def _send_output(self, destination: str, box: _Outbox) -> None:
        """Send ``box`` to ``destination``, one batch at a time, at most every
        OUTPUT_INTERVAL; exits once nothing came for an interval (so the next chunk after
        that can go at once)."""
        try:
            while True:
                wait = box.last_send + OUTPUT_INTERVAL - trio.current_time()
                if wait > 0:
                    await trio.sleep(wait)
                if not box.chunks:
                    break
                batch: list[OutputChunk] = []
                size = 0
                while box.chunks and (not batch or size + box.chunks[0][1] <= MAX_BATCH_BYTES):
                    item, item_size = box.chunks.popleft()
                    box.size -= item_size
                    size += item_size
                    batch.append(item)
                box.last_send = trio.current_time()
                ok = await self._post_output(destination, batch)
                for item in batch:
                    self._sent(item.execution_id, 1)
                if ok:
                    self._stats["output_batches_sent"] += 1
                    self._stats["output_chunks_sent"] += len(batch)
                else:
                    self._stats["output_batches_dropped"] += 1
                    self._stats["output_chunks_dropped"] += len(batch)
                self._output_moved.set()
                self._output_moved = trio.Event()
        finally:
            box.sending = False
            if not box.chunks and self._outboxes.get(destination) is box:
                del self._outboxes[destination]

    async def _post_output(self, destination: str, batch: list[OutputChunk]) -> bool:
        try:
            reply = await self._transport.call(
                NodeId(destination),
                OUTPUT_METHOD,
                encode(OutputBatch(chunks=tuple(batch))),
                timeout=OUTPUT_TIMEOUT,
            )
            ack = _expect(reply, Ack)
        except (RpcError, DispatchWireError) as exc:
            logger.debug("%s: output to %s dropped: %s", self.node_name, destination, exc)
            return False
        if not ack.ok:
            logger.info("%s: %s refused output: %s", self.node_name, destination, ack.error)
        return ack.ok

    # results (agents) --------------------------------------------------------------------
    async def report(self, finished: RunFinished) -> None:
        """Hand a finished run's result over for delivery (an agent's Runner ``report``).
        Returns at once: the result waits in the pending map, listed by queries, and in
        the journal on disk (a restart delivers it again), until a server acknowledges it
        committed. A full map drops its oldest result (logged, counted): the leader then
        finds that run unknown here and records it failed."""
        ex_id = finished.execution_id
        self._origins.pop(ex_id, None)
        self._remember_finished(ex_id)
        self._journal.save(finished)
        self._add_pending(finished)
        self._has_pending.set()

    def _add_pending(self, finished: RunFinished) -> None:
        ex_id = finished.execution_id
        old = self._pending.pop(ex_id, None)
        if old is not None:
            self._pending_bytes -= old.size
        entry = _Pending(finished=finished, size=len(finished.output) + 256)
        self._pending[ex_id] = entry
        self._pending_bytes += entry.size
        while len(self._pending) > 1 and (
            len(self._pending) > self._max_pending_results
            or self._pending_bytes > self._max_pending_bytes
        ):
            lost_id, lost = self._pending.popitem(last=False)
            self._pending_bytes -= lost.size
            self._journal.remove(lost_id)
            self._stats["results_dropped"] += 1
            logger.error(
                "%s: too many results wait for a leader: dropped the result of %s (%s)",
                self.node_name,
                lost_id,
                lost.finished.job_name,
            )

    @property
    def pending(self) -> list[RunFinished]:
        """Results not yet acknowledged, oldest first."""
        return [p.finished for p in self._pending.values()]

    def _targets(self) -> list[str]:
        """Where to send results: the last server that took them or the newest leader
        heard of, then every server gossip knows (not this node)."""
        out: list[str] = []
        for name in (self._hint, self._leader, *self._servers()):
            if name and name != self.node_name and name not in out:
                out.append(name)
        return out

    def _next_batch(self) -> list[RunFinished]:
        batch: list[RunFinished] = []
        size = 0
        for entry in self._pending.values():
            if batch and (
                len(batch) >= MAX_RESULTS_PER_REPORT or size + entry.size > MAX_REPORT_BATCH_BYTES
            ):
                break
            batch.append(entry.finished)
            size += entry.size
        return batch

    async def _report_forever(self) -> None:
        failures = 0
        while True:
            if not self._pending:
                self._has_pending = trio.Event()
                await self._has_pending.wait()
            batch = self._next_batch()
            await self._wait_output_of(batch)
            if await self._deliver(batch):
                failures = 0
                continue
            delay = min(REPORT_BACKOFF_MAX, REPORT_BACKOFF_INITIAL * 2**failures)
            failures += 1
            news = self._leader_news
            with trio.move_on_after(delay * self._rng.uniform(0.5, 1.0)):
                await news.wait()  # a new leader: try it at once

    async def _wait_output_of(self, batch: list[RunFinished]) -> None:
        """Let the runs' last output chunks go before their results (bounded wait)."""
        with trio.move_on_after(OUTPUT_FLUSH_WAIT):
            while any(self._unsent[r.execution_id] for r in batch):
                await self._output_moved.wait()

    async def _deliver(self, batch: list[RunFinished]) -> bool:
        """One round: offer ``batch`` to each target in turn until one commits some of it.
        True if any result was settled (committed or rejected)."""
        targets = collections.deque(self._targets())
        tried: set[str] = set()
        batch, payload = self._encode_report(batch)
        while targets:
            target = targets.popleft()
            if target in tried:
                continue
            tried.add(target)
            try:
                reply = await self._transport.call(
                    NodeId(target), REPORT_METHOD, payload, timeout=REPORT_TIMEOUT
                )
                answer = _expect(reply, ReportAnswer)
            except (RpcError, DispatchWireError) as exc:
                self._stats["report_failures"] += 1
                logger.info(
                    "%s: %d results not delivered to %s: %s",
                    self.node_name,
                    len(batch),
                    target,
                    exc,
                )
                continue
            settled = self._settle(answer)
            if settled:
                self._hint = target
                return True
            self._stats["report_failures"] += 1
            logger.info(
                "%s: %s took none of %d results: %s",
                self.node_name,
                target,
                len(batch),
                answer.error or "no reason given",
            )
            if answer.leader and answer.leader not in tried and answer.leader != self.node_name:
                targets.appendleft(answer.leader)
        return False

    def _encode_report(self, batch: list[RunFinished]) -> tuple[list[RunFinished], bytes]:
        """The first results of ``batch`` that fit one message, encoded. A single result
        too big for a message (a huge output) keeps the end of its output, as the store
        would."""
        while True:
            try:
                return batch, encode(Report(results=tuple(batch)))
            except DispatchWireError:
                if len(batch) > 1:
                    batch = batch[: len(batch) // 2]
                    continue
            finished = batch[0]
            keep = MAX_MESSAGE_BYTES // 8  # characters: at most half the limit in UTF-8
            trimmed = attrs.evolve(finished, output=finished.output[-keep:])
            entry = self._pending.get(finished.execution_id)
            if entry is not None:
                self._pending_bytes += len(trimmed.output) + 256 - entry.size
                entry.finished = trimmed
                entry.size = len(trimmed.output) + 256
            logger.warning(
                "%s: the output of %s was cut to its last %d characters to be reported",
                self.node_name,
                finished.execution_id,
                keep,
            )
            batch = [trimmed]

    def _settle(self, answer: ReportAnswer) -> bool:
        settled = False
        for ex_id in answer.committed:
            entry = self._pending.pop(ex_id, None)
            if entry is not None:
                self._pending_bytes -= entry.size
                self._journal.remove(ex_id)
                self._stats["results_committed"] += 1
                settled = True
        for ex_id, reason in answer.rejected:
            entry = self._pending.pop(ex_id, None)
            if entry is not None:
                self._pending_bytes -= entry.size
                self._journal.remove(ex_id)
                self._stats["results_rejected"] += 1
                settled = True
                logger.error("%s: result of %s rejected: %s", self.node_name, ex_id, reason)
        return settled

    def statistics(self) -> RunnerStatistics:
        s = self._stats
        return RunnerStatistics(
            term=self._term,
            leader=self._leader,
            accepted=s["accepted"],
            duplicates=s["duplicates"],
            refused=s["refused"],
            malformed=s["malformed"],
            output_batches_sent=s["output_batches_sent"],
            output_chunks_sent=s["output_chunks_sent"],
            output_batches_dropped=s["output_batches_dropped"],
            output_chunks_dropped=s["output_chunks_dropped"],
            results_pending=len(self._pending),
            results_committed=s["results_committed"],
            results_rejected=s["results_rejected"],
            results_dropped=s["results_dropped"],
            report_failures=s["report_failures"],
        )


# -- leader side ---------------------------------------------------------------------------


@attrs.frozen
class DispatcherStatistics:
    sent: int  # dispatches accepted by their runner (duplicates included)
    refused: int  # answered with a refusal
    failed: int  # no usable answer (RpcError raised to the caller)
    retries: int  # re-sends after the node was unreachable
    output_chunks: int  # chunks received and passed on
    output_gaps: int  # chunks of a run never received here (lost, or sent to a former leader)
    output_duplicates: int  # chunks received twice (dropped)
    results_committed: int
    results_not_committed: int  # offered but not committed here (not leader, dropped...)
    results_rejected: int  # that can never commit
    malformed: int  # payloads that did not decode (refused)


class Dispatcher:
    """The leader's end of dispatch; runs on every server (any server may be offered a
    result: it commits through Raft, or says who leads).

    Handles OUTPUT_METHOD and REPORT_METHOD (registered by ``run``).
    on_output(job_name, execution_id, chunk): a chunk of a remote run, in order per run
        (the Engine publishes it as an execution_output event). Must not block.
    commit(finished): returns once the result is committed (even if the state machine
        refused it: it is settled), raises NotLeader (with a hint) / ProposalDropped /
        ProposalUnknown / EngineClosed when it cannot: the runner then tries elsewhere;
        any other TrickleError rejects the result for good.
    local: this node's RunnerService: a dispatch or query for this node skips the network.
    rng: jitter of the re-send backoff.
    """

    def __init__(
        self,
        *,
        node_name: str,
        transport: RpcTransport,
        on_output: Callable[[str, ExecutionId, str], None],
        commit: Callable[[RunFinished], Awaitable[None]],
        rng: random.Random,
        local: RunnerService | None = None,
    ) -> None:
        self.node_name = node_name
        self._transport = transport
        self._on_output = on_output
        self._commit = commit
        self._rng = rng
        self._local = local
        self._last_seq: collections.OrderedDict[ExecutionId, int] = collections.OrderedDict()
        self._stats: collections.Counter[str] = collections.Counter()
        self._running = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register the handlers until cancelled."""
        if self._running:
            raise RuntimeError("this dispatcher is already running")
        self._transport.register(OUTPUT_METHOD, self._serve_output)
        try:
            self._transport.register(REPORT_METHOD, self._serve_report)
        except BaseException:
            self._transport.unregister(OUTPUT_METHOD)
            raise
        self._running = True
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self._running = False
            self._transport.unregister(OUTPUT_METHOD)
            self._transport.unregister(REPORT_METHOD)

    # dispatch ----------------------------------------------------------------------------
    async def send(
        self,
        node: str,
        dispatch: Dispatch,
        *,
        timeout: float = DISPATCH_TIMEOUT,  # noqa: ASYNC109
        attempts: int = DISPATCH_ATTEMPTS,
    ) -> None:
        """Hand ``dispatch`` to ``node``'s runner; returns once it accepted (or already had
        the run). Raises DispatchRefused(reason) if it refused, else the RpcError tree.

        Re-sent (up to ``attempts`` times, with jittered backoff) only while the node is
        unreachable (the request did not go out). When the outcome is unknown (timeout,
        connection lost after sending), the node is asked what it runs: listed, the send
        succeeded; otherwise the error is raised (the run is taken as not started: it is
        never sent again, so it cannot run twice)."""
        if node == self.node_name and self._local is not None:
            self._answered(node, self._local.accept(dispatch, src=self.node_name))
            return
        payload = encode(dispatch)
        for attempt in range(max(1, attempts)):
            try:
                reply = await self._transport.call(
                    NodeId(node), DISPATCH_METHOD, payload, timeout=timeout
                )
            except ConnectionLost as exc:
                await self._confirm(node, dispatch, exc)
                return
            except PeerUnreachable as exc:
                if attempt + 1 >= attempts:
                    self._stats["failed"] += 1
                    raise
                self._stats["retries"] += 1
                delay = DISPATCH_BACKOFF * 2**attempt * self._rng.uniform(0.5, 1.0)
                logger.info(
                    "dispatch of %s to %s: %s; again in %.2fs",
                    dispatch.execution.id,
                    node,
                    exc,
                    delay,
                )
                await trio.sleep(delay)
                continue
            except RpcTimeout as exc:
                await self._confirm(node, dispatch, exc)
                return
            except RpcError:
                self._stats["failed"] += 1
                raise
            try:
                answer = _expect(reply, DispatchAnswer)
            except DispatchWireError as exc:
                self._stats["failed"] += 1
                raise RemoteError(
                    NodeId(node), DISPATCH_METHOD, f"malformed answer: {exc}"
                ) from exc
            self._answered(node, answer)
            return

    def _answered(self, node: str, answer: DispatchAnswer) -> None:
        if not answer.accepted:
            self._stats["refused"] += 1
            raise DispatchRefused(node, answer.reason or "no reason given")
        self._stats["sent"] += 1

    async def _confirm(self, node: str, dispatch: Dispatch, error: RpcError) -> None:
        """The dispatch may or may not have reached ``node``: return if the node has the
        run, else raise ``error``."""
        ex_id = dispatch.execution.id
        try:
            state = await self.query(node, term=dispatch.term, ids=(ex_id,))
        except RpcError as exc:
            logger.info(
                "dispatch of %s to %s: outcome unknown (%s; then %s)", ex_id, node, error, exc
            )
            self._stats["failed"] += 1
            raise error from exc
        if ex_id in state.known or any(
            r.execution_id == ex_id for r in (*state.active, *state.pending)
        ):
            self._stats["sent"] += 1
            return
        self._stats["failed"] += 1
        raise error

    async def query(
        self,
        node: str,
        *,
        term: int = 0,
        ids: Sequence[ExecutionId] = (),
        timeout: float = QUERY_TIMEOUT,  # noqa: ASYNC109
    ) -> RunnerState:
        """Ask ``node`` what it runs and which results it still holds, and which of the
        runs ``ids`` (at most MAX_IDS_ASKED) it knows. ``term``: this leader's term; a
        node that has seen a lower one adopts it, refusing dispatches of older leaders
        from then on (pass it when reconciling as a new leader). Raises the RpcError
        tree (RemoteError for a malformed answer)."""
        if len(ids) > MAX_IDS_ASKED:
            raise ValueError(f"a query asks about at most {MAX_IDS_ASKED} runs, not {len(ids)}")
        query = Query(term=term, leader=self.node_name if term else "", ids=tuple(ids))
        if node == self.node_name and self._local is not None:
            if term:
                self._local.note_leader(term, self.node_name)
            return self._local.state(query.ids)
        reply = await self._transport.call(
            NodeId(node), QUERY_METHOD, encode(query), timeout=timeout
        )
        try:
            return _expect(reply, RunnerState)
        except DispatchWireError as exc:
            raise RemoteError(NodeId(node), QUERY_METHOD, f"malformed answer: {exc}") from exc

    # output ------------------------------------------------------------------------------
    async def _serve_output(self, src: NodeId, payload: bytes) -> bytes:
        try:
            batch = _expect(payload, OutputBatch)
        except DispatchWireError as exc:
            self._stats["malformed"] += 1
            logger.warning("%s: malformed output from %s: %s", self.node_name, src, exc)
            return encode(Ack(ok=False, error=_truncate(f"malformed output batch: {exc}")))
        for item in batch.chunks:
            last = self._last_seq.get(item.execution_id, -1)
            if item.seq <= last:
                self._stats["output_duplicates"] += 1
                continue
            self._stats["output_gaps"] += item.seq - last - 1
            self._last_seq[item.execution_id] = item.seq
            self._last_seq.move_to_end(item.execution_id)
            if len(self._last_seq) > SEQ_MEMORY:
                self._last_seq.popitem(last=False)
            self._stats["output_chunks"] += 1
            try:
                self._on_output(item.job_name, item.execution_id, item.chunk)
            except Exception:  # a subscriber's bug must not refuse the runner's output
                logger.exception("%s: on_output failed for %s", self.node_name, item.execution_id)
        return encode(Ack(ok=True))

    # results -----------------------------------------------------------------------------
    async def _serve_report(self, src: NodeId, payload: bytes) -> bytes:
        try:
            report = _expect(payload, Report)
        except DispatchWireError as exc:
            self._stats["malformed"] += 1
            logger.warning("%s: malformed report from %s: %s", self.node_name, src, exc)
            return encode(ReportAnswer(error=_truncate(f"malformed report: {exc}")))
        committed: list[ExecutionId] = []
        rejected: list[tuple[ExecutionId, str]] = []
        errors: list[str] = []
        hints: list[str] = []

        async def commit_one(finished: RunFinished) -> None:
            try:
                await self._commit(finished)
            except NotLeader as exc:
                errors.append(exc.message)
                if exc.leader:
                    hints.append(exc.leader)
                return
            except (ProposalDropped, ProposalUnknown, EngineClosed, RpcError) as exc:
                errors.append(exc.message)
                return
            except TrickleError as exc:
                rejected.append((finished.execution_id, _truncate(exc.message)))
                return
            except Exception as exc:  # a bug: not the runner's fault; it offers it again
                logger.exception("%s: committing %s failed", self.node_name, finished.execution_id)
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            committed.append(finished.execution_id)

        with trio.move_on_after(COMMIT_TIMEOUT) as scope:
            async with trio.open_nursery() as nursery:
                for finished in report.results:
                    nursery.start_soon(commit_one, finished)
        if scope.cancelled_caught:
            errors.append(f"not committed within {COMMIT_TIMEOUT} s")
        self._stats["results_committed"] += len(committed)
        self._stats["results_rejected"] += len(rejected)
        self._stats["results_not_committed"] += len(report.results) - len(committed) - len(rejected)
        leader = next((h for h in hints if h != self.node_name), None)
        error = "" if committed or rejected else _truncate("; ".join(sorted(set(errors))))
        return encode(
            ReportAnswer(
                committed=tuple(committed), rejected=tuple(rejected), leader=leader, error=error
            )
        )

    def statistics(self) -> DispatcherStatistics:
        s = self._stats
        return DispatcherStatistics(
            sent=s["sent"],
            refused=s["refused"],
            failed=s["failed"],
            retries=s["retries"],
            output_chunks=s["output_chunks"],
            output_gaps=s["output_gaps"],
            output_duplicates=s["output_duplicates"],
            results_committed=s["results_committed"],
            results_not_committed=s["results_not_committed"],
            results_rejected=s["results_rejected"],
            malformed=s["malformed"],
        )
