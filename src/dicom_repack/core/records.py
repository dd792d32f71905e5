"""The pypx log records that px-repack and rx-repack write and pypx's tools read.

Layout of the log folder (one instance adds or touches each of these)::

    patientData/<PatientID>.json                          StudyList accumulates
    studyData/<StudyInstanceUID>-meta.json                first writer wins
    studyData/<StudyInstanceUID>-series/<SeriesInstanceUID>-meta.json
                                                          first writer wins; full header dump
    seriesData/<SeriesInstanceUID>-meta.json              first writer wins
    seriesData/<SeriesInstanceUID>-img/<file name>.json   replaced per instance
    seriesData/<SeriesInstanceUID>-pack.json              {"seriesPack": true}

Every path above is computed by :func:`record_paths`, the one place that names
a record: this writer, the bench's verifier and the tests all call it, so a
record's name (including the cut-and-hash rule for UIDs too long for a file
name) is decided once.

Every write is atomic (temporary file in the same folder, then rename, or a
hard link for "create if absent"), so a reader never sees half a record; it
happens in a folder opened without following a link (:mod:`.tree`), and a
record is read only if it is a regular file (a link or FIFO planted at a
record's name is refused in one line naming it). The
one read-modify-write, a patient's StudyList, runs under an exclusive lock on
the patientData folder, so concurrent writers never lose a study. File names
built from tag values go through :func:`~.layout.safe_name`, the layout's rule.
"""

from __future__ import annotations

import os
import time

from . import jsonio
from .errors import RecordError, RepackError, UnsafePathError
from .layout import safe_name
from .place import place_bytes
from .tree import NotRegularError, Tree, open_below, open_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from contextlib import AbstractContextManager

    from .record_shapes import (
        ImageRecord,
        ImageStat,
        PatientRecord,
        SeriesDumpRecord,
        SeriesRecord,
        StudyRecord,
    )
    from .tree import Folder

__all__ = ["RECORD_KEYWORDS", "RecordPaths", "RecordWriter", "record_paths"]

NOT_DEFINED = "Not defined"
PATIENT_FIELDS = ("PatientID", "PatientName", "PatientAge", "PatientSex", "PatientBirthDate")
STUDY_FIELDS = (
    "PatientID",
    "StudyDescription",
    "StudyDate",
    "StudyInstanceUID",
    "PerformedStationAETitle",
)
SERIES_FIELDS = (
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesDescription",
    "SeriesNumber",
    "SeriesDate",
    "Modality",
)
#: Every element the records read from the header.
RECORD_KEYWORDS = tuple(dict.fromkeys(PATIENT_FIELDS + STUDY_FIELDS + SERIES_FIELDS))

#: How many records a long-running process remembers as written, and for how long.
_CACHE_MAX = 4096
_KNOWN_TTL = 30.0


#: The three top-level folders of a log folder.
PATIENT_DIR, STUDY_DIR, SERIES_DIR = "patientData", "studyData", "seriesData"


