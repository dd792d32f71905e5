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

from ..core.errors import EXIT_OK, EXIT_USAGE, RepackError
from ..core.header import read_header_fd
from ..core.index import (
    DEFAULT_NAME,
    INSERT,
    IndexFailure,
    check_files,
    default_path,
    open_index,
    setup,
)
from ..core.index_rows import COLUMNS, INDEX_KEYWORDS, is_url, row_for, shown
from ..core.repack import REQUIRED
from ..core.tree import open_file
from .plumbing import fail, line, say
from .usage import OneLineParser

TYPE_CHECKING = False
if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable
    from typing import Any

    from ..core.header import Header

__all__ = ["main", "rebuild"]

DOOR = "index"

_KEYWORDS = tuple(dict.fromkeys(REQUIRED + INDEX_KEYWORDS))
_BATCH = 500
#: the statements below are written once, for SQLite and PostgreSQL alike (``?`` made
#: ``%s`` for PostgreSQL by core/index_pg.py's ``pg_sql``)
_INSERT_NEW = INSERT.replace("INSERT OR REPLACE", "INSERT") + " ON CONFLICT DO NOTHING"
_SEEN = "INSERT INTO seen VALUES (?) ON CONFLICT DO NOTHING"
_STALE = (
    "DELETE FROM instances WHERE filed_at < ? AND sop_instance_uid NOT IN (SELECT sop FROM seen)"
)

#: a row whose instance the tree holds elsewhere takes the tree's word, every column
#: (the host that filed it there is not known from the tree: NULL)
_UPDATE = (
    f"UPDATE instances SET {', '.join(f'{col} = ?' for col in COLUMNS[1:])} "
    "WHERE sop_instance_uid = ? AND path != ?"
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
    pg = is_url(index)
    pending = open_index(index, logdir)
    try:  # the per-instance door's pending rows first: they keep their source and time
        pending.fold()
    except IndexFailure:
        if pg:
            raise  # the server away: nothing to rebuild into (one line)
        # a damaged index: set aside below; the rows stay pending for the next fold
    finally:
        pending.close()
    conn: Any
    if pg:
        from ..core.index_pg import connect, pg_sql

        conn, sql, begin = connect(index), pg_sql, "BEGIN"
    else:
        (conn, done.set_aside), sql, begin = _open(index), _same, "BEGIN IMMEDIATE"
    try:
        conn.execute("CREATE TEMP TABLE seen (sop TEXT PRIMARY KEY)")
        _fill(conn, sql, begin, datadir, logdir, done)
        cur = conn.execute(sql(_STALE), (started,))
        done.removed = cur.rowcount
    finally:
        conn.close()
    return done


def _same(sql: str) -> str:
    return sql


def _fill(
    conn: Any,
    sql: Callable[[str], str],
    begin: str,
    datadir: str,
    logdir: str | None,
    done: Rebuilt,
) -> None:
    """One row per file under ``datadir`` (``seen`` keeps their SOPs), in transactions."""
    rows: list[tuple[object, ...]] = []
    seen, insert, update = sql(_SEEN), sql(_INSERT_NEW), sql(_UPDATE)

    def flush() -> None:
        conn.execute(begin)
        try:
            for row in rows:
                conn.execute(seen, (row[0],))
                conn.execute(insert, row)
                conn.execute(update, (*row[1:], row[0], row[4]))
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


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="dicom-repack index",
        description="Maintain the index of filed instances (read by `dicom-repack status`).",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--rebuild",
        action="store_true",
        help="make the index hold one row per instance filed under --datadir",
    )
    what.add_argument(
        "--fold",
        action="store_true",
        help="fold the pending rows (the per-instance door's, or those that waited while "
        "a PostgreSQL index was away) into the index, and exit",
    )
    p.add_argument("-d", "--datadir", help="root of the packed tree (--rebuild)")
    p.add_argument(
        "-l",
        "--logdir",
        help=f"pypx log folder (holds {DEFAULT_NAME}, or a PostgreSQL index's pending rows; "
        "image records are checked)",
    )
    p.add_argument(
        "--index",
        metavar="PATH|URL",
        help="the index file (default: in --logdir), or a PostgreSQL index: "
        "postgresql://user@host/db (its pending rows are in --logdir)",
    )
    return p


def main(argv: list[str]) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not ns.index and not ns.logdir:
        parser.error("give --logdir (the index lives there) or --index PATH")
    index = ns.index or default_path(ns.logdir)
    if ns.fold:
        return _fold(index, ns.logdir)
    if not ns.datadir:
        parser.error("--rebuild needs --datadir")
    if not os.path.isdir(ns.datadir):
        parser.error(f"no such folder: {ns.datadir}")
    import sqlite3

    try:
        done = rebuild(ns.datadir, index, ns.logdir)
    except (sqlite3.Error, OSError, IndexFailure) as exc:
        return fail(DOOR, f"cannot rebuild {shown(index)}: {exc}")
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
            f"{done.removed} stale rows removed; {shown(index)}",
        )
    )
    return EXIT_OK


def _fold(index: str, logdir: str | None) -> int:
    """``index --fold``: the pending rows into the index now; exit 1 (one line) if they
    could not be (they stay pending, nothing lost)."""
    if is_url(index) and not logdir:
        return fail(DOOR, "a PostgreSQL --index keeps its pending rows in --logdir: give it",
                    EXIT_USAGE)  # fmt: skip
    try:
        writer = open_index(index, logdir)
        try:
            folded = writer.fold()
        finally:
            writer.close()
    except IndexFailure as exc:
        return fail(DOOR, f"{exc}; the rows stay pending")
    sys.stdout.write(line(DOOR, f"{folded} pending rows folded into {shown(index)}"))
    return EXIT_OK
