"""The fast constructors of Raft's frozen values build exactly what attrs would."""

from __future__ import annotations

import attrs
import pytest

from trickle.raft._fastinit import fast_frozen_init, frozen_factory
from trickle.raft.core import ReadState, Ready, Role, SoftState
from trickle.raft.messages import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    NodeId,
    SnapshotMeta,
)

FULL_MESSAGE = {
    "type": MessageType.SNAPSHOT,
    "src": NodeId("a"),
    "dst": NodeId("b"),
    "term": 7,
    "log_term": 6,
    "index": 40,
    "entries": (Entry(6, 41, EntryKind.NORMAL, b"x"),),
    "commit": 39,
    "reject": True,
    "reject_hint": 12,
    "context": b"ctx",
    "snapshot": SnapshotMeta(index=30, term=5, conf=ConfState(voters=frozenset({NodeId("a")}))),
    "offset": 1024,
    "data": b"chunk",
    "done": True,
}


def test_message_holds_every_field_given_and_the_defaults_of_the_others() -> None:
    assert attrs.asdict(Message(**FULL_MESSAGE), recurse=False) == FULL_MESSAGE
    short = Message(type=MessageType.APPEND, src=NodeId("a"), dst=NodeId("b"), term=3)
    defaults = {f.name: f.default for f in attrs.fields(Message) if f.default is not attrs.NOTHING}
    assert attrs.asdict(short, recurse=False) == {
        **defaults,
        "type": MessageType.APPEND,
        "src": "a",
        "dst": "b",
        "term": 3,
    }


@pytest.mark.parametrize(
    ("cls", "args", "kwargs"),
    [
        (Message, (), FULL_MESSAGE),
        (Entry, (2, 9), {"kind": EntryKind.CONF_CHANGE, "data": b"c"}),
        (HardState, (4, NodeId("z"), 8), {}),
        (SoftState, (), {"role": Role.LEADER, "leader": NodeId("a"), "term": 1}),
        (ReadState, (5, b"r"), {}),
        (Ready, (), {"entries": (Entry(1, 1),), "committed_entries": (Entry(1, 1),)}),
    ],
)
def test_factory_builds_a_value_equal_to_the_class_call(
    cls: type, args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    make = frozen_factory(cls)
    built, called = make(*args, **kwargs), cls(*args, **kwargs)
    assert type(built) is cls
    assert built == called and hash(built) == hash(called)
    assert attrs.asdict(built, recurse=False) == attrs.asdict(called, recurse=False)


def test_wrong_arguments_are_refused_as_by_attrs() -> None:
    make = frozen_factory(Message)
    with pytest.raises(TypeError, match="term"):
        Message(type=MessageType.APPEND, src=NodeId("a"), dst=NodeId("b"))  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="term"):
        make(type=MessageType.APPEND, src="a", dst="b")
    with pytest.raises(TypeError):
        Message(MessageType.APPEND, "a", "b", 1)  # type: ignore[misc]  # keyword-only
    with pytest.raises(TypeError, match="bogus"):
        make(type=MessageType.APPEND, src="a", dst="b", term=1, bogus=2)
    with pytest.raises(TypeError):
        Entry(1)  # type: ignore[call-arg]


def test_values_stay_frozen() -> None:
    message = frozen_factory(Message)(**FULL_MESSAGE)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        message.term = 8  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        HardState().commit = 1  # type: ignore[misc]


def test_evolve_goes_through_the_fast_init() -> None:
    message = Message(**FULL_MESSAGE)
    assert attrs.evolve(message, term=9) == Message(**{**FULL_MESSAGE, "term": 9})


def test_classes_it_cannot_build_exactly_are_refused() -> None:
    @attrs.frozen
    class Validated:
        x: int = attrs.field(validator=attrs.validators.instance_of(int))

    @attrs.frozen
    class Factoried:
        x: list[int] = attrs.field(factory=list)

    @attrs.frozen(slots=False)
    class NotSlotted:
        x: int

    @attrs.frozen
    class PostInit:
        x: int

        def __attrs_post_init__(self) -> None:
            pass

    for cls in (Validated, Factoried, NotSlotted, PostInit):
        with pytest.raises(TypeError):
            fast_frozen_init(cls)
        with pytest.raises(TypeError):
            frozen_factory(cls)
