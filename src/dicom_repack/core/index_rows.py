"""One row of the index, and where the per-instance door leaves it: the pending file.

The SQLite side (schema, connections) is :mod:`.index`, the PostgreSQL side
:mod:`.index_pg`; this module is what a process that files one instance needs of
the index, and nothing more, so that the per-instance door loads neither backend
(it imports neither: no import cycle either):

* the row of a filed instance (:func:`row_for`: its columns, :data:`COLUMNS`, and
  their declarations for either backend, :func:`column_decls`);
* where the index lives (:func:`default_path`, :func:`is_url`) and its pending
  file (:func:`pending_path`, :func:`local_path`: a PostgreSQL index's is in the
  log folder, one per host);
* :class:`PendingIndex`, whose :meth:`~PendingIndex.add` appends the row to the
  pending file as one line (:func:`append_row`); once that file passes
  :data:`FOLD_AT` it folds it into SQLite (through the ``opener`` its caller
  gives: the index is imported only then). Every reader of the index folds
  first, so a pending row is as good as a row; its :meth:`~PendingIndex.where`
  reads a SOP's newest pending row (:func:`last_pending`, once; from a second
  look on through the :class:`.pending_tail.PendingTail` its caller gives, which
  this module does not import and the per-instance door never loads);
* the fold itself (:func:`fold_files`), the one protocol of both backends (see
  :mod:`.index` for why it is safe).
"""

from __future__ import annotations

import os
import time
from _json import encode_basestring_ascii as _encode_str

from .errors import DicomRepackError
from .jsonio import JSONError, loads, ndjson_line
from .tree import NotRegularError, open_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Protocol

    from .pending_tail import PendingTail

    class Folded(Protocol):
        """What the pending rows need of the index they fold into (:class:`.index.Index`,
        :class:`.index_pg.PgIndex`; a type only: ``typing`` costs the per-instance door
        ~2 ms)."""

        def fold(self) -> int: ...
        def folded_where(self, sop: str) -> dict[str, str] | None: ...
        def close(self) -> None: ...


__all__ = [
    "ADDED_COLUMNS",
    "COLUMNS",
    "DEFAULT_NAME",
    "FOLD_AT",
    "INDEX_KEYWORDS",
    "PENDING_SUFFIX",
    "RESIDENT_FOLD_AT",
    "URL_SCHEMES",
    "IndexFailure",
    "IndexRefused",
    "PendingIndex",
    "append_row",
    "default_path",
    "find_row",
    "host_name",
    "is_url",
    "last_pending",
    "line_of",
    "line_start",
    "local_path",
    "lock_base",
    "old_start",
    "parse_pending",
    "pending_path",
    "row_for",
    "row_of_line",
    "shown",
    "storable",
    "where_of",
]

#: the index's file name in the log folder
DEFAULT_NAME = "dicom-repack-index.sqlite"

#: header elements the index stores beyond the four UIDs (all in the fast path's table)
INDEX_KEYWORDS = (
    "PatientName",
    "AccessionNumber",
    "StudyDate",
    "StudyDescription",
    "SeriesNumber",
    "SeriesDescription",
    "Modality",
    "ImagesInAcquisition",
    "NumberOfSlices",
    "NumberOfSeriesRelatedInstances",
)

#: columns of ``instances`` filled from header keywords
FROM_HEADER = (
    ("patient_name", "PatientName"),
    ("accession_number", "AccessionNumber"),
    ("study_date", "StudyDate"),
    ("study_description", "StudyDescription"),
    ("series_number", "SeriesNumber"),
    ("series_description", "SeriesDescription"),
    ("modality", "Modality"),
)

#: the ``instances`` table's columns, in a row's order
COLUMNS = (
    "sop_instance_uid",
    "series_instance_uid",
    "study_instance_uid",
    "patient_id",
    "path",
    "size",
    "filed_at",
    "source",
    "calling_ae",
    "peer",
    *(col for col, _ in FROM_HEADER),
    "expected",
    "host",
)

