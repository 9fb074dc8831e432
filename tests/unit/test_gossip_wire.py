"""Gossip's wire format: every message round-trips, sizes bound packets, garbage only
ever raises WireError, and the bytes of a known packet never drift by accident."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trickle.gossip.config import MAX_PACKET_BYTES, META_MAX_BYTES, USER_EVENT_MAX_BYTES
from trickle.gossip.messages import (
    Ack,
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
from trickle.gossip.wire import (
    COMPOUND_OVERHEAD,
    ENCRYPTION_OVERHEAD,
    MAX_STREAM_BYTES,
    PER_MESSAGE_OVERHEAD,
    STREAM_PREFIX_BYTES,
    WIRE_VERSION,
    WireError,
    decode_packet,
    decode_stream_length,
    decode_stream_payload,
    encode_packet,
    encode_stream,
    message_size,
    message_to_wire,
    tags_size,
    user_event_size,
)

# -- strategies: valid values of every message -----------------------------------------------

uints = st.integers(min_value=0, max_value=2**64 - 1)
names = st.text(min_size=1, max_size=24)
hosts = st.one_of(
    st.sampled_from(["127.0.0.1", "10.0.0.1", "::1", "fe80::1%eth0", "node-1.example.com"]),
    st.text(min_size=1, max_size=40),
)
ports = st.integers(min_value=0, max_value=65535)
addresses = st.tuples(hosts, ports)
# at most 5 * (1 + 8*4 + 2 + 12*4) + 1 = 416 bytes: always under META_MAX_BYTES
tags = st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=5)
payloads = st.binary(max_size=64)
states = st.sampled_from(State)

pings = st.builds(Ping, seq=uints, target=names, source=names, source_addr=addresses)
indirect_pings = st.builds(
    IndirectPing,
    seq=uints,
    target=names,
    target_addr=addresses,
    source=names,
    source_addr=addresses,
    nack=st.booleans(),
)
acks = st.builds(Ack, seq=uints, source=st.text(max_size=24))
nacks = st.builds(Nack, seq=uints, source=st.text(max_size=24))
alives = st.builds(Alive, incarnation=uints, node=names, addr=addresses, tags=tags)
suspects = st.builds(Suspect, incarnation=uints, node=names, source=names)
deads = st.builds(Dead, incarnation=uints, node=names, source=names)
user_events = st.builds(UserEvent, ltime=uints, name=st.text(max_size=24), payload=payloads)
member_states = st.builds(
    MemberState, name=names, addr=addresses, incarnation=uints, state=states, tags=tags
)
push_pulls = st.builds(
    PushPull,
    join=st.booleans(),
    source=names,
    members=st.lists(member_states, max_size=5).map(tuple),
    event_ltime=uints,
    events=st.lists(user_events, max_size=3).map(tuple),
)
MESSAGE_STRATEGIES = {
    "ping": pings,
    "indirect_ping": indirect_pings,
    "ack": acks,
    "nack": nacks,
    "alive": alives,
    "suspect": suspects,
    "dead": deads,
    "user_event": user_events,
    "push_pull": push_pulls,
}
messages = st.one_of(*MESSAGE_STRATEGIES.values())
# what the core piggybacks and probes with (a packet budget is about these)
packet_messages = st.one_of(
    pings, indirect_pings, acks, nacks, alives, suspects, deads, user_events
)

# any msgpack value, to feed the decoder structures it does not expect
msgpack_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=False),
        st.text(max_size=8),
        st.binary(max_size=8),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=6), st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)


def bound(msgs: list[Message]) -> int:
    return COMPOUND_OVERHEAD + sum(message_size(m) + PER_MESSAGE_OVERHEAD for m in msgs)


def decodes_or_wire_error(data: bytes) -> None:
    try:
        out = decode_packet(data)
    except WireError:
        return
    assert out and all(type(m) in MESSAGE_TYPES for m in out)


MESSAGE_TYPES = {Ping, IndirectPing, Ack, Nack, Alive, Suspect, Dead, UserEvent, PushPull}

# -- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MESSAGE_STRATEGIES))
def test_every_message_type_round_trips_in_a_packet_and_a_stream(kind: str) -> None:
    @settings(max_examples=60, deadline=None)
    @given(MESSAGE_STRATEGIES[kind])
    def check(message: Message) -> None:
        assert decode_packet(encode_packet([message])) == [message]
        frame = encode_stream(message)
        assert decode_stream_length(frame[:STREAM_PREFIX_BYTES]) == len(frame) - 4
        assert decode_stream_payload(frame[STREAM_PREFIX_BYTES:]) == message

    check()


@settings(max_examples=100, deadline=None)
@given(st.lists(messages, min_size=1, max_size=20))
def test_a_compound_packet_round_trips_in_order(msgs: list[Message]) -> None:
    assert decode_packet(encode_packet(msgs)) == msgs


def test_decoded_tags_are_read_only_and_equal_whatever_their_order() -> None:
    a = Alive(1, "n", ("h", 1), {"b": "2", "a": "1"})
    b = Alive(1, "n", ("h", 1), {"a": "1", "b": "2"})
    assert encode_packet([a]) == encode_packet([b])
    (decoded,) = decode_packet(encode_packet([a]))
    assert isinstance(decoded, Alive) and decoded == a
    with pytest.raises(TypeError):
        decoded.tags["c"] = "3"  # type: ignore[index]


def test_member_state_is_decoded_as_a_state() -> None:
    pp = PushPull(True, "a", (MemberState("b", ("h", 2), 4, State.LEFT),))
    decoded = decode_stream_payload(encode_stream(pp)[STREAM_PREFIX_BYTES:])
    assert isinstance(decoded, PushPull) and decoded.members[0].state is State.LEFT


# -- golden bytes ----------------------------------------------------------------------------------

GOLDEN_MESSAGES: list[Message] = [
    Ping(7, "b", "a", ("10.0.0.1", 8946)),
    IndirectPing(8, "c", ("10.0.0.3", 8946), "a", ("10.0.0.1", 8946), nack=True),
    Ack(7, "b"),
    Nack(8, "c"),
    Alive(3, "a", ("10.0.0.1", 8946), {"role": "server", "dc": "dc1"}),
    Suspect(2, "c", "a"),
    Dead(2, "c", "a"),
    UserEvent(5, "deploy", b"v2"),
]
GOLDEN_PACKET = (
    "920198950107a162a16192a831302e302e302e31cd22f2970208a16392a831302e302e302e33cd22f2"
    "a16192a831302e302e302e31cd22f2c3930307a162930408a163950503a16192a831302e302e302e31"
    "cd22f282a26463a3646331a4726f6c65a6736572766572940602a163a161940702a163a161940805a6"
    "6465706c6f79c4027632"
)
GOLDEN_PUSH_PULL = PushPull(
    join=True,
    source="a",
    members=(MemberState("a", ("10.0.0.1", 8946), 3, State.ALIVE, {"dc": "dc1"}),),
    event_ltime=5,
    events=(UserEvent(5, "deploy", b"v2"),),
)
GOLDEN_FRAME = (
    "0000003192019609c3a1619195a16192a831302e302e302e31cd22f2030081a26463a3646331059193"
    "05a66465706c6f79c4027632"
)


def test_golden_packet_bytes_do_not_drift() -> None:
    """A change here breaks every node of an older version: bump WIRE_VERSION instead."""
    assert encode_packet(GOLDEN_MESSAGES).hex() == GOLDEN_PACKET
    assert decode_packet(bytes.fromhex(GOLDEN_PACKET)) == GOLDEN_MESSAGES


def test_golden_stream_frame_bytes_do_not_drift() -> None:
    frame = bytes.fromhex(GOLDEN_FRAME)
    assert encode_stream(GOLDEN_PUSH_PULL).hex() == GOLDEN_FRAME
    assert decode_stream_payload(frame[STREAM_PREFIX_BYTES:]) == GOLDEN_PUSH_PULL


# -- sizes ------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(messages)
def test_message_size_is_exact_inside_a_packet(message: Message) -> None:
    packet = encode_packet([message])
    assert len(packet) == 3 + message_size(message)  # [version, [m]]: 1 + 1 + 1 + m
    assert len(packet) <= bound([message])


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(packet_messages, min_size=1, max_size=300))
def test_packet_size_never_exceeds_the_bound_for_any_count(msgs: list[Message]) -> None:
    assert len(encode_packet(msgs)) <= bound(msgs)


@pytest.mark.parametrize("k", [1, 15, 16, 17, 65535, 65536])
def test_bound_holds_where_msgpack_array_headers_grow(k: int) -> None:
    msgs: list[Message] = [Ack(0)] * k  # the smallest message: the header weighs the most
    packet = encode_packet(msgs)
    assert len(packet) <= bound(msgs)
    assert len(packet) >= bound(msgs) - 4  # and the bound is tight: at most 4 bytes spare


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(packet_messages, min_size=1, max_size=300))
def test_packing_by_the_bound_fits_the_encrypted_udp_budget(msgs: list[Message]) -> None:
    """How the core fills a packet: add message sizes until the budget left by
    encryption would be exceeded; the packet then always fits."""
    budget = MAX_PACKET_BYTES - ENCRYPTION_OVERHEAD
    packed: list[Message] = []
    used = COMPOUND_OVERHEAD
    for m in msgs:
        cost = message_size(m) + PER_MESSAGE_OVERHEAD
        if used + cost > budget:
            continue
        packed.append(m)
        used += cost
    if packed:
        packet = encode_packet(packed)
        assert len(packet) <= used <= MAX_PACKET_BYTES - 29
        assert len(packet) + ENCRYPTION_OVERHEAD <= MAX_PACKET_BYTES


def test_tags_size_is_the_encoded_size_of_the_tags() -> None:
    t = {"region": "eu", "dc": "dc1"}
    assert tags_size(t) == len(msgpack.packb(t))
    assert tags_size({}) == 1
    alive = Alive(0, "n", ("h", 1), t)
    assert message_size(alive) == message_size(Alive(0, "n", ("h", 1))) - 1 + tags_size(t)


def test_user_event_size_counts_utf8_name_and_payload() -> None:
    assert user_event_size("é", b"ab") == 4


def test_a_push_pull_of_ten_thousand_members_with_full_tags_fits_a_frame() -> None:
    pad = "x" * 400
    base = {"dc": "dc1", "region": "eu-west-1", "rpc_addr": "10.20.30.40:6868", "server": "true"}
    while tags_size(dict(base, pad=pad + "x")) <= META_MAX_BYTES:
        pad += "x"
    full = dict(base, pad=pad)
    assert tags_size(full) == META_MAX_BYTES
    members = tuple(
        MemberState(
            f"node-{i:05d}.cluster-a.datacenter-eu-west-1.example.com",
            (f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 8946),
            i,
            State.ALIVE,
            full,
        )
        for i in range(10_000)
    )
    events = tuple(UserEvent(i, "deploy", b"p" * (USER_EVENT_MAX_BYTES - 6)) for i in range(512))
    pp = PushPull(False, "node-00000", members, event_ltime=600, events=events)
    frame = encode_stream(pp)
    assert len(frame) - STREAM_PREFIX_BYTES <= MAX_STREAM_BYTES
    assert decode_stream_payload(frame[STREAM_PREFIX_BYTES:]) == pp


def test_a_frame_over_the_limit_is_refused_both_ways() -> None:
    with pytest.raises(WireError, match="over the"):
        decode_stream_length((MAX_STREAM_BYTES + 1).to_bytes(4, "big"))
    assert decode_stream_length(MAX_STREAM_BYTES.to_bytes(4, "big")) == MAX_STREAM_BYTES
    with pytest.raises(WireError, match="prefix is 4 bytes"):
        decode_stream_length(b"\x00\x01")
    with pytest.raises(WireError, match="over the"):
        decode_stream_payload(b"\x00" * (MAX_STREAM_BYTES + 1))
    member = MemberState("n" * 200, ("h" * 200, 1), 0, State.ALIVE, {"t": "v" * 400})
    huge = PushPull(False, "a", (member,) * 12_000)
    with pytest.raises(WireError, match="over the"):
        encode_stream(huge)


def test_an_integer_beyond_64_bits_cannot_be_encoded() -> None:
    with pytest.raises(WireError, match="cannot encode"):
        encode_packet([Ack(2**64)])


def test_an_empty_packet_is_neither_encoded_nor_decoded() -> None:
    with pytest.raises(WireError, match="at least one message"):
        encode_packet([])
    with pytest.raises(WireError, match="at least one message"):
        decode_packet(msgpack.packb([WIRE_VERSION, []]))


def test_a_non_message_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="not a gossip message"):
        encode_packet(["ping"])  # type: ignore[list-item]


# -- validation: each problem is named ---------------------------------------------------------


def packet_of(*wire_messages: object) -> bytes:
    return msgpack.packb([WIRE_VERSION, list(wire_messages)], use_bin_type=True)


ADDR = ["10.0.0.1", 8946]


@pytest.mark.parametrize(
    ("wire", "problem"),
    [
        ([1, 1, "b", "a", ["h", 70000]], "port must be an integer in 0..65535"),
        ([1, 1, "b", "a", ["h", -1]], "port must be an integer in 0..65535"),
        ([1, 1, "b", "a", ["h", True]], "port must be an integer"),
        ([1, 1, "b", "a", ["", 1]], "host must not be empty"),
        ([1, 1, "b", "a", ["h" * 256, 1]], "host is longer than 255"),
        ([1, 1, "b", "a", ["h", 1, 2]], "must be \\[host, port\\]"),
        ([1, 1, "b", "a", "h:1"], "address must be an array"),
        ([1, -1, "b", "a", ADDR], "ping seq must be an unsigned 64-bit integer"),
        ([1, 1.5, "b", "a", ADDR], "ping seq must be an unsigned 64-bit integer"),
        ([1, True, "b", "a", ADDR], "ping seq must be an unsigned 64-bit integer"),
        ([1, 1, "", "a", ADDR], "ping target must not be empty"),
        ([1, 1, b"b", "a", ADDR], "ping target must be a string"),
        ([1, 1, "b" * 257, "a", ADDR], "ping target is longer than 256"),
        ([1, 1, "b", "a"], "a ping message has 5 fields, not 4"),
        ([2, 1, "c", ADDR, "a", ADDR, 1], "ping-req nack must be a boolean"),
        ([3, 1, None], "ack source must be a string"),
        ([5, 1, "a", ADDR, {"k": 1}], "alive tags must map strings to strings"),
        ([5, 1, "a", ADDR, [["k", "v"]]], "alive tags must be a map"),
        ([5, 1, "a", ADDR, {"k": "v" * META_MAX_BYTES}], f"more than {META_MAX_BYTES} bytes"),
        ([6, 1, "c", ""], "suspect source must not be empty"),
        ([7, 1, "", "a"], "dead node must not be empty"),
        ([8, 1, "e", "payload"], "user event payload must be bytes"),
        ([8, 1, "e", b"p" * USER_EVENT_MAX_BYTES], "more than 512 bytes"),
        ([9, 1, "a", [], 0, []], "push-pull join must be a boolean"),
        ([9, True, "a", [["b", ADDR, 1, 4, {}]], 0, []], "state must be a known state"),
        ([9, True, "a", [["b", ADDR, 1, "alive", {}]], 0, []], "state must be a known state"),
        ([9, True, "a", [["b", ADDR, 1, 0]], 0, []], "push-pull member has 5 fields"),
        ([9, True, "a", {}, 0, []], "push-pull members must be an array"),
        ([9, True, "a", [], 0, [[1, "e"]]], "push-pull event has 3 fields"),
        ([10, 1], "unknown message type 10"),
        (["ping", 1], "unknown message type 'ping'"),
        ([True, 1], "unknown message type True"),
        ([], "a message needs a type"),
        ({"type": 1}, "message must be an array"),
    ],
)
def test_malformed_messages_are_rejected_naming_the_problem(wire: object, problem: str) -> None:
    with pytest.raises(WireError, match=problem):
        decode_packet(packet_of(wire))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "not msgpack"),
        (b"\xc1", "not msgpack"),
        (msgpack.packb([1, [[3, 1, "a"]]]) + b"\x00", "not msgpack"),
        (msgpack.packb([2, [[3, 1, "a"]]]), "unsupported wire version 2"),
        (msgpack.packb(["1", [[3, 1, "a"]]]), "unsupported wire version '1'"),
        (msgpack.packb([1, [[3, 1, "a"]], 0]), "packet is \\[version, body\\]"),
        (msgpack.packb([1, [3, 1, "a"]]), "message must be an array"),
        (msgpack.packb([1, {"m": 1}]), "packet messages must be an array"),
        (msgpack.packb({"v": 1}), "packet must be an array"),
        (b"\xa2\xff\xfe", "not msgpack"),  # a str that is not UTF-8
        (b"\x00" * 70_000, "over the 65535 limit"),
    ],
)
def test_malformed_packets_are_rejected_naming_the_problem(data: bytes, problem: str) -> None:
    with pytest.raises(WireError, match=problem):
        decode_packet(data)


def test_a_user_event_name_is_limited_by_the_event_size_only() -> None:
    event = UserEvent(1, "n" * 300, b"p" * (USER_EVENT_MAX_BYTES - 300))
    assert decode_packet(encode_packet([event])) == [event]


def test_a_packet_with_one_bad_message_is_dropped_whole() -> None:
    data = packet_of([3, 1, "a"], [1, 1, "b", "a", ["h", 70000]])
    with pytest.raises(WireError):
        decode_packet(data)


def test_extra_trailing_fields_from_a_later_version_are_ignored() -> None:
    data = packet_of([3, 1, "a", "future"], [5, 1, "a", ADDR, {}, 1, 2])
    assert decode_packet(data) == [Ack(1, "a"), Alive(1, "a", ("10.0.0.1", 8946))]


def test_a_stream_frame_is_checked_like_a_packet() -> None:
    with pytest.raises(WireError, match="unsupported wire version"):
        decode_stream_payload(msgpack.packb([9, [3, 1, "a"]]))
    with pytest.raises(WireError, match="frame is \\[version, body\\]"):
        decode_stream_payload(msgpack.packb([1]))
    with pytest.raises(WireError, match="not msgpack"):
        decode_stream_payload(b"")


# -- fuzz: whatever arrives, only WireError --------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_wire_error(data: bytes) -> None:
    decodes_or_wire_error(data)
    try:
        decode_stream_payload(data)
    except WireError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.lists(messages, min_size=1, max_size=6), st.data())
def test_truncated_packets_only_raise_wire_error(msgs: list[Message], data: st.DataObject) -> None:
    packet = encode_packet(msgs)
    cut = data.draw(st.integers(min_value=0, max_value=len(packet) - 1))
    with pytest.raises(WireError):
        decode_packet(packet[:cut])


@settings(max_examples=200, deadline=None)
@given(st.lists(messages, min_size=1, max_size=6), st.data())
def test_bit_flips_of_valid_packets_only_raise_wire_error(
    msgs: list[Message], data: st.DataObject
) -> None:
    packet = bytearray(encode_packet(msgs))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        i = data.draw(st.integers(min_value=0, max_value=len(packet) - 1))
        packet[i] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    decodes_or_wire_error(bytes(packet))


@settings(max_examples=150, deadline=None)
@given(messages, st.data())
def test_a_field_replaced_by_any_value_only_raises_wire_error(
    message: Message, data: st.DataObject
) -> None:
    wire = message_to_wire(message)
    target = wire
    # walk down into a nested array sometimes (addresses, members, events)
    while True:
        i = data.draw(st.integers(min_value=0, max_value=len(target) - 1))
        if type(target[i]) is list and target[i] and data.draw(st.booleans()):
            target = target[i]
            continue
        target[i] = data.draw(msgpack_values)
        break
    decodes_or_wire_error(packet_of(wire))


@settings(max_examples=150, deadline=None)
@given(msgpack_values)
def test_arbitrary_msgpack_structures_only_raise_wire_error(value: object) -> None:
    decodes_or_wire_error(msgpack.packb(value))
    decodes_or_wire_error(packet_of(value))
    if isinstance(value, list):
        for code in range(1, 10):
            decodes_or_wire_error(packet_of([code, *value]))
