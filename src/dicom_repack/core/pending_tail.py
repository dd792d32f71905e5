"""The pending rows as a process that looks many times reads them (:class:`PendingTail`).

A batch worker, a receiver or the SQLite and PostgreSQL indexes ask "where was
this SOP filed?" for every instance; this keeps what it has read of the pending
file and reads only what was appended since. The per-instance door looks once:
:func:`.index_rows.last_pending` reads the file once, and this module (its class,
~65,000 instructions to make) is not loaded there.
"""

from __future__ import annotations

import os
from _json import scanstring as _scanstring

from .index_rows import line_start, old_start, parse_pending, row_of_line
from .tree import open_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["PendingTail"]


class PendingTail:
    """The pending rows, each read once: where a SOPInstanceUID's newest row is.

    A process that files many instances (a batch worker, a receiver) asks
    "where was this SOP filed?" for each; only what was appended since its last
    look is read (a fold renames the file away: a new file starts over). The
    first look searches the file once, a piece at a time (the per-instance door
    looks once); from the second on, each new line is keyed as it is read, so a
    look costs a dict lookup however long the file has grown (a search of every
    look cost a batch worker ~20 us an instance near :data:`.index_rows.FOLD_AT`). Only a row
    found is read back and parsed.

    A line is kept as where it starts in the file, keyed by its SOPInstanceUID's
    hash: ~100 bytes a row, not a copy of the line (~600): what a process holds does
    not grow with the line, and a watch worker may let rows wait longer between
    folds. A row read back whose UID is not the one asked (two UIDs of one hash) is
    found by a search of the file instead.

    When a fold has moved the file away, its rows reach the index only once that
    fold commits: until the next move they are kept aside (:meth:`previous`: the
    moved file stays open, read through its descriptor, with those of any file a
    fold holds aside at that moment, read then: one listing of the folder per fold,
    not per look).
    """

    __slots__ = ("_fd", "_ino", "_keys", "_offset", "_prev", "path")

    def __init__(self, pending: str) -> None:
        self.path = pending
        self._ino = -1
        self._fd = -1
        self._offset = 0  # bytes of whole lines keyed in the current file
        self._keys: dict[int, int] | None = None  # None until the second look
        #: the files the last fold moved away: (descriptor, keys, bytes keyed), oldest first
        self._prev: list[tuple[int, dict[int, int], int]] = []

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._close_prev()

    def last(self, sop: str) -> tuple[object, ...] | None:
        """The newest pending row of ``sop``, or None."""
        if self._prev:
            self._drop_committed()
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except OSError:  # none (folded): the folded index knows the rest
            if self._fd >= 0:
                self._retire()
            return None
        if st.st_ino != self._ino or st.st_size < self._offset:
            if self._fd >= 0:
                self._retire()  # another file (a fold moved the old one away): start over
            try:
                self._fd, st = open_file(self.path, os.O_RDONLY)
            except OSError:  # gone meanwhile, or refused (a link, a FIFO: never read)
                return None
            self._ino = st.st_ino
        if self._keys is None:  # the first look: one search, nothing keyed
            self._keys = {}
            return _search(self._fd, st.st_size, sop)
        if st.st_size > self._offset:
            self._offset = _key_file(self._fd, self._offset, st.st_size, self._keys)
        return _row_at(self._fd, self._keys, self._offset, sop)

    def previous(self, sop: str) -> tuple[object, ...] | None:
        """The newest row of ``sop`` in the files the last fold seen moved away (perhaps
        not committed yet), or None."""
        for fd, keys, end in reversed(self._prev):
            row = _row_at(fd, keys, end, sop)
            if row is not None:
                return row
        return None

    def _drop_committed(self) -> None:
        """Close the files moved away whose fold has committed and deleted them (their rows
        are in the index now): no deleted file is held open longer than one look."""
        kept = []
        for entry in self._prev:
            try:
                gone = os.fstat(entry[0]).st_nlink == 0
            except OSError:
                gone = True
            if gone:
                os.close(entry[0])
            else:
                kept.append(entry)
        self._prev = kept

    def _close_prev(self) -> None:
        for fd, _keys, _end in self._prev:
            os.close(fd)
        self._prev = []

    def _retire(self) -> None:
        """The file read so far was moved away by a fold: keep it open with its rows keyed
        (to its end) and those of the files held aside now."""
        self._close_prev()
        keys = self._keys or {}
        try:
            size = os.fstat(self._fd).st_size
            end = _key_file(self._fd, self._offset, size, keys) if size > self._offset else size
        except OSError:
            end = self._offset
        kept = [(self._fd, keys, end)]
        self._fd = -1
        try:
            folder, base = os.path.split(self.path)
            for name in os.listdir(folder):
                if name.startswith(base + "."):
                    try:
                        fd, st = open_file(os.path.join(folder, name), os.O_RDONLY)
                    except OSError:
                        continue  # committed and deleted meanwhile, or not ours to read
                    if st.st_ino == self._ino:
                        os.close(fd)
                        continue
                    aside: dict[int, int] = {}
                    try:
                        kept.append((fd, aside, _key_file(fd, 0, st.st_size, aside)))
                    except OSError:
                        os.close(fd)
        except OSError:
            pass
        self._prev = kept
        self._ino, self._offset = -1, 0
        if self._keys is not None:
            self._keys = {}


