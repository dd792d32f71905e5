"""After a job has placed, recorded and indexed an instance: what only some jobs need.

* **Retire** the earlier copy of a SOP filed again elsewhere (a changed layout tag,
  a changed InstanceNumber or SeriesInstanceUID), found through the image record the
  job replaced or through the index; removed through the folders it stands in, never
  by path (:func:`remove_beneath`).
* **Sync the folders** naming the new file and its records, with ``--fsync`` or
  before a source on another filesystem goes (a move that had to copy).

Most instances need neither (a SOP filed for the first time, no ``--fsync``, a move
on one filesystem): this module is imported only by a job that does, so the
per-instance door, which starts once per instance, does not load it otherwise.
"""

from __future__ import annotations

import os

from .errors import PlacementError, RepackError
from .source import PathSource
from .tree import DIR_FLAGS, NotRegularError, open_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .place import Placed
    from .records import Written
    from .repack import Repacker
    from .source import Source

__all__ = ["remove_beneath", "retire", "retire_earlier", "sync_folders"]


def retire_earlier(
    repacker: Repacker,
    where: dict[str, str] | None,
    written: Written,
    values: Mapping[str, str],
    placed: Placed,
    source: Source,
) -> None:
    """Retire every earlier copy of this SOP; called under its lock, once indexed.

    Two places say where it stood: the image record this job replaced (same
    series and file name: a changed PatientName, say) and ``where``, what the
    index said before this job's row (whatever changed, the InstanceNumber or
    the SeriesInstanceUID too; only with an index). A copy found through the
    index left its own image record in another series or under another name:
    that record goes with it, and the series, study and StudyList entry it
    leaves empty.
    """
    sop = values["SOPInstanceUID"]
    root = repacker.datadir
    if written.previous is not None:
        retire(root, written.previous, placed, source, sop)
    if where is None or where["path"] in (placed.path, written.previous):
        return
    gone = retire(root, where["path"], placed, source, sop)
    paths = written.paths
    same_record = paths is not None and (
        where["SeriesInstanceUID"] == values["SeriesInstanceUID"]
        and where["file"] == paths.file_name
    )
    if gone and not same_record and repacker.records is not None:
        repacker.records.forget(where, where["file"], where["path"])


def sync_folders(repacker: Repacker, placed: Placed, source: Source, written: Written) -> None:
    """fsync the folders naming the new file and records, so their names survive a power
    cut before the source goes (the caller decided it is needed).

    (A move that copied, without --fsync: the records themselves are not fsynced,
    but syncing their folders commits the filesystem's journal, which on ext4's
    default data=ordered writes their bytes first.)"""
    # a folder that cannot be synced (EIO) fails the instance: filed, recorded and
    # indexed, but not known durable, so the source stays (a re-run finishes it)
    try:
        os.fsync(placed.dir_fd)  # the folder naming the file: the one it was placed in
    except OSError as exc:
        raise PlacementError(
            source.origin,
            f"cannot sync {os.path.dirname(placed.path)}: {exc.strerror or exc}",
            errno=exc.errno,
        ) from None
    folders = [
        (repacker.data, folder)
        for folder in _up_to(os.path.dirname(placed.path), repacker.datadir)[1:]
    ]
    if repacker.records is not None:
        tree = repacker.records.tree
        folders += [(tree, folder) for folder in repacker.records.folders(written)]
    for tree, folder in folders:
        try:  # walked from its root as every use is: a link planted meanwhile is skipped
            opened = tree.folder_at(folder, create=False)
        except OSError:
            continue
        with opened:
            try:
                os.fsync(opened.fd)
            except OSError as exc:
                raise PlacementError(
                    source.origin, f"cannot sync {folder}: {exc.strerror or exc}", errno=exc.errno
                ) from None


