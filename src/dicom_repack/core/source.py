"""Where an instance comes from, and how it is put in place and let go.

A source object is what the job (:mod:`.repack`) files. Each kind knows how to

* read its header (the file is opened and read **once**: a typical instance is
  read whole and parsed, filed and dumped from those bytes; a large one is mapped,
  so only its element headers are touched, and copied kernel-side from the same
  open file),
* ``place`` itself at its destination (never touching the source),
* ``commit``: let the source go (remove it, for a move) -- called only after the
  placed file and its records are complete,
* ``close`` whatever it holds open.

Undo is the :class:`~.place.Placed`'s: delete what was placed.

Kinds: :class:`PathSource` (a file; copied, or moved with ``move``) and
:class:`BufferSource` (a complete Part 10 file in memory, as the receiver has
it). A path source that is a symbolic link is read through: its bytes are filed
(never a link in the tree), its target is never removed, and with ``move`` only
the link itself is removed, at commit. A move on one filesystem places by hard
link (no byte copied; a kill at any moment leaves the source, or the instance
fully filed, and a re-run finishes it); across filesystems it copies, fsyncs and
names the copy first.
"""

from __future__ import annotations

import os

from .errors import SourceError
from .header import open_regular, read_all, read_header
from .place import copy_fd, link_fd, place_bytes

TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap
    from collections.abc import Callable, Collection
    from typing import Protocol

    from .header import Header
    from .place import Placed
    from .tree import Folder

    class Source(Protocol):
        """What the job needs of a source (see the module docstring)."""

        origin: str

        def header(self, keywords: Collection[str]) -> Header: ...
        def place(self, folder: Folder, name: str, *, sync: bool) -> Placed: ...
        def commit(self, placed: Placed) -> None: ...
        def dump_source(self, placed: Placed) -> str | bytes | memoryview: ...
        def close(self) -> None: ...


__all__ = ["BufferSource", "PathSource"]

#: Files up to this size are read whole (one read; the copy is written from those
#: bytes); larger ones (multi-frame, GBs) are mapped and copied kernel-side.
READ_WHOLE_MAX = 1 << 20

#: link() failures that mean "no hard link here; copy instead" (other
#: filesystem, protected_hardlinks, too many links, no hard links at all)
_COPY_INSTEAD: frozenset[int] | None = None


def _copy_instead(exc: OSError) -> bool:
    global _COPY_INSTEAD
    if _COPY_INSTEAD is None:
        import errno

        _COPY_INSTEAD = frozenset(
            (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.EACCES)
        )
    return exc.errno in _COPY_INSTEAD


