"""Tunables of SWIM membership, with memberlist's presets and the formulas they feed."""

from __future__ import annotations

import math
from typing import Any

import attrs

from trickle.errors import ValidationError

MAX_PACKET_BYTES = 1400  # UDP payload budget of one compound packet, encryption included
META_MAX_BYTES = 512  # encoded tags of one member (memberlist's MetaMaxSize)
USER_EVENT_MAX_BYTES = 512  # name + payload of one user event (serf's UserEventSizeLimit)
EVENT_BUFFER = 512  # user events remembered for de-duplication (serf's EventBuffer)
DEFAULT_PORT = 8946  # gossip port, UDP and TCP (Dkron's / serf's)


@attrs.frozen(kw_only=True)
class GossipConfig:
    """How one member probes, suspects and spreads news. Presets: `lan()` (the default
    values below), `wan()`, `local()` and `fast()`, all with memberlist's numbers except
    `fast()`.

    probe_interval: seconds between two probes of this member. SWIM's first detection of a
        failure takes e/(e-1) * probe_interval on average; shorter detects sooner and costs
        one ping and one ack more per member per second.
    probe_timeout: seconds to wait for a direct ack before asking `indirect_checks` others
        to probe; must exceed the network's round trip (99th percentile) and be below
        probe_interval. A TCP probe runs beside the indirect ones until the period ends.
    indirect_checks: members asked to probe a target that missed its direct ack. More
        checks resist loss on one path (false suspicion ~ loss^(2 * k)); each costs 4
        packets.
    suspicion_mult: a suspect is declared dead after at least
        suspicion_mult * max(1, log10(n)) * probe_interval seconds (n = members alive);
        higher raises fewer false alarms and detects real failures later.
    suspicion_max_timeout_mult: with Lifeguard, the suspicion timer starts at
        suspicion_max_timeout_mult times the minimum above and shrinks (logarithmically)
        towards the minimum as suspicion_mult - 2 independent members confirm it.
    retransmit_mult: each update is piggybacked retransmit_mult * ceil(log10(n + 1))
        times; higher reaches everyone more surely under loss, at more bytes.
    gossip_interval: seconds between gossip rounds (updates sent to `gossip_nodes` random
        members, apart from probes). Convergence ~ log(n) rounds; a round with nothing
        to send sends nothing.
    gossip_nodes: fan-out of one gossip round.
    gossip_to_the_dead_time: seconds after death during which a dead member is still
        gossiped to, so that it learns it was declared dead and can refute.
    push_pull_interval: seconds between full-state exchanges over TCP with a random
        member; scaled by ceil(log2(n) - log2(32)) + 1 above 32 members (so 180 s at
        n = 1000 on a LAN). 0 disables the periodic exchange (joins still use it).
    awareness_max_multiplier: Lifeguard's local health: a member that misses acks and
        nacks slows its own probing (interval and timeout) up to this factor, so a slow
        member stops accusing healthy ones.
    tcp_timeout: seconds a push-pull or TCP probe connection may take.
    reconnect_interval: seconds between attempts to rejoin a random failed member (how a
        healed partition merges back; serf's ReconnectInterval).
    reconnect_timeout: seconds a failed member is kept (and rejoined) before it is reaped
        and forgotten (serf's ReconnectTimeout; 24 h).
    tombstone_timeout: seconds a member that left is kept before it is reaped (serf's
        TombstoneTimeout; 24 h).
    dead_node_reclaim_time: seconds after which a dead member's name may be taken by a
        node at another address (0: never; a restarted node on a new IP must wait).
    lifeguard: the three Lifeguard extensions (local health, suspicion that shrinks with
        confirmations, telling a suspect at once, plus nacks), and trickle's guards that
        go with them: a probe end or suspicion expiry found late (a stalled member)
        waits once for the packets already received, a suspicion learnt from a push-pull
        starts quietly (the suspect is told; it is no confirmation), a suspect still
        suspected at half and three quarters of the timeout is asked directly, and an
        accusation is answered straight to the accuser. Off is plain SWIM with a fixed suspicion
        timeout (memberlist without Lifeguard); it exists to measure what Lifeguard buys.
    max_packet_bytes: UDP payload budget of one packet, encryption overhead included.
    """

    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    retransmit_mult: int = 4
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    gossip_to_the_dead_time: float = 30.0
    push_pull_interval: float = 30.0
    awareness_max_multiplier: int = 8
    tcp_timeout: float = 10.0
    reconnect_interval: float = 30.0
    reconnect_timeout: float = 24 * 3600.0
    tombstone_timeout: float = 24 * 3600.0
    dead_node_reclaim_time: float = 0.0
    lifeguard: bool = True
    max_packet_bytes: int = MAX_PACKET_BYTES

    def __attrs_post_init__(self) -> None:
        positive = ("probe_interval", "probe_timeout", "gossip_interval", "tcp_timeout")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValidationError(f"{name} must be positive", field=name)
        if self.probe_timeout >= self.probe_interval:
            raise ValidationError(
                "probe_timeout must be shorter than probe_interval", field="probe_timeout"
            )
        at_least_one = (
            "suspicion_mult",
            "suspicion_max_timeout_mult",
            "retransmit_mult",
            "gossip_nodes",
            "awareness_max_multiplier",
        )
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise ValidationError(f"{name} must be at least 1", field=name)
        if self.indirect_checks < 0:
            raise ValidationError("indirect_checks must not be negative", field="indirect_checks")
        not_negative = (
            "gossip_to_the_dead_time",
            "push_pull_interval",
            "reconnect_interval",
            "reconnect_timeout",
            "tombstone_timeout",
            "dead_node_reclaim_time",
        )
        for name in not_negative:
            if getattr(self, name) < 0:
                raise ValidationError(f"{name} must not be negative", field=name)
        if self.max_packet_bytes < 512:
            raise ValidationError("max_packet_bytes must be at least 512", field="max_packet_bytes")

    # -- formulas ---------------------------------------------------------------------

    def suspicion_timeout(self, n: int) -> float:
        """Seconds before a suspect is declared dead with no confirmation from others:
        suspicion_mult * max(1, log10(n)) * probe_interval (8 s at n = 100 on a LAN)."""
        scale = max(1.0, math.log10(max(1, n)))
        return self.suspicion_mult * scale * self.probe_interval

    def suspicion_max_timeout(self, n: int) -> float:
        """Where Lifeguard's suspicion timer starts: suspicion_max_timeout_mult times the
        minimum (48 s at n = 100 on a LAN)."""
        return self.suspicion_max_timeout_mult * self.suspicion_timeout(n)

    def suspicion_confirmations(self, n: int) -> int:
        """Independent confirmations that bring the timer down to its minimum:
        suspicion_mult - 2, or 0 when fewer members than that could confirm."""
        k = self.suspicion_mult - 2
        return 0 if n - 2 < k else k

    def retransmit_limit(self, n: int) -> int:
        """Times one update is sent: retransmit_mult * ceil(log10(n + 1))."""
        return self.retransmit_mult * math.ceil(math.log10(n + 1))

    def push_pull_period(self, n: int) -> float:
        """Seconds between periodic push-pulls at n members (memberlist's pushPullScale)."""
        if n <= 32:
            return self.push_pull_interval
        multiplier = math.ceil(math.log2(n) - math.log2(32)) + 1
        return self.push_pull_interval * multiplier


