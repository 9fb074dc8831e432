"""Settings of ``trickle serve``: flags, ``TRICKLE_*`` environment, TOML file, defaults.

Pure code: no I/O except reading the config file named by the caller. Precedence, per
setting, is flags > environment > config file > defaults (as Dkron). A map setting (``tags``,
``executor-limits``) is taken whole from the first source that sets it; sources are not
merged, so ``--tag a=1`` replaces the file's ``[tags]`` table, as Dkron's ``--tag`` does.

Every error is a ``ConfigError`` whose message names the setting and where the bad value
came from (the flag, the environment variable, or the key and the file).

Raft settings: the Raft/RPC listener, ``peer`` (the other servers of a static cluster,
``NAME=HOST:PORT``), and the tuning keys ``raft-durability``, ``raft-tick``,
``raft-multiplier`` (Dkron's: 1 to 10, scales ``raft-tick``), ``stale-reads`` and
``snapshot-entries``. The listener (``raft_listener``): ``raft-addr`` (a full
``host:port``) or Dkron's ``rpc-port`` (the port, on the ``bind-addr`` host or every
interface); both given must name the same port, and then ``raft-addr`` is used (it has
the host). With neither, an agent and a server that gossips listen on Dkron's 6868 (the
``bind-addr`` host, or every interface): the others dispatch and replicate to it. A
server that does not gossip listens nowhere unless told (a lone server needs no
listener); one with peers must be told.

Cluster settings (Dkron's): ``bootstrap-expect`` (servers with gossip only; not with
``peer``) and ``retry-max`` (join attempts before the node gives up and ``trickle serve``
exits 1; 0 tries forever).

Gossip settings (Dkron's names): ``bind-addr`` (the gossip port, UDP and TCP; none by
default), ``advertise-addr``, ``join`` (repeatable; ``--retry-join`` and the file key
``retry-join`` are accepted too), ``retry-interval``, ``encrypt`` (repeatable base64 keys,
the first encrypts) and ``profile``. Gossip runs when ``bind-addr`` or ``join`` is given;
``join`` alone binds ``:8946``. Encryption keys never appear in error messages or reprs.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from trickle.engine.config import (
    DEFAULT_DATA_DIR,
    DEFAULT_HISTORY_LIMIT,
    DEFAULT_JOIN_RETRY_INTERVAL,
    DEFAULT_LAUNCH_SPIN,
    DEFAULT_RAFT_TICK,
    DEFAULT_SNAPSHOT_ENTRIES,
    MAX_LAUNCH_SPIN,
    EngineConfig,
    parse_host_port,
)
from trickle.engine.executors.base import DEFAULT_OUTPUT_LIMIT
from trickle.errors import ValidationError
from trickle.gossip.config import DEFAULT_PORT as DEFAULT_GOSSIP_PORT
from trickle.gossip.config import PRESETS as GOSSIP_PRESETS
from trickle.gossip.keyring import decode_key

DEFAULT_HTTP_ADDR = ":8080"
DEFAULT_LOG_LEVEL = "info"
DEFAULT_SHUTDOWN_GRACE = 30.0  # seconds running executions get to finish at a stop
DEFAULT_ADDRESS = "http://127.0.0.1:8080"  # where the client commands look for a server
ENV_PREFIX = "TRICKLE_"
LOG_LEVELS = ("debug", "info", "warn", "error")
DURABILITIES = ("full", "normal", "off")
RAFT_DURABILITIES = ("fsync", "none")
DKRON_RAFT_PORT = 6868  # Dkron's RPC/Raft port (--rpc-port's default when one is needed)
MAX_RAFT_MULTIPLIER = 10  # Dkron's bound on --raft-multiplier
MIN_RAFT_TICK = 0.001  # seconds; below this the timers cost more than they buy
MAX_RAFT_TICK = 10.0  # seconds; elections would take minutes beyond this
ALL_INTERFACES = "0.0.0.0"
GOSSIP_PROFILES = tuple(GOSSIP_PRESETS)  # lan (default), wan, local, fast
DEFAULT_GOSSIP_BIND = f":{DEFAULT_GOSSIP_PORT}"  # where --join alone makes gossip listen
# settings that only matter when gossip runs (with bind-addr or join)
GOSSIP_ONLY_SETTINGS = ("advertise-addr", "retry-interval", "retry-max", "encrypt", "profile")
# Tags the node sets itself (EngineConfig.node_tags); a user value would be overwritten.
RESERVED_TAGS = {
    "server": "--server",
    "dkron_server": "--server",
    "region": "--region",
    "dc": "--datacenter",
    "role": None,
}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ConfigError(ValueError):
    """A setting that cannot be accepted; the message names the setting and its source."""


@attrs.frozen(kw_only=True)
class ServeSettings:
    """Everything ``trickle serve`` needs, resolved from all sources.

    engine: the Engine's configuration. http_host/http_port: where the API listens
    (port 0 = any free port). log_level: one of ``LOG_LEVELS``. shutdown_grace: seconds
    running executions get to finish after SIGTERM before they are killed.
    sources: for every setting name, where its value came from (``"default"``,
    ``"flag --data-dir"``, ``"environment TRICKLE_DATA_DIR"``, ``"config file /x.toml"``).
    """

    engine: EngineConfig = attrs.field(repr=lambda engine: _engine_repr(engine))
    http_host: str
    http_port: int
    log_level: str
    sources: Mapping[str, str]
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE


def _engine_repr(engine: EngineConfig) -> str:
    """The EngineConfig's repr with its gossip keys masked (a repr may end up in a log)."""
    text = repr(engine)
    if engine.encrypt:
        count = len(engine.encrypt)
        text = text.replace(repr(engine.encrypt), f"<{count} key{'' if count == 1 else 's'}>")
    return text


