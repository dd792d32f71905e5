"""What arrived, as one query on the index: patients -> studies -> series.

``dicom-repack status`` (doors/status.py: its command line and table) and the
receiver's live page (listen/http.py: ``/api/status``) both ask this module, so
the rule of what a series' state is, and the SQL that reads it, live once.

A series is ``complete`` once its instances reach the count they announce
(NumberOfSeriesRelatedInstances, ImagesInAcquisition, NumberOfSlices), or, when
they announce none, once it has been quiet for the series-idle period or the
association that brought its last instance has ended; a quiet or ended series
short of its announced count is ``incomplete``; anything else is still
``receiving``. A series the receivers have decided (claimed in ``series_claims``
by listen/series_watch.py: quiet everywhere, for every receiver sharing the
index) is in the state they claimed while its count is the claim's. DICOM has
no end-of-series message, so this is the best a receiver can say.

Every series also says how many of its instances each host filed (``hosts``:
``--host-id`` -> instances; "" for rows filed before hosts were recorded), so
several receivers sharing one index read as one.

The SQL is written once, with its placeholders made by :class:`Params`, so that
a second database driver (``%s`` instead of SQLite's ``?``) changes one word,
not the statements. Rows are read by column name from the cursor's
description, whatever the connection's row factory.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict

from .index import IndexFailure, connect_reader
from .index_rows import IndexRefused, is_url, shown

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Iterable, Sequence

__all__ = [
    "DEFAULT_IDLE",
    "DIALECTS",
    "Params",
    "PatientStatus",
    "SeriesState",
    "SeriesStatus",
    "StatusDoc",
    "StatusFilters",
    "StudyStatus",
    "Totals",
    "as_json",
    "open_index",
    "open_pg",
    "query",
    "read_only",
    "state_of",
    "where",
]

#: the series-idle period status assumes when not told (listen's default with a hook)
DEFAULT_IDLE = 10.0

SeriesState = Literal["receiving", "complete", "incomplete"]


@dataclass(frozen=True)
class StatusFilters:
    """Which instances to count; every field ``None`` (the default) means no filter.

    ``accession`` and ``date`` select whole studies (all their series): a study's own
    fields. ``date`` is a StudyDate ``YYYYMMDD`` or a range ``YYYYMMDD-YYYYMMDD`` (either
    end may be empty). ``since`` is a Unix time: instances filed at or after it.
    ``series_idle`` is the quiet period after which a series counts as complete.
    """

    patient_id: str | None = None
    study_uid: str | None = None
    accession: str | None = None
    date: str | None = None
    since: float | None = None
    series_idle: float = DEFAULT_IDLE


class SeriesStatus(TypedDict):
    SeriesInstanceUID: str
    SeriesNumber: str | None
    SeriesDescription: str | None
    Modality: str | None
    instances: int
    bytes: int
    expected: int | None
    first: str | None
    last: str | None
    hosts: dict[str, int]
    folder: str
    state: SeriesState
    complete: bool


class StudyStatus(TypedDict):
    StudyInstanceUID: str
    AccessionNumber: str | None
    StudyDate: str | None
    StudyDescription: str | None
    instances: int
    bytes: int
    series: list[SeriesStatus]
    first: str | None
    last: str | None
    complete: bool


class PatientStatus(TypedDict):
    PatientID: str
    PatientName: str | None
    instances: int
    bytes: int
    studies: list[StudyStatus]


class Totals(TypedDict):
    patients: int
    studies: int
    series: int
    instances: int
    bytes: int


class StatusDoc(TypedDict):
    """What ``status --json`` prints (its keys in this order)."""

    index: str | None
    generated: str | None
    series_idle_s: float
    totals: Totals
    patients: list[PatientStatus]


class Connection(Protocol):
    """What the query needs of a DB-API connection (sqlite3's, or another driver's)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...


class Params:
    """The parameters of one statement, and their placeholders in the driver's style.

    ``mark(value)`` keeps the value and returns the placeholder to write in its place
    (``?`` for SQLite's qmark style, ``%s`` for a format-style driver), so that the
    text of every statement is written once for any driver.
    """

    def __init__(self, placeholder: str = "?") -> None:
        self.placeholder = placeholder
        self.values: list[object] = []

    def mark(self, value: object) -> str:
        self.values.append(value)
        return self.placeholder

    def marks(self, values: Iterable[object]) -> str:
        """``?,?,?``: one placeholder per value, for ``IN (...)``."""
        return ",".join(self.mark(v) for v in values)


