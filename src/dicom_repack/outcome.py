"""What happened to one instance: the value every door reports from."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Outcome:
    """The result of one instance through the job.

    ``missing`` lists the layout keywords that were absent (or empty under the rx
    layout) and so were replaced by their keyword, as rx-repack reports them.
    ``error`` is None on success, else a one-line reason naming the file.
    """

    src: str
    dst: str | None = None
    size: int = 0
    patient_id: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    missing: tuple[str, ...] = field(default_factory=tuple)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, object]:
        """The NDJSON line's fields (rx-repack's --log-ndjson, plus the study and SOP UIDs)."""
        return {
            "src": self.src,
            "dst": self.dst,
            "size": self.size,
            "PatientID": self.patient_id,
            "StudyInstanceUID": self.study_uid,
            "SeriesInstanceUID": self.series_uid,
            "SOPInstanceUID": self.sop_uid,
            "missing": list(self.missing),
            "error": self.error,
        }
