"""One job per SOPInstanceUID at a time, and where that instance was last filed.

Two jobs filing the same SOPInstanceUID at once (two batch workers given two
versions of it, a sender retrying while its first C-STORE is still being filed)
would each read where the instance stood, each place their own copy and each
retire the same earlier copy: one of the new copies is left behind, unrecorded
(300 versions of one instance on two workers left 8-18 files). So the job holds
an exclusive lock on a file named for the SOP, beside the index, from placing
the instance to retiring its earlier copy (:func:`hold`). Jobs of different
SOPs never wait for each other; the kernel drops the lock when a process dies
(kill -9 leaves no stale lock).

The lock is ``os.lockf`` (a POSIX record lock, which also holds across NFS for
``batch --dask``), not ``flock``: ``fcntl`` is an extension module the
per-instance door would load for every instance (~0.2 ms). A POSIX lock belongs
to the process, so threads of one process (the receiver's associations) first
take an in-process lock on the same name, and only one file descriptor per
name is ever open in a process (closing any other would drop the lock).

The same file says where the SOP was last filed: one JSON object (the data
path, PatientID, Study- and SeriesInstanceUID, file name), rewritten by the job
as its last step before the commit (:meth:`SopHold.remember`). The image record
finds an earlier copy only when its series and file name are unchanged (a
corrected PatientName); this file finds it whatever changed (InstanceNumber,
SeriesInstanceUID). Why not the index: the per-instance door and a pooled
batch's workers write it as pending rows (core/index_rows.py), so asking it
"where is this SOP?" would load SQLite (a quarter of that door's start) and
scan every pending row; this file is already open for the lock, one ``pread``.
The file is a hint, never trusted alone: what it names is retired only after
the usual checks (inside the data folder, a regular file, holding this very
SOPInstanceUID).

Layout: ``<index>.sop/<2 hex digits>/<SOPInstanceUID>`` (the UID through
:func:`~.layout.safe_name`; 256 folders spread them), beside the index
(``dicom-repack-index.sqlite.sop/`` in the log folder by default): the files
belong with the index, the other record of where each SOP lives, and the log
folder otherwise holds exactly pypx's records. One small file per instance
filed; none with ``--no-index``, where nothing is serialised (see README).
"""

from __future__ import annotations

import _thread
import os

from . import jsonio
from .errors import RecordError, UnsafePathError
from .layout import safe_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .tree import Tree

__all__ = ["SOP_SUFFIX", "SopHold", "hold", "sop_root"]

#: the per-SOP files' folder is the index's path plus this
SOP_SUFFIX = ".sop"

#: more than any where-object this module writes
_READ_MAX = 1 << 16


class _Local:
    """The in-process lock on one name, and how many threads hold or wait for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        self.users = 0


#: name -> its in-process lock, while some thread holds or waits for it
_local: dict[str, _Local] = {}
_local_guard = _thread.allocate_lock()


def _enter(path: str) -> _Local:
    """Take the in-process lock on ``path`` (see the module doc)."""
    with _local_guard:
        entry = _local.get(path)
        if entry is None:
            entry = _local[path] = _Local()
        entry.users += 1
    entry.lock.acquire()
    return entry


def _leave(path: str, entry: _Local) -> None:
    entry.lock.release()
    with _local_guard:
        entry.users -= 1
        if entry.users == 0 and _local.get(path) is entry:
            del _local[path]


class SopHold:
    """The lock on one SOPInstanceUID (held until :meth:`release`) and its where-file."""

    __slots__ = ("_entry", "fd", "path", "sop")

    def __init__(self, fd: int, sop: str, path: str, entry: _Local) -> None:
        self.fd = fd
        self.sop = sop
        self.path = path
        self._entry = entry

    def earlier(self) -> dict[str, str] | None:
        """Where this SOP was last filed (``path``, ``PatientID``, ``StudyInstanceUID``,
        ``SeriesInstanceUID``, ``file``), or None (never, or unreadable)."""
        try:
            data = os.pread(self.fd, _READ_MAX, 0)
            obj = jsonio.loads(data.decode("utf-8", "surrogateescape")) if data else None
        except (OSError, UnicodeDecodeError, jsonio.JSONError):
            return None
        if not isinstance(obj, dict) or obj.get("sop") != self.sop:
            return None  # another SOP whose name came out the same (safe_name): not ours
        keys = ("path", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "file")
        if not all(isinstance(obj.get(k), str) for k in keys):
            return None
        return {k: str(obj[k]) for k in keys}

    def remember(self, path: str, values: dict[str, str], file_name: str, *, sync: bool) -> None:
        """Say where this SOP now stands (best effort: a hint, see the module doc)."""
        where = {
            "sop": self.sop,
            "path": path,
            "PatientID": values["PatientID"],
            "StudyInstanceUID": values["StudyInstanceUID"],
            "SeriesInstanceUID": values["SeriesInstanceUID"],
            "file": file_name,
        }
        data = jsonio.dumps(where, indent=None).encode("utf-8", "surrogateescape")
        try:
            os.pwrite(self.fd, data, 0)
            os.ftruncate(self.fd, len(data))
            if sync:
                os.fsync(self.fd)
        except OSError:
            pass

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock
            self.fd = -1
            _leave(self.path, self._entry)


def sop_root(index: str) -> Tree:
    """The folder of the per-SOP files of the index at ``index``, as a safe tree
    (no link planted below the index's folder is followed when making it)."""
    from .tree import Tree

    return Tree(os.path.dirname(os.path.abspath(index)), "index folder")


def hold(tree: Tree, index: str, sop: str, origin: str) -> SopHold:
    """Take the lock on ``sop`` beside ``index`` (waiting for another job of it);
    ``tree`` is :func:`sop_root` of it.

    Raises UnsafePathError for a link planted on the way, RecordError (naming
    ``origin``) if the file cannot be made or locked.
    """
    shard = f"{sum(sop.encode('utf-8', 'surrogateescape')) & 0xFF:02x}"
    path = f"{tree.root}/{os.path.basename(index)}{SOP_SUFFIX}/{shard}/{safe_name(sop)}"
    from .tree import NotRegularError, open_file

    entry = _enter(path)
    fd = -1
    try:
        with tree.open(os.path.dirname(path), origin) as folder:  # no link on the way
            fd, _ = open_file(
                os.path.basename(path), os.O_RDWR | os.O_CREAT, dir_fd=folder.fd, path=path
            )
        os.lockf(fd, os.F_LOCK, 0)
        return SopHold(fd, sop, path, entry)
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)
        _leave(path, entry)
        if isinstance(exc, NotRegularError):
            raise UnsafePathError(origin, str(exc)) from None
        if isinstance(exc, OSError):
            raise RecordError(
                origin, f"cannot lock {path}: {exc.strerror or exc}", errno=exc.errno
            ) from None
        raise
