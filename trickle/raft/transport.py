"""Raft's TCP transport: one connection per peer, length-prefixed msgpack frames, and a
small request/response RPC on the same listener (shared with other services' methods).

    transport = TcpTransport(NodeId("a"), bind=("127.0.0.1", 0), cluster="prod")
    address = await nursery.start(transport.serve)      # the bound (host, port)
    transport.set_peers({NodeId("b"): ("10.0.0.2", 6868)})
    transport.send(message)                             # never blocks; may drop (counted)
    message = await transport.messages.receive()        # what peers sent us
    transport.register("jobs.run", handler)             # async handler(src, payload) -> bytes
    answer = await transport.call(NodeId("b"), "jobs.run", payload, timeout=5)

Each node dials each peer once (its *outbound* connection: Raft messages and RPC
requests go out on it, RPC responses come back on it) and accepts the peers' dials
(*incoming* connections: Raft messages and RPC requests come in, responses go back).
Both sides open with a HELLO (node id, cluster name, protocol version); a dial that
reaches the wrong node or cluster is closed and retried later. A lost connection is
redialled at once, then with capped exponential backoff with jitter, forever.

Errors (RPC)::

    TrickleError
    └── RpcError (503)
        ├── PeerUnreachable   no connection (unknown peer, refused, handshake failed):
        │   │                 the request did not go out
        │   └── ConnectionLost  lost after the request went out (it may have run)
        ├── RpcTimeout        no reply within the timeout (the call may have run remotely)
        └── RemoteError       the remote handler failed; ``error`` says why
            └── UnknownMethod the remote has no handler for that method (it did not run)

Malformed frames are dropped and counted; an oversized length prefix or a bad HELLO
closes that connection. Nothing a peer sends can crash the node.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import ClassVar, Protocol

import attrs
import trio

from trickle.errors import PayloadTooLarge, TrickleError
from trickle.raft.messages import Message, NodeId
from trickle.raft.wire import (
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    FrameReader,
    FrameTooLarge,
    Hello,
    RaftFrame,
    Request,
    Response,
    WireError,
    decode_frame,
    encode_frame,
)

logger = logging.getLogger(__name__)

Address = tuple[str, int]
Handler = Callable[[NodeId, bytes], Awaitable[bytes]]

DEFAULT_CLUSTER = "trickle"
SEND_QUEUE_FRAMES = 4096  # Raft frames queued per peer; the oldest is dropped beyond
SEND_QUEUE_BYTES = 64 * 1024 * 1024  # bytes queued per peer; the oldest is dropped beyond
RECEIVE_BUFFER = 4096  # received Raft messages not yet taken; newer ones dropped beyond
CONNECT_TIMEOUT = 2.0  # seconds to establish a TCP connection
HANDSHAKE_TIMEOUT = 2.0  # seconds for the HELLO exchange
WRITE_TIMEOUT = 10.0  # seconds one write may block before the connection is dropped
BACKOFF_INITIAL = 0.05  # seconds before the second dial after a failure
BACKOFF_MAX = 2.0  # seconds: the cap of the exponential backoff
STABLE_CONNECTION = 1.0  # seconds a connection must last for its loss to be redialled at once
CALL_TIMEOUT = 5.0  # seconds: default RPC timeout
MAX_CONCURRENT_REQUESTS = 256  # RPC handlers running per incoming connection
READ_BYTES = 256 * 1024  # bytes per receive_some
WRITE_BATCH_BYTES = 1024 * 1024  # queued frames coalesced into one write up to this size
KEEPALIVE_IDLE = 10  # seconds of silence before TCP keepalive probes (where supported)
# Frames are written straight to the socket from ``send`` when nothing is queued ahead of
# them (a non-blocking write: no task switch, no timeout scope; what the kernel does not
# take goes through the writer task). POSIX only: os.write on a socket's descriptor.
DIRECT_WRITES = os.name == "posix"


class RpcError(TrickleError):
    """An RPC call failed; the subclass says how."""

    http_status = 503


class PeerUnreachable(RpcError):
    """No connection to the peer (unknown, refused, handshake failed or lost)."""


class ConnectionLost(PeerUnreachable):
    """The connection broke after the request went out: it may or may not have run."""


class RpcTimeout(RpcError):
    """The request went out but no reply came within the timeout."""


class RemoteError(RpcError):
    """The remote side answered with a failure; ``error`` is its text."""

    http_status = 502

    def __init__(self, peer: NodeId, method: str, error: str) -> None:
        super().__init__(f"{method} on {peer} failed: {error}")
        self.peer = peer
        self.method = method
        self.error = error


class UnknownMethod(RemoteError):
    """The remote side has no handler registered for the method: nothing ran."""


UNKNOWN_METHOD = "no such method"  # how a RESPONSE says so


class Transport(Protocol):
    """What the Raft driver needs from a transport (TcpTransport and the in-memory one)."""

    node_id: NodeId

    @property
    def messages(self) -> trio.MemoryReceiveChannel[Message]:
        """Raft messages received from peers, in arrival order per peer."""
        ...

    def send(self, message: Message) -> None:
        """Queue ``message`` for ``message.dst``; never blocks, may drop (counted)."""
        ...

    def take_unreachable(self) -> list[NodeId]:
        """Peers a message could not be delivered to since the last call (sorted)."""
        ...

    def register(self, method: str, handler: Handler) -> None: ...

    def unregister(self, method: str) -> None: ...

    async def call(
        self,
        peer: NodeId,
        method: str,
        payload: bytes,
        *,
        timeout: float = CALL_TIMEOUT,  # noqa: ASYNC109
    ) -> bytes: ...


@attrs.frozen
class PeerStatistics:
    address: Address
    connected: bool
    frames_sent: int
    frames_dropped: int  # dropped on the way out (queue full, not connected, write failed)
    queued: int  # frames waiting to be written
    reconnects: int  # successful connections after the first
    last_error: str | None


@attrs.frozen
class TransportStatistics:
    frames_sent: int
    frames_received: int
    frames_dropped: int  # out (see PeerStatistics) and in (receive buffer full)
    malformed: int  # frames that did not decode, or were not expected on that connection
    oversized: int  # frames over MAX_FRAME_BYTES, received (connection closed) or refused
    reconnects: int
    handshake_failures: int
    incoming_connections: int  # open now
    peers: Mapping[NodeId, PeerStatistics]


class _ConnectionLost(Exception):
    pass


class _HandshakeFailed(Exception):
    pass


_STREAM_ERRORS = (
    OSError,
    trio.TooSlowError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    _ConnectionLost,
    FrameTooLarge,
)


def _tune(stream: trio.SocketStream) -> None:
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, True)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            stream.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _describe(exc: BaseException) -> str:
    """The error's text, with the reasons trio's "all attempts to connect failed" wraps."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        reasons = sorted({str(e) or type(e).__name__ for e in cause.exceptions})
        text += ": " + "; ".join(reasons)
    elif cause is not None and str(cause) not in text:
        text += f": {cause}"
    return text