SERIES_SQL = """
SELECT patient_id,
       max(patient_name)        AS patient_name,
       study_instance_uid,
       max(accession_number)    AS accession_number,
       max(study_date)          AS study_date,
       max(study_description)   AS study_description,
       series_instance_uid,
       max(series_number)       AS series_number,
       max(series_description)  AS series_description,
       max(modality)            AS modality,
       count(*)                 AS instances,
       {bytes}                  AS bytes,
       min(filed_at)            AS first,
       max(filed_at)            AS last,
       {last_peer}              AS peer,
       {last_path}              AS path,
       max(expected)            AS expected
FROM instances
{where}
GROUP BY patient_id, study_instance_uid, series_instance_uid
ORDER BY patient_id, study_instance_uid, {series_order}, first
"""

#: what SERIES_SQL says differently per database: the placeholder, the peer and path of
#: a series' newest row (SQLite gives bare columns from the row holding max(filed_at);
#: PostgreSQL needs them picked), its number as an integer (PostgreSQL's CAST fails on a
#: non-number; SQLite's gives 0), and nothing but integers for the sums
DIALECTS: dict[str, dict[str, str]] = {
    "sqlite": {
        "placeholder": "?",
        "last_peer": "peer",
        "last_path": "path",
        "series_order": "CAST(series_number AS INTEGER)",
        "bytes": "sum(size)",
    },
    "postgresql": {
        "placeholder": "%s",
        "last_peer": "(array_agg(peer ORDER BY filed_at DESC))[1]",
        "last_path": "(array_agg(path ORDER BY filed_at DESC))[1]",
        "series_order": "CASE WHEN max(series_number) ~ '^ *[0-9]{1,18} *$' "
        "THEN CAST(max(series_number) AS BIGINT) ELSE 0 END",
        "bytes": "CAST(sum(size) AS BIGINT)",
    },
}

ASSOCIATIONS_SQL = "SELECT peer, started, ended FROM associations WHERE peer IN ({marks})"

#: each series' instances per filing host
HOSTS_SQL = """
SELECT study_instance_uid, series_instance_uid, host, count(*) AS n
FROM instances
{where}
GROUP BY study_instance_uid, series_instance_uid, host
ORDER BY host
"""

#: the series the receivers decided (listen/series_watch.py, core/series_claims.py: CLAIM)
CLAIMS_SQL = "SELECT series_instance_uid, instances, state FROM series_claims"


def where(filters: StatusFilters, params: Params) -> str:
    """The ``WHERE`` clause for ``filters`` (or ``""``), its values kept in ``params``."""
    clauses: list[str] = []
    if filters.patient_id:
        clauses.append(f"patient_id = {params.mark(filters.patient_id)}")
    if filters.study_uid:
        clauses.append(f"study_instance_uid = {params.mark(filters.study_uid)}")
    if filters.since is not None:
        clauses.append(f"filed_at >= {params.mark(filters.since)}")
    # a filter on a study's own fields keeps whole studies (all their series)
    study: list[str] = []
    if filters.accession:
        study.append(f"accession_number = {params.mark(filters.accession)}")
    if filters.date:
        low, dash, high = filters.date.partition("-")
        if not dash:
            high = low  # one day
        low_mark = params.mark(low or "00000000")
        study.append(f"study_date BETWEEN {low_mark} AND {params.mark(high or '99999999')}")
    if study:
        clauses.append(
            "study_instance_uid IN (SELECT study_instance_uid FROM instances WHERE "
            + " AND ".join(study)
            + ")"
        )
    return ("WHERE " + " AND ".join(clauses)) if clauses else ""


def _rows(conn: Connection, sql: str, values: Sequence[object]) -> list[dict[str, Any]]:
    cur = conn.execute(sql, values)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _associations(
    conn: Connection, peers: set[str], placeholder: str
) -> dict[str, list[tuple[float, float | None]]]:
    """peer -> [(started, ended)] of the receiver's associations from those peers."""
    out: dict[str, list[tuple[float, float | None]]] = {}
    peers.discard("")
    if not peers:
        return out
    params = Params(placeholder)
    sql = ASSOCIATIONS_SQL.format(marks=params.marks(sorted(peers)))
    for row in _rows(conn, sql, params.values):
        out.setdefault(row["peer"], []).append((row["started"], row["ended"]))
    return out


def _hosts(
    conn: Connection, filters: StatusFilters, placeholder: str
) -> dict[tuple[str, str], dict[str, int]]:
    """(study, series) -> {host: instances filed there}, for every receiver sharing the
    index."""
    params = Params(placeholder)
    sql = HOSTS_SQL.format(where=where(filters, params))
    out: dict[tuple[str, str], dict[str, int]] = {}
    for row in _rows(conn, sql, params.values):
        key = (row["study_instance_uid"], row["series_instance_uid"])
        out.setdefault(key, {})[row["host"] or ""] = row["n"]
    return out


