"""A root folder that no write may leave: the data folder, the log folder.

Path components built from tag values cannot name a way out (``layout.safe_name``),
but a folder *inside* the tree can be replaced by a symbolic link (a patient
folder, ``patientData``) by anyone with write access to the tree, and every
write through it would then land wherever it points. :meth:`Tree.folder`
creates the folders below the root one component at a time and refuses, with
:class:`~.errors.UnsafePathError`, any component that is a symbolic link or not
a folder. The root itself may be a link: that is the operator's choice.

Cost: one ``lstat`` per component below the root the first time a folder is
used (three for a series folder, a mkdir each when new), then nothing: folders
found safe are remembered for ``_TTL`` seconds (bounded), so a batch or a
receiver checks each folder about once, and notices a link planted later within
that time. The check and the write are separate steps: a link planted in the
instant between them is not seen (``openat2(RESOLVE_BENEATH)`` would close that
window but is not in Python's ``os``).
"""

from __future__ import annotations

import os
import time

from .errors import UnsafePathError

__all__ = ["Tree"]

#: How long a folder found safe is trusted, and how many are remembered.
_TTL = 30.0
_MAX = 4096


class Tree:
    """The folders below ``root``; ``what`` names it in errors ("data folder")."""

    __slots__ = ("_safe", "root", "what")

    def __init__(self, root: str, what: str) -> None:
        self.root = os.path.abspath(root)
        self.what = what
        self._safe: dict[str, float] = {}

    def folder(self, path: str, origin: str) -> str:
        """Make sure the folder ``path`` (absolute, below the root) exists and is safe.

        Returns ``path``. Raises UnsafePathError (naming ``origin``, the instance,
        and the offending component) if a component below the root is a symbolic
        link or not a folder; OSError if one cannot be created.
        """
        now = time.monotonic()
        seen = self._safe.get(path)
        if seen is not None and now - seen < _TTL:
            return path
        root = self.root
        if path == root:
            return path
        if not path.startswith(root + "/"):
            raise UnsafePathError(origin, f"{path} is outside the {self.what} {root}")
        current = root
        for part in path[len(root) + 1 :].split("/"):
            current = f"{current}/{part}"
            seen = self._safe.get(current)
            if seen is not None and now - seen < _TTL:
                continue
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                _mkdir(current, root)
                st = os.lstat(current)
            if (st.st_mode & 0o170000) != 0o040000:  # not S_ISDIR (a link is not)
                kind = "a symbolic link" if (st.st_mode & 0o170000) == 0o120000 else "not a folder"
                raise UnsafePathError(
                    origin,
                    f"{current} is {kind} inside the {self.what} {root}; "
                    "refusing to write through it",
                )
            self._remember(current, now)
        return path

    def _remember(self, path: str, now: float) -> None:
        if len(self._safe) >= _MAX:
            self._safe.clear()
        self._safe[path] = now

    def forget(self) -> None:
        """Check every folder again on next use (after a folder was found missing)."""
        self._safe.clear()


def _mkdir(path: str, root: str) -> None:
    """Create ``path`` (its parent exists, unless it is the root); racing creators are fine."""
    try:
        os.mkdir(path)
    except FileExistsError:
        pass  # another process made it meanwhile: the caller checks what it is
    except FileNotFoundError:
        if path.rpartition("/")[0] != root:
            raise
        os.makedirs(root, exist_ok=True)  # the first write into a new tree
        _mkdir(path, root)