async def _read_hello(stream: trio.abc.ReceiveStream, reader: FrameReader) -> Hello:
    while True:
        for body in reader.bodies():
            frame = decode_frame(body)
            if not isinstance(frame, Hello):
                raise _HandshakeFailed(f"expected HELLO, got {type(frame).__name__}")
            return frame
        data = await stream.receive_some(READ_BYTES)
        if not data:
            raise _ConnectionLost("closed during the handshake")
        reader.feed(data)


@attrs.define(eq=False)
class _Call:
    done: trio.Event = attrs.Factory(trio.Event)
    response: Response | None = None
    error: RpcError | None = None


class _Link:
    """The outbound connection to one peer, with its send queues and pending calls."""

    IDLE: ClassVar[str] = "idle"  # not started (the transport is not serving)
    CONNECTING: ClassVar[str] = "connecting"
    CONNECTED: ClassVar[str] = "connected"
    BACKOFF: ClassVar[str] = "backoff"  # waiting before the next dial: sends are dropped
    STOPPED: ClassVar[str] = "stopped"

    def __init__(self, transport: TcpTransport, peer: NodeId, address: Address) -> None:
        self.t = transport
        self.peer = peer
        self.address = address
        self.raft: collections.deque[bytes] = collections.deque()
        self.raft_bytes = 0
        self.rpc: collections.deque[bytes] = collections.deque()
        self.fd = -1  # the connected socket's descriptor for direct writes (-1: none)
        self.head = b""  # the unwritten rest of a frame written in part: goes out first
        self.writing = False  # the writer task is in send_all: no direct write now
        self.wake = trio.Event()
        self.state = self.IDLE
        self.changed = trio.Event()  # set and replaced on every state change
        self.pending: dict[int, _Call] = {}
        self.next_call = 1
        self.scope = trio.CancelScope()
        self.redial_now = trio.Event()  # set: end the backoff and dial at once
        self.sent = 0
        self.dropped = 0
        self.connects = 0
        self.last_error: str | None = None
        self.dial_failed = False  # the last dial failed, and none succeeded since

    # called from the transport -------------------------------------------------------
    def enqueue_raft(self, frame: bytes) -> None:
        if self.state in (self.BACKOFF, self.STOPPED):
            self._drop(1)
            return
        if self._write_now(frame):
            return
        self.raft.append(frame)
        self.raft_bytes += len(frame)
        while len(self.raft) > self.t.queue_frames or self.raft_bytes > self.t.queue_bytes:
            self.raft_bytes -= len(self.raft.popleft())
            self._drop(1)
        self.wake.set()

    def enqueue_rpc(self, frame: bytes, call: _Call) -> int:
        call_id = self.next_call
        self.next_call += 1
        self.pending[call_id] = call
        if not self._write_now(frame):
            self.rpc.append(frame)
            self.wake.set()
        return call_id

    def _write_now(self, frame: bytes) -> bool:
        """Write ``frame`` to the socket at once if nothing is queued ahead of it; True if
        it is on its way (all written, or its rest is left to the writer in ``head``)."""
        if self.fd < 0 or self.writing or self.head or self.raft or self.rpc:
            return False
        try:
            written = os.write(self.fd, frame)
        except OSError:  # full (BlockingIOError) or broken: the writer task sees to it
            return False
        if written < len(frame):
            self.head = frame[written:]
            self.wake.set()
            return True
        self.sent += 1
        self.t.frames_sent += 1
        return True

    def start(self, nursery: trio.Nursery) -> None:
        self.state = self.CONNECTING
        nursery.start_soon(self.run)

    def stop(self) -> None:
        self.scope.cancel()
        self._set_state(self.STOPPED, "peer removed")

    # the connection loop --------------------------------------------------------------
    async def run(self) -> None:
        with self.scope:
            failures = 0
            while True:
                self._set_state(self.CONNECTING)
                try:
                    stream, reader = await self._dial()
                except (
                    OSError,
                    trio.TooSlowError,
                    trio.BrokenResourceError,
                    WireError,
                    _HandshakeFailed,
                    _ConnectionLost,
                ) as exc:
                    self._failed(exc, failures)
                    await self._backoff(failures)
                    failures += 1
                    continue
                except Exception as exc:  # a bug must not take the node down: log, retry
                    logger.exception("%s: dialling %s failed", self.t.node_id, self.peer)
                    self._failed(exc, failures)
                    await self._backoff(failures)
                    failures += 1
                    continue
                connected_at = trio.current_time()
                self.connects += 1
                self.t.reconnects += self.connects > 1
                logger.debug("%s: connected to %s at %s", self.t.node_id, self.peer, self.address)
                if DIRECT_WRITES:
                    self.fd = stream.socket.fileno()
                self.dial_failed = False
                self._set_state(self.CONNECTED)
                try:
                    await self._pump(stream, reader)
                except _STREAM_ERRORS as exc:
                    self.t.oversized += isinstance(exc, FrameTooLarge)
                    self.last_error = _describe(exc)
                except Exception as exc:  # a bug must not take the node down: log, redial
                    logger.exception("%s: connection to %s failed", self.t.node_id, self.peer)
                    self.last_error = _describe(exc)
                finally:
                    self.fd = -1
                    if self.head:  # the rest of a frame is lost with its connection
                        self.head = b""
                        self._drop(1)
                    await trio.aclose_forcefully(stream)
                logger.info(
                    "%s: connection to %s lost: %s", self.t.node_id, self.peer, self.last_error
                )
                self._lose_pending("connection lost before the reply")
                self.t.unreachable.add(self.peer)
                if trio.current_time() - connected_at >= STABLE_CONNECTION:
                    failures = 0  # redial at once
                else:  # a peer that keeps dropping us at once is not redialled in a loop
                    self._set_state(self.BACKOFF)
                    await self._backoff(failures)
                    failures += 1

    async def _backoff(self, failures: int) -> None:
        delay = min(BACKOFF_MAX, BACKOFF_INITIAL * 2**failures)
        with trio.move_on_after(delay * self.t.rng.uniform(0.5, 1.0)):
            await self.redial_now.wait()
        self.redial_now = trio.Event()

    async def _dial(self) -> tuple[trio.SocketStream, FrameReader]:
        host, port = self.address
        with trio.fail_after(self.t.connect_timeout):
            stream = await trio.open_tcp_stream(host, port)
        reader = FrameReader()
        try:
            _tune(stream)
            with trio.fail_after(self.t.handshake_timeout):
                await stream.send_all(encode_frame(Hello(self.t.node_id, self.t.cluster)))
                hello = await _read_hello(stream, reader)
            if hello.node != self.peer or hello.cluster != self.t.cluster:
                self.t.handshake_failures += 1
                raise _HandshakeFailed(
                    f"{host}:{port} is node {hello.node!r} of cluster {hello.cluster!r}, "
                    f"expected {self.peer!r} of {self.t.cluster!r}"
                )
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return stream, reader

    async def _pump(self, stream: trio.SocketStream, reader: FrameReader) -> None:
        """Write queued frames and read replies until either side fails; re-raise that."""
        failure: list[BaseException] = []

        async def guard(fn: Callable[..., Awaitable[None]], *args: object) -> None:
            try:
                await fn(*args)
            except Exception as exc:  # the stream's errors, or a bug: re-raised below
                failure.append(exc)
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(guard, self._write, stream)
            nursery.start_soon(guard, self._read, stream, reader)
        if failure:
            raise failure[0]

    async def _write(self, stream: trio.SocketStream) -> None:
        while True:
            if not self.raft and not self.rpc and not self.head:
                self.wake = trio.Event()
                await self.wake.wait()
                continue
            # the rest of a frame written in part (one frame, counted once done) goes first
            batch: list[bytes] = [self.head] if self.head else []
            self.head = b""
            size = len(batch[0]) if batch else 0
            while self.rpc and size < WRITE_BATCH_BYTES:
                batch.append(self.rpc.popleft())
                size += len(batch[-1])
            while self.raft and size < WRITE_BATCH_BYTES:
                frame = self.raft.popleft()
                self.raft_bytes -= len(frame)
                batch.append(frame)
                size += len(frame)
            data = batch[0] if len(batch) == 1 else b"".join(batch)
            written = 0
            if self.fd >= 0:
                try:  # most writes fit in the kernel's buffer: no timeout scope for them
                    written = os.write(self.fd, data)
                except BlockingIOError:
                    pass
                except OSError:
                    written = 0  # send_all raises it properly below
            if written < len(data):
                self.writing = True
                try:
                    with trio.fail_after(self.t.write_timeout):
                        await stream.send_all(data[written:] if written else data)
                except BaseException:
                    self._drop(len(batch))
                    raise
                finally:
                    self.writing = False
            self.sent += len(batch)
            self.t.frames_sent += len(batch)

    async def _read(self, stream: trio.SocketStream, reader: FrameReader) -> None:
        while True:
            for body in reader.bodies():
                try:
                    frame = decode_frame(body)
                except FrameTooLarge:
                    raise
                except WireError as exc:
                    self.t.malformed += 1
                    logger.debug("%s: malformed frame from %s: %s", self.t.node_id, self.peer, exc)
                    continue
                if isinstance(frame, Response):
                    self.t.frames_received += 1
                    call = self.pending.pop(frame.call_id, None)
                    if call is not None:
                        call.response = frame
                        call.done.set()
                else:
                    self.t.malformed += 1  # peers answer, they do not talk, on our dial
            data = await stream.receive_some(READ_BYTES)
            if not data:
                raise _ConnectionLost("closed by the peer")
            reader.feed(data)

    # bookkeeping ----------------------------------------------------------------------
    def _set_state(self, state: str, error: str | None = None) -> None:
        self.state = state
        if error:
            self.last_error = error
        if state in (self.BACKOFF, self.STOPPED):
            self._drop(len(self.raft))
            self.raft.clear()
            self.raft_bytes = 0
            self._lose_pending(f"unreachable: {self.last_error}")
        self.changed.set()
        self.changed = trio.Event()

    def _failed(self, exc: BaseException, failures: int) -> None:
        text = _describe(exc)
        log = logger.warning if isinstance(exc, _HandshakeFailed) else logger.debug
        if failures == 0 or isinstance(exc, _HandshakeFailed):
            log("%s: cannot connect to %s at %s: %s", self.t.node_id, self.peer, self.address, text)
        self.dial_failed = True
        self._set_state(self.BACKOFF, text)
        self.t.unreachable.add(self.peer)

    def _drop(self, n: int) -> None:
        if n:
            self.dropped += n
            self.t.frames_dropped += n
            self.t.unreachable.add(self.peer)

    def _lose_pending(self, why: str) -> None:
        self.rpc.clear()
        pending, self.pending = self.pending, {}
        for call in pending.values():
            call.error = ConnectionLost(f"{self.peer}: {why}")
            call.done.set()

    def statistics(self) -> PeerStatistics:
        return PeerStatistics(
            address=self.address,
            connected=self.state == self.CONNECTED,
            frames_sent=self.sent,
            frames_dropped=self.dropped,
            queued=len(self.raft) + len(self.rpc) + bool(self.head),
            reconnects=max(0, self.connects - 1),
            last_error=self.last_error,
        )


