"""Real ``trickle serve`` processes for tests and benchmarks: a cluster of servers and agents.

    async with Cluster(tmp_path) as cluster:
        servers = await cluster.start_servers(3)                # --bootstrap-expect 3
        agent = await cluster.start_agent("a1", tags={"pool": "a1"})
        leader = await cluster.leader()
        await leader.request("POST", "/v1/jobs", json=job)
        leader.kill()                                            # SIGKILL by default
        await leader.wait()
        await leader.restart()                                   # same data dir and ports
        executions = await (await cluster.leader()).get("/v1/jobs/j/executions")

Every node binds port 0 everywhere (HTTP, Raft/RPC, gossip) on its host (127.0.0.1 by
default), and the harness learns the bound addresses from its JSON ready line
(``trickle/cli/serve.py``). Each node's stderr goes to ``<workdir>/<name>.stderr.log``
(appended across restarts, with a marker line per start). When the ``async with`` block
raises, the exception gets a note (PEP 678) describing every node and the tail of its
stderr. On leaving the block every process still running is killed (SIGKILL) and waited
for, and so are the processes its jobs had started (found with psutil when the node is
killed or at the end): nothing is left behind, whether the test passed or not.

``command_prefix`` (per cluster or per node) is put before the command, so that a node
runs e.g. inside a network namespace: ``["ip", "netns", "exec", "ns1"]``; ``host`` is
then that namespace's address. ``program`` replaces ``python -m trickle serve`` with
another command taking the same flags (a benchmark's node with extra executors).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import psutil
import trio

logger = logging.getLogger("trickle.testing.processes")

DEFAULT_PROGRAM: tuple[str, ...] = (sys.executable, "-m", "trickle", "serve")
START_TIMEOUT = 60.0  # seconds for a node to print its ready line (a slow, shared machine)
STOP_TIMEOUT = 15.0  # seconds for a graceful stop
REQUEST_TIMEOUT = 10.0  # seconds for one API request
POLL = 0.1  # seconds between two looks while polling
STDERR_TAIL = 40  # lines of each node's stderr shown in a failure

T = TypeVar("T")


class NodeFailed(AssertionError):
    """A node did not start (it exited, or printed no ready line in time), or did not stop
    in time; the message says which, with the tail of its stderr."""


class Node:
    """One ``trickle serve`` process of a :class:`Cluster` (and its later restarts).

    Created by ``Cluster.start_node`` / ``start_servers`` / ``start_agent``, never
    directly. ``ready`` is the latest ready line (a dict; see ``trickle/cli/serve.py``);
    ``http``, ``raft`` and ``gossip`` are the addresses it gave (the same across a restart
    when the ports could be bound again)."""

    def __init__(
        self,
        cluster: Cluster,
        name: str,
        *,
        server: bool,
        data_dir: Path,
        host: str,
        args: Sequence[str],
        command_prefix: Sequence[str],
        program: Sequence[str],
        gossip: bool = True,
        name_flag: bool = True,
    ) -> None:
        self.cluster = cluster
        self.name = name
        self.server = server
        self.data_dir = data_dir
        self.host = host
        self.args = tuple(args)
        self.command_prefix = tuple(command_prefix)
        self.program = tuple(program)
        self.gossips = gossip
        self.name_flag = name_flag
        self.stderr_path = cluster.workdir / f"{name}.stderr.log"
        self.ready: dict[str, Any] = {}
        self.waiting: dict[str, Any] | None = None
        self.process: trio.Process | None = None
        self.starts = 0
        # ports to bind at the next start: 0 at first, the bound ones afterwards
        self._ports = {"http": 0, "raft": 0, "gossip": 0}
        self._buffer = bytearray()
        self._orphans: list[psutil.Process] = []  # children of killed lives, reaped at the end

    def __repr__(self) -> str:
        return f"<Node {self.name} {'server' if self.server else 'agent'} {self.state()}>"

    # -- what it is --------------------------------------------------------------------

    @property
    def http(self) -> str:
        """The base URL of its HTTP API (an agent serves only /health and /metrics)."""
        return str(self.ready["http"])

    @property
    def raft(self) -> str:
        """``host:port`` of its Raft/RPC listener."""
        return str(self.ready["raft"])

    @property
    def gossip(self) -> str:
        """``host:port`` of its gossip, what other nodes ``--join``."""
        if self.ready.get("gossip"):
            return str(self.ready["gossip"])
        assert self.waiting is not None, f"{self.name} has not printed its gossip address"
        return str(self.waiting["gossip"])

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def running(self) -> bool:
        """Whether its current process has not exited (as far as Trio has seen)."""
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code of its latest process (negative: killed by that signal), or None
        while it runs."""
        return None if self.process is None else self.process.poll()

    def state(self) -> str:
        if self.process is None:
            return "not started"
        code = self.process.poll()
        if code is None:
            return f"running (pid {self.process.pid})"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exited {code}"

    def stderr(self, tail: int | None = None) -> str:
        """Its stderr (the log) across every start, or the last ``tail`` lines."""
        try:
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        if tail is None:
            return text
        return "\n".join(text.splitlines()[-tail:])

    def describe(self, tail: int = STDERR_TAIL) -> str:
        """A few lines for a failure message: state, addresses, the tail of stderr."""
        role = "server" if self.server else "agent"
        where = f" http={self.ready.get('http')} raft={self.ready.get('raft')}" + (
            f" gossip={self.ready.get('gossip')}" if self.ready else ""
        )
        lines = self.stderr(tail).splitlines()
        body = "\n".join(f"    {line}" for line in lines) or "    (no stderr)"
        return f"--- {self.name} ({role}, {self.state()}){where}; stderr tail:\n{body}"

    # -- its API -----------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        timeout: float = REQUEST_TIMEOUT,  # noqa: ASYNC109
        **kwargs: Any,
    ) -> httpx.Response:
        """One HTTP request to its API (``path`` like ``/v1/jobs``; ``json=``, ``params=``
        as httpx takes them). Returns the response whatever its status; raises httpx's
        errors when the node does not answer within ``timeout`` seconds."""
        url = self.http + path
        return await self.cluster.client.request(method, url, timeout=timeout, **kwargs)

    async def get(self, path: str, *, timeout: float = REQUEST_TIMEOUT, **params: Any) -> Any:  # noqa: ASYNC109
        """``GET path`` decoded from JSON; ``AssertionError`` (with the body) unless 200."""
        response = await self.request("GET", path, timeout=timeout, params=params or None)
        if response.status_code != 200:
            raise AssertionError(
                f"GET {path} on {self.name}: {response.status_code} {response.text[:500]}"
            )
        return response.json()

    async def is_leader(self) -> bool:
        """Whether it answers ``/v1/isleader`` with 200 (False if it does not answer)."""
        if not self.server or not self.running:
            return False
        try:
            response = await self.request("GET", "/v1/isleader", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    # -- its life ----------------------------------------------------------------------

    def kill(self, signum: int = signal.SIGKILL) -> None:
        """Send ``signum`` to the node's process (and to the pid of its ready line, if a
        ``command_prefix`` wrapper made them differ). With SIGKILL, the processes its jobs
        started are remembered and killed when the cluster is left (a node killed -9
        leaves them running, as a crash would; its next start kills them itself).
        Nothing if it is not running."""
        if not self.running:
            return
        assert self.process is not None
        pids = {self.process.pid}
        if isinstance(self.ready.get("pid"), int):
            pids.add(self.ready["pid"])
        if signum == signal.SIGKILL:
            for pid in pids:
                self._orphans.extend(_descendants(pid))
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    async def wait(self, timeout: float = STOP_TIMEOUT) -> int:  # noqa: ASYNC109
        """Wait for the process to exit; its exit code (negative: the signal that killed
        it). ``NodeFailed`` after ``timeout`` seconds."""
        assert self.process is not None, f"{self.name} was never started"
        with trio.move_on_after(timeout):
            return await self.process.wait()
        raise NodeFailed(f"{self.name} did not exit within {timeout}s\n{self.describe()}")

    async def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:  # noqa: ASYNC109
        """A graceful stop: send ``signum`` (SIGTERM) and wait for the exit code."""
        self.kill(signum)
        return await self.wait(timeout)

    async def restart(
        self,
        *,
        join: Sequence[str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        same_ports: bool = True,
    ) -> None:
        """Start the node again on its data dir, with the same flags, once its previous
        process has exited (kill or stop it first). ``same_ports``: bind the ports it had
        (HTTP, Raft, gossip), so that the others find it where it was; a port taken
        meanwhile falls back to a new one (port 0) with a warning. ``join``: gossip
        addresses to ``--join``; by default those of the cluster's other running nodes
        (none for a node without gossip).
        Returns once the new ready line is read."""
        if self.running:
            raise RuntimeError(f"{self.name} is still running: kill or stop it first")
        if self.process is not None:
            await self._close()
        if not same_ports:
            self._ports = dict.fromkeys(self._ports, 0)
        if join is None:
            others = [n for n in self.cluster.nodes.values() if n is not self and n.running]
            join = [n.gossip for n in others if n.gossips] if self.gossips else []
        try:
            await self._start(join=join, timeout=timeout)
        except NodeFailed:
            if not same_ports or "already in use" not in self.stderr(5):
                raise
            logger.warning("%s: a port it had is taken; restarting on new ports", self.name)
            await self._close()
            self._ports = dict.fromkeys(self._ports, 0)
            await self._start(join=join, timeout=timeout)

    def command(self, join: Sequence[str] = ()) -> list[str]:
        """The command line of its next start."""
        host = self.host
        cmd = [*self.command_prefix, *self.program, *(["--server"] if self.server else [])]
        if self.name_flag:
            cmd += ["--node-name", self.name]
        cmd += [
            "--data-dir",
            str(self.data_dir),
            "--http-addr",
            _host_port(host, self._ports["http"]),
        ]
        if self.gossips:
            cmd += [
                "--raft-addr",
                _host_port(host, self._ports["raft"]),
                "--bind-addr",
                _host_port(host, self._ports["gossip"]),
            ]
            if self.cluster.profile is not None:
                cmd += ["--profile", self.cluster.profile]
        for address in join:
            cmd += ["--join", address]
        return cmd + list(self.args)

    async def _start(
        self,
        *,
        join: Sequence[str],
        timeout: float | None = None,  # noqa: ASYNC109
        wait_ready: bool = True,
    ) -> None:
        """Start the process (and read its lines up to the ready line if ``wait_ready``)."""
        self.starts += 1
        command = self.command(join)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.stderr_path.open("ab") as stderr:
            marker = f"=== trickle.testing.processes: start {self.starts}: {_shell(command)}\n"
            stderr.write(marker.encode())
            stderr.flush()
            self.ready = {}
            self.waiting = None
            self._buffer = bytearray()
            self.process = await trio.lowlevel.open_process(
                command,
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                env=self.cluster.env,
                cwd=self.cluster.workdir,
            )
        if wait_ready:
            await self.read_ready(timeout)

    async def read_waiting(self, timeout: float | None = None) -> dict[str, Any]:  # noqa: ASYNC109
        """Read lines until the waiting line of a ``--bootstrap-expect`` server (or its
        ready line, on a restart that does not wait); returns that line."""
        line = await self._next_line(timeout)
        if line.get("event") == "waiting":
            self.waiting = line
        else:
            self._take_ready(line)
        return line

    async def read_ready(self, timeout: float | None = None) -> dict[str, Any]:  # noqa: ASYNC109
        """Read lines up to the ready line (skipping a waiting line) and remember it;
        ``NodeFailed`` if the process exits first or ``timeout`` (the cluster's
        ``start_timeout``) passes. Nothing to read if the ready line was read already."""
        if self.ready:
            return self.ready
        while True:
            line = await self._next_line(timeout)
            if line.get("event") == "waiting":
                self.waiting = line
                continue
            self._take_ready(line)
            return line

    def _take_ready(self, line: dict[str, Any]) -> None:
        if line.get("event") != "ready":
            raise NodeFailed(f"{self.name} printed {line!r}, not a ready line\n{self.describe()}")
        self.ready = line
        for key in ("http", "raft", "gossip"):
            if line.get(key):
                self._ports[key] = int(str(line[key]).rsplit(":", 1)[1].strip("/"))

    async def _next_line(self, timeout: float | None) -> dict[str, Any]:  # noqa: ASYNC109
        assert self.process is not None and self.process.stdout is not None
        limit = self.cluster.start_timeout if timeout is None else timeout
        with trio.move_on_after(limit):
            while b"\n" not in self._buffer:
                chunk = await self.process.stdout.receive_some(4096)
                if not chunk:
                    code = await self.process.wait()
                    raise NodeFailed(
                        f"{self.name} exited ({code}) before its ready line\n{self.describe()}"
                    )
                self._buffer += chunk
            line, _, rest = bytes(self._buffer).partition(b"\n")
            self._buffer = bytearray(rest)
            try:
                decoded: dict[str, Any] = json.loads(line)
            except ValueError:
                raise NodeFailed(
                    f"{self.name} printed {line!r} on stdout, not JSON\n{self.describe()}"
                ) from None
            return decoded
        raise NodeFailed(f"{self.name} printed no ready line within {limit}s\n{self.describe()}")

    async def _close(self) -> None:
        """Kill the process if it runs, wait for it, close its stdout; never raises."""
        process = self.process
        if process is None:
            return
        with trio.CancelScope(shield=True):
            if process.poll() is None:
                self.kill(signal.SIGKILL)
                with trio.move_on_after(STOP_TIMEOUT):
                    await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()

    def _reap_orphans(self) -> None:
        for child in self._orphans:
            try:
                child.kill()
            except psutil.Error:
                pass
        self._orphans.clear()


class Cluster:
    """An async context manager holding real ``trickle serve`` processes under ``workdir``.

    ``env``: variables added to the environment (every ``TRICKLE_*`` variable of this
    process is removed, so only the flags count). ``profile``: the gossip ``--profile``
    given to every node (``local`` suits one host; None gives none). ``host``, ``program``
    and ``command_prefix`` are defaults for every node (see the module docstring).
    ``start_timeout`` bounds each wait for a ready line. ``transport``: an httpx transport
    for the nodes' ``request`` (e.g. one that reaches nodes inside network namespaces)."""

    def __init__(
        self,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        program: Sequence[str] = DEFAULT_PROGRAM,
        command_prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        profile: str | None = "local",
        start_timeout: float = START_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.transport = transport
        self.host = host
        self.program = tuple(program)
        self.command_prefix = tuple(command_prefix)
        self.profile = profile
        self.start_timeout = start_timeout
        base = {k: v for k, v in os.environ.items() if not k.startswith("TRICKLE_")}
        self.env = {**base, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.nodes: dict[str, Node] = {}
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        """The HTTP client shared by the nodes' ``request`` (open inside the block)."""
        if self._client is None:
            raise RuntimeError("use the Cluster inside `async with`")
        return self._client

    async def __aenter__(self) -> Cluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._client = httpx.AsyncClient(transport=self.transport)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            # a Cancelled too: a fail_after around the block shows it as the TooSlowError's
            # context, with this note
            exc.add_note(self.describe())
        with trio.CancelScope(shield=True):
            for node in self.nodes.values():
                if node.running:
                    node.kill(signal.SIGKILL)
            for node in self.nodes.values():
                await node._close()
                node._reap_orphans()
            if self._client is not None:
                await self._client.aclose()
                self._client = None

    def describe(self, tail: int = STDERR_TAIL) -> str:
        """Every node's state, addresses and stderr tail (what a failure shows)."""
        if not self.nodes:
            return "trickle.testing.processes: no node was started"
        parts = [node.describe(tail) for node in self.nodes.values()]
        return "trickle.testing.processes: the nodes\n" + "\n".join(parts)

    # -- starting ----------------------------------------------------------------------

    def add_node(
        self,
        name: str,
        *,
        server: bool,
        args: Sequence[str] = (),
        host: str | None = None,
        command_prefix: Sequence[str] | None = None,
        program: Sequence[str] | None = None,
        data_dir: Path | None = None,
        gossip: bool = True,
        name_flag: bool = True,
    ) -> Node:
        """Declare a node without starting it (``start_node`` does both). Its data dir is
        ``<workdir>/<name>`` unless given; ``args`` are extra flags of every start.
        ``gossip=False``: no ``--raft-addr``, ``--bind-addr`` nor ``--profile`` (a server
        alone, without gossip nor Raft listener). ``name_flag=False``: no ``--node-name``
        (the name comes from the environment or a config file; ``name`` still names the
        node here)."""
        if name in self.nodes:
            raise ValueError(f"a node named {name!r} exists already")
        node = Node(
            self,
            name,
            server=server,
            data_dir=data_dir or self.workdir / name,
            host=host or self.host,
            args=args,
            command_prefix=self.command_prefix if command_prefix is None else command_prefix,
            program=program or self.program,
            gossip=gossip,
            name_flag=name_flag,
        )
        self.nodes[name] = node
        return node

    async def start_node(
        self,
        name: str,
        *,
        server: bool,
        join: Sequence[str] = (),
        args: Sequence[str] = (),
        host: str | None = None,
        command_prefix: Sequence[str] | None = None,
        program: Sequence[str] | None = None,
        data_dir: Path | None = None,
        gossip: bool = True,
        name_flag: bool = True,
        wait_ready: bool = True,
    ) -> Node:
        """Start one node (``--server`` if ``server``), ``--join`` the given gossip
        addresses; returns once its ready line is read (or, ``wait_ready=False``, at once:
        then call ``read_waiting`` / ``read_ready``, or ``wait`` for an exit). The other
        arguments are ``add_node``'s."""
        node = self.add_node(
            name, server=server, args=args, host=host, command_prefix=command_prefix,
            program=program, data_dir=data_dir, gossip=gossip, name_flag=name_flag,
        )  # fmt: skip
        await node._start(join=join, wait_ready=wait_ready)
        return node

    async def start_servers(
        self,
        names: int | Sequence[str],
        *,
        bootstrap_expect: int | None = None,
        args: Sequence[str] = (),
        hosts: Sequence[str] | None = None,
        command_prefixes: Sequence[Sequence[str]] | None = None,
    ) -> list[Node]:
        """Start servers that form one cluster with ``--bootstrap-expect`` (by default the
        number of servers): the first one's waiting line gives its gossip address, the
        others ``--join`` it, and all ready lines are read concurrently. ``names``: a count
        (``s1``, ``s2``...) or the names. ``hosts`` / ``command_prefixes``: one per server
        (network namespaces). Returns the servers in order, all ready (the cluster formed
        and has a leader or is electing one: use ``leader()``)."""
        if isinstance(names, int):
            names = [f"s{i}" for i in range(1, names + 1)]
        names = list(names)
        expect = len(names) if bootstrap_expect is None else bootstrap_expect
        flags = [*(["--bootstrap-expect", str(expect)] if expect else []), *args]

        def where(i: int) -> dict[str, Any]:
            return {
                "host": None if hosts is None else hosts[i],
                "command_prefix": None if command_prefixes is None else command_prefixes[i],
            }

        first = await self.start_node(
            names[0], server=True, args=flags, wait_ready=False, **where(0)
        )
        line = await first.read_waiting()
        servers = [first]
        for i, name in enumerate(names[1:], start=1):
            node = await self.start_node(
                name, server=True, join=[first.gossip], args=flags, wait_ready=False, **where(i)
            )
            servers.append(node)
        async with trio.open_nursery() as nursery:
            for node in servers:
                if node is not first or line.get("event") != "ready":
                    nursery.start_soon(node.read_ready)
        return servers

    async def start_agent(
        self,
        name: str,
        *,
        tags: Mapping[str, str] | None = None,
        join: Sequence[str] | None = None,
        args: Sequence[str] = (),
        host: str | None = None,
        command_prefix: Sequence[str] | None = None,
    ) -> Node:
        """Start an agent with ``--tag k=v`` for each of ``tags``, joining ``join`` (by
        default every running server's gossip address); returns once it is ready."""
        if join is None:
            join = [n.gossip for n in self.servers() if n.running and n.gossips]
        tag_flags = [flag for k, v in (tags or {}).items() for flag in ("--tag", f"{k}={v}")]
        return await self.start_node(
            name,
            server=False,
            join=join,
            args=[*tag_flags, *args],
            host=host,
            command_prefix=command_prefix,
        )

    # -- looking at it -----------------------------------------------------------------

    def servers(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.server]

    def agents(self) -> list[Node]:
        return [n for n in self.nodes.values() if not n.server]

    def running(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.running]

    async def leader(self, timeout: float = 30.0, *, among: Sequence[Node] | None = None) -> Node:  # noqa: ASYNC109
        """The running server that answers ``/v1/isleader`` with 200 and that every other
        running server (of ``among``, default all) names in ``/v1/leader``; polled until
        they agree (``AssertionError`` after ``timeout`` seconds)."""

        async def agreed() -> Node | None:
            candidates = [n for n in (among or self.servers()) if n.running]
            names: set[str] = set()
            for node in candidates:
                try:
                    response = await node.request("GET", "/v1/leader", timeout=2.0)
                except httpx.HTTPError:
                    return None
                if response.status_code != 200:
                    return None
                names.add(str(response.json().get("Name")))
            if len(names) != 1:
                return None
            leader = self.nodes.get(names.pop())
            if leader is None or leader not in candidates or not await leader.is_leader():
                return None
            return leader

        return await self.wait_for(agreed, timeout=timeout, what="one leader all servers agree on")

    async def wait_for(
        self,
        check: Callable[[], Awaitable[T | None]],
        *,
        timeout: float,  # noqa: ASYNC109
        what: str,
        interval: float = POLL,
    ) -> T:
        """Call ``check`` every ``interval`` seconds until it returns something other than
        None or False, and return that; ``AssertionError`` naming ``what`` (with the last
        value seen) after ``timeout`` seconds. For state of other processes, which cannot
        be awaited otherwise."""
        last: Any = None
        with trio.move_on_after(timeout):
            while True:
                last = await check()
                if last is not None and last is not False:
                    return last  # type: ignore[no-any-return]
                await trio.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _shell(command: Sequence[str]) -> str:
    import shlex

    return " ".join(shlex.quote(part) for part in command)
