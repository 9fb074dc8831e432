"""An in-memory network for gossip drivers under test: the GossipTransport interface without sockets.

    net = MemoryNetwork(rng=random.Random(seed))
    transport = net.transport(("10.0.0.1", 8946))   # a new one per (re)start of a node
    driver = GossipDriver("a", transport=transport, config=local())
    await nursery.start(driver.serve)
    net.loss = 0.1; net.partition([a1, a2], [b1]); net.kill(a1); net.heal()

Packets are bytes, as on a real network, so the driver's encoding and encryption run.
Delivery is immediate (or after ``latency`` seconds of Trio time), so it runs at full
speed on ``trio.testing.MockClock(autojump_threshold=0)``. Loss uses the injected rng.

Faults, as a real network shows them:
- ``loss``: each UDP packet is lost with this probability (TCP loses no data);
- a partition (``partition``, ``isolate``, ``cut``): packets across it vanish; a TCP
  request across it gets no answer until its timeout (the SYN is lost);
- ``kill``: the transport at that address goes dark like a killed process on a live
  host: nothing it sends leaves, packets to it vanish, TCP requests to it are refused at
  once. (The driver above it keeps running but can no longer talk: cancel its scope to
  stop it as well.) A new transport at the same address is a restarted node.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable

import trio

from trickle.gossip.config import DEFAULT_PORT, MAX_PACKET_BYTES
from trickle.gossip.messages import Address
from trickle.gossip.transport import (
    MAX_FRAME_BYTES,
    RECEIVE_BUFFER,
    StreamHandler,
    TransportCounters,
    TransportStatistics,
    parse_address,
)

logger = logging.getLogger(__name__)


class MemoryNetwork:
    """The wires between in-memory transports, with loss, latency, partitions and kills.

    loss: probability that one UDP packet is lost.
    latency: seconds of (Trio) time a packet, or each way of a TCP exchange, takes.
    """

    def __init__(
        self,
        *,
        rng: random.Random | None = None,
        loss: float = 0.0,
        latency: float = 0.0,
        receive_buffer: int = RECEIVE_BUFFER,
        max_packet_bytes: int = MAX_PACKET_BYTES,
    ) -> None:
        if not 0.0 <= loss <= 1.0:
            raise ValueError("loss must be between 0 and 1")
        if latency < 0:
            raise ValueError("latency must not be negative")
        self.rng = rng or random.Random(0)
        self.loss = loss
        self.latency = latency
        self.receive_buffer = receive_buffer
        self.max_packet_bytes = max_packet_bytes
        self._nodes: dict[Address, MemoryTransport] = {}
        self._blocked: set[tuple[Address, Address]] = set()
        self._next_host = 1
        self.delivered = 0  # packets delivered
        self.lost = 0  # packets lost to loss, partitions, kills or full buffers

    def transport(self, address: Address | str | None = None) -> MemoryTransport:
        """A fresh transport at `address` (default: the next of 10.0.0.1:8946,
        10.0.0.2:8946, ...). A new transport at an address replaces the old one (a
        restarted node): packets to the old one are lost."""
        if address is None:
            address = (f"10.0.{self._next_host // 256}.{self._next_host % 256}", DEFAULT_PORT)
            self._next_host += 1
        addr = parse_address(address)
        transport = MemoryTransport(self, addr)
        self._nodes[addr] = transport
        return transport

    # faults ---------------------------------------------------------------------------
    def partition(self, *groups: Iterable[Address]) -> None:
        """Cut every link between addresses of different groups (in addition to the cuts
        already made)."""
        sets = [set(g) for g in groups]
        for i, left in enumerate(sets):
            for right in sets[i + 1 :]:
                for a in left:
                    for b in right:
                        self.cut(a, b)

    def isolate(self, address: Address) -> None:
        """Cut `address` from every other address known to the network."""
        for other in list(self._nodes):
            if other != address:
                self.cut(address, other)

    def cut(self, a: Address, b: Address, *, both_ways: bool = True) -> None:
        """Lose everything from `a` to `b` (and back, unless `both_ways` is false)."""
        self._blocked.add((a, b))
        if both_ways:
            self._blocked.add((b, a))

    def heal(self) -> None:
        """Restore every cut link (killed transports stay dead)."""
        self._blocked.clear()

    def kill(self, address: Address) -> None:
        """The transport now at `address` goes dark for good (see the module docstring)."""
        node = self._nodes.get(address)
        if node is not None:
            node.killed = True

    # routing --------------------------------------------------------------------------
    def _alive(self, address: Address) -> MemoryTransport | None:
        node = self._nodes.get(address)
        if node is None or not node.serving or node.killed:
            return None
        return node

    def _blocked_between(self, src: Address, dst: Address) -> bool:
        return (src, dst) in self._blocked


class MemoryTransport:
    """One node's end of a MemoryNetwork; the same interface as UdpTcpTransport."""

    def __init__(self, network: MemoryNetwork, address: Address) -> None:
        self._net = network
        self._addr = address
        self._send, self._receive = trio.open_memory_channel[tuple[Address, bytes]](
            network.receive_buffer
        )
        self._handler: StreamHandler | None = None
        self._nursery: trio.Nursery | None = None
        self.killed = False
        self._c = TransportCounters()

    @property
    def serving(self) -> bool:
        return self._nursery is not None and self._net._nodes.get(self._addr) is self

    @property
    def address(self) -> Address | None:
        return self._addr if self._nursery is not None else None

    @property
    def advertise_address(self) -> Address | None:
        return self.address

    @property
    def packets(self) -> trio.MemoryReceiveChannel[tuple[Address, bytes]]:
        return self._receive

    async def serve(
        self,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Be reachable until cancelled. Started with this transport's address."""
        if self._nursery is not None:
            raise RuntimeError("this transport is already serving")
        try:
            async with trio.open_nursery() as nursery:
                self._handler = handler
                self._nursery = nursery
                task_status.started(self._addr)
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._handler = None

    # UDP ------------------------------------------------------------------------------
    def send_packet(self, to: Address, data: bytes) -> None:
        if len(data) > self._net.max_packet_bytes:
            self._c.packets_oversize += 1
            return
        if not self.serving or self.killed:
            self._c.packets_dropped += 1
            return
        self._c.packets_sent += 1
        self._c.bytes_sent += len(data)
        net = self._net
        if net.loss and net.rng.random() < net.loss:
            net.lost += 1
            return
        if net.latency > 0 and self._nursery is not None:
            self._nursery.start_soon(self._deliver_later, to, data)
        else:
            self._deliver(to, data)

    async def flush(self) -> None:
        """Packets leave at once here (latency is the network's, not a queue's)."""
        await trio.lowlevel.checkpoint()

    async def _deliver_later(self, to: Address, data: bytes) -> None:
        await trio.sleep(self._net.latency)
        self._deliver(to, data)

    def _deliver(self, to: Address, data: bytes) -> None:
        net = self._net
        dst = net._alive(to)
        if dst is None or net._blocked_between(self._addr, to):
            net.lost += 1
            return
        try:
            dst._send.send_nowait((self._addr, data))
        except trio.WouldBlock:
            dst._c.packets_dropped += 1
            net.lost += 1
            return
        dst._c.packets_received += 1
        dst._c.bytes_received += len(data)
        net.delivered += 1

    # TCP ------------------------------------------------------------------------------
    async def request(
        self,
        to: Address,
        payload: bytes,
        *,
        timeout: float,  # noqa: ASYNC109 (as UdpTcpTransport.request)
    ) -> bytes | None:
        """As UdpTcpTransport.request: the answer, or None."""
        self._c.streams_sent += 1
        answer = None
        if len(payload) > MAX_FRAME_BYTES:
            self._c.frames_oversize += 1
        elif self.serving and not self.killed:
            with trio.move_on_after(timeout):
                answer = await self._exchange(to, payload)
        if answer is None:
            self._c.streams_failed += 1
        return answer

    async def _exchange(self, to: Address, payload: bytes) -> bytes | None:
        net = self._net
        if net._blocked_between(self._addr, to):
            await trio.sleep_forever()  # the SYN is lost: the caller times out
        if net.latency:
            await trio.sleep(net.latency)
        dst = net._alive(to)
        if dst is None or dst._handler is None:
            return None  # refused
        self._c.bytes_sent += len(payload)
        dst._c.bytes_received += len(payload)
        dst._c.streams_served += 1
        try:
            answer = await dst._handler(self._addr, payload)
        except Exception:  # as a real listener: the connection closes, the caller sees none
            logger.exception("gossip TCP handler failed on a request from %s", self._addr)
            return None
        if answer is None:
            return None
        if len(answer) > MAX_FRAME_BYTES:
            dst._c.frames_oversize += 1
            return None
        if net._blocked_between(to, self._addr) or dst.killed:
            await trio.sleep_forever()  # the answer is lost on the way back
        if net.latency:
            await trio.sleep(net.latency)
        dst._c.bytes_sent += len(answer)
        self._c.bytes_received += len(answer)
        return answer

    def statistics(self) -> TransportStatistics:
        return self._c.snapshot()
