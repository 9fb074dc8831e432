"""Gossip's transport: one UDP socket and one TCP listener on the same host and port.

    transport = UdpTcpTransport(bind=("0.0.0.0", 8946), advertise="10.0.0.5")
    bound = await nursery.start(transport.serve, handler)  # handler(source, payload)
    transport.send_packet(("10.0.0.6", 8946), data)        # never blocks; may drop (counted)
    source, data = await transport.packets.receive()       # packets that arrived
    answer = await transport.request(("10.0.0.6", 8946), payload, timeout=10)

Bytes only: encoding, encryption and the protocol live in the driver (`driver.py`) and
the modules it calls. UDP carries compound packets of at most `max_packet_bytes`; larger
ones are never sent (counted as oversize). TCP carries one request and at most one
answer per connection, each a frame: a STREAM_PREFIX_BYTES big-endian length and the
body, at most `max_frame_bytes` (wire.MAX_STREAM_BYTES plus the encryption overhead);
a longer length prefix closes the connection (oversize), a connection that ends inside
a frame is counted as malformed. Every buffer is bounded: received packets not yet taken
(newer ones dropped beyond `receive_buffer`), packets waiting to be sent (`send_buffer`),
TCP connections served at once (`max_incoming_streams`; more are closed at once).
Nothing a peer sends can crash the transport.

With port 0 the TCP listener is bound first, on a free port, then UDP on the same
number (retried on another free port if UDP's is taken), so both share one port as
memberlist's do. `trickle.testing.gossipnet` has an in-memory transport with the same
interface for tests.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs
import trio

from trickle.errors import ValidationError
from trickle.gossip.config import DEFAULT_PORT, MAX_PACKET_BYTES
from trickle.gossip.messages import Address
from trickle.gossip.wire import ENCRYPTION_OVERHEAD, MAX_STREAM_BYTES, STREAM_PREFIX_BYTES

logger = logging.getLogger(__name__)

StreamHandler = Callable[[Address, bytes], Awaitable[bytes | None]]
"""Serves one TCP request: ``await handler(source, payload)`` returns the answer's bytes,
or None to close the connection without an answer."""

MAX_FRAME_BYTES = MAX_STREAM_BYTES + ENCRYPTION_OVERHEAD  # one TCP frame body, encrypted or not
RECEIVE_BUFFER = 1024  # received packets not yet taken; newer ones are dropped beyond
SEND_BUFFER = 1024  # packets waiting for the socket; newer ones are dropped beyond
UDP_READ_BYTES = 65_536  # one recvfrom: any UDP datagram fits
SOCKET_BUFFER_BYTES = 2 * 1024 * 1024  # SO_RCVBUF / SO_SNDBUF asked for (memberlist's 2 MB)
MAX_INCOMING_STREAMS = 128  # TCP connections served at once; more are closed at once
BIND_ATTEMPTS = 10  # port 0: tries to find a port free for both TCP and UDP
LISTEN_BACKLOG = 128
READ_BYTES = 64 * 1024  # bytes per receive_some on a TCP stream
DEFAULT_TCP_TIMEOUT = 10.0  # seconds for one TCP exchange (GossipConfig.tcp_timeout's default)


@attrs.frozen(kw_only=True)
class TransportStatistics:
    """Counters of one transport since it was created."""

    packets_sent: int  # UDP packets handed to the socket
    packets_received: int  # UDP packets taken into the receive buffer
    bytes_sent: int  # UDP and TCP payload bytes sent (frame prefixes included)
    bytes_received: int  # UDP and TCP payload bytes received (frame prefixes included)
    packets_dropped: int  # receive buffer full, send buffer full, or a send that failed
    packets_oversize: int  # UDP packets over max_packet_bytes, never sent
    streams_sent: int  # TCP requests made
    streams_failed: int  # TCP requests that got no answer (refused, timeout, closed, bad frame)
    streams_served: int  # TCP requests read and handed to the handler
    streams_refused: int  # TCP connections closed at once (too many at the same time)
    frames_malformed: int  # TCP frames cut short by the end of the connection
    frames_oversize: int  # TCP frames over max_frame_bytes (connection closed, or not sent)


class GossipTransport(Protocol):
    """What the gossip driver needs from a transport: UDP packets and TCP request/answer
    exchanges between (host, port) addresses. UdpTcpTransport is the real one;
    trickle.testing.gossipnet.MemoryTransport the in-memory one."""

    @property
    def address(self) -> Address | None:
        """The bound (host, port) while serving."""
        ...

    @property
    def advertise_address(self) -> Address | None:
        """The (host, port) other members should use to reach this one, while serving."""
        ...

    @property
    def packets(self) -> trio.MemoryReceiveChannel[tuple[Address, bytes]]:
        """UDP packets received, as (source, data), in arrival order."""
        ...

    async def serve(
        self,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Bind, receive packets and serve TCP requests with `handler` until cancelled.
        Started with the bound address once both are listening."""
        ...

    def send_packet(self, to: Address, data: bytes) -> None:
        """Send one UDP packet. Never blocks; a packet over the budget, or one that cannot
        be queued or sent, is dropped and counted."""
        ...

    async def flush(self) -> None:
        """Return once every packet queued so far has been handed to the network (or
        dropped): before stopping, so that a leave is not lost in a queue."""
        ...

    async def request(
        self,
        to: Address,
        payload: bytes,
        *,
        timeout: float,  # noqa: ASYNC109 (a failure is an answer of None, not an exception)
    ) -> bytes | None:
        """Send one TCP request and return the answer, or None if there was none within
        `timeout` seconds (refused, timed out, closed without answer, malformed). Never
        raises for network failures."""
        ...

    def statistics(self) -> TransportStatistics: ...


