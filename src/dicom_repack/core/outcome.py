"""What happened to one instance: the value every door reports from."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .errors import RepackError


class Outcome:
    """The result of one instance through the job.

    ``missing`` lists the layout keywords that were absent (or empty under the rx
    layout) and so were replaced by their keyword (NDJSON ``layout_missing``).
    ``elements_missing`` is rx-repack's ``missing``: (tag, name, error) for each
    element its records read and found absent (core/records.py ``RX_MISSING_*``).
    ``error`` is None on success, else a one-line reason naming the file.
    (A plain class, not a dataclass: ``dataclasses`` imports ``re`` and ``inspect``,
    several milliseconds the per-instance door cannot afford.)
    """

    __slots__ = (
        "dst",
        "elements_missing",
        "errno",
        "error",
        "host",
        "kind",
        "missing",
        "not_regular",
        "patient_id",
        "retryable",
        "series_uid",
        "size",
        "skipped",
        "sop_uid",
        "src",
        "study_uid",
    )

    def __init__(
        self,
        src: str,
        dst: str | None = None,
        size: int = 0,
        patient_id: str | None = None,
        study_uid: str | None = None,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        missing: tuple[str, ...] = (),
        error: str | None = None,
        kind: str | None = None,
        errno: int | None = None,
        elements_missing: tuple[tuple[str, str, str], ...] = (),
    ) -> None:
        self.src = src
        self.dst = dst
        self.size = size
        self.patient_id = patient_id
        self.study_uid = study_uid
        self.series_uid = series_uid
        self.sop_uid = sop_uid
        self.missing = missing
        self.elements_missing = elements_missing
        self.error = error
        #: the error's stable code (errors.py: ``DicomRepackError.code``), for reports
        #: only (NDJSON ``error_kind``, metrics); decisions use ``skipped`` and ``retryable``
        self.kind = kind
        #: the errno of the OSError behind the failure, if any
        self.errno = errno
        #: the input was not an instance at all (not DICOM, not a regular file): skipped
        self.skipped = False
        #: the failure is the destination's (disk full, permissions): retrying later may work
        self.retryable = False
        #: the input was a FIFO, socket, device or folder: skipped, never read
        self.not_regular = False
        #: who filed it (``Config.host``, ``--host-id``); None when not said
        self.host: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def fail(self, exc: RepackError) -> None:
        """Record ``exc`` as this instance's failure (its message, code and attributes)."""
        self.error = str(exc)
        self.kind = exc.code
        self.skipped = exc.skippable
        self.retryable = exc.retryable
        self.not_regular = exc.not_regular
        self.errno = exc.errno
        self.dst = None

    @property
    def destination_failed(self) -> bool:
        """The destination itself failed (read-only, full, I/O error): no use going on."""
        from .destination import is_destination_errno

        return is_destination_errno(self.errno)

    def as_dict(self) -> dict[str, object]:
        """The NDJSON line's fields: rx-repack's --log-ndjson (``missing`` a list of
        ``{tag, name, error}``, left out when empty, as rx-repack does), plus the study
        and SOP UIDs, ``error`` and ``error_kind`` always (null on success), and
        ``layout_missing`` (the layout keywords filed by their name) when not empty, and
        ``host`` (who filed it, ``--host-id``) when the door says."""
        line: dict[str, object] = {
            "src": self.src,
            "dst": self.dst,
            "size": self.size,
            "PatientID": self.patient_id,
            "StudyInstanceUID": self.study_uid,
            "SeriesInstanceUID": self.series_uid,
            "SOPInstanceUID": self.sop_uid,
        }
        if self.elements_missing:
            line["missing"] = [
                {"tag": tag, "name": name, "error": error}
                for tag, name, error in self.elements_missing
            ]
        if self.missing:
            line["layout_missing"] = list(self.missing)
        line["error"] = self.error
        line["error_kind"] = self.kind
        if self.host is not None:
            line["host"] = self.host
        return line

    def __getstate__(self) -> tuple[object, ...]:
        return tuple(getattr(self, k) for k in self.__slots__)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        for k, v in zip(self.__slots__, state, strict=True):
            setattr(self, k, v)

    def __repr__(self) -> str:
        return f"Outcome({self.src!r} -> {self.dst!r}, error={self.error!r})"
