"""Put a file at its destination so that nobody ever sees half of it.

Copies go to a temporary name in the destination folder and are renamed into
place; a move is a rename on the same filesystem, else copy + fsync + rename and
only then removal of the source. A second copy of the same instance replaces
the first atomically, so it ends as one file.
"""

from __future__ import annotations

import os

__all__ = ["ensure_dir", "place_bytes", "place_file", "temp_name"]

_counter = 0


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


def _open_temp(directory: str, name: str) -> tuple[str, int]:
    tmp = temp_name(directory, name)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        ensure_dir(directory)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    return tmp, fd


def _commit(tmp: str, fd: int, dst: str, *, sync: bool) -> os.stat_result:
    """fsync (if asked), close and rename ``tmp`` over ``dst``; remove ``tmp`` on failure."""
    try:
        if sync:
            os.fsync(fd)
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    try:
        os.rename(tmp, dst)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return st


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def place_bytes(
    data: bytes | memoryview, directory: str, name: str, *, sync: bool = False
) -> os.stat_result:
    """Write ``data`` to ``directory/name`` atomically; return the new file's stat."""
    tmp, fd = _open_temp(directory, name)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    return _commit(tmp, fd, f"{directory}/{name}", sync=sync)


def _copy_into(src: str, tmp: str, fd: int) -> None:
    infd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(infd).st_size
        offset = 0
        while offset < size:
            try:
                sent = os.sendfile(fd, infd, offset, size - offset)
            except OSError:
                # sendfile can refuse some filesystems; plain reads always work
                os.lseek(infd, offset, os.SEEK_SET)
                while chunk := os.read(infd, 1 << 20):
                    os.write(fd, chunk)
                return
            if sent == 0:  # the source shrank under us
                raise OSError(f"{src}: changed size while being copied")
            offset += sent
    finally:
        os.close(infd)


def place_file(src: str, directory: str, name: str, *, move: bool = False) -> os.stat_result:
    """Copy (or move) ``src`` to ``directory/name``; return the placed file's stat.

    The source is removed (``move``) only once the destination is complete: a
    rename when both are on one filesystem, else a copy that is fsynced and
    renamed into place first.
    """
    dst = f"{directory}/{name}"
    if move:
        try:
            os.rename(src, dst)
            return os.stat(dst)
        except FileNotFoundError:
            if not os.path.exists(src):
                raise
            ensure_dir(directory)
            os.rename(src, dst)
            return os.stat(dst)
        except OSError as exc:
            import errno

            if exc.errno != errno.EXDEV:
                raise
        tmp, fd = _open_temp(directory, name)
        try:
            _copy_into(src, tmp, fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        st = _commit(tmp, fd, dst, sync=True)
        os.unlink(src)
        return st
    tmp, fd = _open_temp(directory, name)
    try:
        _copy_into(src, tmp, fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    return _commit(tmp, fd, dst, sync=False)
