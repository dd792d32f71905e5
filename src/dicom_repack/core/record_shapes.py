"""The pypx record shapes, in one place: what each JSON file in the log folder holds.

These are :class:`typing.TypedDict` declarations for readers and for ``mypy``
(as rx-repack's ``log_models.rs`` declares its structs). The writer
(:mod:`.records`) imports them only under ``TYPE_CHECKING``: importing ``typing``
costs the per-instance door more than it can spare. Its field tuples
(``PATIENT_FIELDS``, ...) list the same keys in the same order; a test holds the
two equal. Values are px-repack's texts (``"%s" % dataset.Keyword``), or
``"Not defined"`` for an absent element. See docs/records.md.

Each file maps one key (the PatientID, StudyInstanceUID or SeriesInstanceUID)
to one of these::

    patientData/<PatientID>.json                  {PatientID: PatientRecord}
    studyData/<StudyUID>-meta.json                {StudyUID: StudyRecord}
    studyData/<StudyUID>-series/<SeriesUID>-meta.json
                                                  {StudyUID: SeriesDumpRecord}
    seriesData/<SeriesUID>-meta.json              {SeriesUID: SeriesRecord}
    seriesData/<SeriesUID>-img/<file>.json        {SeriesUID: ImageRecord}
    seriesData/<SeriesUID>-pack.json              PackRecord
"""

from __future__ import annotations

from typing import TypedDict

__all__ = [
    "DumpEntry",
    "ImageRecord",
    "ImageStat",
    "PackRecord",
    "PatientRecord",
    "SeriesDumpRecord",
    "SeriesRecord",
    "StudyRecord",
]


class PatientRecord(TypedDict):
    """``patientData/<PatientID>.json``: the patient, and every study seen for it."""

    PatientID: str
    PatientName: str
    PatientAge: str
    PatientSex: str
    PatientBirthDate: str
    StudyList: list[str]


class StudyRecord(TypedDict):
    """``studyData/<StudyInstanceUID>-meta.json`` (first writer wins)."""

    PatientID: str
    StudyDescription: str
    StudyDate: str
    StudyInstanceUID: str
    PerformedStationAETitle: str


class SeriesRecord(TypedDict):
    """``seriesData/<SeriesInstanceUID>-meta.json`` (first writer wins)."""

    PatientID: str
    StudyInstanceUID: str
    SeriesInstanceUID: str
    SeriesDescription: str
    SeriesNumber: str
    SeriesDate: str
    Modality: str


class DumpEntry(TypedDict):
    """One element of the series' full-header dump: its text and its keyword."""

    value: str
    label: str


class SeriesDumpRecord(TypedDict):
    """``studyData/<StudyUID>-series/<SeriesUID>-meta.json``: the series' first instance, whole."""

    SeriesInstanceUID: str
    SeriesBaseDir: str
    DICOM: dict[str, DumpEntry]


class ImageStat(TypedDict):
    """pypx's ``imageObj`` entry: the placed file's ``os.stat`` and where it is.

    Times are local date strings (``str(datetime.fromtimestamp(t))``); ``nlink``
    is the count once the job is done (1 for a file filed once, as px-repack's).
    """

    atime: str
    blksize: int
    blocks: int
    ctime: str
    dev: int
    gid: int
    ino: int
    mode: int
    mtime: str
    nlink: int
    rdev: int
    size: int
    uid: int
    FSlocation: str


class ImageRecord(SeriesRecord):
    """``seriesData/<SeriesUID>-img/<file>.json``: the series fields, the file, its stat.

    Replaced each time the instance is filed; the one place that says where an
    instance (of this file name) stands, which is how a re-filed instance's
    earlier copy is found and removed.
    """

    outputFile: str
    imageObj: dict[str, ImageStat]


class PackRecord(TypedDict):
    """``seriesData/<SeriesUID>-pack.json``."""

    seriesPack: bool
