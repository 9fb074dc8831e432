"""The SQLAlchemy store: the applied state (jobs, executions, daily stats) and its images.

Every method is synchronous and is meant to be called from a worker thread
(``trickle._threads.run_sync_uncancellable`` or ``trio.to_thread.run_sync``, never
abandoned on cancellation while it writes). Writes are serialized (a lock here,
``BEGIN IMMEDIATE`` in SQLite); in file mode reads run on their own connections and never
wait for the writer (WAL). The SQL tables are defined in this module
and nowhere else.

Exceptions::

    TrickleError
    └── StoreError                 the store cannot do what was asked (closed, in use, not a trickle database)
        └── StoreVersionError      the database was written by another schema version

Bad arguments (an unknown sort, a negative slice index, a naive datetime) raise
``ValueError``; an object that is not an Effect raises ``TypeError``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import attrs
import msgpack
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.pool import StaticPool

from trickle._filelock import hold_lock
from trickle.engine.commands import (
    Effect,
    ExecutionSaved,
    ExecutionsRemoved,
    JobRemoved,
    JobSaved,
    StatsAdded,
)
from trickle.engine.model import DayStats, Execution, ExecutionId, Job
from trickle.engine.wire import decode_job, encode_job
from trickle.errors import TrickleError
from trickle.raft.storage import SnapshotFile, snapshot_chunks

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1  # bump with a migration whenever a table changes
DB_FILENAME = "trickle.db"
# An image (a Raft snapshot of the applied state, Store.export_image) is a SQLite database
# of this schema (VACUUM INTO: compact, consistent, written by SQLite without Python objects
# per row). IMAGE_VERSION is the msgpack blob of earlier versions, still read.
IMAGE_VERSION = 1
SQLITE_HEADER = b"SQLite format 3\x00"
_IMAGE_TABLES = ("jobs", "executions", "stats")  # the applied state, with meta's two keys
LOCK_FILENAME = "trickle.db.lock"
BUSY_TIMEOUT_MS = 10_000  # how long a connection waits for another one's lock
WRITE_CACHE_KIB = 32_768  # page cache of the write connection: index pages re-touched
READ_CACHE_KIB = 2_048  # page cache per read connection (the OS caches the file too)
WAL_AUTOCHECKPOINT_PAGES = 2_000  # ~8 MB of WAL between checkpoints: short stalls, each
WAL_SIZE_LIMIT = 64 * 2**20  # bytes the WAL file is truncated to after a checkpoint
READ_POOL_SIZE = 8  # read connections kept open (file mode)
READ_POOL_OVERFLOW = 32  # extra read connections opened under load, then closed
DURABILITY_LEVELS = {"full": "FULL", "normal": "NORMAL", "off": "OFF"}
SORTS = ("started_at", "finished_at", "attempt")
ORDERS = ("asc", "desc")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def _dbapi(raw: Any) -> sqlite3.Connection:
    """The sqlite3 connection under a pooled SQLAlchemy connection."""
    conn = raw.driver_connection
    assert isinstance(conn, sqlite3.Connection)
    return conn


def empty_image() -> bytes:
    """The image (``Store.export_image``) of an empty state at applied index 0."""
    with Store(None) as store:
        return bytes(store.export_image())


class StoreError(TrickleError):
    """The store cannot do what was asked: it is closed, in use, or not a trickle database."""


class StoreVersionError(StoreError):
    """The database was written with a schema version this code does not read."""


# -- tables ------------------------------------------------------------------------------
# Times are INTEGER microseconds since the Unix epoch (UTC): exact, compact, sortable.

metadata = sa.MetaData()

meta_table = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
)

# Unused since the command log moved to Raft (raft.db); kept so the schema stays version 1.
commands_table = sa.Table(
    "commands",
    metadata,
    sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
)

jobs_table = sa.Table(
    "jobs",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("payload", sa.LargeBinary, nullable=False),  # wire.encode_job
)

executions_table = sa.Table(
    "executions",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True),  # the rowid
    sa.Column("job_name", sa.Text, nullable=False),
    sa.Column("id", sa.Text, nullable=False),
    sa.Column("node_name", sa.Text, nullable=False),
    sa.Column("group", sa.Integer, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Integer, nullable=False),
    sa.Column("finished_at", sa.Integer, nullable=True),  # NULL while running
    sa.Column("success", sa.Boolean, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("trigger", sa.Text, nullable=False),
    sa.Column("scheduled_at", sa.Integer, nullable=True),
    sa.Column("output", sa.Text, nullable=False),  # last: pruning never reads its pages
    sa.UniqueConstraint("job_name", "id", name="uq_executions_job_id"),
)
# One job's history in each listing order: a page costs the page, not the history.
sa.Index(
    "ix_executions_started",
    executions_table.c.job_name,
    executions_table.c.started_at,
    executions_table.c.id,
)
sa.Index(
    "ix_executions_finished",
    executions_table.c.job_name,
    executions_table.c.finished_at,
    executions_table.c.id,
)
sa.Index(
    "ix_executions_attempt",
    executions_table.c.job_name,
    executions_table.c.attempt,
    executions_table.c.id,
)
# Running executions across all jobs (load at start), without scanning the history.
sa.Index(
    "ix_executions_running",
    executions_table.c.started_at,
    executions_table.c.id,
    sqlite_where=executions_table.c.finished_at.is_(None),
)

stats_table = sa.Table(
    "stats",
    metadata,
    sa.Column("day", sa.Text, primary_key=True),  # YYYY-MM-DD, UTC
    sa.Column("success_count", sa.Integer, nullable=False),
    sa.Column("failed_count", sa.Integer, nullable=False),
)

_META_SCHEMA_VERSION = "schema_version"
_META_APPLIED_INDEX = "applied_index"
_META_FSM = "fsm_meta"

_X = executions_table.c
_EXECUTION_COLUMNS = (
    _X.id,
    _X.job_name,
    _X.node_name,
    _X.group,
    _X.attempt,
    _X.started_at,
    _X.finished_at,
    _X.success,
    _X.status,
    _X.exit_code,
    _X.trigger,
    _X.scheduled_at,
    _X.output,
)


# -- value conversion --------------------------------------------------------------------


def _to_us(value: datetime) -> int:
    try:
        return (value - _EPOCH) // _MICRO
    except TypeError:
        raise ValueError(f"naive datetime {value!r}: times must be timezone-aware") from None


def _opt_to_us(value: datetime | None) -> int | None:
    return None if value is None else _to_us(value)


def _from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def _opt_from_us(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def _utc_day(value: datetime) -> date:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: times must be timezone-aware")
    return value.astimezone(UTC).date()


def _int_bytes(value: int) -> bytes:
    return str(value).encode("ascii")


def _execution_row(e: Execution) -> tuple[Any, ...]:
    """The values of ``_UPSERT_EXECUTION_SQL``, in ``_EXECUTION_COLUMNS`` order."""
    return (
        e.id,
        e.job_name,
        e.node_name,
        e.group,
        e.attempt,
        _to_us(e.started_at),
        _opt_to_us(e.finished_at),
        e.success,
        e.status.value,
        e.exit_code,
        e.trigger.value,
        _opt_to_us(e.scheduled_at),
        e.output,
    )


def _execution_from_row(r: Sequence[Any]) -> Execution:
    return Execution(
        id=ExecutionId(r[0]),
        job_name=r[1],
        node_name=r[2],
        group=r[3],
        attempt=r[4],
        started_at=_from_us(r[5]),
        finished_at=_opt_from_us(r[6]),
        success=bool(r[7]),
        status=r[8],
        exit_code=r[9],
        trigger=r[10],
        scheduled_at=_opt_from_us(r[11]),
        output=r[12],
    )


# -- statements (built once; SQLAlchemy caches their compiled form) ------------------------

_upsert_job = sqlite_insert(jobs_table).on_conflict_do_update(
    index_elements=[jobs_table.c.name],
    set_={"payload": sqlite_insert(jobs_table).excluded.payload},
)
_delete_job = jobs_table.delete().where(jobs_table.c.name == sa.bindparam("job"))
_delete_job_executions = executions_table.delete().where(_X.job_name == sa.bindparam("job"))

# The hot path (apply of executions) runs these on the DBAPI cursor with executemany:
# SQLAlchemy's per-statement overhead would cost more than SQLite's work.
_EXEC_NAMES = ", ".join(f'"{c.name}"' for c in _EXECUTION_COLUMNS)
_UPSERT_EXECUTION_SQL = (
    f"INSERT INTO executions ({_EXEC_NAMES})"
    f" VALUES ({', '.join('?' for _ in _EXECUTION_COLUMNS)})"
    " ON CONFLICT (job_name, id) DO UPDATE SET "
    + ", ".join(
        f'"{c.name}" = excluded."{c.name}"'
        for c in _EXECUTION_COLUMNS
        if c.name not in ("job_name", "id")
    )
)
# Count on ix_executions_finished alone (covering): cheap, no table row is read.
_COUNT_FINISHED_SQL = (
    "SELECT count(*) FROM executions WHERE job_name = ? AND finished_at IS NOT NULL"
)
# The oldest n finished records of a job (walks ix_executions_started from the old end).
_PRUNE_OLDEST_SQL = (
    "DELETE FROM executions WHERE seq IN (SELECT seq FROM executions"
    " WHERE job_name = ? AND finished_at IS NOT NULL ORDER BY started_at, id LIMIT ?)"
)

# The batch write path (commit/apply) runs on the DBAPI cursor: one batch is a handful of
# statements, and SQLAlchemy's per-statement overhead was most of a small batch's cost.
_UPSERT_JOB_SQL = (
    "INSERT INTO jobs (name, payload) VALUES (?, ?)"
    " ON CONFLICT (name) DO UPDATE SET payload = excluded.payload"
)
_DELETE_JOB_SQL = "DELETE FROM jobs WHERE name = ?"
_DELETE_JOB_EXECUTIONS_SQL = "DELETE FROM executions WHERE job_name = ?"
_ADD_STATS_SQL = (
    "INSERT INTO stats (day, success_count, failed_count) VALUES (?, ?, ?)"
    " ON CONFLICT (day) DO UPDATE SET"
    " success_count = stats.success_count + excluded.success_count,"
    " failed_count = stats.failed_count + excluded.failed_count"
)
_PUT_META_SQL = (
    "INSERT INTO meta (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
MULTI_ROW_MAX = 64  # rows in one multi-row statement (13 columns: 832 parameters)


def _multi_row(sql: str) -> tuple[str, str, int]:
    """A one-row ``INSERT ... VALUES (?, ...) ON CONFLICT ...`` as (the part before
    VALUES, the part from ON CONFLICT, values per row), for ``_insert_rows``."""
    return sql[: sql.index(" VALUES")], sql[sql.index(" ON CONFLICT") :], sql.count("?")


_UPSERT_EXECUTION = _multi_row(_UPSERT_EXECUTION_SQL)
_UPSERT_JOB = _multi_row(_UPSERT_JOB_SQL)
_ADD_STATS = _multi_row(_ADD_STATS_SQL)
_PUT_META = _multi_row(_PUT_META_SQL)


def encode_rows(effects: Sequence[Effect]) -> list[Any]:
    """The row each effect writes (None for those that delete), in order, for
    ``Store.apply(rows=...)``. Pure: may run on any thread, in slices."""
    return [encode_row(e) for e in effects]


def encode_row(effect: Effect) -> Any:
    """The row one effect writes (see ``encode_rows``); TypeError for a non-effect."""
    kind = type(effect)
    if kind is ExecutionSaved:
        return _execution_row(effect.execution)  # type: ignore[union-attr]
    if kind is JobSaved:
        return (effect.job.name, encode_job(effect.job))  # type: ignore[union-attr]
    if kind is StatsAdded:
        return (_utc_day(effect.day).isoformat(), effect.success, effect.failed)  # type: ignore[union-attr]
    if kind in (JobRemoved, ExecutionsRemoved):
        return None
    raise TypeError(f"not a store effect: {effect!r}")


@functools.cache
def _multi_row_sql(head: str, tail: str, width: int, rows: int) -> str:
    one = "(" + ", ".join("?" * width) + ")"
    return f"{head} VALUES {', '.join([one] * rows)}{tail}"


def _no_pace() -> None:
    pass


def _insert_rows(
    cur: Any,
    statement: tuple[str, str, int],
    rows: Sequence[Sequence[Any]],
    pace: Callable[[], None] = _no_pace,
) -> None:
    """Insert (or upsert) ``rows`` with multi-row statements: a few statements where
    ``executemany`` ran one per row. Each statement SQLite runs releases the GIL and takes
    it back; the event loop thread, waking to launch a run, waited behind a worker thread
    that took the GIL back a hundred times (an entry of 50 launches: 100 rows). Chunks of
    powers of two (at most MULTI_ROW_MAX rows) keep the distinct statements few, for the
    statement cache. Rows later in ``rows`` come later, as with ``executemany``, so a row
    that conflicts with an earlier one of the same call updates it."""
    head, tail, width = statement
    i, n = 0, len(rows)
    while i < n:
        k = min(MULTI_ROW_MAX, 1 << ((n - i).bit_length() - 1))
        pace()
        cur.execute(
            _multi_row_sql(head, tail, width, k), [v for row in rows[i : i + k] for v in row]
        )
        i += k


_ins_stats = sqlite_insert(stats_table)
_add_stats = _ins_stats.on_conflict_do_update(
    index_elements=[stats_table.c.day],
    set_={
        "success_count": stats_table.c.success_count + _ins_stats.excluded.success_count,
        "failed_count": stats_table.c.failed_count + _ins_stats.excluded.failed_count,
    },
)

_ins_meta = sqlite_insert(meta_table)
_put_meta = _ins_meta.on_conflict_do_update(
    index_elements=[meta_table.c.key], set_={"value": _ins_meta.excluded.value}
)


@attrs.frozen(kw_only=True)
class LoadedState:
    """What a store holds at open: the applied state and where the log stands."""

    applied_index: int  # the last Raft log entry whose effects are stored (0: none)
    jobs: list[Job]
    running: list[Execution]  # executions with finished_at None
    fsm_meta: bytes | None  # the state machine's own small state, as last stored


class Store:
    """SQLite (file, WAL) through a sync SQLAlchemy engine.

    ``path``: the data directory (created if missing); the database is
    ``<path>/trickle.db``. One Store at a time may open a data directory: a second one,
    in this process or another, gets ``StoreError``. ``path`` None: an in-memory database
    (StaticPool, one connection shared by all threads behind a lock), for tests and
    throwaway engines.
    ``durability``: "full" | "normal" | "off" -> PRAGMA synchronous.
    ``history_limit``: finished execution records kept per job; older ones (by
    started_at, then id) are pruned when a record is saved. Running records are never
    pruned.

    Raises ``StoreVersionError`` at open if the database has another schema version, and
    ``StoreError`` if it is not a trickle database or the directory is in use.
    """

    def __init__(
        self, path: Path | None, *, durability: str = "normal", history_limit: int = 100
    ) -> None:
        if durability not in DURABILITY_LEVELS:
            raise ValueError(
                f"durability must be one of {', '.join(DURABILITY_LEVELS)}, not {durability!r}"
            )
        if history_limit < 1:
            raise ValueError(f"history_limit must be at least 1, not {history_limit}")
        self._path = None if path is None else Path(path)
        self._durability = durability
        self._history_limit = history_limit
        self._closed = False
        self._write_lock = threading.Lock()
        # in-memory mode: every operation, read or write, holds this lock
        self._memory_lock: threading.Lock | None = None
        self._lock_file: IO[bytes] | None = None
        # per job: an upper bound of its finished records (None/absent: unknown)
        self._finished_bound: dict[str, int] = {}
        self._applied_index = 0
        # called by the writing thread before each statement of a write (the Engine's
        # launch guard: the thread waits, the GIL released, while a run is launched)
        self.pace: Callable[[], None] = _no_pace

        if self._path is None:
            self._memory_lock = threading.Lock()
            self._writer = sa.create_engine(
                "sqlite://",
                poolclass=StaticPool,
                connect_args={"check_same_thread": False},
            )
            self._setup_engine(self._writer, write=True, memory=True)
            self._reader = self._writer
        else:
            self._open_dir(self._path)
            url = sa.URL.create("sqlite", database=str(self._path / DB_FILENAME))
            try:
                self._writer = sa.create_engine(url, pool_size=1, max_overflow=0)
                self._setup_engine(self._writer, write=True, memory=False)
                self._reader = sa.create_engine(
                    url, pool_size=READ_POOL_SIZE, max_overflow=READ_POOL_OVERFLOW
                )
                self._setup_engine(self._reader, write=False, memory=False)
            except BaseException:
                self._release_dir()
                raise
        try:
            self._init_schema()
        except BaseException:
            self._dispose()
            raise

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def path(self) -> Path | None:
        """The data directory, or None for an in-memory store."""
        return self._path

    @property
    def database_file(self) -> Path | None:
        return None if self._path is None else self._path / DB_FILENAME

    def close(self) -> None:
        """Checkpoint the WAL into the database file and release it. Idempotent."""
        if self._closed:
            return
        with self._write_lock, self._memory_guard():
            self._closed = True
            try:
                if self._path is not None:
                    self._reader.dispose()
                    raw = self._writer.raw_connection()  # outside any transaction
                    try:
                        cur = raw.cursor()
                        cur.execute("PRAGMA optimize")
                        cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                        cur.close()
                    finally:
                        raw.close()
            except sqlite3.Error:  # a reader still holds a snapshot: the WAL stays
                logger.warning("store close: WAL checkpoint failed", exc_info=True)
            finally:
                self._dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open_dir(self, path: Path) -> None:
        if path.exists() and not path.is_dir():
            raise StoreError(f"data dir {path} exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        try:
            self._lock_file = hold_lock(path / LOCK_FILENAME)
        except BlockingIOError:
            raise StoreError(
                f"data dir {path} is in use by another trickle store (lock {LOCK_FILENAME})"
            ) from None
        for leftover in path.glob(".image-*"):  # an image export or import a crash cut short
            with contextlib.suppress(OSError):
                leftover.unlink()

    def _release_dir(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing the descriptor releases the flock
            self._lock_file = None

    def _dispose(self) -> None:
        self._writer.dispose()
        if self._reader is not self._writer:
            self._reader.dispose()
        self._release_dir()

    def _setup_engine(self, engine: sa.Engine, *, write: bool, memory: bool) -> None:
        synchronous = DURABILITY_LEVELS[self._durability]

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see "begin")
            cur = dbapi_conn.cursor()
            try:
                if not memory:
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
                    cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
                cur.execute(f"PRAGMA synchronous={synchronous}")
                cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                cur.execute(f"PRAGMA cache_size=-{WRITE_CACHE_KIB if write else READ_CACHE_KIB}")
                cur.execute("PRAGMA temp_store=MEMORY")
                if not write:
                    cur.execute("PRAGMA query_only=ON")
            finally:
                cur.close()

        begin = "BEGIN IMMEDIATE" if write else "BEGIN"

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            # IMMEDIATE takes the writer lock up front, so a transaction never reads a
            # value another writer then changes (lost update). Reads take a plain
            # (deferred) BEGIN: a consistent snapshot without the writer lock.
            conn.exec_driver_sql(begin)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self._write_lock, self._memory_guard():
            self._check_open()
            with self._writer.begin() as conn:
                yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self._memory_guard():
            self._check_open()
            with self._reader.begin() as conn:
                yield conn

    def _memory_guard(self) -> contextlib.AbstractContextManager[Any]:
        return self._memory_lock if self._memory_lock is not None else contextlib.nullcontext()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    def _init_schema(self) -> None:
        with self._write() as conn:
            tables = {
                row[0]
                for row in conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
                )
            }
            if not tables:
                metadata.create_all(conn)
                conn.execute(
                    _put_meta,
                    [{"key": _META_SCHEMA_VERSION, "value": _int_bytes(SCHEMA_VERSION)}],
                )
            else:
                where = self._path / DB_FILENAME if self._path is not None else "memory"
                if "meta" not in tables:
                    raise StoreError(f"{where} is not a trickle database (no meta table)")
                raw = self._get_meta(conn, _META_SCHEMA_VERSION)
                if raw is None:
                    raise StoreError(f"{where} is not a trickle database (no schema_version)")
                try:
                    version = int(raw)
                except ValueError:
                    raise StoreError(f"{where} has a malformed schema_version {raw!r}") from None
                if version > SCHEMA_VERSION:
                    raise StoreVersionError(
                        f"{where} has schema version {version}, written by a newer trickle;"
                        f" this one reads version {SCHEMA_VERSION}: upgrade trickle"
                    )
                if version < SCHEMA_VERSION:
                    raise StoreVersionError(
                        f"{where} has schema version {version} and there is no migration"
                        f" to version {SCHEMA_VERSION}"
                    )
                missing = set(metadata.tables) - tables
                if missing:
                    raise StoreError(f"{where} is missing tables: {', '.join(sorted(missing))}")
            raw_index = self._get_meta(conn, _META_APPLIED_INDEX)
            self._applied_index = 0 if raw_index is None else int(raw_index)

    @staticmethod
    def _get_meta(conn: sa.Connection, key: str) -> bytes | None:
        value = conn.execute(
            sa.select(meta_table.c.value).where(meta_table.c.key == key)
        ).scalar_one_or_none()
        return None if value is None else bytes(value)

    # -- writes ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _raw_write(self) -> Iterator[Any]:
        """A write transaction on the DBAPI connection: BEGIN IMMEDIATE ... COMMIT, or
        ROLLBACK if anything fails."""
        with self._write_lock, self._memory_guard():
            self._check_open()
            raw = self._writer.raw_connection()
            try:
                cur = raw.cursor()
                try:
                    self.pace()
                    cur.execute("BEGIN IMMEDIATE")
                    try:
                        yield cur
                    except BaseException:
                        cur.execute("ROLLBACK")
                        raise
                    self.pace()
                    cur.execute("COMMIT")
                    self.pace()  # before the Python after it (the fsync released the GIL)
                finally:
                    cur.close()
            finally:
                raw.close()  # back to the pool

    # -- applied state ---------------------------------------------------------------------
    def apply(
        self,
        effects: list[Effect],
        *,
        applied_index: int,
        fsm_meta: bytes,
        rows: Sequence[Any] | None = None,
    ) -> None:
        """Persist effects in order, with applied_index and fsm_meta, in one transaction.

        All or nothing: if any effect fails (``ValueError`` for a naive datetime,
        ``TypeError`` for an object that is not an Effect, a database error), nothing of
        the call is stored and applied_index stays where it was. ``applied_index`` may not
        go backwards (``ValueError``). ``rows``: what ``encode_rows(effects)`` gave, if the
        caller encoded them already (the engine does, on its event loop, in slices: the
        encoding is Python work that, done in the writer thread, held the GIL the event
        loop needed to launch runs on time).
        """
        self.pace()  # a worker thread, just woken: before any of its Python
        if rows is None:
            rows = encode_rows(effects)
        elif len(rows) != len(effects):
            raise ValueError(f"{len(rows)} rows for {len(effects)} effects")
        bounds: dict[str, int] = {}  # this transaction's view of _finished_bound
        with self._raw_write() as cur:
            self._apply_effects(cur, effects, rows, applied_index, fsm_meta, bounds)
        self._publish_applied(applied_index, bounds)

    def _apply_effects(
        self,
        cur: Any,
        effects: list[Effect],
        rows: Sequence[Any],
        applied_index: int,
        fsm_meta: bytes,
        bounds: dict[str, int],
    ) -> None:
        if applied_index < self._applied_index:
            raise ValueError(
                f"applied_index {applied_index} is behind the stored {self._applied_index}"
            )
        i, n = 0, len(effects)
        while i < n:
            kind = type(effects[i])
            j = i + 1
            while j < n and type(effects[j]) is kind:
                j += 1
            run: list[Any] = effects[i:j]
            if kind is ExecutionSaved:
                self._save_executions(cur, run, rows[i:j], bounds)
            elif kind is JobSaved:
                _insert_rows(cur, _UPSERT_JOB, rows[i:j], self.pace)
            elif kind is JobRemoved:
                names = [(e.name,) for e in run]
                cur.executemany(_DELETE_JOB_EXECUTIONS_SQL, names)
                cur.executemany(_DELETE_JOB_SQL, names)
                bounds.update((e.name, 0) for e in run)
            elif kind is ExecutionsRemoved:
                names = [(e.job_name,) for e in run]
                cur.executemany(_DELETE_JOB_EXECUTIONS_SQL, names)
                bounds.update((e.job_name, 0) for e in run)
            elif kind is StatsAdded:
                _insert_rows(cur, _ADD_STATS, rows[i:j], self.pace)
            else:
                raise TypeError(f"not a store effect: {effects[i]!r}")
            i = j
        _insert_rows(
            cur,
            _PUT_META,
            [
                (_META_APPLIED_INDEX, _int_bytes(applied_index)),
                (_META_FSM, bytes(fsm_meta)),
            ],
            self.pace,
        )

    def _publish_applied(self, applied_index: int, bounds: dict[str, int]) -> None:
        """After a commit: remember what this transaction learned."""
        self._applied_index = applied_index
        for job, bound in bounds.items():
            if bound:
                self._finished_bound[job] = bound
            else:
                self._finished_bound.pop(job, None)

    def _save_executions(
        self,
        cursor: Any,
        run: list[ExecutionSaved],
        rows: Sequence[Any],
        bounds: dict[str, int],
    ) -> None:
        _insert_rows(cursor, _UPSERT_EXECUTION, rows, self.pace)
        finished = Counter(e.execution.job_name for e in run if e.execution.finished_at is not None)
        limit = self._history_limit
        prune: list[tuple[str, int]] = []
        for job, saved in finished.items():
            bound = bounds.get(job, self._finished_bound.get(job))
            # bound: an upper bound of the job's finished records (a re-saved finished
            # record counts twice); count exactly only when it passes the limit
            if bound is None or bound + saved > limit:
                count = cursor.execute(_COUNT_FINISHED_SQL, (job,)).fetchone()[0]
                if count > limit:
                    prune.append((job, count - limit))
                    count = limit
                bounds[job] = count
            else:
                bounds[job] = bound + saved
        if prune:
            cursor.executemany(_PRUNE_OLDEST_SQL, prune)

    def load(self) -> LoadedState:
        """The applied state: applied_index, every job (by name), the running executions
        (oldest first) and fsm_meta (None if never stored)."""
        with self._read() as conn:
            raw_index = self._get_meta(conn, _META_APPLIED_INDEX)
            fsm_meta = self._get_meta(conn, _META_FSM)
            jobs = [
                decode_job(payload)
                for (payload,) in conn.execute(
                    sa.select(jobs_table.c.payload).order_by(jobs_table.c.name)
                )
            ]
            running = [
                _execution_from_row(row)
                for row in conn.execute(
                    sa.select(*_EXECUTION_COLUMNS)
                    .where(_X.finished_at.is_(None))
                    .order_by(_X.started_at, _X.id)
                )
            ]
        return LoadedState(
            applied_index=0 if raw_index is None else int(raw_index),
            jobs=jobs,
            running=running,
            fsm_meta=fsm_meta,
        )

    # -- images (Raft snapshots) -------------------------------------------------------------
    def export_image(self) -> SnapshotFile:
        """The whole applied state as an image (a Raft snapshot's data): a SQLite database
        of this schema written by ``VACUUM INTO`` from one read transaction (a consistent
        view), into an unlinked file in the data directory (the system's temporary
        directory for an in-memory store). Memory use does not grow with the history.
        Writes may go on meanwhile (file mode): see ``export_image_indexed``."""
        return self.export_image_indexed()[1]

    def export_image_indexed(self) -> tuple[int, SnapshotFile]:
        """``export_image`` and the applied index of the state it holds (applies may go on
        while it is taken: the image is as of the last one committed when it began)."""
        fd, name = tempfile.mkstemp(prefix=".image-", dir=self._path)
        os.close(fd)
        try:
            if self._path is None:
                with self._memory_guard():
                    self._check_open()
                    raw = self._writer.raw_connection()
                    try:
                        _dbapi(raw).execute("VACUUM INTO ?", (name,))
                    finally:
                        raw.close()
            else:
                self._check_open()
                # a connection of its own: the pooled readers are query_only, which
                # VACUUM INTO refuses, and the writer must stay free for the apply path
                conn = sqlite3.connect(self._path / DB_FILENAME, isolation_level=None)
                try:
                    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                    conn.execute("VACUUM INTO ?", (name,))
                finally:
                    conn.close()
            applied_index, _ = self._check_image(name)
            return applied_index, SnapshotFile.adopt(name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise

    def import_image(self, image: bytes | SnapshotFile) -> int:
        """Replace the whole applied state with an ``export_image`` image, in one
        transaction; returns its applied_index. Raises ``StoreError`` for data that is not
        an image of a version this code reads (nothing is changed then)."""
        if image[: len(SQLITE_HEADER)] == SQLITE_HEADER:
            return self._import_database(image)
        return self._import_blob(bytes(image))

    def _import_database(self, image: bytes | SnapshotFile) -> int:
        """Import an image that is a SQLite database: written to a temporary file a chunk
        at a time, checked, attached, and its tables copied by SQLite in one transaction."""
        fd, name = tempfile.mkstemp(prefix=".image-in-", dir=self._path)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in snapshot_chunks(image):
                    out.write(chunk)
            applied_index, fsm_meta = self._check_image(name)
            with self._write_lock, self._memory_guard():
                self._check_open()
                raw = self._writer.raw_connection()
                try:
                    cur = _dbapi(raw).cursor()
                    cur.execute("ATTACH DATABASE ? AS image", (name,))
                    try:
                        cur.execute("BEGIN IMMEDIATE")
                        try:
                            for table in _IMAGE_TABLES:  # fixed names
                                columns = ", ".join(f'"{c.name}"' for c in metadata.tables[table].c)
                                cur.execute(f"DELETE FROM main.{table}")
                                cur.execute(
                                    f"INSERT INTO main.{table} ({columns})"
                                    f" SELECT {columns} FROM image.{table}"
                                )
                            cur.execute(
                                _PUT_META_SQL, (_META_APPLIED_INDEX, _int_bytes(applied_index))
                            )
                            if fsm_meta is not None:
                                cur.execute(_PUT_META_SQL, (_META_FSM, fsm_meta))
                            else:
                                cur.execute("DELETE FROM main.meta WHERE key = ?", (_META_FSM,))
                        except BaseException:
                            cur.execute("ROLLBACK")
                            raise
                        cur.execute("COMMIT")
                    finally:
                        cur.execute("DETACH DATABASE image")
                        cur.close()
                finally:
                    raw.close()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
        self._applied_index = applied_index
        self._finished_bound.clear()
        return applied_index

    @staticmethod
    def _check_image(path: str) -> tuple[int, bytes | None]:
        """(applied_index, fsm_meta) of the image database at ``path``; StoreError if it is
        not a trickle state database of this schema version."""
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise StoreError(f"not a state image this version reads: {exc}") from exc
        try:
            tables = {
                name
                for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            missing = {"meta", *_IMAGE_TABLES} - tables
            if missing:
                raise StoreError(
                    f"not a state image this version reads: no {', '.join(sorted(missing))} table"
                )
            meta = dict(conn.execute("SELECT key, value FROM meta"))
        except sqlite3.Error as exc:
            raise StoreError(f"not a state image this version reads: {exc}") from exc
        finally:
            conn.close()
        try:
            version = int(meta.get(_META_SCHEMA_VERSION, b""))
            applied_index = int(meta.get(_META_APPLIED_INDEX, b"0"))
        except (TypeError, ValueError):
            raise StoreError(
                "not a state image this version reads: its schema version or applied index"
                " is not a number"
            ) from None
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"not a state image this version reads: schema version {version}, this"
                f" trickle reads {SCHEMA_VERSION}"
            )
        fsm_meta = meta.get(_META_FSM)
        return applied_index, None if fsm_meta is None else bytes(fsm_meta)

    def _import_blob(self, image: bytes) -> int:
        """Import an image of the earlier format, a msgpack map (IMAGE_VERSION)."""
        try:
            data = msgpack.unpackb(image, raw=False)
            if not isinstance(data, dict) or data.get("v") != IMAGE_VERSION:
                raise ValueError(
                    f"image version {data.get('v') if isinstance(data, dict) else '?'}"
                )
            applied_index = int(data["applied_index"])
            jobs = [bytes(p) for p in data["jobs"]]
            names = [decode_job(p).name for p in jobs]
            executions = [tuple(row) for row in data["executions"]]
            stats = [tuple(row) for row in data["stats"]]
            fsm_meta = data["fsm_meta"]
        except (ValueError, TypeError, KeyError, msgpack.ExtraData, msgpack.FormatError) as exc:
            raise StoreError(f"not a state image this version reads: {exc}") from exc
        with self._raw_write() as cur:
            for table in ("jobs", "executions", "stats"):
                cur.execute(f"DELETE FROM {table}")  # fixed table names
            cur.executemany(_UPSERT_JOB_SQL, list(zip(names, jobs, strict=True)))
            cur.executemany(_UPSERT_EXECUTION_SQL, executions)
            cur.executemany(
                "INSERT INTO stats (day, success_count, failed_count) VALUES (?, ?, ?)", stats
            )
            rows = [(_META_APPLIED_INDEX, _int_bytes(applied_index))]
            if fsm_meta is not None:
                rows.append((_META_FSM, bytes(fsm_meta)))
            else:
                cur.execute("DELETE FROM meta WHERE key = ?", (_META_FSM,))
            cur.executemany(_PUT_META_SQL, rows)
        self._applied_index = applied_index
        self._finished_bound.clear()
        return applied_index

    def reset_applied_index(self, applied_index: int) -> None:
        """Set the applied index without touching the state (adopting a single-node store
        of an older version into a new Raft log, whose indexes start again at 1)."""
        with self._raw_write() as cur:
            cur.execute(_PUT_META_SQL, (_META_APPLIED_INDEX, _int_bytes(applied_index)))
        self._applied_index = applied_index

    # -- reads -----------------------------------------------------------------------------
    def list_executions(
        self,
        job_name: str,
        *,
        sort: str = "started_at",
        order: str = "desc",
        start: int = 0,
        end: int | None = None,
    ) -> tuple[list[Execution], int]:
        """One page of a job's history and the job's total count. Costs the page, not the
        history. ``sort``: started_at | finished_at | attempt (ties broken by id);
        ``order``: asc | desc (running records have no finished_at: they sort first in
        asc, last in desc). The page is ``[start:end)`` of the sorted history (``end`` None:
        to the end). Raises ``ValueError`` for an unknown sort or order or a negative index.
        """
        if sort not in SORTS:
            raise ValueError(f"unknown sort {sort!r}: expected one of {', '.join(SORTS)}")
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}: expected asc or desc")
        if start < 0 or (end is not None and end < 0):
            raise ValueError(f"negative slice index: start={start}, end={end}")
        key = executions_table.c[sort]
        direction = sa.desc if order == "desc" else sa.asc
        query = (
            sa.select(*_EXECUTION_COLUMNS)
            .where(_X.job_name == job_name)
            .order_by(direction(key), direction(_X.id))
        )
        with self._read() as conn:
            total = conn.execute(
                sa.select(sa.func.count())
                .select_from(executions_table)
                .where(_X.job_name == job_name)
            ).scalar_one()
            if end is not None and end <= start:
                return [], total
            query = query.limit(-1 if end is None else end - start).offset(start)
            page = [_execution_from_row(row) for row in conn.execute(query)]
        return page, total

    def get_execution(self, job_name: str, execution_id: str) -> Execution | None:
        """The execution with this id in this job's history, or None."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(*_EXECUTION_COLUMNS).where(_X.job_name == job_name, _X.id == execution_id)
            ).first()
        return None if row is None else _execution_from_row(row)

    def daily_stats(self, first: datetime, last: datetime) -> list[DayStats]:
        """One entry per UTC day from first to last inclusive, zero-filled, oldest first.

        Raises ``ValueError`` if last is before first or either is naive.
        """
        first_day, last_day = _utc_day(first), _utc_day(last)
        if last_day < first_day:
            raise ValueError(f"daily_stats: last ({last}) is before first ({first})")
        with self._read() as conn:
            rows = conn.execute(
                sa.select(
                    stats_table.c.day, stats_table.c.success_count, stats_table.c.failed_count
                ).where(
                    stats_table.c.day >= first_day.isoformat(),
                    stats_table.c.day <= last_day.isoformat(),
                )
            )
            found = {day: (ok, failed) for day, ok, failed in rows}
        out = []
        day = first_day
        while day <= last_day:
            ok, failed = found.get(day.isoformat(), (0, 0))
            out.append(
                DayStats(
                    date=datetime(day.year, day.month, day.day, tzinfo=UTC),
                    success_count=ok,
                    failed_count=failed,
                )
            )
            day += timedelta(days=1)
        return out