def _claims(conn: Connection) -> dict[str, tuple[int, SeriesState]]:
    """series uid -> (instances, state) of the series the receivers claimed; {} for an
    index that has no claims table (one no door of this version has written yet)."""
    try:
        rows = _rows(conn, CLAIMS_SQL, ())
    except Exception:  # the driver's error for a missing table (sqlite3.OperationalError)
        return {}
    out: dict[str, tuple[int, SeriesState]] = {}
    for row in rows:
        if row["state"] in ("complete", "incomplete"):
            out[row["series_instance_uid"]] = (row["instances"], row["state"])
    return out


def state_of(
    instances: int, expected: int | None, last: float, now: float, idle: float, ended: bool
) -> SeriesState:
    """A series' state (the module's doc says why)."""
    if expected and instances >= expected:
        return "complete"
    if now - last >= idle or ended:
        return "incomplete" if expected else "complete"
    return "receiving"


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def query(
    source: str | Connection,
    filters: StatusFilters = StatusFilters(),
    now: float | None = None,
    *,
    placeholder: str | None = None,
    name: str | None = None,
    dialect: str = "sqlite",
    logdir: str | None = None,
) -> StatusDoc:
    """The status document for the index at ``source`` (a path or a ``postgresql://``
    URL), or on a connection.

    A path is opened as :func:`open_index` does (pending rows folded where allowed) and
    closed again; a URL likewise (:func:`open_pg`: the pending rows in ``logdir``, its
    local files' folder, folded first); a connection is used as it is and left open
    (``dialect``, a key of :data:`DIALECTS`, says its database; ``placeholder``, default
    the dialect's, its driver's parameter style). ``name`` is what the document calls the
    index (default: the path; a URL without its password). Raises
    :class:`~.index.IndexFailure` when there is no index to read.
    """
    now = time.time() if now is None else now
    if isinstance(source, str) and is_url(source):  # PostgreSQL (core/index_pg.py)
        name = shown(source) if name is None else name
        pg = open_pg(source, logdir)
        try:
            return _query(pg, filters, now, "%s", name, "postgresql")
        finally:
            pg.close()
    if isinstance(source, str):
        name = source if name is None else name
        conn = open_index(source)
        try:
            return _query(conn, filters, now, placeholder, name, dialect)
        finally:
            conn.close()
    return _query(source, filters, now, placeholder, name, dialect)


def open_pg(url: str, logdir: str | None = None) -> Any:
    """A psycopg connection for reading the PostgreSQL index at ``url``, the pending rows
    in ``logdir`` folded in first where there are any (best effort, as for SQLite);
    IndexFailure when the server cannot be reached or its schema is refused."""
    from .index_pg import PgIndex, connect

    if logdir:
        from .index_rows import local_path

        writer = PgIndex(url, local_path(url, logdir))
        try:
            writer.fold()
        except IndexRefused:
            raise
        except IndexFailure:
            pass
        finally:
            writer.close()
    return connect(url)


def _query(
    conn: Connection,
    filters: StatusFilters,
    now: float,
    placeholder: str | None,
    name: str | None,
    dialect: str = "sqlite",
) -> StatusDoc:
    words = DIALECTS[dialect]
    placeholder = words["placeholder"] if placeholder is None else placeholder
    params = Params(placeholder)
    sql = SERIES_SQL.format(where=where(filters, params), **words)
    rows = _rows(conn, sql, params.values)
    assocs = _associations(conn, {r["peer"] or "" for r in rows}, placeholder)
    hosts = _hosts(conn, filters, placeholder)
    claims = _claims(conn)

    # the studies' first/last arrival are kept aside: they are shown last in a study
    patients: dict[str, PatientStatus] = {}
    studies: dict[tuple[str, str], tuple[StudyStatus, list[float]]] = {}
    totals: Totals = {"patients": 0, "studies": 0, "series": 0, "instances": 0, "bytes": 0}
    for r in rows:
        p = patients.get(r["patient_id"])
        if p is None:
            p = patients[r["patient_id"]] = {
                "PatientID": r["patient_id"],
                "PatientName": r["patient_name"],
                "instances": 0,
                "bytes": 0,
                "studies": [],
            }
        key = (r["patient_id"], r["study_instance_uid"])
        if key not in studies:
            study: StudyStatus = {
                "StudyInstanceUID": r["study_instance_uid"],
                "AccessionNumber": r["accession_number"],
                "StudyDate": r["study_date"],
                "StudyDescription": r["study_description"],
                "instances": 0,
                "bytes": 0,
                "series": [],
                "first": None,
                "last": None,
                "complete": False,
            }
            studies[key] = (study, [r["first"], r["last"]])
            p["studies"].append(study)
        s, span = studies[key]
        ended = any(
            started <= r["last"] and end is not None and end >= r["last"]
            for started, end in assocs.get(r["peer"] or "", ())
        )
        state = state_of(r["instances"], r["expected"], r["last"], now, filters.series_idle, ended)
        claimed = claims.get(r["series_instance_uid"])
        if claimed is not None and claimed[0] == r["instances"]:
            state = claimed[1]  # the receivers decided it: quiet everywhere
        s["series"].append(
            {
                "SeriesInstanceUID": r["series_instance_uid"],
                "SeriesNumber": r["series_number"],
                "SeriesDescription": r["series_description"],
                "Modality": r["modality"],
                "instances": r["instances"],
                "bytes": r["bytes"],
                "expected": r["expected"],
                "first": _iso(r["first"]),
                "last": _iso(r["last"]),
                "hosts": hosts.get((r["study_instance_uid"], r["series_instance_uid"]), {}),
                "folder": (r["path"] or "").rsplit("/", 1)[0],
                "state": state,
                "complete": state == "complete",
            }
        )
        for node in (p, s):
            node["instances"] += r["instances"]
            node["bytes"] += r["bytes"]
        span[0] = min(span[0], r["first"])
        span[1] = max(span[1], r["last"])
        totals["series"] += 1
        totals["instances"] += r["instances"]
        totals["bytes"] += r["bytes"]
    for s, (first, last) in studies.values():
        s["first"], s["last"] = _iso(first), _iso(last)
        s["complete"] = all(x["complete"] for x in s["series"])
    totals["studies"] = len(studies)
    totals["patients"] = len(patients)
    return {
        "index": name,
        "generated": _iso(now),
        "series_idle_s": filters.series_idle,
        "totals": totals,
        "patients": list(patients.values()),
    }


