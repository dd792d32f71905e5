"""The index on PostgreSQL (``--index postgresql://...``): one index for many hosts.

The same rows as the SQLite index (:mod:`.index`), from the same
:data:`.index_rows.COLUMNS` (the DDL and every insert are generated from it,
so a column added there reaches both backends), and the same interface
(:class:`PgIndex`: add, add_many, where, folded_where, fold, execute, close),
so the job and the doors do not know which one they write. psycopg 3 is
imported only here, and this module only when an index URL is given: the
per-instance door, which appends its row to the pending file, never loads it.

Why the writes go through the pending file, even in resident doors:

- **Group commit.** :meth:`PgIndex.add` appends the row to the local pending
  file (``<logdir>/dicom-repack-index.pending``, the per-instance door's file:
  one ``write``, ~20 us) and wakes this process's :class:`Flusher`, a thread
  that folds the pending rows into PostgreSQL in one transaction per
  :data:`GROUP_ROWS` rows or :data:`GROUP_S` (100 ms), whichever comes first.
  A row is therefore "durable or pending" before the job removes its source,
  and the server sees one commit per group, not per instance.
- **Degraded mode.** When PostgreSQL is away the fold fails, the rows stay in
  the pending file (the fold's protocol deletes a file only after its rows are
  committed) and the flusher tries again every :data:`RETRY_S`; receivers keep
  filing. Nothing is lost: the next fold, here, in a reader (``status``) or in
  ``dicom-repack index --fold``, takes every row.

The schema is versioned: the ``schema_version`` table holds the migrations
applied; :data:`MIGRATIONS` lists them and each connection applies the missing
ones at start, under a transaction-scoped advisory lock (concurrent starts
apply each once). A database whose version is newer than this code knows is
refused in one line. A column added to COLUMNS needs no migration: missing
columns are added (nullable) at start; anything else (a table, an index, a
type) is a new numbered migration.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import threading
import time

from .index_files import COLUMN_KINDS, column_decls, every_host_pending, fold_files
from .index_rows import (
    COLUMNS,
    IndexFailure,
    IndexRefused,
    PendingIndex,
    local_path,
    pending_path,
    shown,
    where_of,
)
from .pending_tail import PendingTail
from .series_claims import CLAIM, SERIES_HOSTS, SERIES_NOW, SeriesNow

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    import psycopg


__all__ = [
    "GROUP_ROWS",
    "GROUP_S",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Flusher",
    "IndexUnusable",
    "PgIndex",
    "check",
    "connect",
    "health",
    "pg_sql",
]

#: the portable column kinds of :data:`.index_files.COLUMN_KINDS`, as PostgreSQL spells
#: them (``filed_at`` needs double precision: a ``real`` keeps ~7 digits of an epoch)
PG_TYPES = {"text": "TEXT", "integer": "BIGINT", "real": "DOUBLE PRECISION"}

#: one transaction per this many rows, or per GROUP_S, whichever first
GROUP_ROWS = 500
GROUP_S = 0.1
#: how often a failing fold (PostgreSQL away) is tried again
RETRY_S = 1.0
#: how long a connection attempt may take (a door must never hang on the server)
CONNECT_TIMEOUT_S = 3

#: the key of the advisory lock the migrations run under ("dicom-re" in ASCII)
_LOCK_KEY = 0x6469636F6D2D7265


def _migration_1() -> tuple[str, ...]:
    return (
        f"CREATE TABLE IF NOT EXISTS instances (\n    {column_decls(PG_TYPES)}\n)",
        "CREATE INDEX IF NOT EXISTS instances_series "
        "ON instances (study_instance_uid, series_instance_uid)",
        "CREATE INDEX IF NOT EXISTS instances_filed_at ON instances (filed_at)",
        "CREATE TABLE IF NOT EXISTS associations ("
        " peer TEXT NOT NULL, started DOUBLE PRECISION NOT NULL, calling_ae TEXT,"
        " called_ae TEXT, ended DOUBLE PRECISION, instances BIGINT NOT NULL DEFAULT 0,"
        " failed BIGINT NOT NULL DEFAULT 0, bytes BIGINT NOT NULL DEFAULT 0, result TEXT,"
        " PRIMARY KEY (peer, started))",
        "CREATE TABLE IF NOT EXISTS failures ("
        " at DOUBLE PRECISION NOT NULL, source TEXT, kind TEXT, reason TEXT,"
        " calling_ae TEXT, peer TEXT)",
        "CREATE INDEX IF NOT EXISTS failures_at ON failures (at)",
    )


def _migration_2() -> tuple[str, ...]:
    # instances.host needs no statement: a column of COLUMNS the table lacks is added
    # at start (see migrate)
    return (
        "CREATE TABLE IF NOT EXISTS series_claims ("
        " series_instance_uid TEXT PRIMARY KEY, claimed_at DOUBLE PRECISION NOT NULL,"
        " host TEXT, instances BIGINT NOT NULL, hosts TEXT, state TEXT)",
    )


#: (version, what it does, its statements): applied in order, each once, never edited
#: once released (a change is a new entry)
MIGRATIONS: tuple[tuple[int, str, Callable[[], tuple[str, ...]]], ...] = (
    (1, "instances, associations, failures", _migration_1),
    (2, "series_claims (one notification of a series for the cluster)", _migration_2),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def pg_sql(sql: str) -> str:
    """The index's SQL (``?`` placeholders, SQLite's and the DB-API's qmark style) as
    psycopg takes it (``%s``): the one place placeholders are translated."""
    return sql.replace("%", "%%").replace("?", "%s")


_MARKS = ", ".join("?" * len(COLUMNS))
_SET = ", ".join(f"{col} = excluded.{col}" for col in COLUMNS[1:])
#: a row of a filed instance replaces the one there (the job's add, ``index --rebuild``)
REPLACE = pg_sql(
    f"INSERT INTO instances ({', '.join(COLUMNS)}) VALUES ({_MARKS}) "
    f"ON CONFLICT (sop_instance_uid) DO UPDATE SET {_SET}"
)
#: a folded pending row replaces one only if it is not older (as :data:`.index.UPSERT`)
UPSERT = REPLACE + " WHERE excluded.filed_at >= instances.filed_at"
#: the job's lookup, as libpq takes it (``$1``: prepared once a connection, :func:`_lookup`)
_WHERE = (
    b"SELECT series_instance_uid, study_instance_uid, patient_id, path, filed_at "
    b"FROM instances WHERE sop_instance_uid = $1"
)
#: where a row holds its filing time
_FILED_AT = COLUMNS.index("filed_at")
#: a fold's rows in one statement: the rows as one JSON array of arrays, parsed once by
#: the server (``jsonb``: as ``json``, each column's ``->>`` parsed its row again, and a
#: fold inserted half as many rows a second), unpacked and each column cast to its type
_UPSERT_JSON = (
    f"INSERT INTO instances ({', '.join(COLUMNS)}) SELECT "
    + ", ".join(
        f"(r->>{i})::{PG_TYPES[COLUMN_KINDS.get(col, 'text')]}" for i, col in enumerate(COLUMNS)
    )
    + " FROM jsonb_array_elements(%s::jsonb) AS r"
    f" ON CONFLICT (sop_instance_uid) DO UPDATE SET {_SET}"
    " WHERE excluded.filed_at >= instances.filed_at"
)


class IndexUnusable(IndexFailure):
    """The index can never be used as it is (no psycopg, a schema newer than ours, a
    malformed URL): a door refuses it at start, where a server away only degrades it."""

    code = "IndexUnusable"


def _driver() -> object:
    try:
        import psycopg
    except ImportError:
        raise IndexUnusable(
            "a PostgreSQL index needs psycopg: pip install 'dicom-repack[postgres]'"
        ) from None
    return psycopg


class PgIndex:
    """One connection to the PostgreSQL index at ``url``; its pending rows in ``local``
    (:func:`.index_rows.local_path`, None: no log folder, every add fails in one line).

    Thread-safe for adds (the pending file and the flusher are); the connection
    (lookups, ``execute``, folds) is used under a lock. Closed by :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        local: str | None,
        *,
        durable: bool = False,
        timeout: float = 10.0,
        follow_flusher: bool = True,
    ) -> None:
        self.url = url
        self.path = shown(url)
        self.local = local
        self.durable = durable
        self.timeout = timeout
        self._pending = (
            PendingIndex(local, durable=durable, target=url) if local is not None else None
        )
        #: this host's pending rows as :meth:`where` keeps reading them
        self._tail: PendingTail | None = None
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._lock = threading.Lock()
        #: the connection whose lookup statement is prepared (see _lookup)
        self._prepared_on: object | None = None
        #: when and why the last attempt failed (see _fail_fast)
        self._failed: tuple[float, str] | None = None
        #: fail at once while this process's flusher cannot reach the server
        self.follow_flusher = follow_flusher

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
        """The row to the pending file (durable or pending before the source goes), then
        the flusher folds it with others in one transaction."""
        if self._pending is None:
            raise IndexFailure(
                "a PostgreSQL index needs --logdir: its rows wait in a pending file there"
            )
        self._pending.add(values, path=path, size=size, source=source, when=when, host=host)
        assert self.local is not None
        flusher(self.url, self.local).poke()

    def add_many(self, rows: list[tuple[object, ...]]) -> None:
        """Insert many rows in one transaction (``index --rebuild``)."""
        if rows:
            self.run(lambda conn: _in_transaction(conn, lambda: _many(conn, REPLACE, rows)))

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> None:
        """One statement (``?`` placeholders) in its own transaction."""
        self.run(lambda conn: conn.execute(pg_sql(sql), params))

    def fold(self, *, every_host: bool = True) -> int:
        """Move the pending rows into PostgreSQL (one transaction per pending file); return
        how many. The server is reached first: while it is away no file is touched.

        ``every_host``: the pending files of every host sharing the log folder (a
        reader, ``index --fold``, a batch's end); else this host's only (the flusher).
        """
        if self.local is None:
            return 0
        self.run(lambda conn: None)  # connected (and migrated) before anything moves
        mine = pending_path(self.local)
        files = every_host_pending(os.path.dirname(mine)) if every_host else []
        folded = 0
        for pending in sorted({mine, *files}):
            folded += fold_files(
                pending,
                lambda rows: self.run(
                    lambda conn: _in_transaction(conn, lambda: _upsert(conn, rows))
                ),
            )
        return folded

    # -- series, cluster-wide (listen/series_watch.py) -----------------------------

    def migrate(self) -> None:
        """Connected and the schema brought up to date (a connection migrates)."""
        self.run(lambda conn: None)

    def series_now(self, study_uid: str, series_uid: str) -> SeriesNow:
        """As :meth:`.index.Index.series_now`: every host's pending rows folded first (a
        file another host is writing is its to fold; what waits there is not counted)."""
        try:
            self.fold()
        except IndexRefused:
            raise
        except IndexFailure:
            pass  # the pending rows stay pending; the folded ones answer
        found: list[SeriesNow] = []

        def read(conn: psycopg.Connection[tuple[object, ...]]) -> None:
            params = (study_uid, series_uid)
            count, last, expected = conn.execute(pg_sql(SERIES_NOW), params).fetchone() or (
                0,
                None,
                None,
            )
            hosts = conn.execute(pg_sql(SERIES_HOSTS), params).fetchall()
            found.append(
                SeriesNow(
                    int(count),  # type: ignore[call-overload]
                    None if last is None else float(last),  # type: ignore[arg-type]
                    None if expected is None else int(expected),  # type: ignore[call-overload]
                    {str(h or ""): int(n) for h, n in hosts},  # type: ignore[call-overload]
                )
            )

        self.run(read)
        return found[0]

    def claim_series(
        self, series_uid: str, *, host: str, instances: int, hosts: Mapping[str, int], state: str
    ) -> bool:
        """As :meth:`.index.Index.claim_series`: one statement, one winner per round."""
        import json

        won: list[int] = []
        params = (series_uid, time.time(), host, instances, json.dumps(dict(hosts)), state)
        self.run(lambda conn: won.append(conn.execute(pg_sql(CLAIM), params).rowcount))
        return bool(won and won[-1] == 1)

    # -- reading ---------------------------------------------------------------

    def where(self, sop: str) -> dict[str, str] | None:
        """Where ``sop`` was last filed: its pending row, else the newer of its row in a
        file a fold has moved aside (committed perhaps not yet: the flusher folds every
        100 ms) and its folded row."""
        aside = None
        if self._pending is not None:
            if self._tail is None:
                self._tail = PendingTail(pending_path(self._pending.path))
            tail = self._tail
            row = tail.last(sop)
            if row is not None:
                return where_of(row)
            aside = tail.previous(sop)
        folded = self._folded(sop)
        if aside is not None and (folded is None or _newer(aside[_FILED_AT], folded[5])):
            return where_of(aside)
        return where_of(folded) if folded is not None else None

    def folded_where(self, sop: str) -> dict[str, str] | None:
        """Where the folded row of ``sop`` says it was filed; None when none or unreachable."""
        found = self._folded(sop)
        return where_of(found) if found is not None else None

    def _folded(self, sop: str) -> tuple[object, ...] | None:
        """(sop, series, study, patient, path, filed_at) of the folded row, or None (none,
        or the server unreachable)."""
        found: list[tuple[object, ...]] = []
        try:
            self.run(lambda conn: found.extend(self._lookup(conn, sop)))
        except IndexFailure:
            return None
        return (sop, *found[0]) if found else None

    def _lookup(
        self, conn: psycopg.Connection[tuple[object, ...]], sop: str
    ) -> list[tuple[object, ...]]:
        """:func:`_lookup` on ``conn``, its statement prepared once per connection."""
        found = _lookup(conn, sop, prepare=self._prepared_on is not conn)
        self._prepared_on = conn
        return found

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[dict[str, object]]:
        """The rows of one query (``?`` placeholders), as dicts (``status``, the page)."""
        out: list[dict[str, object]] = []

        def step(conn: psycopg.Connection[tuple[object, ...]]) -> None:
            cur = conn.execute(pg_sql(sql), params)
            names = [d.name for d in cur.description or ()]
            out.extend(dict(zip(names, row, strict=True)) for row in cur.fetchall())

        self.run(step)
        return out

    # -- the connection --------------------------------------------------------

    def run(self, step: Callable[[psycopg.Connection[tuple[object, ...]]], object]) -> None:
        """Run ``step`` on the connection (made, and the schema migrated, on first use);
        IndexFailure naming the server when it cannot be reached or the statement fails.
        A broken connection is dropped, so the next call connects again."""
        psycopg = _driver()
        with self._lock:
            if self._conn is None:
                self._fail_fast()
            try:
                if self._conn is None:
                    self._conn = connect(self.url)
                step(self._conn)
                self._failed = None
            except psycopg.Error as exc:  # type: ignore[attr-defined]
                self._drop()
                self._failed = (time.monotonic(), str(exc))
                raise IndexFailure(
                    f"cannot use the index {self.path}: {_first_line(exc)}"
                ) from None
            except IndexFailure as exc:
                self._drop()
                self._failed = (time.monotonic(), str(exc))
                raise

    def _fail_fast(self) -> None:
        """While the server is known to be away, fail at once instead of waiting for a
        connection (up to :data:`CONNECT_TIMEOUT_S` for a server that does not answer):
        a job's lookup or an association's row must not hold a C-STORE up. Known away:
        this connection failed less than :data:`RETRY_S` ago, or (``follow_flusher``)
        this process's flusher fails; the flusher itself and the health probe ask."""
        if self._failed is not None and time.monotonic() - self._failed[0] < RETRY_S:
            raise IndexFailure(f"cannot use the index {self.path}: {self._failed[1]}")
        if self.follow_flusher:
            for key, f in list(_FLUSHERS.items()):
                if key[0] == os.getpid() and key[1] == self.url and f.error is not None:
                    raise IndexFailure(f.error)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._prepared_on = None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def close(self) -> None:
        """Close the connection and the pending file's descriptor; safe to call twice."""
        with self._lock:
            self._drop()
        if self._tail is not None:
            self._tail.close()
            self._tail = None
        if self._pending is not None:
            self._pending.close()


