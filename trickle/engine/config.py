"""Engine configuration: one frozen value with documented defaults."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import attrs

from trickle.engine.executors.base import DEFAULT_OUTPUT_LIMIT
from trickle.errors import ValidationError

DEFAULT_LAUNCH_SPIN = 0.0003  # seconds: see EngineConfig.launch_spin
MAX_LAUNCH_SPIN = 0.005
DEFAULT_DATA_DIR = Path("trickle.data")
DEFAULT_HISTORY_LIMIT = 100  # execution records kept per job (Dkron: 100, fixed)
DEFAULT_SUBSCRIBER_BUFFER = 1000  # events buffered per subscriber before it lags
DEFAULT_RAFT_TICK = 0.025  # seconds per Raft tick
DEFAULT_SNAPSHOT_ENTRIES = 8192  # applied entries between state snapshots
DEFAULT_JOIN_RETRY_INTERVAL = 30.0  # seconds between gossip join attempts (Dkron's)


def parse_host_port(value: str, *, field: str) -> tuple[str, int]:
    """ "host:port" (IPv6 as "[::1]:6868") -> (host, port); ValidationError naming field."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValidationError(f"{field}: expected host:port, got {value!r}", field=field)
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        number = int(port)
    except ValueError:
        raise ValidationError(f"{field}: port {port!r} is not a number", field=field) from None
    if not 0 <= number <= 65535:
        raise ValidationError(f"{field}: port {number} is out of range", field=field)
    return host, number


def _keys_repr(keys: tuple[str, ...]) -> str:
    """Keys are secrets: a repr (and so a log line) shows how many, never them."""
    if not keys:
        return "()"
    return f"<{len(keys)} key{'s' if len(keys) > 1 else ''}>"


def _optional_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


