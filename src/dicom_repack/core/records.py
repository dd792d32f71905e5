"""The pypx log records that px-repack and rx-repack write and pypx's tools read.

Layout of the log folder (one instance adds or touches each of these)::

    patientData/<PatientID>.json                          StudyList accumulates
    studyData/<StudyInstanceUID>-meta.json                first writer wins
    studyData/<StudyInstanceUID>-series/<SeriesInstanceUID>-meta.json
                                                          first writer wins; full header dump
    seriesData/<SeriesInstanceUID>-meta.json              first writer wins
    seriesData/<SeriesInstanceUID>-img/<file name>.json   replaced per instance
    seriesData/<SeriesInstanceUID>-pack.json              {"seriesPack": true}

Every write is atomic (temporary file in the same folder, then rename, or a
hard link for "create if absent"), so a reader never sees half a record. The
one read-modify-write, a patient's StudyList, runs under an exclusive lock on
the patientData folder, so concurrent writers never lose a study. File names
built from tag values go through :func:`~.layout.safe_name`, the layout's rule.
"""

from __future__ import annotations

import os
import time

from . import jsonio
from .errors import RecordError
from .layout import safe_name
from .place import ensure_dir, place_bytes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["RECORD_KEYWORDS", "RecordWriter"]

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


def _model(fields: tuple[str, ...], values: Mapping[str, str]) -> dict[str, object]:
    return {k: values.get(k, NOT_DEFINED) for k in fields}


def _stat_record(st: os.stat_result, location: str) -> dict[str, object]:
    """pypx's imageObj entry: every os.stat field (times as local date strings) + FSlocation."""
    rec: dict[str, object] = {
        "atime": _time_text(st.st_atime),
        "blksize": st.st_blksize,
        "blocks": st.st_blocks,
        "ctime": _time_text(st.st_ctime),
        "dev": st.st_dev,
        "gid": st.st_gid,
        "ino": st.st_ino,
        "mode": st.st_mode,
        "mtime": _time_text(st.st_mtime),
        "nlink": st.st_nlink,
        "rdev": st.st_rdev,
        "size": st.st_size,
        "uid": st.st_uid,
        "FSlocation": location,
    }
    return rec


def _time_text(t: float) -> str:
    """``str(datetime.fromtimestamp(t))`` without importing datetime."""
    whole = int(t // 1)
    micro = round((t - whole) * 1_000_000)
    if micro == 1_000_000:
        whole, micro = whole + 1, 0
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(whole))
    return f"{text}.{micro:06d}" if micro else text


def _lock_dir(directory: str) -> int:
    """Open ``directory`` (creating it) and take an exclusive flock on it.

    Returns the fd; closing it releases the lock. Locking the folder rather than a
    lock file leaves nothing in the log folder that pypx's tools would not expect.
    """
    import fcntl

    try:
        dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        ensure_dir(directory)
        dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(dirfd, fcntl.LOCK_EX)
    except BaseException:
        os.close(dirfd)
        raise
    return dirfd