# -- patients' records across hosts ------------------------------------------------------

#: idle connections for advisory locks, by URL (a session's locks are its own: never the
#: connection a flusher or a lookup uses); one is taken per lock held, then given back
_lock_pool: dict[str, list[PgIndex]] = {}
_lock_pool_guard = threading.Lock()


def _close_lock_pool() -> None:
    with _lock_pool_guard:
        for idle in _lock_pool.values():
            for index in idle:
                index.close()
        _lock_pool.clear()


atexit.register(_close_lock_pool)


def patient_lock(url: str, patient_id: str) -> _AdvisoryLock:
    """A context manager holding PostgreSQL's advisory lock for ``patient_id`` (every
    host's receivers that share the index take it around a patient's StudyList update,
    where ``flock`` on the shared log folder is host-local). While the server is away it
    holds nothing (the host-local lock still does): filing goes on, degraded."""
    return _AdvisoryLock(url, patient_key(patient_id))


def patient_key(patient_id: str) -> int:
    """The advisory lock's key for ``patient_id``: 64 bits of its hash, the same on every
    host (signed, as ``pg_advisory_lock(bigint)`` takes it)."""
    digest = hashlib.blake2b(
        patient_id.encode("utf-8", "surrogateescape"), digest_size=8, person=b"dr-patnt"
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


class _AdvisoryLock:
    """``pg_advisory_lock(key)`` on this thread's lock connection, released on exit (and by
    the server if the process dies: a session's locks end with it)."""

    def __init__(self, url: str, key: int) -> None:
        self.url = url
        self.key = key
        self.held: PgIndex | None = None

    def __enter__(self) -> _AdvisoryLock:
        with _lock_pool_guard:
            idle = _lock_pool.setdefault(self.url, [])
            index = idle.pop() if idle else None
        if index is None:
            index = PgIndex(self.url, None, timeout=CONNECT_TIMEOUT_S)
        try:
            index.run(lambda conn: conn.execute("SELECT pg_advisory_lock(%s)", (self.key,)))
        except IndexFailure:
            index.close()
            return self  # away: the host-local lock alone (see patient_lock)
        self.held = index
        return self

    def __exit__(self, *exc_info: object) -> None:
        index, self.held = self.held, None
        if index is None:
            return
        try:
            index.run(lambda conn: conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,)))
        except IndexFailure:
            index.close()  # the connection broke: the session, and its lock, are gone
            return
        with _lock_pool_guard:
            _lock_pool.setdefault(self.url, []).append(index)


