"""Raft's wire format: messages and frames round-trip; garbage only ever raises WireError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trickle.errors import ValidationError
from trickle.raft.messages import (
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
from trickle.raft.wire import (
    HEADER_BYTES,
    MAX_FRAME_BYTES,
    FrameReader,
    FrameTooLarge,
    Hello,
    RaftFrame,
    Request,
    Response,
    WireError,
    decode_conf_change,
    decode_frame,
    decode_message,
    encode_conf_change,
    encode_frame,
    encode_message,
)

uints = st.integers(min_value=0, max_value=2**63 - 1)
small = st.integers(min_value=0, max_value=1000)
node_ids = st.text(min_size=1, max_size=12).map(NodeId)
blobs = st.binary(max_size=64)


@st.composite
def entry_runs(draw):
    n = draw(st.integers(min_value=0, max_value=5))
    first = draw(st.integers(min_value=1, max_value=2**40))
    return tuple(
        Entry(
            term=draw(small),
            index=first + i,
            kind=draw(st.sampled_from(EntryKind)),
            data=draw(blobs),
        )
        for i in range(n)
    )


metas = st.builds(
    SnapshotMeta,
    index=uints,
    term=uints,
    conf=st.builds(
        ConfState,
        voters=st.frozensets(node_ids, max_size=4),
        learners=st.frozensets(node_ids, max_size=2),
    ),
)

messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    src=node_ids,
    dst=node_ids,
    term=uints,
    log_term=uints,
    index=uints,
    entries=entry_runs(),
    commit=uints,
    reject=st.booleans(),
    reject_hint=uints,
    context=blobs,
    snapshot=st.none() | metas,
    offset=uints,
    data=blobs,
    done=st.booleans(),
)

frames = st.one_of(
    st.builds(RaftFrame, messages),
    st.builds(Hello, node=node_ids, cluster=st.text(min_size=1, max_size=20), protocol=small),
    st.builds(Request, call_id=uints, method=st.text(min_size=1, max_size=20), payload=blobs),
    st.builds(Response, call_id=uints, ok=st.just(True), payload=blobs),
    st.builds(Response, call_id=uints, ok=st.just(False), error=st.text(max_size=40)),
)


@given(messages)
def test_every_message_round_trips(message):
    assert decode_message(encode_message(message)) == message


@given(frames)
def test_every_frame_round_trips_through_a_reader(frame):
    data = encode_frame(frame)
    reader = FrameReader()
    reader.feed(data)
    (body,) = reader.bodies()
    assert decode_frame(body) == frame
    assert reader.buffered == 0


@given(st.lists(frames, min_size=1, max_size=6), st.integers(min_value=1, max_value=17))
def test_reader_reassembles_frames_split_at_any_point(batch, chunk):
    stream = b"".join(encode_frame(f) for f in batch)
    reader = FrameReader()
    got = []
    for i in range(0, len(stream), chunk):
        reader.feed(stream[i : i + chunk])
        got.extend(decode_frame(b) for b in reader.bodies())
    assert got == batch


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_garbage_bodies_raise_only_wire_error(data):
    for decode in (decode_frame, decode_message):
        try:
            decode(data)
        except WireError:
            pass


# msgpack values that look almost right: the decoder must reject them with WireError
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=20,
)


@given(msgpack_values)
def test_structured_garbage_raises_only_wire_error(value):
    for head in ([], [1], [1, 2], [1, 3], [1, 4], [1, 1]):
        body = msgpack.packb(head + (value if isinstance(value, list) else [value]))
        try:
            decode_frame(body)
        except WireError:
            pass


@given(messages, st.data())
def test_a_mutated_message_decodes_or_raises_wire_error(message, data):
    encoded = bytearray(encode_message(message))
    pos = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    encoded[pos] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        decode_message(bytes(encoded))
    except WireError:
        pass


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=40))
def test_reader_on_garbage_raises_only_wire_error(stream, chunk):
    reader = FrameReader(max_frame_bytes=64)
    try:
        for i in range(0, len(stream), chunk):
            reader.feed(stream[i : i + chunk])
            for body in reader.bodies():
                try:
                    decode_frame(body)
                except WireError:
                    pass
    except FrameTooLarge:
        pass


def test_heartbeat_is_compact():
    hb = Message(type=MessageType.HEARTBEAT, src=NodeId("a"), dst=NodeId("b"), term=7, commit=42)
    assert len(encode_message(hb)) <= 12


def test_append_encodes_entry_indexes_once():
    entries = tuple(Entry(term=3, index=1000 + i, data=b"x" * 64) for i in range(10))
    msg = Message(
        type=MessageType.APPEND,
        src=NodeId("a"),
        dst=NodeId("b"),
        term=3,
        index=999,
        log_term=3,
        entries=entries,
        commit=998,
    )
    assert len(encode_message(msg)) < 10 * (64 + 5) + 24
    assert decode_message(encode_message(msg)) == msg


def test_non_contiguous_entries_cannot_be_encoded():
    msg = Message(
        type=MessageType.APPEND,
        src=NodeId("a"),
        dst=NodeId("b"),
        term=1,
        entries=(Entry(term=1, index=1), Entry(term=1, index=3)),
    )
    with pytest.raises(ValueError, match="contiguous"):
        encode_message(msg)


def test_oversized_length_prefix_is_refused_before_buffering():
    reader = FrameReader()
    reader.feed((MAX_FRAME_BYTES + 1).to_bytes(HEADER_BYTES, "big") + b"x")
    with pytest.raises(FrameTooLarge, match="over the"):
        list(reader.bodies())


def test_oversized_frame_cannot_be_encoded():
    with pytest.raises(FrameTooLarge):
        encode_frame(Request(call_id=1, method="m", payload=b"\0" * (MAX_FRAME_BYTES + 1)))


def test_frame_of_another_wire_version_is_rejected():
    body = msgpack.packb([2, 1, "a", "c", 1])
    with pytest.raises(WireError, match="wire version"):
        decode_frame(body)


def test_unknown_message_type_is_rejected():
    with pytest.raises(WireError, match="unknown message type"):
        decode_message(msgpack.packb([99, "a", "b", 1]))


def test_negative_term_is_rejected():
    with pytest.raises(WireError, match="term"):
        decode_message(msgpack.packb([1, "a", "b", -1]))


def test_conf_change_round_trips_and_garbage_is_a_validation_error():
    change = ConfChange(op=ConfChangeOp.ADD_LEARNER, node=NodeId("d"), context=b"h:1")
    assert decode_conf_change(encode_conf_change(change)) == change
    with pytest.raises(ValidationError):
        decode_conf_change(b"\xc1")
