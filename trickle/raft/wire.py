"""Raft's wire encoding (msgpack): conf-change payloads, messages and transport frames.

No networking code: this module turns values into bytes and back. A frame on a stream is
a 4-byte big-endian length followed by a msgpack array ``[version, kind, ...]``:

    HELLO     [1, 1, node, cluster, protocol]        first frame each way on a connection
    RAFT      [1, 2, message]                        one Raft Message
    REQUEST   [1, 3, call_id, method, payload]       an RPC call
    RESPONSE  [1, 4, call_id, ok, payload | error]   its answer (bytes if ok, else text)

Everything received is untrusted: decoding anything malformed raises ``WireError`` (and
nothing else), which callers count and drop. ``FrameTooLarge`` (a WireError) means the
stream cannot be resynchronised and the connection should be closed.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterator
from typing import Any

import attrs
import msgpack

from trickle.errors import ValidationError
from trickle.raft.messages import (
    ColdEntry,
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    NodeId,
    SnapshotMeta,
)

WIRE_VERSION = 1  # the frame layout; a frame of another version is dropped
PROTOCOL_VERSION = 1  # what a node speaks; exchanged in HELLO
MIN_PROTOCOL_VERSION = 1  # the oldest protocol a node still accepts from a peer
MAX_FRAME_BYTES = 16 * 1024 * 1024  # bytes of one frame body (above the 1 MiB snapshot chunk)
HEADER_BYTES = 4  # the big-endian length prefix
MAX_NAME_CHARS = 256  # node ids, cluster names and RPC method names


class WireError(ValueError):
    """Bytes that do not decode to a valid frame or message (dropped and counted)."""


class FrameTooLarge(WireError):
    """A length prefix above MAX_FRAME_BYTES: the stream cannot be trusted any more."""


class FrameKind(enum.IntEnum):
    HELLO = 1
    RAFT = 2
    REQUEST = 3
    RESPONSE = 4


@attrs.frozen
class Hello:
    """Who is on the other end: sent first by both sides of a connection."""

    node: NodeId
    cluster: str
    protocol: int = PROTOCOL_VERSION


@attrs.frozen
class RaftFrame:
    message: Message


@attrs.frozen
class Request:
    call_id: int
    method: str
    payload: bytes


@attrs.frozen
class Response:
    """``ok`` -> ``payload`` is the handler's answer; else ``error`` says what failed."""

    call_id: int
    ok: bool
    payload: bytes = b""
    error: str = ""


Frame = Hello | RaftFrame | Request | Response


# conf changes ---------------------------------------------------------------------------
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


# messages -------------------------------------------------------------------------------
# A message is a positional array; trailing fields equal to their defaults are left out:
# [type, src, dst, term, index, log_term, commit, entries, reject, reject_hint, context,
#  snapshot, offset, data, done]. ``entries`` is [first_index, [term, data(, kind)], ...]
# (the entries of one message are contiguous); ``snapshot`` is
# [index, term, [voters...], [learners...]].
_DEFAULTS: tuple[Any, ...] = (0, 0, 0, None, False, 0, b"", None, 0, b"", False)


def _pack_entries(entries: tuple[Entry | ColdEntry, ...]) -> list[Any] | None:
    if not entries:
        return None
    first = entries[0].index
    out: list[Any] = [first]
    for i, e in enumerate(entries):
        if isinstance(e, ColdEntry):
            raise TypeError(f"entry {e.index} is cold: read it from storage before sending")
        if e.index != first + i:
            raise ValueError(f"entries of one message must be contiguous: {e.index} after {first}")
        out.append(
            [e.term, e.data] if e.kind is EntryKind.NORMAL else [e.term, e.data, int(e.kind)]
        )
    return out


def _pack_meta(meta: SnapshotMeta | None) -> list[Any] | None:
    if meta is None:
        return None
    return [meta.index, meta.term, sorted(meta.conf.voters), sorted(meta.conf.learners)]


