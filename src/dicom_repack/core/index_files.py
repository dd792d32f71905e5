"""The index's files and columns, for the processes that fold or create it.

What only a door that folds pending rows or makes the tables needs, kept out of
:mod:`.index_rows` (which the per-instance door loads at every start: its size is
part of that start):

* the fold of a pending file, the one protocol of every backend
  (:func:`fold_files`; see :mod:`.index` for why it is safe);
* the pending files of every host sharing a log folder (:func:`every_host_pending`)
  and how many rows wait (:func:`pending_rows`, ``/metrics``);
* the columns' declarations for either backend (:func:`column_decls`).
"""

from __future__ import annotations

import os
import time

from .index_rows import (
    COLUMNS,
    LOCAL_STEM,
    PENDING_SUFFIX,
    IndexFailure,
    IndexRefused,
    parse_pending,
)
from .tree import NotRegularError, kind_of, open_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "COLUMN_KINDS",
    "NOT_NULL",
    "column_decls",
    "every_host_pending",
    "fold_files",
    "pending_rows",
]

#: Column types beyond TEXT, as portable kinds each backend spells its way
#: (:func:`column_decls`); a column not named here is nullable TEXT, so a column
#: added to COLUMNS flows to both backends' DDL and inserts with no other change.
COLUMN_KINDS = {"size": "integer", "filed_at": "real", "expected": "integer"}
#: columns that may not be NULL (the primary key, the first, besides)
NOT_NULL = frozenset(COLUMNS[1:7])


def every_host_pending(logdir: str) -> list[str]:
    """The pending files of every host sharing ``logdir`` for a PostgreSQL index (and
    of those a fold set aside), as the pending path each belongs to: what a reader
    (``status``, ``index --fold``) folds. Sorted; [] when none or unreadable."""
    head, tail = LOCAL_STEM + ".", PENDING_SUFFIX
    found = set()
    try:
        names = os.listdir(logdir)
    except OSError:
        return []
    for name in names:
        if name.startswith(head) and tail in name[len(head) :]:
            stem = name[: name.index(tail, len(head)) + len(tail)]
            if stem.endswith(tail):
                found.add(os.path.join(os.path.abspath(logdir), stem))
    return sorted(found)


def column_decls(types: Mapping[str, str]) -> str:
    """The ``instances`` columns' declarations, from COLUMNS, in a backend's ``types``
    (``text``, ``integer``, ``real`` -> that backend's word); the first is the key."""
    out = []
    for i, col in enumerate(COLUMNS):
        decl = f"{col} {types[COLUMN_KINDS.get(col, 'text')]}"
        if i == 0:
            decl += " PRIMARY KEY"
        elif col in NOT_NULL:
            decl += " NOT NULL"
        out.append(decl)
    return ",\n    ".join(out)


def pending_rows(pending: str) -> int:
    """How many rows wait in the pending file ``pending`` and in files a fold moved
    aside (``/metrics``); 0 when there are none. Links and FIFOs are not read."""
    directory, base = os.path.split(pending)
    try:
        names = [n for n in os.listdir(directory) if n == base or n.startswith(base + ".")]
    except OSError:
        return 0
    count = 0
    for name in names:
        try:
            fd, _ = open_file(os.path.join(directory, name), os.O_RDONLY)
        except OSError:
            continue
        try:
            while chunk := os.read(fd, 1 << 20):
                count += chunk.count(b"\n[") + chunk.count(b"\n(")  # a line, either form
        finally:
            os.close(fd)
    return count


def fold_files(pending: str, insert: Callable[[list[tuple[object, ...]]], None]) -> int:
    """Fold the pending rows of ``pending`` (and files an interrupted fold left beside
    it) through ``insert`` (one transaction per file, upserting); return how many.

    The protocol of every backend (see the module doc): the file is renamed aside,
    its lock waited on for a writer that opened it before the rename, its rows
    inserted, and only then is it deleted: an ``insert`` that fails (the database
    away) leaves the file for the next fold. IndexFailure; IndexRefused naming a
    pending file that is not a regular file (left as it is, unread).
    """
    directory, base = os.path.split(pending)
    try:  # files an interrupted fold left behind, then the current one
        files = [f"{directory}/{n}" for n in os.listdir(directory) if n.startswith(base + ".")]
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise IndexFailure(f"cannot read {directory}: {exc.strerror or exc}") from None
    folded = 0
    refused: NotRegularError | None = None
    aside = f"{pending}.{os.getpid()}-{time.time_ns()}"
    try:
        mode = os.stat(pending, follow_symlinks=False).st_mode
        if (mode & 0o170000) != 0o100000:  # a planted link or FIFO: not even moved
            refused = NotRegularError(f"{pending} is {kind_of(mode)}, not a regular file")
        else:
            os.rename(pending, aside)
            files.append(aside)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise IndexFailure(f"cannot fold {pending}: {exc.strerror or exc}") from None
    for f in files:
        try:
            folded += _fold_file(f, insert)
        except NotRegularError as exc:
            refused = refused or exc
    if refused is not None:
        raise IndexRefused(f"cannot fold the index's pending rows: {refused}")
    return folded


def _fold_file(path: str, insert: Callable[[list[tuple[object, ...]]], None]) -> int:
    try:
        fd, _ = open_file(path, os.O_RDWR)
    except FileNotFoundError:
        return 0  # another fold took it
    except NotRegularError:
        raise
    except OSError as exc:
        raise IndexFailure(f"cannot fold {path}: {exc.strerror or exc}") from None
    try:
        # a writer that opened the file before it was renamed holds or wants this
        # lock: wait for its line; any later writer sees the name moved and goes
        os.lockf(fd, os.F_LOCK, 0)
        if os.fstat(fd).st_nlink == 0:
            return 0  # folded meanwhile by another fold
        rows = parse_pending(_read_fd(fd))
        if rows:
            insert(rows)
        os.unlink(path)
        return len(rows)
    except OSError as exc:
        raise IndexFailure(f"cannot fold {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _read_fd(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)
