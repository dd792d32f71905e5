"""A root folder that no write, read or removal may leave: the data folder, the log folder.

Anyone with write access to the data or log folder can replace what is inside
it: a patient folder by a symbolic link to an archive, a record or the index by
a link to ``/etc/passwd``, any file by a FIFO. A path that is checked and then
used (``lstat``, then ``open``) leaves a moment in between; a path that is
opened by name follows whatever link stands there at that moment. So nothing
under those folders is used by path:

* :func:`open_below` walks to a folder one component at a time, each opened
  relative to the previous one with ``O_NOFOLLOW | O_DIRECTORY`` (created with
  ``mkdirat`` where missing): the :class:`Folder` it returns *is* the folder
  that was vetted, whatever happens to the names meanwhile, and every file is
  created, linked, renamed or removed relative to it (``openat``, ``linkat``,
  ``renameat``, ``unlinkat``). No folder is trusted for longer than one use.
* :func:`open_file` is the one way a file under those folders is opened (a
  record, the patient lock, the index's pending rows, the spool, a journal):
  ``O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC`` and then ``fstat``: a link, a FIFO, a
  socket or a device is refused with :class:`NotRegularError`, one line naming
  it, and never blocks the caller (a FIFO without a writer would otherwise hang
  a door forever). ``O_NONBLOCK`` is left set: it changes nothing for a regular
  file's reads, writes or locks.
* :func:`.retire.remove_beneath` removes a file and the folders it leaves empty,
  with ``unlinkat``/``rmdir`` relative to the walked folders, never by path (it
  lives with the one job step that removes: retire.py, loaded only by a job that
  retires an earlier copy).

The roots themselves (``--datadir``, ``--logdir``, ``--index``) are the
operator's choice and may be links. Cost: one ``open`` of the root and one
``openat`` per folder below it (and as many ``close``), at each use; no ``lstat``.

:class:`Tree` names one root in errors ("... is a symbolic link inside the data
folder ...").
"""

from __future__ import annotations

import os

from .errors import DicomRepackError, UnsafePathError

__all__ = [
    "DIR_FLAGS",
    "OWN_PREFIX",
    "Folder",
    "NotRegularError",
    "Tree",
    "open_below",
    "open_file",
]

#: The project's own folders inside the data folder (the receiver's spool, batch
#: --dask's journals) start with this, and no door walks into them (a batch over
#: the data folder would otherwise file spool files). Only a tag value that itself
#: starts with this text could make a layout folder of such a name.
OWN_PREFIX = ".dicom-repack-"

#: a folder below a root: opened only if it is a folder and not a link
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: every file open: never through a link, never blocking, never inherited
_FILE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY

#: what each kind of file is called in a refusal (S_IFMT bits -> words)
_KINDS = {
    0o010000: "a FIFO",
    0o020000: "a character device",
    0o040000: "a folder",
    0o060000: "a block device",
    0o120000: "a symbolic link",
    0o140000: "a socket",
}


class NotRegularError(DicomRepackError, OSError):
    """A name under the data or log folder is not what it must be (a link, a FIFO, ...).

    An OSError without an errno: its text is one line naming the path and what
    stands there. Nothing was opened, written or removed through it.
    """

    code = "NotRegular"


class Folder:
    """An open folder (``fd``) and the path it was reached by (``path``, for messages).

    Close it (or use ``with``); everything done inside it is relative to ``fd``.
    """

    __slots__ = ("fd", "path")

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Folder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def kind_of(mode: int) -> str:
    """What a file of ``mode`` is called in a refusal ("a FIFO", "a symbolic link", ...)."""
    return _KINDS.get(mode & 0o170000, "not a regular file")


def _refusal(path: str, name: str, dir_fd: int | None, *, want: str) -> NotRegularError:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        kind = kind_of(st.st_mode)
    except OSError:
        kind = "not usable"
    return NotRegularError(f"{path} is {kind}, not {want}; not opened")


def open_file(
    name: str,
    flags: int,
    mode: int = 0o644,
    *,
    dir_fd: int | None = None,
    path: str | None = None,
) -> tuple[int, os.stat_result]:
    """Open the regular file ``name`` (in ``dir_fd``, or a path): ``(fd, its fstat)``.

    The one open of a file under the data or log folder. ``flags`` are the
    access flags (``O_RDONLY``, ``O_WRONLY | O_APPEND | O_CREAT``, ...); the
    no-follow, non-blocking and close-on-exec flags are added here. A symbolic
    link, FIFO, socket, device or folder raises :class:`NotRegularError` naming
    ``path`` (default ``name``); other failures raise OSError as ``os.open`` does.
    """
    try:
        fd = os.open(name, flags | _FILE, mode, dir_fd=dir_fd)
    except OSError as exc:
        # ELOOP (40): a link at the name; ENXIO (6): a FIFO without a reader opened
        # for writing, or a socket; EISDIR (21): a folder opened for writing
        if exc.errno in (40, 6, 21):
            raise _refusal(path or name, name, dir_fd, want="a regular file") from None
        raise
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if (st.st_mode & 0o170000) != 0o100000:  # stat.S_ISREG without importing stat
        os.close(fd)
        raise NotRegularError(
            f"{path or name} is {kind_of(st.st_mode)}, not a regular file; not opened"
        )
    return fd, st


