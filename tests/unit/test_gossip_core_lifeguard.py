"""Lifeguard in the gossip core, on a tiny timed network: nacks, local health, suspicion."""

from __future__ import annotations

import itertools

import pytest

from trickle.gossip.config import lan
from trickle.gossip.messages import Ping, Suspect
from trickle.testing.gossipenv import TinyNet


def test_nacks_reach_the_prober_before_its_probe_ends() -> None:
    # b dies; whoever probes b hears nacks from the helpers, so nobody's health suffers
    net = TinyNet(["a", "b", "c", "d", "e"])
    net.run_until(5.0)
    net.down.add("b")
    net.run_until(12.0)
    probed_b = {prober for t, prober, target in net.pings if target == "b" and t >= 5.0}
    assert probed_b, "nobody probed b"
    for name in "acde":
        stats = net.cores[name].statistics()
        assert stats.health_score == 0, f"{name}: {stats}"


def test_a_member_cut_off_from_everyone_raises_its_own_health_score() -> None:
    net = TinyNet(["a", "b", "c", "d", "e"])
    net.run_until(5.0)
    for other in "bcde":
        net.cut.add(frozenset(("a", other)))
    net.run_until(9.0)
    assert net.cores["a"].statistics().health_score >= 3  # 3 nacks missed per probe
    for name in "bcde":
        assert net.cores[name].statistics().health_score == 0


def test_an_unhealthy_member_probes_less_often() -> None:
    net = TinyNet(["a", "b", "c", "d", "e"])
    net.run_until(5.0)
    for other in "bcde":
        net.cut.add(frozenset(("a", other)))
    net.pings.clear()
    net.run_until(45.0)
    times = [t for t, prober, _ in net.pings if prober == "a"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] < 1.5 and max(gaps) >= 7.5  # 1 s, up to 8x (awareness_max_multiplier)


def test_health_recovers_once_acks_come_back() -> None:
    net = TinyNet(["a", "b", "c", "d", "e"])
    net.run_until(5.0)
    for other in "bcde":
        net.cut.add(frozenset(("a", other)))
    net.run_until(9.0)
    assert net.cores["a"].statistics().health_score > 0
    net.cut.clear()
    net.run_until(60.0)
    assert net.cores["a"].statistics().health_score == 0


def test_without_lifeguard_health_never_moves() -> None:
    net = TinyNet(["a", "b", "c", "d", "e"], config=lan(lifeguard=False))
    net.run_until(5.0)
    for other in "bcde":
        net.cut.add(frozenset(("a", other)))
    net.run_until(15.0)
    assert net.cores["a"].statistics().health_score == 0


def test_a_killed_member_is_declared_failed_by_everyone_with_lan_timing() -> None:
    # n = 5: suspicion timeout 4 * max(1, log10 5) * 1 s = 4 s, up to 24 s (Lifeguard),
    # with 2 confirmations expected: every other member probes b and confirms
    net = TinyNet(["a", "b", "c", "d", "e"])
    net.run_until(5.0)
    net.down.add("b")
    net.run_until(60.0)
    failed_b = {observer: t for t, observer, failed in net.fails if failed == "b"}
    assert set(failed_b) == {"a", "c", "d", "e"}
    assert all(t - 5.0 < 30.0 for t in failed_b.values()), failed_b
    assert not [f for f in net.fails if f[2] != "b"]


def test_the_probe_after_a_failed_one_knows_of_the_failure() -> None:
    # the failed probe ends before the next one starts: the next ping already carries
    # the Suspect (Lifeguard's buddy system) and the period is already slowed
    net = TinyNet(["a", "b"])
    net.down.add("b")
    sent: list[tuple[float, tuple[object, ...]]] = []
    a = net.cores["a"]
    now = 0.0
    while len(sent) < 3:
        now = a.next_deadline()
        a.poll(now=now)
        for out in a.take_outgoing():
            if not out.stream and isinstance(out.messages[0], Ping):
                sent.append((now, out.messages))
    (t1, _), (t2, second), (t3, _) = sent
    suspects = [m for m in second if isinstance(m, Suspect)]
    assert suspects == [Suspect(0, "b", "a")]  # once, though it is also a queued broadcast
    assert (t2 - t1, t3 - t2) == pytest.approx((1.0, 2.0))  # health 1 after the first failure
