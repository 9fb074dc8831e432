"""Contract tests of the store, run against a file store (real SQLite in tmp_path) and an
in-memory one."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgpack
import pytest
import trio

from trickle.engine.commands import (
    Effect,
    ExecutionSaved,
    ExecutionsRemoved,
    JobRemoved,
    JobSaved,
    StatsAdded,
)
from trickle.engine.model import (
    Concurrency,
    DayStats,
    Execution,
    ExecutionStatus,
    Job,
    JobStatus,
    Trigger,
    execution_id,
    group_id,
)
from trickle.engine.store import (
    DB_FILENAME,
    SCHEMA_VERSION,
    Store,
    StoreError,
    StoreVersionError,
)
from trickle.engine.wire import encode_job
from trickle.raft.storage import SnapshotFile

T0 = datetime(2025, 3, 30, 0, 59, 58, 123456, tzinfo=UTC)
LIMIT = 5

StoreFactory = Callable[..., Store]


@pytest.fixture(params=["file", "memory"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_store(kind: str, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens stores of this test's kind; every store opened is closed at teardown."""
    opened: list[Store] = []

    def factory(**kwargs: object) -> Store:
        kwargs.setdefault("history_limit", LIMIT)
        store = Store(tmp_path / "data" if kind == "file" else None, **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: StoreFactory) -> Store:
    return open_store()


@pytest.fixture
def file_store_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