def lan(**overrides: Any) -> GossipConfig:
    """memberlist's DefaultLANConfig: a data-centre network (kill detected in ~10 s at
    n = 100: probe plus suspicion timeout)."""
    return attrs.evolve(GossipConfig(), **overrides)


def wan(**overrides: Any) -> GossipConfig:
    """memberlist's DefaultWANConfig: across the internet; slower, more tolerant."""
    base = GossipConfig(
        probe_interval=5.0,
        probe_timeout=3.0,
        suspicion_mult=6,
        gossip_interval=0.5,
        gossip_nodes=4,
        gossip_to_the_dead_time=60.0,
        push_pull_interval=60.0,
        tcp_timeout=30.0,
    )
    return attrs.evolve(base, **overrides)


def local(**overrides: Any) -> GossipConfig:
    """memberlist's DefaultLocalConfig: one host or a very fast LAN."""
    base = GossipConfig(
        probe_timeout=0.2,
        indirect_checks=1,
        suspicion_mult=3,
        retransmit_mult=2,
        gossip_interval=0.1,
        gossip_to_the_dead_time=15.0,
        push_pull_interval=15.0,
        tcp_timeout=1.0,
    )
    return attrs.evolve(base, **overrides)


def fast(**overrides: Any) -> GossipConfig:
    """trickle's fast-detection profile for a healthy LAN: a kill is declared dead by every
    member in 2.1 s median, 3.0 s p99 at n = 100 (200 simulated kills, 0.5-3 ms one-way
    delays, benchmarks/gossip.py; LAN: 10 s), against the targets of 3 s and 6 s.

    How: probes every 250 ms with a 125 ms ack timeout (a LAN round trip is well under
    10 ms), and suspicion_mult 3, so the suspicion timeout is 3 * max(1, log10 n) probe
    periods (1.5 s at n = 100, 2.25 s at n = 1000). Lifeguard stays effective: the timer
    starts at 6x that and needs one independent confirmation (suspicion_mult - 2) to come
    down, which a dead member gets within a probe period or two, since it is probed ~4
    times a second by the others. suspicion_mult 2 would detect ~0.2 s sooner but needs no
    confirmation at all (one member's bad network is enough to kill another).

    Costs: 4x LAN's probe traffic (a ping and an ack every 250 ms per member), gossip every
    100 ms, push-pull every 15 s. Trade-off: a member that stalls longer than ~1.5 s (GC
    pause, CPU starvation, a VM freeze) while the others probe it is declared dead, then
    refutes and comes back (a FAIL then a JOIN); on a lossy or overloaded network use
    lan()."""
    base = GossipConfig(
        probe_interval=0.25,
        probe_timeout=0.125,
        suspicion_mult=3,
        gossip_interval=0.1,
        gossip_to_the_dead_time=15.0,
        push_pull_interval=15.0,
        tcp_timeout=2.0,
    )
    return attrs.evolve(base, **overrides)


PRESETS = {"lan": lan, "wan": wan, "local": local, "fast": fast}