def message_to_wire(m: Message) -> list[Any]:
    """The msgpack-ready array for ``m`` (see the layout above)."""
    head = [int(m.type), m.src, m.dst, m.term]
    if (
        m.snapshot is None
        and m.done is False
        and type(m.data) is bytes
        and not m.data
        and type(m.offset) is int
        and not m.offset
    ):
        # Every message but SNAPSHOT (the hot path): the last four fields are at their
        # defaults, so the first seven decide where the array ends (as below).
        index, log_term, commit, reject = m.index, m.log_term, m.commit, m.reject
        hint, context = m.reject_hint, m.context
        if type(context) is not bytes or context:
            n = 7
        elif type(hint) is not int or hint:
            n = 6
        elif reject is not False:
            n = 5
        elif m.entries:
            n = 4
        elif type(commit) is not int or commit:
            n = 3
        elif type(log_term) is not int or log_term:
            n = 2
        elif type(index) is not int or index:
            n = 1
        else:
            return head
        head += (index, log_term, commit, _pack_entries(m.entries), reject, hint, context)[:n]
        return head
    tail = [
        m.index,
        m.log_term,
        m.commit,
        _pack_entries(m.entries),
        m.reject,
        m.reject_hint,
        m.context,
        _pack_meta(m.snapshot),
        m.offset,
        m.data,
        m.done,
    ]
    n = len(tail)
    while n and tail[n - 1] == _DEFAULTS[n - 1] and type(tail[n - 1]) is type(_DEFAULTS[n - 1]):
        n -= 1
    head += tail[:n]
    return head


