"""The Raft TCP transport over real loopback sockets: frames, reconnects, bad input, RPC."""

from __future__ import annotations

import socket
from contextlib import asynccontextmanager

import msgpack
import pytest
import trio

from trickle.errors import PayloadTooLarge
from trickle.raft import transport as transport_module
from trickle.raft.messages import Entry, Message, MessageType, NodeId
from trickle.raft.transport import (
    PeerUnreachable,
    RemoteError,
    RpcTimeout,
    TcpTransport,
)
from trickle.raft.wire import (
    HEADER_BYTES,
    MAX_FRAME_BYTES,
    FrameReader,
    Hello,
    RaftFrame,
    Request,
    Response,
    decode_frame,
    encode_frame,
)

A, B, C = NodeId("a"), NodeId("b"), NodeId("c")
TIMEOUT = 10  # seconds a test step may take before it fails (never reached when it works)


def heartbeat(src: NodeId, dst: NodeId, commit: int = 1) -> Message:
    return Message(type=MessageType.HEARTBEAT, src=src, dst=dst, term=1, commit=commit)


@asynccontextmanager
async def serving(*transports: TcpTransport):
    """Serve the transports in a nursery cancelled on exit; yields their addresses."""
    async with trio.open_nursery() as nursery:
        addresses = [await nursery.start(t.serve) for t in transports]
        yield addresses
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def pair():
    a, b = TcpTransport(A), TcpTransport(B)
    async with serving(a, b) as (addr_a, addr_b):
        a.set_peers({B: addr_b})
        b.set_peers({A: addr_a})
        yield a, b


C_HELLO = Hello(C, "trickle")


async def raw_connection(address, hello: Hello | None = C_HELLO):
    stream = await trio.open_tcp_stream(*address)
    reader = FrameReader()
    if hello is not None:
        await stream.send_all(encode_frame(hello))
        assert await next_frame(stream, reader) == Hello(B, "trickle")
    return stream, reader


async def next_frame(stream, reader):
    """The next frame on ``stream``, or None at end of stream."""
    while True:
        for body in reader.bodies():
            return decode_frame(body)
        data = await stream.receive_some(65536)
        if not data:
            return None
        reader.feed(data)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_messages_flow_both_ways():
    with trio.fail_after(TIMEOUT):
        async with pair() as (a, b):
            a.send(heartbeat(A, B, commit=7))
            b.send(heartbeat(B, A, commit=9))
            assert await b.messages.receive() == heartbeat(A, B, commit=7)
            assert await a.messages.receive() == heartbeat(B, A, commit=9)
            stats = a.statistics()
            assert stats.peers[B].connected and stats.frames_sent >= 1
            assert b.statistics().frames_received >= 1


async def test_many_messages_arrive_in_order_and_a_large_one_fits():
    big = Message(
        type=MessageType.APPEND,
        src=A,
        dst=B,
        term=2,
        entries=(Entry(term=2, index=1, data=b"x" * (3 * 1024 * 1024)),),
    )
    with trio.fail_after(TIMEOUT):
        async with pair() as (a, b):
            for i in range(1, 501):
                a.send(heartbeat(A, B, commit=i))
            a.send(big)
            got = [await b.messages.receive() for _ in range(501)]
            assert [m.commit for m in got[:500]] == list(range(1, 501))
            assert got[500] == big


async def test_a_frame_written_in_part_is_finished_before_the_frames_behind_it():
    # Frames go straight to the socket when nothing is queued. Against a peer that does
    # not read, a big frame fills the kernel's buffers and is written in part: its rest
    # and the frames sent after it wait, and arrive whole and in order once it reads.
    big = Message(
        type=MessageType.APPEND,
        src=A,
        dst=B,
        term=2,
        entries=(Entry(term=2, index=1, data=b"y" * (MAX_FRAME_BYTES - 1024)),),
    )
    a = TcpTransport(A)
    with trio.fail_after(TIMEOUT), trio.socket.socket() as listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        async with serving(a):
            a.set_peers({B: listener.getsockname()})
            sock, _ = await listener.accept()
            stream = trio.SocketStream(sock)
            reader = FrameReader()
            assert await next_frame(stream, reader) == Hello(A, "trickle")
            await stream.send_all(encode_frame(Hello(B, "trickle")))
            await a.wait_connected(B)
            a.send(big)
            for i in range(1, 51):
                a.send(heartbeat(A, B, commit=i))
            assert a.statistics().peers[B].queued == 51  # the big one's rest, then 50
            frames = [await next_frame(stream, reader) for _ in range(51)]
            assert frames[0] == RaftFrame(big)
            assert [f.message.commit for f in frames[1:]] == list(range(1, 51))
            assert a.statistics().peers[B].frames_sent == 51
            await stream.aclose()


