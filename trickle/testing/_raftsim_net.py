"""The simulator's network model: who can reach whom, and what happens to a message on the way.

Connectivity is checked when a message is sent and again when it would arrive (as MIT
6.824's labrpc does for replies): a partition that starts while a message is in flight
drops it. Loss, delay, duplication and "long reordering" are drawn from the simulation's
one seeded ``random.Random``.
"""

from __future__ import annotations

import random

import attrs

from trickle.errors import ValidationError
from trickle.raft.messages import ColdEntry, Message, MessageType

RESPONSES = frozenset(
    {
        MessageType.PRE_VOTE_RESP,
        MessageType.VOTE_RESP,
        MessageType.APPEND_RESP,
        MessageType.HEARTBEAT_RESP,
        MessageType.SNAPSHOT_RESP,
        MessageType.READ_INDEX_RESP,
    }
)
MESSAGE_OVERHEAD_BYTES = 40  # type, ids, term, indexes, flags of one framed message
ENTRY_OVERHEAD_BYTES = 12  # term, index, kind of one entry


def message_bytes(msg: Message) -> int:
    """Bytes ``msg`` would take on the wire, estimated from its payloads (entries, snapshot
    chunk, context) plus fixed overheads; what the RPCBytes budget counts."""
    size = MESSAGE_OVERHEAD_BYTES + len(msg.context) + len(msg.data)
    entries = msg.entries
    if entries:
        size += ENTRY_OVERHEAD_BYTES * len(entries)
        for e in entries:
            size += e.size if isinstance(e, ColdEntry) else len(e.data)
    if msg.snapshot is not None:
        conf = msg.snapshot.conf
        size += 16 + sum(len(n) + 2 for n in (*conf.voters, *conf.learners))
    return size


@attrs.frozen(kw_only=True)
class NetworkConfig:
    """How the simulated network treats messages (raft messages and client requests).

    delay_ms: each message takes a uniform delay in this range (different delays reorder).
    drop_rate: probability a message is lost.
    duplicate_rate: probability a message is delivered twice (the copy with its own delay).
    long_reorder_rate: probability a response (``*_RESP``) is held back a long time in
        ``long_reorder_ms`` (labrpc's long reordering delays about 2/3 of replies
        200-2200 ms).
    Presets: ``reliable()``, ``unreliable()`` (labrpc's: 10% loss, 0-27 ms delay, plus 2%
    duplicates), ``unreliable_long_reordering()``.
    """

    delay_ms: tuple[float, float] = (0.5, 2.0)
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    long_reorder_rate: float = 0.0
    long_reorder_ms: tuple[float, float] = (200.0, 2200.0)

    def __attrs_post_init__(self) -> None:
        for name in ("drop_rate", "duplicate_rate", "long_reorder_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValidationError(f"{name} must be in [0, 1], got {value}", field=name)
        for name in ("delay_ms", "long_reorder_ms"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi:
                raise ValidationError(f"{name} must be 0 <= low <= high, got {lo, hi}", field=name)

    @classmethod
    def reliable(cls) -> NetworkConfig:
        return cls()

    @classmethod
    def unreliable(cls) -> NetworkConfig:
        return cls(delay_ms=(0.0, 27.0), drop_rate=0.1, duplicate_rate=0.02)

    @classmethod
    def unreliable_long_reordering(cls) -> NetworkConfig:
        return cls(delay_ms=(0.0, 27.0), drop_rate=0.1, duplicate_rate=0.02, long_reorder_rate=0.66)


class Network:
    """Links between endpoints (node ids, or client names): connected flags, partition
    groups and one-way cuts, plus the delivery plan of each message."""

    def __init__(self, config: NetworkConfig, rng: random.Random) -> None:
        self._rng = rng
        self._disconnected: set[str] = set()
        self._group: dict[str, int] = {}  # node -> partition group; absent: group 0
        self._cuts: set[tuple[str, str]] = set()  # (src, dst) one-way cuts
        # No node disconnected, no partition, no cut: every link works (kept up to date
        # by every change of the topology; the simulator reads it per message).
        self.whole = True
        self.config = config

    @property
    def config(self) -> NetworkConfig:
        return self._config

    @config.setter
    def config(self, config: NetworkConfig) -> None:
        self._config = config
        # plain: no loss, no duplicate, no long reordering, so a message arrives once after
        # delay_lo + delay_span * rng.random() ms (what plan() draws then; read per message)
        self.plain = not (config.drop_rate or config.duplicate_rate or config.long_reorder_rate)
        self.delay_lo = config.delay_ms[0]
        self.delay_span = config.delay_ms[1] - config.delay_ms[0]

    def _topology_changed(self) -> None:
        self.whole = not (self._disconnected or self._group or self._cuts)

    # topology ---------------------------------------------------------------------------
    def disconnect(self, node: str) -> None:
        self._disconnected.add(node)
        self.whole = False

    def connect(self, node: str) -> None:
        self._disconnected.discard(node)
        self._topology_changed()

    def is_connected(self, node: str) -> bool:
        return node not in self._disconnected

    def partition(self, groups: list[list[str]]) -> None:
        """Only nodes in the same group talk; every group is numbered from 1, nodes named in
        no group share group 0."""
        self._group = {}
        for number, group in enumerate(groups, start=1):
            for node in group:
                if node in self._group:
                    raise ValidationError(f"node {node} is in two partition groups")
                self._group[node] = number
        self._topology_changed()

    def heal(self) -> None:
        """Remove partitions and one-way cuts (disconnected nodes stay disconnected)."""
        self._group = {}
        self._cuts = set()
        self._topology_changed()

    def cut(self, src: str, dst: str) -> None:
        """Drop everything ``src`` sends to ``dst`` (the other direction still works)."""
        self._cuts.add((src, dst))
        self.whole = False

    def uncut(self, src: str, dst: str) -> None:
        self._cuts.discard((src, dst))
        self._topology_changed()

    def link_ok(self, src: str, dst: str) -> bool:
        if src in self._disconnected or dst in self._disconnected:
            return False
        if self._group and self._group.get(src, 0) != self._group.get(dst, 0):
            return False
        return not (self._cuts and (src, dst) in self._cuts)

    # delivery ---------------------------------------------------------------------------
    def plan(self, is_response: bool) -> list[float]:
        """Delays (ms) of the copies of one message that will arrive: [] when it is lost."""
        cfg = self._config
        rng = self._rng
        if cfg.drop_rate and rng.random() < cfg.drop_rate:
            return []
        copies = 2 if cfg.duplicate_rate and rng.random() < cfg.duplicate_rate else 1
        delays = []
        for _ in range(copies):
            if is_response and cfg.long_reorder_rate and rng.random() < cfg.long_reorder_rate:
                lo, hi = cfg.long_reorder_ms
            else:
                lo, hi = cfg.delay_ms
            delays.append(lo + (hi - lo) * rng.random())  # rng.uniform(lo, hi), inlined
        return delays