class RecordPaths:
    """Where one instance's records live, each relative to the log folder ('/'-separated).

    Made by :func:`record_paths`; each path is computed when first asked for.
    Every name goes through :func:`~.layout.safe_name` with its suffix
    (``.json``, ``-meta.json``, ``-series``, ``-img``, ``-pack.json``) kept whole,
    so a value too long for a file name is cut and hashed *before* the suffix,
    never made into a name over 255 bytes.
    """

    __slots__ = ("file_name", "patient_id", "series_uid", "study_uid")

    def __init__(self, patient_id: str, study_uid: str, series_uid: str, file_name: str) -> None:
        self.patient_id = patient_id
        self.study_uid = study_uid
        self.series_uid = series_uid
        self.file_name = file_name

    @property
    def patient(self) -> str:
        """``patientData/<PatientID>.json``: the patient and its StudyList."""
        return f"{PATIENT_DIR}/{safe_name(self.patient_id, '.json')}"

    @property
    def study(self) -> str:
        """``studyData/<StudyInstanceUID>-meta.json``."""
        return f"{STUDY_DIR}/{safe_name(self.study_uid, '-meta.json')}"

    @property
    def study_series_dir(self) -> str:
        """``studyData/<StudyInstanceUID>-series``: the folder of the series' header dumps."""
        return f"{STUDY_DIR}/{safe_name(self.study_uid, '-series')}"

    @property
    def study_series(self) -> str:
        """``studyData/<StudyInstanceUID>-series/<SeriesInstanceUID>-meta.json`` (header dump)."""
        return f"{self.study_series_dir}/{safe_name(self.series_uid, '-meta.json')}"

    @property
    def series(self) -> str:
        """``seriesData/<SeriesInstanceUID>-meta.json``."""
        return f"{SERIES_DIR}/{safe_name(self.series_uid, '-meta.json')}"

    @property
    def image_dir(self) -> str:
        """``seriesData/<SeriesInstanceUID>-img``: the folder of the image records."""
        return f"{SERIES_DIR}/{safe_name(self.series_uid, '-img')}"

    @property
    def image(self) -> str:
        """``seriesData/<SeriesInstanceUID>-img/<file name>.json``: this instance's record."""
        return f"{self.image_dir}/{safe_name(self.file_name, '.json')}"

    @property
    def pack(self) -> str:
        """``seriesData/<SeriesInstanceUID>-pack.json``: ``{"seriesPack": true}``."""
        return f"{SERIES_DIR}/{safe_name(self.series_uid, '-pack.json')}"


def record_paths(
    patient_id: str, study_uid: str, series_uid: str, file_name: str = ""
) -> RecordPaths:
    """The records of one instance: the one rule for a record's path.

    Pass the header's values as the writer receives them (``values["PatientID"]``
    and so on, not stripped) and the instance's file name in the data tree
    (``Plan.image``). Example::

        >>> record_paths("P1", "1.2", "1.2.3", "0001-1.2.3.4.dcm").image
        'seriesData/1.2.3-img/0001-1.2.3.4.dcm.json'
    """
    return RecordPaths(patient_id, study_uid, series_uid, file_name)


# The record shapes are declared once, as TypedDicts, in record_shapes.py (imported
# for mypy only); these builders fill them from the header's values.


#: Fields rx-repack reads through its ``CommonElements`` (dicom-rs ``string()``), for which an
#: element present but empty counts as absent (``"Not defined"``); it reads the others with
#: ``to_str()``, which gives ``""`` for an empty one, as px-repack's ``"%s" % value`` does
#: for text. px-repack writes ``""`` for an empty date or text and ``"None"`` for an empty
#: number (pydicom 2.4's value of an empty IS).
RX_EMPTY_IS_ABSENT = frozenset(
    ("PatientBirthDate", "StudyDescription", "StudyDate", "SeriesNumber", "SeriesDescription")
)

#: rx-repack's ``--log-ndjson`` ``missing``: the elements it reads with ``to_str()`` and found
#: absent, by record, in the order it writes them. The patient, study and series records'
#: fields count only when this write creates that record (or the patient's entry).
RX_MISSING_PATIENT = ("PatientName", "PatientAge", "PatientSex")
RX_MISSING_STUDY = ("PerformedStationAETitle",)
RX_MISSING_SERIES = ("Modality",)
RX_MISSING_IMAGE = ("SeriesDescription", "SeriesDate", "Modality")


def rx_values(values: Mapping[str, str]) -> dict[str, str]:
    """``values`` with rx-repack's "Not defined" for the elements in RX_EMPTY_IS_ABSENT
    that are present but empty (``""``, or ``"None"`` for an empty SeriesNumber)."""
    out = dict(values)
    for kw in RX_EMPTY_IS_ABSENT:
        v = out.get(kw)
        if v == "" or (v == "None" and kw == "SeriesNumber"):
            out[kw] = NOT_DEFINED
    return out


def missing_element(keyword: str) -> tuple[str, str, str]:
    """One entry of rx-repack's ``missing``: (tag, name, error) as dicom-rs words them."""
    from .keywords import lookup

    found = lookup(keyword)
    tag = f"({found[0] >> 16:04X},{found[0] & 0xFFFF:04X})" if found else keyword
    return tag, keyword, f"No such data element with tag {tag}"