async def test_peer_restart_is_reconnected_without_intervention():
    a, b = TcpTransport(A), TcpTransport(B)
    with trio.fail_after(TIMEOUT):
        async with serving(a) as (addr_a,):
            async with serving(b) as (addr_b,):
                a.set_peers({B: addr_b})
                a.send(heartbeat(A, B))
                assert (await b.messages.receive()).commit == 1
            # b is gone; a keeps trying. b comes back on the same address.
            b2 = TcpTransport(B, bind=addr_b)
            async with serving(b2):
                await deliver_eventually(a, b2, heartbeat(A, B, commit=2))
                assert a.statistics().peers[B].reconnects >= 1
                assert a.statistics().reconnects >= 1


async def deliver_eventually(src: TcpTransport, dst: TcpTransport, message: Message) -> None:
    """Send until one arrives, as Raft's heartbeats do (messages may be lost meanwhile)."""
    while True:
        src.send(message)
        with trio.move_on_after(0.05):
            assert await dst.messages.receive() == message
            return


async def test_unreachable_peer_drops_messages_and_is_reported():
    a = TcpTransport(A)
    with trio.fail_after(TIMEOUT):
        async with serving(a):
            a.set_peers({B: ("127.0.0.1", closed_port())})
            with pytest.raises(PeerUnreachable):
                await a.call(B, "x", b"", timeout=5)
            a.send(heartbeat(A, B))
            a.send(heartbeat(A, C))  # not a peer at all
            assert a.take_unreachable() == [B, C]
            assert a.take_unreachable() == []
            stats = a.statistics()
            assert stats.frames_dropped >= 2 and not stats.peers[B].connected
            assert "refused" in (stats.peers[B].last_error or "").lower()


async def test_a_peer_is_unreachable_from_a_failed_dial_until_a_dial_succeeds():
    a = TcpTransport(A)
    port = closed_port()
    with trio.fail_after(TIMEOUT):
        async with serving(a):
            a.set_peers({B: ("127.0.0.1", port)})
            assert not a.is_unreachable(B)  # not dialled yet: nothing known
            with pytest.raises(PeerUnreachable):
                await a.call(B, "x", b"", timeout=5)
            assert a.is_unreachable(B)
            assert not a.is_unreachable(C)  # not a peer: nothing known either
            b = TcpTransport(B, bind=("127.0.0.1", port))  # b comes up on that address
            async with serving(b):
                a.redial(B)
                await a.wait_connected(B)
                assert not a.is_unreachable(B)


async def test_dialling_the_wrong_node_is_refused():
    a, b = TcpTransport(A), TcpTransport(B)
    with trio.fail_after(TIMEOUT):
        async with serving(a, b) as (_, addr_b):
            a.set_peers({C: addr_b})  # a believes c lives where b does
            with pytest.raises(PeerUnreachable, match="is node 'b'"):
                await a.call(C, "x", b"", timeout=5)
            assert a.statistics().handshake_failures >= 1


async def test_other_cluster_is_refused_at_the_handshake():
    b = TcpTransport(B)
    with trio.fail_after(TIMEOUT):
        async with serving(b) as (addr_b,):
            stream, reader = await raw_connection(addr_b, hello=None)
            await stream.send_all(encode_frame(Hello(C, "other-cluster")))
            assert await next_frame(stream, reader) is None  # closed on us
            await stream.aclose()
            assert b.statistics().handshake_failures == 1


