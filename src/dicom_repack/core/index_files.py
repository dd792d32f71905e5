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
    from collections.abc import Callable, Iterable, Iterator, Mapping

__all__ = [
    "COLUMN_KINDS",
    "NOT_NULL",
    "READ_AT_ONCE",
    "PendingRows",
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


def fold_files(pending: str, insert: Callable[[Iterable[tuple[object, ...]]], None]) -> int:
    """Fold the pending rows of ``pending`` (and files an interrupted fold left beside
    it) through ``insert`` (one transaction per file, upserting); return how many.
    ``insert`` gets the rows as an iterable (:class:`PendingRows`) read in bounded
    pieces as it goes: never the whole file at once, whatever its size.

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


#: how much of a pending file a fold reads and parses at a time: its memory is bounded
#: by this, not by how long the file grew (a receiver's fold after an outage, a watch
#: worker's); the rows still go in as one transaction
READ_AT_ONCE = 256 << 10


class PendingRows:
    """The rows of one pending file, read from its start each time they are iterated, in
    pieces of :data:`READ_AT_ONCE` (an ``insert`` retried after a busy database reads
    them again); :attr:`count`: the rows of the last whole pass."""

    __slots__ = ("count", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.count: int | None = None

    def __iter__(self) -> Iterator[tuple[object, ...]]:
        self.count = None
        count, offset, rest = 0, 0, b""
        while chunk := os.pread(self.fd, READ_AT_ONCE, offset):
            offset += len(chunk)
            data = rest + chunk
            cut = data.rfind(b"\n") + 1  # whole lines; a line longer than a piece waits
            rest = data[cut:]
            rows = parse_pending(data[:cut])
            del data
            count += len(rows)
            yield from rows
        rows = parse_pending(rest)  # the last line, if its newline never came (torn)
        count += len(rows)
        yield from rows
        self.count = count


def _fold_file(path: str, insert: Callable[[Iterable[tuple[object, ...]]], None]) -> int:
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
        st = os.fstat(fd)
        if st.st_nlink == 0:
            return 0  # folded meanwhile by another fold
        rows = PendingRows(fd)
        if st.st_size:
            insert(rows)
            if rows.count is None:  # an insert that did not read them all
                rows.count = sum(1 for _ in rows)
        os.unlink(path)
        return rows.count or 0
    except OSError as exc:
        raise IndexFailure(f"cannot fold {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
