"""The durable Raft store: log, hard state and latest snapshot in one SQLite file (WAL).

Every method is synchronous; the Trio driver calls them through worker threads (one at a
time is enough, a lock here serializes them anyway). One ``save`` is one SQLite
transaction, so it is atomic; with ``Durability.FSYNC`` its commit fsyncs the WAL once
(group commit: the caller puts a whole Ready's writes in one save).

Every row carries a CRC32: entries over (index, term, kind, data), the hard state over
(term, vote, commit), the snapshot over (index, term, conf, data). ``load()`` checks them
all. SQLite itself already ignores a torn WAL tail (its frames have checksums), so a crash
during a save leaves the state of the save before; the CRCs catch what SQLite cannot see.
A damaged or missing tail of the log is cut (deleted, counted in ``recovered_cut``,
logged at WARNING); damage followed by intact rows, a damaged hard state or snapshot, or a
commit index beyond the log raise StorageCorrupt naming what is damaged.

Exceptions::

    TrickleError
    ├── StorageCorrupt        the file holds state that cannot be read back safely
    ├── RaftStorageError      closed, not loaded yet, in use, or not a raft store
    └── ValidationError       a write Raft never makes (see storage.plan_save)
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sqlite3
import struct
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import msgpack
import sqlalchemy as sa

from trickle._filelock import hold_lock
from trickle.errors import StorageCorrupt, ValidationError
from trickle.raft.messages import (
    ConfState,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    NodeId,
    Snapshot,
    SnapshotMeta,
)
from trickle.raft.storage import (
    CHUNK_BYTES,
    Durability,
    EntriesCompacted,
    RaftStorageError,
    SnapshotFile,
    plan_compact,
    plan_save,
    snapshot_chunks,
)

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # bump with a migration whenever a table changes (see _MIGRATIONS)
LOCK_SUFFIX = ".lock"  # <db file>.lock: flocked while a store has the file open
BUSY_TIMEOUT_MS = 10_000  # nobody else should hold the file; this only bounds a surprise
WAL_AUTOCHECKPOINT_PAGES = 1_000  # ~4 MB of WAL between checkpoints: short, rare stalls
WAL_SIZE_LIMIT = 64 * 2**20  # bytes the WAL file is truncated to after a checkpoint
WAL_FRAME_HEADER = 24  # bytes before each page in the WAL; the file header is 32
CACHE_KIB = 16_384  # page cache of the connection
SYNCHRONOUS = {Durability.FSYNC: "FULL", Durability.NONE: "OFF"}

# -- tables ---------------------------------------------------------------------------------

metadata = sa.MetaData()

meta_table = sa.Table(
    "raft_meta",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
)

entries_table = sa.Table(
    "raft_entries",
    metadata,
    sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("term", sa.Integer, nullable=False),
    sa.Column("kind", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("crc", sa.Integer, nullable=False),  # entry_crc(idx, term, kind, data)
)

hard_state_table = sa.Table(
    "raft_hard_state",
    metadata,
    sa.Column("id", sa.Integer, sa.CheckConstraint("id = 1"), primary_key=True),
    sa.Column("term", sa.Integer, nullable=False),
    sa.Column("vote", sa.Text, nullable=True),
    sa.Column("commit_index", sa.Integer, nullable=False),
    sa.Column("crc", sa.Integer, nullable=False),  # hard_state_crc(...)
)

snapshot_table = sa.Table(
    "raft_snapshot",
    metadata,
    sa.Column("id", sa.Integer, sa.CheckConstraint("id = 1"), primary_key=True),
    sa.Column("idx", sa.Integer, nullable=False),
    sa.Column("term", sa.Integer, nullable=False),
    sa.Column("conf", sa.LargeBinary, nullable=False),  # msgpack [voters, learners]
    sa.Column("data", sa.LargeBinary, nullable=False),  # the image's start (v1: all of it)
    sa.Column("crc", sa.Integer, nullable=False),  # snapshot_crc(...) of the whole image
    sa.Column("gen", sa.Integer, nullable=False, server_default="0"),  # its chunks' gen
)

# The rest of the snapshot's image, in order, CHUNK_BYTES a row: an image is streamed in
# and out, never held whole (SQLite caps one blob at 1 GB, and reads a blob whole). Each
# image written gets a new generation: compaction writes a new image's chunks in several
# short transactions beside the current one (saves go on in between), then switches the
# snapshot row to it; chunks of other generations are leftovers, deleted in batches.
snapshot_chunks_table = sa.Table(
    "raft_snapshot_chunks",
    metadata,
    sa.Column("gen", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)
STAGE_BATCH_CHUNKS = 4  # chunks (MiB) written per transaction while staging an image

_META_SCHEMA_VERSION = "schema_version"

# The hot path runs on the DBAPI cursor: SQLAlchemy's per-statement overhead would be most
# of a small save's cost.
_INSERT_ENTRY_SQL = "INSERT INTO raft_entries (idx, term, kind, data, crc) VALUES (?, ?, ?, ?, ?)"
_DELETE_FROM_SQL = "DELETE FROM raft_entries WHERE idx >= ?"
_DELETE_BELOW_SQL = "DELETE FROM raft_entries WHERE idx < ?"
_DELETE_ALL_SQL = "DELETE FROM raft_entries"
_TERM_AT_SQL = "SELECT term FROM raft_entries WHERE idx = ?"
_PUT_HARD_STATE_SQL = (
    "INSERT OR REPLACE INTO raft_hard_state (id, term, vote, commit_index, crc)"
    " VALUES (1, ?, ?, ?, ?)"
)
_PUT_SNAPSHOT_SQL = (
    "INSERT OR REPLACE INTO raft_snapshot (id, idx, term, conf, data, crc, gen)"
    " VALUES (1, ?, ?, ?, ?, ?, ?)"
)
_READ_ENTRIES_SQL = "SELECT idx, term, kind, data, crc FROM raft_entries ORDER BY idx"
_READ_RANGE_SQL = (
    "SELECT idx, term, kind, data, crc FROM raft_entries WHERE idx BETWEEN ? AND ? ORDER BY idx"
)
_READ_HARD_STATE_SQL = "SELECT term, vote, commit_index, crc FROM raft_hard_state WHERE id = 1"
_READ_SNAPSHOT_SQL = "SELECT idx, term, conf, data, crc, gen FROM raft_snapshot WHERE id = 1"
_INSERT_SNAPSHOT_CHUNK_SQL = "INSERT INTO raft_snapshot_chunks (gen, seq, data) VALUES (?, ?, ?)"
_READ_SNAPSHOT_CHUNK_SQL = "SELECT data FROM raft_snapshot_chunks WHERE gen = ? AND seq = ?"
_COUNT_SNAPSHOT_CHUNKS_SQL = (
    "SELECT count(*), coalesce(max(seq), -1) FROM raft_snapshot_chunks WHERE gen = ?"
)
_MAX_GEN_SQL = "SELECT max(gen) FROM (SELECT max(gen) AS gen FROM raft_snapshot_chunks"
_MAX_GEN_SQL += " UNION ALL SELECT max(gen) FROM raft_snapshot)"
_STALE_CHUNKS_SQL = (
    "SELECT gen, seq FROM raft_snapshot_chunks WHERE gen NOT IN (?, ?) ORDER BY gen, seq LIMIT ?"
)
_DELETE_CHUNK_SQL = "DELETE FROM raft_snapshot_chunks WHERE gen = ? AND seq = ?"

# schema migrations: version -> the statements that bring a store of it to version + 1
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE raft_snapshot_chunks (gen INTEGER NOT NULL, seq INTEGER NOT NULL,"
        " data BLOB NOT NULL, PRIMARY KEY (gen, seq))",
        "ALTER TABLE raft_snapshot ADD COLUMN gen INTEGER NOT NULL DEFAULT 0",
    ),
}

# -- checksums --------------------------------------------------------------------------------

_ENTRY_HEAD = struct.Struct(">QQB")
_PAIR = struct.Struct(">QQ")
_KINDS = {int(kind): kind for kind in EntryKind}


def _no_pace() -> None:
    pass


def entry_crc(index: int, term: int, kind: int, data: bytes) -> int:
    """CRC32 of an entry row: its index, term, kind and data."""
    return zlib.crc32(data, zlib.crc32(_ENTRY_HEAD.pack(index, term, kind)))


def _row_intact(idx: int, term: int, kind: int, data: bytes, crc: int) -> bool:
    """Whether a stored entry row is what was written (its CRC and kind check out)."""
    try:
        return entry_crc(idx, term, kind, data) == crc and kind in _KINDS
    except (TypeError, struct.error):
        return False


def hard_state_crc(term: int, vote: str | None, commit: int) -> int:
    """CRC32 of the hard state row (a None vote and an empty one differ)."""
    tail = b"\x00" if vote is None else b"\x01" + vote.encode("utf-8")
    return zlib.crc32(tail, zlib.crc32(_PAIR.pack(term, commit)))


def snapshot_crc(index: int, term: int, conf: bytes, data: bytes) -> int:
    """CRC32 of the snapshot row: its index, term, encoded configuration and image."""
    return zlib.crc32(data, zlib.crc32(conf, zlib.crc32(_PAIR.pack(index, term))))


def _encode_conf(conf: ConfState) -> bytes:
    packed: bytes = msgpack.packb([sorted(conf.voters), sorted(conf.learners)])
    return packed


def _decode_conf(raw: bytes) -> ConfState:
    voters, learners = msgpack.unpackb(raw)
    return ConfState(
        voters=frozenset(NodeId(str(v)) for v in voters),
        learners=frozenset(NodeId(str(n)) for n in learners),
    )


class SqliteRaftStorage:
    """The RaftStorage contract in one SQLite file (``<data_dir>/raft.db`` in the engine).

    ``path``: the database file (created, with its parent directories, if missing).
    ``durability``: ``Durability.FSYNC`` -> ``PRAGMA synchronous=FULL``: when ``save``
    returns, its writes survive a power loss (one WAL fsync per save).
    ``Durability.NONE`` -> ``synchronous=OFF``: no fsync at all; a process crash loses
    nothing, a power loss may lose recent saves (votes included) and is unsafe for Raft.
    The values' strings ("fsync", "none") are accepted too; others raise ValidationError.

    One store at a time may open a file: a second one, in this process or another, gets
    RaftStorageError (a flock on ``<path>.lock``, released by ``close()``). A file that is
    not a SQLite database raises StorageCorrupt; another kind of database or a newer
    schema, RaftStorageError.

    Call ``load()`` before the first ``save``/``compact`` of a store that holds state (the
    node starts from it anyway): load verifies the file and cuts a damaged tail, and
    writing after an unverified tail would bury it. Otherwise RaftStorageError.
    ``recovered_cut`` counts the entries cut by loads; ``saves``, ``compactions`` and
    ``entries_written`` count completed calls.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, durability: Durability | str = Durability.FSYNC
    ) -> None:
        try:
            self._durability = Durability(durability)
        except ValueError:
            choices = ", ".join(d.value for d in Durability)
            raise ValidationError(
                f"durability must be one of {choices}, not {durability!r}", field="durability"
            ) from None
        self._path = Path(path)
        self._lock = threading.Lock()
        self._closed = False
        self._lock_file: IO[bytes] | None = None
        self.recovered_cut = 0
        self.saves = 0
        self.compactions = 0
        self.entries_written = 0
        # what the file holds, as of the last load or write (valid once _loaded)
        self._loaded = False
        self._hard_state = HardState()
        self._snapshot_index = 0
        self._snapshot_term = 0
        self._last_index = 0
        self._cursor: sqlite3.Cursor | None = None  # the open transaction's (stored_term)
        # called by the writing thread before each statement of a save: a host whose
        # event loop must not wait for the GIL at some instants makes it wait (the
        # Engine's launch guard; see trickle/engine/guard.py)
        self.pace: Callable[[], None] = _no_pace
        self._gen = -1  # generation of the stored snapshot's chunks
        self._staging = -1  # generation a compaction is writing (not to be deleted)
        self._next_gen = -1  # unknown until first needed

        if self._path.exists() and self._path.is_dir():
            raise RaftStorageError(f"{self._path} is a directory, not a raft database file")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._acquire_file_lock()
        try:
            self._engine = sa.create_engine(
                sa.URL.create("sqlite", database=str(self._path)),
                pool_size=1,
                max_overflow=0,
                connect_args={"check_same_thread": False},  # worker threads take turns
            )
            self._setup_engine()
            try:
                self._init_schema()
                self._raw = self._engine.raw_connection()  # held until close
                self._preallocate_wal()
            except BaseException:
                self._engine.dispose()
                raise
        except sqlite3.DatabaseError as exc:
            self._release_file_lock()
            raise StorageCorrupt(f"{self._path} is not a readable SQLite database: {exc}") from exc
        except sa.exc.DatabaseError as exc:
            self._release_file_lock()
            raise StorageCorrupt(
                f"{self._path} is not a readable SQLite database: {exc.orig}"
            ) from exc
        except BaseException:
            self._release_file_lock()
            raise
        self._dbapi: sqlite3.Connection = self._raw.driver_connection  # type: ignore[assignment]

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @property
    def durability(self) -> Durability:
        return self._durability

    def close(self) -> None:
        """Checkpoint the WAL into the database file and release the file. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                cur = self._dbapi.cursor()
                try:
                    cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    cur.close()
            except sqlite3.Error:  # the WAL stays; the next open reads it
                logger.warning("raft storage %s: WAL checkpoint at close failed", self._path)
            finally:
                try:
                    self._raw.close()
                    self._engine.dispose()
                finally:
                    self._release_file_lock()

    def __enter__(self) -> SqliteRaftStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _acquire_file_lock(self) -> None:
        lock_path = self._path.with_name(self._path.name + LOCK_SUFFIX)
        try:
            self._lock_file = hold_lock(lock_path)
        except BlockingIOError:
            raise RaftStorageError(
                f"{self._path} is in use by another raft store (lock {lock_path.name})"
            ) from None

    def _release_file_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing the descriptor releases the flock
            self._lock_file = None

    def _setup_engine(self) -> None:
        synchronous = SYNCHRONOUS[self._durability]

        @sa.event.listens_for(self._engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # transactions are ours: BEGIN IMMEDIATE
            cur = dbapi_conn.cursor()
            try:
                # Only this connection ever uses the file (the flock sees to it): with
                # exclusive locking, set before WAL is first used, SQLite keeps the WAL
                # index in memory and takes no shared-memory locks per transaction.
                cur.execute("PRAGMA locking_mode=EXCLUSIVE")
                mode = cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise RaftStorageError(
                        f"{self._path}: SQLite refused WAL mode (journal_mode={mode})"
                    )
                cur.execute(f"PRAGMA synchronous={synchronous}")
                cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
                cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
                cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                cur.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            finally:
                cur.close()

        @sa.event.listens_for(self._engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def _preallocate_wal(self) -> None:
        """Write zeros past the end of the WAL file up to the size it reaches between two
        checkpoints (after one, SQLite writes it again from the start). A save then
        overwrites blocks the file already has, and its fdatasync flushes data only:
        growing the file makes every fdatasync commit the file system's journal too,
        which cost 2-3 times the time (p50 and p99, three stores on one ext4 disk). The
        zeros are no frames (SQLite stops reading the WAL at the first invalid one),
        and the valid frames before them are left as they are."""
        cur = self._dbapi_connection().cursor()
        try:
            page_size = int(cur.execute("PRAGMA page_size").fetchone()[0])
        finally:
            cur.close()
        target = 32 + WAL_AUTOCHECKPOINT_PAGES * (WAL_FRAME_HEADER + page_size)
        wal = self._path.with_name(self._path.name + "-wal")
        try:
            fd = os.open(wal, os.O_WRONLY)
        except FileNotFoundError:  # no WAL yet: nothing to extend (it grows once)
            return
        try:
            size = os.fstat(fd).st_size
            if size >= target:
                return
            chunk = bytes(min(target - size, 1 << 20))
            while size < target:
                size += os.pwrite(fd, chunk[: target - size], size)
            os.fsync(fd)
        except OSError as exc:  # only slower saves follow (e.g. a full disk: they fail)
            logger.warning("raft storage %s: could not preallocate the WAL: %s", self._path, exc)
        finally:
            os.close(fd)

    def _dbapi_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = self._raw.driver_connection  # type: ignore[assignment]
        return conn

    def _init_schema(self) -> None:
        with self._engine.begin() as conn:
            tables = {
                name
                for (name,) in conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
                )
            }
            if not tables:
                metadata.create_all(conn)
                conn.execute(
                    meta_table.insert(),
                    [{"key": _META_SCHEMA_VERSION, "value": str(SCHEMA_VERSION).encode()}],
                )
                self._loaded = True  # nothing to verify
                return
            if meta_table.name not in tables:
                raise RaftStorageError(f"{self._path} is not a raft store (no raft_meta table)")
            raw = conn.execute(
                sa.select(meta_table.c.value).where(meta_table.c.key == _META_SCHEMA_VERSION)
            ).scalar_one_or_none()
            try:
                version = int(raw) if raw is not None else None
            except ValueError:
                version = None
            if version is None:
                raise RaftStorageError(f"{self._path} has no readable schema version ({raw!r})")
            if version > SCHEMA_VERSION or version not in _MIGRATIONS and version != SCHEMA_VERSION:
                raise RaftStorageError(
                    f"{self._path} has raft schema version {version}; this trickle reads"
                    f" version {SCHEMA_VERSION}"
                )
            while version < SCHEMA_VERSION:  # in this transaction: all steps or none
                for statement in _MIGRATIONS[version]:
                    conn.exec_driver_sql(statement)
                version += 1
                conn.execute(
                    meta_table.update()
                    .where(meta_table.c.key == _META_SCHEMA_VERSION)
                    .values(value=str(version).encode())
                )
                logger.info("raft storage %s: schema migrated to version %d", self._path, version)
                tables.add(snapshot_chunks_table.name)
            missing = set(metadata.tables) - tables
            if missing:
                raise StorageCorrupt(
                    f"{self._path} is missing tables: {', '.join(sorted(missing))}"
                )
            holds_state = any(
                conn.exec_driver_sql(f"SELECT EXISTS (SELECT 1 FROM {table})").scalar()
                for table in (entries_table.name, hard_state_table.name, snapshot_table.name)
            )
            self._loaded = not holds_state

    # -- the log view used by plan_save / plan_compact (inside a transaction) ----------------
    @property
    def hard_state(self) -> HardState:
        """The stored hard state (as of the last load or write)."""
        return self._hard_state

    @property
    def snapshot_index(self) -> int:
        return self._snapshot_index

    @property
    def snapshot_term(self) -> int:
        return self._snapshot_term

    @property
    def last_entry_index(self) -> int:
        return self._last_index

    def stored_term(self, index: int) -> int | None:
        if self._cursor is None or not self._last_index or index > self._last_index:
            return None
        row = self._cursor.execute(_TERM_AT_SQL, (index,)).fetchone()
        return None if row is None else int(row[0])

    # -- RaftStorage -------------------------------------------------------------------------
    def save(
        self,
        *,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: Snapshot | None = None,
    ) -> None:
        """See RaftStorage.save: one transaction, one fsync with Durability.FSYNC."""
        self.pace()  # a worker thread, just woken: before any of its Python
        with self._lock:
            self._check_writable()
            if hard_state is not None and hard_state == self._hard_state:
                hard_state = None  # unchanged: no need to rewrite its page
            if hard_state is not None or entries or snapshot is not None:
                self._save(hard_state, entries, snapshot)
            self.saves += 1
            self.entries_written += len(entries)
        if snapshot is not None:
            self._delete_stale_chunks()

    def _save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        with self._transaction() as cur:
            drop = plan_save(self, hard_state=hard_state, entries=entries, snapshot=snapshot)
            gen = self._put_snapshot(cur, snapshot) if snapshot is not None else -1
            if snapshot is not None and drop:
                cur.execute(_DELETE_ALL_SQL)
            if entries:
                first = entries[0].index
                if not drop and first <= self._last_index:
                    cur.execute(_DELETE_FROM_SQL, (first,))
                crc32, pack = zlib.crc32, _ENTRY_HEAD.pack
                rows = [
                    (
                        e.index,
                        e.term,
                        int(e.kind),
                        e.data,
                        crc32(e.data, crc32(pack(e.index, e.term, e.kind))),
                    )
                    for e in entries
                ]  # the CRC is entry_crc, inlined: this loop is the hot path of a big batch
                self.pace()
                cur.executemany(_INSERT_ENTRY_SQL, rows)
            if hard_state is not None:
                self.pace()
                term, vote, commit = hard_state.term, hard_state.vote, hard_state.commit
                cur.execute(
                    _PUT_HARD_STATE_SQL, (term, vote, commit, hard_state_crc(term, vote, commit))
                )
        # committed: the cache follows the file
        if snapshot is not None:
            self._gen = gen
            self._snapshot_index, self._snapshot_term = snapshot.meta.index, snapshot.meta.term
            if drop:
                self._last_index = 0
        if entries:
            self._last_index = entries[-1].index
        if hard_state is not None:
            self._hard_state = hard_state

    def compact(self, snapshot: Snapshot, *, keep_from: int) -> None:
        """See RaftStorage.compact. The image's chunks are written first, a few MiB per
        transaction, so that saves go on meanwhile (an image can be hundreds of MiB:
        written at once it held every save for seconds); then the snapshot row, which
        makes them the snapshot, and the deletion of the log below ``keep_from`` are one
        transaction. The previous image's chunks are deleted after, in batches."""
        with self._lock:
            self._check_writable()
            gen = self._new_gen()
            self._staging = gen
        try:
            crc, count = self._stage_chunks(gen, snapshot)
            with self._lock:
                self._check_writable()
                with self._transaction() as cur:
                    plan_compact(self, snapshot, keep_from=keep_from)
                    staged, _ = cur.execute(_COUNT_SNAPSHOT_CHUNKS_SQL, (gen,)).fetchone()
                    if staged != count:  # never: nothing else deletes a staging generation
                        raise RaftStorageError(f"snapshot chunks of generation {gen} went missing")
                    meta = snapshot.meta
                    conf = _encode_conf(meta.conf)
                    cur.execute(_PUT_SNAPSHOT_SQL, (meta.index, meta.term, conf, b"", crc, gen))
                    cur.execute(_DELETE_BELOW_SQL, (keep_from,))
                self._gen = gen
                self._snapshot_index, self._snapshot_term = meta.index, meta.term
                if keep_from > self._last_index:
                    self._last_index = 0
                self.compactions += 1
        finally:
            with self._lock:
                self._staging = -1
        self._delete_stale_chunks()

    def _new_gen(self) -> int:
        """A generation no chunk or snapshot row has used (the caller holds the lock)."""
        if self._next_gen < 0:
            cur = self._dbapi.cursor()
            try:
                (top,) = cur.execute(_MAX_GEN_SQL).fetchone()
            finally:
                cur.close()
            self._next_gen = (top or 0) + 1
        gen = self._next_gen
        self._next_gen += 1
        return gen

    def _stage_chunks(self, gen: int, snapshot: Snapshot) -> tuple[int, int]:
        """Write ``snapshot``'s image as chunks of generation ``gen``, STAGE_BATCH_CHUNKS
        per transaction (the lock is let go between them); (CRC of the snapshot, chunks)."""
        meta = snapshot.meta
        crc = zlib.crc32(_encode_conf(meta.conf), zlib.crc32(_PAIR.pack(meta.index, meta.term)))
        chunks = enumerate(snapshot_chunks(snapshot.data, CHUNK_BYTES))
        count = 0
        while True:
            batch = list(itertools.islice(chunks, STAGE_BATCH_CHUNKS))
            if not batch:
                return crc, count
            with self._lock:
                self._check_writable()
                with self._transaction() as cur:
                    for seq, chunk in batch:
                        cur.execute(_INSERT_SNAPSHOT_CHUNK_SQL, (gen, seq, chunk))
            for _, chunk in batch:
                crc = zlib.crc32(chunk, crc)
            count += len(batch)

    def _delete_stale_chunks(self) -> None:
        """Delete the chunks of images that are neither the snapshot nor being staged, a
        few per transaction (each is a MiB of pages to free)."""
        while True:
            with self._lock:
                if self._closed:
                    return
                with self._transaction() as cur:
                    stale = cur.execute(
                        _STALE_CHUNKS_SQL, (self._gen, self._staging, STAGE_BATCH_CHUNKS)
                    ).fetchall()
                    cur.executemany(_DELETE_CHUNK_SQL, stale)
            if len(stale) < STAGE_BATCH_CHUNKS:
                return

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """See RaftStorage.entries (one SELECT, each row's CRC checked)."""
        if hi < lo:
            return []
        with self._lock:
            self._check_open()
            snapshot_index = self._snapshot_index
            cur = self._dbapi.cursor()
            try:
                rows = cur.execute(_READ_RANGE_SQL, (lo, hi)).fetchall()
            finally:
                cur.close()
        out: list[Entry] = []
        for expected, (idx, term, kind, data, crc) in enumerate(rows, start=lo):
            if idx != expected:
                break
            if not _row_intact(idx, term, kind, data, crc):
                raise StorageCorrupt(f"{self._path}: log entry {idx} is damaged (CRC mismatch)")
            out.append(Entry(term, idx, _KINDS[kind], data))
        if len(out) != hi - lo + 1:
            if (not rows or rows[0][0] != lo) and lo <= snapshot_index:
                raise EntriesCompacted(
                    f"{self._path}: entries from {lo} are compacted (snapshot at {snapshot_index})"
                )
            raise StorageCorrupt(
                f"{self._path}: log entries {lo}..{hi} are not all stored"
                f" ({len(out)} of them from {lo})"
            )
        return out

    def load(self) -> DurableState:
        """Everything durable, verified (see the module docstring): a damaged tail of the
        log is cut first. Raises StorageCorrupt for damage that is not a tail."""
        with self._lock:
            self._check_open()
            with self._transaction() as cur:
                state, cut_from, cut = self._verify(cur)
                if cut:
                    cur.execute(_DELETE_FROM_SQL, (cut_from,))
            self._hard_state = state.hard_state
            meta = state.snapshot.meta if state.snapshot is not None else None
            self._snapshot_index = meta.index if meta is not None else 0
            self._snapshot_term = meta.term if meta is not None else 0
            self._last_index = state.entries[-1].index if state.entries else 0
            self._loaded = True
            if cut:
                self.recovered_cut += cut
        self._delete_stale_chunks()  # of an image a crash cut short while it was written
        return state

    # -- internals -------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RaftStorageError(f"the raft storage {self._path} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if not self._loaded:
            raise RaftStorageError(
                f"load() the raft storage {self._path} before writing to it: it holds state"
                " that has not been verified"
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """BEGIN IMMEDIATE ... COMMIT on the held connection, or ROLLBACK on any error.
        The caller holds ``self._lock``."""
        cur = self._dbapi.cursor()
        try:
            self.pace()
            cur.execute("BEGIN IMMEDIATE")
            self._cursor = cur
            try:
                yield cur
                self.pace()
                cur.execute("COMMIT")
                self.pace()  # before the Python after it (the fsync released the GIL)
            except BaseException:
                self._rollback(cur)
                raise
        finally:
            self._cursor = None
            cur.close()

    def _rollback(self, cur: sqlite3.Cursor) -> None:
        if self._dbapi.in_transaction:  # a failed COMMIT may have ended it already
            cur.execute("ROLLBACK")

    def _put_snapshot(self, cur: sqlite3.Cursor, snapshot: Snapshot) -> int:
        """The snapshot's row and its image's chunks, of a new generation (streamed: a
        SnapshotFile is read a chunk at a time), in the caller's transaction (the lock
        held); returns the generation. The previous chunks stay until
        ``_delete_stale_chunks``."""
        meta = snapshot.meta
        conf = _encode_conf(meta.conf)
        crc = zlib.crc32(conf, zlib.crc32(_PAIR.pack(meta.index, meta.term)))
        gen = self._new_gen()
        for seq, chunk in enumerate(snapshot_chunks(snapshot.data, CHUNK_BYTES)):
            crc = zlib.crc32(chunk, crc)
            cur.execute(_INSERT_SNAPSHOT_CHUNK_SQL, (gen, seq, chunk))
        cur.execute(_PUT_SNAPSHOT_SQL, (meta.index, meta.term, conf, b"", crc, gen))
        return gen

    def _verify(self, cur: sqlite3.Cursor) -> tuple[DurableState, int, int]:
        """Read and check everything; returns the state and the damaged tail to cut
        (first index, count of rows; count 0: nothing to cut)."""
        hard_state = self._read_hard_state(cur)
        snapshot = self._read_snapshot(cur)
        snap_index = snapshot.meta.index if snapshot is not None else 0
        rows = cur.execute(_READ_ENTRIES_SQL).fetchall()
        entries: list[Entry] = []
        append = entries.append
        crc32, pack, kinds = zlib.crc32, _ENTRY_HEAD.pack, _KINDS
        bad = len(rows)  # position of the first damaged row
        for pos, (idx, term, kind, data, crc) in enumerate(rows):
            try:
                intact = crc32(data, crc32(pack(idx, term, kind))) == crc and kind in kinds
            except (TypeError, struct.error):
                intact = False
            if not intact:
                bad = pos
                break
            if entries and idx != entries[-1].index + 1:
                raise StorageCorrupt(
                    f"{self._path}: log entries {entries[-1].index + 1}..{idx - 1} are missing"
                    f" (between intact entries {entries[-1].index} and {idx})"
                )
            append(Entry(term, idx, kinds[kind], data))
        for idx, term, kind, data, crc in rows[bad + 1 :]:
            if _row_intact(idx, term, kind, data, crc):
                raise StorageCorrupt(
                    f"{self._path}: log entry {rows[bad][0]} is damaged (CRC mismatch) but"
                    f" entry {idx} after it is intact: the damage is not a torn tail"
                )
        cut_from = rows[bad][0] if bad < len(rows) else 0
        if entries:
            first = entries[0].index
            if snapshot is None and first != 1:
                raise StorageCorrupt(
                    f"{self._path}: the log starts at entry {first} and there is no snapshot:"
                    f" entries 1..{first - 1} are missing"
                )
            if first > snap_index + 1:
                raise StorageCorrupt(
                    f"{self._path}: the log starts at entry {first} after the snapshot at"
                    f" {snap_index}: entries {snap_index + 1}..{first - 1} are missing"
                )
            if entries[-1].index < snap_index:  # a cut reached below the snapshot
                cut_from, entries = first, []  # the rest is covered: drop it too
        cut = len(rows) - len(entries)
        last = max(entries[-1].index if entries else 0, snap_index)
        if hard_state.commit > last:
            why = f" after cutting {cut} damaged entries from {cut_from}" if cut else ""
            raise StorageCorrupt(
                f"{self._path}: the hard state's commit index {hard_state.commit} is beyond"
                f" the log's last index {last}{why}: committed entries are missing"
            )
        if cut:
            logger.warning(
                "raft storage %s: cut %d damaged or disconnected entries at the tail of the"
                " log, from index %d (a torn write); the log now ends at %d",
                self._path,
                cut,
                cut_from,
                last,
            )
        state = DurableState(hard_state=hard_state, snapshot=snapshot, entries=tuple(entries))
        return state, cut_from, cut

    def _read_hard_state(self, cur: sqlite3.Cursor) -> HardState:
        row = cur.execute(_READ_HARD_STATE_SQL).fetchone()
        if row is None:
            return HardState()
        term, vote, commit, crc = row
        try:
            intact = hard_state_crc(term, vote, commit) == crc
        except (TypeError, AttributeError, struct.error):
            intact = False
        if not intact:
            raise StorageCorrupt(
                f"{self._path}: the hard state (term, vote, commit) is damaged (CRC mismatch)"
            )
        return HardState(term=term, vote=None if vote is None else NodeId(vote), commit=commit)

    def _read_snapshot(self, cur: sqlite3.Cursor) -> Snapshot | None:
        """The stored snapshot, its CRC checked. An image stored in chunks is copied a chunk
        at a time into a SnapshotFile (an unlinked file beside the database), never read
        whole into memory."""
        row = cur.execute(_READ_SNAPSHOT_SQL).fetchone()
        if row is None:
            return None
        idx, term, conf, data, crc, gen = row
        self._gen = gen
        count, last = cur.execute(_COUNT_SNAPSHOT_CHUNKS_SQL, (gen,)).fetchone()
        damaged = f"{self._path}: the snapshot (row for index {idx}, term {term}) is damaged"
        if count != last + 1:
            raise StorageCorrupt(f"{damaged} (chunks of its image are missing)")
        image: bytes | SnapshotFile = data
        try:
            actual = zlib.crc32(data, zlib.crc32(conf, zlib.crc32(_PAIR.pack(idx, term))))
            if count:
                crcs = [actual]

                def chunks() -> Iterator[bytes]:
                    for seq in range(count):
                        (chunk,) = cur.execute(_READ_SNAPSHOT_CHUNK_SQL, (gen, seq)).fetchone()
                        crcs[0] = zlib.crc32(chunk, crcs[0])
                        yield chunk

                image = SnapshotFile.write(
                    itertools.chain((data,), chunks()), dir=self._path.parent
                )
                actual = crcs[0]
            intact = actual == crc
            meta = SnapshotMeta(index=idx, term=term, conf=_decode_conf(conf)) if intact else None
        except (TypeError, ValueError, struct.error, msgpack.UnpackException):
            intact, meta = False, None
        except OSError as exc:
            raise RaftStorageError(
                f"{self._path}: cannot copy the snapshot's image out of the store: {exc}"
            ) from exc
        if not intact or meta is None:
            if isinstance(image, SnapshotFile):
                image.close()
            raise StorageCorrupt(f"{damaged} (CRC mismatch)")
        return Snapshot(meta=meta, data=image)
