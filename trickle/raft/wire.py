"""Raft's wire encoding (msgpack): conf-change payloads, and messages in transport frames."""

from __future__ import annotations

import msgpack

from trickle.errors import ValidationError
from trickle.raft.messages import ConfChange, ConfChangeOp, NodeId


def encode_conf_change(change: ConfChange) -> bytes:
    """The ``data`` of a CONF_CHANGE entry."""
    return msgpack.packb([int(change.op), change.node, change.context])


def decode_conf_change(data: bytes) -> ConfChange:
    """Inverse of encode_conf_change; ValidationError on anything else."""
    try:
        op, node, context = msgpack.unpackb(data)
        return ConfChange(op=ConfChangeOp(op), node=NodeId(str(node)), context=bytes(context))
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
        raise ValidationError(f"malformed conf change entry: {exc}") from exc
