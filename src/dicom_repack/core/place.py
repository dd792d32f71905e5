"""Put a file at its destination so that nobody ever sees half of it.

A new file is written unnamed (Linux ``O_TMPFILE``) or under a hidden temporary
name in the destination folder, and only given its real name once complete. A
move is a rename on the same filesystem, else copy + fsync + name, and only then
removal of the source. A second copy of the same instance replaces the first
atomically, so it ends as one file.
"""

from __future__ import annotations

import os

__all__ = ["Placed", "ensure_dir", "place_bytes", "place_file", "temp_name"]


class Placed:
    """What placing a file did: the new file's stat, and whether it replaced one.

    ``replaced`` lets a caller undo exactly its own work (remove a new file, but
    never an earlier copy it replaced) without a stat of its own beforehand. It is
    False for moves, whose undo is renaming back.
    """

    __slots__ = ("replaced", "stat")

    def __init__(self, stat: os.stat_result, replaced: bool) -> None:
        self.stat = stat
        self.replaced = replaced


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
    """Give the unnamed file open as ``fd`` the name ``dst`` (FileExistsError if taken).

    ``os.link("/proc/self/fd/N", dst)`` would call link(), which links the
    /proc symlink itself; linkat() with AT_SYMLINK_FOLLOW, which os.link uses
    when given a src_dir_fd, links the file it points to. The /proc/self/fd
    folder is opened once per process (a fork has its own).
    """
    global _proc_fds
    pid = os.getpid()
    if _proc_fds is None or _proc_fds[0] != pid:
        _proc_fds = (pid, os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    os.link(str(fd), dst, src_dir_fd=_proc_fds[1], follow_symlinks=True)


def _name(tmp: str, fd: int, dst: str, *, sync: bool, replace: bool) -> Placed:
    """Give the complete file (``tmp``/``fd``) its name ``dst``; close ``fd``; clean up on failure.

    ``replace``: an existing ``dst`` is replaced atomically. Otherwise an existing
    ``dst`` is left as it is and FileExistsError raised ("first writer wins").
    """
    try:
        if sync:
            os.fsync(fd)
        st = os.fstat(fd)
        if tmp == _UNNAMED:
            try:
                _link_fd(fd, dst)
                return Placed(st, False)
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
    return Placed(st, replaced)


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


def _copy_into(src: str, fd: int) -> None:
    from .header import open_regular

    infd, st = open_regular(src)  # never a blocking open of a FIFO
    try:
        size = st.st_size
        offset = 0
        while offset < size:
            try:
                sent = os.sendfile(fd, infd, offset, size - offset)
            except OSError as exc:
                import errno

                if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                # sendfile refused this pair of files; plain reads always work
                os.lseek(infd, offset, os.SEEK_SET)
                while chunk := os.read(infd, 1 << 20):
                    os.write(fd, chunk)
                return
            if sent == 0:  # the source shrank under us
                raise OSError(f"{src}: changed size while being copied")
            offset += sent
    finally:
        os.close(infd)


def _copy(src: str, directory: str, name: str, *, sync: bool) -> Placed:
    tmp, fd = _open_new(directory, name)
    try:
        _copy_into(src, fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    return _name(tmp, fd, f"{directory}/{name}", sync=sync, replace=True)


def place_file(
    src: str, directory: str, name: str, *, move: bool = False, sync: bool = False
) -> Placed:
    """Copy (or move) ``src`` to ``directory/name``.

    The source is removed (``move``) only once the destination is complete: a
    rename when both are on one filesystem, else a copy that is fsynced and
    named first. ``sync`` fsyncs copies, and a moved file before its rename.
    """
    if not move:
        return _copy(src, directory, name, sync=sync)
    dst = f"{directory}/{name}"
    if sync:
        fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    try:
        os.rename(src, dst)
        return Placed(os.stat(dst), False)
    except FileNotFoundError:
        if not os.path.exists(src):
            raise
        ensure_dir(directory)
        os.rename(src, dst)
        return Placed(os.stat(dst), False)
    except OSError as exc:
        import errno

        if exc.errno != errno.EXDEV:
            raise
    placed = _copy(src, directory, name, sync=True)
    os.unlink(src)
    return placed