#: the columns added after the first schema, each with its SQL type: an index made
#: before them gets each by ``ALTER TABLE instances ADD COLUMN`` at first use (its old
#: rows NULL there), and a pending line written before them is read with NULLs
ADDED_COLUMNS = (("host", "TEXT"),)
#: index addresses that name a PostgreSQL server instead of an SQLite file
URL_SCHEMES = ("postgresql://", "postgres://")

#: with a PostgreSQL index, the files kept beside it are named from this, in the log
#: folder: ``dicom-repack-index.<host>.pending`` (each host's own pending rows) and
#: ``dicom-repack-index.sop-lock`` (shared: its ``lockf`` locks hold across NFS)
LOCAL_STEM = "dicom-repack-index"


def is_url(index: str | None) -> bool:
    """Whether ``index`` names a PostgreSQL server (``postgresql://``, ``postgres://``)."""
    return bool(index) and str(index).startswith(URL_SCHEMES)


def host_name() -> str:
    """This host's name as it appears in a file name (``os.uname``: no import, no lookup)."""
    name = os.uname().nodename or "localhost"
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in name)


def local_path(index: str, logdir: str | None) -> str:
    """The name this host's pending rows are named from (``<it>.pending``): the SQLite
    file itself, or for a PostgreSQL URL ``<logdir>/dicom-repack-index.<host>``. One file
    per host, because appends are atomic only among one host's writers: a log folder
    shared by several receivers (NFS) then holds one pending file per host.
    IndexFailure for a URL without a log folder."""
    if not is_url(index):
        return os.path.abspath(index)
    return f"{lock_base(index, logdir)}.{host_name()}"


def lock_base(index: str, logdir: str | None) -> str:
    """The name the SOP lock file is named from (``<it>.sop-lock``, core/sop_lock.py):
    the SQLite file, or ``<logdir>/dicom-repack-index`` for a PostgreSQL URL (one for
    every host sharing the log folder). IndexFailure for a URL without a log folder."""
    if not is_url(index):
        return os.path.abspath(index)
    if not logdir:
        raise IndexFailure(
            "a PostgreSQL --index needs --logdir: its rows wait in a pending file there"
        )
    return os.path.join(os.path.abspath(logdir), LOCAL_STEM)


def shown(index: str) -> str:
    """How messages and pages name the index: a file's absolute path, a URL without
    its password."""
    if not is_url(index):
        return os.path.abspath(index)
    scheme, sep, rest = index.partition("://")
    who, at, where = rest.rpartition("@")
    if at and ":" in who:
        who = who.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{who}{at}{where}"


#: A pending add whose line leaves ``<index>.pending`` at least this big folds it
#: (~150 rows: one fold, ~5 ms, per ~150 instances). Small, for the per-instance door:
#: its one look at the pending rows is a search of the whole file.
FOLD_AT = 64 << 10

#: The same for a resident door's workers (``watch``, ``batch``), whose looks are keyed as lines
#: arrive (:class:`PendingTail`): one transaction per ~7,000 rows instead of ~150. Each
#: transaction rewrites the pages it touches into SQLite's WAL, and a WAL past 1,000
#: pages is checkpointed with two fsyncs: at 64 KiB, a quarter of a worker's time went
#: to folds (COMMIT alone ~11%, much of it waiting on the disk: idle cores). A process's
#: memory does not grow with it: a fold streams the file (:mod:`.index_files`), a
#: look keeps offsets, not lines.
RESIDENT_FOLD_AT = 4 << 20

#: the pending rows' file is the index's name plus this
PENDING_SUFFIX = ".pending"


class IndexFailure(DicomRepackError):
    """The index could not be written or read (the message names its path).

    ``errno``: the failure as an OSError's errno where it says what failed (ENOSPC
    for a full disk, EIO for a damaged file): the job passes it on, so a batch
    stops early, as for a failing data folder (core/destination.py).
    """

    code = "IndexFailure"

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class IndexRefused(IndexFailure):
    """A file of the index (the database, ``-wal``, ``-shm``, ``-journal``, pending rows)
    is a symbolic link, FIFO, socket, device or folder: not opened, not removed, and
    every door says so (naming it) until an operator removes it."""

    code = "IndexRefused"


