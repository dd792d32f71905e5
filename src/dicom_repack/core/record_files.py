"""A record file's reading and locking, never through a link, never waiting on a FIFO.

Shared by :mod:`.records` (writing) and :mod:`.records_undo` (taking back): the
flock that orders a StudyList's read-modify-write among one host's processes, a
record's bytes read through its open folder, and what an image record says of
where its instance stands.
"""

from __future__ import annotations

import os

from . import jsonio
from .tree import NotRegularError, open_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .tree import Folder

__all__ = ["location_of", "lock_folder", "parse_quietly", "read_record_bytes"]


def lock_folder(folder: Folder) -> None:
    """Take an exclusive flock on the open ``folder`` (released when it is closed).

    Locking the folder rather than a lock file leaves nothing in the log folder
    that pypx's tools would not expect; the lock is taken on the very folder
    that was walked to without following a link.
    """
    import fcntl

    fcntl.flock(folder.fd, fcntl.LOCK_EX)


def read_record_bytes(folder: Folder, name: str, *, refuse: bool = False) -> bytes:
    """A record's bytes, never through a link, never a FIFO; b"" when missing or unreadable
    (with ``refuse``, a link, FIFO, ... at the name raises NotRegularError instead)."""
    try:
        fd, _ = open_file(name, os.O_RDONLY, dir_fd=folder.fd, path=f"{folder.path}/{name}")
    except NotRegularError:
        if refuse:
            raise
        return b""
    except OSError:
        return b""
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return b""
    finally:
        os.close(fd)


def parse_quietly(data: bytes) -> dict[str, object]:
    """A record's object, or {} when it is damaged (it is being replaced)."""
    try:
        obj = jsonio.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, jsonio.JSONError):
        return {}
    return obj if isinstance(obj, dict) else {}


def location_of(record: dict[str, object]) -> str | None:
    """The FSlocation an image record gives (``{series: {imageObj: {file: {FSlocation}}}}``)."""
    for entry in record.values():
        if isinstance(entry, dict):
            image_obj = entry.get("imageObj")
            if isinstance(image_obj, dict):
                for stat in image_obj.values():
                    if isinstance(stat, dict) and isinstance(stat.get("FSlocation"), str):
                        return str(stat["FSlocation"])
    return None