async def test_malformed_frames_are_counted_and_the_connection_keeps_working():
    b = TcpTransport(B)
    b.register("echo", echo)
    with trio.fail_after(TIMEOUT):
        async with serving(b) as (addr_b,):
            stream, reader = await raw_connection(addr_b)
            garbage = b"\xc1\xff\x00"
            await stream.send_all(len(garbage).to_bytes(HEADER_BYTES, "big") + garbage)
            await stream.send_all(encode_frame(RaftFrame(heartbeat(A, B))))  # src is not c
            await stream.send_all(encode_frame(Response(1, True, b"")))  # not expected here
            await stream.send_all(encode_frame(Request(5, "echo", b"still here")))
            assert await next_frame(stream, reader) == Response(5, True, b"still here")
            assert b.statistics().malformed == 3
            await stream.aclose()


async def test_replies_written_in_part_are_finished_before_the_replies_behind_them():
    # A reply goes straight to the socket when no other reply is being written. Against
    # a caller that does not read, a big reply is written in part: the replies served
    # after it wait for its rest, and every one arrives whole, none cut into another.
    big = b"z" * (MAX_FRAME_BYTES - 1024)
    big_answered = trio.Event()

    async def reply(src: NodeId, payload: bytes) -> bytes:
        if payload == b"big":
            big_answered.set()  # its reply is written (in part) before any waiter runs
            return big
        await big_answered.wait()
        return payload

    b = TcpTransport(B)
    b.register("reply", reply)
    with trio.fail_after(TIMEOUT):
        async with serving(b) as (addr_b,):
            stream, reader = await raw_connection(addr_b)
            await stream.send_all(encode_frame(Request(1, "reply", b"big")))
            for i in range(2, 52):
                await stream.send_all(encode_frame(Request(i, "reply", str(i).encode())))
            replies = [await next_frame(stream, reader) for _ in range(51)]
            assert replies[0] == Response(1, True, big)
            assert sorted(r.call_id for r in replies[1:]) == list(range(2, 52))
            assert all(r.payload == str(r.call_id).encode() for r in replies[1:])
            await stream.aclose()


async def test_oversized_frame_closes_that_connection_only():
    a, b = TcpTransport(A), TcpTransport(B)
    with trio.fail_after(TIMEOUT):
        async with serving(a, b) as (addr_a, addr_b):
            a.set_peers({B: addr_b})
            stream, reader = await raw_connection(addr_b)
            await stream.send_all((MAX_FRAME_BYTES + 1).to_bytes(HEADER_BYTES, "big") + b"xx")
            assert await next_frame(stream, reader) is None
            await stream.aclose()
            assert b.statistics().oversized == 1
            a.send(heartbeat(A, B))
            assert await b.messages.receive() == heartbeat(A, B)


async def test_garbage_instead_of_hello_is_refused():
    b = TcpTransport(B)
    with trio.fail_after(TIMEOUT):
        async with serving(b) as (addr_b,):
            stream, reader = await raw_connection(addr_b, hello=None)
            body = msgpack.packb([1, 2, 3])
            await stream.send_all(len(body).to_bytes(HEADER_BYTES, "big") + body)
            assert await next_frame(stream, reader) is None
            await stream.aclose()
            assert b.statistics().handshake_failures == 1


async def test_oversized_outgoing_message_is_dropped_not_sent():
    big = Message(type=MessageType.SNAPSHOT, src=A, dst=B, term=1, data=b"x" * MAX_FRAME_BYTES)
    with trio.fail_after(TIMEOUT):
        async with pair() as (a, b):
            a.send(big)
            a.send(heartbeat(A, B))
            assert await b.messages.receive() == heartbeat(A, B)
            assert a.statistics().oversized == 1
            assert a.statistics().peers[B].frames_dropped == 1


async def echo(src: NodeId, payload: bytes) -> bytes:
    return payload


async def test_rpc_call_returns_the_handlers_reply():
    async def whoami(src: NodeId, payload: bytes) -> bytes:
        return f"{src}:{payload.decode()}".encode()

    with trio.fail_after(TIMEOUT):
        async with pair() as (a, b):
            b.register("whoami", whoami)
            assert await a.call(B, "whoami", b"hi") == b"a:hi"
            results = {}

            async def one(i: int) -> None:
                results[i] = await a.call(B, "whoami", str(i).encode())

            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(one, i)
            assert results == {i: f"a:{i}".encode() for i in range(50)}


