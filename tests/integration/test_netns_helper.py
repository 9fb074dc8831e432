"""trickle.testing.netns on real namespaces: nodes reach each other over TCP and UDP, an
isolated node exchanges nothing with the others until healed (but stays reachable from its
own namespace and through a forward), commands run inside, two networks on the same subnet
never see each other, and teardown removes everything, also after a failure.

Skipped with the reason where namespaces cannot be made (not root, no ``ip``); failed
instead when ``CI=true``."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from trickle.testing.netns import (
    NetnsError,
    NetnsNetwork,
    NetnsUnavailable,
    netns_unavailable_reason,
    require_netns,
)

WAIT = 10  # seconds: bounds what must happen (a connect, a datagram) on a working network
SILENCE = 0.5  # seconds: a datagram across a cut has this long to (wrongly) arrive
CUT_CONNECT = 1.0  # seconds: a TCP connect across a cut has this long to (wrongly) succeed


@pytest.fixture
async def net() -> AsyncIterator[NetnsNetwork]:
    await require_netns()
    async with NetnsNetwork(3) as network:
        yield network


async def namespaces() -> set[str]:
    done = await trio.run_process(["ip", "netns", "list"], capture_stdout=True)
    return {line.split()[0] for line in done.stdout.decode().splitlines() if line.strip()}


async def tcp_listener(net: NetnsNetwork, node: int) -> tuple[trio.socket.SocketType, int]:
    listener = net.socket(node)
    await listener.bind((net.nodes[node].address, 0))
    listener.listen()
    return listener, listener.getsockname()[1]


async def can_connect(net: NetnsNetwork, source: int, host: str, port: int) -> bool:
    """Whether a TCP connect from ``source`` completes within CUT_CONNECT seconds."""
    with trio.move_on_after(CUT_CONNECT):
        stream = await net.connect(source, host, port)
        await stream.aclose()
        return True
    return False


async def udp_arrives(net: NetnsNetwork, source: int, target: int, *, within: float) -> bool:
    """Whether a datagram from ``source`` to ``target`` arrives within ``within`` seconds."""
    with net.socket(target, socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        await receiver.bind((net.nodes[target].address, 0))
        with net.socket(source, socket.AF_INET, socket.SOCK_DGRAM) as sender:
            await sender.sendto(b"hello", receiver.getsockname())
            with trio.move_on_after(within):
                data, origin = await receiver.recvfrom(64)
                assert (data, origin[0]) == (b"hello", net.nodes[source].address)
                return True
    return False


async def test_nodes_have_their_own_address_and_reach_each_other_over_tcp_and_udp(
    net: NetnsNetwork,
) -> None:
    assert [n.address for n in net.nodes] == ["10.77.0.1", "10.77.0.2", "10.77.0.3"]
    assert len({n.namespace for n in net.nodes} | {net.hub}) == 4
    assert {n.namespace for n in net.nodes} | {net.hub} <= await namespaces()
    listener, port = await tcp_listener(net, 0)
    with listener, trio.fail_after(WAIT):
        for source in (1, 2):
            stream = await net.connect(source, "10.77.0.1", port)
            accepted, peer = await listener.accept()
            accepted.close()
            await stream.aclose()
            assert peer[0] == net.nodes[source].address
        for source, target in ((0, 1), (1, 2), (2, 0)):
            assert await udp_arrives(net, source, target, within=WAIT)


async def test_an_isolated_node_exchanges_nothing_with_the_others_until_healed(
    net: NetnsNetwork,
) -> None:
    listener, port = await tcp_listener(net, 0)
    with listener:
        await net.isolate(0)
        assert net.is_isolated(0) and not net.is_isolated(1)
        assert not await can_connect(net, 1, "10.77.0.1", port)
        assert not await udp_arrives(net, 1, 0, within=SILENCE)
        assert not await udp_arrives(net, 0, 2, within=SILENCE)
        # the majority side is untouched, and the isolated node still reaches itself
        assert await udp_arrives(net, 1, 2, within=WAIT)
        assert await can_connect(net, 0, "10.77.0.1", port)
        await net.heal(0)
        assert not net.is_isolated(0)
        with trio.fail_after(WAIT):
            assert await udp_arrives(net, 1, 0, within=WAIT)
            stream = await net.connect(2, "10.77.0.1", port)
            await stream.aclose()


async def test_heal_without_a_node_heals_every_isolated_one(net: NetnsNetwork) -> None:
    await net.isolate(0)
    await net.isolate(2)
    await net.isolate(2)  # idempotent
    assert not await udp_arrives(net, 0, 2, within=SILENCE)
    await net.heal()
    assert not any(net.is_isolated(i) for i in range(3))
    assert await udp_arrives(net, 0, 2, within=WAIT)


async def test_a_forward_reaches_a_node_even_while_it_is_isolated(net: NetnsNetwork) -> None:
    listener, port = await tcp_listener(net, 1)

    async def echo_once() -> None:
        conn, _ = await listener.accept()
        stream = trio.SocketStream(conn)
        async with stream:
            while data := await stream.receive_some(1024):
                await stream.send_all(data.upper())

    with listener, trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            local = await nursery.start(net.serve_forward, 1, "10.77.0.2", port)
            host, _, local_port = local.partition(":")
            assert host == "127.0.0.1"
            await net.isolate(1)
            nursery.start_soon(echo_once)
            stream = await trio.open_tcp_stream(host, int(local_port))
            async with stream:
                await stream.send_all(b"through the forward")
                await stream.send_eof()
                received = b""
                while data := await stream.receive_some(1024):
                    received += data
            assert received == b"THROUGH THE FORWARD"
            nursery.cancel_scope.cancel()


async def test_a_command_runs_inside_the_node_namespace(net: NetnsNetwork) -> None:
    done = await net.run(1, "ip", "-brief", "-4", "addr", "show", "dev", "eth0")
    assert "10.77.0.2/24" in done.stdout.decode()
    assert net.nodes[1].command_prefix == ["ip", "netns", "exec", net.nodes[1].namespace]
    with pytest.raises(subprocess.CalledProcessError):
        await net.run(1, "ip", "link", "show", "dev", "no-such-interface")


async def test_two_networks_on_the_same_subnet_never_see_each_other() -> None:
    await require_netns()
    async with NetnsNetwork(2) as first, NetnsNetwork(2) as second:
        assert first.hub != second.hub
        listener, port = await tcp_listener(first, 0)
        with listener, trio.fail_after(WAIT):
            # the same address in the other network is another host, with nothing listening
            with pytest.raises(ConnectionRefusedError):
                await second.connect(1, "10.77.0.1", port)
            stream = await first.connect(1, "10.77.0.1", port)
            await stream.aclose()


async def test_teardown_after_a_failure_kills_leftover_processes_and_deletes_namespaces() -> None:
    await require_netns()
    network = NetnsNetwork(2)
    with pytest.raises(RuntimeError, match="the test failed"):
        async with network:
            process = await trio.lowlevel.open_process(
                [*network.nodes[0].command_prefix, "sleep", "600"]
            )
            raise RuntimeError("the test failed")
    with trio.fail_after(WAIT):
        assert await process.wait() == -signal.SIGKILL
    left = await namespaces()
    assert network.hub not in left
    assert not any(n.namespace in left for n in network.nodes)


async def test_a_missing_ip_command_is_named_as_the_reason() -> None:
    reason = await netns_unavailable_reason(ip="/nonexistent/ip")
    assert reason is not None
    assert "/nonexistent/ip" in reason or "root" in reason or "Linux" in reason
    with pytest.raises(NetnsUnavailable) as raised:
        async with NetnsNetwork(1, ip="/nonexistent/ip"):
            pass
    assert isinstance(raised.value, NetnsError)
    assert str(raised.value) == reason


async def test_bad_sizes_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="count: at least one node"):
        NetnsNetwork(0)
    with pytest.raises(ValueError, match="10.0.0.0/30 has 2 addresses for 3 nodes"):
        NetnsNetwork(3, subnet="10.0.0.0/30")


async def serve_http_once(listener: trio.socket.SocketType) -> None:
    """Answer one HTTP/1.1 request with its Host header as the body."""
    conn, _ = await listener.accept()
    stream = trio.SocketStream(conn)
    async with stream:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(4096)
        host = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"host:")
        )
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(host), host)
        )


async def test_the_http_transport_reaches_a_node_address_even_while_it_is_isolated(
    net: NetnsNetwork,
) -> None:
    listener, port = await tcp_listener(net, 2)
    url = f"http://10.77.0.3:{port}/v1/leader"
    with listener, trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery, net.open_http_transport() as transport:
            async with httpx.AsyncClient(transport=transport) as client:
                for isolate in (False, True):
                    if isolate:
                        await net.isolate(2)
                    nursery.start_soon(serve_http_once, listener)
                    response = await client.get(url)
                    assert response.status_code == 200
                    assert response.text == f"10.77.0.3:{port}"  # the Host header is kept
                    assert str(response.request.url) == url


async def test_an_error_in_the_http_transport_block_comes_out_as_raised(net: NetnsNetwork) -> None:
    with pytest.raises(KeyError, match="raised in the block"):
        async with net.open_http_transport():
            raise KeyError("raised in the block")


async def test_require_netns_skips_with_the_reason_but_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reason = await netns_unavailable_reason(ip="/nonexistent/ip")
    assert reason is not None
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        await require_netns(ip="/nonexistent/ip")
    assert str(skipped.value) == reason
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as failed:
        await require_netns(ip="/nonexistent/ip")
    assert str(failed.value) == f"CI=true and {reason}"


async def test_not_being_root_is_named_as_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    reason = await netns_unavailable_reason()
    assert reason is not None
    assert "need root" in reason or "need Linux" in reason