# --- parsers of single values (each raises ConfigError naming `where`) ---------------------


def parse_tag(text: str, *, where: str = "--tag") -> tuple[str, str]:
    """Parse ``key=value`` (the value may be empty and may contain ``=``)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep:
        raise ConfigError(f"{where}: malformed tag {text!r}: expected key=value")
    if not key:
        raise ConfigError(f"{where}: malformed tag {text!r}: the key is empty")
    if any(c.isspace() for c in key):
        raise ConfigError(f"{where}: malformed tag {text!r}: the key contains whitespace")
    _check_tag_key(key, where=where)
    return key, value.strip()


def _check_tag_key(key: str, *, where: str) -> None:
    if key in RESERVED_TAGS:
        hint = RESERVED_TAGS[key]
        extra = f"; use {hint}" if hint else ""
        raise ConfigError(f"{where}: tag {key!r} is reserved, trickle sets it itself{extra}")


def parse_tags(items: Iterable[str], *, where: str = "--tag") -> dict[str, str]:
    """Parse repeated ``key=value`` items into a dict (a later duplicate key wins)."""
    tags: dict[str, str] = {}
    for item in items:
        key, value = parse_tag(item, where=where)
        tags[key] = value
    return tags


def parse_tag_list(text: str, *, where: str) -> dict[str, str]:
    """Parse the environment form ``k=v,k2=v2`` (empty items are ignored)."""
    return parse_tags((p for p in text.split(",") if p.strip()), where=where)


def parse_http_addr(text: str, *, where: str = "--http-addr") -> tuple[str, int]:
    """Parse ``host:port`` into (host, port). ``:port`` means all interfaces (0.0.0.0);
    ``[::1]:8080`` is an IPv6 host; port 0 asks for any free port."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":") or not host:
            raise ConfigError(f"{where}: bad address {text!r}: expected [ipv6]:port")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise ConfigError(
                f"{where}: bad address {text!r}: expected host:port or :port (e.g. :8080)"
            )
        if ":" in host:
            raise ConfigError(f"{where}: bad address {text!r}: write IPv6 hosts as [host]:port")
        host = host or ALL_INTERFACES
    if not port_text.isdigit():
        raise ConfigError(f"{where}: bad port in {text!r}: expected a number from 0 to 65535")
    port = int(port_text)
    if port > 65535:
        raise ConfigError(f"{where}: bad port in {text!r}: expected a number from 0 to 65535")
    return host, port


def format_host_port(host: str, port: int) -> str:
    """``(host, port)`` -> ``"host:port"``, IPv6 hosts in brackets (``[::1]:6868``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_raft_addr(text: str, *, where: str = "--raft-addr") -> str:
    """Parse the Raft listener's ``host:port`` as ``--http-addr`` does (``:6868`` is every
    interface, ``[::1]:6868`` IPv6, port 0 any free port); returns ``"host:port"``."""
    return format_host_port(*parse_http_addr(text, where=where))


_UNSPECIFIED_HOSTS = frozenset({"0.0.0.0", "::", ""})


def parse_peer(text: str, *, where: str = "--peer") -> tuple[str, str]:
    """Parse ``NAME=HOST:PORT``, another server's node name and its Raft listener, into
    ``(name, "host:port")``. The host is required (``:6868`` names no machine to dial)
    and cannot be 0.0.0.0 or ``::``; the port is 1 to 65535."""
    name, sep, address = text.partition("=")
    name = name.strip()
    if not sep:
        raise ConfigError(f"{where}: malformed peer {text!r}: expected NAME=HOST:PORT")
    _check_peer_name(name, text, where=where)
    return name, _peer_address(address, where=f"{where} {name}")


def _check_peer_name(name: str, text: str, *, where: str) -> None:
    if not name:
        raise ConfigError(f"{where}: malformed peer {text!r}: the node name is empty")
    if "," in name or any(c.isspace() for c in name):
        raise ConfigError(
            f"{where}: malformed peer {text!r}: the node name contains a comma or whitespace"
        )


def _peer_address(text: str, *, where: str) -> str:
    host, port = parse_http_addr(text, where=where)
    stripped = text.strip()
    if stripped.startswith(":") or host in _UNSPECIFIED_HOSTS:
        raise ConfigError(
            f"{where}: bad address {stripped!r}: give the host the peer is reached at "
            f"(e.g. 10.0.0.2:{port or DKRON_RAFT_PORT}), not every interface"
        )
    if port == 0:
        raise ConfigError(f"{where}: bad address {stripped!r}: port 0 cannot be dialled")
    return format_host_port(host, port)


def parse_peers(items: Iterable[str], *, where: str = "--peer") -> dict[str, str]:
    """Parse repeated ``NAME=HOST:PORT`` items into ``{name: "host:port"}``; a name given
    twice is an error (two addresses for one server is a typo, not an override)."""
    peers: dict[str, str] = {}
    for item in items:
        name, address = parse_peer(item, where=where)
        if name in peers:
            raise ConfigError(
                f"{where}: peer {name!r} is given twice ({peers[name]} and {address})"
            )
        peers[name] = address
    return peers


def parse_peer_list(text: str, *, where: str) -> dict[str, str]:
    """Parse the environment form ``a=host:port,b=host:port`` (empty items are ignored)."""
    return parse_peers((p for p in text.split(",") if p.strip()), where=where)


def parse_raft_tick(text: str, *, where: str = "--raft-tick") -> float:
    """A duration (``25ms``, ``0.1s``; a bare number is seconds) from ``MIN_RAFT_TICK`` to
    ``MAX_RAFT_TICK``, in seconds."""
    seconds = _duration(text, where=where, example="25ms")
    if not MIN_RAFT_TICK <= seconds <= MAX_RAFT_TICK:
        raise ConfigError(f"{where}: must be from 1ms to 10s, got {text.strip()!r}")
    return seconds


def parse_rpc_port(text: str, *, where: str = "--rpc-port") -> int:
    """Dkron's ``--rpc-port``: the Raft/RPC listener's port, 0 to 65535 (0 picks one)."""
    stripped = text.strip()
    if not stripped.isdigit() or int(stripped) > 65535:
        raise ConfigError(f"{where}: expected a port number from 0 to 65535, got {text!r}")
    return int(stripped)


def parse_raft_multiplier(text: str, *, where: str = "--raft-multiplier") -> int:
    """Dkron's ``--raft-multiplier``: an integer from 1 to 10 scaling Raft's timing (the
    tick, so heartbeats, elections and leader checks alike); anything else fails the
    start, as Dkron's does."""
    value = _int(text, where=where)
    if not 1 <= value <= MAX_RAFT_MULTIPLIER:
        raise ConfigError(
            f"{where}: cannot be {value}, must be between 1 and {MAX_RAFT_MULTIPLIER}"
        )
    return value