async def test_rpc_reports_remote_failures_clearly():
    async def broken(src: NodeId, payload: bytes) -> bytes:
        raise KeyError("no such job")

    with trio.fail_after(TIMEOUT):
        async with pair() as (a, b):
            b.register("broken", broken)
            with pytest.raises(RemoteError, match="broken on b failed: KeyError"):
                await a.call(B, "broken", b"")
            with pytest.raises(RemoteError, match="no such method 'nope'"):
                await a.call(B, "nope", b"")
            with pytest.raises(ValueError, match="already registered"):
                b.register("broken", broken)


async def test_rpc_times_out_when_the_handler_is_slow():
    release = trio.Event()

    async def slow(src: NodeId, payload: bytes) -> bytes:
        await release.wait()
        return b"late"

    with trio.fail_after(TIMEOUT):
        async with pair() as (a, b):
            b.register("slow", slow)
            with pytest.raises(RpcTimeout, match="no reply within 0.2"):
                await a.call(B, "slow", b"", timeout=0.2)
            release.set()
            assert await a.call(B, "slow", b"") == b"late"


async def test_rpc_fails_when_the_peer_goes_away_mid_call():
    a, b = TcpTransport(A), TcpTransport(B)
    entered = trio.Event()

    async def hang(src: NodeId, payload: bytes) -> bytes:
        entered.set()
        await trio.sleep_forever()
        raise AssertionError

    b.register("hang", hang)
    with trio.fail_after(TIMEOUT):
        async with serving(a) as _:
            async with trio.open_nursery() as outer:
                b_scope = trio.CancelScope()

                async def run_b(task_status=trio.TASK_STATUS_IGNORED):
                    with b_scope:
                        await b.serve(task_status=task_status)

                addr_b = await outer.start(run_b)
                a.set_peers({B: addr_b})

                async def kill_b_when_called():
                    await entered.wait()
                    b_scope.cancel()

                outer.start_soon(kill_b_when_called)
                with pytest.raises(PeerUnreachable, match="lost before the reply"):
                    await a.call(B, "hang", b"", timeout=5)


async def test_rpc_request_over_the_frame_limit_is_refused_locally():
    with trio.fail_after(TIMEOUT):
        async with pair() as (a, b):
            await a.wait_connected(B)
            with pytest.raises(PayloadTooLarge):
                await a.call(B, "echo", b"x" * (MAX_FRAME_BYTES + 1))


async def test_set_peers_drops_removed_peers_and_follows_a_new_address():
    a, b, c = TcpTransport(A), TcpTransport(B), TcpTransport(C)
    with trio.fail_after(TIMEOUT):
        async with serving(a, b, c) as (_, addr_b, addr_c):
            a.set_peers({B: addr_b, A: ("127.0.0.1", 1)})  # its own id is ignored
            assert a.peers() == {B: addr_b}
            await a.wait_connected(B)
            a.set_peers({C: addr_c})
            assert list(a.statistics().peers) == [C]
            a.send(heartbeat(A, C))
            assert await c.messages.receive() == heartbeat(A, C)
            with pytest.raises(PeerUnreachable, match="not a known peer"):
                await a.call(B, "echo", b"")


async def test_redial_ends_the_reconnect_backoff_of_a_peer_known_to_be_back(monkeypatch):
    """Gossip saw the node come back (a restart): the next dial must not wait out the
    backoff, or dispatches fail meanwhile. With an hour of backoff, only redial connects."""
    monkeypatch.setattr(transport_module, "BACKOFF_INITIAL", 3600.0)
    monkeypatch.setattr(transport_module, "BACKOFF_MAX", 3600.0)
    port = closed_port()
    a = TcpTransport(A)
    with trio.fail_after(TIMEOUT):
        async with serving(a):
            a.set_peers({B: ("127.0.0.1", port)})
            with pytest.raises(PeerUnreachable):
                await a.call(B, "x", b"", timeout=5)  # refused: now in its backoff
            b = TcpTransport(B, bind=("127.0.0.1", port))
            async with serving(b):
                a.redial(B)
                await a.wait_connected(B)
                a.redial(C)  # not a peer: nothing happens