def _newer(a: object, b: object) -> bool:
    """Whether filing time ``a`` is not older than ``b`` (numbers; anything else: no)."""
    return isinstance(a, int | float) and (not isinstance(b, int | float) or a >= b)


#: the lookup's prepared statement's name (on each connection that looks up)
_WHERE_NAME = b"dicom_repack_where"


def _lookup(
    conn: psycopg.Connection[tuple[object, ...]], sop: str, *, prepare: bool
) -> list[tuple[object, ...]]:
    """The folded row of ``sop`` (none or one): the job's "where was it filed", once per
    instance in every resident door. Through libpq directly (one prepared statement,
    made first when ``prepare``; one blocking round trip; text results): psycopg's
    cursor machinery cost a batch ~4x the round trip itself in client CPU.
    psycopg.OperationalError when it fails (:meth:`PgIndex.run` drops the connection
    and says why in one line)."""
    psycopg = _driver()
    pq = psycopg.pq  # type: ignore[attr-defined]
    pgconn = conn.pgconn
    if prepare:
        res = pgconn.prepare(_WHERE_NAME, _WHERE)
        if res.status != pq.ExecStatus.COMMAND_OK:
            raise psycopg.OperationalError(_pq_error(res, pgconn))  # type: ignore[attr-defined]
    res = pgconn.exec_prepared(_WHERE_NAME, [sop.encode("utf-8")])
    if res.status != pq.ExecStatus.TUPLES_OK:
        raise psycopg.OperationalError(_pq_error(res, pgconn))  # type: ignore[attr-defined]
    if not res.ntuples:
        return []
    texts = [res.get_value(0, i) for i in range(5)]
    series, study, patient, path = (
        t.decode("utf-8", "replace") if t is not None else None for t in texts[:4]
    )
    at = texts[4]
    return [(series, study, patient, path, float(at) if at is not None else None)]