def default_path(logdir: str) -> str:
    """Where the index lives when only ``--logdir`` is given."""
    return os.path.join(logdir, DEFAULT_NAME)


def pending_path(index: str) -> str:
    """Where pending adds leave their rows until the next fold (see the module doc)."""
    return index + PENDING_SUFFIX


def split_origin(origin: str) -> tuple[str | None, str | None]:
    """(calling AE, peer host:port) of a receiver's origin ``dicom://AE@host:port/UID``."""
    if not origin.startswith("dicom://"):
        return None, None
    who = origin[8:].rsplit("/", 1)[0]
    ae, at, peer = who.rpartition("@")
    return (ae, peer) if at else (None, who)


def expected_count(values: Mapping[str, str]) -> int | None:
    """The series' announced size, where the instance carries one (else None):
    NumberOfSeriesRelatedInstances, else ImagesInAcquisition, else NumberOfSlices."""
    for keyword in ("NumberOfSeriesRelatedInstances", "ImagesInAcquisition", "NumberOfSlices"):
        text = (values.get(keyword) or "").strip()
        if text.isdigit() and int(text) > 0:
            return int(text)
    return None


def row_for(
    values: Mapping[str, str],
    path: str,
    size: int,
    source: str | None,
    when: float,
    host: str | None = None,
) -> tuple[object, ...]:
    """The ``instances`` row of one filed instance, as text SQLite can hold.

    ``host``: the filing host's identity (``--host-id``), so that an index shared by
    several receivers says which one filed each instance.

    A source file name may hold bytes that are not UTF-8 (surrogates in Python);
    SQLite's text cannot, so every writer of a row gets them as U+FFFD here.
    """
    calling_ae, peer = split_origin(source) if source else (None, None)
    if source and peer is None:
        source = os.path.abspath(source)
    row = (
        values["SOPInstanceUID"],
        values["SeriesInstanceUID"],
        values["StudyInstanceUID"],
        values["PatientID"],
        path,
        size,
        when,
        source,
        calling_ae,
        peer,
        *(values.get(kw) for _, kw in FROM_HEADER),
        expected_count(values),
        host,
    )
    try:  # one check for the whole row: a surrogate anywhere makes it fail
        "".join([v for v in row if type(v) is str]).encode()
    except UnicodeEncodeError:
        return tuple(storable(v) for v in row)
    return row


def where_of(row: tuple[object, ...]) -> dict[str, str] | None:
    """Where a row says its instance was filed: ``path``, ``PatientID``,
    ``StudyInstanceUID``, ``SeriesInstanceUID`` and ``file`` (the path's last part)."""
    sop, series, study, patient, path = row[:5]
    if not all(isinstance(v, str) for v in (sop, series, study, patient, path)):
        return None
    return {
        "path": str(path),
        "PatientID": str(patient),
        "StudyInstanceUID": str(study),
        "SeriesInstanceUID": str(series),
        "file": str(path).rpartition("/")[2],
    }


def last_pending(pending: str, sop: str) -> tuple[object, ...] | None:
    """The newest row of ``sop`` in the pending file ``pending`` (None: none, or no file),
    read once: a process's first look (the per-instance door looks once). A process that
    looks again keeps a :class:`.pending_tail.PendingTail`, which reads only what was
    appended since. The file is opened with :func:`.tree.open_file` (a link or a FIFO
    planted there is never read)."""
    try:
        fd, st = open_file(pending, os.O_RDONLY)
    except OSError:  # none (folded), or refused: the folded index knows the rest
        return None
    try:
        data = os.pread(fd, st.st_size, 0)
    finally:
        os.close(fd)
    return find_row(data[: data.rfind(b"\n") + 1], sop)  # whole lines: the rest is being written