#: how much of a pending file a look reads at a time (a search, keying new lines)
_PIECE = 256 << 10


def _pieces(fd: int, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) of whole lines of ``fd`` from ``start`` to at most ``end``, a piece
    at a time; a last line without its newline (being written) is left out."""
    rest = b""
    at = start
    while at < end:
        chunk = os.pread(fd, min(_PIECE, end - at), at)
        if not chunk:
            return
        at += len(chunk)
        data = rest + chunk
        cut = data.rfind(b"\n") + 1
        if cut:
            yield at - len(data), data[:cut]
        rest = data[cut:]


def _key_file(fd: int, start: int, end: int, keys: dict[int, int]) -> int:
    """Key each whole line of ``fd`` from ``start`` by its SOPInstanceUID's hash, as where
    the line starts (later lines win); return where the whole lines end."""
    done = start
    for at, data in _pieces(fd, start, end):
        for line in data.split(b"\n"):
            if line[:2] == b'["':
                try:
                    sop = _scanstring(line.decode("ascii"), 2)[0]
                except (ValueError, UnicodeDecodeError):
                    sop = None  # torn or foreign: parse_pending would skip it too
                if sop is not None:
                    keys[hash(sop)] = at
            elif line[:1] == b"(":  # an old line
                for row in parse_pending(line):
                    if isinstance(row[0], str):
                        keys[hash(row[0])] = at
            at += len(line) + 1
        done = at - 1  # a piece ends with a newline: split's last part is the b"" after it
    return done


def _row_at(fd: int, keys: dict[int, int], end: int, sop: str) -> tuple[object, ...] | None:
    """The row of ``sop`` where ``keys`` say its line is; a search of the file when that
    line is another UID's (a shared hash); None when not keyed."""
    at = keys.get(hash(sop))
    if at is None:
        return None
    size = 1024
    while True:
        data = os.pread(fd, size, at)
        line = data.partition(b"\n")[0]
        if len(line) < len(data) or len(data) < size:
            break
        size *= 4
    row = row_of_line(line)
    if row is not None and row[0] == sop:
        return row
    return _search(fd, end, sop)


def _search(fd: int, end: int, sop: str) -> tuple[object, ...] | None:
    """The last row of ``sop`` among the whole lines of ``fd`` before ``end`` (either
    form), or None: a piece at a time."""
    new, old = b"\n" + line_start(sop), old_start(sop)
    found = None
    for _at, data in _pieces(fd, 0, end):
        buf = b"\n" + data  # a piece starts at a line: its own newline may be the last's
        at = max(buf.rfind(new), buf.rfind(old))
        if at >= 0:
            found = bytes(buf[at + 1 : buf.find(b"\n", at + 1)])
    return row_of_line(found)
