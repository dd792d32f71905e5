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
"""

from __future__ import annotations

import os

__all__ = ["Placed", "copy_fd", "ensure_dir", "link_fd", "place_bytes", "temp_name"]


class Placed:
    """What placing a file did, and how to take it back.

    ``stat`` is the placed file's stat; ``nlink`` the link count it will have once
    the job is done (a fresh copy has 1; a hard link to a source that the job will
    remove keeps the source's count). ``replaced`` is True when something already
    stood at ``path`` (an earlier copy of the same instance, or this very file):
    :meth:`undo` then leaves ``path`` alone, so undoing never removes an earlier,
    recorded copy. ``same_entry`` is True when ``path`` *is* the source (a run over
    the data tree itself): the source must then never be removed.
    """

    __slots__ = ("nlink", "path", "replaced", "same_entry", "stat")

    def __init__(
        self,
        path: str,
        stat: os.stat_result,
        *,
        replaced: bool,
        nlink: int = 1,
        same_entry: bool = False,
    ) -> None:
        self.path = path
        self.stat = stat
        self.replaced = replaced
        self.nlink = nlink
        self.same_entry = same_entry

    def undo(self) -> None:
        """Delete what was placed (never what stood there before)."""
        if not self.replaced:
            _unlink_quietly(self.path)


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


def temp_name(directory: str, name: str) -> str:
    """A hidden, unique temporary path beside ``directory/name`` (same filesystem).

    The name is cut so that the temporary name, too, stays within NAME_MAX.
    """
    global _counter
    _counter += 1
    return f"{directory}/.{name[:200]}.{os.getpid()}.{_counter}.tmp"


def ensure_dir(path: str) -> None:
    """Create ``path`` and its parents; one syscall when it already exists."""
    try:
        os.mkdir(path)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
    except FileNotFoundError:
        os.makedirs(path, exist_ok=True)


def _unlink_quietly(path: str) -> None:
    if path == _UNNAMED:
        return
    try:
        os.unlink(path)
    except OSError:
        pass


def _open_new(directory: str, name: str) -> tuple[str, int]:
    """Open a new file nobody can see yet: (temporary path, or _UNNAMED, and its fd)."""
    global _tmpfile_works
    flags = os.O_WRONLY | os.O_CLOEXEC
    if _tmpfile_works:
        try:
            try:
                return _UNNAMED, os.open(directory, _O_TMPFILE | flags, 0o644)
            except FileNotFoundError:
                ensure_dir(directory)
                return _UNNAMED, os.open(directory, _O_TMPFILE | flags, 0o644)
        except IsADirectoryError:
            _tmpfile_works = False  # a kernel that does not know O_TMPFILE
        except OSError as exc:
            import errno

            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            _tmpfile_works = False  # a filesystem that does not support it
    tmp = temp_name(directory, name)
    try:
        fd = os.open(tmp, flags | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:
        ensure_dir(directory)
        fd = os.open(tmp, flags | os.O_CREAT | os.O_EXCL, 0o644)
    return tmp, fd


_proc_fds: tuple[int, int] | None = None


def _link_fd(fd: int, dst: str) -> None:
    """Give the file open as ``fd`` the (further) name ``dst`` (FileExistsError if taken).

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
    os.link(str(fd), dst, src_dir_fd=_proc_fds[1], follow_symlinks=True)


def _name(tmp: str, fd: int, dst: str, *, sync: bool, replace: bool) -> Placed:
    """Give the complete new file (``tmp``/``fd``) its name ``dst``; close ``fd``.

    ``replace``: an existing ``dst`` is replaced atomically. Otherwise an existing
    ``dst`` is left as it is and FileExistsError raised ("first writer wins").
    Cleans up on failure.
    """
    try:
        if sync:
            os.fsync(fd)
        st = os.fstat(fd)
        if tmp == _UNNAMED:
            try:
                _link_fd(fd, dst)
                return Placed(dst, st, replaced=False)
            except FileExistsError:
                if not replace:
                    raise
            replaced = True
            tmp = temp_name(os.path.dirname(dst), os.path.basename(dst))
            _link_fd(fd, tmp)
        else:
            replaced = replace and os.path.lexists(dst)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    finally:
        os.close(fd)
    try:
        if replace:
            os.rename(tmp, dst)
        else:
            os.link(tmp, dst)
            _unlink_quietly(tmp)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return Placed(dst, st, replaced=replaced)


def place_bytes(
    data: bytes | memoryview,
    directory: str,
    name: str,
    *,
    sync: bool = False,
    replace: bool = True,
) -> Placed:
    """Write ``data`` to ``directory/name`` atomically.

    ``replace=False`` leaves an existing file alone and raises FileExistsError.
    """
    tmp, fd = _open_new(directory, name)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    return _name(tmp, fd, f"{directory}/{name}", sync=sync, replace=replace)


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
    infd: int, size: int, directory: str, name: str, *, sync: bool, what: str = "source"
) -> Placed:
    """Copy the open file ``infd`` (``size`` bytes) to ``directory/name`` atomically.

    ``what`` names the source in the error raised if it shrinks while copied.
    """
    tmp, fd = _open_new(directory, name)
    try:
        _copy_into(infd, size, fd, what)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    return _name(tmp, fd, f"{directory}/{name}", sync=sync, replace=True)


def link_fd(fd: int, st: os.stat_result, directory: str, name: str, src: str) -> Placed:
    """Name the open source ``fd`` (stat ``st``, path ``src``) ``directory/name`` too.

    The first half of a move on one filesystem: atomic, no byte copied, and the
    source keeps its name until the job removes it (after the records). Raises
    OSError (EXDEV across filesystems, EPERM/EMLINK where hard links are refused)
    for the caller to copy instead. When ``directory/name`` is already this file
    (a re-run after a kill, or ``src`` is the destination itself), nothing is
    done; an other file there is replaced atomically.
    """
    dst = f"{directory}/{name}"
    try:
        try:
            _link_fd(fd, dst)
        except FileNotFoundError:
            ensure_dir(directory)
            _link_fd(fd, dst)
        return Placed(dst, st, replaced=False, nlink=st.st_nlink)
    except FileExistsError:
        pass
    there = os.lstat(dst)
    if there.st_ino == st.st_ino and there.st_dev == st.st_dev:
        same = _same_entry(src, directory, name)
        # once the source's name is removed, one link fewer (unless it is this name)
        return Placed(
            dst,
            there,
            replaced=True,
            nlink=there.st_nlink if same else there.st_nlink - 1,
            same_entry=same,
        )
    tmp = temp_name(directory, name)
    _link_fd(fd, tmp)
    try:
        os.rename(tmp, dst)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return Placed(dst, st, replaced=True, nlink=st.st_nlink)


def _same_entry(src: str, directory: str, name: str) -> bool:
    """Whether the path ``src`` is the directory entry ``directory/name`` (rare; 2 stats)."""
    head, _, base = src.rpartition("/")
    if base != name:
        return False
    try:
        a = os.stat(head or ".")
        b = os.stat(directory)
    except OSError:
        return True  # cannot tell: never remove what might be the only copy
    return a.st_ino == b.st_ino and a.st_dev == b.st_dev
