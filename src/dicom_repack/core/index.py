"""The index: one SQLite row per filed instance, so "what arrived?" is one query.

Every door writes it through the job (:class:`~.repack.Repacker` calls
:meth:`Index.add` right after an instance's records, before its source is
removed), so a row means "filed and recorded"; the same SOPInstanceUID filed
again replaces its row. ``dicom-repack status`` and the receiver's live page
read it; ``dicom-repack index --rebuild`` remakes it from the data tree.

Why SQLite, and these settings:

- WAL journal: readers (``status``, the live page) never block writers, and a
  commit appends to one file instead of rewriting pages in place.
- ``synchronous=NORMAL`` unless ``--fsync``: a commit costs no fsync (a power
  cut may lose the last rows, never corrupt the file; ``index --rebuild``
  restores them from the tree). With ``--fsync`` every commit is durable.
- ``busy_timeout``: concurrent writers (hundreds of per-instance processes, a
  batch pool, a receiver's threads) queue for the write lock instead of
  failing; on top of it, an add is retried until its deadline, so a row is
  never dropped silently: it is written or the instance fails (retryable).
- The per-instance door starts once per instance, and loading SQLite alone
  (``_sqlite3`` and libsqlite3, ~1.5 ms of a ~6 ms start) would be a quarter of
  it. So that door does not open the database: it appends its row as one line
  to ``<index>.pending`` (``O_APPEND``, under a ``lockf`` lock, ~20 us), and the
  pending rows are **folded** into SQLite by the next reader (``status``, the
  live page, ``index --rebuild``), or by the door whose line takes the file
  past :data:`FOLD_AT` (so it never grows without bound). A fold renames the
  file aside, waits on its lock for a writer that opened it before the rename,
  inserts its rows in one transaction, then deletes it; a writer that finds the
  name moved opens the new file instead. A row replaces an existing one only if
  it is not older (``filed_at``), so folding late, twice (a fold killed between
  its commit and the delete) or out of order never brings back a stale row.
  A pooled batch's workers append pending rows too, and the batch folds them
  once at its end: two workers inserting a row per instance wait on SQLite's
  write lock, whose busy handler sleeps. The receiver and a batch filed in one
  process write SQLite directly (one ``INSERT OR REPLACE`` in autocommit mode).

An index must live on a local filesystem (SQLite's locking does not work over
NFS); ``--index PATH`` moves it, ``--no-index`` turns it off.

Nobody let in: SQLite opens its files itself, by path, following links; so
before every connection the database and its ``-wal``, ``-shm`` and
``-journal`` are checked to be absent or regular files (:func:`check_files`),
and the pending files are opened with :func:`.tree.open_file`. A link or FIFO
planted at any of those names raises :class:`IndexRefused` naming it (a
forged fold file is never read, imported or removed). The folder holding the
index is the operator's (``--logdir`` or ``--index``), like the roots.
"""

from __future__ import annotations

import os
import time

from .index_files import column_decls, fold_files
from .index_rows import (
    ADDED_COLUMNS,
    COLUMNS,
    DEFAULT_NAME,
    INDEX_KEYWORDS,
    PENDING_SUFFIX,
    IndexFailure,
    IndexRefused,
    default_path,
    is_url,
    local_path,
    pending_path,
    row_for,
    where_of,
)
from .pending_tail import PendingTail
from .series_claims import CLAIM, SERIES_HOSTS, SERIES_NOW, SeriesNow
from .tree import kind_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Mapping
    from types import ModuleType

    from .index_pg import PgIndex

#: DEFAULT_NAME, INDEX_KEYWORDS, IndexFailure, default_path: from .index_rows, named here too
__all__ = [
    "CLAIM",
    "DEFAULT_NAME",
    "INDEX_KEYWORDS",
    "INSERT",
    "SCHEMA_VERSION",
    "SERIES_HOSTS",
    "SERIES_NOW",
    "UPSERT",
    "Index",
    "IndexFailure",
    "IndexRefused",
    "SeriesNow",
    "check_files",
    "check_index",
    "connect_reader",
    "default_path",
    "driver",
    "fold_files",
    "fold_pending",
    "open_index",
    "setup",
]

#: the files SQLite may open beside the database, by its name plus these
_COMPANIONS = ("", "-wal", "-shm", "-journal")

