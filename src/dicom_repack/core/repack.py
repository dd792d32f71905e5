"""One instance through the job: header -> plan -> place -> records -> commit.

Every door (per-instance, batch, listen, bench) calls :class:`Repacker`; none of
them re-implements a step. The job, on one screen (:meth:`Repacker.repack`)::

    header  = source.header(keywords)         # the source is read once
    folder  = plan(header)                    # where it goes: the folder, open (no link on the way)
    placed  = source.place(folder, name)      # complete and named in it; the source untouched
    records(header, placed)                   # pypx records; undo = delete what was placed
    retire(earlier copy of this SOP)          # one instance, one path (the index goes here)
    source.commit(placed)                     # only now: remove the source (a move)

The source goes last: a kill at any moment leaves the source where it was, or
the instance filed with its records (and the source, if a move had not yet
removed it); running the same job again finishes it (the same source goes to the
same destination, replaced atomically with the same bytes, its records
rewritten). A bad instance never raises out of here: the
:class:`~.outcome.Outcome` carries a one-line error naming the file.
"""

from __future__ import annotations

import os

from .errors import MissingElementError, PlacementError, RecordError, RepackError
from .index_rows import INDEX_KEYWORDS, IndexFailure, PendingIndex, default_path
from .layout import Layout
from .outcome import Outcome
from .records import RECORD_KEYWORDS, RecordWriter
from .source import BufferSource, PathSource
from .tree import Tree, remove_beneath

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .header import Header
    from .index import Index
    from .place import Placed
    from .source import Source
    from .tree import Folder

__all__ = ["REQUIRED", "Config", "Repacker"]

#: Without these an instance cannot be filed or recorded (rx-repack refuses them too).
REQUIRED = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


class Config:
    """Where to file instances and how to name them."""

    __slots__ = ("datadir", "fsync", "index", "index_deferred", "layout", "logdir")

    def __init__(
        self,
        datadir: str,
        logdir: str | None = None,
        layout: Layout | None = None,
        *,
        fsync: bool = False,
        index: str | bool = True,
        index_deferred: bool = False,
    ) -> None:
        self.datadir = datadir
        self.logdir = logdir
        self.layout = layout if layout is not None else Layout.rx()
        #: fsync every file and record before reporting success (a receiver's
        #: "stored" then survives a power cut; costs a disk flush per file)
        self.fsync = fsync
        #: the SQLite index (core/index.py): a path, or True for its default
        #: place in the log folder (none without one), or False for none
        self.index: str | None = (
            index if isinstance(index, str) else default_path(logdir) if index and logdir else None
        )
        #: append each row to the index's pending file (core/index_rows.py; folded
        #: into SQLite by its readers) instead of opening SQLite: for a process that
        #: files one instance
        self.index_deferred = index_deferred


