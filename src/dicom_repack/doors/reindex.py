"""``dicom-repack index --rebuild``: make the index equal the data tree again.

The index (core/index.py) is derived data: every row can be recomputed from the
filed files. A rebuild walks the data tree, reads each file's header with the
core's reader, and makes the index hold exactly one row per filed instance:

- a row whose file is where the row says keeps its arrival time and source
  (what the tree alone cannot tell);
- a file without a row gets one (arrival time = the file's mtime);
- a row whose file is gone is deleted, unless it was written after the rebuild
  started (a receiver may run meanwhile: rebuilding never blocks or undoes it);
- rows the per-instance door left pending (core/index.py) are folded in first;
- an index that SQLite cannot read at all is set aside as ``<name>.damaged-<time>``
  and a new one is built.

With ``--logdir``, files that have no image record (``seriesData/<series>-img/``)
are counted and listed: they were placed but never recorded (a kill between the
two), and a re-run of ``batch`` over them repairs that.

    dicom-repack index --rebuild --datadir /data --logdir /log
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from ..core.errors import EXIT_OK, RepackError
from ..core.header import read_header_fd
from ..core.index import (
    DEFAULT_NAME,
    INSERT,
    Index,
    IndexFailure,
    check_files,
    default_path,
    setup,
)
from ..core.index_rows import COLUMNS, INDEX_KEYWORDS, row_for
from ..core.repack import REQUIRED
from ..core.tree import open_file
from .plumbing import fail, line, say
from .usage import OneLineParser

TYPE_CHECKING = False
if TYPE_CHECKING:
    import sqlite3

    from ..core.header import Header

__all__ = ["main", "rebuild"]

DOOR = "index"

_KEYWORDS = tuple(dict.fromkeys(REQUIRED + INDEX_KEYWORDS))
_BATCH = 500
_INSERT_NEW = INSERT.replace("INSERT OR REPLACE", "INSERT OR IGNORE")

#: a row whose instance the tree holds elsewhere takes the tree's word, every column
#: (the host that filed it there is not known from the tree: NULL)
_UPDATE = (
    "UPDATE instances SET "
    + ", ".join(f"{col} = ?" for col in COLUMNS[1:])
    + " WHERE sop_instance_uid = ? AND path != ?"
)


class Rebuilt:
    """What a rebuild did."""

    def __init__(self) -> None:
        self.files = 0
        self.rows = 0
        self.skipped: list[str] = []
        self.removed = 0
        self.unrecorded: list[str] = []
        self.set_aside: str | None = None


def _open(path: str) -> tuple[sqlite3.Connection, str | None]:
    """A writable connection to a usable index, and where a damaged one was set aside."""
    import sqlite3

    def connect() -> sqlite3.Connection:
        check_files(path)
        conn = sqlite3.connect(path, timeout=60.0, isolation_level=None)
        setup(conn)
        return conn

    try:
        conn = connect()
        if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            conn.close()
            raise sqlite3.DatabaseError("quick_check failed")
        return conn, None
    except sqlite3.DatabaseError:
        pass
    aside = f"{path}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.rename(path + suffix, aside + suffix)
    return connect(), aside


def _read(path: str) -> tuple[Header, os.stat_result]:
    """The header of the file ``path`` in the data tree, never through a link planted there
    (a link or FIFO is skipped with its reason, as any unreadable file)."""
    fd, st = open_file(path, os.O_RDONLY)
    try:
        return read_header_fd(fd, st.st_size, _KEYWORDS, name=path), st
    finally:
        os.close(fd)


def _walk(root: str) -> list[str]:
    out = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # the receiver's spool
        for name in sorted(names):
            if not name.startswith("."):  # our temporary files are hidden
                out.append(os.path.join(folder, name))
    return out


def _has_image_record(logdir: str, values: dict[str, str], path: str) -> bool:
    from ..core.records import record_paths

    rel = record_paths(
        values["PatientID"],
        values["StudyInstanceUID"],
        values["SeriesInstanceUID"],
        os.path.basename(path),
    ).image
    return os.path.exists(os.path.join(logdir, rel))


def rebuild(datadir: str, index: str, logdir: str | None = None) -> Rebuilt:
    """Make the index at ``index`` hold one row per instance filed under ``datadir``."""

    done = Rebuilt()
    started = time.time()
    pending = Index(index)
    try:  # the per-instance door's pending rows first: they keep their source and time
        pending.fold()
    except IndexFailure:
        pass  # a damaged index: set aside below; the rows stay pending for the next fold
    finally:
        pending.close()
    conn, done.set_aside = _open(index)
    conn.execute("CREATE TEMP TABLE seen (sop TEXT PRIMARY KEY)")
    rows: list[tuple[object, ...]] = []

    def flush() -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for row in rows:
                conn.execute("INSERT OR IGNORE INTO temp.seen VALUES (?)", (row[0],))
                conn.execute(_INSERT_NEW, row)
                conn.execute(_UPDATE, (*row[1:], row[0], row[4]))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        done.rows += len(rows)
        rows.clear()

    for path in _walk(os.path.abspath(datadir)):
        done.files += 1
        try:
            header, st = _read(path)
            values = dict(header.values)
            if any(not (values.get(k) or "").strip() for k in REQUIRED):
                raise RepackError(path, "missing a required UID")
        except (RepackError, OSError) as exc:
            done.skipped.append(str(exc))
            continue
        if logdir is not None and not _has_image_record(logdir, values, path):
            done.unrecorded.append(path)
        rows.append(row_for(values, path, st.st_size, None, st.st_mtime))
        if len(rows) >= _BATCH:
            flush()
    flush()
    cur = conn.execute(
        "DELETE FROM instances WHERE filed_at < ? AND sop_instance_uid NOT IN "
        "(SELECT sop FROM temp.seen)",
        (started,),
    )
    done.removed = cur.rowcount
    conn.close()
    return done


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="dicom-repack index",
        description="Maintain the SQLite index of filed instances (read by `dicom-repack status`).",
    )
    p.add_argument(
        "--rebuild",
        action="store_true",
        required=True,
        help="make the index hold one row per instance filed under --datadir",
    )
    p.add_argument("-d", "--datadir", required=True, help="root of the packed tree")
    p.add_argument(
        "-l", "--logdir", help=f"pypx log folder (holds {DEFAULT_NAME}; image records are checked)"
    )
    p.add_argument("--index", metavar="PATH", help="the index file (default: in --logdir)")
    return p


def main(argv: list[str]) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not ns.index and not ns.logdir:
        parser.error("give --logdir (the index lives there) or --index PATH")
    if not os.path.isdir(ns.datadir):
        parser.error(f"no such folder: {ns.datadir}")
    index = ns.index or default_path(ns.logdir)
    import sqlite3

    try:
        done = rebuild(ns.datadir, index, ns.logdir)
    except (sqlite3.Error, OSError, IndexFailure) as exc:
        return fail(DOOR, f"cannot rebuild {index}: {exc}")
    if done.set_aside:
        say(DOOR, f"damaged index set aside as {done.set_aside}")
    for skipped in done.skipped[:20]:
        say(DOOR, f"skipped {skipped}")
    for path in done.unrecorded[:20]:
        say(DOOR, f"no image record (re-run batch over it): {path}")
    sys.stdout.write(
        line(
            DOOR,
            f"{done.rows} instances indexed from {done.files} files "
            f"({len(done.skipped)} skipped, {len(done.unrecorded)} without image record), "
            f"{done.removed} stale rows removed; {index}",
        )
    )
    return EXIT_OK
