"""Can the tool write where it was told to? Checked once, at start, by every door that runs long.

A batch over a read-only data folder would otherwise fail every instance with
the same error (5,000 lines for 5,000 files), and a receiver would start
"healthy" and then refuse every C-STORE. So the batch and the receiver check
their data and log folders here before doing anything, and refuse with one
line. The per-instance door does not: it files one instance, so its own
one-line error already says the same, and its start-up has no time to spare.
"""

from __future__ import annotations

import os

__all__ = [
    "DESTINATION_ERRNOS",
    "DestinationError",
    "check_writable",
    "is_destination_errno",
    "refuse_missing_parent",
]


class DestinationError(Exception):
    """A destination folder cannot be created or written (the message is one line)."""


#: errno names that mean "the destination itself is failing", not "this instance is bad":
#: read-only filesystem, permission, disk or quota full, I/O error.
DESTINATION_ERRNOS = frozenset(("EROFS", "EACCES", "EPERM", "ENOSPC", "EDQUOT", "EIO"))


def is_destination_errno(errno_value: int | None) -> bool:
    """True when an OSError's errno says the destination failed (:data:`DESTINATION_ERRNOS`)."""
    if errno_value is None:
        return False
    import errno

    return errno.errorcode.get(errno_value) in DESTINATION_ERRNOS


def refuse_missing_parent(folder: str, what: str = "folder") -> None:
    """DestinationError when ``folder`` does not exist and neither does its parent.

    A mistyped ``--datadir /srv/dicm/data`` would otherwise be created, parents and
    all, and instances filed where nobody looks. Only the last folder of a path is
    ever created unless the operator says ``--parents``. One ``stat`` when the
    folder exists (the per-instance door's usual case).
    """
    if os.path.isdir(folder):
        return
    parent = os.path.dirname(os.path.abspath(folder))
    if not os.path.isdir(parent):
        raise DestinationError(
            f"{what} {folder}: its parent folder {parent} does not exist "
            "(give --parents to create it)"
        )


def check_writable(folder: str, what: str = "folder", *, parents: bool = False) -> None:
    """Create ``folder`` if needed and prove a file can be created in it; else DestinationError.

    Only the folder itself is created; a missing parent is refused (a mistyped
    path) unless ``parents`` (the doors' ``--parents``).

    ``what`` names the folder in the message (``"--datadir"``). The proof is a
    real write: an unnamed file (``O_TMPFILE``, which leaves nothing behind even
    if the process dies) or, where unsupported, a hidden file removed at once.
    ``os.access`` would not do: it answers "yes" to root on a folder that is
    only read-only by its mode bits, and knows nothing of quotas or full disks.

    Example::

        try:
            check_writable(args.datadir, "--datadir")
        except DestinationError as exc:
            sys.stderr.write(f"dicom-repack: error: {exc}\\n")
            return 1
    """
    if not parents:
        refuse_missing_parent(folder, what)
    try:
        os.makedirs(folder, exist_ok=True)
        if not os.path.isdir(folder):
            raise NotADirectoryError(20, "Not a directory")
        _probe(folder)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DestinationError(f"{what} {folder} is not writable: {reason}") from None


def _probe(folder: str) -> None:
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            fd = os.open(folder, tmpfile | os.O_WRONLY | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, _PROBE)  # a full disk refuses blocks, not always inodes
            finally:
                os.close(fd)
            return
        except OSError as exc:
            import errno

            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.EISDIR):
                raise
    path = f"{folder}/.dicom-repack-probe.{os.getpid()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, _PROBE)
    finally:
        os.close(fd)
        os.unlink(path)


_PROBE = b"\0" * 4096
