"""Linux network namespaces for partition tests: N nodes on a private bridge, cut off and
healed at will, with real UDP and TCP (iproute2's ``ip``, run as root).

    async with NetnsNetwork(3) as net:            # raises NetnsUnavailable if it cannot run
        a, b, c = net.nodes                       # a.address == "10.77.0.1", ...
        prefix = a.command_prefix                 # ["ip", "netns", "exec", a.namespace]
        await net.isolate(a)                      # a hears nobody, nobody hears a
        await net.heal(a)
        url = await nursery.start(net.serve_forward, a, "10.77.0.1", 8080)  # "127.0.0.1:P"
        async with net.open_http_transport() as transport:
            client = httpx.AsyncClient(transport=transport)   # http://10.77.0.1:8080 works

Layout. Every node gets a namespace of its own with ``lo`` up and one interface, ``eth0``,
addressed ``subnet[index + 1]``; the other end of its veth pair is a port of a bridge that
lives in one more namespace, the hub. Nothing is created in the host's own namespace (no
interface, no address, no route): the nodes cannot reach the host's network, nor the host
theirs, and two networks never see each other, even on the same subnet. Every namespace
name carries a random token (``trickle-<8 hex>-n1``, ``...-hub``), so runs in parallel never
collide.

``isolate(node)`` takes the node's bridge port down: its ``eth0`` loses its carrier, so
every packet between it and the others, UDP and TCP, in both directions, is lost (a TCP
connect times out; nothing is refused), exactly as a pulled cable. The node still reaches
its own address (through ``lo``), so a client in its namespace still talks to it.
``heal(node)`` brings the port back up.

The test process lives in the host namespace. To reach a node, it makes sockets in the
node's namespace (``socket``, ``connect``) or forwards a local port there
(``serve_forward``), or sends HTTP through ``open_http_transport``, which forwards every
node address on its own: such a path never crosses the bridge, so an isolated node stays
observable. Processes run in a node's namespace through ``command_prefix`` or ``run``.

Teardown (``__aexit__``, also after a failure or a failed setup) kills what still runs in
the network's namespaces (by pid: only processes started in them) and deletes them, which
deletes the bridge and every veth with them.

Errors: ``NetnsError`` (an ``ip`` command failed: the command and its stderr) and its
subclass ``NetnsUnavailable`` (this machine cannot run it at all: not Linux, not root, no
``ip``, namespaces or bridges not permitted). ``netns_unavailable_reason()`` says why
without raising; ``require_netns()`` skips a pytest test with that reason, or fails it when
the environment says ``CI=true``, where a partition test must run.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import secrets
import shutil
import signal
import socket as stdlib_socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import trio

IP = "ip"  # iproute2's command
DEFAULT_SUBNET = "10.77.0.0/24"  # private, and seen only inside the network's namespaces
NAME_PREFIX = "trickle"  # every namespace is <prefix>-<token>-<suffix>
FORWARD_BUFFER = 65536  # bytes read at once by a port forward
CONNECT_TIMEOUT = 5.0  # seconds for a forwarded connection to reach its node
KILL_TIMEOUT = 5.0  # seconds for a process left in a namespace to die at teardown
IP_TIMEOUT = 30.0  # seconds for one `ip` command to exit (it takes milliseconds)
_CLONE_NEWNET = 0x40000000  # <sched.h>: setns() into a network namespace
_NETNS_DIR = "/run/netns"  # where `ip netns add` mounts a namespace's handle


class NetnsError(Exception):
    """An ``ip`` command failed; the message has the command and its stderr."""


class NetnsUnavailable(NetnsError):
    """This machine cannot make network namespaces (not Linux, not root, no ``ip``,
    namespaces or bridges not permitted); the message says which."""


@attrs.frozen
class NetnsNode:
    """One node of a ``NetnsNetwork``.

    index: 0-based position in ``net.nodes``.
    namespace: the network namespace's name (``ip netns``).
    address: the IPv4 address of its ``eth0``, on the network's subnet.
    bridge_port: the name of its veth's other end, a port of the bridge, in the hub.
    """

    index: int
    namespace: str
    address: str
    bridge_port: str
    ip: str = IP

    @property
    def command_prefix(self) -> list[str]:
        """Put in front of a command to run it in this node's namespace."""
        return [self.ip, "netns", "exec", self.namespace]