def find_row(buf: bytes | bytearray, sop: str) -> tuple[object, ...] | None:
    """The last row of ``sop`` among the pending lines ``buf`` (either form), or None."""
    at = buf.rfind(b"\n" + line_start(sop))
    if at < 0 and buf[:2] == b"\n(":  # a file an earlier version started: its lines too
        at = buf.rfind(old_start(sop))
    if at < 0:
        return None
    return row_of_line(bytes(buf[at : buf.find(b"\n", at + 1)]))


def row_of_line(line: bytes | None) -> tuple[object, ...] | None:
    """The row of one pending line, or None (no line, or a torn one)."""
    rows = parse_pending(line) if line else []
    return rows[0] if rows else None


def line_start(sop: str) -> bytes:
    """How a pending line of ``sop`` starts (after its leading newline)."""
    return b"[" + _encode_str(sop).encode("ascii") + b","


def old_start(sop: str) -> bytes:
    """How a line of ``sop`` written before the JSON lines starts (``ascii()`` of a tuple)."""
    return b"\n(" + ascii(sop).encode("ascii") + b", "


class PendingIndex:
    """The index as a one-instance process writes it: rows appended to the pending file.

    ``add`` takes what :meth:`.index.Index.add` takes; raises IndexFailure when the
    row cannot be written (the instance then fails: a filed instance always has
    its row, pending or folded). ``where`` says where a SOP was last filed.
    """

    def __init__(
        self,
        path: str,
        *,
        durable: bool = False,
        target: str | None = None,
        opener: Callable[[float], Folded] | None = None,
        tail: Callable[[str], PendingTail] | None = None,
        fold_at: int | None = None,
    ) -> None:
        self.path = os.path.abspath(path)
        #: an add whose line takes the pending file to this size folds it (None: FOLD_AT)
        self.fold_at = FOLD_AT if fold_at is None else fold_at
        self.durable = durable
        #: opens the index these rows fold into (given a timeout), for a fold past FOLD_AT
        #: and for lookups of folded rows; the caller's (core/repack.py), so that this
        #: light module imports neither backend (no import cycle either); None: neither
        self.opener = opener
        #: the index is on a filesystem other hosts write too (``batch --dask``): never open
        #: SQLite here (its locking is not safe on NFS): no fold past FOLD_AT, no lookup of
        #: folded rows; the one process that folds is the run's client
        self.shared = False
        #: a PostgreSQL URL whose pending rows ``path`` names (:func:`local_path`): never
        #: folded here (a resident door's flusher, a reader or ``index --fold`` does); the
        #: folded rows are looked up only where psycopg is already loaded
        self.target = target if is_url(target) else None
        #: makes the reader of the pending rows a process keeps from its second look on
        #: (:class:`.pending_tail.PendingTail`, which reads only what was appended since);
        #: the caller's, as ``opener`` is, so that this module does not import it (the
        #: per-instance door looks once); None: every look reads the file once
        self._new_tail = tail
        self._tail: PendingTail | None = None
        self._looked = False
        self._reader: Folded | None = None

    def where(self, sop: str) -> dict[str, str] | None:
        """Where ``sop`` was last filed, as far as this process can tell cheaply: its
        pending row, else the folded index when SQLite is already loaded here (a
        batch's or watch's workers: their parent loaded it before forking); the
        per-instance door, which does not load SQLite (a quarter of its start), sees
        the pending rows only. None when not known."""
        if self._looked and self._new_tail is not None:
            if self._tail is None:
                self._tail = self._new_tail(pending_path(self.path))
            row = self._tail.last(sop)
        else:  # the first look reads the file once and keeps nothing
            self._looked = True
            row = last_pending(pending_path(self.path), sop)
        if row is not None:
            return where_of(row)
        import sys

        driver = "psycopg" if self.target is not None else "_sqlite3"
        if self.opener is None or driver not in sys.modules:
            return None
        if self.shared and self.target is None:  # SQLite on a shared filesystem: never
            return None
        if self._reader is None:
            self._reader = self.opener(5.0)
        return self._reader.folded_where(sop)

    def close(self) -> None:
        """Close what ``where`` may have opened (the pending file, a reading connection)."""
        if self._tail is not None:
            self._tail.close()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

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
        row = row_for(values, path, size, source, time.time() if when is None else when, host)
        pending = pending_path(self.path)
        try:
            try:
                size_after = append_row(pending, row, durable=self.durable)
            except FileNotFoundError:  # --index in a folder not made yet (as Index does)
                os.makedirs(os.path.dirname(pending), exist_ok=True)
                size_after = append_row(pending, row, durable=self.durable)
        except NotRegularError as exc:
            raise IndexRefused(f"cannot write the index: {exc}") from None
        except OSError as exc:
            raise IndexFailure(
                f"cannot write the index {pending}: {exc.strerror or exc}", errno=exc.errno
            ) from None
        if size_after >= self.fold_at and not self.shared and self.target is None and self.opener:
            index = self.opener(60.0)
            try:
                index.fold()
            except IndexFailure:
                pass  # the rows stay pending, safe; the next fold takes them
            finally:
                index.close()