def open_below(
    root: int,
    root_path: str,
    parts: list[str],
    *,
    create: bool,
    what: str,
    top: str | None = None,
) -> Folder:
    """The folder ``root_path/parts...``, each part opened in the previous one.

    ``root`` is the open root folder (not closed here). A part that is missing is
    created (``create``) or raises FileNotFoundError; a part that is a symbolic
    link or not a folder raises :class:`NotRegularError` ("... is a symbolic
    link inside the <what> <top>; refusing to use it": ``top`` is the data or log
    folder, ``root_path`` unless ``root`` is a folder below it). ``parts`` are names
    made by the layout's sanitising rule (no ``/``, never ``..``).
    """
    named = top or root_path
    fd = root
    path = root_path
    try:
        for part in parts:
            path = f"{path}/{part}"
            try:
                nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass  # another process made it meanwhile: opened (and checked) below
                try:
                    nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (20, 40):
                        raise
                    raise _unsafe(path, part, fd, named, what) from None
            except OSError as exc:
                if exc.errno not in (20, 40):  # ENOTDIR, ELOOP: a link or not a folder
                    raise
                raise _unsafe(path, part, fd, named, what) from None
            if fd != root:
                os.close(fd)
            fd = nfd
    except BaseException:
        if fd != root:
            os.close(fd)
        raise
    if fd == root:
        fd = os.dup(root)  # the caller closes what it gets; the root stays open
    return Folder(fd, path)


def _unsafe(path: str, part: str, dir_fd: int, root_path: str, what: str) -> NotRegularError:
    try:
        mode = os.stat(part, dir_fd=dir_fd, follow_symlinks=False).st_mode
        kind = kind_of(mode) if (mode & 0o170000) == 0o120000 else "not a folder"
    except OSError:
        kind = "not a folder"
    return NotRegularError(
        f"{path} is {kind} inside the {what} {root_path}; refusing to write through it"
    )


class Tree:
    """The folders below ``root``; ``what`` names it in errors ("data folder").

    Nothing is kept between uses: each :meth:`open` opens the root by its path
    (following it if it is a link: the operator's choice, and a root renamed and
    made anew is the new one) and walks down from it.
    """

    __slots__ = ("root", "what")

    def __init__(self, root: str, what: str) -> None:
        self.root = os.path.abspath(root)
        self.what = what

    def open(self, path: str, origin: str, *, create: bool = True) -> Folder:
        """The folder ``path`` (absolute: the root or below it), open; the caller closes it.

        As :meth:`folder_at`, but a component that is a symbolic link or not a
        folder raises UnsafePathError naming ``origin`` (the instance) and the
        component: the job's error.
        """
        try:
            return self.folder_at(path, create=create)
        except NotRegularError as exc:
            raise UnsafePathError(origin, str(exc)) from None

    def folder_at(self, path: str, *, create: bool = True) -> Folder:
        """The folder ``path`` (absolute: the root or below it), open; the caller closes it.

        Folders below the root (and the root) are created where missing (unless
        not ``create``: FileNotFoundError). Raises NotRegularError (an OSError
        naming the offending component) if a component below the root is a
        symbolic link or not a folder, or ``path`` is outside the root; OSError if
        one cannot be created.
        """
        root = self.root
        parts: list[str]
        if path == root:
            parts = []
        elif path.startswith(root + "/"):
            parts = path[len(root) + 1 :].split("/")
        else:
            raise NotRegularError(f"{path} is outside the {self.what} {root}")
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        try:
            fd = os.open(root, flags)
        except FileNotFoundError:
            if not create:
                raise
            os.makedirs(root, exist_ok=True)  # the first write into a new tree
            fd = os.open(root, flags)
        if not parts:
            return Folder(fd, root)  # the caller closes it
        try:
            try:
                return open_below(fd, root, parts, create=create, what=self.what)
            except FileNotFoundError:
                if not create:
                    raise
                # made and removed again meanwhile (another job retired an earlier
                # copy and removed the folder it left empty): once more
                return open_below(fd, root, parts, create=create, what=self.what)
        finally:
            os.close(fd)
