"""Taking pypx records back: a failed job's undo, a retired copy's records, the folders to sync.

Only a job that fails, files a SOP again elsewhere or syncs its folders needs this:
kept out of :mod:`.records` (loaded by the per-instance door at every start) and
imported by :class:`.records.RecordWriter`'s ``undo``, ``forget``, ``prune`` and
``folders`` when they run. Everything goes through folders opened without following
a link, as every write does.
"""

from __future__ import annotations

import os

from . import jsonio
from .errors import RepackError
from .place import place_bytes
from .record_files import location_of, lock_folder, parse_quietly, read_record_bytes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .records import RecordPaths, RecordWriter, Written
    from .tree import Folder

__all__ = ["folders", "forget", "prune", "undo"]


def folders(writer: RecordWriter, written: Written) -> list[str]:
    """The log folders ``written`` named a record in, and their parents up to the log
    folder (fsynced by the job with ``--fsync``: a new name is durable once its
    folder is), deepest first."""
    rels = [*written.created, *([written.image] if written.image else [])]
    if written.study_added and written.paths is not None:
        rels.append(written.paths.patient)
    folders: set[str] = set()
    for rel in rels:
        folder = f"{writer.logdir}/{rel}".rpartition("/")[0]
        while folder.startswith(writer.logdir) and folder not in folders:
            folders.add(folder)
            if folder == writer.logdir:
                break
            folder = os.path.dirname(folder)
    return sorted(folders, key=lambda f: (-f.count("/"), f))


def undo(writer: RecordWriter, written: Written) -> None:
    """Take back what one :meth:`.RecordWriter.write` did; best effort, never raises.

    The image record it made goes; one it replaced is put back (the earlier
    copy it names is still there: the job retires it only once the instance
    is indexed). Then the series' records (series, header dump, pack) go if
    no image record is left in the series, and the study's record and its
    StudyList entry if no series is left in the study (:func:`prune`),
    whoever made them: two workers whose first instances of one series both
    fail must leave nothing behind, whichever of them created it.

    Not closed: an instance of the same series filed at that very moment by
    another process (between its finding the series record, or remembering
    it for 30 s, and writing its image record) is recorded without the series
    record; a re-run over the data tree (``batch DATA -d DATA -l LOG``)
    writes it again. Everything goes through folders opened without
    following a link, as every write does.
    """
    paths = written.paths
    if paths is None:
        return
    try:
        if written.image is not None:
            with _existing(writer, written.image) as (folder, name):
                if folder is not None:
                    if written.image_before is not None:
                        place_bytes(written.image_before, folder, name, sync=writer.fsync)
                    else:
                        _unlink_at(folder, name)
        prune(writer, paths)
    except (OSError, RepackError, jsonio.JSONError):
        pass


def forget(writer: RecordWriter, paths: RecordPaths, location: str) -> None:
    """Remove the image record of an instance no longer at ``location`` (retired), and
    the series, study and StudyList entry it leaves without any instance (``paths``:
    its records'). Best effort."""
    try:
        with _existing(writer, paths.image) as (folder, name):
            stood = location_of(parse_quietly(read_record_bytes(folder, name))) if folder else None
            if folder is not None and stood == location:
                _unlink_at(folder, name)
        prune(writer, paths)
    except (OSError, RepackError, jsonio.JSONError):
        pass


def prune(writer: RecordWriter, paths: RecordPaths) -> None:
    """Remove the series records of ``paths``' series if it has no image record left,
    then its study's record and StudyList entry if the study has no series left.

    Folders stay (an empty ``-img`` or ``-series`` folder): removing one would
    race another writer naming a record in it (ENOENT)."""
    writer.forget_known()
    if _has_entries(writer, paths.image_dir):
        return
    for rel in (paths.series, paths.pack, paths.study_series):
        with _existing(writer, rel) as (folder, name):
            if folder is not None:
                _unlink_at(folder, name)
    if _has_entries(writer, paths.study_series_dir):
        return
    with _existing(writer, paths.study) as (folder, name):
        if folder is not None:
            _unlink_at(folder, name)
    _remove_study(writer, paths)


def _remove_study(writer: RecordWriter, paths: RecordPaths) -> None:
    """Take the study out of the patient's StudyList (the record goes when it empties)."""
    with _existing(writer, paths.patient) as (folder, name):
        if folder is None:
            return
        lock_folder(folder)
        record = writer.read(folder, name)
        entry = record.get(paths.patient_id)
        if not isinstance(entry, dict):
            return
        studies = entry.get("StudyList")
        if not isinstance(studies, list) or paths.study_uid not in studies:
            return
        if _has_entries(writer, paths.study_series_dir):
            return  # a series of it was recorded meanwhile
        studies.remove(paths.study_uid)
        if studies or len(record) > 1:
            place_bytes(writer.encode(record), folder, name, sync=writer.fsync)
        else:
            _unlink_at(folder, name)


def _existing(writer: RecordWriter, rel: str) -> _Existing:
    """``with _existing(writer, rel) as (folder, name)``: the record's folder, open (no
    link followed; None when it is missing, a link or not a folder), and its name."""
    directory, _, name = rel.rpartition("/")
    try:
        folder: Folder | None = writer.tree.folder_at(f"{writer.logdir}/{directory}", create=False)
    except OSError:  # missing, or a link / not a folder (NotRegularError): nothing to do
        folder = None
    return _Existing(folder, name)


def _has_entries(writer: RecordWriter, rel_folder: str) -> bool:
    """Whether the log folder ``rel_folder`` holds anything (a missing one holds nothing)."""
    try:
        folder = writer.tree.folder_at(f"{writer.logdir}/{rel_folder}", create=False)
    except FileNotFoundError:
        return False
    with folder:
        return bool(os.listdir(folder.fd))


class _Existing:
    """``(folder or None, name)`` for a ``with`` block that closes the folder."""

    __slots__ = ("folder", "name")

    def __init__(self, folder: Folder | None, name: str) -> None:
        self.folder, self.name = folder, name

    def __enter__(self) -> tuple[Folder | None, str]:
        return self.folder, self.name

    def __exit__(self, *exc: object) -> None:
        if self.folder is not None:
            self.folder.close()


def _unlink_at(folder: Folder, name: str) -> None:
    """Remove ``name`` in ``folder`` (a record, never followed: unlink removes a link itself)."""
    try:
        os.unlink(name, dir_fd=folder.fd)
    except FileNotFoundError:
        pass