def _with_default_port(text: str, port: int) -> str:
    """``host`` or ``[v6]`` -> with ``:port`` appended; anything else unchanged."""
    if text.startswith("[") and text.endswith("]"):
        return f"{text}:{port}"
    if text and ":" not in text:
        return f"{text}:{port}"
    return text


def parse_bind_addr(text: str, *, where: str = "--bind-addr") -> str:
    """Parse the gossip listener (UDP and TCP on one port) as ``--http-addr`` does,
    with the port optional as in Dkron: ``:8946`` is every interface, ``10.0.0.1`` is
    ``10.0.0.1:8946``, ``[::1]:8946`` IPv6, port 0 any free port; -> ``"host:port"``."""
    stripped = text.strip()
    if not stripped:
        raise ConfigError(f"{where}: cannot be empty")
    return format_host_port(
        *parse_http_addr(_with_default_port(stripped, DEFAULT_GOSSIP_PORT), where=where)
    )


def _dialable(text: str, *, where: str, default_port: int | None) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` that other machines can reach:
    (host, port), port None when absent and ``default_port`` is None."""
    stripped = text.strip()
    if not stripped:
        raise ConfigError(f"{where}: cannot be empty")
    if stripped.startswith("["):
        host, bracket, rest = stripped[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise ConfigError(f"{where}: bad address {stripped!r}: expected [ipv6] or [ipv6]:port")
        port_text: str | None = rest[1:] if rest else None
    elif stripped.count(":") > 1:
        raise ConfigError(
            f"{where}: bad address {stripped!r}: write IPv6 hosts as [host] or [host]:port"
        )
    else:
        host, colon, port_text_ = stripped.partition(":")
        port_text = port_text_ if colon else None
        if not host:
            raise ConfigError(
                f"{where}: bad address {stripped!r}: give the host it is reached at, "
                f"e.g. 10.0.0.1{stripped}"
            )
    if host in _UNSPECIFIED_HOSTS:
        raise ConfigError(
            f"{where}: bad address {stripped!r}: give the host it is reached at "
            "(e.g. 10.0.0.1), not every interface"
        )
    if port_text is None:
        return host, default_port
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"{where}: bad port in {stripped!r}: expected a number from 1 to 65535")
    if int(port_text) == 0:
        raise ConfigError(f"{where}: bad address {stripped!r}: port 0 cannot be dialled")
    return host, int(port_text)


def parse_advertise_addr(text: str, *, where: str = "--advertise-addr") -> str:
    """Parse the gossip address other nodes reach this one at: ``host`` (the bound port
    is advertised) or ``host:port`` (NAT, containers), IPv6 in brackets. A real host:
    not 0.0.0.0 or ``::``; not port 0. -> ``"host"`` or ``"host:port"``."""
    host, port = _dialable(text, where=where, default_port=None)
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def parse_join(text: str, *, where: str = "--join") -> str:
    """Parse one gossip address to join: ``host`` (port 8946) or ``host:port``, IPv6 in
    brackets; a real host, not port 0. -> ``"host:port"``."""
    host, port = _dialable(text, where=where, default_port=DEFAULT_GOSSIP_PORT)
    assert port is not None
    return format_host_port(host, port)


def parse_joins(items: Iterable[str], *, where: str = "--join") -> tuple[str, ...]:
    """Parse repeated join addresses; a repeated address is kept once, in first order."""
    found: dict[str, None] = {}
    for item in items:
        found[parse_join(item, where=where)] = None
    return tuple(found)


def parse_retry_interval(text: str, *, where: str = "--retry-interval") -> float:
    """The time between two join attempts: a duration (``30s``, ``1m``; a bare number is
    seconds), more than zero. -> seconds."""
    seconds = _duration(text, where=where, example="30s")
    if seconds <= 0:
        raise ConfigError(f"{where}: must be more than 0, got {text.strip()!r}")
    return seconds


def parse_encrypt_keys(items: Iterable[str], *, where: str = "--encrypt") -> tuple[str, ...]:
    """Parse gossip encryption keys (base64 of 16, 24 or 32 bytes; the first encrypts,
    all decrypt). A key given twice is kept once. Errors name the key by its position,
    never by its text: a key must not end up in a log."""
    keys = [item.strip() for item in items]
    found: dict[str, None] = {}
    for number, key in enumerate(keys, start=1):
        try:
            decode_key(key)
        except ValidationError as exc:
            which = f" (key {number} of {len(keys)})" if len(keys) > 1 else ""
            raise ConfigError(f"{where}{which}: {exc.message}") from None
        found[key] = None
    return tuple(found)


def _comma_list(parse: Callable[..., Any]) -> Callable[..., Any]:
    """The environment form of a list setting: ``a,b`` (empty items are ignored)."""

    def parse_text(text: str, *, where: str) -> Any:
        return parse((p for p in text.split(",") if p.strip()), where=where)

    return parse_text


def parse_executor_limit(text: str, *, where: str = "--executor-limit") -> tuple[str, int]:
    """Parse ``executor=N`` (N >= 0, 0 = unlimited)."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ConfigError(f"{where}: malformed limit {text!r}: expected executor=N, e.g. shell=4")
    return name, _nonnegative_int(value.strip(), where=f"{where} {name}")


def parse_executor_limits(items: Iterable[str], *, where: str) -> dict[str, int]:
    limits: dict[str, int] = {}
    for item in items:
        name, limit = parse_executor_limit(item, where=where)
        limits[name] = limit
    return limits


def parse_bool(text: str, *, where: str) -> bool:
    """``true/false``, ``1/0``, ``yes/no``, ``on/off`` (any case)."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{where}: expected true or false, got {text!r}")


def _int(text: str, *, where: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"{where}: expected an integer, got {text!r}") from None


def _nonnegative_int(text: str, *, where: str) -> int:
    value = _int(text, where=where)
    if value < 0:
        raise ConfigError(f"{where}: must be 0 or more, got {value}")
    return value


def _positive_int(text: str, *, where: str) -> int:
    value = _int(text, where=where)
    if value < 1:
        raise ConfigError(f"{where}: must be at least 1, got {value}")
    return value


def _duration(text: str, *, where: str, example: str = "30s or 5m") -> float:
    """A Go duration (``30s``, ``1m30s``, ``25ms``) or a bare number of seconds; >= 0."""
    from trickle.engine.durations import parse_go_duration

    try:
        seconds = parse_go_duration(text.strip())
    except ValueError:
        try:
            seconds = float(text)
        except ValueError:
            raise ConfigError(
                f"{where}: expected a duration such as {example}, got {text!r}"
            ) from None
    if not math.isfinite(seconds):
        raise ConfigError(f"{where}: expected a duration such as {example}, got {text!r}")
    if seconds < 0:
        raise ConfigError(f"{where}: cannot be negative, got {text!r}")
    return seconds


def _grace(text: str, *, where: str) -> float:
    return _duration(text, where=where)


def parse_max_lateness(text: str, *, where: str = "--max-lateness") -> float | None:
    """The scheduler's admission bound under overload: a duration (``30s``; a bare number
    is seconds); 0 turns it off. -> seconds, or None (off)."""
    seconds = _duration(text, where=where, example="30s")
    return seconds or None


def parse_launch_spin(text: str, *, where: str = "--launch-spin") -> float:
    """How long before its instant a run is launched to start on it (``300us``; a bare
    number is seconds); 0 turns it off. -> seconds, at most MAX_LAUNCH_SPIN."""
    seconds = _duration(text, where=where, example="300us")
    if seconds > MAX_LAUNCH_SPIN:
        raise ConfigError(f"{where}: at most {MAX_LAUNCH_SPIN * 1000:g}ms, got {text!r}")
    return seconds


def _choice(choices: tuple[str, ...]) -> Callable[..., str]:
    def parse(text: str, *, where: str) -> str:
        lowered = text.strip().lower()
        if lowered == "warning" and "warn" in choices:
            lowered = "warn"
        if lowered not in choices:
            raise ConfigError(f"{where}: expected one of {', '.join(choices)}, got {text!r}")
        return lowered

    return parse


def _nonempty(text: str, *, where: str) -> str:
    if not text.strip():
        raise ConfigError(f"{where}: cannot be empty")
    return text.strip()


# --- the settings table ----------------------------------------------------------------------


@attrs.frozen
class _Setting:
    """One setting: its name (the flag's name), the TOML kind, its text parser, its default.

    kind: "str", "int", "bool", "tags", "limits", "peers" or "list" (what a TOML value must
        be; "tags", "limits" and "peers" are tables, "list" an array of strings or one
        string; the last four are repeatable flags).
    parse: ``(text, *, where) -> value``; the value is final (``http-addr`` gives
        ``(host, port)``, ``raft-addr`` ``"host:port"``, choices are lower-cased), so every
        source yields the same types. For a "list", ``text`` is the environment's ``a,b``.
    items: for a "list", ``(texts, *, where) -> value`` parsing the flag's or the file's
        items.
    """

    name: str
    kind: str
    parse: Callable[..., Any]
    default: Any
    items: Callable[..., Any] | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace("-", "_")

    @property
    def flag(self) -> str:
        return _FLAG_NAMES.get(self.name, f"--{self.name}")


_FLAG_NAMES = {"tags": "--tag", "executor-limits": "--executor-limit", "peers": "--peer"}
_FILE_ALIASES = {
    "tag": "tags",
    "executor-limit": "executor-limits",
    "peer": "peers",
    "retry-join": "join",  # Dkron's name for a join that is retried (trickle's always is)
}
_REPEATABLE_KINDS = ("tags", "limits", "peers", "list")


def _executor_limit_list(text: str, *, where: str) -> dict[str, int]:
    return parse_executor_limits((p for p in text.split(",") if p.strip()), where=where)


SETTINGS: dict[str, _Setting] = {
    s.name: s
    for s in (
        _Setting("server", "bool", parse_bool, False),
        _Setting("data-dir", "str", _nonempty, str(DEFAULT_DATA_DIR)),
        _Setting("http-addr", "str", parse_http_addr, parse_http_addr(DEFAULT_HTTP_ADDR)),
        _Setting("node-name", "str", _nonempty, None),  # None: the host name
        _Setting("tags", "tags", parse_tag_list, {}),
        _Setting("region", "str", _nonempty, "global"),
        _Setting("datacenter", "str", _nonempty, "dc1"),
        _Setting("log-level", "str", _choice(LOG_LEVELS), DEFAULT_LOG_LEVEL),
        _Setting("max-concurrent", "int", _nonnegative_int, 0),
        _Setting("cluster-max-running", "int", _nonnegative_int, 0),
        _Setting("max-lateness", "str", parse_max_lateness, None),  # None: off
        _Setting("launch-spin", "str", parse_launch_spin, DEFAULT_LAUNCH_SPIN),
        _Setting("executor-limits", "limits", _executor_limit_list, {}),
        _Setting("history-limit", "int", _positive_int, DEFAULT_HISTORY_LIMIT),
        _Setting("output-limit", "int", _positive_int, DEFAULT_OUTPUT_LIMIT),
        _Setting("durability", "str", _choice(DURABILITIES), "normal"),
        _Setting("shutdown-grace", "str", _grace, DEFAULT_SHUTDOWN_GRACE),
        _Setting("raft-addr", "str", parse_raft_addr, None),  # None: see raft_listener
        _Setting("rpc-port", "int", parse_rpc_port, None),  # None: see raft_listener
        _Setting("peers", "peers", parse_peer_list, {}),
        _Setting("raft-durability", "str", _choice(RAFT_DURABILITIES), "fsync"),
        _Setting("raft-tick", "str", parse_raft_tick, DEFAULT_RAFT_TICK),
        _Setting("raft-multiplier", "int", parse_raft_multiplier, 1),
        _Setting("stale-reads", "bool", parse_bool, False),
        _Setting("snapshot-entries", "int", _positive_int, DEFAULT_SNAPSHOT_ENTRIES),
        _Setting("bind-addr", "str", parse_bind_addr, None),  # None: no gossip unless join
        _Setting("advertise-addr", "str", parse_advertise_addr, None),  # None: the bound one
        _Setting("join", "list", _comma_list(parse_joins), (), items=parse_joins),
        _Setting("retry-interval", "str", parse_retry_interval, DEFAULT_JOIN_RETRY_INTERVAL),
        _Setting("retry-max", "int", _nonnegative_int, 0),  # 0: join attempts go on forever
        _Setting("bootstrap-expect", "int", _nonnegative_int, 0),  # 0: no bootstrap-expect
        _Setting("encrypt", "list", _comma_list(parse_encrypt_keys), (), items=parse_encrypt_keys),
        _Setting("profile", "str", _choice(GOSSIP_PROFILES), "lan"),
    )
}
# EngineConfig field -> setting, where the names differ (for its ValidationErrors)
_ENGINE_FIELDS = {
    "raft_bind": "raft-addr",
    "linearizable_reads": "stale-reads",
    "executor_limits": "executor-limits",
    "gossip_bind": "bind-addr",
    "gossip_advertise": "advertise-addr",
    "join_retry_interval": "retry-interval",
    "join_retry_max": "retry-max",
    "bootstrap_expect": "bootstrap-expect",
    "gossip_profile": "profile",
}
CONFIG_ENV = ENV_PREFIX + "CONFIG"  # names the config file when --config is not given


# --- the sources -----------------------------------------------------------------------------


def from_environment(environ: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """Settings given as ``TRICKLE_*`` variables: name -> (value, source). Empty = unset.

    Maps are written ``k=v,k2=v2`` (``TRICKLE_TAGS``, ``TRICKLE_EXECUTOR_LIMITS``,
    ``TRICKLE_PEERS=node2=10.0.0.2:6868,node3=10.0.0.3:6868``), lists ``a,b``
    (``TRICKLE_JOIN=10.0.0.1,10.0.0.2:8946``, ``TRICKLE_ENCRYPT=key1,key2``)."""
    found: dict[str, tuple[Any, str]] = {}
    for setting in SETTINGS.values():
        text = environ.get(setting.env)
        if text is None or not text.strip():
            continue
        found[setting.name] = (setting.parse(text, where=setting.env), f"environment {setting.env}")
    return found


def load_config_file(path: str | Path) -> dict[str, tuple[Any, str]]:
    """Read a TOML config file: name -> (value, source).

    Keys are the flag names (``data-dir``, ``http-addr``, ``server = true``, a ``[tags]``
    table, an ``[executor-limits]`` table, a ``[peers]`` table of ``name = "host:port"``,
    ``join = ["10.0.0.1", ...]``, ``encrypt = "key"`` or ``["key1", "key2"]``). Raises
    ``ConfigError`` naming the file (and the key) for a missing or unreadable file, bad
    TOML, an unknown key or a wrong type.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    found: dict[str, tuple[Any, str]] = {}
    for key, value in data.items():
        setting = SETTINGS.get(_FILE_ALIASES.get(key, key))
        if setting is None:
            known = ", ".join(sorted(SETTINGS))
            raise ConfigError(f"{key} in {path}: unknown setting {key!r} (known: {known})")
        found[setting.name] = (_file_value(setting, key, value, path), f"config file {path}")
    return found


def _type_name(value: Any) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        dict: "a table",
        list: "an array",
    }
    return names.get(type(value), type(value).__name__)


def _describe_array(value: Any) -> str:
    if isinstance(value, list):
        odd = next(i for i in value if not isinstance(i, str))
        return f"an array holding {_type_name(odd)}"
    return _type_name(value)


def _file_value(setting: _Setting, key: str, value: Any, path: Path) -> Any:
    where = f"{key} in {path}"
    if setting.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_type_name(value)}")
        return value
    if setting.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_type_name(value)}")
        return setting.parse(str(value), where=where)
    if setting.kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_type_name(value)}")
        return setting.parse(value, where=where)
    if setting.kind == "list":
        assert setting.items is not None
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ConfigError(
                f"{where}: expected an array of strings, got {_describe_array(value)}"
            )
        return setting.items(items, where=where)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {_type_name(value)}")
    if setting.kind == "tags":
        tags: dict[str, str] = {}
        for tag, item in value.items():
            item_where = f"{key}.{tag} in {path}"
            if not isinstance(item, str):
                raise ConfigError(f"{item_where}: expected a string, got {_type_name(item)}")
            tag_key, tag_value = parse_tag(f"{tag}={item}", where=item_where)
            tags[tag_key] = tag_value
        return tags
    if setting.kind == "peers":
        peers: dict[str, str] = {}
        for name, item in value.items():
            item_where = f"{key}.{name} in {path}"
            if not isinstance(item, str):
                raise ConfigError(f"{item_where}: expected a string, got {_type_name(item)}")
            _check_peer_name(name, f"{name} = {item!r}", where=item_where)
            peers[name] = _peer_address(item, where=item_where)
        return peers
    limits: dict[str, int] = {}
    for executor, item in value.items():
        item_where = f"{key}.{executor} in {path}"
        if isinstance(item, bool) or not isinstance(item, int):
            raise ConfigError(f"{item_where}: expected an integer, got {_type_name(item)}")
        limits[executor] = _nonnegative_int(str(item), where=item_where)
    return limits


def from_flags(flags: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    """Settings given as flags: name -> (value, source).

    ``None`` (or an empty sequence for a repeatable flag) means "not given". Repeatable
    flags come as sequences of text (``tags``: ``["k=v"]``, ``executor-limits``:
    ``["shell=4"]``, ``peers``: ``["node2=10.0.0.2:6868"]``, ``join``: ``["10.0.0.1"]``,
    ``encrypt``: ``["<base64>"]``); other values as click gives them (text, int or bool).
    The key ``config`` (the config file) is skipped.
    """
    found: dict[str, tuple[Any, str]] = {}
    for name, value in flags.items():
        if name == "config":
            continue
        setting = SETTINGS.get(name)
        if setting is None:
            raise ConfigError(f"unknown setting {name!r}")
        if value is None or (setting.kind in _REPEATABLE_KINDS and not value):
            continue
        where = setting.flag
        if setting.kind == "tags":
            parsed: Any = parse_tags(value, where=where)
        elif setting.kind == "limits":
            parsed = parse_executor_limits(value, where=where)
        elif setting.kind == "peers":
            parsed = parse_peers(value, where=where)
        elif setting.kind == "list":
            assert setting.items is not None
            parsed = setting.items(value, where=where)
        elif setting.kind == "bool":
            parsed = bool(value)
        else:
            parsed = setting.parse(str(value), where=where)
        found[name] = (parsed, f"flag {where}")
    return found


def resolve(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServeSettings:
    """Merge flags > environment > config file > defaults into ``ServeSettings``.

    ``flags`` uses the setting names (``"data-dir"``, ``"tags"``, ...) plus ``"config"``,
    the config file path; ``TRICKLE_CONFIG`` names the file when the flag is absent.
    Raises ``ConfigError``.
    """
    flags = dict(flags or {})
    environ = environ or {}
    config_path = flags.get("config") or (environ.get(CONFIG_ENV) or "").strip() or None
    # Parse every layer fully, so that a bad value is reported even where a higher layer
    # overrides it: a broken config file should not lurk until the flag is dropped.
    layers = [
        from_flags(flags),
        from_environment(environ),
        load_config_file(config_path) if config_path else {},
    ]
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS.values():
        for layer in layers:
            if setting.name in layer:
                values[setting.name], sources[setting.name] = layer[setting.name]
                break
        else:
            values[setting.name], sources[setting.name] = setting.default, "default"
    host, port = values["http-addr"]
    engine_kwargs: dict[str, Any] = {
        "data_dir": Path(values["data-dir"]).expanduser(),
        "server": values["server"],
        "tags": values["tags"],
        "region": values["region"],
        "datacenter": values["datacenter"],
        "history_limit": values["history-limit"],
        "output_limit": values["output-limit"],
        "max_concurrent": values["max-concurrent"],
        "cluster_max_running": values["cluster-max-running"],
        "max_lateness": values["max-lateness"],
        "launch_spin": values["launch-spin"],
        "executor_limits": values["executor-limits"],
        "durability": values["durability"],
        "peers": values["peers"],
        "raft_bind": raft_listener(values, sources),
        "raft_durability": values["raft-durability"],
        "raft_tick": values["raft-tick"] * values["raft-multiplier"],
        "linearizable_reads": not values["stale-reads"],
        "snapshot_entries": values["snapshot-entries"],
        "gossip_bind": _gossip_bind(values["bind-addr"], values["join"]),
        "gossip_advertise": values["advertise-addr"],
        "join": values["join"],
        "join_retry_interval": values["retry-interval"],
        "join_retry_max": values["retry-max"],
        "bootstrap_expect": values["bootstrap-expect"],
        "gossip_profile": values["profile"],
        "encrypt": values["encrypt"],
    }
    if values["node-name"] is not None:
        engine_kwargs["node_name"] = values["node-name"]
    _check_bootstrap_expect(values, sources)
    try:
        engine = EngineConfig(**engine_kwargs)
    except ValidationError as exc:
        field = exc.field.split(".", 1)[0]
        name = _ENGINE_FIELDS.get(field, field.replace("_", "-"))
        where = _where(name, sources) if name in sources else "configuration"
        raise ConfigError(f"{where}: {exc.message}") from None
    _check_raft(engine, host, port, sources)
    _check_gossip(engine, host, port, sources)
    return ServeSettings(
        engine=engine,
        http_host=host,
        http_port=port,
        log_level=values["log-level"],
        sources=sources,
        shutdown_grace=values["shutdown-grace"],
    )


def raft_listener(values: Mapping[str, Any], sources: Mapping[str, str]) -> str | None:
    """The Raft/RPC listener's ``"host:port"`` (None: none), from the resolved ``values``
    (setting name -> value) and their ``sources``:

    - ``raft-addr`` and ``rpc-port`` both given: they must name the same port (else
      ConfigError naming both), and ``raft-addr`` is used, since it names the host too;
    - ``raft-addr``: that address;
    - ``rpc-port``: that port on the ``bind-addr`` host, or every interface (Dkron's rule);
    - neither: an agent, and a server that gossips (``bind-addr`` or ``join``), listen
      on port 6868 there (Dkron's default): servers dispatch runs to every node, and
      replicate the log to every server. A server that does not gossip gets none.
    """
    raft_addr: str | None = values["raft-addr"]
    rpc_port: int | None = values["rpc-port"]
    if raft_addr is not None and rpc_port is not None:
        port = parse_host_port(raft_addr, field="raft_bind")[1]
        if port != rpc_port:
            raise ConfigError(
                f"{_where('rpc-port', sources)} {rpc_port} and {_where('raft-addr', sources)} "
                f"{raft_addr} name different ports for the one Raft/RPC listener: give one "
                "of them (--raft-addr HOST:PORT, or --rpc-port PORT on the --bind-addr host)"
            )
        return raft_addr
    if raft_addr is not None:
        return raft_addr
    gossips = values["bind-addr"] is not None or bool(values["join"])
    if rpc_port is None and values["server"] and not gossips:
        return None
    host = ALL_INTERFACES
    if values["bind-addr"] is not None:
        host = parse_host_port(values["bind-addr"], field="bind_addr")[0]
    return format_host_port(host, DKRON_RAFT_PORT if rpc_port is None else rpc_port)


def raft_listener_where(sources: Mapping[str, str]) -> str:
    """How messages name the Raft/RPC listener's setting: ``--raft-addr``, ``--rpc-port``
    (or their environment variable or file key), or ``the default --rpc-port 6868``."""
    if sources.get("raft-addr", "default") != "default":
        return _where("raft-addr", sources)
    if sources.get("rpc-port", "default") != "default":
        return _where("rpc-port", sources)
    return f"the default --rpc-port {DKRON_RAFT_PORT}"


def _check_bootstrap_expect(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """--bootstrap-expect is for servers that find each other by gossip, without peers."""
    expect = values["bootstrap-expect"]
    if not expect:
        return
    where = f"{_where('bootstrap-expect', sources)} {expect}"
    if not values["server"]:
        raise ConfigError(
            f"{where}: only servers form the Raft cluster; give --server too, or drop "
            "--bootstrap-expect on an agent"
        )
    if values["peers"]:
        raise ConfigError(
            f"{where} and {_where('peers', sources)} are two ways to form a cluster: give "
            "--bootstrap-expect (the servers find each other by gossip) or --peer (a static "
            "list), not both"
        )
    if values["bind-addr"] is None and not values["join"]:
        raise ConfigError(
            f"{where}: the servers find each other by gossip: give --join (the other "
            "servers' gossip addresses) or --bind-addr"
        )


def _check_raft(
    engine: EngineConfig, http_host: str, http_port: int, sources: Mapping[str, str]
) -> None:
    """A server with peers needs its own Raft listener, and it cannot share the API's port."""
    others = sorted(set(engine.peers) - {engine.node_name})
    if others and engine.raft_bind is None:
        own = engine.peers.get(engine.node_name)
        hint = own or f":{DKRON_RAFT_PORT}"  # its own entry, if the list names it
        raise ConfigError(
            f"--raft-addr: a server with peers ({', '.join(others)}, given by "
            f"{_where('peers', sources)}) needs its Raft listener, e.g. --raft-addr {hint} "
            f"or --rpc-port {DKRON_RAFT_PORT} (or TRICKLE_RAFT_ADDR, or raft-addr in the "
            "config file)"
        )
    if engine.raft_bind is None:
        return
    raft_host, raft_port = parse_host_port(engine.raft_bind, field="raft_bind")
    if _overlap(raft_host, raft_port, http_host, http_port):
        http_where = _where("http-addr", sources)
        if sources["http-addr"] == "default":
            http_where = f"the default --http-addr {DEFAULT_HTTP_ADDR}"
        raise ConfigError(
            f"{raft_listener_where(sources)}: port {raft_port} is also the HTTP API's "
            f"({http_where}); give each its own port"
        )


def _gossip_bind(bind_addr: str | None, join: tuple[str, ...]) -> str | None:
    """Where gossip listens: ``bind-addr``; with only ``join``, every interface on 8946
    (Dkron's port); with neither, nowhere (no gossip)."""
    if bind_addr is not None:
        return bind_addr
    return parse_bind_addr(DEFAULT_GOSSIP_BIND) if join else None


def _overlap(host_a: str, port_a: int, host_b: str, port_b: int) -> bool:
    """Two listeners on the same non-zero port whose hosts may be the same interface."""
    return port_a == port_b != 0 and (
        host_a == host_b or bool({host_a, host_b} & _UNSPECIFIED_HOSTS)
    )


def _check_gossip(
    engine: EngineConfig, http_host: str, http_port: int, sources: Mapping[str, str]
) -> None:
    """The gossip port (UDP and TCP) cannot be the HTTP API's or the Raft listener's."""
    if engine.gossip_bind is None:
        return
    host, port = parse_host_port(engine.gossip_bind, field="gossip_bind")
    if sources["bind-addr"] == "default":  # gossip runs because of join
        subject = (
            f"{_where('join', sources)}: gossip listens on the default --bind-addr "
            f"{DEFAULT_GOSSIP_BIND}, and port {port}"
        )
        hint = "give --bind-addr another port"
    else:
        subject = f"{_where('bind-addr', sources)}: gossip port {port}"
        hint = "give each its own port"
    others = [("http-addr", "the HTTP API's", (http_host, http_port))]
    if engine.raft_bind is not None:
        raft = parse_host_port(engine.raft_bind, field="raft_bind")
        others.append(("raft-addr", "the Raft listener's", raft))
    for name, whose, (other_host, other_port) in others:
        if _overlap(host, port, other_host, other_port):
            other_where = _where(name, sources)
            if name == "http-addr" and sources[name] == "default":
                other_where = f"the default --http-addr {DEFAULT_HTTP_ADDR}"
            if name == "raft-addr":
                other_where = raft_listener_where(sources)
            raise ConfigError(
                f"{subject} is also {whose} ({other_where}); gossip uses TCP as well as UDP, {hint}"
            )


def ignored_gossip_settings(settings: ServeSettings) -> list[str]:
    """Gossip settings given (not defaults) although gossip does not run (no
    ``bind-addr``, no ``join``), each named as its source names it (``--encrypt``,
    ``TRICKLE_PROFILE``, ``profile in /etc/trickle.toml``): worth a warning."""
    if settings.engine.gossip_enabled:
        return []
    return [
        _where(name, settings.sources)
        for name in GOSSIP_ONLY_SETTINGS
        if settings.sources.get(name, "default") != "default"
    ]


def _where(name: str, sources: Mapping[str, str]) -> str:
    source = sources[name]
    if source.startswith("flag "):
        return source[5:]
    if source.startswith("environment "):
        return source[12:]
    if source.startswith("config file "):
        return f"{name} in {source[12:]}"
    return name


def normalise_address(address: str) -> str:
    """The base URL of a server for the client commands: adds ``http://`` when no scheme
    is given and drops a trailing slash. Raises ``ConfigError`` for an empty address."""
    address = address.strip()
    if not address:
        raise ConfigError("--address: cannot be empty")
    if "://" not in address:
        address = "http://" + address
    scheme = address.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise ConfigError(f"--address: unsupported scheme {scheme!r} in {address!r}")
    return address.rstrip("/")