class PathSource:
    """A Part 10 file at ``path``; ``move`` removes it once filed and recorded.

    Call :meth:`header` first (it opens the file), :meth:`close` always.
    A caller that already holds the file open (the receiver's spool file, made
    in the data folder without following a link) passes it as ``opened`` (fd at
    offset 0, and its fstat; closed here) and how to let it go as ``remove``
    (instead of removing ``path`` by name), so the path is never opened again.
    ``origin`` names the instance in its index row, NDJSON line and errors when
    that is not ``path`` (a receiver's spool file: ``dicom://AE@host:port/UID``).
    """

    __slots__ = (
        "_map",
        "_remove",
        "_view",
        "data",
        "fd",
        "move",
        "origin",
        "path",
        "stat",
        "symlink",
    )

    def __init__(
        self,
        path: str,
        *,
        move: bool = False,
        opened: tuple[int, os.stat_result] | None = None,
        remove: Callable[[], None] | None = None,
        origin: str | None = None,
    ) -> None:
        self.path = path
        self.origin = path if origin is None else origin
        self.move = move
        self.fd = -1
        if opened is not None:
            self.fd, self.stat = opened
        self._remove = remove
        self.data: bytes | None = None
        self.symlink = False
        self._map: mmap.mmap | None = None
        self._view: memoryview | None = None

    def _open(self) -> None:
        """Open the source (never a blocking open: a FIFO is refused, header.open_regular).

        Opened first without following a symbolic link, which tells a link apart
        at no extra cost; a link is then opened through (its bytes are filed).
        """
        if self.fd >= 0:
            return  # opened by the caller
        path = self.path
        try:
            try:
                self.fd, self.stat = open_regular(path, follow_symlinks=False)
            except OSError as exc:
                import errno

                if exc.errno != errno.ELOOP:
                    raise
                self.symlink = True
                self.fd, self.stat = open_regular(path)
        except OSError as exc:
            raise SourceError(
                path, f"cannot read: {exc.strerror or exc}", errno=exc.errno
            ) from None

    def header(self, keywords: Collection[str]) -> Header:
        """Open and read the file (once) and parse the elements ``keywords``."""
        self._open()
        size = self.stat.st_size
        try:
            if size <= READ_WHOLE_MAX:
                self.data = data = read_all(self.fd, size)
                return read_header(data, keywords, name=self.origin)
            import mmap

            self._map = mm = mmap.mmap(self.fd, size, access=mmap.ACCESS_READ)
            self._view = view = memoryview(mm)
            return read_header(view, keywords, name=self.origin)
        except OSError as exc:
            raise SourceError(
                self.origin, f"cannot read: {exc.strerror or exc}", errno=exc.errno
            ) from None

    def place(self, folder: Folder, name: str, *, sync: bool) -> Placed:
        """Put the instance at ``name`` in ``folder`` (OSError if it cannot be)."""
        if self.move and not self.symlink:
            try:
                return link_fd(self.fd, self.stat, folder, name, self.path)
            except OSError as exc:
                if not _copy_instead(exc):
                    raise
            sync = True  # the source is removed once this copy is named: make it durable
        if self.data is not None:
            return place_bytes(self.data, folder, name, sync=sync)
        return copy_fd(self.fd, self.stat.st_size, folder, name, sync=sync, what=self.origin)

    def commit(self, placed: Placed) -> None:
        """Let the source go: with ``move``, remove its name (the link, for a symbolic link)."""
        if not self.move or placed.same_entry:
            return  # copying, or the source is the filed file itself: never remove it
        try:
            if self._remove is not None:
                self._remove()
            else:
                os.unlink(self.path)
        except FileNotFoundError:
            pass  # removed meanwhile (another run finished it): nothing left to let go
        except OSError as exc:
            # filed and recorded, but the input folder will not let the source go
            # (read-only, immutable): say so in one line; nothing is undone, and a
            # re-run files it again (same path, same bytes) and retries the removal
            raise SourceError(
                self.origin,
                f"filed as {placed.path}, but the source cannot be removed: {exc.strerror or exc}",
            ) from None  # no errno: the source's fault, not the destination's (a batch goes on)

    def dump_source(self, placed: Placed) -> str | bytes | memoryview:
        """What the series dump reads: the bytes (or the mapping) already open."""
        if self.data is not None:
            return self.data
        return self._view if self._view is not None else placed.path

    def close(self) -> None:
        if self._view is not None:
            try:
                self._view.release()
            except BufferError:
                pass  # still exported somewhere: released with its last user
            self._view = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass  # a view still held by a traceback: the map goes with it
            self._map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class BufferSource:
    """A complete Part 10 file held in memory (preamble, 'DICM', meta, dataset).

    Written once, straight to its final path; nothing to let go at commit.
    """

    __slots__ = ("data", "origin")

    def __init__(self, data: bytes | memoryview, origin: str = "<network>") -> None:
        self.data = data
        self.origin = origin

    def header(self, keywords: Collection[str]) -> Header:
        return read_header(self.data, keywords, name=self.origin)

    def place(self, folder: Folder, name: str, *, sync: bool) -> Placed:
        return place_bytes(self.data, folder, name, sync=sync)

    def commit(self, placed: Placed) -> None:
        pass

    def dump_source(self, placed: Placed) -> str | bytes | memoryview:
        return self.data

    def close(self) -> None:
        pass
