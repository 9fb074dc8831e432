"""``trickle serve``: run one node (Engine + HTTP API) until SIGTERM or Ctrl-C.

Once the API listens, one JSON line goes to stdout, so that scripts and tests can wait for it
and learn the bound port (``--http-addr 127.0.0.1:0`` picks a free one)::

    {"event": "ready", "node": "node1", "http": "http://127.0.0.1:8080",
     "http_addresses": ["http://0.0.0.0:8080"], "data_dir": "/abs/trickle.data",
     "version": "0.1.0", "pid": 4242, "raft": "0.0.0.0:6868", "gossip": "10.0.0.5:8946"}

``http`` is a URL a local client can use (0.0.0.0 is shown as 127.0.0.1); ``http_addresses``
are the bound addresses as the server reports them. ``raft`` is the bound ``host:port`` of
the Raft/RPC listener (``--raft-addr`` or ``--rpc-port``; port 0 shows the port picked); it
is absent for a server without one (one that does not gossip and was given neither). ``gossip`` is the ``host:port`` other nodes reach this
one's gossip at (the advertised host, or the bound one, with the bound port), what their
``--join`` takes; it is absent when gossip does not run (neither ``--bind-addr`` nor
``--join``). Logs go to stderr.

A graceful stop (the first SIGTERM or SIGINT, or ``POST /v1/leave``: ``trickle leave``)
first leaves the gossip cluster, so that the others see this node as "left", not "failed"
(at most ``LEAVE_TIMEOUT`` seconds), then drains the engine and the API.

An agent (no ``--server``) joins by gossip (``--join``), runs what the servers dispatch to
it on its RPC listener (``--rpc-port``, Dkron's 6868 by default, or ``--raft-addr``), and
serves only ``/health`` and ``/metrics`` on ``--http-addr`` (``serve_http`` picks the agent's
app from the engine's config).

A server started with ``--bootstrap-expect N`` prints its ready line once the engine has
started, which is after the cluster formed (or, on a restart, after its stored state was
loaded). Before that, as soon as its gossip listens, it prints a line saying where, so that
the other servers (or a script starting them) can ``--join`` it while it waits::

    {"event": "waiting", "node": "node1", "gossip": "10.0.0.5:8946", "bootstrap_expect": 3,
     "pid": 4242}

(On a restart with a data dir the engine does not wait; the line may still come first,
briefly.) Start the N servers together and read their lines concurrently.

Exit codes: 0 after a graceful stop (SIGTERM, SIGINT); 1 when the node cannot start (port
taken, data dir not writable, store unreadable), fails while running, or gives up joining
(``--retry-max`` attempts and no join address answered); 2 for bad settings.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import click
import trio
from click.core import ParameterSource

from trickle._version import __version__
from trickle.cli.config import (
    DURABILITIES,
    GOSSIP_PROFILES,
    LOG_LEVELS,
    RAFT_DURABILITIES,
    ConfigError,
    ServeSettings,
    ignored_gossip_settings,
    raft_listener_where,
    resolve,
)
from trickle.engine.config import parse_host_port
from trickle.gctuning import tune_gc

logger = logging.getLogger("trickle.cli.serve")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
# click parameter name -> setting name of trickle.cli.config
_FLAG_SETTINGS = {
    "server": "server",
    "data_dir": "data-dir",
    "http_addr": "http-addr",
    "node_name": "node-name",
    "tags": "tags",
    "region": "region",
    "datacenter": "datacenter",
    "log_level": "log-level",
    "max_concurrent": "max-concurrent",
    "cluster_max_running": "cluster-max-running",
    "max_lateness": "max-lateness",
    "launch_spin": "launch-spin",
    "executor_limits": "executor-limits",
    "history_limit": "history-limit",
    "output_limit": "output-limit",
    "durability": "durability",
    "shutdown_grace": "shutdown-grace",
    "raft_addr": "raft-addr",
    "rpc_port": "rpc-port",
    "peers": "peers",
    "raft_durability": "raft-durability",
    "raft_tick": "raft-tick",
    "raft_multiplier": "raft-multiplier",
    "stale_reads": "stale-reads",
    "snapshot_entries": "snapshot-entries",
    "bind_addr": "bind-addr",
    "advertise_addr": "advertise-addr",
    "join": "join",
    "retry_interval": "retry-interval",
    "retry_max": "retry-max",
    "bootstrap_expect": "bootstrap-expect",
    "encrypt": "encrypt",
    "profile": "profile",
}


class StartupError(Exception):
    """The node could not start; the message says why (shown as ``error: ...``, exit 1)."""


@click.command("serve")
@click.option(
    "--server",
    is_flag=True,
    help="Run a server: it schedules jobs, keeps state and serves the HTTP API.  "
    "[env: TRICKLE_SERVER]",
)
@click.option(
    "--config",
    "config",
    metavar="FILE",
    help="TOML config file; keys are the flag names.  [env: TRICKLE_CONFIG]",
)
@click.option(
    "--data-dir",
    metavar="DIR",
    help="Where the node keeps its state.  [default: ./trickle.data; env: TRICKLE_DATA_DIR]",
)
@click.option(
    "--http-addr",
    metavar="HOST:PORT",
    help="Address of the HTTP API; ':8080' listens on all interfaces, port 0 picks "
    "a free port.  [default: :8080; env: TRICKLE_HTTP_ADDR]",
)
@click.option(
    "--node-name",
    metavar="NAME",
    help="This node's name, unique in a cluster.  [default: the host name; env: TRICKLE_NODE_NAME]",
)
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="KEY=VALUE",
    help="A tag of this node, matched by jobs' tags (repeatable; replaces the "
    "config file's tags).  [env: TRICKLE_TAGS=k=v,k2=v2]",
)
@click.option(
    "--region", metavar="NAME", help="Region of this node.  [default: global; env: TRICKLE_REGION]"
)
@click.option(
    "--datacenter",
    metavar="NAME",
    help="Datacenter of this node.  [default: dc1; env: TRICKLE_DATACENTER]",
)
@click.option(
    "--log-level",
    metavar="[" + "|".join(LOG_LEVELS) + "]",
    help="Logging threshold (logs go to stderr).  [default: info; env: TRICKLE_LOG_LEVEL]",
)
@click.option(
    "--max-concurrent",
    metavar="N",
    help="Executions running at once on this node; more wait in a queue "
    "(0: unlimited).  [default: 0; env: TRICKLE_MAX_CONCURRENT]",
)
@click.option(
    "--cluster-max-running",
    metavar="N",
    help="Executions running at once across the cluster, all jobs; fires beyond it are "
    "recorded skipped (0: no cap; the leader's value applies).  "
    "[default: 0; env: TRICKLE_CLUSTER_MAX_RUNNING]",
)
@click.option(
    "--max-lateness",
    metavar="DURATION",
    help="Under overload, a fire the leader reaches this late while the job's next fire "
    "is due too is recorded missed instead of run late, e.g. 30s (0: off; the leader's "
    "value applies).  [default: off; env: TRICKLE_MAX_LATENESS]",
)
@click.option(
    "--launch-spin",
    metavar="DURATION",
    help="A run is launched this much before its instant and starts on it, the event "
    "loop busy-waiting meanwhile (no wake-up delay), e.g. 300us (0: off).  "
    "[default: 300us; env: TRICKLE_LAUNCH_SPIN]",
)
@click.option(
    "--executor-limit",
    "executor_limits",
    multiple=True,
    metavar="EXECUTOR=N",
    help="Executions running at once per executor, e.g. shell=4 (repeatable).  "
    "[env: TRICKLE_EXECUTOR_LIMITS=shell=4,http=8]",
)
@click.option(
    "--history-limit",
    metavar="N",
    help="Executions kept per job.  [default: 100; env: TRICKLE_HISTORY_LIMIT]",
)
@click.option(
    "--output-limit",
    metavar="BYTES",
    help="Bytes of output kept per execution (the last ones).  [default: 256000; "
    "env: TRICKLE_OUTPUT_LIMIT]",
)
@click.option(
    "--durability",
    metavar="[" + "|".join(DURABILITIES) + "]",
    help="SQLite synchronous mode: full survives power loss, normal may lose the "
    "last commits on power loss.  [default: normal; env: TRICKLE_DURABILITY]",
)
@click.option(
    "--shutdown-grace",
    metavar="DURATION",
    help="At SIGTERM/Ctrl-C, stop launching runs and give running executions "
    "this long to finish; a second signal stops at once.  [default: 30s; "
    "env: TRICKLE_SHUTDOWN_GRACE]",
)
@click.option(
    "--raft-addr",
    metavar="HOST:PORT",
    help="Address of this node's Raft/RPC listener; ':6868' listens on all interfaces, "
    "port 0 picks a free port. With --rpc-port too, both must name the same port.  "
    "[default: see --rpc-port; env: TRICKLE_RAFT_ADDR]",
)
@click.option(
    "--rpc-port",
    metavar="PORT",
    help="Port of this node's Raft/RPC listener, on the --bind-addr host (or all "
    "interfaces), as Dkron's; port 0 picks a free port.  [default: 6868 for an agent and a "
    "server that gossips; none for a server without gossip (required with --peer); "
    "env: TRICKLE_RPC_PORT]",
)
@click.option(
    "--peer",
    "peers",
    multiple=True,
    metavar="NAME=HOST:PORT",
    help="Another server of a static cluster: its node name and Raft address "
    "(repeatable; list the same servers on each, itself included or not).  "
    "[env: TRICKLE_PEERS=node2=10.0.0.2:6868,node3=10.0.0.3:6868]",
)
@click.option(
    "--raft-durability",
    metavar="[" + "|".join(RAFT_DURABILITIES) + "]",
    help="fsync: every Raft append is on disk before it is acknowledged; none: never "
    "fsync (a power loss may lose acknowledged writes).  [default: fsync; "
    "env: TRICKLE_RAFT_DURABILITY]",
)
@click.option(
    "--raft-tick",
    metavar="DURATION",
    help="Raft's clock tick, from 1ms to 10s: elections after 10-20 ticks without a "
    "leader, heartbeats every 4.  [default: 25ms; env: TRICKLE_RAFT_TICK]",
)
@click.option(
    "--raft-multiplier",
    metavar="N",
    help="Scales Raft's timing (the tick, so heartbeats and elections) by N, from 1 to 10, "
    "as Dkron's: higher values suit slow or busy machines, and detect a lost leader later.  "
    "[default: 1; env: TRICKLE_RAFT_MULTIPLIER]",
)
@click.option(
    "--stale-reads",
    is_flag=True,
    help="Answer reads from this server's own state without confirming with a quorum "
    "(faster; a follower may be slightly behind).  [default: linearizable reads; "
    "env: TRICKLE_STALE_READS]",
)
@click.option(
    "--snapshot-entries",
    metavar="N",
    help="Applied Raft entries between two snapshots of the state (each lets the log "
    "be compacted), once they carry a quarter of the last snapshot's size.  "
    "[default: 8192; env: TRICKLE_SNAPSHOT_ENTRIES]",
)
@click.option(
    "--bind-addr",
    metavar="HOST[:PORT]",
    help="Address of this node's gossip (cluster membership), UDP and TCP on one port "
    "(Dkron's flag; its port is 8946); ':8946' listens on all interfaces, a host alone "
    "means port 8946, port 0 picks a free port.  [default: none, no gossip; --join alone "
    "listens on :8946; env: TRICKLE_BIND_ADDR]",
)
@click.option(
    "--advertise-addr",
    metavar="HOST[:PORT]",
    help="Address other nodes reach this node's gossip at, when it is not the bound one "
    "(NAT, containers); without a port, the bound port.  [default: the bound address, or "
    "this host's outbound address when bound to all interfaces; env: TRICKLE_ADVERTISE_ADDR]",
)
@click.option(
    "--join",
    "--retry-join",
    "join",
    multiple=True,
    metavar="HOST[:PORT]",
    help="The gossip address of a node of the cluster to join at start (port 8946 if "
    "none), retried every --retry-interval until one answers (repeatable; --retry-join "
    "is the same).  [env: TRICKLE_JOIN=10.0.0.1,10.0.0.2:8946]",
)
@click.option(
    "--retry-interval",
    metavar="DURATION",
    help="Time between two join attempts.  [default: 30s; env: TRICKLE_RETRY_INTERVAL]",
)
@click.option(
    "--retry-max",
    metavar="N",
    help="Join attempts before giving up: the node then stops and exits 1 (0: retry "
    "forever).  [default: 0; env: TRICKLE_RETRY_MAX]",
)
@click.option(
    "--bootstrap-expect",
    metavar="N",
    help="On a server with gossip and no Raft state yet: wait until N servers (all started "
    "with the same N) see each other, then form the cluster with all of them as voters "
    "(see docs/cluster.md).  [default: 0, off; env: TRICKLE_BOOTSTRAP_EXPECT]",
)
@click.option(
    "--encrypt",
    multiple=True,
    metavar="KEY",
    help="Base64 key (16, 24 or 32 bytes; 'trickle keygen' makes one) encrypting gossip; "
    "repeatable for a rotation: the first encrypts, all are accepted.  [default: none, "
    "plaintext; env: TRICKLE_ENCRYPT=key1,key2]",
)
@click.option(
    "--profile",
    metavar="[" + "|".join(GOSSIP_PROFILES) + "]",
    help="Gossip timing: lan (memberlist's defaults), wan (slow, lossy links), local (one "
    "host), fast (quicker failure detection on a healthy LAN, more traffic).  "
    "[default: lan; env: TRICKLE_PROFILE]",
)
@click.pass_context
def serve(ctx: click.Context, /, **params: Any) -> None:
    """Run a trickle node until SIGTERM or Ctrl-C.

    Settings come from flags, then TRICKLE_* environment variables, then the config file,
    then the defaults. When the HTTP API listens, one JSON line {"event": "ready", ...}
    is printed on stdout.
    """
    flags: dict[str, Any] = {"config": params["config"]}
    for param, setting in _FLAG_SETTINGS.items():
        given = ctx.get_parameter_source(param) not in (ParameterSource.DEFAULT, None)
        flags[setting] = params[param] if given else None
    try:
        settings = resolve(flags, os.environ)
    except ConfigError as exc:
        raise click.UsageError(str(exc), ctx=ctx) from None
    with logging_to_stderr(settings.log_level):
        code = run(settings)
    ctx.exit(code)


@contextmanager
def logging_to_stderr(level: str, *, stream: IO[str] | None = None) -> Iterator[None]:
    """Log to stderr (or ``stream``) in a readable one-line format at ``level``, for the
    duration of the block; the root logger is restored afterwards."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def run(settings: ServeSettings, *, stdout: IO[str] | None = None) -> int:
    """Run the node in ``trio.run`` until a stop signal; return the exit code."""
    settings = attrs.evolve(
        settings,
        engine=attrs.evolve(settings.engine, data_dir=_absolute(settings.engine.data_dir)),
    )
    ignored = ignored_gossip_settings(settings)
    if ignored:
        logger.warning(
            "gossip does not run (neither --bind-addr nor --join is given): %s ignored",
            ", ".join(ignored),
        )
    try:
        check_http_addr(settings.http_host, settings.http_port)
        if settings.engine.raft_bind is not None:
            host, port = parse_host_port(settings.engine.raft_bind, field="raft_bind")
            check_http_addr(host, port, flag=raft_listener_where(settings.sources))
        if settings.engine.gossip_bind is not None:
            host, port = parse_host_port(settings.engine.gossip_bind, field="gossip_bind")
            check_http_addr(host, port, flag=_gossip_flag(settings), udp=True)
        check_data_dir(settings.engine.data_dir)
        return trio.run(partial(serve_node, settings, stdout=stdout or sys.stdout))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        logger.info("interrupted while starting")
        return 0
    except StartupError as exc:
        logger.debug("startup failed", exc_info=True)
        click.echo(f"error: {exc}", err=True)
        return 1


