"""One instance through the job: header -> layout -> place -> records -> Outcome.

Every door (per-instance, batch, listen, bench) calls :class:`Repacker`; none of
them re-implements a step. A bad instance never raises out of here: the
:class:`~.outcome.Outcome` carries a one-line error naming the file, and nothing
is left half-done (no partial file, no source removed before its copy is
complete, no file without its records).
"""

from __future__ import annotations

import os

from .errors import MissingElementError, PlacementError, RecordError, RepackError, SourceError
from .header import read_header, read_small_file
from .layout import Layout
from .outcome import Outcome
from .place import Placed, place_bytes, place_file
from .records import RECORD_KEYWORDS, RecordWriter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["REQUIRED", "Config", "Repacker"]

#: Without these an instance cannot be filed or recorded (rx-repack refuses them too).
REQUIRED = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


class Config:
    """Where to file instances and how to name them."""

    __slots__ = ("datadir", "fsync", "layout", "logdir")

    def __init__(
        self,
        datadir: str,
        logdir: str | None = None,
        layout: Layout | None = None,
        *,
        fsync: bool = False,
    ) -> None:
        self.datadir = datadir
        self.logdir = logdir
        self.layout = layout if layout is not None else Layout.rx()
        #: fsync every file and record before reporting success (a receiver's
        #: "stored" then survives a power cut; costs a disk flush per file)
        self.fsync = fsync


class Repacker:
    """Files instances under one :class:`Config`; cheap to call once per instance."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.datadir = os.path.abspath(config.datadir)
        self.layout = config.layout
        self.records = RecordWriter(config.logdir, fsync=config.fsync) if config.logdir else None
        self.keywords = tuple(dict.fromkeys(REQUIRED + self.layout.keywords + RECORD_KEYWORDS))

    def repack_path(self, src: str, *, move: bool = False) -> Outcome:
        """File the Part 10 file at ``src`` (copied, or moved when ``move``).

        Never raises for a bad instance: the Outcome carries the error.
        """
        sync = self.config.fsync
        if not move:
            # a typical instance is read once, parsed, and written from those bytes
            try:
                data = read_small_file(src)
            except OSError as exc:
                return _failed(src, SourceError(src, f"cannot read: {exc.strerror or exc}"))
            except RepackError as exc:  # NotRegularFileError: a FIFO, socket, device
                return _failed(src, exc)
            if data is not None:
                return self._job(
                    src,
                    data,
                    lambda directory, name: place_bytes(data, directory, name, sync=sync),
                    moved_from=None,
                )
        return self._job(
            src,
            src,
            lambda directory, name: place_file(src, directory, name, move=move, sync=sync),
            moved_from=src if move else None,
        )

    def repack_buffer(self, data: bytes | memoryview, *, origin: str = "<network>") -> Outcome:
        """File a complete Part 10 file held in memory (preamble, 'DICM', meta, dataset).

        Written once, straight to its final path (temporary file in the
        destination folder, then rename), then recorded.
        """
        sync = self.config.fsync
        return self._job(
            origin,
            data,
            lambda directory, name: place_bytes(data, directory, name, sync=sync),
            moved_from=None,
        )

    def _job(
        self,
        origin: str,
        source: str | bytes | memoryview,
        place: Callable[[str, str], Placed],
        *,
        moved_from: str | None,
    ) -> Outcome:
        """header -> layout -> place -> records, for either kind of source."""
        out = Outcome(origin)
        try:
            try:
                header = read_header(source, self.keywords, name=origin)
            except OSError as exc:
                raise SourceError(origin, f"cannot read: {exc.strerror or exc}") from None
            directory, name = self._plan(origin, header.values, header.empty, out)
            dst = f"{directory}/{name}"
            try:
                placed = place(directory, name)
            except OSError as exc:
                raise PlacementError(
                    origin, f"cannot place at {dst}: {exc.strerror or exc}", errno=exc.errno
                ) from None
            st = placed.stat
            out.dst, out.size = dst, st.st_size
            try:
                # the series dump reads the bytes already in memory, else the placed file
                dump_from = dst if isinstance(source, str) else source
                self._record(header.values, directory, name, st, dump_from, origin)
            except RecordError:
                self._undo(moved_from, dst, existed=placed.replaced)
                raise
        except RepackError as exc:
            _fail(out, exc)
        return out

    # -- steps -------------------------------------------------------------------

    def _plan(
        self, origin: str, vals: Mapping[str, str], empty: frozenset[str], out: Outcome
    ) -> tuple[str, str]:
        out.patient_id = vals.get("PatientID")
        out.study_uid = vals.get("StudyInstanceUID")
        out.series_uid = vals.get("SeriesInstanceUID")
        out.sop_uid = vals.get("SOPInstanceUID")
        lacking = [k for k in REQUIRED if not (vals.get(k) or "").strip() or k in empty]
        if lacking:
            raise MissingElementError(origin, f"missing or empty {', '.join(lacking)}; not filed")
        plan = self.layout.plan(vals, empty)
        out.missing = plan.missing
        return f"{self.datadir}/{plan.series_dir}", plan.image

    def _record(
        self,
        values: Mapping[str, str],
        directory: str,
        name: str,
        st: os.stat_result,
        dump_from: str | bytes | memoryview,
        origin: str,
    ) -> None:
        if self.records is None:
            return
        self.records.write(
            values,
            series_base_dir=directory,
            file_name=name,
            stat=st,
            dump=lambda: _dump(dump_from),
            origin=origin,
        )

    @staticmethod
    def _undo(moved_from: str | None, dst: str, *, existed: bool) -> None:
        """Put things back after the records failed: no file may stand without its records."""
        try:
            if moved_from is not None:
                os.rename(dst, moved_from)
            elif not existed:
                os.unlink(dst)
        except OSError:
            pass


def _fail(out: Outcome, exc: RepackError) -> None:
    out.error = str(exc)
    out.kind = type(exc).__name__
    out.errno = exc.errno
    out.dst = None


def _failed(origin: str, exc: RepackError) -> Outcome:
    out = Outcome(origin)
    _fail(out, exc)
    return out


def _dump(source: str | bytes | memoryview) -> dict[str, str]:
    """The series record's full-header dump (imported only when a series starts)."""
    from .dump import header_dump

    return header_dump(source)
