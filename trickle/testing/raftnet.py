"""An in-memory network for Raft drivers under test: the Transport interface without sockets.

    net = MemoryNetwork(rng=random.Random(seed))
    transport = net.transport(NodeId("a"))     # a new one per (re)start of node "a"
    await nursery.start(transport.serve)
    net.isolate(NodeId("a")); net.heal(); net.drop_rate = 0.1

Delivery is immediate (or after ``latency`` seconds of Trio time), so it runs at full
speed on ``trio.testing.MockClock(autojump_threshold=0)``. Drops use the injected rng.
A node is reachable while its latest transport is serving; a partition blocks both Raft
messages and RPC calls (a call across it fails at once with PeerUnreachable, like a
refused connection). Raft messages are dropped at ``drop_rate``; RPC calls are not (TCP
does not lose them; it loses connections).
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import attrs
import trio

from trickle.raft.messages import Message, NodeId
from trickle.raft.transport import (
    CALL_TIMEOUT,
    RECEIVE_BUFFER,
    ConnectionLost,
    Handler,
    PeerUnreachable,
    RemoteError,
    RpcTimeout,
    UnknownMethod,
)


@attrs.frozen
class MemoryStatistics:
    frames_sent: int
    frames_received: int
    frames_dropped: int
    calls: int


class MemoryNetwork:
    """The wires between in-memory transports, with partitions and message loss.

    drop_rate: probability that one Raft message is lost.
    latency: seconds of (Trio) time before a Raft message arrives (0: at once).
    """

    def __init__(
        self,
        *,
        rng: random.Random | None = None,
        drop_rate: float = 0.0,
        latency: float = 0.0,
        receive_buffer: int = RECEIVE_BUFFER,
    ) -> None:
        self.rng = rng or random.Random(0)
        self.drop_rate = drop_rate
        self.latency = latency
        self.receive_buffer = receive_buffer
        self._nodes: dict[NodeId, MemoryTransport] = {}
        self._blocked: set[tuple[NodeId, NodeId]] = set()
        self.delivered = 0
        self.dropped = 0

    def transport(self, node_id: NodeId) -> MemoryTransport:
        """A fresh transport for ``node_id`` (a restarted node gets a new one; messages
        to the old one are lost)."""
        transport = MemoryTransport(self, node_id)
        self._nodes[node_id] = transport
        return transport

    # faults ---------------------------------------------------------------------------
    def partition(self, *groups: Iterable[NodeId]) -> None:
        """Cut every link between nodes of different groups (in addition to cuts made)."""
        sets = [set(g) for g in groups]
        for i, left in enumerate(sets):
            for right in sets[i + 1 :]:
                for a in left:
                    for b in right:
                        self.cut(a, b)

    def isolate(self, node: NodeId) -> None:
        """Cut ``node`` from every node known to the network."""
        for other in list(self._nodes):
            if other != node:
                self.cut(node, other)

    def cut(self, a: NodeId, b: NodeId, *, both_ways: bool = True) -> None:
        self._blocked.add((a, b))
        if both_ways:
            self._blocked.add((b, a))

    def heal(self) -> None:
        """Restore every link."""
        self._blocked.clear()

    def can_reach(self, src: NodeId, dst: NodeId) -> bool:
        node = self._nodes.get(dst)
        return node is not None and node.serving and (src, dst) not in self._blocked

    def _route(self, message: Message) -> MemoryTransport | None:
        if not self.can_reach(message.src, message.dst):
            return None
        return self._nodes[message.dst]


class MemoryTransport:
    """One node's end of a MemoryNetwork; the same interface as TcpTransport."""

    def __init__(self, network: MemoryNetwork, node_id: NodeId) -> None:
        self.node_id = node_id
        self._net = network
        self._send_channel, self._receive_channel = trio.open_memory_channel[Message](
            network.receive_buffer
        )
        self._handlers: dict[str, Handler] = {}
        self._nursery: trio.Nursery | None = None
        self._unreachable: set[NodeId] = set()
        self.frames_sent = 0
        self.frames_received = 0
        self.frames_dropped = 0
        self.calls = 0

    @property
    def serving(self) -> bool:
        return self._nursery is not None and self._net._nodes.get(self.node_id) is self

    async def serve(
        self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Be reachable until cancelled. Started with a placeholder address."""
        if self._nursery is not None:
            raise RuntimeError("this transport is already serving")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started(("memory", 0))
                await trio.sleep_forever()
        finally:
            self._nursery = None

    @property
    def messages(self) -> trio.MemoryReceiveChannel[Message]:
        return self._receive_channel

    def send(self, message: Message) -> None:
        self.frames_sent += 1
        dst = self._net._route(message) if self.serving else None
        if dst is None:
            self.frames_dropped += 1
            self._unreachable.add(message.dst)
            return
        if self._net.drop_rate and self._net.rng.random() < self._net.drop_rate:
            self._net.dropped += 1
            return
        if self._net.latency > 0 and self._nursery is not None:
            self._nursery.start_soon(self._deliver_later, message)
        else:
            dst._deliver(message)

    async def _deliver_later(self, message: Message) -> None:
        await trio.sleep(self._net.latency)
        dst = self._net._route(message)
        if dst is not None:
            dst._deliver(message)
        else:
            self._net.dropped += 1

    def _deliver(self, message: Message) -> None:
        try:
            self._send_channel.send_nowait(message)
        except trio.WouldBlock:
            self.frames_dropped += 1
            self._net.dropped += 1
            return
        self.frames_received += 1
        self._net.delivered += 1

    def is_unreachable(self, peer: NodeId) -> bool:
        """As TcpTransport.is_unreachable: a call to ``peer`` would fail at once (this
        node or the peer stopped, or the network cut between them)."""
        return not self.serving or not self._net.can_reach(self.node_id, peer)

    def take_unreachable(self) -> list[NodeId]:
        out = sorted(self._unreachable)
        self._unreachable.clear()
        return out

    def register(self, method: str, handler: Handler) -> None:
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
        timeout: float = CALL_TIMEOUT,  # noqa: ASYNC109 (as TcpTransport.call)
    ) -> bytes:
        """As TcpTransport.call: PeerUnreachable, RpcTimeout or RemoteError."""
        self.calls += 1
        if not self.serving or not self._net.can_reach(self.node_id, peer):
            raise PeerUnreachable(f"{peer} is unreachable from {self.node_id}")
        remote = self._net._nodes[peer]
        assert remote._nursery is not None
        done = trio.Event()
        outcome: list[bytes | BaseException] = []

        async def serve_call() -> None:
            try:
                handler = remote._handlers.get(method)
                if handler is None:
                    outcome.append(UnknownMethod(peer, method, f"no such method {method!r}"))
                    return
                answer = await handler(self.node_id, payload)
                outcome.append(answer)
            except Exception as exc:
                outcome.append(RemoteError(peer, method, f"{type(exc).__name__}: {exc}"))
            finally:
                if not outcome:  # the remote stopped while serving the call
                    outcome.append(ConnectionLost(f"{peer} stopped before the reply"))
                done.set()

        remote._nursery.start_soon(serve_call)
        with trio.move_on_after(timeout):
            await done.wait()
            result = outcome[0]
            if isinstance(result, BaseException):
                raise result
            if not self._net.can_reach(peer, self.node_id):
                raise ConnectionLost(f"{peer}: the reply was cut off")
            return result
        raise RpcTimeout(f"{method} on {peer}: no reply within {timeout} s")

    def statistics(self) -> MemoryStatistics:
        return MemoryStatistics(
            frames_sent=self.frames_sent,
            frames_received=self.frames_received,
            frames_dropped=self.frames_dropped,
            calls=self.calls,
        )