def _gossip_flag(settings: ServeSettings) -> str:
    """How a gossip address error names the setting: --bind-addr, or its default."""
    if settings.sources.get("bind-addr", "default") == "default":
        return "--bind-addr's default, used with --join"
    return "--bind-addr"


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else path.expanduser().absolute()


_BIND_ERRORS = {
    errno.EADDRINUSE: "the address is already in use",
    errno.EADDRNOTAVAIL: "the address is not available on this host",
    errno.EACCES: "permission denied",
}


def check_http_addr(host: str, port: int, *, flag: str = "", udp: bool = False) -> None:
    """Fail fast, before the engine opens its store, when ``host:port`` cannot be bound
    (``StartupError``): TCP, and UDP too when ``udp`` (gossip listens on both). Port 0
    always can. The HTTP server (or the Raft or gossip listener) binds for real later; a
    port taken in between is still reported, as the server's own bind error. ``flag`` is
    named after the address in the message (``--raft-addr``)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = _format_hostport(host, port) + (f" ({flag})" if flag else "")
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
            probe.bind((host, port))
        if udp:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.bind((host, port))
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {where}: unknown host ({exc.strerror})") from None
    except OSError as exc:
        reason = _BIND_ERRORS.get(exc.errno or 0, exc.strerror or str(exc))
        raise StartupError(f"cannot listen on {where}: {reason}") from None


def check_data_dir(path: Path | None) -> None:
    """Create ``path`` if missing and prove it writable; ``StartupError`` if not."""
    if path is None:
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".trickle-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except FileExistsError:
        raise StartupError(f"data dir {path} exists and is not a directory") from None
    except OSError as exc:
        raise StartupError(f"data dir {path} is not writable: {exc.strerror or exc}") from None


async def serve_node(settings: ServeSettings, *, stdout: IO[str]) -> int:
    """Start the Engine and the HTTP API, print the ready line, wait for a stop signal (or
    ``POST /v1/leave``).

    On SIGTERM/SIGINT (or ``POST /v1/leave``) the node leaves the cluster, the engine
    drains, the API stops taking requests and lets those in flight finish (for at most
    ``HTTP_STOP_TIMEOUT`` seconds), then the engine is cancelled. Returns 0 after a
    graceful stop; raises ``StartupError`` when a part cannot start or stops on its own.
    """
    from trickle.engine._engine import Engine
    from trickle.http.app import serve_http

    engine = Engine(settings.engine)
    stop = _Stop(engine=engine, grace=settings.shutdown_grace)
    raft_bind = settings.engine.raft_bind
    gossip_bind = settings.engine.gossip_bind
    # what a bind error while starting is about: the Raft or the gossip listener (told
    # apart by where it was raised), then the HTTP API
    binding = _Binding(
        raft=None
        if raft_bind is None
        else f"{raft_bind} ({raft_listener_where(settings.sources)})",
        gossip=None if gossip_bind is None else f"{gossip_bind} ({_gossip_flag(settings)})",
    )
    try:
        async with trio.open_nursery() as nursery:
            stop.scope = nursery.cancel_scope
            stop.nursery = nursery
            await nursery.start(_watch_signals, stop, nursery)
            announced = _Announced()
            if settings.engine.bootstrap_expect and settings.engine.gossip_enabled:
                nursery.start_soon(_announce_waiting, settings, engine, announced, stdout)
            logger.info(
                "starting node %s (data in %s)", settings.engine.node_name, settings.engine.data_dir
            )
            await nursery.start(partial(_supervised, "the engine", engine.run, stop))
            # The loaded jobs live as long as the process: keep them out of the collector's
            # full passes, and let each fire's objects die young (trickle.gctuning).
            tune_gc()
            where = _format_hostport(settings.http_host, settings.http_port)
            binding = _Binding(http=where)
            # an agent's HTTP app serves only /health and /metrics (serve_http picks it)
            surface = "HTTP API" if settings.engine.server else "agent's /health and /metrics"
            http = partial(
                serve_http,
                engine,
                host=settings.http_host,
                port=settings.http_port,
                shutdown_trigger=stop.http_stop.wait,
                stop=stop.leave_and_stop,
            )
            urls = await nursery.start(
                partial(
                    _supervised,
                    f"the {surface} on {where}",
                    http,
                    stop,
                    done=stop.http_done,
                )
            )
            stop.http_running = True
            announced.ready = True
            line = ready_line(
                settings, urls, raft=engine.raft_address, gossip=engine.gossip_address
            )
            stdout.write(json.dumps(line) + "\n")
            stdout.flush()
            logger.info("ready: node %s, %s at %s", line["node"], surface, line["http"])
            if "gossip" in line:
                logger.info("gossip at %s (other nodes --join it)", line["gossip"])
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise StartupError(_explain(exc, binding)) from exc
    logger.info("stopped (%s)", stop.reason or "all tasks ended")
    return 0


WAITING_POLL = 0.01  # seconds between two looks at whether a waiting server's gossip listens


@attrs.define(eq=False)
class _Announced:
    """Whether the ready line was printed (a waiting line must not follow it)."""

    ready: bool = False


async def _announce_waiting(
    settings: ServeSettings, engine: Any, announced: _Announced, stdout: IO[str]
) -> None:
    """Once gossip listens, print the waiting line (module docstring), unless the engine
    is ready already; the address is what the other servers --join."""
    while True:
        if announced.ready or engine.running:
            return
        address = engine.gossip_address
        if address is not None:
            break
        await trio.sleep(WAITING_POLL)
    line = {
        "event": "waiting",
        "node": settings.engine.node_name,
        "gossip": _format_hostport(*address),
        "bootstrap_expect": settings.engine.bootstrap_expect,
        "pid": os.getpid(),
    }
    stdout.write(json.dumps(line) + "\n")
    stdout.flush()
    logger.info(
        "waiting for %d servers to form the cluster (--bootstrap-expect); gossip at %s "
        "(the other servers --join it)",
        settings.engine.bootstrap_expect,
        line["gossip"],
    )


HTTP_STOP_TIMEOUT = 5.0  # seconds the API gets to finish requests in flight at a stop
LEAVE_TIMEOUT = 5.0  # seconds a stop waits for the gossip leave to spread (as Dkron)
LEAVE_REASON = "asked to leave by POST /v1/leave"


@attrs.define(eq=False)
class _Stop:
    """The node's stop: why (``None`` while running), and the HTTP API's graceful end."""

    engine: Any = None
    grace: float = 0.0
    reason: str | None = None
    scope: trio.CancelScope | None = None
    nursery: trio.Nursery | None = None
    http_running: bool = False
    http_stop: trio.Event = attrs.field(factory=trio.Event)
    http_done: trio.Event = attrs.field(factory=trio.Event)

    async def stop(self, reason: str) -> None:
        """Leave the gossip cluster (if gossip runs; bounded by ``LEAVE_TIMEOUT``), drain
        the engine (no new runs; running ones get ``grace`` seconds), stop the API
        gracefully (if it runs; bounded by ``HTTP_STOP_TIMEOUT``), then cancel everything."""
        self.reason = reason
        logger.info("%s, stopping", reason)
        await self.leave()
        if self.engine is not None and self.engine.running:
            busy = len(self.engine.busy())
            if busy:
                logger.info("waiting up to %.0fs for %d running executions", self.grace, busy)
            if not await self.engine.drain(self.grace):
                logger.warning(
                    "%d executions still running are stopped now; they are "
                    "recorded as failed at the next start",
                    len(self.engine.busy()),
                )
        self.http_stop.set()
        if self.http_running:
            with trio.move_on_after(HTTP_STOP_TIMEOUT):
                await self.http_done.wait()
        self.cancel()

    async def leave_and_stop(self) -> None:
        """``POST /v1/leave``'s action: start the graceful stop (which leaves the cluster
        first) in the node's nursery and return at once, so that the HTTP app's shutdown,
        part of the stop, does not cancel it. Nothing if a stop is already under way."""
        if self.reason is not None or self.nursery is None:
            return
        self.reason = LEAVE_REASON
        self.nursery.start_soon(self.stop, LEAVE_REASON)

    async def leave(self) -> None:
        """Tell the cluster this node leaves, so that the others mark it "left" rather
        than suspect it and declare it failed. Never fails the stop: a leave that does
        not finish in time, or cannot be made, is logged and the stop goes on."""
        from trickle.errors import TrickleError

        engine = self.engine
        if engine is None or not engine.running or engine.gossip_address is None:
            return
        logger.info("leaving the cluster")
        left = False
        try:
            with trio.move_on_after(LEAVE_TIMEOUT + 1.0):  # leave() bounds itself; belt
                left = await engine.leave(LEAVE_TIMEOUT)
        except TrickleError as exc:
            logger.warning("could not leave the cluster: %s", exc.message)
            return
        if left:
            logger.info("left the cluster")
        else:
            logger.warning(
                "the leave was not spread within %.0fs; other nodes may see this one as "
                "failed rather than left",
                LEAVE_TIMEOUT,
            )

    def cancel(self) -> None:
        assert self.scope is not None
        self.scope.cancel()


async def _watch_signals(
    stop: _Stop,
    nursery: trio.Nursery,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The first SIGTERM/SIGINT stops the node gracefully; a second one stops it at once.

    Signals reach only the main thread: elsewhere (tests, embedding) the node stops when
    its caller cancels it."""
    if threading.current_thread() is not threading.main_thread():
        task_status.started()
        return
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if stop.reason is None:
                nursery.start_soon(stop.stop, f"received {name}")
            else:
                logger.warning("received %s again, stopping now", name)
                stop.cancel()


