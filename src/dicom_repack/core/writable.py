"""Is a destination folder usable? Checked once at start, before any work is accepted.

A door that would fail every instance (a read-only data folder, a log folder
whose parent is a file, a full or read-only mount) should refuse at start with
one line instead of starting "healthy" and failing each instance. Asking the
file system is the only reliable test: ``os.access`` says yes to root on a
read-only mount and on an immutable folder, so this creates the folder if
needed, then creates and removes a file in it.
"""

from __future__ import annotations

import os

__all__ = ["unwritable_reason"]


def unwritable_reason(folder: str) -> str | None:
    """None when files can be created in ``folder`` (created if absent), else why not.

    How to call: ``why = unwritable_reason(datadir); if why: refuse(f"--datadir: {why}")``.
    The probe file is a hidden, uniquely named temporary file, removed at once.
    """
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        return f"cannot create {folder}: {exc.strerror or exc}"
    if not os.path.isdir(folder):
        return f"{folder} is not a folder"
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=".dicom-repack-probe-", dir=folder)
    except OSError as exc:
        return f"cannot write in {folder}: {exc.strerror or exc}"
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError as exc:
        return f"cannot remove files in {folder}: {exc.strerror or exc}"
    return None