def append_row(pending: str, row: tuple[object, ...], *, durable: bool = False) -> int:
    """Append ``row`` to the pending file as one line; return the file's size after it.

    The line is the row as a JSON array (:func:`line_of`), preceded by a newline so
    that a line torn by a crash can never swallow the next one. Written with one ``write`` under an exclusive
    ``lockf`` lock; if a fold renamed the file between our open and our lock, the
    name now holds another file (or none), so we write there instead. Opened with
    :func:`.tree.open_file`: a link or FIFO planted at its name raises
    NotRegularError (never written through, never waited on).
    """
    line = line_of(row)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    while True:
        fd, _ = open_file(pending, flags)
        try:
            os.lockf(fd, os.F_LOCK, 0)
            st = os.fstat(fd)
            try:
                now = os.stat(pending, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if now.st_ino != st.st_ino or now.st_dev != st.st_dev:
                continue
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(28, "short write (no space left?)")
            if durable:  # the data and the size that reaches it, as SQLite's WAL does
                os.fdatasync(fd)
            return st.st_size + written
        finally:
            os.close(fd)


def line_of(row: tuple[object, ...]) -> bytes:
    """One pending line: a newline, the row as a compact JSON array (ASCII), a newline.

    JSON, read back with the C scanner ``_json`` (:func:`.jsonio.loads`): lines
    written before were the row's ``ascii()``, read with ``ast.literal_eval``,
    whose parser cost ~300,000 instructions a row (more than the rest of the
    index): every fold paid it. Those lines are still read.
    """
    parts = []
    for v in row:  # the common types inline (one call a row, not one a value)
        if v is None:
            parts.append("null")
        elif type(v) is str:
            parts.append(_encode_str(v))
        elif type(v) is int:
            parts.append(int.__repr__(v))
        else:  # floats (NaN and infinities as jsonio writes them), anything else
            parts.append(ndjson_line(v)[:-1])
    return ("\n[" + ",".join(parts) + "]\n").encode("ascii")


def parse_pending(data: bytes) -> list[tuple[object, ...]]:
    """The rows of a pending file's bytes; a torn or foreign line is skipped."""
    rows = []
    for line in data.split(b"\n"):
        if line[:1] == b"[":
            try:
                row = loads(line.decode("ascii"))
            except (JSONError, UnicodeDecodeError, RecursionError):
                continue
            if isinstance(row, list):
                row = tuple(row)
        elif line[:1] == b"(":
            row = _old_row(line)
        else:
            continue
        if isinstance(row, tuple) and len(COLUMNS) - len(ADDED_COLUMNS) <= len(row) <= len(COLUMNS):
            row += (None,) * (len(COLUMNS) - len(row))  # written before ADDED_COLUMNS
            rows.append(tuple(storable(v) for v in row))  # a line not written by row_for
    return rows


def _old_row(line: bytes) -> object:
    """A line as versions before the JSON lines wrote it (``ascii()`` of the row)."""
    from ast import literal_eval

    try:
        return literal_eval(line.decode("ascii"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        return None


def storable(value: object) -> object:
    """A text SQLite can hold: a file name's undecodable bytes (surrogates) become U+FFFD."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value
