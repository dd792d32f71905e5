"""Where a C-STORE's bytes go while they arrive: memory within a budget, else a spool file.

A received instance is kept in one ``bytearray`` (preamble, file meta, data set)
while the shared byte budget (:class:`~.limits.Share`) has room and the instance
is not larger than ``spill_above``; past either, what was received so far is
written to a temporary file in the spool folder and the rest is appended there.
The spool folder lies inside the data folder, so the finished file is filed
by a rename (the core's path source with ``move``), never copied again.

Memory held by unfinished data sets is therefore bounded by the budget across
all associations (and workers), whatever the senders announce or stall on.

The spool folder is opened without following a link (:meth:`.tree.Tree.folder_at`),
and every spool file is created, listed and removed relative to it: a link
planted in its place is refused (no spool file is written outside, the start-up
sweep removes nothing outside).
"""

from __future__ import annotations

import contextlib
import os

from ..core.tree import Tree, open_file
from .limits import Share

__all__ = ["SPOOL_DIR", "Incoming", "Spool"]

#: The spool folder's name inside the data folder (hidden: no layout produces it).
SPOOL_DIR = ".dicom-repack-incoming"
#: Bytes reserved from the budget at a time (fewer lock round trips per instance).
_GRAIN = 1 << 20


class Spool:
    """The temporary-file folder for instances that do not stay in memory."""

    def __init__(self, datadir: str) -> None:
        self.tree = Tree(datadir, "data folder")
        self.path = os.path.join(self.tree.root, SPOOL_DIR)

    def create(self) -> tuple[int, str]:
        """A new spool file, open for reading and writing: (fd, path).

        OSError (NotRegularError for a link in the spool folder's place) if it
        cannot be made.
        """
        for attempt in range(8):
            with self.tree.folder_at(self.path) as folder:
                while True:
                    name = f"{os.getpid()}-{os.urandom(6).hex()}.part"
                    try:
                        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL
                        fd, _ = open_file(
                            name, flags, 0o600, dir_fd=folder.fd, path=f"{self.path}/{name}"
                        )
                    except FileExistsError:
                        continue
                    except FileNotFoundError:
                        # another thread removed the (then empty) folder after we opened
                        # it (:meth:`tidy`): open it again, made anew
                        if attempt == 7:
                            raise
                        break
                    return fd, f"{self.path}/{name}"
        raise AssertionError("unreachable")  # pragma: no cover

    def remove(self, path: str) -> None:
        """Remove the spool file ``path`` (made by :meth:`create`), in the spool folder."""
        with self.tree.folder_at(self.path, create=False) as folder:
            os.unlink(os.path.basename(path), dir_fd=folder.fd)
        self.tidy()

    def tidy(self) -> None:
        """Remove the spool folder if it is empty, so that no folder rx-repack would not
        leave stays in the data folder once nothing is spooled.

        ``rmdir`` relative to the open data folder: it never follows a link (a link
        planted in the folder's place is not a folder: ENOTDIR, left alone) and
        removes nothing but an empty folder (another thread's spool file keeps it:
        ENOTEMPTY). A thread that opened the folder just before it went makes it
        anew (:meth:`create`).
        """
        with (
            contextlib.suppress(OSError),
            self.tree.folder_at(self.tree.root, create=False) as root,
        ):
            os.rmdir(SPOOL_DIR, dir_fd=root.fd)

    def sweep(self) -> int:
        """Remove spool files left by processes that no longer run (after a kill -9).

        Returns how many were removed. Names start with the writer's pid. A spool
        folder that is a link (or missing) is left alone.
        """
        removed = 0
        try:
            with self.tree.folder_at(self.path, create=False) as folder:
                for name in os.listdir(folder.fd):
                    if not name.endswith(".part"):
                        continue
                    pid_text = name.split("-", 1)[0]
                    if pid_text.isdigit() and _alive(int(pid_text)):
                        continue
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=folder.fd)
                        removed += 1
        except OSError:
            return 0
        self.tidy()
        return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Incoming:
    """One instance being received. Call :meth:`add` per fragment, then read
    :attr:`buffer` or :attr:`path` (exactly one is set once :meth:`finish` ran),
    and always :meth:`close` (releases the budget, removes an unfiled spool file).
    """

    __slots__ = (
        "_fd",
        "_reserved",
        "buffer",
        "error",
        "path",
        "share",
        "size",
        "spill_above",
        "spool",
    )

    def __init__(self, header: bytes, share: Share, spool: Spool, spill_above: int) -> None:
        self.share = share
        self.spool = spool
        self.spill_above = spill_above
        self.buffer: bytearray | None = bytearray()
        self.path: str | None = None
        self.size = 0
        #: why the bytes could not be kept (the spool file failed); the rest is discarded
        self.error: str | None = None
        self._fd = -1
        self._reserved = 0
        self.add(header)

    @property
    def in_memory(self) -> int:
        """Bytes of the budget this instance holds now."""
        return self._reserved

    def add(self, fragment: bytes | memoryview) -> None:
        n = len(fragment)
        self.size += n
        if self.error is not None:
            return
        if self.buffer is not None:
            need = len(self.buffer) + n
            if need <= self.spill_above and (
                need <= self._reserved or self._grow(need - self._reserved)
            ):
                self.buffer += fragment
                return
            self._spill()
            if self.error is not None:
                return
        try:
            _write_all(self._fd, fragment)
        except OSError as exc:
            self._fail(f"cannot write {self.path}: {exc.strerror or exc}")

    def _grow(self, at_least: int) -> bool:
        # never more than spill_above in all: a reservation is what may be held
        step = max(at_least, min(_GRAIN, self.spill_above - self._reserved))
        if not self.share.reserve(step):
            if step == at_least or not self.share.reserve(at_least):
                return False
            step = at_least
        self._reserved += step
        return True

    def _spill(self) -> None:
        """Move what is held in memory to a spool file; from now on, append there."""
        assert self.buffer is not None
        try:
            self._fd, self.path = self.spool.create()
            _write_all(self._fd, self.buffer)
        except OSError as exc:
            self._fail(f"cannot spool to {self.spool.path}: {exc.strerror or exc}")
            return
        self.buffer = None
        self._release()

    def _fail(self, why: str) -> None:
        self.error = why
        self.close()

    def finish(self) -> None:
        """The last fragment arrived. A spool file stays open, for :meth:`take`."""

    def take(self) -> tuple[int, os.stat_result]:
        """The finished spool file, open at its start, and its fstat; the caller closes it.

        The job files it from this descriptor (never opening the spool path again,
        where a link may have been planted meanwhile).
        """
        fd, self._fd = self._fd, -1
        if fd < 0:
            raise OSError(9, f"{self.path}: the spool file is not open")
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            return fd, os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        """Release memory and budget; remove the spool file unless it was filed (moved)."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.spool.remove(self.path)
        self.buffer = None
        self._release()

    def _release(self) -> None:
        if self._reserved:
            self.share.release(self._reserved)
            self._reserved = 0


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