def _patient_model(values: Mapping[str, str]) -> PatientRecord:
    g = values.get
    return {
        "PatientID": g("PatientID", NOT_DEFINED),
        "PatientName": g("PatientName", NOT_DEFINED),
        "PatientAge": g("PatientAge", NOT_DEFINED),
        "PatientSex": g("PatientSex", NOT_DEFINED),
        "PatientBirthDate": g("PatientBirthDate", NOT_DEFINED),
        "StudyList": [],
    }


def _study_model(values: Mapping[str, str]) -> StudyRecord:
    g = values.get
    return {
        "PatientID": g("PatientID", NOT_DEFINED),
        "StudyDescription": g("StudyDescription", NOT_DEFINED),
        "StudyDate": g("StudyDate", NOT_DEFINED),
        "StudyInstanceUID": g("StudyInstanceUID", NOT_DEFINED),
        "PerformedStationAETitle": g("PerformedStationAETitle", NOT_DEFINED),
    }


def _series_model(values: Mapping[str, str]) -> SeriesRecord:
    g = values.get
    return {
        "PatientID": g("PatientID", NOT_DEFINED),
        "StudyInstanceUID": g("StudyInstanceUID", NOT_DEFINED),
        "SeriesInstanceUID": g("SeriesInstanceUID", NOT_DEFINED),
        "SeriesDescription": g("SeriesDescription", NOT_DEFINED),
        "SeriesNumber": g("SeriesNumber", NOT_DEFINED),
        "SeriesDate": g("SeriesDate", NOT_DEFINED),
        "Modality": g("Modality", NOT_DEFINED),
    }


def _dump_model(series_uid: str, series_base_dir: str, dump: dict[str, str]) -> SeriesDumpRecord:
    return {
        "SeriesInstanceUID": series_uid,
        "SeriesBaseDir": series_base_dir,
        "DICOM": {k: {"value": v, "label": k} for k, v in dump.items()},
    }


def _image_model(series: SeriesRecord, file_name: str, stat: ImageStat) -> ImageRecord:
    return {**series, "outputFile": file_name, "imageObj": {file_name: stat}}


def _stat_record(st: os.stat_result, location: str, nlink: int) -> ImageStat:
    """pypx's imageObj entry: every os.stat field (times as local date strings) + FSlocation.

    ``nlink`` is the file's link count once the job is done (``st`` may have been
    taken before the file was named, or while a moved source still had its name).
    """
    return {
        "atime": _time_text(st.st_atime),
        "blksize": st.st_blksize,
        "blocks": st.st_blocks,
        "ctime": _time_text(st.st_ctime),
        "dev": st.st_dev,
        "gid": st.st_gid,
        "ino": st.st_ino,
        "mode": st.st_mode,
        "mtime": _time_text(st.st_mtime),
        "nlink": nlink,
        "rdev": st.st_rdev,
        "size": st.st_size,
        "uid": st.st_uid,
        "FSlocation": location,
    }


def _time_text(t: float) -> str:
    """``str(datetime.fromtimestamp(t))`` without importing datetime."""
    whole = int(t // 1)
    micro = round((t - whole) * 1_000_000)
    if micro == 1_000_000:
        whole, micro = whole + 1, 0
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(whole))
    return f"{text}.{micro:06d}" if micro else text


class Written:
    """What one :meth:`RecordWriter.write` changed, so that the job can take it back.

    Filled as the records are written, so a write that fails half-way is undone
    as far as it got. ``created``: the shared records (study, series, header
    dump, pack) this write made, relative to the log folder; ``image``: the image
    record it wrote (relative); ``image_before``: the bytes of the image record it
    replaced (None: it made a new one); ``study_added``: it put the study in the
    patient's StudyList; ``previous``: where the replaced image record said the
    instance stood, when that is another path (a changed layout tag).
    ``patient_created``: it made the patient's entry; ``missing``: rx-repack's
    ``--log-ndjson`` ``missing`` for this write, (tag, name, error) each
    (:func:`missing_element`; which elements count: ``RX_MISSING_*``).
    """

    __slots__ = (
        "created",
        "image",
        "image_before",
        "missing",
        "paths",
        "patient_created",
        "previous",
        "study_added",
    )

    def __init__(self) -> None:
        self.paths: RecordPaths | None = None
        self.created: list[str] = []
        self.image: str | None = None
        self.image_before: bytes | None = None
        self.study_added = False
        self.patient_created = False
        self.previous: str | None = None
        self.missing: list[tuple[str, str, str]] = []