class Repacker:
    """Files instances under one :class:`Config`; cheap to call once per instance.

    Example::

        with Repacker(Config("/data", "/log")) as repacker:
            outcome = repacker.repack_path("/incoming/x.dcm", move=True)
            if outcome.error:
                print(outcome.error)    # one line naming the file; the source is untouched

    A Repacker opens its index connection on first use and keeps it: close it
    (:meth:`close`, or leave the ``with`` block) when done; it may not be used
    after. Not shared between threads: one per thread (or per process).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.data = Tree(config.datadir, "data folder")
        self.datadir = self.data.root
        self.layout = config.layout
        self.records = RecordWriter(config.logdir, fsync=config.fsync) if config.logdir else None
        self.index: Index | PendingIndex | None = None
        if config.index and config.index_deferred:
            self.index = PendingIndex(config.index, durable=config.fsync)
        elif config.index:
            from .index import Index

            self.index = Index(config.index, durable=config.fsync)
        more = INDEX_KEYWORDS if self.index else ()
        self.keywords = tuple(
            dict.fromkeys(REQUIRED + self.layout.keywords + RECORD_KEYWORDS + more)
        )

    def close(self) -> None:
        """Close what this Repacker opened (its index connection); safe to call twice."""
        index, self.index = self.index, None
        close = getattr(index, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Repacker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def repack_path(
        self,
        src: str,
        *,
        move: bool = False,
        before_commit: Callable[[Outcome], None] | None = None,
    ) -> Outcome:
        """File the Part 10 file at ``src`` (copied, or moved when ``move``)."""
        return self.repack(PathSource(src, move=move), before_commit=before_commit)

    def repack_buffer(self, data: bytes | memoryview, *, origin: str = "<network>") -> Outcome:
        """File a complete Part 10 file held in memory (preamble, 'DICM', meta, dataset)."""
        return self.repack(BufferSource(data, origin))

    def repack(
        self, source: Source, *, before_commit: Callable[[Outcome], None] | None = None
    ) -> Outcome:
        """File one instance from ``source``. Never raises for a bad instance.

        ``before_commit(outcome)`` is called once the instance is filed and recorded,
        just before the source is let go (removed, for a move): a door that journals
        what it filed (batch --dask) writes its line there, so a kill can never
        leave a removed source unjournaled.
        """
        out = Outcome(source.origin)
        folder: Folder | None = None
        try:
            header = source.header(self.keywords)
            folder, name = self._plan(source.origin, header, out)
            placed = self._place(source, folder, name)
            out.dst, out.size = placed.path, placed.stat.st_size
            try:
                earlier = self._record(header.values, folder.path, name, placed, source)
                # the index after the records, before the commit: a row means filed + recorded
                self._index(header.values, placed, source.origin)
                if earlier is not None:
                    self._retire(earlier, placed, source, header.values["SOPInstanceUID"])
            except RepackError:
                placed.undo()
                raise
            if before_commit is not None:
                before_commit(out)
            source.commit(placed)
        except RepackError as exc:
            out.fail(exc)
        finally:
            source.close()
            if folder is not None:
                folder.close()
        return out

    # -- steps -------------------------------------------------------------------

    def _plan(self, origin: str, header: Header, out: Outcome) -> tuple[Folder, str]:
        """The instance's folder (created, no link on the way; open) and file name."""
        vals, empty = header.values, header.empty
        out.patient_id = vals.get("PatientID")
        out.study_uid = vals.get("StudyInstanceUID")
        out.series_uid = vals.get("SeriesInstanceUID")
        out.sop_uid = vals.get("SOPInstanceUID")
        lacking = [k for k in REQUIRED if not (vals.get(k) or "").strip() or k in empty]
        if lacking:
            raise MissingElementError(origin, f"missing or empty {', '.join(lacking)}; not filed")
        plan = self.layout.plan(vals, empty)
        out.missing = plan.missing
        directory = f"{self.datadir}/{plan.series_dir}"
        try:
            return self.data.open(directory, origin), plan.image
        except OSError as exc:
            raise PlacementError(
                origin, f"cannot create {directory}: {exc.strerror or exc}", errno=exc.errno
            ) from None

    def _place(self, source: Source, folder: Folder, name: str) -> Placed:
        try:
            return source.place(folder, name, sync=self.config.fsync)
        except OSError as exc:
            raise PlacementError(
                source.origin,
                f"cannot place at {folder.path}/{name}: {exc.strerror or exc}",
                errno=exc.errno,
            ) from None

    def _record(
        self,
        values: Mapping[str, str],
        directory: str,
        name: str,
        placed: Placed,
        source: Source,
    ) -> str | None:
        """Write the records; return where this instance stood before, if elsewhere."""
        if self.records is None:
            return None
        dump_from = source.dump_source(placed)
        return self.records.write(
            values,
            series_base_dir=directory,
            file_name=name,
            stat=placed.stat,
            nlink=placed.nlink,
            dump=lambda: _dump(dump_from),
            origin=source.origin,
        )

    def _index(self, values: Mapping[str, str], placed: Placed, origin: str) -> None:
        if self.index is not None:
            try:
                self.index.add(values, path=placed.path, size=placed.stat.st_size, source=origin)
            except IndexFailure as exc:
                raise RecordError(origin, str(exc)) from None

    def _retire(self, earlier: str, placed: Placed, source: Source, sop_uid: str) -> None:
        """Remove the earlier copy of this instance, filed elsewhere (a changed layout tag).

        Only a regular file inside the data folder that still holds this very
        SOPInstanceUID goes, and never the source of a copy (a run over the data
        tree without ``--cleanup`` modifies no input). Its image record was the
        one just replaced. Folders it leaves empty go too. It is removed through
        the folders it stands in, each opened without following a link
        (:func:`.tree.remove_beneath`): a patient folder replaced by a link to
        an archive makes it stay, never a file of the archive go. Best effort:
        the new copy and its records are complete whatever happens here.
        """
        root = self.datadir
        if not earlier.startswith(root + "/") or earlier == placed.path:
            return
        copied_from = source.origin if isinstance(source, PathSource) and not source.move else ""
        if copied_from and os.path.abspath(copied_from) == earlier:
            return

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


def _sop_of(fd: int, size: int, name: str) -> str | None:
    """The SOPInstanceUID of the open file ``fd`` (``size`` bytes)."""
    from .header import read_header_fd

    return read_header_fd(fd, size, ("SOPInstanceUID",), name=name).values.get("SOPInstanceUID")


def _dump(source: str | bytes | memoryview) -> dict[str, str]:
    """The series record's full-header dump (imported only when a series starts)."""
    from .dump import header_dump

    return header_dump(source)
