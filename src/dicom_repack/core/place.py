"""Put a file at its destination so that nobody ever sees half of it.

Three ways in, one result (a :class:`Placed` that can be undone):

* :func:`place_bytes` writes bytes held in memory;
* :func:`copy_fd` copies an open file (kernel-side, ``sendfile``);
* :func:`link_fd` gives an open file a second name in the tree (a hard link: the
  first half of a move on one filesystem; the source is removed later, by the job,
  once the records are written).

A new file is written unnamed (Linux ``O_TMPFILE``) or under a hidden temporary
name in the destination folder, and only given its real name once complete. A
second copy of the same instance replaces the first atomically (temporary name,
then rename), so it ends as one file. The source is never touched here.

Everything happens relative to an open :class:`~.tree.Folder` (``openat``,
``linkat``, ``renameat``, ``unlinkat``), the folder :meth:`.tree.Tree.open`
walked to without following a link: a link planted on the way after that walk
changes nothing, and a link or FIFO planted at the file's own name is replaced
(a rename replaces the name, never writes through it), never opened.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .tree import Folder

__all__ = ["Placed", "copy_fd", "link_fd", "place_bytes", "temp_name"]


class Placed:
    """What placing a file did, and how to take it back.

    ``stat`` is the placed file's stat; ``nlink`` the link count it will have once
    the job is done (a fresh copy has 1; a hard link to a source that the job will
    remove keeps the source's count). ``replaced`` is True when something already
    stood at ``path`` (an earlier copy of the same instance, or this very file):
    :meth:`undo` then leaves ``path`` alone, so undoing never removes an earlier,
    recorded copy. ``same_entry`` is True when ``path`` *is* the source (a run over
    the data tree itself): the source must then never be removed. ``dir_fd`` is
    the folder it was placed in (open while the job runs; :meth:`undo` removes the
    name there) and ``name`` its name in it.
    """

    __slots__ = ("dir_fd", "name", "nlink", "path", "replaced", "same_entry", "stat")

    def __init__(
        self,
        folder: Folder,
        name: str,
        stat: os.stat_result,
        *,
        replaced: bool,
        nlink: int = 1,
        same_entry: bool = False,
    ) -> None:
        self.dir_fd = folder.fd
        self.name = name
        self.path = f"{folder.path}/{name}"
        self.stat = stat
        self.replaced = replaced
        self.nlink = nlink
        self.same_entry = same_entry

    def undo(self) -> None:
        """Delete what was placed (never what stood there before); its folder is still open."""
        if not self.replaced:
            _unlink_quietly(self.dir_fd, self.name)


_counter = 0

#: Linux's O_TMPFILE: an unnamed file in the destination folder, named with one
#: link() once complete: one directory operation instead of a create and a
#: rename (file creation dominates the batch door's I/O), and a crash leaves no
#: temporary file behind. Where the kernel or filesystem refuses it, a hidden
#: temporary name is used instead.
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_tmpfile_works = _O_TMPFILE != 0 and os.path.isdir("/proc/self/fd")

#: An unnamed file has no path; "" stands for it where a temporary path would be.
_UNNAMED = ""


def temp_name(name: str) -> str:
    """A hidden, unique temporary name for a file beside ``name`` (same folder).

    The name is cut so that the temporary name, too, stays within NAME_MAX.
    """
    global _counter
    _counter += 1
    return f".{name[:200]}.{os.getpid()}.{_counter}.tmp"


def _unlink_quietly(dir_fd: int, name: str) -> None:
    if name == _UNNAMED:
        return
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def _open_new(folder: Folder, name: str) -> tuple[str, int]:
    """Open a new file nobody can see yet: (temporary name, or _UNNAMED, and its fd)."""
    global _tmpfile_works
    flags = os.O_WRONLY | os.O_CLOEXEC
    if _tmpfile_works:
        try:
            return _UNNAMED, os.open(".", _O_TMPFILE | flags, 0o644, dir_fd=folder.fd)
        except IsADirectoryError:
            _tmpfile_works = False  # a kernel that does not know O_TMPFILE
        except OSError as exc:
            import errno

            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            _tmpfile_works = False  # a filesystem that does not support it
    tmp = temp_name(name)
    fd = os.open(tmp, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=folder.fd)
    return tmp, fd


_proc_fds: tuple[int, int] | None = None


def _link_fd(fd: int, dir_fd: int, dst: str) -> None:
    """Give the file open as ``fd`` the (further) name ``dst`` in the folder ``dir_fd``
    (FileExistsError if taken).

    ``os.link("/proc/self/fd/N", dst)`` would call link(), which links the
    /proc symlink itself; linkat() with AT_SYMLINK_FOLLOW, which os.link uses
    when given a src_dir_fd, links the file it points to: exactly the inode that
    is open, whatever its path has become meanwhile. The /proc/self/fd folder is
    opened once per process (a fork has its own).
    """
    global _proc_fds
    pid = os.getpid()
    if _proc_fds is None or _proc_fds[0] != pid:
        _proc_fds = (pid, os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    os.link(str(fd), dst, src_dir_fd=_proc_fds[1], dst_dir_fd=dir_fd, follow_symlinks=True)


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _name(tmp: str, fd: int, folder: Folder, dst: str, *, sync: bool, replace: bool) -> Placed:
    """Give the complete new file (``tmp``/``fd``) its name ``dst`` in ``folder``; close ``fd``.

    ``replace``: an existing ``dst`` is replaced atomically. Otherwise an existing
    ``dst`` is left as it is and FileExistsError raised ("first writer wins").
    Cleans up on failure.
    """
    dfd = folder.fd
    try:
        if sync:
            os.fsync(fd)
        st = os.fstat(fd)
        if tmp == _UNNAMED:
            try:
                _link_fd(fd, dfd, dst)
                return Placed(folder, dst, st, replaced=False)
            except FileExistsError:
                if not replace:
                    raise
            replaced = True
            tmp = temp_name(dst)
            _link_fd(fd, dfd, tmp)
        else:
            replaced = replace and _exists(dfd, dst)
    except BaseException:
        _unlink_quietly(dfd, tmp)
        raise
    finally:
        os.close(fd)
    try:
        if replace:
            os.rename(tmp, dst, src_dir_fd=dfd, dst_dir_fd=dfd)
        else:
            os.link(tmp, dst, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
            _unlink_quietly(dfd, tmp)
    except BaseException:
        _unlink_quietly(dfd, tmp)
        raise
    return Placed(folder, dst, st, replaced=replaced)


def place_bytes(
    data: bytes | memoryview,
    folder: Folder,
    name: str,
    *,
    sync: bool = False,
    replace: bool = True,
) -> Placed:
    """Write ``data`` to ``name`` in ``folder`` atomically.

    ``replace=False`` leaves an existing file alone and raises FileExistsError.
    """
    tmp, fd = _open_new(folder, name)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        _unlink_quietly(folder.fd, tmp)
        raise
    return _name(tmp, fd, folder, name, sync=sync, replace=replace)


def _copy_into(infd: int, size: int, fd: int, what: str) -> None:
    """Copy ``size`` bytes from the start of ``infd`` into ``fd`` (file offsets untouched)."""
    offset = 0
    while offset < size:
        try:
            sent = os.sendfile(fd, infd, offset, size - offset)
        except OSError as exc:
            import errno

            if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            # sendfile refused this pair of files; plain reads always work
            while offset < size:
                chunk = os.pread(infd, min(1 << 20, size - offset), offset)
                if not chunk:
                    break
                os.write(fd, chunk)
                offset += len(chunk)
            sent = 0
        if sent == 0 and offset < size:  # the source shrank under us
            raise OSError(f"{what}: changed size while being copied")
        offset += sent


def copy_fd(
    infd: int, size: int, folder: Folder, name: str, *, sync: bool, what: str = "source"
) -> Placed:
    """Copy the open file ``infd`` (``size`` bytes) to ``name`` in ``folder`` atomically.

    ``what`` names the source in the error raised if it shrinks while copied.
    """
    tmp, fd = _open_new(folder, name)
    try:
        _copy_into(infd, size, fd, what)
    except BaseException:
        os.close(fd)
        _unlink_quietly(folder.fd, tmp)
        raise
    return _name(tmp, fd, folder, name, sync=sync, replace=True)


def link_fd(fd: int, st: os.stat_result, folder: Folder, name: str, src: str) -> Placed:
    """Name the open source ``fd`` (stat ``st``, path ``src``) ``name`` in ``folder`` too.

    The first half of a move on one filesystem: atomic, no byte copied, and the
    source keeps its name until the job removes it (after the records). Raises
    OSError (EXDEV across filesystems, EPERM/EMLINK where hard links are refused)
    for the caller to copy instead. When ``directory/name`` is already this file
    (a re-run after a kill, or ``src`` is the destination itself), nothing is
    done; an other file there is replaced atomically.
    """
    dfd = folder.fd
    try:
        _link_fd(fd, dfd, name)
        return Placed(folder, name, st, replaced=False, nlink=st.st_nlink)
    except FileExistsError:
        pass
    there = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    if there.st_ino == st.st_ino and there.st_dev == st.st_dev:
        same = _same_entry(src, folder, name)
        # once the source's name is removed, one link fewer (unless it is this name)
        return Placed(
            folder,
            name,
            there,
            replaced=True,
            nlink=there.st_nlink if same else there.st_nlink - 1,
            same_entry=same,
        )
    tmp = temp_name(name)
    _link_fd(fd, dfd, tmp)
    try:
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        _unlink_quietly(dfd, tmp)
        raise
    return Placed(folder, name, st, replaced=True, nlink=st.st_nlink)


def _same_entry(src: str, folder: Folder, name: str) -> bool:
    """Whether the path ``src`` is the entry ``name`` in ``folder`` (rare; 2 stats)."""
    head, _, base = src.rpartition("/")
    if base != name:
        return False
    try:
        a = os.stat(head or ".")
        b = os.fstat(folder.fd)
    except OSError:
        return True  # cannot tell: never remove what might be the only copy
    return a.st_ino == b.st_ino and a.st_dev == b.st_dev