class RecordWriter:
    """Writes the records of one log folder; safe to use from many processes at once.

    Every record is written in its folder as :meth:`.tree.Tree.open` opened it
    (no link followed on the way, at every write) and read with
    :func:`.tree.open_file` (a link or a FIFO planted at a record's name is
    refused in one line naming it, never read through, never waited on).
    """

    def __init__(self, logdir: str, *, fsync: bool = False, rx: bool = False) -> None:
        self.logdir = os.path.abspath(logdir)
        self.fsync = fsync
        #: rx-repack's values for empty elements (the rx layout): "Not defined" where it
        #: reads an empty element as absent (RX_EMPTY_IS_ABSENT); else px-repack's
        self.rx = rx
        self.tree = Tree(self.logdir, "log folder")
        self._filed: dict[tuple[str, str], float] = {}
        self._known: dict[str, float] = {}
        #: Extra lock around a patient record's update, by patient ID: the folder's
        #: flock is host-local on NFS, so ``batch --dask`` adds a cluster-wide one
        #: (a call that returns None: none this time, the folder's lock alone).
        self.patient_lock: Callable[[str], AbstractContextManager[object] | None] | None = None

    def write(
        self,
        values: Mapping[str, str],
        *,
        series_base_dir: str,
        file_name: str,
        stat: os.stat_result,
        dump: Callable[[], dict[str, str]],
        origin: str,
        nlink: int = 1,
        written: Written | None = None,
    ) -> str | None:
        """Record one placed instance.

        ``values`` are the header's px-repack texts; ``series_base_dir`` and
        ``file_name`` give where it was placed, ``stat`` and ``nlink`` what it is;
        ``dump`` returns the full-header dump for the series record and is only
        called for a series' first instance. ``origin`` names the instance in errors.

        Returns where the image record said this instance stood before, when that
        is another path (the instance was re-filed elsewhere), else None. Raises
        RecordError, or UnsafePathError for a link (or FIFO, ...) planted in the
        log folder. ``written``, if given, is filled with what was changed
        (:meth:`undo` takes it back), also when the write fails half-way.
        """
        journal = written if written is not None else Written()
        walked: dict[str, Folder] = {}  # the folders this write opened (see _open)
        try:
            return self._write(
                values, series_base_dir, file_name, stat, dump, nlink, origin, journal, walked
            )
        except RepackError:
            raise
        except NotRegularError as exc:
            raise UnsafePathError(origin, str(exc)) from None
        except (OSError, jsonio.JSONError) as exc:
            raise RecordError(
                origin,
                f"cannot write records in {self.logdir}: {exc}",
                errno=exc.errno if isinstance(exc, OSError) else None,
            ) from None
        finally:
            for folder in walked.values():
                folder.close()

    def _write(
        self,
        values: Mapping[str, str],
        series_base_dir: str,
        file_name: str,
        stat: os.stat_result,
        dump: Callable[[], dict[str, str]],
        nlink: int,
        origin: str,
        journal: Written,
        walked: dict[str, Folder],
    ) -> str | None:
        patient_id = values["PatientID"]
        study_uid = values["StudyInstanceUID"]
        series_uid = values["SeriesInstanceUID"]
        paths = journal.paths = record_paths(patient_id, study_uid, series_uid, file_name)
        created = journal.created
        as_read = values  # the image record's fields: rx-repack reads them with to_str()
        if self.rx:
            values = rx_values(values)
        journal.study_added = self._patient(
            patient_id, study_uid, values, paths.patient, origin, journal, walked
        )
        self._create_if_absent(
            paths.study,
            origin,
            lambda: {study_uid: _study_model(values)},
            created=created,
            walked=walked,
        )
        self._create_if_absent(
            paths.study_series,
            origin,
            lambda: {study_uid: _dump_model(series_uid, series_base_dir, dump())},
            serialise=True,
            created=created,
            walked=walked,
        )
        series_model = _series_model(values)
        self._create_if_absent(
            paths.series, origin, lambda: {series_uid: series_model}, created=created, walked=walked
        )
        location = f"{series_base_dir}/{file_name}"
        image_series = series_model
        if self.rx:  # rx-repack's image record reads these three with to_str(): "" when empty
            image_series = _series_model({**values, **_pick(as_read, RX_MISSING_IMAGE)})
        image = _image_model(image_series, file_name, _stat_record(stat, location, nlink))
        previous = self._image(paths.image, origin, {series_uid: image}, journal, walked)
        self._create_if_absent(
            paths.pack, origin, lambda: {"seriesPack": True}, created=created, walked=walked
        )
        journal.previous = previous if previous != location else None
        journal.missing = _rx_missing(as_read, journal, paths)
        return journal.previous

    def _open(self, rel: str, origin: str, walked: dict[str, Folder]) -> tuple[Folder, str]:
        """A record's relative path -> (its folder, open, created, no link on the way; its name).

        One write opens each folder once (``walked``: relative path -> open folder, all
        closed by :meth:`write` at its end): each folder is opened in its parent as
        that write opened it, so the log folder is opened once a write, not once a
        record (six folders walked from the log folder's root were 14 ``openat`` and
        14 ``close``; now 6 and 6). Nothing is kept from one write to the next.
        """
        folder, _, name = rel.rpartition("/")
        return self._folder(folder, origin, walked), name

    def _folder(self, rel: str, origin: str, walked: dict[str, Folder]) -> Folder:
        """The log folder's folder ``rel`` ("" the log folder), opened once per write."""
        found = walked.get(rel)
        if found is not None:
            return found
        if not rel:
            found = self.tree.open(self.logdir, origin)
        else:
            above, _, part = rel.rpartition("/")
            parent = self._folder(above, origin, walked)
            try:
                found = open_below(
                    parent.fd, parent.path, [part], create=True, what="log folder", top=self.logdir
                )
            except FileNotFoundError:  # the parent removed meanwhile (an empty folder pruned)
                found = self.tree.open(f"{self.logdir}/{rel}", origin)  # walked anew
        walked[rel] = found
        return found

    @staticmethod
    def _let_go(folder: Folder, walked: dict[str, Folder]) -> None:
        """Close ``folder`` now (a lock taken on it goes with it), not at the write's end."""
        for rel, open_folder in list(walked.items()):
            if open_folder is folder:
                del walked[rel]
        folder.close()

    def _image(
        self, rel: str, origin: str, obj: object, journal: Written, walked: dict[str, Folder]
    ) -> str | None:
        """Write the image record; return the FSlocation the one it replaced named, if any.

        A new instance costs one link, as any new record; only a record that was
        already there is read first (the instance was filed before: same place,
        or, with a changed layout tag, elsewhere), and kept in ``journal`` so
        that an undo can put it back.
        """
        data = self.encode(obj)
        folder, name = self._open(rel, origin, walked)
        try:
            place_bytes(data, folder, name, replace=False, sync=self.fsync)
            journal.image = rel
            return None
        except FileExistsError:
            pass
        from .record_files import location_of, parse_quietly, read_record_bytes

        before = read_record_bytes(folder, name, refuse=True)  # a link or FIFO there: refused
        previous = location_of(parse_quietly(before))
        place_bytes(data, folder, name, sync=self.fsync)
        journal.image, journal.image_before = rel, before or None
        return previous

    # -- the three kinds of write -------------------------------------------------

    @staticmethod
    def encode(obj: object) -> bytes:
        return jsonio.dumps(obj).encode("ascii")

    def _create_if_absent(
        self,
        rel: str,
        origin: str,
        make: Callable[[], object],
        *,
        serialise: bool = False,
        created: list[str] | None = None,
        walked: dict[str, Folder] | None = None,
    ) -> None:
        """Write the record ``rel`` unless it exists; the first writer wins, atomically.

        Records known to exist are remembered for a while (bounded, and re-checked
        after _KNOWN_TTL seconds), so a batch or a receiver does not open three
        folders per instance to find records it already wrote (nothing is written
        then: a folder replaced meanwhile is not written through); a folder
        deleted under a long-running receiver is noticed again within that time.
        Whatever stands at the name (a record, a link, a FIFO) counts as there and
        is neither opened nor replaced. ``created`` gets ``rel`` if this call made it.
        ``walked``: the folders the write opened (:meth:`_open`; None: this call's own).
        """
        now = time.monotonic()
        seen = self._known.get(rel)
        if seen is not None and now - seen < _KNOWN_TTL:
            return
        own: dict[str, Folder] = {} if walked is None else walked
        try:
            folder, name = self._open(rel, origin, own)
            if not _exists(folder, name):
                if serialise:
                    made = self._create_serialised(folder, name, make)
                    self._let_go(folder, own)  # its lock with it
                else:
                    made = self._write_new(folder, name, make)
                if made and created is not None:
                    created.append(rel)
        finally:
            if walked is None:
                for open_folder in own.values():
                    open_folder.close()
        if len(self._known) >= _CACHE_MAX:
            self._known.clear()
        self._known[rel] = now

    def _create_serialised(self, folder: Folder, name: str, make: Callable[[], object]) -> bool:
        """Create-if-absent for a record that is costly to make (the full-header dump).

        When storescp starts hundreds of per-instance processes at once, all of a
        series' first arrivals find its record missing; without this, each would
        import pydicom and dump the header (~0.25 s CPU) only for one of them to
        win. Under an exclusive lock on the folder, one makes it and the others
        wait, find it, and skip. The lock goes with the folder's closing.
        """
        from .record_files import lock_folder  # the rare writes: not loaded at every start

        lock_folder(folder)
        return not _exists(folder, name) and self._write_new(folder, name, make)

    def _write_new(self, folder: Folder, name: str, make: Callable[[], object]) -> bool:
        """Write ``name`` in ``folder`` atomically unless it appeared meanwhile (then False).

        Another writer (another process, or one that does not take the lock) got
        there first with the same facts: its record stands.
        """
        try:
            place_bytes(self.encode(make()), folder, name, replace=False, sync=self.fsync)
            return True
        except FileExistsError:
            return False

    def _patient(
        self,
        patient_id: str,
        study_uid: str,
        values: Mapping[str, str],
        rel: str,
        origin: str,
        journal: Written,
        walked: dict[str, Folder],
    ) -> bool:
        """Add ``study_uid`` to the patient's StudyList, under the folder lock if it must
        change; True if this call added it."""
        key = (patient_id, study_uid)
        seen = self._filed.get(key)
        if seen is not None and time.monotonic() - seen < _KNOWN_TTL:
            return False
        added = False
        folder, name = self._open(rel, origin, walked)
        if not self._patient_has(folder, name, patient_id, study_uid):
            try:
                extra = self.patient_lock(patient_id) if self.patient_lock is not None else None
                if extra is None:
                    added = self._add_study(folder, name, patient_id, study_uid, values, journal)
                else:
                    with extra:
                        added = self._add_study(
                            folder, name, patient_id, study_uid, values, journal
                        )
            finally:
                self._let_go(folder, walked)  # the folder's lock with it
        if len(self._filed) >= _CACHE_MAX:
            self._filed.clear()
        self._filed[key] = time.monotonic()
        return added

    def _add_study(
        self,
        folder: Folder,
        name: str,
        patient_id: str,
        study_uid: str,
        values: Mapping[str, str],
        journal: Written,
    ) -> bool:
        """The read-modify-write of a patient's StudyList, under the patientData folder's lock;
        True if it added the study.

        The lock is held until the caller closes ``folder``.
        """
        from .record_files import lock_folder  # the rare writes: not loaded at every start

        lock_folder(folder)
        record = self.read(folder, name)
        entry = record.get(patient_id)
        if not isinstance(entry, dict):
            entry = dict(_patient_model(values))
            record[patient_id] = entry
            journal.patient_created = True
        studies = entry.setdefault("StudyList", [])
        if not isinstance(studies, list):
            raise RecordError(
                f"{folder.path}/{name}", "existing StudyList is not a JSON list; left as it is"
            )
        if study_uid in studies:
            return False
        studies.append(study_uid)
        place_bytes(self.encode(record), folder, name, sync=self.fsync)
        return True

    def folders(self, written: Written) -> list[str]:
        """The log folders ``written`` named a record in, and their parents up to the log
        folder, deepest first (core/records_undo.py)."""
        from .records_undo import folders

        return folders(self, written)

    # -- taking records back (core/records_undo.py: imported only by a job that does) ---

    def forget_known(self) -> None:
        """Forget which records and StudyList entries were seen (some were taken back)."""
        self._known.clear()
        self._filed.clear()

    def undo(self, written: Written) -> None:
        """Take back what one :meth:`write` did; best effort, never raises (see
        :func:`.records_undo.undo`)."""
        from .records_undo import undo

        undo(self, written)

    def forget(self, values: Mapping[str, str], file_name: str, location: str) -> None:
        """Remove the image record of an instance no longer at ``location`` (retired), and
        the series, study and StudyList entry it leaves without any instance. Best effort."""
        from .records_undo import forget

        paths = record_paths(
            values["PatientID"], values["StudyInstanceUID"], values["SeriesInstanceUID"], file_name
        )
        forget(self, paths, location)

    def prune(self, paths: RecordPaths) -> None:
        """Remove the series' records if it has no image record left, then the study's
        (see :func:`.records_undo.prune`)."""
        from .records_undo import prune

        prune(self, paths)

    def _patient_has(self, folder: Folder, name: str, patient_id: str, study_uid: str) -> bool:
        record = self.read(folder, name)
        entry = record.get(patient_id)
        if not isinstance(entry, dict):
            return False
        studies = entry.get("StudyList")
        return isinstance(studies, list) and study_uid in studies

    @staticmethod
    def read(folder: Folder, name: str) -> dict[str, object]:
        """The record ``name`` in ``folder`` ({} if absent); never through a link, never a FIFO."""
        path = f"{folder.path}/{name}"
        try:
            fd, _ = open_file(name, os.O_RDONLY, dir_fd=folder.fd, path=path)
        except FileNotFoundError:
            return {}
        with open(fd, encoding="utf-8") as fh:
            text = fh.read()
        try:
            obj = jsonio.loads(text)
        except jsonio.JSONError as exc:
            raise RecordError(path, f"existing record is not JSON ({exc}); left as it is") from None
        if not isinstance(obj, dict):
            raise RecordError(path, "existing record is not a JSON object; left as it is")
        return obj


def _pick(values: Mapping[str, str], keywords: tuple[str, ...]) -> dict[str, str]:
    return {kw: values[kw] for kw in keywords if kw in values}


def _rx_missing(
    values: Mapping[str, str], journal: Written, paths: RecordPaths
) -> list[tuple[str, str, str]]:
    """rx-repack's ``missing`` for one write (see RX_MISSING_PATIENT and the others)."""
    wanted: list[str] = []
    if journal.patient_created:
        wanted += RX_MISSING_PATIENT
    created = journal.created
    if created and paths.study in created:  # nothing created: no record's name made
        wanted += RX_MISSING_STUDY
    if created and paths.series in created:
        wanted += RX_MISSING_SERIES
    wanted += RX_MISSING_IMAGE
    return [missing_element(kw) for kw in wanted if kw not in values]


def _exists(folder: Folder, name: str) -> bool:
    """Whether anything (a record, a link, a FIFO) stands at ``name`` in ``folder``."""
    try:
        os.stat(name, dir_fd=folder.fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
