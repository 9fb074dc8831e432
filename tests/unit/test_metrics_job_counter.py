"""The per-job execution counters: exported exactly as prometheus_client's labelled Counter
exports them (Dkron's names, ``_total`` and ``_created``), without an object per job."""

from __future__ import annotations

import gc
import re
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from trickle.engine.metrics import EngineMetrics, JobCounter


def _without_created_values(text: str) -> str:
    """The exposition with the ``_created`` timestamps (wall clock) blanked."""
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", text)


def test_exposition_matches_prometheus_clients_labelled_counter() -> None:
    ours = EngineMetrics()
    reference = CollectorRegistry(auto_describe=True)
    theirs = Counter(
        "dkron_job_executions_succeeded",
        "Executions that succeeded (Dkron name).",
        ["job_name"],
        registry=reference,
    )
    for name, times in (("a", 3), ('we"ird\\name', 1), ("b", 2)):
        for _ in range(times):
            ours.succeeded.labels(job_name=name).inc()
            theirs.labels(job_name=name).inc()
    ours.succeeded.inc("b", 2.5)
    theirs.labels(job_name="b").inc(2.5)
    text = generate_latest(ours.registry).decode()
    start = text.index("# HELP dkron_job_executions_succeeded_total")
    end = text.index("# HELP dkron_job_executions_failed_total")
    expected = generate_latest(reference).decode()
    assert _without_created_values(text[start:end]) == _without_created_values(expected)
    assert 'dkron_job_executions_succeeded_total{job_name="b"} 4.5' in text
    assert ours.succeeded.value("a") == 3.0 and ours.failed.value("a") == 0.0


def test_failed_and_succeeded_are_separate_families() -> None:
    m = EngineMetrics()
    m.failed.labels(job_name="x").inc()
    text = generate_latest(m.registry).decode()
    assert 'dkron_job_executions_failed_total{job_name="x"} 1.0' in text
    assert 'dkron_job_executions_succeeded_total{job_name="x"}' not in text


def test_a_negative_increment_is_refused() -> None:
    counter = JobCounter("c", "help")
    with pytest.raises(ValueError, match="non-negative"):
        counter.inc("job", -1)
    assert counter.value("job") == 0.0


def test_counting_many_jobs_adds_no_objects_for_the_garbage_collector() -> None:
    counter = JobCounter("c", "help")
    names = [f"job-{i}" for i in range(5000)]
    gc.collect()
    before = len(gc.get_objects())
    for name in names:
        counter.labels(job_name=name).inc()
    after = len(gc.get_objects())
    assert after - before < 50  # a labelled Counter adds about 3 per job: 15,000 here


def test_a_scrape_while_another_thread_counts_sees_a_consistent_snapshot() -> None:
    m = EngineMetrics()
    stop = threading.Event()

    def count() -> None:
        i = 0
        while not stop.is_set():
            m.succeeded.inc(f"job-{i % 3000}")
            i += 1

    thread = threading.Thread(target=count)
    thread.start()
    try:
        for _ in range(5):
            generate_latest(m.registry)  # never "dictionary changed size during iteration"
    finally:
        stop.set()
        thread.join()