def as_json(doc: StatusDoc) -> str:
    """The document as ``status --json`` prints it (indented, one trailing newline)."""
    import json

    return json.dumps(doc, indent=2) + "\n"


def open_index(index: str) -> sqlite3.Connection:
    """A connection for reading the index at ``index``: its pending rows folded in first
    where the reader may write there (:func:`~.index.connect_reader`), else the index and
    its pending rows copied into memory (:func:`read_only`): a read changes nothing it may
    not change."""
    return connect_reader(index) if _can_write(index) else read_only(index)


def _can_write(index: str) -> bool:
    """Whether the index's folder and, if it is there, the index itself are writable."""
    folder = os.path.dirname(index) or "."
    return os.access(folder, os.W_OK) and (not os.path.lexists(index) or os.access(index, os.W_OK))


def read_only(index: str) -> sqlite3.Connection:
    """The index and its pending rows, read without writing anything: a copy in memory.

    For a log folder status may not write (a read-only mount, another user's): the
    index is opened read-only (``immutable`` where SQLite cannot make its ``-shm``
    there) and copied into memory, and the pending rows the per-instance door left
    (core/index_rows.py) are folded into the copy, as a fold would into the index.
    Links and FIFOs in the index's place are refused as everywhere (``check_files``).
    """
    import sqlite3

    from .index import UPSERT, check_files, setup  # the fold's own statement
    from .index_rows import parse_pending, pending_path
    from .tree import NotRegularError, open_file

    check_files(index)
    if not os.path.lexists(index):
        raise IndexFailure(f"no index at {index} (nothing filed yet, or --no-index)")
    memory = sqlite3.connect(":memory:")
    try:
        for uri in (f"file:{index}?mode=ro", f"file:{index}?mode=ro&immutable=1"):
            try:
                disk = sqlite3.connect(uri, uri=True, timeout=10.0)
            except sqlite3.Error:
                continue
            try:
                disk.execute("SELECT 1 FROM instances LIMIT 1")
                disk.backup(memory)
                break
            except sqlite3.Error:
                continue
            finally:
                disk.close()
        else:
            raise IndexFailure(f"cannot read the index {index} (read-only)")
        setup(memory)  # an older index's copy gains the columns read here
        pending = pending_path(index)
        folder, base = os.path.split(pending)
        names = sorted(n for n in os.listdir(folder or ".") if n.startswith(base + "."))
        for name in [os.path.basename(pending), *names]:
            try:
                fd, _ = open_file(f"{folder}/{name}", os.O_RDONLY)
            except FileNotFoundError:
                continue
            except NotRegularError as exc:
                raise IndexRefused(f"cannot read the index's pending rows: {exc}") from None
            try:
                data = b""
                while chunk := os.read(fd, 1 << 20):
                    data += chunk
            finally:
                os.close(fd)
            memory.executemany(UPSERT, parse_pending(data))
        memory.row_factory = sqlite3.Row
        return memory
    except OSError as exc:
        memory.close()
        raise IndexFailure(f"cannot read the index {index}: {exc.strerror or exc}") from None
    except BaseException:
        memory.close()
        raise
