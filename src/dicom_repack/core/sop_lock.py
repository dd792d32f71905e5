"""One job per SOPInstanceUID at a time: a byte-range lock beside the index.

Two jobs filing the same SOPInstanceUID at once (two batch workers given two
versions of it, a sender retrying while its first C-STORE is still being filed)
would each read where the instance stood, each place their own copy and each
retire the same earlier copy: one of the new copies is left behind, unrecorded
(300 versions of one instance on two workers left 8-18 files). So the job holds
an exclusive lock keyed on the SOP from looking up where it stood to retiring
its earlier copy (:func:`hold`). Jobs of different SOPs never wait for each
other; the kernel drops the lock when a process dies (kill -9 leaves no stale
lock).

Where: one file beside the index, ``<index>.sop-lock``, created once and never
written. Each SOP locks one byte of it, at an offset hashed from its UID (FNV-1a
over a 2^30-byte range: two SOPs share a byte about once in a billion pairs, and
then merely wait for each other). Nothing is created per instance: a file per
SOP cost a batch an inode per instance (+0.18 ms CPU each, +15%, measured in
docs/benchmarks.md) and would leave millions of small files in the log folder.
Where the SOP was filed before is the index's to say (``where`` in
:mod:`.index` and :mod:`.index_rows`).

The lock is ``os.lockf`` (a POSIX record lock, which also holds across NFS for
``batch --dask``), not ``fcntl``: that extension module costs the per-instance
door 0.25-1.3 ms to import. A POSIX lock belongs to the process, and closing any
descriptor of the file drops every lock the process holds on it; so a process
keeps one descriptor on the lock file for its life, threads of one process first
take an in-process lock on the same byte, and ``lockf`` (which locks from the
file position) runs with the position set under a mutex. A byte held by another
process is waited for by retrying ``F_TLOCK`` outside the mutex, never by
blocking inside it (two processes' threads could otherwise deadlock).
"""

from __future__ import annotations

import _thread
import os
import time

from .errors import RecordError, UnsafePathError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["LOCK_SUFFIX", "hold", "lock_path"]

#: the lock file is the index's path plus this
LOCK_SUFFIX = ".sop-lock"

#: offsets a SOP's byte is hashed into
_SPAN = 1 << 30

#: the descriptor this process keeps on each lock file (see the module doc)
_FILES: dict[str, int] = {}
#: positions a descriptor and locks or unlocks, one thread at a time
_MUTEX = _thread.allocate_lock()


#: bytes taken by threads of this process: (lock file, offset) -> [its in-process lock,
#: how many threads want it] (a list, not a class: a class costs the per-instance door
#: ~65,000 instructions to make at every start)
_LOCAL: dict[tuple[str, int], list[Any]] = {}


def lock_path(index: str) -> str:
    """The lock file of the index at ``index``."""
    return os.path.abspath(index) + LOCK_SUFFIX


def _offset(sop: str) -> int:
    """The byte of the lock file that stands for ``sop`` (FNV-1a, 32 bits)."""
    h = 0x811C9DC5
    for b in sop.encode("utf-8", "surrogateescape"):
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h % _SPAN


def _enter(key: tuple[str, int]) -> list[Any]:
    """Take the in-process lock on ``key`` (waiting for another thread of this SOP)."""
    with _MUTEX:
        entry = _LOCAL.get(key)
        if entry is None:
            entry = _LOCAL[key] = [_thread.allocate_lock(), 0]
        entry[1] += 1
    entry[0].acquire()
    return entry


def _leave(key: tuple[str, int], entry: list[Any]) -> None:
    entry[0].release()
    with _MUTEX:
        entry[1] -= 1
        if entry[1] == 0 and _LOCAL.get(key) is entry:
            del _LOCAL[key]


def _descriptor(path: str, origin: str) -> int:
    """This process's descriptor on the lock file at ``path``, opened (created) once: in
    the index's folder, without following a link, a regular file only."""
    fd = _FILES.get(path)
    if fd is not None:
        return fd
    from .tree import NotRegularError, Tree, open_file

    folder_path, name = os.path.split(path)
    try:
        with Tree(folder_path, "index folder").folder_at(folder_path) as folder:
            fd, _ = open_file(name, os.O_RDWR | os.O_CREAT, dir_fd=folder.fd, path=path)
    except NotRegularError as exc:
        raise UnsafePathError(origin, str(exc)) from None
    with _MUTEX:
        kept = _FILES.setdefault(path, fd)
    if kept != fd:  # another thread opened it meanwhile: keep one (closing ours drops no lock)
        os.close(fd)
    return kept


def _releaser(fd: int, key: tuple[str, int], entry: list[Any]) -> Callable[[], None]:
    """The function that lets the byte ``key`` go (a closure, not a class: a class costs
    the per-instance door ~65,000 instructions to make at every start); a second call
    does nothing."""
    held = [entry]

    def release() -> None:
        if not held:
            return
        held.clear()
        try:
            with _MUTEX:
                os.lseek(fd, key[1], os.SEEK_SET)
                os.lockf(fd, os.F_ULOCK, 1)
        except OSError:
            pass  # the descriptor is gone with its locks
        _leave(key, entry)

    return release


def hold(index: str, sop: str, origin: str) -> Callable[[], None]:
    """Take the lock on ``sop`` for the index at ``index`` (waiting for another job of it);
    returns the function that releases it.

    Raises UnsafePathError for a link (or FIFO, ...) planted at the lock file's
    name, RecordError (naming ``origin``) if it cannot be made or locked.
    """
    path = lock_path(index)
    key = (path, _offset(sop))
    entry = _enter(key)
    try:
        fd = _descriptor(path, origin)
        delay = 0.0005
        while True:
            with _MUTEX:
                os.lseek(fd, key[1], os.SEEK_SET)
                try:
                    os.lockf(fd, os.F_TLOCK, 1)
                    break
                except (BlockingIOError, PermissionError):  # another process holds it
                    pass
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return _releaser(fd, key, entry)
    except BaseException as exc:
        _leave(key, entry)
        if isinstance(exc, OSError) and not isinstance(exc, UnsafePathError):
            raise RecordError(
                origin, f"cannot lock {path}: {exc.strerror or exc}", errno=exc.errno
            ) from None
        raise
