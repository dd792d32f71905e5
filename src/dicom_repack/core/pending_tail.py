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

from .index_rows import find_row, parse_pending, row_of_line
from .tree import open_file

__all__ = ["PendingTail"]


class PendingTail:
    """The pending rows, each read once: where a SOPInstanceUID's newest row is.

    A process that files many instances (a batch worker, a receiver) asks
    "where was this SOP filed?" for each; only what was appended since its last
    look is read (a fold renames the file away: a new file starts over). The
    first look searches the bytes once (``rfind`` of the line's start: the
    per-instance door looks once); from the second on, each new line is keyed
    by its SOPInstanceUID as it is read, so a look costs a dict lookup however
    long the file has grown (a search of every look cost a batch worker ~20 us
    an instance near :data:`.index_rows.FOLD_AT`). Only a row found is parsed.

    When a fold has moved the file away, its rows reach the index only once that
    fold commits: until the next move they are kept aside (:meth:`previous`), with
    those of any file a fold holds aside at that moment, read then (one listing of
    the folder per fold, not per look).
    """

    __slots__ = ("_buf", "_fd", "_ino", "_offset", "_prev", "_rows", "path")

    def __init__(self, pending: str) -> None:
        self.path = pending
        self._ino = -1
        self._fd = -1
        self._offset = 0  # bytes of whole lines read from the current file
        self._buf = bytearray()  # read, not keyed yet
        self._rows: dict[str, bytes] | None = None  # None until the second look
        self._prev: dict[str, bytes] = {}  # the rows of the files the last fold moved away

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def last(self, sop: str) -> tuple[object, ...] | None:
        """The newest pending row of ``sop``, or None."""
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
        if st.st_size > self._offset:
            self._read_more(st.st_size)
        if self._rows is None:  # the first look: one search, nothing keyed
            self._rows = {}
            return find_row(self._buf, sop)
        if self._buf:
            _key_lines(self._buf, self._rows)
            self._buf = bytearray()
        return row_of_line(self._rows.get(sop))

    def previous(self, sop: str) -> tuple[object, ...] | None:
        """The newest row of ``sop`` in the files the last fold seen moved away (perhaps
        not committed yet), or None."""
        return row_of_line(self._prev.get(sop))

    def _read_more(self, size: int) -> None:
        data = os.pread(self._fd, size - self._offset, self._offset)
        whole = data[: data.rfind(b"\n") + 1]  # whole lines: the rest is being written
        self._buf += whole
        self._offset += len(whole)

    def _retire(self) -> None:
        """The file read so far was moved away by a fold: keep its rows (read to its end
        through the open descriptor) and those of the files held aside now, keyed."""
        kept: dict[str, bytes] = dict(self._rows or {})
        try:
            size = os.fstat(self._fd).st_size
            if size > self._offset:
                self._read_more(size)
            _key_lines(self._buf, kept)
            folder, base = os.path.split(self.path)
            for name in os.listdir(folder):
                if name.startswith(base + "."):
                    try:
                        fd, st = open_file(os.path.join(folder, name), os.O_RDONLY)
                    except OSError:
                        continue  # committed and deleted meanwhile, or not ours to read
                    try:
                        if st.st_ino != self._ino:
                            data = os.pread(fd, st.st_size, 0)
                            _key_lines(bytearray(data[: data.rfind(b"\n") + 1]), kept)
                    finally:
                        os.close(fd)
        except OSError:
            pass
        self._prev = kept
        self.close()
        self._ino, self._offset, self._buf = -1, 0, bytearray()
        if self._rows is not None:
            self._rows = {}


def _key_lines(data: bytearray, rows: dict[str, bytes]) -> None:
    """Key each line of ``data`` by its SOPInstanceUID in ``rows`` (later lines win)."""
    for line in bytes(data).split(b"\n"):
        if line[:2] == b'["':
            try:
                sop = _scanstring(line.decode("ascii"), 2)[0]
            except (ValueError, UnicodeDecodeError):
                continue  # torn or foreign: parse_pending would skip it too
            rows[sop] = line
        elif line[:1] == b"(":  # an old line
            for row in parse_pending(line):
                if isinstance(row[0], str):
                    rows[row[0]] = line
