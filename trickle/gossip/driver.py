"""The Trio driver of one gossip member: sockets, time, encryption and subscribers around the core.

    driver = GossipDriver("node-1", config=lan(), bind=("0.0.0.0", 8946),
                          advertise="10.0.0.5", keyring=Keyring.from_base64(key),
                          tags={"role": "server"})
    address = await nursery.start(driver.serve)     # the advertised (host, port)
    await driver.join(["10.0.0.6:8946"])            # how many answered
    async with driver.subscribe() as events:        # MemberEvent, UserEventReceived,
        async for event in events: ...              # EventsLost
    driver.set_tags({"role": "server", "dc": "b"})
    await driver.leave()                            # then cancel serve's scope

The loop: a timer task sleeps until the core's `next_deadline()` (or until an input moves
it earlier) and calls `poll`; a receiver task feeds each UDP packet to `receive`; a TCP
request is answered by `receive_stream`. After every input the driver sends what the core
wants sent (`take_outgoing`) and publishes what changed (`take_events`). `now` is
`trio.current_time()`, so the driver runs on a MockClock in tests.

On the way out a UDP packet is encoded (`wire.encode_packet`), encrypted when the keyring
holds a key, and dropped (counted as oversize) if it is over the packet budget. A TCP
request (a push-pull, or the fallback ping) runs in its own task, at most `max_streams`
at once (more are dropped and counted; the core treats them as lost), and its answer is
fed back through `receive`.

On the way in, with a key every packet and frame must decrypt with one of the keyring's
keys; without one, an encrypted packet is refused: both are rejected and counted
(`rejected_decrypt`). What does not decode is dropped and counted (`malformed`). Nothing
a peer sends can crash the driver; a core that raises on some input is logged and
counted (`internal_errors`).

Subscribers each have a bounded buffer: publishing never blocks, and a subscriber that
falls behind loses events, then receives one `EventsLost` saying how many. A subscription
outlives a serve (it sees a restart's events too): close it when done.

Errors: ValidationError (bad tags, user event, address or key), GossipNotServing (an
operation that needs the running member, before `serve` or after it ended).
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Iterable, Mapping
from types import TracebackType

import attrs
import trio

from trickle.errors import EngineClosed, TrickleError, ValidationError
from trickle.gossip.config import DEFAULT_PORT, EVENT_BUFFER, META_MAX_BYTES, GossipConfig, lan
from trickle.gossip.core import GossipStats, Membership
from trickle.gossip.keyring import DecryptError, Keyring, decode_key, is_encrypted
from trickle.gossip.messages import Address, Event, Member, Message, Outgoing, PushPull
from trickle.gossip.transport import (
    GossipTransport,
    UdpTcpTransport,
    parse_address,
)
from trickle.gossip.wire import (
    STREAM_PREFIX_BYTES,
    WireError,
    decode_packet,
    decode_stream_payload,
    encode_packet,
    encode_stream,
    tags_size,
)

logger = logging.getLogger(__name__)

DEFAULT_BIND: Address = ("0.0.0.0", DEFAULT_PORT)  # every interface
MAX_STREAMS = 32  # outgoing TCP exchanges at once; more are dropped (counted)
LEAVE_TIMEOUT = 5.0  # seconds `leave` waits for the leave to be spread
JOIN_RETRY_INTERVAL = 30.0  # seconds between join attempts (Dkron's retry-interval)
SUBSCRIBER_BUFFER = EVENT_BUFFER  # events one subscriber may hold before losing some
MIN_TIMER_STEP = 0.001  # seconds: the timer never spins on a deadline that does not move


class GossipNotServing(EngineClosed):
    """The operation needs the running member: call it while `serve` runs."""

    def __init__(self) -> None:
        TrickleError.__init__(self, "the gossip member is not serving")


@attrs.frozen(slots=True)
class EventsLost:
    """A subscriber fell behind: `count` events were dropped where this stands."""

    count: int

    def describe(self) -> str:
        return f"events-lost {self.count}"


SubscriberEvent = Event | EventsLost


@attrs.frozen(kw_only=True)
class GossipDriverStats:
    """The core's counters plus the driver's and the transport's (since creation)."""

    membership: GossipStats | None  # None before the first serve
    packets_sent: int  # UDP packets sent
    packets_received: int  # UDP packets received
    bytes_sent: int  # UDP and TCP bytes sent
    bytes_received: int  # UDP and TCP bytes received
    packets_dropped: int  # receive or send buffer full, or a send that failed
    oversize: int  # packets over the budget (not sent) and TCP frames over the limit
    malformed: int  # packets and frames that did not decode, or were cut short
    rejected_decrypt: int  # plaintext with a key, wrong or tampered, encrypted without key
    streams_sent: int  # TCP requests made
    streams_failed: int  # TCP requests without an answer
    streams_served: int  # TCP requests answered or read
    streams_dropped: int  # TCP requests not made: max_streams were running
    events_published: int
    events_dropped: int  # events lost by slow subscribers
    internal_errors: int  # inputs the core failed on (a bug: see the log)


