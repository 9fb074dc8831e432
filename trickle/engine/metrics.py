"""Prometheus metrics of one engine, in a registry of its own (two engines never clash)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trickle.engine.guard import LaunchGuard

_GOSSIP_COUNTERS = (  # GossipDriverStats field -> help
    ("packets_sent", "UDP packets sent."),
    ("packets_received", "UDP packets received."),
    ("bytes_sent", "Gossip bytes sent, UDP and TCP."),
    ("bytes_received", "Gossip bytes received, UDP and TCP."),
    ("packets_dropped", "Gossip packets dropped: buffer full or a send that failed."),
    ("oversize", "Gossip packets or frames over their size limit, dropped."),
    ("malformed", "Gossip packets or frames that did not decode, dropped."),
    ("rejected_decrypt", "Gossip packets or frames refused by encryption (plaintext, wrong key)."),
    ("streams_failed", "Gossip TCP requests without an answer."),
)


class EngineMetrics:
    """Dkron's execution counters under their Dkron names, plus trickle's own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.succeeded = JobCounter(
            "dkron_job_executions_succeeded", "Executions that succeeded (Dkron name)."
        )
        self.failed = JobCounter(
            "dkron_job_executions_failed", "Executions that failed (Dkron name)."
        )
        r.register(self.succeeded)
        r.register(self.failed)
        self.fires = Counter("trickle_fires", "Scheduled fires launched.", registry=r)
        self.fires_skipped = Counter(
            "trickle_fires_skipped", "Scheduled fires not run, by reason.", ["reason"], registry=r
        )
        self.fires_missed = Counter(
            "trickle_fires_missed",
            "Fires that fell while no scheduler ran, outside the catch-up window.",
            registry=r,
        )
        self.catchup_runs = Counter(
            "trickle_catchup_runs",
            "Missed fires run late inside the catch-up window.",
            registry=r,
        )
        self.lateness = Histogram(
            "trickle_fire_lateness_seconds",
            "Executor start time minus scheduled fire time, for scheduled runs.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
            registry=r,
        )
        self.commands = Counter(
            "trickle_commands_applied", "Commands applied by the state machine.", registry=r
        )
        self.log_batches = Counter(
            "trickle_log_batches",
            "Command log batches (one store transaction each).",
            registry=r,
        )
        self.jobs = Gauge("trickle_jobs", "Jobs stored.", registry=r)
        self.running = Gauge(
            "trickle_executions_running", "Executions running on this node.", registry=r
        )
        self.queued = Gauge(
            "trickle_executions_queued",
            "Executions waiting for a concurrency slot on this node.",
            registry=r,
        )
        self.subscribers = Gauge("trickle_event_subscribers", "Event subscribers.", registry=r)
        self.events_dropped = Gauge(
            "trickle_events_dropped",
            "Events dropped for slow subscribers (cumulative).",
            registry=r,
        )
        self.is_leader = Gauge("trickle_is_leader", "1 when this node is the leader.", registry=r)
        self.paused = Gauge("trickle_paused", "1 while new job submissions are paused.", registry=r)

    def watch_gossip(self, stats: Callable[[], Any]) -> None:
        """Export gossip's figures, read from ``stats()`` (a GossipDriverStats, or None
        while gossip is off) at each scrape."""
        self.registry.register(_GossipCollector(stats))

    def watch_guard(self, guard: LaunchGuard) -> None:
        """Export the launch guard's ``waits`` and ``thread_pauses`` at each scrape."""
        self.registry.register(_GuardCollector(guard))


class _GuardCollector(Collector):
    """The launch guard's counts (``trickle.engine.guard.LaunchGuard``), read at each
    scrape: plain ints on the guard, so its hot paths stay free of metric objects."""

    def __init__(self, guard: LaunchGuard) -> None:
        self._guard = guard

    def describe(self) -> list[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "trickle_launch_guard_waits",
            "Times a background task (scheduler, applier, replication) stood aside for a "
            "launch due within the guard's lead.",
            value=self._guard.waits,
        )
        yield CounterMetricFamily(
            "trickle_launch_guard_thread_pauses",
            "Times a store worker thread paused, GIL released, for a launch.",
            value=self._guard.thread_pauses,
        )


class JobCounter(Collector):
    """A counter per job (label ``job_name``), exported as prometheus_client's ``Counter``
    would (``<name>_total`` and ``<name>_created``), at a fraction of its cost.

    A labelled ``Counter`` keeps a child per job (a lock, a value, a counter object: about
    three objects the garbage collector walks, 30,000 for 10,000 jobs). This keeps two
    plain dicts (job name -> count, job name -> first count's time), which the collector
    does not track, and builds the samples at scrape time. Increments happen on the event
    loop; a scrape from another thread reads a snapshot (``dict.copy`` runs under the GIL).
    """

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self._counts: dict[str, float] = {}
        self._created: dict[str, float] = {}

    def inc(self, job_name: str, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0) to ``job_name``'s count."""
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        counts = self._counts
        if job_name in counts:
            counts[job_name] += amount
        else:
            self._created[job_name] = time.time()
            counts[job_name] = float(amount)

    def labels(self, job_name: str) -> _JobCount:
        """prometheus_client's interface: ``labels(job_name=...).inc()``."""
        return _JobCount(self, job_name)

    def value(self, job_name: str) -> float:
        """The count of ``job_name`` (0 if it never counted)."""
        return self._counts.get(job_name, 0.0)

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=["job_name"])]

    def collect(self) -> Iterator[Metric]:
        counts = self._counts.copy()
        created = self._created.copy()
        family = CounterMetricFamily(self.name, self.documentation, labels=["job_name"])
        for job_name, value in counts.items():
            family.add_metric([job_name], value, created=created.get(job_name))
        yield family


class _JobCount:
    __slots__ = ("_counter", "_job_name")

    def __init__(self, counter: JobCounter, job_name: str) -> None:
        self._counter = counter
        self._job_name = job_name

    def inc(self, amount: float = 1.0) -> None:
        self._counter.inc(self._job_name, amount)


class _GossipCollector(Collector):
    def __init__(self, stats: Callable[[], Any]) -> None:
        self._stats = stats

    def describe(self) -> list[Metric]:
        return []  # names vary with what gossip runs; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        if stats is None:
            return
        membership = stats.membership
        if membership is not None:
            members = GaugeMetricFamily(
                "trickle_gossip_members", "Members known to gossip, by state.", labels=["state"]
            )
            for state in ("alive", "suspect", "dead", "left"):
                members.add_metric([state], getattr(membership, state))
            yield members
            yield GaugeMetricFamily(
                "trickle_gossip_health_score",
                "Lifeguard's local health score (0 is healthy; higher probes more slowly).",
                value=membership.health_score,
            )
            yield CounterMetricFamily(
                "trickle_gossip_probes_failed",
                "Probes of this node that got no ack in their period.",
                value=membership.probes_failed,
            )
        for field, help_text in _GOSSIP_COUNTERS:
            yield CounterMetricFamily(
                f"trickle_gossip_{field}", help_text, value=getattr(stats, field)
            )
