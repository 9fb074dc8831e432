"""Gossip's wire encoding (msgpack): compound UDP packets and length-prefixed TCP frames.

No networking code: this module turns messages into bytes and back. Layouts:

    UDP packet      [WIRE_VERSION, [message, message, ...]]       one compound, >= 1 message
    TCP frame       4-byte big-endian length + [WIRE_VERSION, message]

A message is a msgpack array starting with its type code; an address is [host, port];
tags are a map of str to str (keys sorted, so equal tags encode to equal bytes); a
state is its int:

    PING           [1, seq, target, source, source_addr]
    INDIRECT_PING  [2, seq, target, target_addr, source, source_addr, nack]
    ACK            [3, seq, source]
    NACK           [4, seq, source]
    ALIVE          [5, incarnation, node, addr, tags]
    SUSPECT        [6, incarnation, node, source]
    DEAD           [7, incarnation, node, source]
    USER_EVENT     [8, ltime, name, payload]
    PUSH_PULL      [9, join, source, [member...], event_ltime, [event...]]
                   member = [name, addr, incarnation, state, tags]
                   event  = [ltime, name, payload]

A message may carry more fields than listed: the extra trailing ones are ignored, so a
later version can add fields without breaking older nodes (a new message type or layout
needs a new WIRE_VERSION).

Sizes: a packet of messages m1..mk encodes to at most
COMPOUND_OVERHEAD + sum(message_size(mi) + PER_MESSAGE_OVERHEAD) bytes (the packet is the
two-element array header, the version, the array header of k messages, which is 1, 3 or
5 bytes as k grows past 15 and 65535, and the messages' bytes back to back), so a sender
can fill its budget by adding sizes without encoding the packet again.

Everything received is untrusted: decoding anything malformed (not msgpack, another
version, an unknown type, a field of the wrong type, a port outside 0..65535, an unknown
state, tags or user events over their size limits) raises ``WireError`` and nothing
else; callers drop and count it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgpack

from trickle.gossip.config import META_MAX_BYTES, USER_EVENT_MAX_BYTES
from trickle.gossip.messages import (
    Ack,
    Address,
    Alive,
    Dead,
    IndirectPing,
    MemberState,
    Message,
    Nack,
    Ping,
    PushPull,
    State,
    Suspect,
    UserEvent,
)

WIRE_VERSION = 1  # the packet and frame layout; anything of another version is dropped
ENCRYPTION_OVERHEAD = 29  # bytes the keyring adds: version byte + 12-byte nonce + 16-byte tag
COMPOUND_OVERHEAD = 7  # bytes of a packet besides its messages: 1 + 1 + up to 5 (see above)
PER_MESSAGE_OVERHEAD = 0  # bytes a packet adds per message beyond message_size()
MAX_DATAGRAM_BYTES = 65_535  # the largest packet decode_packet accepts (any UDP datagram fits)
STREAM_PREFIX_BYTES = 4  # the big-endian length prefix of a TCP frame
MAX_STREAM_BYTES = 8 * 1024 * 1024  # bytes of one TCP frame body (a push-pull of 10k members)
MAX_NAME_CHARS = 256  # member names (node, source, target); a member must refuse longer ones
MAX_HOST_CHARS = 255  # the host of an address (a DNS name is at most 253)
MAX_UINT = 2**64 - 1  # seq, incarnation and Lamport times are unsigned 64-bit


class WireError(ValueError):
    """Bytes that do not decode to valid messages (the receiver drops and counts them), or
    a message that cannot be encoded (an integer beyond 64 bits, a frame too large)."""


class MessageType(enum.IntEnum):
    """The first element of every encoded message."""

    PING = 1
    INDIRECT_PING = 2
    ACK = 3
    NACK = 4
    ALIVE = 5
    SUSPECT = 6
    DEAD = 7
    USER_EVENT = 8
    PUSH_PULL = 9


# the codes as plain ints: msgpack packs an IntEnum member on a slower path
_PING = int(MessageType.PING)
_INDIRECT_PING = int(MessageType.INDIRECT_PING)
_ACK = int(MessageType.ACK)
_NACK = int(MessageType.NACK)
_ALIVE = int(MessageType.ALIVE)
_SUSPECT = int(MessageType.SUSPECT)
_DEAD = int(MessageType.DEAD)
_USER_EVENT = int(MessageType.USER_EVENT)
_PUSH_PULL = int(MessageType.PUSH_PULL)


# -- sizes the core checks before it accepts input -------------------------------------------


def tags_size(tags: Mapping[str, str]) -> int:
    """Bytes of `tags` as encoded: what META_MAX_BYTES limits. Tags larger than that are
    rejected by every receiver, so a member must refuse them before it gossips them."""
    return len(_packb(_tags_to_wire(tags)))


def user_event_size(name: str, payload: bytes) -> int:
    """Bytes of a user event as USER_EVENT_MAX_BYTES limits them: the UTF-8 name plus the
    payload (serf's measure). Larger events are rejected by every receiver."""
    return len(name.encode("utf-8", "surrogatepass")) + len(payload)


# -- encoding ------------------------------------------------------------------------------------


def _tags_to_wire(tags: Mapping[str, str]) -> dict[str, str]:
    if len(tags) < 2:
        return dict(tags)
    return {k: tags[k] for k in sorted(tags)}


def _addr_to_wire(addr: Address) -> list[Any]:
    return [addr[0], addr[1]]


def _ping(m: Ping) -> list[Any]:
    return [_PING, m.seq, m.target, m.source, _addr_to_wire(m.source_addr)]


def _indirect_ping(m: IndirectPing) -> list[Any]:
    return [
        _INDIRECT_PING,
        m.seq,
        m.target,
        _addr_to_wire(m.target_addr),
        m.source,
        _addr_to_wire(m.source_addr),
        m.nack,
    ]


def _ack(m: Ack) -> list[Any]:
    return [_ACK, m.seq, m.source]


def _nack(m: Nack) -> list[Any]:
    return [_NACK, m.seq, m.source]


def _alive(m: Alive) -> list[Any]:
    return [_ALIVE, m.incarnation, m.node, _addr_to_wire(m.addr), _tags_to_wire(m.tags)]


def _suspect(m: Suspect) -> list[Any]:
    return [_SUSPECT, m.incarnation, m.node, m.source]


def _dead(m: Dead) -> list[Any]:
    return [_DEAD, m.incarnation, m.node, m.source]


def _user_event(m: UserEvent) -> list[Any]:
    return [_USER_EVENT, m.ltime, m.name, m.payload]


def _push_pull(m: PushPull) -> list[Any]:
    members = [
        [s.name, _addr_to_wire(s.addr), s.incarnation, int(s.state), _tags_to_wire(s.tags)]
        for s in m.members
    ]
    events = [[e.ltime, e.name, e.payload] for e in m.events]
    return [_PUSH_PULL, m.join, m.source, members, m.event_ltime, events]


_TO_WIRE: dict[type, Callable[[Any], list[Any]]] = {
    Ping: _ping,
    IndirectPing: _indirect_ping,
    Ack: _ack,
    Nack: _nack,
    Alive: _alive,
    Suspect: _suspect,
    Dead: _dead,
    UserEvent: _user_event,
    PushPull: _push_pull,
}


def message_to_wire(message: Message) -> list[Any]:
    """The msgpack-ready array for `message` (see the layouts above)."""
    try:
        to_wire = _TO_WIRE[type(message)]
    except KeyError:
        raise TypeError(f"not a gossip message: {type(message).__name__}") from None
    return to_wire(message)


# One packer for the module (no per-call setup). Packing never calls back into Python (no
# `default` hook), so it runs start to end under the GIL and cannot be re-entered.
_PACKER = msgpack.Packer(use_bin_type=True, autoreset=True)


def _packb(obj: Any) -> bytes:
    try:
        return _PACKER.pack(obj)  # type: ignore[no-any-return]
    except (OverflowError, TypeError, ValueError) as exc:
        raise WireError(f"cannot encode: {type(exc).__name__}: {exc}"[:200]) from exc


def message_size(message: Message) -> int:
    """Exact bytes `message` takes inside a packet (see COMPOUND_OVERHEAD for the rest)."""
    return len(_packb(message_to_wire(message)))


def encode_packet(messages: Sequence[Message]) -> bytes:
    """One UDP packet carrying `messages` (at least one), in order. Its length is at most
    COMPOUND_OVERHEAD + sum(message_size(m) + PER_MESSAGE_OVERHEAD). Raises WireError for
    a value msgpack cannot carry (an integer beyond 64 bits)."""
    if not messages:
        raise WireError("a packet carries at least one message")
    return _packb([WIRE_VERSION, [message_to_wire(m) for m in messages]])


def encode_stream(message: Message) -> bytes:
    """One TCP frame: a STREAM_PREFIX_BYTES big-endian length, then the body that
    `decode_stream_payload` reads. Raises WireError if the body exceeds MAX_STREAM_BYTES
    (a peer would refuse it)."""
    body = _packb([WIRE_VERSION, message_to_wire(message)])
    if len(body) > MAX_STREAM_BYTES:
        raise WireError(f"frame of {len(body)} bytes is over the {MAX_STREAM_BYTES} limit")
    return len(body).to_bytes(STREAM_PREFIX_BYTES, "big") + body


# -- decoding --------------------------------------------------------------------------------


def _unpackb(data: bytes) -> Any:
    if type(data) is not bytes:
        try:
            data = bytes(data)
        except Exception as exc:
            raise WireError(f"not bytes: {type(data).__name__}") from exc
    try:
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for bad input
        raise WireError(f"not msgpack: {type(exc).__name__}: {exc}"[:200]) from exc


def _uint(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_UINT:
        raise WireError(f"{what} must be an unsigned 64-bit integer, not {value!r:.40}")
    return value


def _bool(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise WireError(f"{what} must be a boolean, not {value!r:.40}")
    return value


def _bytes(value: Any, what: str) -> bytes:
    if type(value) is not bytes:
        raise WireError(f"{what} must be bytes, not {type(value).__name__}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if type(value) is not list:
        raise WireError(f"{what} must be an array, not {type(value).__name__}")
    return value


def _str(value: Any, what: str, *, max_chars: int = MAX_NAME_CHARS) -> str:
    if type(value) is not str:
        raise WireError(f"{what} must be a string, not {type(value).__name__}")
    if len(value) > max_chars:
        raise WireError(f"{what} is longer than {max_chars} characters")
    return value


def _name(value: Any, what: str) -> str:
    if not _str(value, what):
        raise WireError(f"{what} must not be empty")
    return value  # type: ignore[no-any-return]


def _addr(value: Any, what: str) -> Address:
    raw = _list(value, what)
    if len(raw) != 2:
        raise WireError(f"{what} must be [host, port], not {len(raw)} fields")
    host = _str(raw[0], f"{what} host", max_chars=MAX_HOST_CHARS)
    if not host:
        raise WireError(f"{what} host must not be empty")
    port = raw[1]
    if type(port) is not int or not 0 <= port <= 65535:
        raise WireError(f"{what} port must be an integer in 0..65535, not {port!r:.40}")
    return (host, port)


def _tags(value: Any, what: str) -> dict[str, str]:
    if type(value) is not dict:
        raise WireError(f"{what} must be a map, not {type(value).__name__}")
    for k, v in value.items():
        if type(k) is not str or type(v) is not str:
            raise WireError(f"{what} must map strings to strings")
    if value and tags_size(value) > META_MAX_BYTES:
        raise WireError(f"{what} take more than {META_MAX_BYTES} bytes")
    return value


def _event_fields(ltime: Any, name: Any, payload: Any, what: str) -> UserEvent:
    event = UserEvent(
        ltime=_uint(ltime, f"{what} ltime"),
        name=_str(name, f"{what} name", max_chars=USER_EVENT_MAX_BYTES),  # size checked below
        payload=_bytes(payload, f"{what} payload"),
    )
    if user_event_size(event.name, event.payload) > USER_EVENT_MAX_BYTES:
        raise WireError(f"{what} name and payload take more than {USER_EVENT_MAX_BYTES} bytes")
    return event


def _fields(raw: list[Any], n: int, what: str) -> list[Any]:
    if len(raw) < n:
        raise WireError(f"a {what} message has {n} fields, not {len(raw)}")
    return raw


def _from_ping(raw: list[Any]) -> Message:
    f = _fields(raw, 5, "ping")
    return Ping(
        seq=_uint(f[1], "ping seq"),
        target=_name(f[2], "ping target"),
        source=_name(f[3], "ping source"),
        source_addr=_addr(f[4], "ping source address"),
    )


def _from_indirect_ping(raw: list[Any]) -> Message:
    f = _fields(raw, 7, "ping-req")
    return IndirectPing(
        seq=_uint(f[1], "ping-req seq"),
        target=_name(f[2], "ping-req target"),
        target_addr=_addr(f[3], "ping-req target address"),
        source=_name(f[4], "ping-req source"),
        source_addr=_addr(f[5], "ping-req source address"),
        nack=_bool(f[6], "ping-req nack"),
    )


def _from_ack(raw: list[Any]) -> Message:
    f = _fields(raw, 3, "ack")
    return Ack(seq=_uint(f[1], "ack seq"), source=_str(f[2], "ack source"))


def _from_nack(raw: list[Any]) -> Message:
    f = _fields(raw, 3, "nack")
    return Nack(seq=_uint(f[1], "nack seq"), source=_str(f[2], "nack source"))


def _from_alive(raw: list[Any]) -> Message:
    f = _fields(raw, 5, "alive")
    return Alive(
        incarnation=_uint(f[1], "alive incarnation"),
        node=_name(f[2], "alive node"),
        addr=_addr(f[3], "alive address"),
        tags=_tags(f[4], "alive tags"),
    )


def _from_suspect(raw: list[Any]) -> Message:
    f = _fields(raw, 4, "suspect")
    return Suspect(
        incarnation=_uint(f[1], "suspect incarnation"),
        node=_name(f[2], "suspect node"),
        source=_name(f[3], "suspect source"),
    )


def _from_dead(raw: list[Any]) -> Message:
    f = _fields(raw, 4, "dead")
    return Dead(
        incarnation=_uint(f[1], "dead incarnation"),
        node=_name(f[2], "dead node"),
        source=_name(f[3], "dead source"),
    )


def _from_user_event(raw: list[Any]) -> Message:
    f = _fields(raw, 4, "user event")
    return _event_fields(f[1], f[2], f[3], "user event")


def _member_state(value: Any) -> MemberState:
    f = _list(value, "push-pull member")
    if len(f) < 5:
        raise WireError(f"a push-pull member has 5 fields, not {len(f)}")
    state = f[3]
    if type(state) is not int or not 0 <= state <= max(State):
        raise WireError(f"push-pull member state must be a known state, not {state!r:.40}")
    return MemberState(
        name=_name(f[0], "push-pull member name"),
        addr=_addr(f[1], "push-pull member address"),
        incarnation=_uint(f[2], "push-pull member incarnation"),
        state=State(state),
        tags=_tags(f[4], "push-pull member tags"),
    )


def _push_pull_event(value: Any) -> UserEvent:
    f = _list(value, "push-pull event")
    if len(f) < 3:
        raise WireError(f"a push-pull event has 3 fields, not {len(f)}")
    return _event_fields(f[0], f[1], f[2], "push-pull event")


def _from_push_pull(raw: list[Any]) -> Message:
    f = _fields(raw, 6, "push-pull")
    return PushPull(
        join=_bool(f[1], "push-pull join"),
        source=_name(f[2], "push-pull source"),
        members=tuple(_member_state(s) for s in _list(f[3], "push-pull members")),
        event_ltime=_uint(f[4], "push-pull event ltime"),
        events=tuple(_push_pull_event(e) for e in _list(f[5], "push-pull events")),
    )


_FROM_WIRE: dict[int, Callable[[list[Any]], Message]] = {
    MessageType.PING: _from_ping,
    MessageType.INDIRECT_PING: _from_indirect_ping,
    MessageType.ACK: _from_ack,
    MessageType.NACK: _from_nack,
    MessageType.ALIVE: _from_alive,
    MessageType.SUSPECT: _from_suspect,
    MessageType.DEAD: _from_dead,
    MessageType.USER_EVENT: _from_user_event,
    MessageType.PUSH_PULL: _from_push_pull,
}


def message_from_wire(raw: Any) -> Message:
    """Inverse of message_to_wire; WireError on anything that is not a valid message."""
    raw = _list(raw, "message")
    if not raw:
        raise WireError("a message needs a type")
    code = raw[0]
    from_wire = _FROM_WIRE.get(code) if type(code) is int else None
    if from_wire is None:
        raise WireError(f"unknown message type {code!r:.40}")
    return from_wire(raw)


def _versioned(raw: Any, what: str) -> list[Any]:
    raw = _list(raw, what)
    if len(raw) != 2:
        raise WireError(f"a {what} is [version, body], not {len(raw)} fields")
    if type(raw[0]) is not int or raw[0] != WIRE_VERSION:
        raise WireError(f"unsupported wire version {raw[0]!r:.40}")
    return raw


def decode_packet(data: bytes) -> list[Message]:
    """The messages of one UDP packet, in order. Raises WireError (and nothing else) on
    anything malformed: the whole packet is then dropped."""
    if len(data) > MAX_DATAGRAM_BYTES:
        raise WireError(f"packet of {len(data)} bytes is over the {MAX_DATAGRAM_BYTES} limit")
    raw = _versioned(_unpackb(data), "packet")
    body = _list(raw[1], "packet messages")
    if not body:
        raise WireError("a packet carries at least one message")
    return [message_from_wire(m) for m in body]


def decode_stream_length(prefix: bytes) -> int:
    """The body length announced by a frame's STREAM_PREFIX_BYTES prefix. Raises WireError
    if it is over MAX_STREAM_BYTES (the connection cannot be trusted: close it)."""
    if len(prefix) != STREAM_PREFIX_BYTES:
        raise WireError(f"a frame prefix is {STREAM_PREFIX_BYTES} bytes, not {len(prefix)}")
    size = int.from_bytes(prefix, "big")
    if size > MAX_STREAM_BYTES:
        raise WireError(f"frame of {size} bytes is over the {MAX_STREAM_BYTES} limit")
    return size


def decode_stream_payload(data: bytes) -> Message:
    """The message of one TCP frame body (what follows the length prefix). Raises
    WireError (and nothing else) on anything malformed or over MAX_STREAM_BYTES."""
    if len(data) > MAX_STREAM_BYTES:
        raise WireError(f"frame of {len(data)} bytes is over the {MAX_STREAM_BYTES} limit")
    raw = _versioned(_unpackb(data), "frame")
    return message_from_wire(raw[1])
