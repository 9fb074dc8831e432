"""The SWIM membership state machine, with Lifeguard. No networking code at all.

`Membership` is one member's view of the cluster. It takes decoded messages, TCP requests
and the passing of time (`now`, seconds on any monotonic scale), and hands back what it
wants sent (`take_outgoing`) and what changed (`take_events`). It never reads a clock, a
socket or the global random: time is passed in and randomness comes from the injected
`random.Random`, so a whole cluster replays exactly from a seed. The Trio driver beside
it (`driver.py`) and the simulator (`trickle.testing.gossipsim`) do the I/O.

What it does, after memberlist and serf:

- probes one member per probe period in a shuffled round-robin order: a Ping, then after
  probe_timeout IndirectPings through `indirect_checks` members and a Ping over TCP; no
  ack by the end of the period makes the target a suspect;
- suspicion with incarnation numbers: a suspect refutes with a higher incarnation; an
  unrefuted suspicion declares the member dead;
- Lifeguard: nacks and a local health score that slows this member's probing when it is
  the one missing acks; a suspicion timer that starts long and shrinks with independent
  confirmations; a suspect is told at once (the Suspect rides on the next Ping to it);
- broadcasts piggybacked on every UDP packet, each sent retransmit_limit(n) times, plus a
  gossip round to `gossip_nodes` random members every gossip_interval;
- push-pull full-state exchange over TCP on join and periodically;
- graceful leave (LEFT, never FAIL), rejoining failed members (how partitions heal),
  reaping dead and left members after their timeouts;
- tags with updates, and user events de-duplicated by Lamport time.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

import attrs

from trickle.gossip.config import GossipConfig
from trickle.gossip.messages import (
    Address,
    Event,
    Member,
    Message,
    Outgoing,
)

REAP_INTERVAL = 15.0  # seconds between two sweeps for members to reap (serf's ReapInterval)


@attrs.frozen(kw_only=True)
class GossipStats:
    """Counters and gauges of one member (all counters since creation)."""

    alive: int  # members alive, this one included
    suspect: int
    dead: int  # failed, not yet reaped
    left: int  # left, not yet reaped
    incarnation: int  # this member's
    health_score: int  # Lifeguard's local health: 0 is healthy
    event_ltime: int  # user-event Lamport clock
    probes: int  # probes started
    probes_failed: int  # probes with no ack by the end of the period
    indirect_probes: int  # IndirectPings sent
    suspicions: int  # members this one began to suspect
    refutations: int  # times this member refuted news of its own death or suspicion
    failures: int  # members declared dead (by anyone) as seen here
    messages_received: int
    messages_ignored: int  # stale, misaddressed or from an unknown probe
    broadcasts_queued: int  # pending piggybacked updates


class Membership:
    """One member's SWIM state machine. See the module docstring for what it does.

    Inputs: `receive` (a UDP packet's messages, or the answer to a TCP request),
    `receive_stream` (a TCP request, answered at once), `poll` (time has passed: run
    timers due at `now`), and the operations `join`, `leave`, `set_tags`,
    `send_user_event`. `now` must never go backwards.

    Outputs: `take_outgoing()` (messages to send; UDP packets fit the packet budget),
    `take_events()` (membership changes and user events, in order), `next_deadline()`
    (when `poll` must be called next).

    The member itself is in `members()` from the start (a JOIN event reports it).
    """

    def __init__(
        self,
        name: str,
        addr: Address,
        *,
        config: GossipConfig,
        rng: random.Random,
        now: float,
        tags: Mapping[str, str] | None = None,
        incarnation: int = 0,
        event_ltime: int = 0,
    ) -> None:
        raise NotImplementedError

    @property
    def name(self) -> str:
        raise NotImplementedError

    @property
    def addr(self) -> Address:
        raise NotImplementedError

    @property
    def config(self) -> GossipConfig:
        raise NotImplementedError

    @property
    def leaving(self) -> bool:
        """True once `leave` was called."""
        raise NotImplementedError

    # -- inputs ------------------------------------------------------------------------------

    def receive(self, source: Address, messages: Iterable[Message], *, now: float) -> None:
        """Handle the messages of one UDP packet from `source` (or the answer to a TCP
        request this member made). Stale or misaddressed messages are ignored and counted;
        a PushPull here is the answer to this member's own push-pull and is merged."""
        raise NotImplementedError

    def receive_stream(self, source: Address, message: Message, *, now: float) -> Message | None:
        """Handle one TCP request and return the answer to write back on the same
        connection: a PushPull is merged and answered with this member's state; a Ping
        addressed to this member is answered with an Ack. Anything else: None."""
        raise NotImplementedError

    def poll(self, *, now: float) -> None:
        """Run every timer due at or before `now` (probes, timeouts, suspicions, gossip,
        push-pull, rejoin, reaping)."""
        raise NotImplementedError

    def join(self, addresses: Iterable[Address], *, now: float) -> None:
        """Ask each address for a full-state exchange (a TCP PushPull with join=True). The
        driver reports no failure: a join that reached nobody leaves this member alone."""
        raise NotImplementedError

    def leave(self, *, now: float) -> None:
        """Leave gracefully: broadcast this member's own death as a leave, so others mark it
        LEFT, not failed. Probing stops; news of its own death is no longer refuted. Wait for
        `leave_done()` (bounded by a timeout) before shutting the driver down."""
        raise NotImplementedError

    def leave_done(self) -> bool:
        """True when the leave has been sent as often as an update is, or there was nobody
        alive to tell."""
        raise NotImplementedError

    def set_tags(self, tags: Mapping[str, str], *, now: float) -> None:
        """Replace this member's tags and tell everyone (a new incarnation). Raises
        ValidationError if the encoded tags exceed META_MAX_BYTES."""
        raise NotImplementedError

    def send_user_event(self, name: str, payload: bytes = b"", *, now: float) -> int:
        """Broadcast a user event stamped with the next Lamport time, which is returned. It
        is delivered here too (a UserEventReceived). Raises ValidationError if name +
        payload exceed USER_EVENT_MAX_BYTES or the name is empty."""
        raise NotImplementedError

    # -- outputs -----------------------------------------------------------------------------

    def take_outgoing(self) -> list[Outgoing]:
        """What to send, oldest first; the list is emptied."""
        raise NotImplementedError

    def take_events(self) -> list[Event]:
        """What changed, oldest first; the list is emptied."""
        raise NotImplementedError

    def next_deadline(self) -> float:
        """The earliest `now` at which `poll` has work (always finite: the probe timer)."""
        raise NotImplementedError

    # -- queries -----------------------------------------------------------------------------

    def members(self) -> list[Member]:
        """Every member not yet reaped, this one included, sorted by name."""
        raise NotImplementedError

    def member(self, name: str) -> Member | None:
        raise NotImplementedError

    def statistics(self) -> GossipStats:
        raise NotImplementedError