#: 1: instances, associations, failures; 2: ``instances.host`` and ``series_claims``
SCHEMA_VERSION = 2

#: the portable column kinds of :data:`.index_files.COLUMN_KINDS`, as SQLite spells them
SQLITE_TYPES = {"text": "TEXT", "integer": "INTEGER", "real": "REAL"}

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS instances (
    {column_decls(SQLITE_TYPES)}
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS instances_series
    ON instances (study_instance_uid, series_instance_uid);
CREATE INDEX IF NOT EXISTS instances_filed_at ON instances (filed_at);
CREATE TABLE IF NOT EXISTS associations (
    peer       TEXT NOT NULL,
    started    REAL NOT NULL,
    calling_ae TEXT,
    called_ae  TEXT,
    ended      REAL,
    instances  INTEGER NOT NULL DEFAULT 0,
    failed     INTEGER NOT NULL DEFAULT 0,
    bytes      INTEGER NOT NULL DEFAULT 0,
    result     TEXT,
    PRIMARY KEY (peer, started)
);
CREATE TABLE IF NOT EXISTS failures (
    at         REAL NOT NULL,
    source     TEXT,
    kind       TEXT,
    reason     TEXT,
    calling_ae TEXT,
    peer       TEXT
);
CREATE INDEX IF NOT EXISTS failures_at ON failures (at);
CREATE TABLE IF NOT EXISTS series_claims (
    series_instance_uid TEXT PRIMARY KEY,
    claimed_at          REAL NOT NULL,
    host                TEXT,
    instances           INTEGER NOT NULL,
    hosts               TEXT,
    state               TEXT
)
"""

INSERT = (
    f"INSERT OR REPLACE INTO instances ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(COLUMNS))})"
)

#: A fold of pending rows keeps a row only if it is not older than the one there.
UPSERT = (
    f"INSERT INTO instances ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (sop_instance_uid) DO UPDATE SET "
    + ", ".join(f"{col} = excluded.{col}" for col in COLUMNS[1:])
    + " WHERE excluded.filed_at >= instances.filed_at"
)

#: where a SOP's folded row says it was filed (the order :func:`where_of` reads)
_WHERE = (
    "SELECT series_instance_uid, study_instance_uid, patient_id, path "
    "FROM instances WHERE sop_instance_uid = ?"
)

#: how long an add may wait for the write lock, in all, before the instance fails
DEFAULT_TIMEOUT = 60.0

_db: ModuleType | None = None


def _no_cache(maxsize: int) -> Callable[[Callable[[str], object]], Callable[[str], object]]:
    """``functools.lru_cache`` as ``_sqlite3`` uses it, without the cache (see ``driver``)."""
    return lambda make: make


def driver(*, statement_cache: bool = False) -> ModuleType:
    """The SQLite driver: the C extension alone when it is there (see the module doc).

    ``statement_cache``: a process that runs many statements (a door filing in
    process: batch, listen, watch) wants ``_sqlite3``'s statement cache, so
    ``functools`` is imported first; without it every statement is compiled
    again (~90,000 instructions for the row's INSERT, more than the rest of the
    row). Only the first call in a process decides.

    ``_sqlite3`` fetches ``functools.lru_cache`` when it is first imported (its
    statement cache), and ``functools`` brings ``collections``: ~2 ms of the
    per-instance door's ~10 ms, for a process that runs one statement. Where
    ``functools`` is not loaded yet, a stand-in whose ``lru_cache`` caches nothing
    serves that one import and is then removed (each statement is compiled when
    run, which is what a one-statement process does anyway); where it is loaded
    (batch, listen), the real one is used.
    """
    global _db
    if _db is None:
        import sys

        if statement_cache:
            import functools  # noqa: F401
        stand_in = None
        if "functools" not in sys.modules:
            stand_in = type(sys)("functools")  # a module object, without importing types
            stand_in.lru_cache = _no_cache  # type: ignore[attr-defined]
            sys.modules["functools"] = stand_in
        try:
            import _sqlite3 as db
        except ImportError:  # pragma: no cover - every CPython build with sqlite3 has it
            if stand_in is not None:
                del sys.modules["functools"]
                stand_in = None
            import sqlite3 as db  # type: ignore[no-redef]
        finally:
            if stand_in is not None and sys.modules.get("functools") is stand_in:
                del sys.modules["functools"]
        _db = db
    return _db


class Index:
    """One process's (or thread's) connection to the index at ``path``.

    Opens nothing until the first statement, so it may be created before a
    fork as long as it is used only after. ``statement_cache=False`` for a
    process that runs a statement or two and ends (the per-instance door's
    fold): see :func:`driver`. Not shared between threads: each
    association thread's Repacker holds its own. A one-instance process writes
    :class:`~.index_rows.PendingIndex` instead; every reader folds its pending
    rows in first (:meth:`fold`).
    """

    def __init__(
        self,
        path: str,
        *,
        durable: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        statement_cache: bool = True,
    ) -> None:
        self.path = os.path.abspath(path)
        self.durable = durable
        self.timeout = timeout
        self.statement_cache = statement_cache
        self._conn: sqlite3.Connection | None = None
        self._tail: PendingTail | None = None

    # -- writing ---------------------------------------------------------------

    def add(
        self,
        values: Mapping[str, str],
        *,
        path: str,
        size: int,
        source: str | None,
        when: float | None = None,
        host: str | None = None,
    ) -> None:
        """Insert (or replace) the row of one filed instance; raises IndexFailure on failure."""
        row = row_for(values, path, size, source, time.time() if when is None else when, host)
        self.run(lambda conn: conn.execute(INSERT, row))

    def where(self, sop: str) -> dict[str, str] | None:
        """Where ``sop`` was last filed (:func:`.index_rows.where_of`): its pending row,
        not folded yet, else its row here; None when not known."""
        if self._tail is None:
            self._tail = PendingTail(pending_path(self.path))
        row = self._tail.last(sop)
        if row is not None:
            return where_of(row)
        return self.folded_where(sop)

    def folded_where(self, sop: str) -> dict[str, str] | None:
        """Where the folded row of ``sop`` says it was filed; None when there is none (or
        no index yet, or it cannot be read: the job's own add will say so)."""
        if self._conn is None and not os.path.exists(self.path):
            return None
        try:
            # fetchall, not fetchone: a statement left unfinished keeps its read snapshot,
            # and the WAL the other workers' folds append to could not be checkpointed
            found = next(iter(self._connection().execute(_WHERE, (sop,)).fetchall()), None)
        except Exception:  # sqlite3.Error (no table yet, damaged), OSError, IndexFailure
            return None
        return where_of((sop, *found)) if found else None

    def fold(self) -> int:
        """Move the pending rows into SQLite; return how many were read.

        Safe while pending adds run (they wait, or move to a new file) and while
        other folds run (each file is folded by one of them). Raises IndexFailure;
        IndexRefused (after folding the others) naming a pending file that is a
        link, FIFO or anything but a regular file: it is left as it is, unread.
        """
        return fold_files(
            pending_path(self.path),
            lambda rows: self.run(
                lambda conn: _in_transaction(conn, lambda: conn.executemany(UPSERT, rows))
            ),
        )

    def migrate(self) -> None:
        """Bring an existing index to :data:`SCHEMA_VERSION` now (a reader's first step,
        before it selects a column an older index lacks); IndexFailure if it cannot."""

        def check(conn: sqlite3.Connection) -> None:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version < SCHEMA_VERSION:
                setup(conn)

        self.run(check)

    def series_now(self, study_uid: str, series_uid: str) -> SeriesNow:
        """One series as the whole index sees it (every receiver that files into it):
        its instances, last arrival and announced size, and its instances per host.
        Folds the pending rows first (watch's workers and the per-instance door write
        there). Raises IndexFailure."""
        try:
            self.fold()
        except IndexRefused:
            raise
        except IndexFailure:
            pass  # the pending rows stay pending; the folded ones answer
        found: list[SeriesNow] = []

        def read(conn: sqlite3.Connection) -> None:
            count, last, expected = conn.execute(SERIES_NOW, (study_uid, series_uid)).fetchone()
            hosts = conn.execute(SERIES_HOSTS, (study_uid, series_uid)).fetchall()
            found.append(SeriesNow(count, last, expected, {h or "": n for h, n in hosts}))

        self.run(read)
        return found[0]

    def claim_series(
        self, series_uid: str, *, host: str, instances: int, hosts: Mapping[str, int], state: str
    ) -> bool:
        """Claim this round of a series (see :data:`CLAIM`): True for the one claimant
        that won, False for every other (the series is someone else's to notify, or was
        notified already with as many instances). Raises IndexFailure."""
        import json

        won: list[int] = []
        params = (series_uid, time.time(), host, instances, json.dumps(dict(hosts)), state)
        self.run(lambda conn: won.append(conn.execute(CLAIM, params).rowcount))
        return bool(won and won[-1] == 1)

    def add_many(self, rows: list[tuple[object, ...]]) -> None:
        """Insert many rows in one transaction (``index --rebuild``)."""
        if rows:
            self.run(lambda conn: _in_transaction(conn, lambda: conn.executemany(INSERT, rows)))

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> None:
        """One statement in its own transaction (the receiver's association and failure rows)."""
        self.run(lambda conn: conn.execute(sql, params))

    def run(self, step: Callable[[sqlite3.Connection], object]) -> None:
        """Run ``step`` on the connection, creating the tables on first use and retrying
        while the database is busy, until the deadline; raises IndexFailure naming the file."""
        db = driver(statement_cache=self.statement_cache)
        deadline = time.monotonic() + self.timeout
        delay = 0.002
        while True:
            try:
                conn = self._connection()
                try:
                    step(conn)
                except db.OperationalError as exc:
                    if not _outdated(exc):
                        raise
                    setup(conn)
                    step(conn)
                return
            except db.OperationalError as exc:
                if not _busy(exc) or time.monotonic() > deadline:
                    self.close()
                    raise IndexFailure(
                        f"cannot write the index {self.path}: {exc}", errno=_errno(exc)
                    ) from None
            except db.DatabaseError as exc:
                self.close()
                raise IndexFailure(
                    f"cannot write the index {self.path}: {exc} "
                    "(dicom-repack index --rebuild remakes it)",
                    errno=_errno(exc),
                ) from None
            except OSError as exc:
                self.close()
                raise IndexFailure(
                    f"cannot write the index {self.path}: {exc.strerror or exc}", errno=exc.errno
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            directory = os.path.dirname(self.path)
            if not os.path.isdir(directory):
                os.makedirs(directory, exist_ok=True)
            check_files(self.path)
            conn: sqlite3.Connection = driver(statement_cache=self.statement_cache).connect(
                self.path, timeout=min(self.timeout, 30.0), isolation_level=None
            )
            try:
                conn.execute("PRAGMA synchronous=" + ("FULL" if self.durable else "NORMAL"))
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._tail is not None:
            self._tail.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass


def open_index(
    index: str,
    logdir: str | None = None,
    *,
    durable: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    statement_cache: bool = True,
) -> Index | PgIndex:
    """The index at ``index`` for writing: an SQLite file's :class:`Index`, or for a
    ``postgresql://`` URL a :class:`.index_pg.PgIndex` (psycopg imported only then)
    whose local files live in ``logdir`` (:func:`.index_rows.local_path`).
    ``statement_cache``: SQLite's, see :func:`driver`."""
    if is_url(index):
        from .index_pg import PgIndex

        return PgIndex(index, local_path(index, logdir), durable=durable, timeout=timeout)
    return Index(index, durable=durable, timeout=timeout, statement_cache=statement_cache)


def check_index(index: str | None, logdir: str | None) -> str | None:
    """A resident door's check of its index at start: for a PostgreSQL URL,
    :func:`.index_pg.check` (IndexFailure: refused; a string: a warning, the door files
    on); for an SQLite file, IndexRefused when a link or FIFO stands at its name, a
    companion's or its pending file's (else every instance would fail on it, a line
    each), else None: the rest is checked by its first write, as ever."""
    if not index:
        return None
    if not is_url(index):
        check_files(index, pending=True)
        return None
    from .index_pg import check

    return check(index, logdir)


def fold_pending(path: str, *, durable: bool = False, logdir: str | None = None) -> str | None:
    """Fold the pending rows of the index at ``path`` now, as a door that wrote them in
    ``pending`` mode does at its end (batch's workers, Dask's, watch's). None, or the one-line
    reason they stay pending (safe: every reader folds first). ``path`` may be a PostgreSQL
    URL (its pending rows are in ``logdir``)."""
    try:
        index = open_index(path, logdir, durable=durable)
    except IndexFailure as exc:
        return f"{exc}; the rows stay pending, folded at the next read"
    try:
        index.fold()
    except IndexFailure as exc:
        return f"{exc}; the rows stay pending, folded at the next read"
    finally:
        index.close()
    return None


def check_files(path: str, *, pending: bool = False) -> None:
    """Raise IndexRefused unless the database ``path`` and each file SQLite opens beside
    it (``-wal``, ``-shm``, ``-journal``; with ``pending``, its pending rows too: a
    door's start) is absent or a regular file (not a link).

    SQLite opens them itself, by path, following links; checked before every
    connection (one ``lstat`` each).
    """
    for suffix in (*_COMPANIONS, PENDING_SUFFIX) if pending else _COMPANIONS:
        name = path + suffix
        try:
            mode = os.stat(name, follow_symlinks=False).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise IndexFailure(f"cannot open the index {name}: {exc.strerror or exc}") from None
        if (mode & 0o170000) != 0o100000:
            raise IndexRefused(
                f"{name} is {kind_of(mode)}, not a regular file; the index is not opened"
            )


def setup(conn: sqlite3.Connection) -> None:
    """Create the file's tables (the first writer does; concurrent first writers are
    fine), and bring an index made by an earlier version to this one: each of
    :data:`~.index_rows.ADDED_COLUMNS` it lacks is added (``ALTER TABLE ... ADD
    COLUMN``: its old rows hold NULL there), then ``user_version`` says
    :data:`SCHEMA_VERSION`. Run at first use: when a statement finds a table or
    column missing (:meth:`Index.run`), or by a reader (:meth:`Index.migrate`)."""
    conn.execute("PRAGMA journal_mode=WAL")

    def create() -> None:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        have = {row[1] for row in conn.execute("PRAGMA table_info(instances)")}
        for column, kind in ADDED_COLUMNS:
            if column not in have:
                conn.execute(f"ALTER TABLE instances ADD COLUMN {column} {kind}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    _in_transaction(conn, create)


def _outdated(exc: Exception) -> bool:
    """Whether a statement failed because the file's schema is older than this code's
    (a table or column missing): :func:`setup` then brings it up to date."""
    text = str(exc)
    return "no such table" in text or "no such column" in text or "has no column named" in text


def _in_transaction(conn: sqlite3.Connection, body: Callable[[], object]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        body()
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


#: SQLite's primary result codes that mean "the index's file or disk failed", as errno
#: names (core/destination.py): FULL, IOERR, CORRUPT, NOTADB, READONLY, PERM, CANTOPEN
_SQLITE_ERRNO = {13: "ENOSPC", 10: "EIO", 11: "EIO", 26: "EIO", 8: "EROFS", 3: "EACCES", 14: "EIO"}


def _errno(exc: Exception) -> int | None:
    """The errno an SQLite error stands for (None: not the file's or the disk's fault)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(code, int):
        return None
    name = _SQLITE_ERRNO.get(code & 0xFF)
    if name is None:
        return None
    import errno

    return int(getattr(errno, name))


def _busy(exc: Exception) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def connect_reader(path: str) -> sqlite3.Connection:
    """A connection for reading (``status``, the live page); IndexFailure if there is no index."""
    import sqlite3

    writer = Index(path, timeout=10.0, statement_cache=False)
    try:  # the per-instance door's pending rows first (see the module doc); best effort:
        writer.fold()  # a reader that may not write reads what is there
        if os.path.lexists(path):
            writer.migrate()  # an older index gains the columns a reader selects
    except IndexRefused:
        raise  # a planted link or FIFO: said, not read around
    except IndexFailure:
        pass
    finally:
        writer.close()
    check_files(path)
    if not os.path.lexists(path):
        raise IndexFailure(f"no index at {path} (nothing filed yet, or --no-index)")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
        conn.row_factory = sqlite3.Row
        conn.execute("SELECT 1 FROM instances LIMIT 1")
    except sqlite3.Error as exc:
        raise IndexFailure(f"cannot read the index {path}: {exc}") from None
    return conn
