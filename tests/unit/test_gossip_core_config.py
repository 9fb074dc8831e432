"""The presets and formulas of GossipConfig against memberlist's numbers (anchors.md 3.3),
and the core using them as memberlist does."""

from __future__ import annotations

import random

import pytest

from trickle.gossip.config import MAX_PACKET_BYTES, GossipConfig, lan, local, wan
from trickle.gossip.core import Membership
from trickle.gossip.messages import Alive, MemberState, State, Suspect

PORT = 8946

PRESET_FIELDS = (
    "probe_interval",
    "probe_timeout",
    "indirect_checks",
    "suspicion_mult",
    "suspicion_max_timeout_mult",
    "retransmit_mult",
    "gossip_interval",
    "gossip_nodes",
    "gossip_to_the_dead_time",
    "push_pull_interval",
    "awareness_max_multiplier",
    "tcp_timeout",
)

# memberlist's DefaultLANConfig / DefaultWANConfig / DefaultLocalConfig (config.go)
MEMBERLIST = {
    "lan": (1.0, 0.5, 3, 4, 6, 4, 0.2, 3, 30.0, 30.0, 8, 10.0),
    "wan": (5.0, 3.0, 3, 6, 6, 4, 0.5, 4, 60.0, 60.0, 8, 30.0),
    "local": (1.0, 0.2, 1, 3, 6, 2, 0.1, 3, 15.0, 15.0, 8, 1.0),
}


@pytest.mark.parametrize("name", ["lan", "wan", "local"])
def test_presets_carry_memberlists_defaults(name: str) -> None:
    config = {"lan": lan, "wan": wan, "local": local}[name]()
    assert tuple(getattr(config, f) for f in PRESET_FIELDS) == MEMBERLIST[name]
    assert config.max_packet_bytes == MAX_PACKET_BYTES == 1400  # UDPBufferSize
    assert config.lifeguard


@pytest.mark.parametrize(
    ("n", "minimum", "maximum"),
    [(1, 4.0, 24.0), (10, 4.0, 24.0), (100, 8.0, 48.0), (1000, 12.0, 72.0)],
)
def test_suspicion_timeouts_at_lan_defaults(n: int, minimum: float, maximum: float) -> None:
    config = lan()
    assert config.suspicion_timeout(n) == pytest.approx(minimum)
    assert config.suspicion_max_timeout(n) == pytest.approx(maximum)


@pytest.mark.parametrize(("n", "limit"), [(1, 4), (9, 4), (10, 8), (100, 12), (1000, 16)])
def test_retransmit_limit_at_lan_defaults(n: int, limit: int) -> None:
    assert lan().retransmit_limit(n) == limit  # 4 * ceil(log10(n + 1))


@pytest.mark.parametrize(
    ("n", "period"), [(1, 30.0), (32, 30.0), (33, 60.0), (64, 60.0), (65, 90.0), (1000, 180.0)]
)
def test_push_pull_period_scales_like_memberlist(n: int, period: float) -> None:
    assert lan().push_pull_period(n) == period


@pytest.mark.parametrize(("n", "needed"), [(2, 0), (3, 0), (4, 2), (1000, 2)])
def test_confirmations_expected(n: int, needed: int) -> None:
    assert lan().suspicion_confirmations(n) == needed  # SuspicionMult - 2, 0 if n - 2 < k


def test_bad_configs_are_refused_naming_the_field() -> None:
    from trickle.errors import ValidationError

    for bad, field in [
        ({"probe_timeout": 1.0}, "probe_timeout"),
        ({"probe_interval": 0}, "probe_interval"),
        ({"gossip_nodes": 0}, "gossip_nodes"),
        ({"indirect_checks": -1}, "indirect_checks"),
        ({"reconnect_timeout": -1}, "reconnect_timeout"),
        ({"max_packet_bytes": 100}, "max_packet_bytes"),
    ]:
        with pytest.raises(ValidationError) as info:
            GossipConfig(**bad)  # type: ignore[arg-type]
        assert info.value.field == field


# -- the core applies them ---------------------------------------------------------------


def cluster_member(n: int, config: GossipConfig | None = None) -> Membership:
    """Member m0 of n that know each other, events and outgoing drained."""
    known = [MemberState(f"m{i}", (f"m{i}", PORT), 0, State.ALIVE) for i in range(1, n)]
    core = Membership(
        "m0", ("m0", PORT), config=config or lan(), rng=random.Random(n), now=0.0, known=known
    )
    core.take_events()
    core.take_outgoing()
    return core


def test_suspicion_at_1000_members_starts_at_72_s_and_shrinks_to_12_s() -> None:
    core = cluster_member(1000)
    core.receive(("m1", PORT), [Suspect(0, "m9", "m1")], now=10.0)
    view = core.suspicion("m9")
    assert view is not None and view.needed == 2
    assert view.deadline - view.since == pytest.approx(72.0)
    core.receive(("m2", PORT), [Suspect(0, "m9", "m2")], now=11.0)
    view = core.suspicion("m9")
    # memberlist's remainingSuspicionTime: max - log(c+1)/log(k+1) * (max - min), in ms
    assert view is not None and view.confirmations == 1
    assert view.deadline - view.since == pytest.approx(34.144, abs=1e-6)
    core.receive(("m3", PORT), [Suspect(0, "m9", "m3")], now=12.0)
    view = core.suspicion("m9")
    assert view is not None and view.deadline - view.since == pytest.approx(12.0)
    core.receive(("m4", PORT), [Suspect(0, "m9", "m4")], now=13.0)  # beyond k: ignored
    view = core.suspicion("m9")
    assert view is not None and view.confirmations == 2


def test_a_confirmation_from_the_same_member_twice_counts_once() -> None:
    core = cluster_member(1000)
    core.receive(("m1", PORT), [Suspect(0, "m9", "m1")], now=10.0)
    core.receive(("m2", PORT), [Suspect(0, "m9", "m2")], now=11.0)
    core.receive(("m2", PORT), [Suspect(0, "m9", "m2")], now=11.5)
    view = core.suspicion("m9")
    assert view is not None and view.confirmations == 1


def test_without_lifeguard_the_suspicion_timeout_is_the_minimum() -> None:
    core = cluster_member(1000, lan(lifeguard=False))
    core.receive(("m1", PORT), [Suspect(0, "m9", "m1")], now=10.0)
    core.receive(("m2", PORT), [Suspect(0, "m9", "m2")], now=11.0)
    view = core.suspicion("m9")
    assert view is not None and view.needed == 0 and view.confirmations == 0
    assert view.deadline - view.since == pytest.approx(12.0)


@pytest.mark.parametrize("n", [2, 10, 100])
def test_an_update_is_sent_exactly_retransmit_limit_times(n: int) -> None:
    core = cluster_member(n)
    core.receive(("m1", PORT), [Alive(3, "m1", ("m1", PORT), {"role": "x"})], now=0.0)
    sends = 0
    now = 0.0
    while core.statistics().broadcasts_queued and now < 600:
        now = core.next_deadline()
        core.poll(now=now)
        for out in core.take_outgoing():
            sends += sum(isinstance(m, Alive) and m.node == "m1" for m in out.messages)
    assert sends == lan().retransmit_limit(n)
