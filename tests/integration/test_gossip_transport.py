"""The gossip UDP/TCP transport and the driver over real sockets on 127.0.0.1 (port 0):
one port for both, bounded frames and packets, bad input dropped and counted, encryption
on the wire."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

import pytest
import trio

from trickle.errors import ValidationError
from trickle.gossip.config import local
from trickle.gossip.driver import GossipDriver
from trickle.gossip.keyring import Keyring, generate_key
from trickle.gossip.messages import Address, Ping
from trickle.gossip.transport import UdpTcpTransport, parse_address
from trickle.gossip.wire import STREAM_PREFIX_BYTES, encode_packet

LOCALHOST = "127.0.0.1"
WAIT = 10.0  # seconds any wait may take before the test fails


async def echo(source: Address, payload: bytes) -> bytes | None:
    return b"echo:" + payload


async def eventually(predicate: Callable[[], bool]) -> None:
    """Wait until `predicate` holds: for counters, which nothing can await."""
    with trio.fail_after(WAIT):
        while not predicate():  # noqa: ASYNC110 (a counter is not awaitable)
            await trio.sleep(0.005)


async def closed_without_answer(stream: trio.SocketStream) -> bool:
    """True if the peer closed (or reset) the connection without sending anything."""
    try:
        data = await stream.receive_some(100)
    except trio.BrokenResourceError:
        data = b""
    await stream.aclose()
    return data == b""


async def test_udp_and_tcp_share_one_port_chosen_by_the_os() -> None:
    a, b = UdpTcpTransport(bind=(LOCALHOST, 0)), UdpTcpTransport(bind=(LOCALHOST, 0))
    async with trio.open_nursery() as nursery:
        a_addr = await nursery.start(a.serve, echo)
        b_addr = await nursery.start(b.serve, echo)
        assert a_addr[0] == LOCALHOST and a_addr[1] > 0 and a.address == a_addr
        assert a.advertise_address == a_addr
        a.send_packet(b_addr, b"hello")
        with trio.fail_after(WAIT):
            assert await b.packets.receive() == (a_addr, b"hello")
            assert (
                await a.request(b_addr, b"x" * 300_000, timeout=WAIT) == b"echo:" + b"x" * 300_000
            )
        stats = a.statistics()
        assert stats.packets_sent == 1 and stats.streams_sent == 1 and stats.streams_failed == 0
        assert b.statistics().packets_received == 1 and b.statistics().streams_served == 1
        nursery.cancel_scope.cancel()
    assert a.address is None


async def test_bind_all_interfaces_advertises_a_given_host() -> None:
    t = UdpTcpTransport(bind=("0.0.0.0", 0), advertise="127.0.0.1")
    default = UdpTcpTransport(bind=("0.0.0.0", 0))
    port_given = UdpTcpTransport(bind=(LOCALHOST, 0), advertise=("10.1.2.3", 7946))
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(t.serve, echo)
        assert bound[0] == "0.0.0.0"
        assert t.advertise_address == ("127.0.0.1", bound[1])
        # what others can reach: a real interface, never the unspecified address
        await nursery.start(default.serve, echo)
        assert default.advertise_address is not None
        assert default.advertise_address[0] != "0.0.0.0"
        await nursery.start(port_given.serve, echo)
        assert port_given.advertise_address == ("10.1.2.3", 7946)
        with trio.fail_after(WAIT):
            assert await t.request(("127.0.0.1", bound[1]), b"ping", timeout=WAIT) == b"echo:ping"
        nursery.cancel_scope.cancel()


async def test_a_taken_port_is_an_error_naming_it() -> None:
    first = UdpTcpTransport(bind=(LOCALHOST, 0))
    async with trio.open_nursery() as nursery:
        port = (await nursery.start(first.serve, echo))[1]
        with pytest.raises(OSError) as info:
            await UdpTcpTransport(bind=(LOCALHOST, port)).serve(echo)
        assert info.value.errno == errno.EADDRINUSE
        nursery.cancel_scope.cancel()


async def test_port_zero_skips_a_port_whose_udp_side_is_taken() -> None:
    # Hold UDP ports the OS may hand out for TCP next: the transport must still come up
    # with both on one port.
    held = []
    try:
        for _ in range(20):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((LOCALHOST, 0))
            held.append(s)
        t = UdpTcpTransport(bind=(LOCALHOST, 0))
        async with trio.open_nursery() as nursery:
            port = (await nursery.start(t.serve, echo))[1]
            assert port not in {s.getsockname()[1] for s in held}
            nursery.cancel_scope.cancel()
    finally:
        for s in held:
            s.close()


def test_addresses_parse_or_are_refused_with_a_reason() -> None:
    assert parse_address("10.0.0.1:7946") == ("10.0.0.1", 7946)
    assert parse_address("node-1") == ("node-1", 8946)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    assert parse_address("::1") == ("::1", 8946)
    assert parse_address(("h", 1)) == ("h", 1)
    for bad, reason in (
        ("h:port", "not a number"),
        ("h:70000", "0..65535"),
        (":80", "no host"),
        ("[::1", "unclosed"),
        (("h",), "pair"),
    ):
        with pytest.raises(ValidationError, match=reason):
            parse_address(bad)  # type: ignore[arg-type]


async def test_packets_over_the_budget_are_never_sent() -> None:
    a, b = (
        UdpTcpTransport(bind=(LOCALHOST, 0), max_packet_bytes=1400),
        UdpTcpTransport(bind=(LOCALHOST, 0)),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(a.serve, echo)
        b_addr = await nursery.start(b.serve, echo)
        a.send_packet(b_addr, b"x" * 1401)
        a.send_packet(b_addr, b"y" * 1400)
        with trio.fail_after(WAIT):
            assert (await b.packets.receive())[1] == b"y" * 1400
        assert a.statistics().packets_oversize == 1
        assert a.statistics().packets_sent == 1
        nursery.cancel_scope.cancel()


async def test_full_receive_buffer_drops_newer_packets_and_counts_them() -> None:
    a, b = (
        UdpTcpTransport(bind=(LOCALHOST, 0)),
        UdpTcpTransport(bind=(LOCALHOST, 0), receive_buffer=2),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(a.serve, echo)
        b_addr = await nursery.start(b.serve, echo)
        for i in range(5):
            a.send_packet(b_addr, bytes([i]))
        await eventually(lambda: b.statistics().packets_dropped == 3)
        assert [(await b.packets.receive())[1] for _ in range(2)] == [b"\x00", b"\x01"]
        assert b.statistics().packets_received == 2
        nursery.cancel_scope.cancel()


async def test_bad_tcp_frames_are_dropped_and_counted() -> None:
    t = UdpTcpTransport(bind=(LOCALHOST, 0), max_frame_bytes=1000)
    async with trio.open_nursery() as nursery:
        port = (await nursery.start(t.serve, echo))[1]
        with trio.fail_after(WAIT):
            # a length prefix over the limit: closed at once, nothing answered
            stream = await trio.open_tcp_stream(LOCALHOST, port)
            await stream.send_all((1001).to_bytes(STREAM_PREFIX_BYTES, "big") + b"x" * 10)
            assert await closed_without_answer(stream)
            # a frame cut short by the end of the connection
            stream = await trio.open_tcp_stream(LOCALHOST, port)
            await stream.send_all((100).to_bytes(STREAM_PREFIX_BYTES, "big") + b"x" * 10)
            await stream.send_eof()
            assert await closed_without_answer(stream)
            # and the listener still answers
            assert await t.request((LOCALHOST, port), b"ok", timeout=WAIT) == b"echo:ok"
        await eventually(lambda: t.statistics().frames_malformed == 1)
        stats = t.statistics()
        assert stats.frames_oversize == 1
        assert await t.request((LOCALHOST, port), b"z" * 1001, timeout=WAIT) is None
        assert t.statistics().frames_oversize == 2  # refused on the way out as well
        nursery.cancel_scope.cancel()


async def test_a_request_nobody_answers_is_none() -> None:
    async def silent(source: Address, payload: bytes) -> bytes | None:
        return None

    async def slow(source: Address, payload: bytes) -> bytes | None:
        await trio.sleep_forever()
        raise AssertionError

    async def broken(source: Address, payload: bytes) -> bytes | None:
        raise RuntimeError("a bug in the handler")

    client = UdpTcpTransport(bind=(LOCALHOST, 0))
    servers = [UdpTcpTransport(bind=(LOCALHOST, 0), tcp_timeout=0.2) for _ in range(3)]
    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve, echo)
        addrs = [
            await nursery.start(s.serve, h)
            for s, h in zip(servers, (silent, slow, broken), strict=True)
        ]
        closed = UdpTcpTransport(bind=(LOCALHOST, 0))
        async with trio.open_nursery() as inner:
            closed_addr = await inner.start(closed.serve, echo)
            inner.cancel_scope.cancel()
        with trio.fail_after(WAIT):
            for addr in (*addrs, closed_addr):
                assert await client.request(addr, b"?", timeout=1.0) is None
            assert await client.request(addrs[1], b"?", timeout=0.05) is None
        assert client.statistics().streams_failed == 5
        nursery.cancel_scope.cancel()


# -- the driver on real sockets ---------------------------------------------------------------


async def start_driver(
    nursery: trio.Nursery, name: str, keyring: Keyring | None = None
) -> tuple[GossipDriver, Address]:
    driver = GossipDriver(
        name,
        config=local(probe_interval=0.2, probe_timeout=0.1, gossip_interval=0.05),
        bind=(LOCALHOST, 0),
        keyring=keyring,
    )
    return driver, await nursery.start(driver.serve)


async def raw_udp(to: Address, *packets: bytes) -> None:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for data in packets:
            await sock.sendto(data, to)


async def test_driver_drops_and_counts_malformed_and_oversized_input() -> None:
    async with trio.open_nursery() as nursery:
        a, a_addr = await start_driver(nursery, "a")
        b, b_addr = await start_driver(nursery, "b")
        ping = encode_packet([Ping(seq=1, target="a", source="x", source_addr=("127.0.0.1", 1))])
        await raw_udp(a_addr, b"", b"\x00\x01", b"garbage" * 50, ping[:-2], b"\xc1" * 100)
        await eventually(lambda: a.statistics().malformed == 5)
        with trio.fail_after(WAIT):
            stream = await trio.open_tcp_stream(*a_addr)
            await stream.send_all((9).to_bytes(STREAM_PREFIX_BYTES, "big") + b"not msgp\xc1")
            assert await closed_without_answer(stream)  # no answer to garbage
            stream = await trio.open_tcp_stream(*a_addr)
            await stream.send_all((2**31).to_bytes(STREAM_PREFIX_BYTES, "big"))
            assert await closed_without_answer(stream)
        await eventually(lambda: a.statistics().malformed == 6)
        await eventually(lambda: a.statistics().oversize == 1)
        assert a.statistics().internal_errors == 0
        # the member is unharmed: it still joins and is joined
        with trio.fail_after(WAIT):
            assert await b.join([a_addr]) == 1
        assert {m.name for m in a.members()} == {"a", "b"}
        nursery.cancel_scope.cancel()


async def test_encrypted_members_talk_and_others_are_rejected_and_counted() -> None:
    key = generate_key()
    async with trio.open_nursery() as nursery:
        a, a_addr = await start_driver(nursery, "a", Keyring([key]))
        b, b_addr = await start_driver(nursery, "b", Keyring([key]))
        with trio.fail_after(WAIT):
            assert await b.join([a_addr]) == 1
        assert {m.name for m in a.members()} == {"a", "b"}

        # what is on the wire is sealed: a plain member cannot read a's packets
        plain, plain_addr = await start_driver(nursery, "plain")
        wrong, _ = await start_driver(nursery, "wrong", Keyring([generate_key()]))
        before = a.statistics().rejected_decrypt
        with trio.fail_after(WAIT):
            assert await plain.join([a_addr]) == 0  # plaintext refused by a
            assert await wrong.join([a_addr]) == 0  # wrong key refused by a
        assert a.statistics().rejected_decrypt == before + 2
        assert {m.name for m in a.members()} == {"a", "b"}

        # an encrypted packet to a member without a key is refused and counted too
        ping = encode_packet([Ping(seq=1, target="plain", source="a", source_addr=a_addr)])
        await raw_udp(plain_addr, Keyring([key]).encrypt(ping))
        await eventually(lambda: plain.statistics().rejected_decrypt == 1)
        # plaintext UDP to an encrypted member
        await raw_udp(a_addr, ping)
        await eventually(lambda: a.statistics().rejected_decrypt == before + 3)
        assert a.statistics().malformed == 0
        nursery.cancel_scope.cancel()