@attrs.frozen(kw_only=True)
class EngineConfig:
    """Settings of one Engine (one node).

    data_dir: where the SQLite store lives; None keeps everything in memory (tests,
        throwaway embedding): nothing survives the process.
    node_name: this node's name, unique in a cluster; defaults to the host name.
    server: a server keeps the jobs and their history (Raft), and the leader among the
        servers schedules; False makes an agent: it joins by gossip and runs what the
        servers dispatch to it (it needs ``join`` or ``gossip_bind``, and ``raft_bind``
        for its RPC listener unless the Engine is given a ``raft_transport``).
    tags: this node's tags; servers also carry ``server=true`` and ``dkron_server=true``.
    region, datacenter: reserved tags, as Dkron (jobs run in the leader's region only).
    history_limit: execution records kept per job; the oldest finished ones are pruned.
    output_limit: bytes of output kept per execution (the last ones).
    max_concurrent: executions running at once on this node, overall (0: unlimited);
        runs beyond it wait in a queue, never dropped.
    executor_limits: the same, per executor name (e.g. ``{"shell": 4}``).
    cluster_max_running: executions running at once across the whole cluster, all jobs
        (0: no cap). The leader enforces it when it launches runs: a fire beyond it is
        recorded skipped with the reason, a manual run is refused (409). Give every
        server the same value: the leader's applies.
    max_lateness: seconds (None: off). Admission under overload: a scheduled fire the
        leader reaches more than this late, while the job's next fire is due as well (it
        fell a whole period behind), is not run but recorded missed with the reason, and
        the job goes on from its next fire to come; without it the fire runs late. Fires
        caught up after a failover are never shed. Give every server the same value.
    launch_spin: seconds (default 0.0003; 0: off). A run of this node is launched this
        much before its scheduled instant, and its executor starts on the instant itself,
        the event loop busy-waiting meanwhile: a sleeping loop takes 0.1-0.3 ms to wake
        up, which every run waited for. Costs up to that much of the event loop per
        launch instant (a third of a core at 1,000 fires/s), during which the program's
        other tasks wait too. At most 0.005.
    durability: SQLite ``synchronous`` for the applied-state store: "full", "normal"
        (default) or "off". The Raft log is what must survive a power loss (see
        raft_durability); the store is rebuilt from the log after its last commit.
    peers: the other servers of a static cluster, ``{node_name: "host:port"}`` of their
        Raft listeners; every server lists the same set (itself included or not). Empty:
        a single server that bootstraps a one-node cluster.
    raft_bind: "host:port" this server's Raft/RPC listener binds (port 0 picks one);
        None: no listener, which a server with peers cannot start with (unless the
        embedding program hands the Engine its own ``raft_transport``).
    raft_durability: "fsync" (default): every Raft append is fsynced before it is
        acknowledged, so nothing acknowledged is lost when a minority loses power.
        "none": never fsync (like PySyncObj); a power loss may lose acknowledged writes
        and a vote, so a node can vote twice in a term. For benchmarks and scratch data.
    raft_tick: seconds per Raft tick; elections start after 10 to 20 ticks without a
        leader, heartbeats go every 4. Larger values suit slow networks.
    linearizable_reads: reads first confirm with a quorum that this server has every
        committed write (Raft's ReadIndex); False reads the local state, which may be
        slightly behind on a follower.
    snapshot_entries: applied log entries between two snapshots of the state (each
        snapshot lets the Raft log be compacted), once they carry a quarter of the last
        snapshot's size at least (a snapshot copies the whole state).
    gossip_bind: "host:port" where this node's gossip (SWIM membership, UDP and TCP on
        the same port; Dkron's --bind-addr, port 8946) listens; port 0 picks one. None
        (and no ``join``): no gossip, the node knows only itself and its Raft peers.
    gossip_advertise: "host:port" (or "host") other nodes reach this one's gossip at,
        when it differs from the bound address (NAT, containers, 0.0.0.0).
    join: gossip addresses ("host:port" or "host" for 8946) to join at start; retried
        every ``join_retry_interval`` seconds until one answers, at most
        ``join_retry_max`` times (0: forever; beyond it the engine stops with JoinFailed,
        as Dkron exits). Implies gossip (on 0.0.0.0:8946 when ``gossip_bind`` is None).
    gossip_profile: timing preset of gossip: "lan" (default, memberlist's), "wan",
        "local" or "fast" (see docs/gossip.md for each one's detection time and cost).
    bootstrap_expect: on a server with gossip and no Raft state, wait until this many
        servers (itself included, all started with the same value) see each other, then
        form the cluster with all of them as voters (Dkron's --bootstrap-expect). 0: a
        server with ``join`` waits to be added by the cluster it joins; one without
        ``join`` or ``peers`` forms a cluster alone.
    encrypt: base64 gossip keys (16, 24 or 32 bytes; ``trickle keygen`` makes one); the
        first encrypts, all are accepted (rotation). Empty: gossip in plaintext.
    """

    data_dir: Path | None = attrs.field(default=DEFAULT_DATA_DIR, converter=_optional_path)
    node_name: str = attrs.field(factory=socket.gethostname)
    server: bool = True
    tags: dict[str, str] = attrs.field(factory=dict, converter=dict)
    region: str = "global"
    datacenter: str = "dc1"
    history_limit: int = DEFAULT_HISTORY_LIMIT
    output_limit: int = DEFAULT_OUTPUT_LIMIT
    max_concurrent: int = 0
    executor_limits: dict[str, int] = attrs.field(factory=dict, converter=dict)
    cluster_max_running: int = 0
    max_lateness: float | None = None
    launch_spin: float = DEFAULT_LAUNCH_SPIN
    durability: str = "normal"
    subscriber_buffer: int = DEFAULT_SUBSCRIBER_BUFFER
    peers: dict[str, str] = attrs.field(factory=dict, converter=dict)
    raft_bind: str | None = None
    raft_durability: str = "fsync"
    raft_tick: float = DEFAULT_RAFT_TICK
    linearizable_reads: bool = True
    snapshot_entries: int = DEFAULT_SNAPSHOT_ENTRIES
    gossip_bind: str | None = None
    gossip_advertise: str | None = None
    join: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    join_retry_interval: float = DEFAULT_JOIN_RETRY_INTERVAL
    join_retry_max: int = 0
    gossip_profile: str = "lan"
    bootstrap_expect: int = 0
    encrypt: tuple[str, ...] = attrs.field(default=(), converter=tuple, repr=_keys_repr)

    @property
    def gossip_enabled(self) -> bool:
        return self.gossip_bind is not None or bool(self.join)

    def __attrs_post_init__(self) -> None:
        if not self.node_name:
            raise ValidationError("node_name cannot be empty", field="node_name")
        if self.history_limit < 1:
            raise ValidationError("history_limit must be at least 1", field="history_limit")
        if self.output_limit < 1:
            raise ValidationError("output_limit must be at least 1", field="output_limit")
        if self.max_concurrent < 0:
            raise ValidationError("max_concurrent cannot be negative", field="max_concurrent")
        if self.cluster_max_running < 0:
            raise ValidationError(
                "cluster_max_running cannot be negative", field="cluster_max_running"
            )
        if self.max_lateness is not None and not (
            math.isfinite(self.max_lateness) and self.max_lateness > 0
        ):
            raise ValidationError(
                "max_lateness must be a positive number of seconds (None: off)",
                field="max_lateness",
            )
        if not (math.isfinite(self.launch_spin) and 0 <= self.launch_spin <= MAX_LAUNCH_SPIN):
            raise ValidationError(
                f"launch_spin must be between 0 and {MAX_LAUNCH_SPIN} seconds",
                field="launch_spin",
            )
        for name, limit in self.executor_limits.items():
            if limit < 0:
                raise ValidationError(
                    f"executor limit for {name} cannot be negative", field="executor_limits"
                )
        if self.durability not in ("full", "normal", "off"):
            raise ValidationError("durability must be full, normal or off", field="durability")
        if self.raft_durability not in ("fsync", "none"):
            raise ValidationError("raft_durability must be fsync or none", field="raft_durability")
        for name, address in self.peers.items():
            if not name:
                raise ValidationError("a peer needs a node name", field="peers")
            parse_host_port(address, field=f"peers.{name}")
        if self.raft_bind is not None:
            parse_host_port(self.raft_bind, field="raft_bind")
        if not self.raft_tick > 0:
            raise ValidationError("raft_tick must be positive", field="raft_tick")
        if self.snapshot_entries < 1:
            raise ValidationError("snapshot_entries must be at least 1", field="snapshot_entries")
        self._check_gossip()
        if not self.server:
            self._check_agent()

    def _check_agent(self) -> None:
        if self.peers:
            raise ValidationError(
                "an agent has no peers: peers are the servers of the Raft configuration",
                field="peers",
            )

    def _check_gossip(self) -> None:
        from trickle.gossip.config import PRESETS
        from trickle.gossip.keyring import decode_key
        from trickle.gossip.transport import parse_address

        if self.gossip_bind is not None:
            parse_host_port(self.gossip_bind, field="gossip_bind")
        checks = [("gossip_advertise", self.gossip_advertise)] if self.gossip_advertise else []
        checks += [("join", address) for address in self.join]
        for field, address in checks:
            try:
                parse_address(address)
            except ValidationError as exc:
                raise ValidationError(f"{field}: {exc.message}", field=field) from None
        if not self.join_retry_interval > 0:
            raise ValidationError(
                "join_retry_interval must be positive", field="join_retry_interval"
            )
        if self.gossip_profile not in PRESETS:
            raise ValidationError(
                f"gossip_profile must be one of {', '.join(PRESETS)}", field="gossip_profile"
            )
        if self.join_retry_max < 0:
            raise ValidationError("join_retry_max must not be negative", field="join_retry_max")
        if self.bootstrap_expect < 0:
            raise ValidationError("bootstrap_expect must not be negative", field="bootstrap_expect")
        if self.bootstrap_expect and not (self.server and self.gossip_enabled):
            raise ValidationError(
                "bootstrap_expect needs a server with gossip (join or gossip_bind)",
                field="bootstrap_expect",
            )
        if self.bootstrap_expect and self.peers:
            raise ValidationError(
                "bootstrap_expect and peers are two ways to form a cluster: give one",
                field="bootstrap_expect",
            )
        for key in self.encrypt:
            try:
                decode_key(key)
            except ValidationError as exc:
                raise ValidationError(f"encrypt: {exc.message}", field="encrypt") from None

    @property
    def node_tags(self) -> dict[str, str]:
        """The tags this node carries: the user's, then the reserved ones (which win)."""
        tags = dict(self.tags)
        tags.update({"region": self.region, "dc": self.datacenter, "role": "trickle"})
        if self.server:
            tags.update({"server": "true", "dkron_server": "true"})
        return tags
