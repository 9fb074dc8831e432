"""Engine configuration: one frozen value with documented defaults."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import attrs

from trickle.engine.executors.base import DEFAULT_OUTPUT_LIMIT
from trickle.errors import ValidationError

DEFAULT_DATA_DIR = Path("trickle.data")
DEFAULT_HISTORY_LIMIT = 100  # execution records kept per job (Dkron: 100, fixed)
DEFAULT_SUBSCRIBER_BUFFER = 1000  # events buffered per subscriber before it lags


def _optional_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


@attrs.frozen(kw_only=True)
class EngineConfig:
    """Settings of one Engine (one node).

    data_dir: where the SQLite store lives; None keeps everything in memory (tests,
        throwaway embedding): nothing survives the process.
    node_name: this node's name, unique in a cluster; defaults to the host name.
    server: a server schedules and keeps state (always true until the cluster issue).
    tags: this node's tags; servers also carry ``server=true`` and ``dkron_server=true``.
    region, datacenter: reserved tags, as Dkron (jobs run in the leader's region only).
    history_limit: execution records kept per job; the oldest finished ones are pruned.
    output_limit: bytes of output kept per execution (the last ones).
    max_concurrent: executions running at once on this node, overall (0: unlimited);
        runs beyond it wait in a queue, never dropped.
    executor_limits: the same, per executor name (e.g. ``{"shell": 4}``).
    durability: SQLite ``synchronous`` for the store: "full" survives power loss,
        "normal" (default) may lose the last commits on power loss but never corrupts.
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
    durability: str = "normal"
    subscriber_buffer: int = DEFAULT_SUBSCRIBER_BUFFER

    def __attrs_post_init__(self) -> None:
        if not self.node_name:
            raise ValidationError("node_name cannot be empty", field="node_name")
        if self.history_limit < 1:
            raise ValidationError("history_limit must be at least 1", field="history_limit")
        if self.output_limit < 1:
            raise ValidationError("output_limit must be at least 1", field="output_limit")
        if self.max_concurrent < 0:
            raise ValidationError("max_concurrent cannot be negative", field="max_concurrent")
        for name, limit in self.executor_limits.items():
            if limit < 0:
                raise ValidationError(
                    f"executor limit for {name} cannot be negative", field="executor_limits"
                )
        if self.durability not in ("full", "normal", "off"):
            raise ValidationError("durability must be full, normal or off", field="durability")

    @property
    def node_tags(self) -> dict[str, str]:
        """The tags this node carries: the user's, then the reserved ones (which win)."""
        tags = dict(self.tags)
        tags.update({"region": self.region, "dc": self.datacenter, "role": "trickle"})
        if self.server:
            tags.update({"server": "true", "dkron_server": "true"})
        return tags