def retire(root: str, earlier: str, placed: Placed, source: Source, sop_uid: str) -> bool:
    """Remove the earlier copy of this instance, filed elsewhere under the data folder
    ``root`` (a changed layout tag).

    Only a regular file inside the data folder that still holds this very
    SOPInstanceUID goes, and never the source of a copy (a run over the data
    tree without ``--cleanup`` modifies no input). Its image record was the
    one just replaced. Folders it leaves empty go too. It is removed through
    the folders it stands in, each opened without following a link
    (:func:`remove_beneath`): a patient folder replaced by a link to
    an archive makes it stay, never a file of the archive go. Best effort:
    the new copy and its records are complete whatever happens here. Returns
    True when no copy of this SOP is left at ``earlier`` (removed, or gone before).
    """
    if not earlier.startswith(root + "/") or earlier == placed.path:
        return False
    copied_from = source.path if isinstance(source, PathSource) and not source.move else ""
    if copied_from and os.path.abspath(copied_from) == earlier:
        return False

    def holds_this_sop(fd: int, st: os.stat_result) -> bool:
        if st.st_ino == placed.stat.st_ino and st.st_dev == placed.stat.st_dev:
            return False  # the same file under two names: removing one loses nothing, but why
        try:
            return _sop_of(fd, st.st_size, earlier) == sop_uid
        except (OSError, ValueError, RepackError):
            return False

    try:
        remove_beneath(root, earlier[len(root) + 1 :], holds_this_sop)
    except OSError:
        pass
    return not os.path.lexists(earlier)


def _up_to(folder: str, root: str) -> list[str]:
    """``folder`` and its parents up to ``root`` (both included), deepest first."""
    out = [folder]
    while folder != root and folder.startswith(root + "/"):
        folder = os.path.dirname(folder)
        out.append(folder)
    return out


def _sop_of(fd: int, size: int, name: str) -> str | None:
    """The SOPInstanceUID of the open file ``fd`` (``size`` bytes)."""
    from .header import read_header_fd

    return read_header_fd(fd, size, ("SOPInstanceUID",), name=name).values.get("SOPInstanceUID")


def remove_beneath(
    root: str,
    relpath: str,
    check: Callable[[int, os.stat_result], bool] | None = None,
) -> bool:
    """Remove the file ``root/relpath`` and the folders it leaves empty, never leaving ``root``.

    Each folder on the way is opened in the previous one without following a
    link; the file is opened the same way (:func:`open_file`) and must be a
    regular file for which ``check(fd, stat)`` (if given) returns True; it is then
    removed with ``unlinkat`` in its folder, if that name still is that file, and
    each folder above it, up to but not including ``root``, with ``rmdir`` in its
    parent while it is empty. Returns True when the file was removed; False when
    anything on the way is missing, a link, not a folder or not a regular file,
    or ``check`` said no (nothing is removed then). Other OSErrors propagate.
    """
    parts = [p for p in relpath.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        return False
    name = parts.pop()
    try:
        top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    fds = [top]
    try:
        for part in parts:
            try:
                fds.append(os.open(part, DIR_FLAGS, dir_fd=fds[-1]))
            except OSError as exc:
                if exc.errno in (2, 20, 40):  # ENOENT, ENOTDIR, ELOOP
                    return False
                raise
        folder = fds[-1]
        try:
            fd, st = open_file(name, os.O_RDONLY, dir_fd=folder)
        except (NotRegularError, FileNotFoundError):
            return False
        try:
            if check is not None and not check(fd, st):
                return False
        finally:
            os.close(fd)
        try:
            now = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if now.st_ino != st.st_ino or now.st_dev != st.st_dev:
            return False  # replaced meanwhile: not the file that was checked
        os.unlink(name, dir_fd=folder)
        for i in range(len(parts) - 1, -1, -1):
            try:
                os.rmdir(parts[i], dir_fd=fds[i])
            except OSError:
                break  # not empty (or gone): the climb stops
        return True
    finally:
        for fd in fds:
            os.close(fd)
