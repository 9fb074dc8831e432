"""The values SWIM members exchange and report: messages, member records, events.

Model classes only: the byte encoding lives in `wire.py`, encryption in `keyring.py`.
Every message has a one-line `describe()`, used in logs and golden scripts.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import TypeAlias

import attrs

Address: TypeAlias = tuple[str, int]  # (host, port): where a member's UDP and TCP listen


def _frozen_tags(tags: Mapping[str, str] | None) -> Mapping[str, str]:
    if isinstance(tags, MappingProxyType):
        return tags
    return MappingProxyType(dict(tags or {}))


def _addr(addr: Address) -> str:
    return f"{addr[0]}:{addr[1]}"


def _tags(tags: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items()))


class State(enum.IntEnum):
    """What one member believes of another (memberlist's states, plus LEFT)."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2  # failed: declared dead by suspicion
    LEFT = 3  # left gracefully: a Dead message sent by the member about itself


# -- probes (UDP; a Ping also goes over TCP as the fallback probe) -----------------------


@attrs.frozen(slots=True)
class Ping:
    """Are you alive? `target` names who should answer, so a member that restarted under
    another name (same address) does not ack for the old one."""

    seq: int
    target: str
    source: str
    source_addr: Address

    def describe(self) -> str:
        return f"ping seq={self.seq} {self.source}->{self.target}"


@attrs.frozen(slots=True)
class IndirectPing:
    """Please probe `target` for me and relay its ack; with `nack`, answer Nack if it
    does not ack in time (Lifeguard), so I can tell a dead target from my own bad
    network."""

    seq: int
    target: str
    target_addr: Address
    source: str
    source_addr: Address
    nack: bool = True

    def describe(self) -> str:
        nack = " nack" if self.nack else ""
        return (
            f"ping-req seq={self.seq} {self.source}->{self.target}@{_addr(self.target_addr)}{nack}"
        )


@attrs.frozen(slots=True)
class Ack:
    """The answer to a Ping (or relayed from an IndirectPing), echoing its seq."""

    seq: int
    source: str = ""

    def describe(self) -> str:
        return f"ack seq={self.seq} from={self.source}"


@attrs.frozen(slots=True)
class Nack:
    """An intermediary could not reach the target of an IndirectPing in time."""

    seq: int
    source: str = ""

    def describe(self) -> str:
        return f"nack seq={self.seq} from={self.source}"


# -- membership updates (piggybacked broadcasts) ------------------------------------------


@attrs.frozen(slots=True)
class Alive:
    """`node` is alive at `incarnation`, listens at `addr` and carries `tags`. A higher
    incarnation overrides any older news; the node itself raises it to refute."""

    incarnation: int
    node: str
    addr: Address
    tags: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_tags)

    def describe(self) -> str:
        tags = f" tags={_tags(self.tags)}" if self.tags else ""
        return f"alive {self.node}#{self.incarnation} @{_addr(self.addr)}{tags}"


@attrs.frozen(slots=True)
class Suspect:
    """`source` suspects `node` at `incarnation` (it missed direct and indirect probes)."""

    incarnation: int
    node: str
    source: str

    def describe(self) -> str:
        return f"suspect {self.node}#{self.incarnation} by={self.source}"


@attrs.frozen(slots=True)
class Dead:
    """`node` is dead at `incarnation`, declared by `source`. When `source == node`, the
    node left gracefully (it is LEFT, not failed)."""

    incarnation: int
    node: str
    source: str

    @property
    def is_leave(self) -> bool:
        return self.source == self.node

    def describe(self) -> str:
        kind = "leave" if self.is_leave else "dead"
        return f"{kind} {self.node}#{self.incarnation} by={self.source}"


@attrs.frozen(slots=True)
class UserEvent:
    """A user event, fire and forget, ordered and de-duplicated by its Lamport time.
    `name` + `payload` are at most USER_EVENT_MAX_BYTES."""

    ltime: int
    name: str
    payload: bytes = b""

    def describe(self) -> str:
        return f"event {self.name}@{self.ltime} {len(self.payload)}B"


# -- full state (TCP) ------------------------------------------------------------------------


@attrs.frozen(slots=True)
class MemberState:
    """One member as a push-pull carries it."""

    name: str
    addr: Address
    incarnation: int
    state: State
    tags: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_tags)

    def describe(self) -> str:
        return f"{self.name}#{self.incarnation}={self.state.name.lower()}"


@attrs.frozen(slots=True)
class PushPull:
    """Everything the sender knows, sent over TCP on join and periodically; the receiver
    answers with its own (join=False). `event_ltime` is the sender's user-event clock;
    `events` its recent user events, so a joiner can catch up on them."""

    join: bool
    source: str
    members: tuple[MemberState, ...]
    event_ltime: int = 0
    events: tuple[UserEvent, ...] = ()

    def describe(self) -> str:
        kind = "join" if self.join else "sync"
        return f"push-pull {kind} from={self.source} members={len(self.members)} ltime={self.event_ltime}"


Message: TypeAlias = (
    Ping | IndirectPing | Ack | Nack | Alive | Suspect | Dead | UserEvent | PushPull
)
Broadcast: TypeAlias = Alive | Suspect | Dead | UserEvent  # the messages piggybacked on others


@attrs.frozen(slots=True)
class Outgoing:
    """Messages for the driver to send to `to`. Over UDP (`stream` false) they form one
    compound packet whose encoding fits the packet budget. Over TCP (`stream` true) it is
    one request (a PushPull, or a Ping as the fallback probe); the driver feeds the
    answer, if any, back through `Membership.receive`, and drops it silently if the
    connection fails."""

    to: Address
    messages: tuple[Message, ...]
    stream: bool = False

    def describe(self) -> str:
        via = "tcp" if self.stream else "udp"
        body = "; ".join(m.describe() for m in self.messages)
        return f"{via} ->{_addr(self.to)}: {body}"


# -- what the core reports -------------------------------------------------------------------


@attrs.frozen(slots=True)
class Member:
    """One member as this node sees it. `state_since` is the `now` of the last change."""

    name: str
    addr: Address
    incarnation: int
    state: State
    tags: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_tags)
    state_since: float = 0.0

    def describe(self) -> str:
        tags = f" tags={_tags(self.tags)}" if self.tags else ""
        return f"{self.name}#{self.incarnation} {self.state.name.lower()} @{_addr(self.addr)}{tags}"


class EventKind(enum.Enum):
    JOIN = "join"  # a member became alive (first seen, or back from dead/left)
    UPDATE = "update"  # an alive member changed its tags or address
    LEAVE = "leave"  # a member left gracefully
    FAIL = "fail"  # a member was declared dead
    REAP = "reap"  # a dead or left member was forgotten


@attrs.frozen(slots=True)
class MemberEvent:
    """A change of membership as this node saw it."""

    kind: EventKind
    member: Member

    def describe(self) -> str:
        return f"{self.kind.value} {self.member.describe()}"


@attrs.frozen(slots=True)
class UserEventReceived:
    """A user event delivered once to this node (de-duplicated by Lamport time)."""

    ltime: int
    name: str
    payload: bytes

    def describe(self) -> str:
        return f"user-event {self.name}@{self.ltime} {len(self.payload)}B"


Event: TypeAlias = MemberEvent | UserEventReceived