class Applier:
    """Calls apply with a growing applied_index, as the engine does."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.index = store.load().applied_index

    def __call__(self, *effects: Effect, fsm_meta: bytes = b"meta") -> None:
        self.index += 1
        self.store.apply(list(effects), applied_index=self.index, fsm_meta=fsm_meta)


def run(job: str, n: int, *, node: str = "node1", finished: bool = True, **kw: object) -> Execution:
    """The n-th execution of a job, n seconds after T0 (finished 1 s later unless not)."""
    started = kw.pop("started_at", T0 + timedelta(seconds=n))
    assert isinstance(started, datetime)
    fields: dict[str, object] = {
        "id": execution_id(started, node),
        "job_name": job,
        "node_name": node,
        "group": group_id(started),
        "started_at": started,
        "scheduled_at": started,
    }
    if finished:
        fields.update(
            finished_at=started + timedelta(seconds=1),
            success=True,
            status=ExecutionStatus.SUCCESS,
            exit_code=0,
            output=f"run {n}\n",
        )
    fields.update(kw)
    return Execution(**fields)  # type: ignore[arg-type]


def saved(*executions: Execution) -> list[ExecutionSaved]:
    return [ExecutionSaved(e) for e in executions]


def history(store: Store, job: str, **kw: object) -> list[Execution]:
    page, total = store.list_executions(job, **kw)  # type: ignore[arg-type]
    return page


FULL_JOB = Job(
    name="backup-ß-日本",
    displayname="Nightly backup ✓",
    schedule="0 30 2 * * *",
    timezone="Europe/Berlin",
    owner="Zoë",
    owner_email="zoe@example.com",
    disabled=True,
    tags={"role": "db:2", "dkron_server": "true"},
    metadata={"team": "ops", "emoji": "🚀"},
    concurrency=Concurrency.FORBID,
    executor="shell",
    executor_config={"command": "pg_dump > /tmp/x", "shell": "true", "timeout": "10m"},
    processors={"log": {}, "files": {"log_dir": "/var/log/trickle"}},
    retries=3,
    parent_job="parent",
    dependent_jobs=("child-a", "child-b"),
    ephemeral=True,
    starts_at=datetime(2025, 1, 1, tzinfo=UTC),
    expires_at=datetime(2030, 1, 1, 12, 0, 0, 1, tzinfo=UTC),
    success_count=41,
    error_count=2,
    last_success=T0,
    last_error=T0 - timedelta(days=1),
    status=JobStatus.PARTIALLY_FAILED,
    next=T0 + timedelta(hours=1),
    retry_interval=2.5,
    catchup_window=0.0,
    schedule_anchor=T0 - timedelta(days=3),
    missed_count=7,
    created_at=T0 - timedelta(days=30),
    updated_at=T0 - timedelta(microseconds=1),
)


# -- opening ---------------------------------------------------------------------------------


def test_fresh_store_holds_nothing(store: Store) -> None:
    state = store.load()
    assert state.applied_index == 0
    assert state.jobs == []
    assert state.running == []
    assert state.fsm_meta is None


def test_bad_settings_are_refused_with_the_setting_named(open_store: StoreFactory) -> None:
    with pytest.raises(ValueError, match="durability"):
        open_store(durability="paranoid")
    with pytest.raises(ValueError, match="history_limit"):
        open_store(history_limit=0)


@pytest.mark.parametrize("durability", ["full", "normal", "off"])
def test_every_durability_level_stores_and_reads(open_store: StoreFactory, durability: str) -> None:
    store = open_store(durability=durability)
    Applier(store)(JobSaved(Job(name="a")))
    assert [j.name for j in store.load().jobs] == ["a"]


def test_closed_store_refuses_calls(store: Store) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.load()
    with pytest.raises(StoreError, match="closed"):
        store.apply([], applied_index=1, fsm_meta=b"")


def test_file_store_creates_the_data_dir_and_uses_wal(tmp_path: Path) -> None:
    data = tmp_path / "deep" / "data"
    with Store(data) as store:
        assert store.path == data
        assert store.database_file == data / DB_FILENAME
        Applier(store)(JobSaved(Job(name="a")))
    header = (data / DB_FILENAME).read_bytes()[:20]
    assert header.startswith(b"SQLite format 3\x00")
    assert header[18:20] == b"\x02\x02"  # file format read/write versions 2 = WAL


def test_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a dir")
    with pytest.raises(StoreError, match="not a directory"):
        Store(tmp_path / "data")


def test_second_store_on_the_same_data_dir_is_refused(file_store_dir: Path) -> None:
    with Store(file_store_dir):
        with pytest.raises(StoreError, match="in use"):
            Store(file_store_dir)
    with Store(file_store_dir):  # released at close
        pass


def _set_schema_version(data: Path, value: bytes) -> None:
    with sqlite3.connect(data / DB_FILENAME) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (value,))
    conn.close()


def test_newer_schema_version_is_refused(file_store_dir: Path) -> None:
    Store(file_store_dir).close()
    _set_schema_version(file_store_dir, str(SCHEMA_VERSION + 1).encode())
    with pytest.raises(StoreVersionError, match="newer trickle"):
        Store(file_store_dir)
    # refusing released the data dir
    _set_schema_version(file_store_dir, str(SCHEMA_VERSION).encode())
    Store(file_store_dir).close()


def test_older_schema_version_without_migration_is_refused(file_store_dir: Path) -> None:
    Store(file_store_dir).close()
    _set_schema_version(file_store_dir, b"0")
    with pytest.raises(StoreVersionError, match="no migration"):
        Store(file_store_dir)


def test_foreign_database_is_refused(file_store_dir: Path) -> None:
    file_store_dir.mkdir()
    with sqlite3.connect(file_store_dir / DB_FILENAME) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    conn.close()
    with pytest.raises(StoreError, match="not a trickle database"):
        Store(file_store_dir)


# -- jobs ------------------------------------------------------------------------------------


def test_job_with_every_field_round_trips(store: Store) -> None:
    Applier(store)(JobSaved(FULL_JOB), JobSaved(Job(name="plain")))
    assert store.load().jobs == [FULL_JOB, Job(name="plain")]  # by name


def test_saving_a_job_again_replaces_it(store: Store) -> None:
    apply = Applier(store)
    apply(JobSaved(Job(name="a", schedule="@hourly")))
    apply(JobSaved(Job(name="a", schedule="@daily", success_count=3)))
    assert store.load().jobs == [Job(name="a", schedule="@daily", success_count=3)]


def test_removing_a_job_removes_its_executions_only(store: Store) -> None:
    apply = Applier(store)
    apply(
        JobSaved(Job(name="a")),
        JobSaved(Job(name="b")),
        *saved(run("a", 1), run("a", 2, finished=False), run("b", 3)),
    )
    apply(JobRemoved("a"))
    state = store.load()
    assert [j.name for j in state.jobs] == ["b"]
    assert state.running == []
    assert store.list_executions("a") == ([], 0)
    assert store.list_executions("b")[1] == 1


def test_effects_apply_in_order(store: Store) -> None:
    apply = Applier(store)
    apply(
        JobSaved(Job(name="a", schedule="@hourly")),
        JobRemoved("a"),
        JobSaved(Job(name="a", schedule="@daily")),
        *saved(run("a", 1), run("a", 2)),
        ExecutionsRemoved("a"),
        *saved(run("a", 3)),
        JobSaved(Job(name="b")),
        JobRemoved("b"),
    )
    assert store.load().jobs == [Job(name="a", schedule="@daily")]
    assert [e.id for e in history(store, "a")] == [run("a", 3).id]


# -- executions ------------------------------------------------------------------------------


def test_execution_with_every_field_round_trips(store: Store) -> None:
    output = "ünïcödé ✓ 日本語 🚀\n\x00nul inside\r\n" + "x" * 256_000
    finished = run(
        "a",
        1,
        node="node-ß",
        attempt=3,
        success=False,
        status=ExecutionStatus.FAILED,
        exit_code=-9,
        trigger=Trigger.RETRY,
        output=output,
        group=2**62 + 12345,
    )
    running = run("a", 2, finished=False, trigger=Trigger.MANUAL, scheduled_at=None)
    missed = run(
        "a", 3, status=ExecutionStatus.MISSED, exit_code=None, output="", trigger="catchup"
    )
    Applier(store)(*saved(finished, running, missed))
    assert store.get_execution("a", finished.id) == finished
    assert store.get_execution("a", running.id) == running
    assert store.get_execution("a", missed.id) == missed
    assert running.finished_at is None and running.scheduled_at is None
    assert store.load().running == [running]


def test_times_in_other_zones_come_back_as_the_same_instant_in_utc(store: Store) -> None:
    cest = timezone(timedelta(hours=2))
    started = datetime(2025, 6, 1, 12, 0, 0, 999_999, tzinfo=cest)
    e = run("a", 1, started_at=started)
    Applier(store)(*saved(e))
    back = store.get_execution("a", e.id)
    assert back is not None
    assert back.started_at == started
    assert back.started_at.utcoffset() == timedelta(0)


def test_saving_an_execution_again_replaces_it(store: Store) -> None:
    apply = Applier(store)
    started = run("a", 1, finished=False)
    apply(*saved(started))
    assert store.load().running == [started]
    done = run("a", 1, output="done", success=False, status=ExecutionStatus.FAILED)
    apply(*saved(done))
    assert store.load().running == []
    assert store.list_executions("a") == ([done], 1)


def test_running_executions_load_oldest_first_across_jobs(store: Store) -> None:
    apply = Applier(store)
    r3, r1, r2 = (
        run("c", 3, finished=False),
        run("a", 1, finished=False),
        run("b", 2, finished=False),
    )
    apply(*saved(r3, run("a", 0), r1, r2, run("b", 4)))
    assert store.load().running == [r1, r2, r3]


def test_same_execution_id_in_two_jobs_are_two_records(store: Store) -> None:
    a, b = run("a", 1), run("b", 1, output="other")
    assert a.id == b.id
    Applier(store)(*saved(a, b))
    assert store.get_execution("a", a.id) == a
    assert store.get_execution("b", b.id) == b


def test_unknown_execution_or_job_gets_none(store: Store) -> None:
    e = run("a", 1)
    Applier(store)(*saved(e))
    assert store.get_execution("a", "123-nope") is None
    assert store.get_execution("b", e.id) is None


def test_executions_removed_clears_one_jobs_history(store: Store) -> None:
    apply = Applier(store)
    apply(*saved(run("a", 1), run("a", 2, finished=False), run("b", 3)))
    apply(ExecutionsRemoved("a"))
    assert store.list_executions("a") == ([], 0)
    assert store.list_executions("b")[1] == 1
    assert store.load().running == []


# -- retention -------------------------------------------------------------------------------


def test_pruning_keeps_the_newest_finished_records(store: Store) -> None:
    apply = Applier(store)
    for n in range(12):
        apply(*saved(run("a", n)))
        assert store.list_executions("a")[1] == min(n + 1, LIMIT)
    ids = [e.id for e in history(store, "a", order="asc")]
    assert ids == [run("a", n).id for n in range(12 - LIMIT, 12)]


def test_pruning_within_one_batch_keeps_the_newest(store: Store) -> None:
    apply = Applier(store)
    apply(*saved(*(run("a", n) for n in reversed(range(20)))))
    assert [e.id for e in history(store, "a", order="asc")] == [
        run("a", n).id for n in range(15, 20)
    ]
    apply(*saved(run("a", 20)))
    assert store.list_executions("a")[1] == LIMIT
    # runs of saves split by other effects in one batch
    apply(*saved(run("a", 21)), StatsAdded(_day(2025, 1, 1), 1, 0), *saved(run("a", 22)))
    assert [e.id for e in history(store, "a", order="asc")] == [
        run("a", n).id for n in range(18, 23)
    ]


def test_pruning_never_removes_running_records(store: Store) -> None:
    apply = Applier(store)
    old_running = [run("a", n, finished=False) for n in range(3)]
    apply(*saved(*old_running))
    for n in range(10, 30):
        apply(*saved(run("a", n)))
    page, total = store.list_executions("a", order="asc")
    assert total == LIMIT + 3
    assert page[:3] == old_running
    assert [e.id for e in page[3:]] == [run("a", n).id for n in range(25, 30)]
    assert store.load().running == old_running


def test_pruning_breaks_started_at_ties_by_id(store: Store) -> None:
    nodes = [f"node{i}" for i in range(LIMIT + 2)]  # same start, ids differ by node
    records = [run("a", 1, node=node) for node in nodes]
    Applier(store)(*saved(*records))
    kept = sorted(e.id for e in history(store, "a"))
    assert kept == sorted(e.id for e in records)[2:]


def test_a_run_that_finishes_after_newer_ones_is_pruned_by_its_start(store: Store) -> None:
    apply = Applier(store)
    slow = run("a", 0, finished=False)
    apply(*saved(slow))
    for n in range(1, LIMIT + 1):
        apply(*saved(run("a", n)))
    apply(*saved(run("a", 0, finished_at=T0 + timedelta(hours=1), status="success")))
    assert slow.id not in {e.id for e in history(store, "a")}
    assert store.list_executions("a")[1] == LIMIT


def test_resaving_finished_records_does_not_prune_too_much(store: Store) -> None:
    apply = Applier(store)
    records = [run("a", n) for n in range(LIMIT - 1)]
    apply(*saved(*records))
    for _ in range(3):  # the same finished records saved again (e.g. output edited)
        apply(*saved(*records))
    apply(*saved(run("a", 100)))
    assert store.list_executions("a")[1] == LIMIT
    apply(*saved(run("a", 101)))
    assert [e.id for e in history(store, "a", order="asc")] == [
        *(r.id for r in records[1:]),
        run("a", 100).id,
        run("a", 101).id,
    ]


def test_history_limit_applies_per_job(store: Store) -> None:
    Applier(store)(*saved(*(run(job, n) for n in range(8) for job in ("a", "b"))))
    assert store.list_executions("a")[1] == LIMIT
    assert store.list_executions("b")[1] == LIMIT


def test_pruning_continues_after_reopen(file_store_dir: Path) -> None:
    with Store(file_store_dir, history_limit=LIMIT) as store:
        Applier(store)(*saved(*(run("a", n) for n in range(LIMIT))))
    with Store(file_store_dir, history_limit=LIMIT) as store:
        Applier(store)(*saved(run("a", 50)))
        assert [e.id for e in history(store, "a", order="asc")] == [
            *(run("a", n).id for n in range(1, LIMIT)),
            run("a", 50).id,
        ]


def test_lowering_history_limit_prunes_on_the_next_save(file_store_dir: Path) -> None:
    with Store(file_store_dir, history_limit=10) as store:
        Applier(store)(*saved(*(run("a", n) for n in range(10))))
    with Store(file_store_dir, history_limit=3) as store:
        Applier(store)(*saved(run("a", 50)))
        assert [e.id for e in history(store, "a", order="asc")] == [
            run("a", 8).id,
            run("a", 9).id,
            run("a", 50).id,
        ]


# -- listing ---------------------------------------------------------------------------------


@pytest.fixture
def listed(store: Store) -> tuple[Store, dict[str, Execution]]:
    """Five records of job a whose orders differ per sort key, and one of job b."""
    s = T0
    records = {
        # name: started (s), finished (s after T0) or None, attempt
        "p": run("a", 0, started_at=s, finished_at=s + timedelta(seconds=50), attempt=2),
        "q": run(
            "a",
            0,
            started_at=s + timedelta(seconds=10),
            finished_at=s + timedelta(seconds=20),
            attempt=1,
        ),
        "r": run(
            "a",
            0,
            started_at=s + timedelta(seconds=20),
            finished_at=None,
            status="running",
            attempt=3,
        ),
        "s": run(
            "a",
            0,
            started_at=s + timedelta(seconds=30),
            finished_at=s + timedelta(seconds=40),
            attempt=1,
        ),
        "t": run(
            "a",
            0,
            started_at=s + timedelta(seconds=40),
            finished_at=s + timedelta(seconds=45),
            attempt=2,
        ),
    }
    Applier(store)(*saved(*records.values(), run("b", 1)))
    return store, records


@pytest.mark.parametrize(
    ("sort", "order", "expected"),
    [
        ("started_at", "asc", "pqrst"),
        ("started_at", "desc", "tsrqp"),
        ("finished_at", "asc", "rqstp"),  # running first ascending, as Dkron's zero time
        ("finished_at", "desc", "ptsqr"),
        ("attempt", "asc", "qsptr"),  # ties (q, s) and (p, t) by id = by start here
        ("attempt", "desc", "rtpsq"),
    ],
)
def test_listing_sorts_by_each_key_and_order(
    listed: tuple[Store, dict[str, Execution]], sort: str, order: str, expected: str
) -> None:
    store, records = listed
    names = {e.id: name for name, e in records.items()}
    page, total = store.list_executions("a", sort=sort, order=order)
    assert "".join(names[e.id] for e in page) == expected
    assert total == 5


def test_listing_default_is_newest_start_first(listed: tuple[Store, dict[str, Execution]]) -> None:
    store, records = listed
    assert store.list_executions("a")[0] == [records[n] for n in "tsrqp"]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 2, "pq"),
        (1, 4, "qrs"),
        (3, None, "st"),
        (4, 100, "t"),
        (5, 9, ""),
        (9, None, ""),
        (2, 2, ""),
        (3, 1, ""),
        (0, None, "pqrst"),
    ],
)
def test_listing_slices_after_sorting_and_counts_the_whole_history(
    listed: tuple[Store, dict[str, Execution]], start: int, end: int | None, expected: str
) -> None:
    store, records = listed
    names = {e.id: name for name, e in records.items()}
    page, total = store.list_executions("a", sort="started_at", order="asc", start=start, end=end)
    assert "".join(names[e.id] for e in page) == expected
    assert total == 5


def test_listing_ties_are_broken_by_id_in_the_listing_order(store: Store) -> None:
    records = [run("a", 1, node=f"n{i}") for i in range(4)]  # same started_at
    Applier(store)(*saved(*records))
    ids = sorted(e.id for e in records)
    assert [e.id for e in history(store, "a", order="asc")] == ids
    assert [e.id for e in history(store, "a", order="desc")] == ids[::-1]
    assert [e.id for e in history(store, "a", order="asc", start=1, end=3)] == ids[1:3]


def test_listing_an_unknown_job_is_empty(store: Store) -> None:
    assert store.list_executions("nope") == ([], 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sort": "id"}, "unknown sort 'id'"),
        ({"sort": "output"}, "unknown sort"),
        ({"order": "DESC"}, "unknown order"),
        ({"start": -1}, "negative"),
        ({"end": -2}, "negative"),
    ],
)
def test_listing_refuses_bad_arguments(
    store: Store, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        store.list_executions("a", **kwargs)  # type: ignore[arg-type]


# -- stats -----------------------------------------------------------------------------------


def _day(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


def test_daily_stats_are_zero_filled_oldest_first(store: Store) -> None:
    apply = Applier(store)
    apply(StatsAdded(_day(2025, 2, 27), 3, 1), StatsAdded(_day(2025, 3, 2), 0, 2))
    apply(StatsAdded(_day(2025, 2, 27), 1, 0), StatsAdded(_day(2025, 2, 27), 1, 1))
    assert store.daily_stats(_day(2025, 2, 26), _day(2025, 3, 2)) == [
        DayStats(date=_day(2025, 2, 26)),
        DayStats(date=_day(2025, 2, 27), success_count=5, failed_count=2),
        DayStats(date=_day(2025, 2, 28)),
        DayStats(date=_day(2025, 3, 1)),
        DayStats(date=_day(2025, 3, 2), success_count=0, failed_count=2),
    ]


def test_daily_stats_use_utc_days(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    # 01:30 at +02:00 on 1 March is 23:30 UTC on 28 February
    Applier(store)(StatsAdded(datetime(2025, 3, 1, 1, 30, tzinfo=plus_two), 1, 0))
    stats = store.daily_stats(
        datetime(2025, 2, 28, 23, 59, tzinfo=UTC), datetime(2025, 3, 1, 0, 1, tzinfo=UTC)
    )
    assert stats == [
        DayStats(date=_day(2025, 2, 28), success_count=1),
        DayStats(date=_day(2025, 3, 1)),
    ]


def test_daily_stats_of_one_empty_day(store: Store) -> None:
    assert store.daily_stats(_day(2025, 1, 1), _day(2025, 1, 1)) == [
        DayStats(date=_day(2025, 1, 1))
    ]


def test_daily_stats_refuse_a_reversed_or_naive_range(store: Store) -> None:
    with pytest.raises(ValueError, match="before first"):
        store.daily_stats(_day(2025, 1, 2), _day(2025, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        store.daily_stats(datetime(2025, 1, 1), _day(2025, 1, 1))


# -- applied index, fsm meta, atomicity --------------------------------------------------------


def test_applied_index_and_fsm_meta_are_stored(store: Store) -> None:
    store.apply([], applied_index=7, fsm_meta=b"\x00\xffstate")
    state = store.load()
    assert (state.applied_index, state.fsm_meta) == (7, b"\x00\xffstate")
    store.apply([JobSaved(Job(name="a"))], applied_index=7, fsm_meta=b"again")
    assert store.load().applied_index == 7


def test_applied_index_cannot_go_backwards(store: Store) -> None:
    store.apply([], applied_index=5, fsm_meta=b"")
    with pytest.raises(ValueError, match="behind"):
        store.apply([JobSaved(Job(name="a"))], applied_index=4, fsm_meta=b"x")
    assert store.load().jobs == []


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(object(), id="not-an-effect"),
        pytest.param(StatsAdded(datetime(2025, 1, 1), 1, 0), id="naive-stats-day"),
        pytest.param(
            ExecutionSaved(run("a", 9, finished_at=datetime(2025, 1, 1))),
            id="naive-finish-time",
        ),
    ],
)
def test_a_failing_effect_leaves_nothing_of_the_batch(store: Store, bad: object) -> None:
    apply = Applier(store)
    apply(
        JobSaved(Job(name="a")),
        *saved(*(run("a", n) for n in range(LIMIT))),
        StatsAdded(_day(2025, 1, 1), 1, 0),
        fsm_meta=b"before",
    )
    before = store.load()
    history_before = store.list_executions("a")
    effects = [
        JobSaved(Job(name="a", schedule="@daily")),
        JobSaved(Job(name="b")),
        *saved(run("a", 100), run("a", 101, finished=False)),  # prunes an old one
        StatsAdded(_day(2025, 1, 1), 5, 5),
        ExecutionsRemoved("a"),  # were this remembered, the next save would not prune
        bad,
        JobRemoved("a"),
    ]
    with pytest.raises((TypeError, ValueError)):
        store.apply(effects, applied_index=before.applied_index + 1, fsm_meta=b"after")  # type: ignore[arg-type]
    assert store.load() == before
    assert store.list_executions("a") == history_before
    assert store.daily_stats(_day(2025, 1, 1), _day(2025, 1, 1))[0].success_count == 1
    # and the store goes on working, pruning from the right count
    apply(*saved(run("a", 200)))
    assert [e.id for e in history(store, "a", order="asc")] == [
        *(run("a", n).id for n in range(1, LIMIT)),
        run("a", 200).id,
    ]


# -- reopen ----------------------------------------------------------------------------------


def test_reopened_file_store_has_the_same_state(file_store_dir: Path) -> None:
    with Store(file_store_dir, history_limit=LIMIT, durability="full") as store:
        apply = Applier(store)
        running = run("a", 50, finished=False)
        apply(JobSaved(FULL_JOB), JobSaved(Job(name="a")), *saved(run("a", 1), running))
        apply(StatsAdded(_day(2025, 3, 30), 2, 1), fsm_meta=b"fsm")
        before = (
            store.load(),
            store.list_executions("a"),
            store.daily_stats(_day(2025, 3, 29), _day(2025, 3, 31)),
        )
    with Store(file_store_dir, history_limit=LIMIT) as store:
        after = (
            store.load(),
            store.list_executions("a"),
            store.daily_stats(_day(2025, 3, 29), _day(2025, 3, 31)),
        )
    assert after == before
    assert before[0].applied_index == 2 and before[0].fsm_meta == b"fsm"
    assert before[0].running == [running]


# -- concurrency -----------------------------------------------------------------------------


def test_file_store_reads_do_not_wait_for_the_writer_lock(file_store_dir: Path) -> None:
    with Store(file_store_dir, history_limit=LIMIT) as store:
        Applier(store)(*saved(run("a", 1)))
        other = sqlite3.connect(file_store_dir / DB_FILENAME, isolation_level=None, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
            other.execute("DELETE FROM executions")
            # busy_timeout would make a read that needs the lock wait 10 s, then fail
            assert store.list_executions("a")[1] == 1
            assert store.load().applied_index == 1
            other.execute("ROLLBACK")
        finally:
            other.close()


async def test_concurrent_reads_see_whole_batches_only(open_store: StoreFactory) -> None:
    batch, batches = 40, 25
    store = open_store(history_limit=batch * batches)
    seen: list[int] = []
    done = trio.Event()

    def write_all() -> None:
        for b in range(batches):
            store.apply(
                [
                    *saved(*(run("a", b * batch + i) for i in range(batch))),
                    StatsAdded(_day(2025, 1, 1), batch, 0),
                ],
                applied_index=b + 1,
                fsm_meta=str(b + 1).encode(),
            )

    def read_once() -> tuple[int, int, int]:
        page, total = store.list_executions("a", sort="finished_at", start=0, end=3)
        stats = store.daily_stats(_day(2025, 1, 1), _day(2025, 1, 1))[0]
        return total, stats.success_count, len(page)

    async def writer() -> None:
        await trio.to_thread.run_sync(write_all)
        done.set()

    async def reader() -> None:
        while not done.is_set():
            total, _success, page = await trio.to_thread.run_sync(read_once)
            assert total % batch == 0, f"saw a partial batch: {total}"
            assert page == min(3, total)
            seen.append(total)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        for _ in range(3):
            nursery.start_soon(reader)
    assert store.list_executions("a")[1] == batch * batches
    assert store.load().fsm_meta == str(batches).encode()
    assert seen, "the readers never ran"


# -- images (Raft snapshots of the applied state) -------------------------------------------


def test_image_carries_the_whole_applied_state_to_another_store(
    open_store: StoreFactory, tmp_path: Path
) -> None:
    source = open_store()
    apply = Applier(source)
    apply(JobSaved(FULL_JOB), JobSaved(Job(name="other", schedule="@every 1m")))
    apply(*saved(run("other", 1), run("other", 2), run("other", 3, finished=False)))
    apply(StatsAdded(day=T0, success=2, failed=1), fsm_meta=b"groups")
    image = source.export_image()

    target = Store(tmp_path / "target")
    try:
        target_apply = Applier(target)
        target_apply(JobSaved(Job(name="stale", schedule="@every 1m")))
        target_apply(*saved(run("stale", 1)))
        assert target.import_image(image) == apply.index
        loaded = target.load()
        assert loaded.applied_index == apply.index
        assert [j.name for j in loaded.jobs] == sorted([FULL_JOB.name, "other"])
        assert next(j for j in loaded.jobs if j.name == FULL_JOB.name) == FULL_JOB
        assert [e.id for e in loaded.running] == [run("other", 3, finished=False).id]
        assert loaded.fsm_meta == b"groups"
        assert history(target, "other") == history(source, "other")
        assert history(target, "stale") == []
        assert target.daily_stats(T0, T0) == source.daily_stats(T0, T0)
    finally:
        target.close()


def test_image_that_is_not_one_is_refused_and_changes_nothing(store: Store) -> None:
    apply = Applier(store)
    apply(JobSaved(Job(name="kept", schedule="@every 1m")))
    for junk in (b"", b"\x93\x01\x02\x03", msgpack.packb({"v": 99})):
        with pytest.raises(StoreError, match="not a state image"):
            store.import_image(junk)
    assert [j.name for j in store.load().jobs] == ["kept"]
    assert store.load().applied_index == apply.index


def test_an_image_is_a_sqlite_database_in_an_unlinked_file(
    open_store: StoreFactory, tmp_path: Path
) -> None:
    source = open_store()
    Applier(source)(JobSaved(Job(name="kept", schedule="@every 1m")))
    before = set(source.path.iterdir()) if source.path is not None else set()
    image = source.export_image()
    assert isinstance(image, SnapshotFile)
    assert image[:16] == b"SQLite format 3\x00"
    if source.path is not None:
        assert set(source.path.iterdir()) == before  # nothing left behind


def test_image_files_a_crash_left_in_the_data_dir_are_removed_at_open(tmp_path: Path) -> None:
    Store(tmp_path / "d").close()
    (tmp_path / "d" / ".image-abc123").write_bytes(b"half an image")
    (tmp_path / "d" / ".image-in-def456").write_bytes(b"half an image")
    Store(tmp_path / "d").close()
    assert sorted(p.name for p in (tmp_path / "d").iterdir() if p.name.startswith(".")) == []


def test_an_image_of_the_earlier_msgpack_format_still_imports(store: Store) -> None:
    job = Job(name="old", schedule="@every 1m")
    blob = msgpack.packb(
        {
            "v": 1,
            "applied_index": 7,
            "fsm_meta": b"meta",
            "jobs": [encode_job(job)],
            "executions": [],
            "stats": [],
        },
        use_bin_type=True,
    )
    assert store.import_image(blob) == 7
    loaded = store.load()
    assert [j.name for j in loaded.jobs] == ["old"] and loaded.fsm_meta == b"meta"


def test_a_database_that_is_not_a_state_image_is_refused_and_changes_nothing(
    store: Store, tmp_path: Path
) -> None:
    apply = Applier(store)
    apply(JobSaved(Job(name="kept", schedule="@every 1m")))
    other = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
    with pytest.raises(StoreError, match="not a state image.*no executions, jobs, meta, stats"):
        store.import_image(other.read_bytes())
    assert [j.name for j in store.load().jobs] == ["kept"]
    assert store.load().applied_index == apply.index


def test_reset_applied_index_keeps_the_state(store: Store) -> None:
    apply = Applier(store)
    apply(JobSaved(Job(name="kept", schedule="@every 1m")))
    store.reset_applied_index(0)
    loaded = store.load()
    assert loaded.applied_index == 0
    assert [j.name for j in loaded.jobs] == ["kept"]


# -- many rows in one apply (multi-row statements) ------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 64, 65, 150])
def test_an_apply_of_many_runs_and_jobs_stores_every_row(store: Store, n: int) -> None:
    apply = Applier(store)
    jobs = [Job(name=f"j{i}", schedule="@every 1h", executor="shell") for i in range(n)]
    apply(*[JobSaved(job) for job in jobs])
    runs = [run(f"j{i}", i, finished=False) for i in range(n)]
    apply(*saved(*runs))
    loaded = store.load()
    assert sorted(j.name for j in loaded.jobs) == sorted(j.name for j in jobs)
    assert sorted(e.id for e in loaded.running) == sorted(e.id for e in runs)


def test_a_row_saved_twice_in_one_apply_ends_as_the_later_one(store: Store) -> None:
    apply = Applier(store)
    first = run("j", 1, finished=False)
    done = run("j", 1)  # the same execution, finished
    jobs = [Job(name="j", schedule="@every 1h", executor="shell", success_count=k) for k in (1, 2)]
    apply(JobSaved(jobs[0]), JobSaved(jobs[1]), *saved(first, done))
    [job] = store.load().jobs
    assert job.success_count == 2
    [stored] = history(store, "j")
    assert stored.finished_at == done.finished_at and stored.output == done.output


def test_a_write_calls_pace_before_each_statement_and_stores_the_same(store: Store) -> None:
    # the engine's launch guard makes the writing thread wait there (never inline)
    calls: list[int] = []
    store.pace = lambda: calls.append(1)
    apply = Applier(store)
    executions = [run("a", n) for n in range(1, 6)]
    apply(JobSaved(Job(name="a")), *saved(*executions))
    # BEGIN, the job, the executions (4 + 1 rows), the meta, COMMIT
    assert len(calls) >= 6
    page, total = store.list_executions("a")
    assert total == 5 and {e.id for e in page} == {e.id for e in executions}