async def _ip(ip: str, *args: str, error: type[NetnsError] = NetnsError) -> str:
    """Run ``ip args``; its stdout. Raises ``error`` with the command and its stderr, or
    when it has not exited after IP_TIMEOUT seconds (it is killed: a test fails, it does
    not hang)."""
    command = [ip, *args]
    try:
        with trio.fail_after(IP_TIMEOUT):
            done = await trio.run_process(
                command, capture_stdout=True, capture_stderr=True, check=False
            )
    except trio.TooSlowError:
        raise error(f"{' '.join(command)} did not exit within {IP_TIMEOUT} s") from None
    except OSError as exc:
        raise error(f"{' '.join(command)}: {exc}") from None
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace").strip()
        raise error(f"{' '.join(command)} exited {done.returncode}: {stderr}")
    return str(done.stdout.decode(errors="replace"))


def _token() -> str:
    return secrets.token_hex(4)


async def netns_unavailable_reason(*, ip: str = IP) -> str | None:
    """Why network namespaces cannot be used here (None when they can). Checks the
    platform, root, that ``ip`` exists, and makes (then deletes) a throwaway namespace with
    a bridge and a veth pair in it, so a container without the rights or modules answers
    with the error ``ip`` gave."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run as root, or in CI"
    if shutil.which(ip) is None:
        return f"iproute2's {ip!r} command is not installed (apt-get install -y iproute2)"
    probe = f"{NAME_PREFIX}-probe-{_token()}"
    try:
        await _ip(ip, "netns", "add", probe, error=NetnsUnavailable)
        try:
            await _ip(
                ip, "-n", probe, "link", "add", "br0", "type", "bridge", error=NetnsUnavailable
            )
            await _ip(
                ip, "-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
                error=NetnsUnavailable,
            )  # fmt: skip
        finally:
            with trio.CancelScope(shield=True):
                await _ip(ip, "netns", "del", probe)
    except NetnsUnavailable as exc:
        return f"network namespaces are not permitted here: {exc}"
    return None


async def require_netns(*, ip: str = IP) -> None:
    """For a pytest test that needs network namespaces: nothing if they work; otherwise
    skip the test with the reason, or fail it when the environment has ``CI=true`` (in CI
    the partition tests must run, not be skipped quietly)."""
    import pytest  # a test helper: only tests call it

    reason = await netns_unavailable_reason(ip=ip)
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def _in_namespace(namespace: str, make: Any) -> Any:
    """``make()`` called on a new thread that entered ``namespace`` first: a socket made
    there belongs to that namespace for good, whichever thread uses it later. The thread
    ends with the call, so no other code ever runs in the namespace by mistake."""
    outcome: dict[str, Any] = {}

    def enter_and_make() -> None:
        try:
            fd = os.open(os.path.join(_NETNS_DIR, namespace), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc().setns(fd, _CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns into {namespace}: {os.strerror(code)}")
            finally:
                os.close(fd)
            outcome["value"] = make()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=enter_and_make, name=f"netns {namespace}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


class NetnsNetwork:
    """``count`` nodes, each in a namespace of its own, on one bridge (module docstring).

    ``async with NetnsNetwork(count) as net`` builds it (NetnsUnavailable if this machine
    cannot, NetnsError if an ``ip`` command fails) and always tears it down on exit.
    ``subnet``: an IPv4 network with room for ``count`` hosts; node i gets host i + 1.
    """

    def __init__(
        self, count: int, *, subnet: str = DEFAULT_SUBNET, ip: str = IP, prefix: str = NAME_PREFIX
    ) -> None:
        if count < 1:
            raise ValueError(f"count: at least one node, got {count}")
        network = ipaddress.IPv4Network(subnet)
        hosts = list(network.hosts())
        if count > len(hosts):
            raise ValueError(f"subnet: {subnet} has {len(hosts)} addresses for {count} nodes")
        self.ip = ip
        self.token = _token()
        self.hub = f"{prefix}-{self.token}-hub"
        self.prefixlen = network.prefixlen
        self.nodes: tuple[NetnsNode, ...] = tuple(
            NetnsNode(
                index=i,
                namespace=f"{prefix}-{self.token}-n{i + 1}",
                address=str(hosts[i]),
                bridge_port=f"n{i + 1}",
                ip=ip,
            )
            for i in range(count)
        )
        self._isolated: set[int] = set()
        self._made: list[str] = []  # namespaces created, deleted in reverse at exit

    def __repr__(self) -> str:
        return f"<NetnsNetwork {self.hub.removesuffix('-hub')} nodes={len(self.nodes)}>"

    async def __aenter__(self) -> NetnsNetwork:
        reason = await netns_unavailable_reason(ip=self.ip)
        if reason is not None:
            raise NetnsUnavailable(reason)
        try:
            await self._build()
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._teardown()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with trio.CancelScope(shield=True):
            await self._teardown()

    async def _build(self) -> None:
        ip, hub = self.ip, self.hub
        await self._add_namespace(hub)
        await _ip(ip, "-n", hub, "link", "set", "lo", "up")
        await _ip(ip, "-n", hub, "link", "add", "br0", "type", "bridge")
        await _ip(ip, "-n", hub, "link", "set", "br0", "up")
        for node in self.nodes:
            ns = node.namespace
            await self._add_namespace(ns)
            await _ip(
                ip, "-n", hub, "link", "add", node.bridge_port, "type", "veth",
                "peer", "name", "eth0", "netns", ns,
            )  # fmt: skip
            await _ip(ip, "-n", hub, "link", "set", node.bridge_port, "master", "br0", "up")
            await _ip(ip, "-n", ns, "link", "set", "lo", "up")
            await _ip(
                ip, "-n", ns, "addr", "add", f"{node.address}/{self.prefixlen}", "dev", "eth0"
            )
            await _ip(ip, "-n", ns, "link", "set", "eth0", "up")

    async def _add_namespace(self, name: str) -> None:
        await _ip(self.ip, "netns", "add", name)
        self._made.append(name)

    async def _teardown(self) -> None:
        """Kill what runs in our namespaces, delete them; every step is tried, the first
        failure is raised at the end."""
        failures: list[str] = []
        for name in reversed(self._made):
            try:
                await self._kill_all(name)
            except (NetnsError, OSError) as exc:
                failures.append(str(exc))
            try:
                await _ip(self.ip, "netns", "del", name)
            except NetnsError as exc:
                failures.append(str(exc))
        self._made.clear()
        if failures:
            raise NetnsError("teardown: " + "; ".join(failures))

    async def _kill_all(self, namespace: str) -> None:
        """SIGKILL every process still in ``namespace`` (they were started there by the
        test: the name is this network's own) and wait until none is left."""
        with trio.move_on_after(KILL_TIMEOUT):
            while True:
                pids = [int(p) for p in (await _ip(self.ip, "netns", "pids", namespace)).split()]
                if not pids:
                    return
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                await trio.sleep(0.05)
        raise NetnsError(f"processes still in {namespace} {KILL_TIMEOUT}s after SIGKILL")

    # -- faults ------------------------------------------------------------------------

    def _node(self, node: NetnsNode | int) -> NetnsNode:
        found = self.nodes[node] if isinstance(node, int) else node
        if found not in self.nodes:
            raise ValueError(f"{found.namespace} is not a node of {self!r}")
        return found

    async def isolate(self, node: NetnsNode | int) -> None:
        """Cut ``node`` off the bridge: no packet between it and any other node, either
        way, until ``heal``. Idempotent."""
        found = self._node(node)
        await _ip(self.ip, "-n", self.hub, "link", "set", found.bridge_port, "down")
        self._isolated.add(found.index)

    async def heal(self, node: NetnsNode | int | None = None) -> None:
        """Put ``node`` (every isolated node when None) back on the bridge. Idempotent."""
        targets = (
            [self._node(node)] if node is not None else [self.nodes[i] for i in self._isolated]
        )
        for found in sorted(targets, key=lambda n: n.index):
            await _ip(self.ip, "-n", self.hub, "link", "set", found.bridge_port, "up")
            self._isolated.discard(found.index)

    def is_isolated(self, node: NetnsNode | int) -> bool:
        return self._node(node).index in self._isolated

    # -- reaching the nodes ------------------------------------------------------------

    def socket(
        self,
        node: NetnsNode | int,
        family: int = stdlib_socket.AF_INET,
        type: int = stdlib_socket.SOCK_STREAM,
    ) -> trio.socket.SocketType:
        """A new Trio socket in ``node``'s namespace (what it binds and reaches is what a
        process in the node would)."""
        found = self._node(node)
        sock = _in_namespace(found.namespace, lambda: stdlib_socket.socket(family, type))
        return trio.socket.from_stdlib_socket(sock)

    async def connect(self, node: NetnsNode | int, host: str, port: int) -> trio.SocketStream:
        """A TCP connection to ``host:port`` made from inside ``node``'s namespace. Raises
        OSError like any connect (it may hang while a partition is in the way: bound it)."""
        sock = self.socket(node)
        try:
            await sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock)

    async def serve_forward(
        self,
        node: NetnsNode | int,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Forward a new port on 127.0.0.1 (host namespace) to ``host:port`` as seen from
        inside ``node``; ``task_status.started("127.0.0.1:P")``. Runs until cancelled.
        A connection that cannot reach the target within CONNECT_TIMEOUT is closed."""
        found = self._node(node)
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        local = listeners[0].socket.getsockname()

        async def handle(client: trio.SocketStream) -> None:
            async with client:
                upstream: trio.SocketStream | None = None
                with trio.move_on_after(CONNECT_TIMEOUT):
                    try:
                        upstream = await self.connect(found, host, port)
                    except OSError:
                        return  # refused or unreachable: the client sees the close
                if upstream is None:
                    return
                async with upstream, trio.open_nursery() as nursery:
                    nursery.start_soon(_pipe, client, upstream, nursery.cancel_scope)
                    nursery.start_soon(_pipe, upstream, client, nursery.cancel_scope)

        task_status.started(f"{local[0]}:{local[1]}")
        await trio.serve_listeners(handle, listeners)

    def node_at(self, address: str) -> NetnsNode | None:
        """The node whose address is ``address`` (None if none is)."""
        return next((n for n in self.nodes if n.address == address), None)

    @asynccontextmanager
    async def open_http_transport(
        self, inner: httpx.AsyncBaseTransport | None = None
    ) -> AsyncIterator[NetnsHttpTransport]:
        """An httpx transport for clients in the host namespace: a request to a node's
        address goes through a port forward into that node (``serve_forward``, started on
        first use of each ``host:port`` and stopped on exit), so it reaches the node even
        while it is isolated; other requests go to ``inner`` unchanged (default: a plain
        ``httpx.AsyncHTTPTransport``). Use as ``httpx.AsyncClient(transport=...)``."""
        body_error: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                transport = NetnsHttpTransport(self, nursery, inner)
                try:
                    yield transport
                except BaseException as exc:
                    body_error = exc
                    raise
                finally:
                    nursery.cancel_scope.cancel()
                    with trio.CancelScope(shield=True):
                        await transport.aclose()
        except BaseExceptionGroup as group:
            # the nursery wraps what the block raised: hand it back as it was raised
            if body_error is not None and list(group.exceptions) == [body_error]:
                raise body_error from None
            raise

    async def run(
        self, node: NetnsNode | int, *command: str, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``command`` in ``node``'s namespace to its end; stdout and stderr captured.
        ``check``: raise CalledProcessError on a non-zero exit."""
        found = self._node(node)
        return await trio.run_process(
            [*found.command_prefix, *command],
            capture_stdout=True,
            capture_stderr=True,
            check=check,
        )


class NetnsHttpTransport(httpx.AsyncBaseTransport):
    """See ``NetnsNetwork.open_http_transport``; not made directly."""

    def __init__(
        self,
        net: NetnsNetwork,
        nursery: trio.Nursery,
        inner: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._net = net
        self._nursery = nursery
        self._inner = inner or httpx.AsyncHTTPTransport()
        self._forwards: dict[tuple[str, int], int] = {}  # (node address, port) -> local port
        self._lock = trio.Lock()

    async def _local_port(self, node: NetnsNode, host: str, port: int) -> int:
        async with self._lock:
            local = self._forwards.get((host, port))
            if local is None:
                where = await self._nursery.start(self._net.serve_forward, node, host, port)
                local = int(where.rsplit(":", 1)[1])
                self._forwards[(host, port)] = local
            return local

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        node = self._net.node_at(url.host)
        if node is not None:
            port = url.port or (443 if url.scheme == "https" else 80)
            local = await self._local_port(node, url.host, port)
            # the Host header stays the node's address: only the connection is rerouted
            request = httpx.Request(
                request.method,
                url.copy_with(host="127.0.0.1", port=local),
                headers=request.headers,
                stream=request.stream,
                extensions=request.extensions,
            )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _pipe(source: trio.SocketStream, sink: trio.SocketStream, both: trio.CancelScope) -> None:
    """Copy until ``source`` ends, then end ``sink``'s sending side; if either side breaks,
    cancel ``both`` directions."""
    try:
        while data := await source.receive_some(FORWARD_BUFFER):
            await sink.send_all(data)
        await sink.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        both.cancel()