def _pq_error(res: object, pgconn: object) -> str:
    """libpq's message for a failed statement (the result's, else the connection's)."""
    text = getattr(res, "error_message", b"") or getattr(pgconn, "error_message", b"")
    message = text.decode("utf-8", "replace").strip() if isinstance(text, bytes) else ""
    return message or "the index lookup failed"


def _upsert(
    conn: psycopg.Connection[tuple[object, ...]], rows: Iterable[tuple[object, ...]]
) -> None:
    """Upsert a fold's rows (as :data:`UPSERT` row by row: a row replaces one only if it
    is not older), :data:`_UPSERT_ROWS` at a time in one statement: the rows sent as
    one JSON text, unpacked and cast by the server. psycopg's ``executemany`` adapted
    every value in Python, ~40 us a row in a batch's flusher thread; this is one
    encode (the C encoder) per statement. ``rows`` is read once, as it streams (a
    backlog folded after an outage is never held whole).

    One statement may not touch a row twice, so a SOP twice among a statement's rows
    is sent once: its newest row (of equal times, the later line), which row-by-row
    upserts would have kept; statements go in the file's order. Rows JSON cannot carry
    (a NaN or infinite number, from a forged line) go row by row, where PostgreSQL
    judges them as before."""
    import json

    def send(chunk: list[tuple[object, ...]]) -> None:
        newest: dict[object, tuple[object, ...]] = {}
        try:
            for row in chunk:
                kept = newest.get(row[0])
                if kept is None or _newer(row[_FILED_AT], kept[_FILED_AT]):
                    newest[row[0]] = row
            payload = json.dumps(list(newest.values()), allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError):  # unhashable, NaN: not a row row_for wrote
            _many(conn, UPSERT, chunk)
            return
        conn.execute(_UPSERT_JSON, (payload,))

    chunk: list[tuple[object, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= _UPSERT_ROWS:
            send(chunk)
            chunk = []
    if chunk:
        send(chunk)


#: rows per statement of :func:`_upsert` (a few MB of JSON)
_UPSERT_ROWS = 5_000


def _many(
    conn: psycopg.Connection[tuple[object, ...]], sql: str, rows: Iterable[tuple[object, ...]]
) -> None:
    with conn.cursor() as cur:
        cur.executemany(sql, rows)


def _in_transaction(conn: psycopg.Connection[tuple[object, ...]], body: Callable[[], None]) -> None:
    with conn.transaction():
        body()


def connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """A connection (autocommit) to the index at ``url``, its schema migrated; IndexFailure
    in one line when the server cannot be reached or its schema is newer than ours."""
    psycopg = _driver()
    try:
        conn = psycopg.connect(  # type: ignore[attr-defined]
            url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
        )
    except psycopg.OperationalError as exc:  # type: ignore[attr-defined]  # away: degraded
        raise IndexFailure(f"cannot use the index {shown(url)}: {_first_line(exc)}") from None
    except psycopg.Error as exc:  # type: ignore[attr-defined]  # a malformed URL
        raise IndexUnusable(f"cannot use the index {shown(url)}: {_first_line(exc)}") from None
    try:
        migrate(conn, url)
    except psycopg.Error as exc:  # type: ignore[attr-defined]
        conn.close()
        raise IndexFailure(f"cannot use the index {shown(url)}: {_first_line(exc)}") from None
    except BaseException:
        conn.close()
        raise
    return conn  # type: ignore[no-any-return]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def migrate(conn: psycopg.Connection[tuple[object, ...]], url: str) -> int:
    """Apply the migrations the database lacks (under an advisory lock); return its version.
    IndexUnusable when its version is newer than :data:`SCHEMA_VERSION`.

    An up-to-date database is only read (no lock, no DDL: a reader's role may lack the
    right to create tables); otherwise the lock is taken and everything checked again.
    """
    have, missing = _schema_state(conn, url)
    if have == SCHEMA_VERSION and not missing:
        return have
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL, what TEXT)"
        )
        have, _ = _schema_state(conn, url)
        for version, what, statements in MIGRATIONS:
            if version > have:
                for statement in statements():
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at, what) VALUES (%s, %s, %s)",
                    (version, time.time(), what),
                )
        for col in _schema_state(conn, url)[1]:  # added to COLUMNS since: nullable, as every
            kind = PG_TYPES[COLUMN_KINDS.get(col, "text")]  # new one is
            conn.execute(f"ALTER TABLE instances ADD COLUMN IF NOT EXISTS {col} {kind}")
    return SCHEMA_VERSION