@attrs.define(eq=False)
class _Incoming:
    peer: NodeId
    stream: trio.SocketStream
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    send_lock: trio.Lock = attrs.Factory(trio.Lock)
    active: int = 0  # requests being served


class TcpTransport:
    """Raft messages and RPC calls between nodes over TCP (see the module docstring).

    node_id: this node; sent in HELLO and checked by peers that dial us.
    bind: (host, port) to listen on; port 0 picks a free one (``serve`` reports it).
    cluster: peers of another cluster name are refused at the handshake.
    queue_frames / queue_bytes: per-peer bound of queued Raft frames; the oldest go first.
    receive_buffer: received Raft messages not yet taken before newer ones are dropped.
    rng: jitter of the reconnect backoff (a private random.Random by default).
    """

    def __init__(
        self,
        node_id: NodeId,
        *,
        bind: Address = ("127.0.0.1", 0),
        cluster: str = DEFAULT_CLUSTER,
        queue_frames: int = SEND_QUEUE_FRAMES,
        queue_bytes: int = SEND_QUEUE_BYTES,
        receive_buffer: int = RECEIVE_BUFFER,
        connect_timeout: float = CONNECT_TIMEOUT,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        rng: random.Random | None = None,
    ) -> None:
        if not node_id:
            raise ValueError("node_id must not be empty")
        if queue_frames < 1 or queue_bytes < 1 or receive_buffer < 1:
            raise ValueError("queue_frames, queue_bytes and receive_buffer must be positive")
        self.node_id = node_id
        self.bind = bind
        self.cluster = cluster
        self.queue_frames = queue_frames
        self.queue_bytes = queue_bytes
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self.write_timeout = write_timeout
        self.rng = rng or random.Random()
        self._send_channel, self._receive_channel = trio.open_memory_channel[Message](
            receive_buffer
        )
        self._links: dict[NodeId, _Link] = {}
        self._incoming: dict[NodeId, _Incoming] = {}
        self._handlers: dict[str, Handler] = {}
        self._nursery: trio.Nursery | None = None
        self._address: Address | None = None
        self.unreachable: set[NodeId] = set()
        self.frames_sent = 0
        self.frames_received = 0
        self.frames_dropped = 0
        self.malformed = 0
        self.oversized = 0
        self.reconnects = 0
        self.handshake_failures = 0

    # lifecycle ------------------------------------------------------------------------
    async def serve(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, dial the peers, and run until cancelled. Started with the bound
        (host, port)."""
        if self._nursery is not None:
            raise RuntimeError("this transport is already serving")
        host, port = self.bind
        listeners = await trio.open_tcp_listeners(port, host=host or None)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for link in self._links.values():
                    link.start(nursery)
                await nursery.start(trio.serve_listeners, self._handle_incoming, listeners)
                sockname = listeners[0].socket.getsockname()
                self._address = (sockname[0], sockname[1])
                logger.debug("%s: raft transport listening on %s", self.node_id, self._address)
                task_status.started(self._address)
        finally:
            self._nursery = None
            for link in self._links.values():
                link._set_state(link.IDLE)
                link._lose_pending("the transport stopped")
                link.scope = trio.CancelScope()

    @property
    def address(self) -> Address | None:
        """The bound (host, port) while serving."""
        return self._address

    def set_peers(self, peers: Mapping[NodeId, Address]) -> None:
        """The peers to connect to (this node's own id is ignored). Links to peers no
        longer listed are closed; a changed address is redialled."""
        wanted = {p: (str(a[0]), int(a[1])) for p, a in peers.items() if p != self.node_id}
        for peer in sorted(set(self._links) - set(wanted)):
            self._links.pop(peer).stop()
        for peer, address in sorted(wanted.items()):
            link = self._links.get(peer)
            if link is not None and link.address == address:
                continue
            if link is not None:
                link.stop()
            link = self._links[peer] = _Link(self, peer, address)
            if self._nursery is not None:
                link.start(self._nursery)

    def peers(self) -> dict[NodeId, Address]:
        return {p: link.address for p, link in self._links.items()}

    def redial(self, peer: NodeId) -> None:
        """``peer`` is known to be up again (gossip saw it come back): if the link waits
        in its reconnect backoff, dial now rather than after up to BACKOFF_MAX."""
        link = self._links.get(peer)
        if link is not None:
            link.redial_now.set()

    def is_connected(self, peer: NodeId) -> bool:
        link = self._links.get(peer)
        return link is not None and link.state == link.CONNECTED

    def is_unreachable(self, peer: NodeId) -> bool:
        """True while the last attempt to connect to ``peer`` failed (refused, timed out,
        wrong node) and none succeeded since: a call to it now fails (at once during the
        backoff, after the next dial otherwise). A peer not dialled yet, or redialled
        after a lost connection, is not known unreachable."""
        link = self._links.get(peer)
        return link is not None and link.dial_failed and link.state != link.CONNECTED

    async def wait_connected(self, peer: NodeId) -> None:
        """Return once the outbound connection to ``peer`` is up (handshake done).
        Raises PeerUnreachable if ``peer`` is not (or no longer) a peer."""
        while True:
            link = self._links.get(peer)
            if link is None:
                raise PeerUnreachable(f"{peer} is not a known peer")
            if link.state == link.CONNECTED:
                return
            await link.changed.wait()

    # Raft messages --------------------------------------------------------------------
    @property
    def messages(self) -> trio.MemoryReceiveChannel[Message]:
        return self._receive_channel

    def send(self, message: Message) -> None:
        """Queue ``message`` to its ``dst``. Never blocks: a message to an unknown or
        unreachable peer, or beyond the queue bound (the oldest goes), is dropped and
        counted, and the peer is reported by ``take_unreachable``."""
        link = self._links.get(message.dst)
        if link is None:
            self.frames_dropped += 1
            self.unreachable.add(message.dst)
            return
        try:
            frame = encode_frame(RaftFrame(message))
        except FrameTooLarge as exc:
            self.oversized += 1
            link._drop(1)
            logger.warning("%s: not sending %s: %s", self.node_id, message.type.name, exc)
            return
        except (ValueError, TypeError):  # a message that cannot be encoded is a bug: log it
            link._drop(1)
            logger.exception("%s: cannot encode %s", self.node_id, message.describe())
            return
        link.enqueue_raft(frame)

    def take_unreachable(self) -> list[NodeId]:
        out = sorted(self.unreachable)
        self.unreachable.clear()
        return out

    # RPC ------------------------------------------------------------------------------
    def register(self, method: str, handler: Handler) -> None:
        """Serve ``method``: ``await handler(src, payload)`` returns the reply bytes; an
        exception it raises reaches the caller as RemoteError with its text."""
        if method in self._handlers:
            raise ValueError(f"RPC method {method!r} is already registered")
        self._handlers[method] = handler

    def unregister(self, method: str) -> None:
        self._handlers.pop(method, None)

    async def call(
        self,
        peer: NodeId,
        method: str,
        payload: bytes,
        *,
        timeout: float = CALL_TIMEOUT,  # noqa: ASYNC109
    ) -> bytes:
        """Call ``method`` on ``peer`` and return its reply. Raises PeerUnreachable (no
        connection: the request did not go out), ConnectionLost (lost before the reply:
        the call may or may not have run), RpcTimeout (likewise), RemoteError, or
        PayloadTooLarge for a request over the frame limit.
        (``timeout`` is a parameter, not a cancel scope around the call, because it tells
        "never connected" from "no reply" apart.)"""
        link = self._links.get(peer)
        if link is None:
            raise PeerUnreachable(f"{peer} is not a known peer")
        sent = False
        with trio.move_on_after(timeout):
            while link.state != link.CONNECTED:
                if link.state in (link.BACKOFF, link.STOPPED, link.IDLE):
                    raise PeerUnreachable(f"{peer} is unreachable: {link.last_error or link.state}")
                await link.changed.wait()
            call = _Call()
            call_id = link.next_call
            try:
                frame = encode_frame(Request(call_id, method, payload))
            except FrameTooLarge as exc:
                raise PayloadTooLarge(f"request {method} to {peer}: {exc}") from None
            link.enqueue_rpc(frame, call)
            sent = True
            try:
                await call.done.wait()
            finally:
                link.pending.pop(call_id, None)
            if call.error is not None:
                raise call.error
            assert call.response is not None
            if call.response.ok:
                return call.response.payload
            if call.response.error.startswith(UNKNOWN_METHOD):
                raise UnknownMethod(peer, method, call.response.error)
            raise RemoteError(peer, method, call.response.error)
        if sent:
            raise RpcTimeout(f"{method} on {peer}: no reply within {timeout} s")
        raise PeerUnreachable(f"{peer}: no connection within {timeout} s ({link.last_error})")

    # incoming connections -------------------------------------------------------------
    async def _handle_incoming(self, stream: trio.SocketStream) -> None:
        reader = FrameReader()
        conn: _Incoming | None = None
        try:
            _tune(stream)
            with trio.fail_after(self.handshake_timeout):
                hello = await _read_hello(stream, reader)
            problem = self._check_hello(hello)
            if problem:
                self.handshake_failures += 1
                logger.warning("%s: refused a connection: %s", self.node_id, problem)
                return
            with trio.fail_after(self.write_timeout):
                await stream.send_all(encode_frame(Hello(self.node_id, self.cluster)))
            conn = _Incoming(peer=hello.node, stream=stream)
            previous = self._incoming.get(conn.peer)
            if previous is not None:
                previous.scope.cancel()  # the peer redialled: its old connection is dead
            self._incoming[conn.peer] = conn
            failure: BaseException | None = None
            with conn.scope:
                async with trio.open_nursery() as nursery:
                    try:
                        await self._read_incoming(conn, reader, nursery)
                    except _STREAM_ERRORS as exc:
                        failure = exc
                    nursery.cancel_scope.cancel()
            if isinstance(failure, FrameTooLarge):
                self.oversized += 1
                logger.warning(
                    "%s: closing the connection from %s: %s", self.node_id, conn.peer, failure
                )
        except (WireError, _HandshakeFailed, trio.TooSlowError) as exc:
            self.handshake_failures += 1
            logger.info("%s: handshake failed: %s", self.node_id, exc)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, _ConnectionLost):
            pass
        except Exception:  # a bug here must not take the listener (the node) down
            logger.exception("%s: error on an incoming connection", self.node_id)
        finally:
            if conn is not None and self._incoming.get(conn.peer) is conn:
                del self._incoming[conn.peer]
            await trio.aclose_forcefully(stream)

    def _check_hello(self, hello: Hello) -> str | None:
        if hello.cluster != self.cluster:
            return f"{hello.node!r} is of cluster {hello.cluster!r}, not {self.cluster!r}"
        if not MIN_PROTOCOL_VERSION <= hello.protocol <= PROTOCOL_VERSION:
            return f"{hello.node!r} speaks protocol {hello.protocol}, not {PROTOCOL_VERSION}"
        if hello.node == self.node_id:
            return f"a peer claims this node's own id {hello.node!r}"
        return None

    async def _read_incoming(
        self, conn: _Incoming, reader: FrameReader, nursery: trio.Nursery
    ) -> None:
        while True:
            for body in reader.bodies():
                try:
                    frame = decode_frame(body)
                except FrameTooLarge:
                    raise
                except WireError as exc:
                    self.malformed += 1
                    logger.debug("%s: malformed frame from %s: %s", self.node_id, conn.peer, exc)
                    continue
                if isinstance(frame, RaftFrame):
                    if frame.message.src != conn.peer:
                        self.malformed += 1  # a message must come from whoever said HELLO
                        continue
                    self.frames_received += 1
                    try:
                        self._send_channel.send_nowait(frame.message)
                    except trio.WouldBlock:
                        self.frames_dropped += 1
                elif isinstance(frame, Request):
                    self.frames_received += 1
                    if conn.active >= MAX_CONCURRENT_REQUESTS:
                        busy = Response(frame.call_id, False, error="overloaded: too many calls")
                        nursery.start_soon(self._reply, conn, busy)
                        continue
                    conn.active += 1
                    nursery.start_soon(self._serve_request, conn, frame)
                else:
                    self.malformed += 1
            data = await conn.stream.receive_some(READ_BYTES)
            if not data:
                raise _ConnectionLost("closed by the peer")
            reader.feed(data)

    async def _serve_request(self, conn: _Incoming, request: Request) -> None:
        try:
            handler = self._handlers.get(request.method)
            if handler is None:
                response = Response(
                    request.call_id, False, error=f"{UNKNOWN_METHOD} {request.method!r}"
                )
            else:
                try:
                    answer = await handler(conn.peer, request.payload)
                    if not isinstance(answer, bytes):
                        raise TypeError(f"handler returned {type(answer).__name__}, not bytes")
                    response = Response(request.call_id, True, payload=answer)
                except Exception as exc:
                    logger.debug(
                        "%s: %s from %s failed",
                        self.node_id,
                        request.method,
                        conn.peer,
                        exc_info=True,
                    )
                    response = Response(
                        request.call_id, False, error=f"{type(exc).__name__}: {exc}"
                    )
        finally:
            conn.active -= 1
        await self._reply(conn, response)

    async def _reply(self, conn: _Incoming, response: Response) -> None:
        try:
            frame = encode_frame(response)
        except FrameTooLarge as exc:
            self.oversized += 1
            frame = encode_frame(Response(response.call_id, False, error=f"reply too large: {exc}"))
        lock = conn.send_lock
        try:
            if DIRECT_WRITES and not lock.locked():
                # nobody is writing: the frame goes to the socket at once (most fit in the
                # kernel's buffer), without the lock's and the timeout's checkpoints; the
                # lock is held (no checkpoint in between) until the rest, if any, is sent
                lock.acquire_nowait()
                try:
                    try:
                        written = os.write(conn.stream.socket.fileno(), frame)
                    except OSError:  # full (BlockingIOError) or broken: send_all says
                        written = 0
                    if written < len(frame):
                        with trio.fail_after(self.write_timeout):
                            await conn.stream.send_all(frame[written:])
                finally:
                    lock.release()
            else:
                async with lock:
                    with trio.fail_after(self.write_timeout):
                        await conn.stream.send_all(frame)
            self.frames_sent += 1
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
            self.frames_dropped += 1
            conn.scope.cancel()

    # observability --------------------------------------------------------------------
    def statistics(self) -> TransportStatistics:
        return TransportStatistics(
            frames_sent=self.frames_sent,
            frames_received=self.frames_received,
            frames_dropped=self.frames_dropped,
            malformed=self.malformed,
            oversized=self.oversized,
            reconnects=self.reconnects,
            handshake_failures=self.handshake_failures,
            incoming_connections=len(self._incoming),
            peers={p: link.statistics() for p, link in sorted(self._links.items())},
        )