class GossipSubscription:
    """An async iterator of events, with a bounded buffer. Use as a (async) context
    manager or call `close` so the driver forgets it."""

    def __init__(self, hub: _Hub, maxsize: int) -> None:
        self._hub = hub
        self._maxsize = maxsize
        self._queue: deque[SubscriberEvent] = deque()
        self._dropped = 0
        self._closed = False
        self._wakeup = trio.Event()

    def _offer(self, event: Event) -> bool:
        queue = self._queue
        if len(queue) < self._maxsize:
            queue.append(event)
            self._wakeup.set()
            return True
        last = queue[-1] if queue else None
        if isinstance(last, EventsLost):
            queue[-1] = EventsLost(last.count + 1)
        else:  # one marker beyond maxsize, where the lost events stood
            queue.append(EventsLost(1))
        self._dropped += 1
        self._wakeup.set()
        return False

    @property
    def dropped(self) -> int:
        """Events dropped for this subscriber so far."""
        return self._dropped

    def close(self) -> None:
        """Stop: the events held are still received, then the iteration ends."""
        if not self._closed:
            self._closed = True
            self._hub.remove(self)
            self._wakeup.set()

    async def receive(self) -> SubscriberEvent:
        """The next event; raises trio.EndOfChannel once closed and drained."""
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                raise trio.EndOfChannel
            self._wakeup = trio.Event()
            await self._wakeup.wait()

    def receive_nowait(self) -> SubscriberEvent:
        """The next event held; raises trio.WouldBlock if none (EndOfChannel if closed)."""
        if self._queue:
            return self._queue.popleft()
        if self._closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    def __aiter__(self) -> GossipSubscription:
        return self

    async def __anext__(self) -> SubscriberEvent:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def __enter__(self) -> GossipSubscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> GossipSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Hub:
    def __init__(self) -> None:
        self.subs: list[GossipSubscription] = []
        self.published = 0
        self.dropped = 0

    def remove(self, sub: GossipSubscription) -> None:
        try:
            self.subs.remove(sub)
        except ValueError:
            pass

    def publish(self, event: Event) -> None:
        self.published += 1
        for sub in self.subs:
            if not sub._offer(event):
                self.dropped += 1


def _check_tags(tags: Mapping[str, str]) -> dict[str, str]:
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValidationError(f"tag {key!r}={value!r}: keys and values must be strings")
    out = dict(tags)
    size = tags_size(out)
    if size > META_MAX_BYTES:
        raise ValidationError(
            f"tags take {size} bytes encoded, over the {META_MAX_BYTES}-byte limit", field="tags"
        )
    return out


def _key_bytes(key: bytes | str) -> bytes:
    return decode_key(key) if isinstance(key, str) else key