def _schema_state(conn: psycopg.Connection[tuple[object, ...]], url: str) -> tuple[int, list[str]]:
    """(the database's schema version, 0 for none; the COLUMNS ``instances`` lacks);
    IndexUnusable when the version is newer than ours."""
    found = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    have = 0
    if found and found[0]:
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        have = int(row[0]) if row and row[0] is not None else 0  # type: ignore[call-overload]
    if have > SCHEMA_VERSION:
        raise IndexUnusable(
            f"the index {shown(url)} has schema version {have}, newer than this "
            f"dicom-repack knows ({SCHEMA_VERSION}): upgrade dicom-repack"
        )
    present = {
        str(r[0])
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'instances' AND table_schema = current_schema()"
        ).fetchall()
    }
    return have, [col for col in COLUMNS if col not in present]


class Flusher:
    """This process's folder of pending rows into one PostgreSQL index (group commit).

    :meth:`poke` after each add: the first row of a group starts a 100 ms window
    (:data:`GROUP_S`), :data:`GROUP_ROWS` rows end it early; then one fold, one
    transaction. A failing fold (the server away) is tried again every
    :data:`RETRY_S` until it succeeds; :attr:`error` says why meanwhile.
    """

    def __init__(self, url: str, local: str) -> None:
        self.index = PgIndex(url, local, follow_flusher=False)
        self.error: str | None = None
        self.failing_since: float | None = None
        self._rows = 0
        self._stop = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="index-flusher", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        with self._cond:
            self._rows += 1
            if self._rows == 1 or self._rows >= GROUP_ROWS:
                self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._rows and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                deadline = time.monotonic() + GROUP_S
                while self._rows < GROUP_ROWS and not self._stop:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                self._rows = 0
            if not self._fold():
                with self._cond:
                    self._rows = max(self._rows, 1)  # try again, new rows or not
                    self._cond.wait(RETRY_S)

    def _fold(self) -> bool:
        try:
            self.index.fold(every_host=False)
        except IndexFailure as exc:
            if self.error is None:
                self.failing_since = time.time()
            self.error = str(exc)
            return False
        self.error, self.failing_since = None, None
        return True

    def stop(self) -> None:
        """Stop the thread, fold once more (best effort: what fails stays pending), close."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=30)
        self._fold()
        self.index.close()


#: this process's flushers, by (pid, url, local): a forked child makes its own
_FLUSHERS: dict[tuple[int, str, str], Flusher] = {}
_FLUSHERS_LOCK = threading.Lock()


def flusher(url: str, local: str) -> Flusher:
    """This process's flusher for the index ``url`` (started on first use)."""
    key = (os.getpid(), url, local)
    found = _FLUSHERS.get(key)
    if found is None:
        with _FLUSHERS_LOCK:
            found = _FLUSHERS.get(key)
            if found is None:
                if not _FLUSHERS:
                    atexit.register(stop_flushers)
                found = _FLUSHERS[key] = Flusher(url, local)
    return found