def _uint(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise WireError(f"{what} must be a non-negative integer, not {value!r:.40}")
    return value


def _bool(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise WireError(f"{what} must be a boolean, not {value!r:.40}")
    return value


def _bytes(value: Any, what: str) -> bytes:
    if type(value) is not bytes:
        raise WireError(f"{what} must be bytes, not {type(value).__name__}")
    return value


def _name(value: Any, what: str) -> str:
    if type(value) is not str or not value or len(value) > MAX_NAME_CHARS:
        raise WireError(f"{what} must be a non-empty string of at most {MAX_NAME_CHARS} chars")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if type(value) is not list:
        raise WireError(f"{what} must be an array, not {type(value).__name__}")
    return value


def _unpack_entries(value: Any) -> tuple[Entry, ...]:
    if value is None:
        return ()
    raw = _list(value, "entries")
    if len(raw) < 2:
        raise WireError("entries must hold a first index and at least one entry")
    first = _uint(raw[0], "first entry index")
    out = []
    for i, item in enumerate(raw[1:]):
        item = _list(item, "entry")
        if len(item) == 2:
            kind = EntryKind.NORMAL
        elif len(item) == 3:
            try:
                kind = EntryKind(_uint(item[2], "entry kind"))
            except ValueError as exc:
                raise WireError(f"unknown entry kind {item[2]!r}") from exc
        else:
            raise WireError(f"an entry has 2 or 3 fields, not {len(item)}")
        term = _uint(item[0], "entry term")
        out.append(Entry(term=term, index=first + i, kind=kind, data=_bytes(item[1], "entry data")))
    return tuple(out)


def _unpack_meta(value: Any) -> SnapshotMeta | None:
    if value is None:
        return None
    raw = _list(value, "snapshot meta")
    if len(raw) != 4:
        raise WireError(f"snapshot meta has 4 fields, not {len(raw)}")
    voters = frozenset(NodeId(_name(v, "voter")) for v in _list(raw[2], "voters"))
    learners = frozenset(NodeId(_name(v, "learner")) for v in _list(raw[3], "learners"))
    return SnapshotMeta(
        index=_uint(raw[0], "snapshot index"),
        term=_uint(raw[1], "snapshot term"),
        conf=ConfState(voters=voters, learners=learners),
    )


_MESSAGE_TYPES = {int(t): t for t in MessageType}
_ENTRY_KINDS = {int(k): k for k in EntryKind}
_DEFAULT_TAILS = tuple(list(_DEFAULTS[k:]) for k in range(len(_DEFAULTS) + 1))


def message_from_wire(raw: Any) -> Message:
    """Inverse of message_to_wire; WireError on anything that is not a valid message."""
    # The hot path checks every field in a few expressions; anything it does not accept
    # goes through _checked_message_from_wire, which says what is wrong.
    if type(raw) is list and 4 <= len(raw) <= 4 + len(_DEFAULTS):
        mtype, src, dst, term = raw[0], raw[1], raw[2], raw[3]
        f = raw[4:]
        f += _DEFAULT_TAILS[len(f)]
        index, log_term, commit, packed, reject, hint, context, meta, offset, data, done = f
        if (
            type(mtype) is int
            and mtype in _MESSAGE_TYPES
            and type(src) is str
            and 0 < len(src) <= MAX_NAME_CHARS
            and type(dst) is str
            and 0 < len(dst) <= MAX_NAME_CHARS
            and type(term) is int
            and type(index) is int
            and type(log_term) is int
            and type(commit) is int
            and type(hint) is int
            and type(offset) is int
            and min(term, index, log_term, commit, hint, offset) >= 0
            and type(reject) is bool
            and type(done) is bool
            and type(context) is bytes
            and type(data) is bytes
            and meta is None
        ):
            entries = _fast_entries(packed) if packed is not None else ()
            if entries is not None:
                return Message(
                    type=_MESSAGE_TYPES[mtype],
                    src=src,  # type: ignore[arg-type]  # a NodeId: a str, checked above
                    dst=dst,  # type: ignore[arg-type]  # (no NewType call on the fast path)
                    term=term,
                    index=index,
                    log_term=log_term,
                    commit=commit,
                    entries=entries,
                    reject=reject,
                    reject_hint=hint,
                    context=context,
                    offset=offset,
                    data=data,
                    done=done,
                )
    return _checked_message_from_wire(raw)


def _fast_entries(packed: Any) -> tuple[Entry, ...] | None:
    """The entries of a well-formed ``entries`` array; None for anything else."""
    if type(packed) is not list or len(packed) < 2:
        return None
    index = packed[0]
    if type(index) is not int or index < 0:
        return None
    out = []
    kinds = _ENTRY_KINDS
    normal = EntryKind.NORMAL
    for item in packed[1:]:
        if type(item) is not list:
            return None
        if len(item) == 2:
            term, data = item
            kind = normal
        elif len(item) == 3:
            term, data, k = item
            if type(k) is not int or k not in kinds:
                return None
            kind = kinds[k]
        else:
            return None
        if type(term) is not int or term < 0 or type(data) is not bytes:
            return None
        out.append(Entry(term, index, kind, data))
        index += 1
    return tuple(out)


def _checked_message_from_wire(raw: Any) -> Message:
    raw = _list(raw, "message")
    if not 4 <= len(raw) <= 4 + len(_DEFAULTS):
        raise WireError(f"a message has 4 to {4 + len(_DEFAULTS)} fields, not {len(raw)}")
    try:
        mtype = MessageType(_uint(raw[0], "message type"))
    except ValueError as exc:
        raise WireError(f"unknown message type {raw[0]!r:.40}") from exc
    f = list(raw[4:]) + list(_DEFAULTS[len(raw) - 4 :])
    return Message(
        type=mtype,
        src=NodeId(_name(raw[1], "src")),
        dst=NodeId(_name(raw[2], "dst")),
        term=_uint(raw[3], "term"),
        index=_uint(f[0], "index"),
        log_term=_uint(f[1], "log_term"),
        commit=_uint(f[2], "commit"),
        entries=_unpack_entries(f[3]),
        reject=_bool(f[4], "reject"),
        reject_hint=_uint(f[5], "reject_hint"),
        context=_bytes(f[6], "context"),
        snapshot=_unpack_meta(f[7]),
        offset=_uint(f[8], "offset"),
        data=_bytes(f[9], "data"),
        done=_bool(f[10], "done"),
    )


def encode_message(m: Message) -> bytes:
    """One message alone (no frame header), e.g. for simulations that count bytes."""
    return msgpack.packb(message_to_wire(m), use_bin_type=True)


def decode_message(data: bytes) -> Message:
    """Inverse of encode_message; WireError on anything else."""
    return message_from_wire(_unpackb(data))


# frames ---------------------------------------------------------------------------------
def _unpackb(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for bad input
        raise WireError(f"not msgpack: {type(exc).__name__}: {exc}"[:200]) from exc


def frame_body(frame: Frame) -> list[Any]:
    if isinstance(frame, RaftFrame):
        return [WIRE_VERSION, FrameKind.RAFT, message_to_wire(frame.message)]
    if isinstance(frame, Hello):
        return [WIRE_VERSION, FrameKind.HELLO, frame.node, frame.cluster, frame.protocol]
    if isinstance(frame, Request):
        return [WIRE_VERSION, FrameKind.REQUEST, frame.call_id, frame.method, frame.payload]
    if isinstance(frame, Response):
        answer = frame.payload if frame.ok else frame.error
        return [WIRE_VERSION, FrameKind.RESPONSE, frame.call_id, frame.ok, answer]
    raise TypeError(f"not a frame: {type(frame).__name__}")


def encode_frame(frame: Frame) -> bytes:
    """Length prefix + body. Raises FrameTooLarge if the body exceeds MAX_FRAME_BYTES
    (the sender drops and counts it: a peer would refuse it anyway)."""
    body = _packer().pack(frame_body(frame))
    if len(body) > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"frame of {len(body)} bytes is over the {MAX_FRAME_BYTES} limit")
    return len(body).to_bytes(HEADER_BYTES, "big") + body


_local = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's Packer (msgpack.packb makes a new one per call, at twice the cost)."""
    try:
        packer: msgpack.Packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer


def decode_frame(body: bytes) -> Frame:
    """One frame body (without its length prefix); WireError on anything malformed,
    of another wire version or of an unknown kind."""
    if len(body) > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"frame of {len(body)} bytes is over the {MAX_FRAME_BYTES} limit")
    raw = _list(_unpackb(body), "frame")
    if len(raw) < 2:
        raise WireError("a frame needs a version and a kind")
    if raw[0] != WIRE_VERSION or type(raw[0]) is not int:
        raise WireError(f"unsupported wire version {raw[0]!r:.40}")
    kind = raw[1]
    if type(kind) is not int:
        raise WireError(f"frame kind must be an integer, not {kind!r:.40}")
    if kind == FrameKind.RAFT:
        if len(raw) != 3:
            raise WireError("a RAFT frame has 3 fields")
        return RaftFrame(message_from_wire(raw[2]))
    if len(raw) != 5:
        raise WireError(f"a frame of kind {kind} has 5 fields, not {len(raw)}")
    if kind == FrameKind.HELLO:
        return Hello(
            node=NodeId(_name(raw[2], "hello node")),
            cluster=_name(raw[3], "cluster name"),
            protocol=_uint(raw[4], "protocol version"),
        )
    if kind == FrameKind.REQUEST:
        return Request(
            call_id=_uint(raw[2], "call id"),
            method=_name(raw[3], "method"),
            payload=_bytes(raw[4], "payload"),
        )
    if kind == FrameKind.RESPONSE:
        call_id = _uint(raw[2], "call id")
        if _bool(raw[3], "ok"):
            return Response(call_id=call_id, ok=True, payload=_bytes(raw[4], "payload"))
        if type(raw[4]) is not str:
            raise WireError("a failed RESPONSE carries an error text")
        return Response(call_id=call_id, ok=False, error=raw[4])
    raise WireError(f"unknown frame kind {kind}")


class FrameReader:
    """Splits a byte stream into frame bodies (sans-I/O): ``feed(data)`` what arrived,
    then take ``bodies()``. The length prefix is checked before any body is buffered,
    so a peer cannot make a reader hold more than MAX_FRAME_BYTES (+ one read)."""

    def __init__(self, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._max = max_frame_bytes

    def feed(self, data: bytes | bytearray) -> None:
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def bodies(self) -> Iterator[bytes]:
        """Complete frame bodies in order. Raises FrameTooLarge on a length prefix above
        the limit (the stream is then lost: close it)."""
        buf = self._buf
        while len(buf) - self._pos >= HEADER_BYTES:
            size = int.from_bytes(buf[self._pos : self._pos + HEADER_BYTES], "big")
            if size > self._max:
                raise FrameTooLarge(f"frame of {size} bytes is over the {self._max} limit")
            end = self._pos + HEADER_BYTES + size
            if len(buf) < end:
                return
            body = bytes(buf[self._pos + HEADER_BYTES : end])
            self._pos = end
            yield body

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf) - self._pos