class GossipDriver:
    """Runs one gossip member: see the module docstring.

    name: this member's name, unique in the cluster.
    config: the GossipConfig (default `lan()`).
    transport: a GossipTransport (UdpTcpTransport, or gossipnet's MemoryTransport in
        tests); by default a UdpTcpTransport on `bind`, advertising `advertise`, with the
        config's packet budget and TCP timeout. The driver serves it.
    bind / advertise: for the default transport only (see UdpTcpTransport).
    keyring: encrypts everything sent and requires everything received to decrypt
        while it holds a key (an empty Keyring, the default, is no encryption).
    tags: this member's tags at start (see `set_tags`).
    rng: the core's randomness (probe order, gossip targets); a fresh one by default.
    max_streams: outgoing TCP exchanges running at once.
    """

    def __init__(
        self,
        name: str,
        *,
        config: GossipConfig | None = None,
        transport: GossipTransport | None = None,
        bind: Address | str | None = None,
        advertise: Address | str | None = None,
        keyring: Keyring | None = None,
        tags: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        if not name or not isinstance(name, str):
            raise ValidationError("a gossip member needs a name", field="name")
        if max_streams < 1:
            raise ValidationError("max_streams must be at least 1", field="max_streams")
        self.name = name
        self.config = config if config is not None else lan()
        if transport is None:
            transport = UdpTcpTransport(
                bind=bind if bind is not None else DEFAULT_BIND,
                advertise=advertise,
                max_packet_bytes=self.config.max_packet_bytes,
                tcp_timeout=self.config.tcp_timeout,
            )
        elif bind is not None or advertise is not None:
            raise ValidationError(
                "bind and advertise are for the default transport: give them to the transport",
                field="bind",
            )
        self._transport = transport
        self._keyring = keyring if keyring is not None else Keyring()
        self._tags = _check_tags(tags or {})
        self._rng = rng if rng is not None else random.Random()
        self._max_streams = max_streams
        self._core: Membership | None = None
        self._nursery: trio.Nursery | None = None
        self._serving = False
        self._address: Address | None = None
        self._incarnation = 0  # where the next serve starts (a restart refutes its past)
        self._event_ltime = 0
        self._hub = _Hub()
        self._rearm = trio.Event()
        self._armed_at = math.inf
        self._flushed = trio.Event()
        self._streams_active = 0
        # counters
        self._oversize = 0
        self._malformed = 0
        self._rejected = 0
        self._streams_dropped = 0
        self._internal_errors = 0

    # lifecycle ------------------------------------------------------------------------
    async def serve(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind the transport and run the member until cancelled. Started with the
        advertised (host, port) once it listens. Serving again after an end starts a
        new member under the same name with a higher incarnation (a restart). Raises
        OSError if the transport cannot bind."""
        if self._serving:
            raise RuntimeError("this gossip driver is already serving")
        self._serving = True
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._transport.serve, self._serve_stream)
                address = self._transport.advertise_address
                assert address is not None
                core = Membership(
                    self.name,
                    address,
                    config=self.config,
                    rng=self._rng,
                    now=trio.current_time(),
                    tags=self._tags,
                    incarnation=self._incarnation,
                    event_ltime=self._event_ltime,
                )
                self._core = core
                self._address = address
                self._nursery = nursery
                self._flush(core)
                nursery.start_soon(self._receiver, core)
                nursery.start_soon(self._timer, core)
                logger.info("gossip member %s serving at %s", self.name, address)
                task_status.started(address)
        finally:
            self._nursery = None
            self._serving = False
            last = self._core
            if last is not None:
                stats = last.statistics()
                self._incarnation = stats.incarnation + 1
                self._event_ltime = stats.event_ltime
            self._flushed.set()

    @property
    def serving(self) -> bool:
        return self._nursery is not None

    @property
    def address(self) -> Address | None:
        """The advertised (host, port) of the current (or last) serve."""
        return self._address

    @property
    def transport(self) -> GossipTransport:
        return self._transport

    def _running_core(self) -> Membership:
        if self._nursery is None or self._core is None:
            raise GossipNotServing()
        return self._core

    # the loop -------------------------------------------------------------------------
    async def _timer(self, core: Membership) -> None:
        last_poll = -math.inf
        while True:
            deadline = core.next_deadline()
            if deadline <= last_poll:  # polled at that time already: do not spin
                deadline = last_poll + MIN_TIMER_STEP
            self._armed_at = deadline
            self._rearm = trio.Event()
            with trio.move_on_at(deadline):
                await self._rearm.wait()
            last_poll = trio.current_time()
            core.poll(now=last_poll)
            self._flush(core)

    async def _receiver(self, core: Membership) -> None:
        async for source, data in self._transport.packets:
            self._on_packet(core, source, data)
            self._after_input(core)

    def _after_input(self, core: Membership) -> None:
        """Send and publish what an input produced; wake the timer if it moved the
        deadline earlier."""
        self._flush(core)
        if core.next_deadline() < self._armed_at:
            self._rearm.set()

    def _flush(self, core: Membership) -> None:
        self._dispatch(core, core.take_outgoing())
        for event in core.take_events():
            self._hub.publish(event)
        self._flushed.set()
        self._flushed = trio.Event()

    def _dispatch(self, core: Membership, outgoing: Iterable[Outgoing]) -> None:
        for out in outgoing:
            if out.stream:
                self._start_stream(core, out)
            else:
                self._send_udp(out)

    # the way out ----------------------------------------------------------------------
    def _seal(self, data: bytes) -> bytes:
        return self._keyring.encrypt(data) if self._keyring.enabled else data

    def _send_udp(self, out: Outgoing) -> None:
        try:
            data = encode_packet(out.messages)
        except WireError:
            self._internal_errors += 1
            logger.exception("%s: cannot encode %s", self.name, out.describe())
            return
        data = self._seal(data)
        if len(data) > self.config.max_packet_bytes:
            self._oversize += 1
            logger.warning(
                "%s: not sending a packet of %d bytes to %s (budget %d)",
                self.name,
                len(data),
                out.to,
                self.config.max_packet_bytes,
            )
            return
        self._transport.send_packet(out.to, data)

    def _start_stream(self, core: Membership, out: Outgoing) -> None:
        if self._nursery is None or self._streams_active >= self._max_streams:
            self._streams_dropped += 1
            return
        self._streams_active += 1
        self._nursery.start_soon(self._stream_task, core, out)

    async def _stream_task(self, core: Membership, out: Outgoing) -> None:
        try:
            for message in out.messages:
                answer = await self._request(out.to, message)
                if answer is not None:
                    self._feed(core, out.to, [answer])
        finally:
            self._streams_active -= 1

    async def _request(self, to: Address, message: Message) -> Message | None:
        """One TCP exchange: the decoded answer, or None (failed, refused, malformed)."""
        try:
            body = encode_stream(message)[STREAM_PREFIX_BYTES:]
        except WireError as exc:
            self._oversize += 1
            logger.warning("%s: not sending %s: %s", self.name, message.describe(), exc)
            return None
        raw = await self._transport.request(to, self._seal(body), timeout=self.config.tcp_timeout)
        if raw is None:
            return None
        plain = self._open(raw)
        if plain is None:
            return None
        try:
            return decode_stream_payload(plain)
        except WireError as exc:
            self._malformed += 1
            logger.debug("%s: malformed answer from %s: %s", self.name, to, exc)
            return None

    # the way in -----------------------------------------------------------------------
    def _open(self, data: bytes) -> bytes | None:
        """The plaintext of a received packet or frame, or None (rejected, counted)."""
        if self._keyring.enabled:
            try:
                return self._keyring.decrypt(data)
            except DecryptError:
                self._rejected += 1
                return None
        if is_encrypted(data):  # from a member with a key: this one has none
            self._rejected += 1
            return None
        return data

    def _on_packet(self, core: Membership, source: Address, data: bytes) -> None:
        plain = self._open(data)
        if plain is None:
            return
        try:
            messages = decode_packet(plain)
        except WireError as exc:
            self._malformed += 1
            logger.debug("%s: malformed packet from %s: %s", self.name, source, exc)
            return
        self._feed(core, source, messages)

    def _feed(self, core: Membership, source: Address, messages: list[Message]) -> None:
        if self._core is not core or self._nursery is None:
            return  # an answer that arrived after the member stopped
        try:
            core.receive(source, messages, now=trio.current_time())
        except Exception:
            self._internal_errors += 1
            logger.exception("%s: the core failed on a packet from %s", self.name, source)
        self._after_input(core)

    async def _serve_stream(self, source: Address, payload: bytes) -> bytes | None:
        core = self._core
        if core is None or self._nursery is None:
            return None
        plain = self._open(payload)
        if plain is None:
            return None
        try:
            request = decode_stream_payload(plain)
        except WireError as exc:
            self._malformed += 1
            logger.debug("%s: malformed request from %s: %s", self.name, source, exc)
            return None
        try:
            answer = core.receive_stream(source, request, now=trio.current_time())
        except Exception:
            self._internal_errors += 1
            logger.exception("%s: the core failed on a request from %s", self.name, source)
            return None
        finally:
            self._after_input(core)
        if answer is None:
            return None
        try:
            body = encode_stream(answer)[STREAM_PREFIX_BYTES:]
        except WireError as exc:
            self._oversize += 1
            logger.warning("%s: cannot answer %s: %s", self.name, source, exc)
            return None
        return self._seal(body)

    # operations -----------------------------------------------------------------------
    async def join(
        self,
        addresses: Iterable[Address | str],
        *,
        attempts: int | None = 1,
        retry_interval: float = JOIN_RETRY_INTERVAL,
    ) -> int:
        """Exchange full state with each address ("host:port", "host" for the default
        port, or a pair) and return how many answered. When none did, try again after
        `retry_interval` seconds, up to `attempts` times in all (None: until one
        answers). Returns 0 if none ever did. Raises ValidationError for a bad address,
        GossipNotServing when not serving."""
        targets = [parse_address(a) for a in addresses]
        if not targets:
            raise ValidationError("join needs at least one address", field="addresses")
        if attempts is not None and attempts < 1:
            raise ValidationError("attempts must be at least 1 (or None)", field="attempts")
        if retry_interval < 0:
            raise ValidationError("retry_interval must not be negative", field="retry_interval")
        attempt = 0
        while True:
            attempt += 1
            answered = await self._join_once(targets)
            if answered or (attempts is not None and attempt >= attempts):
                if not answered:
                    logger.warning("%s: nobody answered the join of %s", self.name, targets)
                return answered
            await trio.sleep(retry_interval)

    async def _join_once(self, targets: list[Address]) -> int:
        core = self._running_core()
        core.join(targets, now=trio.current_time())
        requests: list[tuple[Address, Message]] = []
        others: list[Outgoing] = []
        for out in core.take_outgoing():
            if out.stream and any(isinstance(m, PushPull) and m.join for m in out.messages):
                requests.extend((out.to, m) for m in out.messages)
            else:
                others.append(out)
        self._dispatch(core, others)
        self._after_input(core)
        answered = 0
        limit = trio.Semaphore(self._max_streams)  # the caller waits: none is dropped

        async def exchange(to: Address, message: Message) -> None:
            nonlocal answered
            async with limit:
                answer = await self._request(to, message)
            if isinstance(answer, PushPull):
                answered += 1
            if answer is not None:
                self._feed(core, to, [answer])

        async with trio.open_nursery() as nursery:
            for to, message in requests:
                nursery.start_soon(exchange, to, message)
        return answered

    async def leave(self, timeout: float = LEAVE_TIMEOUT) -> bool:  # noqa: ASYNC109
        """Leave gracefully: tell the others this member is leaving (they mark it LEFT,
        not failed) and wait until the news was sent as often as an update is, at most
        `timeout` seconds. Returns whether it was. Then cancel `serve`. Raises
        GossipNotServing when not serving."""
        core = self._running_core()
        if not core.leaving:
            core.leave(now=trio.current_time())
            self._after_input(core)
        with trio.move_on_after(timeout):
            while not core.leave_done():
                if self._nursery is None:
                    return False
                await self._flushed.wait()
            await self._transport.flush()  # out of the send buffer, onto the network
            return True
        return False

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Replace this member's tags; everyone learns them (a new incarnation). Before
        `serve`, sets the tags it starts with. Raises ValidationError if they encode to
        more than META_MAX_BYTES or are not strings."""
        checked = _check_tags(tags)
        core = self._core
        if core is not None and self._nursery is not None:
            core.set_tags(checked, now=trio.current_time())
            self._after_input(core)
        self._tags = checked

    @property
    def tags(self) -> Mapping[str, str]:
        """The tags this member carries (or starts with)."""
        return dict(self._tags)

    def send_user_event(self, name: str, payload: bytes = b"") -> int:
        """Broadcast a user event (delivered once to every member, this one included);
        returns its Lamport time. Raises ValidationError (empty name, over
        USER_EVENT_MAX_BYTES), GossipNotServing."""
        core = self._running_core()
        ltime = core.send_user_event(name, payload, now=trio.current_time())
        self._after_input(core)
        return ltime

    # queries --------------------------------------------------------------------------
    def members(self) -> list[Member]:
        """Every member not yet reaped, this one included, sorted by name (the last view
        once stopped; empty before the first serve)."""
        return self._core.members() if self._core is not None else []

    def member(self, name: str) -> Member | None:
        return self._core.member(name) if self._core is not None else None

    def name_conflict(self) -> Address | None:
        """The address of another node heard claiming this node's name, if any."""
        return self._core.name_conflict if self._core is not None else None

    def subscribe(self, *, maxsize: int = SUBSCRIBER_BUFFER) -> GossipSubscription:
        """Events from now on: MemberEvent, UserEventReceived, and EventsLost when this
        subscriber fell more than `maxsize` events behind."""
        if maxsize < 1:
            raise ValidationError("maxsize must be at least 1", field="maxsize")
        sub = GossipSubscription(self._hub, maxsize)
        self._hub.subs.append(sub)
        return sub

    def statistics(self) -> GossipDriverStats:
        t = self._transport.statistics()
        return GossipDriverStats(
            membership=self._core.statistics() if self._core is not None else None,
            packets_sent=t.packets_sent,
            packets_received=t.packets_received,
            bytes_sent=t.bytes_sent,
            bytes_received=t.bytes_received,
            packets_dropped=t.packets_dropped,
            oversize=self._oversize + t.packets_oversize + t.frames_oversize,
            malformed=self._malformed + t.frames_malformed,
            rejected_decrypt=self._rejected,
            streams_sent=t.streams_sent,
            streams_failed=t.streams_failed,
            streams_served=t.streams_served,
            streams_dropped=self._streams_dropped,
            events_published=self._hub.published,
            events_dropped=self._hub.dropped,
            internal_errors=self._internal_errors,
        )

    # keys -----------------------------------------------------------------------------
    @property
    def keyring(self) -> Keyring:
        """The keyring in use (empty: no encryption)."""
        return self._keyring

    def install_key(self, key: bytes | str) -> None:
        """Accept packets encrypted with `key` (bytes or base64) too. With no key before,
        this turns encryption on. Raises ValidationError for a bad key."""
        self._keyring.install(_key_bytes(key))

    def use_key(self, key: bytes | str) -> None:
        """Encrypt with `key` (already installed) from now on."""
        self._keyring.use(_key_bytes(key))

    def remove_key(self, key: bytes | str) -> None:
        """Stop accepting `key`; the primary key cannot be removed (ValidationError)."""
        self._keyring.remove(_key_bytes(key))