async def _supervised(
    what: str,
    fn: Callable[..., Awaitable[Any]],
    stop: _Stop,
    *,
    done: trio.Event | None = None,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a long-running part; if it returns by itself, that is a failure of the node."""
    try:
        await fn(task_status=task_status)
    finally:
        if done is not None:
            done.set()
    if stop.reason is None:
        raise StartupError(f"{what} stopped unexpectedly")


def ready_line(
    settings: ServeSettings,
    urls: Any,
    *,
    raft: tuple[str, int] | None = None,
    gossip: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """The JSON object printed once the API listens (see the module docstring); ``raft``
    is the bound Raft listener (``Engine.raft_address``), ``gossip`` this node's gossip
    address (``Engine.gossip_address``); each None (and left out) when there is none."""
    bound = [str(u) for u in (urls or [])]
    if bound:
        http = connectable_url(bound[0])
    else:  # a server that did not report its addresses: say what was asked for
        http = connectable_url(f"http://{_format_hostport(settings.http_host, settings.http_port)}")
    data_dir = settings.engine.data_dir
    line: dict[str, Any] = {
        "event": "ready",
        "node": settings.engine.node_name,
        "http": http,
        "http_addresses": bound,
        "data_dir": None if data_dir is None else str(data_dir),
        "version": __version__,
        "pid": os.getpid(),
    }
    if raft is not None:
        line["raft"] = _format_hostport(*raft)
    if gossip is not None:
        line["gossip"] = _format_hostport(*gossip)
    return line


def connectable_url(url: str) -> str:
    """A bound URL a local client can connect to: 0.0.0.0 -> 127.0.0.1, [::] -> [::1]."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    replacement = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host)
    if replacement is None:
        return url
    netloc = _format_hostport(replacement, parts.port) if parts.port is not None else replacement
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _format_hostport(host: str, port: int | None) -> str:
    host = f"[{host}]" if ":" in host else host
    return host if port is None else f"{host}:{port}"


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


@attrs.frozen
class _Binding:
    """What a bind error while starting is about: the Raft and gossip listeners (the
    engine binds both), or the HTTP API; each a ``host:port (flag)`` text or None."""

    raft: str | None = None
    gossip: str | None = None
    http: str | None = None

    def of(self, error: OSError) -> str:
        """The address ``error`` was raised binding: gossip's if raised in trickle.gossip."""
        if self.gossip is not None and (self.raft is None or _raised_in(error, "trickle.gossip.")):
            return self.gossip
        return self.raft or self.http or "its address"


def _raised_in(error: BaseException, package: str) -> bool:
    tb = error.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(package):
            return True
        tb = tb.tb_next
    return False


def _explain(exc: BaseException, binding: _Binding) -> str:
    """One line saying why the node could not start or stopped; ``binding`` names the
    addresses being bound when it failed (the Raft and gossip listeners, then the API)."""
    from trickle.errors import JoinFailed, TrickleError

    for leaf in _leaves(exc):
        if isinstance(leaf, OSError) and leaf.errno in _BIND_ERRORS and not leaf.filename:
            return f"cannot listen on {binding.of(leaf)}: {_BIND_ERRORS[leaf.errno]}"
        if isinstance(leaf, OSError) and isinstance(leaf.strerror, str) and leaf.filename:
            return f"{leaf.filename}: {leaf.strerror}"
    for leaf in _leaves(exc):
        if isinstance(leaf, StartupError):
            return str(leaf)
        if isinstance(leaf, JoinFailed):
            return f"{leaf.message}; gave up (--retry-max)"
        if isinstance(leaf, TrickleError):
            return f"the engine failed: {leaf.message}"
    leaf = _leaves(exc)[0]
    logger.error("node failed", exc_info=exc)
    return f"the node failed: {type(leaf).__name__}: {leaf}"