class TransportCounters:
    """The mutable counters behind TransportStatistics (for transports to share)."""

    def __init__(self) -> None:
        self.packets_sent = 0
        self.packets_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.packets_dropped = 0
        self.packets_oversize = 0
        self.streams_sent = 0
        self.streams_failed = 0
        self.streams_served = 0
        self.streams_refused = 0
        self.frames_malformed = 0
        self.frames_oversize = 0

    def snapshot(self) -> TransportStatistics:
        return TransportStatistics(**vars(self))


class _Truncated(Exception):
    """The connection ended inside a frame."""


class _TooLarge(Exception):
    """A frame's length prefix is over the limit."""


def parse_address(value: Address | str, *, default_port: int = DEFAULT_PORT) -> Address:
    """("host", port), "host:port", "[v6]:port" or "host" (default port) as an Address.
    Raises ValidationError naming what is wrong."""
    if isinstance(value, tuple):
        if len(value) != 2 or not isinstance(value[0], str) or not isinstance(value[1], int):
            raise ValidationError(f"address {value!r} is not a (host, port) pair", field="address")
        host, port = value
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            end = text.find("]")
            if end < 0:
                raise ValidationError(f"address {value!r}: unclosed '['", field="address")
            host, rest = text[1:end], text[end + 1 :]
            port_text = rest[1:] if rest.startswith(":") else None
            if rest and port_text is None:
                raise ValidationError(f"address {value!r}: junk after ']'", field="address")
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        else:  # a bare host name, IPv4 or IPv6 address
            host, port_text = text, None
        if port_text is None:
            port = default_port
        else:
            try:
                port = int(port_text)
            except ValueError:
                raise ValidationError(
                    f"address {value!r}: port {port_text!r} is not a number", field="address"
                ) from None
    else:
        raise ValidationError(f"address {value!r} is not a string or a pair", field="address")
    if not host:
        raise ValidationError(f"address {value!r} has no host", field="address")
    if not 0 <= port <= 65535:
        raise ValidationError(f"address {value!r}: port {port} is not in 0..65535", field="address")
    return (host, port)


def _family(host: str) -> socket.AddressFamily:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return socket.AF_INET  # a name: resolved as IPv4
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


async def _outbound_ip(family: socket.AddressFamily) -> str:
    """The local address this host would use to reach other hosts (no packet is sent:
    connecting a UDP socket only picks a route); loopback when there is no route."""
    probe = ("10.255.255.255", 1) if family == socket.AF_INET else ("fd00::1", 1)
    fallback = "127.0.0.1" if family == socket.AF_INET else "::1"
    with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            await sock.connect(probe)
            host = sock.getsockname()[0]
        except OSError:
            return fallback
    return str(host) if not _is_unspecified(str(host)) else fallback


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(STREAM_PREFIX_BYTES, "big") + payload