def stop_flushers() -> None:
    """Stop this process's flushers (at exit; a resident door's shutdown may call it first)."""
    with _FLUSHERS_LOCK:
        mine = [k for k in _FLUSHERS if k[0] == os.getpid()]
        stopping = [_FLUSHERS.pop(k) for k in mine]
    for f in stopping:
        f.stop()


def health(url: str, local: str | None, probe: PgIndex) -> tuple[str | None, int]:
    """(None or why the index is degraded, rows waiting in the pending file) for
    ``/healthz`` and ``/metrics``: the server is asked (``SELECT 1`` on ``probe``'s
    connection; a schema it refuses counts too), and a flusher of this process that
    fails says why."""
    from .index_files import pending_rows

    waiting = pending_rows(pending_path(local)) if local is not None else 0
    try:
        probe.run(lambda conn: conn.execute("SELECT 1"))
    except IndexFailure as exc:
        return f"{exc}; {waiting} rows wait in the pending file", waiting
    for key, f in list(_FLUSHERS.items()):
        if key[0] == os.getpid() and key[1] == url and f.error is not None:
            return f"{f.error}; {waiting} rows wait in the pending file", waiting
    return None, waiting


def check(url: str, logdir: str | None) -> str | None:
    """At a resident door's start: IndexUnusable (refused in one line) when the index can
    never work (no log folder for its pending rows, no psycopg, a newer schema, a
    malformed URL), IndexRefused for a link or FIFO at a pending file; a warning when the server is away now (the door files on, its rows
    waiting); else None, once the rows an earlier run left pending are folded."""
    if not logdir:
        raise IndexUnusable(
            "a PostgreSQL --index needs --logdir: its rows wait in a pending file there"
        )
    index = PgIndex(url, local_path(url, logdir))
    try:
        index.fold()  # connects (and migrates); rows left pending by an earlier run go now
    except (IndexUnusable, IndexRefused):  # never works: a link or FIFO at a pending file
        raise
    except IndexFailure as exc:
        return f"{exc}; filing on, the rows wait in the pending file until it is back"
    finally:
        index.close()
    return None