class RecordWriter:
    """Writes the records of one log folder; safe to use from many processes at once."""

    def __init__(self, logdir: str, *, fsync: bool = False) -> None:
        self.logdir = os.path.abspath(logdir)
        self.fsync = fsync
        self.patient_dir = f"{self.logdir}/patientData"
        self.study_dir = f"{self.logdir}/studyData"
        self.series_dir = f"{self.logdir}/seriesData"
        self._filed: dict[tuple[str, str], float] = {}
        self._known: dict[str, float] = {}

    def write(
        self,
        values: Mapping[str, str],
        *,
        series_base_dir: str,
        file_name: str,
        stat: os.stat_result,
        dump: Callable[[], dict[str, str]],
        origin: str,
    ) -> None:
        """Record one placed instance.

        ``values`` are the header's px-repack texts; ``series_base_dir`` and
        ``file_name`` give where it was placed; ``dump`` returns the full-header
        dump for the series record and is only called for a series' first instance.
        ``origin`` names the instance in errors.
        """
        try:
            self._write(values, series_base_dir, file_name, stat, dump)
        except RecordError:
            raise
        except (OSError, jsonio.JSONError, TypeError) as exc:
            raise RecordError(origin, f"cannot write records in {self.logdir}: {exc}") from None

    def _write(
        self,
        values: Mapping[str, str],
        series_base_dir: str,
        file_name: str,
        stat: os.stat_result,
        dump: Callable[[], dict[str, str]],
    ) -> None:
        patient_id = values["PatientID"]
        study_uid = values["StudyInstanceUID"]
        series_uid = values["SeriesInstanceUID"]
        study_name = safe_name(study_uid)
        series_name = safe_name(series_uid)

        self._patient(patient_id, study_uid, values)
        self._create_if_absent(
            self.study_dir,
            f"{study_name}-meta.json",
            lambda: {study_uid: _model(STUDY_FIELDS, values)},
        )
        self._create_if_absent(
            f"{self.study_dir}/{study_name}-series",
            f"{series_name}-meta.json",
            lambda: {
                study_uid: {
                    "SeriesInstanceUID": series_uid,
                    "SeriesBaseDir": series_base_dir,
                    "DICOM": {k: {"value": v, "label": k} for k, v in dump().items()},
                }
            },
            serialise=True,
        )
        series_model = _model(SERIES_FIELDS, values)
        self._create_if_absent(
            self.series_dir, f"{series_name}-meta.json", lambda: {series_uid: series_model}
        )
        image = dict(series_model)
        image["outputFile"] = file_name
        image["imageObj"] = {file_name: _stat_record(stat, f"{series_base_dir}/{file_name}")}
        self._replace(
            f"{self.series_dir}/{series_name}-img",
            safe_name(file_name, ".json"),
            {series_uid: image},
        )
        self._create_if_absent(
            self.series_dir, f"{series_name}-pack.json", lambda: {"seriesPack": True}
        )

    # -- the three kinds of write -------------------------------------------------

    @staticmethod
    def _encode(obj: object) -> bytes:
        return jsonio.dumps(obj).encode("ascii")

    def _replace(self, directory: str, name: str, obj: object) -> None:
        place_bytes(self._encode(obj), directory, name, sync=self.fsync)

    def _create_if_absent(
        self, directory: str, name: str, make: Callable[[], object], *, serialise: bool = False
    ) -> None:
        """Write ``directory/name`` unless it exists; the first writer wins, atomically.

        Paths known to exist are remembered for a while (bounded, and re-checked
        after _KNOWN_TTL seconds), so a batch or a receiver does not stat three
        records per instance; a folder deleted under a long-running receiver is
        noticed again within that time.
        """
        path = f"{directory}/{name}"
        now = time.monotonic()
        seen = self._known.get(path)
        if seen is not None and now - seen < _KNOWN_TTL:
            return
        if not os.path.exists(path):
            if serialise:
                self._create_serialised(directory, name, make)
            else:
                self._write_new(directory, name, make)
        if len(self._known) >= _CACHE_MAX:
            self._known.clear()
        self._known[path] = now

    def _create_serialised(self, directory: str, name: str, make: Callable[[], object]) -> None:
        """Create-if-absent for a record that is costly to make (the full-header dump).

        When storescp starts hundreds of per-instance processes at once, all of a
        series' first arrivals find its record missing; without this, each would
        import pydicom and dump the header (~0.25 s CPU) only for one of them to
        win. Under an exclusive lock on the folder, one makes it and the others
        wait, find it, and skip.
        """
        dirfd = _lock_dir(directory)
        try:
            if not os.path.exists(f"{directory}/{name}"):
                self._write_new(directory, name, make)
        finally:
            os.close(dirfd)  # releases the lock

    def _write_new(self, directory: str, name: str, make: Callable[[], object]) -> None:
        """Write ``directory/name`` atomically unless it appeared meanwhile.

        Another writer (another process, or one that does not take the lock) got
        there first with the same facts: its record stands.
        """
        try:
            place_bytes(self._encode(make()), directory, name, replace=False, sync=self.fsync)
        except FileExistsError:
            pass

    def _patient(self, patient_id: str, study_uid: str, values: Mapping[str, str]) -> None:
        """Add ``study_uid`` to the patient's StudyList, under the folder lock if it must change."""
        key = (patient_id, study_uid)
        seen = self._filed.get(key)
        if seen is not None and time.monotonic() - seen < _KNOWN_TTL:
            return
        name = safe_name(patient_id, ".json")
        path = f"{self.patient_dir}/{name}"
        if not self._patient_has(path, patient_id, study_uid):
            dirfd = _lock_dir(self.patient_dir)
            try:
                record = self._read(path)
                entry = record.get(patient_id)
                if not isinstance(entry, dict):
                    entry = _model(PATIENT_FIELDS, values)
                    entry["StudyList"] = []
                    record[patient_id] = entry
                studies = entry.setdefault("StudyList", [])
                if not isinstance(studies, list):
                    raise RecordError(path, "existing StudyList is not a JSON list; left as it is")
                if study_uid not in studies:
                    studies.append(study_uid)
                    self._replace(self.patient_dir, name, record)
            finally:
                os.close(dirfd)  # releases the lock
        if len(self._filed) >= _CACHE_MAX:
            self._filed.clear()
        self._filed[key] = time.monotonic()

    def _patient_has(self, path: str, patient_id: str, study_uid: str) -> bool:
        record = self._read(path)
        entry = record.get(patient_id)
        if not isinstance(entry, dict):
            return False
        studies = entry.get("StudyList")
        return isinstance(studies, list) and study_uid in studies

    @staticmethod
    def _read(path: str) -> dict[str, object]:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            return {}
        try:
            obj = jsonio.loads(text)
        except jsonio.JSONError as exc:
            raise RecordError(path, f"existing record is not JSON ({exc}); left as it is") from None
        if not isinstance(obj, dict):
            raise RecordError(path, "existing record is not a JSON object; left as it is")
        return obj