async def _read_exactly(stream: trio.abc.ReceiveStream, n: int, buf: bytearray) -> bool:
    """Fill `buf` up to `n` bytes; False if the stream ended before any byte of this
    read arrived (a clean close), _Truncated if it ended in the middle."""
    start = len(buf)
    while len(buf) < n:
        data = await stream.receive_some(min(READ_BYTES, n - len(buf)))
        if not data:
            if len(buf) == start:
                return False
            raise _Truncated(f"the connection ended after {len(buf)} of {n} bytes")
        buf += data
    return True


async def read_frame(stream: trio.abc.ReceiveStream, *, max_bytes: int) -> bytes | None:
    """One frame's body; None if the stream ended cleanly before it. Raises _Truncated
    or _TooLarge (used by both ends of an exchange)."""
    head = bytearray()
    if not await _read_exactly(stream, STREAM_PREFIX_BYTES, head):
        return None
    size = int.from_bytes(head, "big")
    if size > max_bytes:
        raise _TooLarge(f"a frame of {size} bytes is over the {max_bytes} limit")
    body = bytearray()
    if size and not await _read_exactly(stream, size, body):
        raise _Truncated(f"the connection ended before a frame of {size} bytes")
    return bytes(body)


class UdpTcpTransport:
    """UDP packets and TCP exchanges on one host:port (see the module docstring).

    bind: (host, port) to listen on; port 0 picks a port free for both UDP and TCP.
        "0.0.0.0" (or "::") listens on every interface.
    advertise: the host, or (host, port), other members should use to reach this one.
        By default the bound address; with an unspecified bind host, the address of the
        interface that routes to other hosts (loopback if there is none).
    max_packet_bytes: UDP payload budget; larger packets are never sent.
    max_frame_bytes: bound of one TCP frame body, both ways.
    receive_buffer / send_buffer: packets held before newer ones are dropped.
    max_incoming_streams: TCP connections served at the same time.
    tcp_timeout: seconds an incoming TCP exchange may take (the request and the answer).
    """

    def __init__(
        self,
        *,
        bind: Address | str = ("0.0.0.0", DEFAULT_PORT),
        advertise: Address | str | None = None,
        max_packet_bytes: int = MAX_PACKET_BYTES,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        receive_buffer: int = RECEIVE_BUFFER,
        send_buffer: int = SEND_BUFFER,
        max_incoming_streams: int = MAX_INCOMING_STREAMS,
        tcp_timeout: float = DEFAULT_TCP_TIMEOUT,
    ) -> None:
        self.bind = parse_address(bind)
        # port 0 (or none given): advertise the bound port
        self._advertise_spec = (
            None if advertise is None else parse_address(advertise, default_port=0)
        )
        for name, value in (
            ("max_packet_bytes", max_packet_bytes),
            ("max_frame_bytes", max_frame_bytes),
            ("receive_buffer", receive_buffer),
            ("send_buffer", send_buffer),
            ("max_incoming_streams", max_incoming_streams),
        ):
            if value < 1:
                raise ValidationError(f"{name} must be positive", field=name)
        if not tcp_timeout > 0:
            raise ValidationError("tcp_timeout must be positive", field="tcp_timeout")
        self.max_packet_bytes = max_packet_bytes
        self.max_frame_bytes = max_frame_bytes
        self.max_incoming_streams = max_incoming_streams
        self.tcp_timeout = tcp_timeout
        self._in_send, self._in_receive = trio.open_memory_channel[tuple[Address, bytes]](
            receive_buffer
        )
        self._out_send, self._out_receive = trio.open_memory_channel[tuple[Address, bytes]](
            send_buffer
        )
        self._serving = False
        self._address: Address | None = None
        self._advertise: Address | None = None
        self._incoming = 0
        self._queued = 0  # packets in the send buffer or being sent
        self._drained = trio.Event()
        self._c = TransportCounters()

    # lifecycle ------------------------------------------------------------------------
    @property
    def address(self) -> Address | None:
        return self._address

    @property
    def advertise_address(self) -> Address | None:
        return self._advertise

    @property
    def packets(self) -> trio.MemoryReceiveChannel[tuple[Address, bytes]]:
        return self._in_receive

    async def serve(
        self,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Bind UDP and TCP, then receive packets, send queued ones and serve TCP
        requests with `handler` until cancelled. Started with the bound (host, port).
        Raises OSError if the address cannot be bound (a taken port, a foreign host)."""
        if self._serving:
            raise RuntimeError("this transport is already serving")
        self._serving = True
        udp: trio.socket.SocketType | None = None
        listener: trio.SocketListener | None = None
        try:
            udp, listener = await self._bind()
            _drain(self._in_receive)
            _drain(self._out_receive)
            sockname = udp.getsockname()
            self._address = (str(sockname[0]), int(sockname[1]))
            self._advertise = await self._advertised(self._address)
            logger.debug(
                "gossip transport on %s (advertised as %s)", self._address, self._advertise
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._udp_reader, udp)
                nursery.start_soon(self._udp_writer, udp)
                nursery.start_soon(
                    trio.serve_listeners, lambda s: self._serve_stream(s, handler), [listener]
                )
                task_status.started(self._address)
        finally:
            self._serving = False
            self._address = None
            self._advertise = None
            if udp is not None:
                udp.close()
            if listener is not None:
                await trio.aclose_forcefully(listener)

    async def _bind(self) -> tuple[trio.socket.SocketType, trio.SocketListener]:
        host, port = self.bind
        family = _family(host)
        attempts = BIND_ATTEMPTS if port == 0 else 1
        for attempt in range(attempts):
            tcp = trio.socket.socket(family, socket.SOCK_STREAM)
            try:
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                await tcp.bind((host, port))
                tcp.listen(LISTEN_BACKLOG)
            except BaseException:
                tcp.close()
                raise
            tcp_port = tcp.getsockname()[1]
            udp = trio.socket.socket(family, socket.SOCK_DGRAM)
            try:
                for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                    try:
                        udp.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
                    except OSError:  # the OS keeps its own size
                        pass
                await udp.bind((host, tcp_port))
            except OSError as exc:
                udp.close()
                tcp.close()
                if exc.errno == errno.EADDRINUSE and attempt + 1 < attempts:
                    continue  # that port's UDP side is taken: try another free port
                raise OSError(
                    exc.errno, f"cannot bind gossip UDP to {host}:{tcp_port}: {exc.strerror}"
                ) from exc
            except BaseException:
                udp.close()
                tcp.close()
                raise
            return udp, trio.SocketListener(tcp)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _advertised(self, bound: Address) -> Address:
        host, port = self._advertise_spec or (bound[0], 0)
        if _is_unspecified(host):
            host = await _outbound_ip(_family(host))
        return (host, port or bound[1])

    # UDP ------------------------------------------------------------------------------
    def send_packet(self, to: Address, data: bytes) -> None:
        if len(data) > self.max_packet_bytes:
            self._c.packets_oversize += 1
            logger.debug("not sending a packet of %d bytes to %s: over budget", len(data), to)
            return
        if not self._serving:
            self._c.packets_dropped += 1
            return
        try:
            self._out_send.send_nowait((to, data))
        except trio.WouldBlock:
            self._c.packets_dropped += 1
            return
        self._queued += 1

    async def flush(self) -> None:
        while self._queued and self._serving:
            self._drained = trio.Event()
            await self._drained.wait()

    async def _udp_writer(self, udp: trio.socket.SocketType) -> None:
        try:
            async for to, data in self._out_receive:
                try:
                    await udp.sendto(data, to)
                except OSError as exc:  # unreachable, a name that does not resolve, ...
                    self._c.packets_dropped += 1
                    logger.debug("cannot send a packet to %s: %s", to, exc)
                else:
                    self._c.packets_sent += 1
                    self._c.bytes_sent += len(data)
                finally:
                    self._queued -= 1
                if not self._queued:
                    self._drained.set()
        finally:  # stopped: what is left in the buffer is forgotten
            self._queued = 0
            self._drained.set()

    async def _udp_reader(self, udp: trio.socket.SocketType) -> None:
        while True:
            try:
                data, source = await udp.recvfrom(UDP_READ_BYTES)
            except OSError as exc:  # an ICMP error reported on the socket: not fatal
                logger.debug("UDP receive error: %s", exc)
                continue
            self._c.bytes_received += len(data)
            try:
                self._in_send.send_nowait(((str(source[0]), int(source[1])), data))
            except trio.WouldBlock:
                self._c.packets_dropped += 1
                continue
            self._c.packets_received += 1

    # TCP ------------------------------------------------------------------------------
    async def request(
        self,
        to: Address,
        payload: bytes,
        *,
        timeout: float,  # noqa: ASYNC109 (a failure is an answer of None)
    ) -> bytes | None:
        self._c.streams_sent += 1
        if len(payload) > self.max_frame_bytes:
            self._c.frames_oversize += 1
            self._c.streams_failed += 1
            return None
        answer: bytes | None = None
        with trio.move_on_after(timeout):
            try:
                stream = await trio.open_tcp_stream(to[0], to[1])
            except OSError as exc:
                logger.debug("cannot connect to %s: %s", to, exc)
                self._c.streams_failed += 1
                return None
            try:
                await stream.send_all(_frame(payload))
                self._c.bytes_sent += STREAM_PREFIX_BYTES + len(payload)
                answer = await read_frame(stream, max_bytes=self.max_frame_bytes)
                if answer is not None:
                    self._c.bytes_received += STREAM_PREFIX_BYTES + len(answer)
            except _TooLarge as exc:
                self._c.frames_oversize += 1
                logger.debug("request to %s: %s", to, exc)
            except _Truncated as exc:
                self._c.frames_malformed += 1
                logger.debug("request to %s: %s", to, exc)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                logger.debug("request to %s failed: %s", to, exc)
            finally:
                await trio.aclose_forcefully(stream)
        if answer is None:
            self._c.streams_failed += 1
        return answer

    async def _serve_stream(self, stream: trio.SocketStream, handler: StreamHandler) -> None:
        try:
            if self._incoming >= self.max_incoming_streams:
                self._c.streams_refused += 1
                return
            self._incoming += 1
            try:
                await self._exchange(stream, handler)
            finally:
                self._incoming -= 1
        finally:
            await trio.aclose_forcefully(stream)

    async def _exchange(self, stream: trio.SocketStream, handler: StreamHandler) -> None:
        try:
            peer = stream.socket.getpeername()
            source: Address = (str(peer[0]), int(peer[1]))
        except OSError:
            return  # gone already
        with trio.move_on_after(self.tcp_timeout):
            try:
                payload = await read_frame(stream, max_bytes=self.max_frame_bytes)
                if payload is None:
                    return  # connected and closed: a port check
                self._c.bytes_received += STREAM_PREFIX_BYTES + len(payload)
                self._c.streams_served += 1
                try:
                    answer = await handler(source, payload)
                except Exception:  # a bug in the handler must not take the listener down
                    logger.exception("gossip TCP handler failed on a request from %s", source)
                    return
                if answer is None:
                    return
                if len(answer) > self.max_frame_bytes:
                    self._c.frames_oversize += 1
                    logger.warning(
                        "not answering %s: %d bytes is over the limit", source, len(answer)
                    )
                    return
                await stream.send_all(_frame(answer))
                self._c.bytes_sent += STREAM_PREFIX_BYTES + len(answer)
            except _TooLarge as exc:
                self._c.frames_oversize += 1
                logger.info("closing a TCP connection from %s: %s", source, exc)
            except _Truncated as exc:
                self._c.frames_malformed += 1
                logger.debug("TCP request from %s: %s", source, exc)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    # observability --------------------------------------------------------------------
    def statistics(self) -> TransportStatistics:
        return self._c.snapshot()


def _drain(channel: trio.MemoryReceiveChannel[tuple[Address, bytes]]) -> None:
    """Forget what an earlier serve left in a buffer."""
    while True:
        try:
            channel.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return
