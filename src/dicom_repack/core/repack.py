"""One instance through the job: header -> plan -> place -> records -> commit.

Every door (per-instance, batch, listen, bench) calls :class:`Repacker`; none of
them re-implements a step. The job, on one screen (:meth:`Repacker.repack`)::

    header  = source.header(keywords)         # the source is read once
    hold(SOP)                                 # one job per SOPInstanceUID at a time (the index)
    folder  = plan(header)                    # where it goes: the folder, open (no link on the way)
    placed  = source.place(folder, name)      # complete and named; the source untouched
    records(header, placed)                   # pypx records
    index(header, placed)                     # a row means filed and recorded
                                              # undo (any failure above) = take back all of it
    sync folders                              # --fsync, or a move that copied: names durable
    retire(earlier copies of this SOP)        # one instance, one path
    source.commit(placed)                     # only now: remove the source (a move)

The source goes last: a kill at any moment leaves the source where it was, or
the instance filed with its records (and the source, if a move had not yet
removed it); running the same job again finishes it (the same source goes to the
same destination, replaced atomically with the same bytes, its records
rewritten). A bad instance never raises out of here: the
:class:`~.outcome.Outcome` carries a one-line error naming the file.

Undo takes back everything the job wrote, in reverse: the index row is the last
write that can fail, so a failing index undoes the records (the image record
made, or the one replaced put back; the study and series records and the
StudyList entry this job created, unless another instance's image record now
needs them: :meth:`~.records.RecordWriter.undo`), then the placed file. An
earlier copy is retired only after the row is written, so until then it stands
with its record, and an undo leaves it as it was.

Durability (``--fsync``): the placed file and every record are fsynced before
they are named, and, before the source goes, the folders that name them (up to
the data and log folders), so a power cut after a move leaves the instance
filed, not lost. A move that had to copy (another filesystem) always fsyncs the
copy and the folders naming it and its records before removing the source,
``--fsync`` or not. Without
``--fsync`` on one filesystem nothing is fsynced (a power cut may lose recent
files; a move by hard link never loses the source's bytes).
"""

from __future__ import annotations

import os

from .errors import MissingElementError, PlacementError, RecordError, RepackError
from .index_rows import (
    INDEX_KEYWORDS,
    IndexFailure,
    PendingIndex,
    default_path,
    is_url,
    local_path,
    lock_base,
)
from .layout import Layout
from .outcome import Outcome
from .records import RECORD_KEYWORDS, RecordWriter, Written
from .source import BufferSource, PathSource
from .tree import Tree

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from contextlib import AbstractContextManager
    from typing import Any

    from .header import Header
    from .index import Index
    from .index_pg import PgIndex
    from .index_rows import Folded
    from .pending_tail import PendingTail
    from .place import Placed
    from .source import Source
    from .tree import Folder

__all__ = ["INDEX_MODES", "REQUIRED", "Config", "Repacker"]

#: errno values (the errno module is one import more on the per-instance door's start)
_EPERM, _ENOENT = 1, 2

#: Without these an instance cannot be filed or recorded (rx-repack refuses them too).
REQUIRED = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


#: How a job writes its index row (each door states its mode once):
#: ``direct`` -- one SQLite insert per instance (a receiver's threads, a batch filed in one
#: process); ``pending`` -- one line appended to ``<index>.pending`` (~20 us, no SQLite
#: start), folded into SQLite by the door's own process or any reader (the per-instance door,
#: a batch's, watch's and Dask's workers); ``off`` -- no index.
INDEX_MODES = ("direct", "pending", "off")


def _opener(index: str, logdir: str | None, durable: bool) -> Callable[[float], Folded]:
    """How a PendingIndex opens the index its rows fold into (imported only then)."""

    def open_index(timeout: float) -> Folded:
        from .index import open_index

        # no statement cache: in the per-instance door, a fold or two is all it runs
        return open_index(index, logdir, durable=durable, timeout=timeout, statement_cache=False)

    return open_index


def _pending_tail(pending: str) -> PendingTail:
    """The reader of the pending rows a process keeps from its second look on (a batch's,
    watch's workers); the per-instance door looks once and never imports it."""
    from .pending_tail import PendingTail

    return PendingTail(pending)


def _cluster_patient_lock(url: str) -> Callable[[str], AbstractContextManager[object] | None]:
    """With a PostgreSQL index, a patient's record is updated under a PostgreSQL advisory
    lock too (core/index_pg.py: ``patient_lock``), where psycopg is already loaded (every
    resident door: it checked the index at start, or its index connection did); the
    per-instance door, which never connects, keeps the host-local lock alone (None: no
    lock of a class of its own to make at every start)."""
    import sys

    def lock(patient_id: str) -> AbstractContextManager[object] | None:
        if "psycopg" not in sys.modules:
            return None
        from .index_pg import patient_lock

        return patient_lock(url, patient_id)

    return lock


class Config:
    """Where to file instances, how to name them, and how to index them.

    Example::

        config = Config("/data", "/log")                    # the default index, direct
        workers = config.replace(index_mode="pending")      # the same, rows appended
    """

    __slots__ = ("datadir", "fold_at", "fsync", "host", "index", "index_mode", "layout", "logdir")

    def __init__(
        self,
        datadir: str,
        logdir: str | None = None,
        layout: Layout | None = None,
        *,
        fsync: bool = False,
        index: str | bool = True,
        index_mode: str = "direct",
        host: str | None = None,
        fold_at: int | None = None,
    ) -> None:
        if index_mode not in INDEX_MODES:
            raise ValueError(f"index_mode must be one of {', '.join(INDEX_MODES)}: {index_mode!r}")
        self.datadir = datadir
        self.logdir = logdir
        self.layout = layout if layout is not None else Layout.rx()
        #: fsync every file and record before reporting success (a receiver's
        #: "stored" then survives a power cut; costs a disk flush per file)
        self.fsync = fsync
        #: the SQLite index (core/index.py): a path, or True for its default
        #: place in the log folder (none without one), or False for none
        self.index: str | None = None
        if index_mode != "off":
            self.index = (
                index
                if isinstance(index, str)
                else default_path(logdir)
                if index and logdir
                else None
            )
        #: how rows are written (:data:`INDEX_MODES`); "off" whenever there is no index
        self.index_mode = index_mode if self.index else "off"
        #: who files (``--host-id``): in each index row and outcome, so that receivers
        #: sharing one tree and index can be told apart (None: not said)
        self.host = host
        #: ``pending`` mode: the pending file's size past which the process whose row takes
        #: it there folds it (None: :data:`.index_rows.FOLD_AT`; a resident door's workers:
        #: :data:`.index_rows.RESIDENT_FOLD_AT`, fewer and larger transactions)
        self.fold_at = fold_at

    def replace(self, **changes: object) -> Config:
        """A copy with ``changes`` (any keyword of the constructor): every field carried
        over, so a field added later cannot be dropped by a door that copies a Config."""
        fields: dict[str, object] = {
            "datadir": self.datadir,
            "logdir": self.logdir,
            "layout": self.layout,
            "fsync": self.fsync,
            "index": self.index or False,
            "index_mode": self.index_mode if self.index else "direct",
            "host": self.host,
            "fold_at": self.fold_at,
        }
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"Config.replace: no field {', '.join(sorted(unknown))}")
        fields.update(changes)
        return Config(**fields)  # type: ignore[arg-type]  # the constructor checks them


class Repacker:
    """Files instances under one :class:`Config`; cheap to call once per instance.

    Example::

        with Repacker(Config("/data", "/log")) as repacker:
            outcome = repacker.repack_path("/incoming/x.dcm", move=True)
            if outcome.error:
                print(outcome.error)    # one line naming the file; the source is untouched

    A Repacker opens its index connection on first use and keeps it: close it
    (:meth:`close`, or leave the ``with`` block) when done; it may not be used
    after. One thread uses it, unless it is made with ``threads=True`` (a
    receiver's associations): then every thread may file with it, each through
    an index connection of its own (SQLite's connections are not shared between
    threads), which that thread closes with :meth:`close_thread` when it is done.
    Its other state (the record writer's caches, the SOP locks) is safe to share.
    """

    def __init__(self, config: Config, *, threads: bool = False) -> None:
        self.config = config
        self.data = Tree(config.datadir, "data folder")
        self.datadir = self.data.root
        self.layout = config.layout
        self.records = (
            RecordWriter(config.logdir, fsync=config.fsync, rx=config.layout.empty_as_absent)
            if config.logdir
            else None
        )
        if self.records is not None and config.index and is_url(config.index):
            # patients' records across hosts: the folder's flock is host-local on NFS
            self.records.patient_lock = _cluster_patient_lock(config.index)
        #: the index of the thread that made it (with ``threads``: each thread's own,
        #: see :meth:`_thread_index`)
        self.index = self._open_index()
        #: with ``threads``: each thread's index (threading is imported only then)
        self._threads: Any = None
        if threads and self.index is not None:
            import threading

            self._threads = threading.local()
            self._threads.index = self.index
        more = INDEX_KEYWORDS if self.index else ()
        self.keywords = tuple(
            dict.fromkeys(REQUIRED + self.layout.keywords + RECORD_KEYWORDS + more)
        )

    def _open_index(self) -> Index | PendingIndex | PgIndex | None:
        """An index writer as the config says (it opens nothing until its first row)."""
        config = self.config
        if config.index and is_url(config.index):  # PostgreSQL: core/index_pg.py
            local = self._local_index()
            if config.index_mode == "pending" and local is not None:
                return PendingIndex(
                    local,
                    durable=config.fsync,
                    target=config.index,
                    opener=_opener(config.index, config.logdir, config.fsync),
                    tail=_pending_tail,
                    fold_at=config.fold_at,
                )
            # group commit (a flusher thread); no log folder: every add fails, saying so
            from .index_pg import PgIndex

            return PgIndex(config.index, local, durable=config.fsync)
        if config.index and config.index_mode == "pending":
            return PendingIndex(
                config.index,
                durable=config.fsync,
                opener=_opener(config.index, None, config.fsync),
                tail=_pending_tail,
                fold_at=config.fold_at,
            )
        if config.index:
            from .index import Index

            return Index(config.index, durable=config.fsync)
        return None

    def _thread_index(self) -> Index | PendingIndex | PgIndex | None:
        """The calling thread's index: the Repacker's own, or with ``threads`` one per
        thread, made on the thread's first instance."""
        local = self._threads
        if local is None or self.index is None:
            return self.index
        index: Index | PendingIndex | PgIndex | None = getattr(local, "index", None)
        if index is None:
            index = local.index = self._open_index()
        return index

    def close_thread(self) -> None:
        """Close the calling thread's index connection (``threads``: call it at the end of
        every thread that filed with this Repacker; it may file again after, reopening)."""
        local = self._threads
        if local is None:
            return
        index = getattr(local, "index", None)
        local.index = None
        if index is not None and index is not self.index:
            index.close()

    def _local_index(self) -> str | None:
        """The local name of the index's files (pending rows, SOP lock): the SQLite file,
        or for a PostgreSQL index one in the log folder (None without one)."""
        if self.config.index is None:
            return None
        try:
            return local_path(self.config.index, self.config.logdir)
        except IndexFailure:
            return None

    def close(self) -> None:
        """Close what this Repacker opened in this thread (its index connection; with
        ``threads``, this thread's too: the others close theirs); safe to call twice."""
        self.close_thread()
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
        out.host = self.config.host
        folder: Folder | None = None
        release: Callable[[], None] | None = None  # the SOP's lock, once held
        try:
            header = source.header(self.keywords)
            values = header.values
            # the required elements, checked once: none lacking, or the plan refuses it
            lacking = [
                k for k in REQUIRED if not (values.get(k) or "").strip() or k in header.empty
            ]
            release = None if lacking else self._hold(values["SOPInstanceUID"], source.origin)
            # where this SOP stood before (the index), read under its lock, before this
            # job's own row is written
            where = self._where(values["SOPInstanceUID"]) if release is not None else None
            folder, name, placed = self._plan_and_place(source, header, out, lacking)
            out.dst, out.size = placed.path, placed.stat.st_size
            written = Written()
            try:
                self._record(values, folder.path, name, placed, source, written)
                out.elements_missing = tuple(written.missing)
                # the index after the records, before the commit: a row means filed + recorded
                self._index(values, placed, source.origin)
            except RepackError:
                if self.records is not None:
                    self.records.undo(written)
                placed.undo()
                raise
            # the new names durable (--fsync, a move that copied) before any earlier copy goes
            self._sync_folders(placed, source, written)
            self._retire_earlier(where, written, values, placed, source)
            if before_commit is not None:
                before_commit(out)
            source.commit(placed)
        except RepackError as exc:
            out.fail(exc)
        finally:
            if release is not None:
                release()
            source.close()
            if folder is not None:
                folder.close()
        return out

    # -- steps -------------------------------------------------------------------

    def _plan(
        self, origin: str, header: Header, out: Outcome, lacking: list[str]
    ) -> tuple[Folder, str]:
        """The instance's folder (created, no link on the way; open) and file name; refused
        when a required element is ``lacking``."""
        vals, empty = header.values, header.empty
        out.patient_id = vals.get("PatientID")
        out.study_uid = vals.get("StudyInstanceUID")
        out.series_uid = vals.get("SeriesInstanceUID")
        out.sop_uid = vals.get("SOPInstanceUID")
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

    def _hold(self, sop: str, origin: str) -> Callable[[], None] | None:
        """Take the lock on this SOPInstanceUID (core/sop_lock.py, beside the index): the
        function that releases it; None without an index."""
        index = self.config.index
        if index is None:
            return None
        if is_url(index):  # the lock file is shared by every host of the log folder
            try:
                index = lock_base(index, self.config.logdir)
            except IndexFailure:
                return None
        from .sop_lock import hold

        return hold(index, sop, origin)

    def _where(self, sop: str) -> dict[str, str] | None:
        """Where the index says ``sop`` was last filed (a hint: checked before any retire)."""
        where = getattr(self._thread_index(), "where", None)
        return where(sop) if where is not None else None

    def _plan_and_place(
        self, source: Source, header: Header, out: Outcome, lacking: list[str]
    ) -> tuple[Folder, str, Placed]:
        """Plan and place; once more if a folder on the way vanished meanwhile.

        Another job's retire removes the folders its earlier copy leaves empty,
        and may do so between this job making a folder and making the next one
        in it, or naming its file there (ENOENT; EPERM from a link into a removed
        folder): the folders are walked again and the placement retried, once.
        The folder returned is open: the caller closes it.
        """
        for attempt in (1, 2):
            folder: Folder | None = None
            try:
                folder, name = self._plan(source.origin, header, out, lacking)
                return folder, name, self._place(source, folder, name)
            except PlacementError as exc:
                path = folder.path if folder is not None else ""
                if folder is not None:
                    folder.close()
                vanished = exc.errno == _ENOENT or (
                    exc.errno == _EPERM and bool(path) and not os.path.isdir(path)
                )
                if attempt == 2 or not vanished:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

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
        written: Written,
    ) -> None:
        """Write the records (``written`` says what was written, for undo and retire)."""
        if self.records is None:
            return
        dump_from = source.dump_source(placed)
        self.records.write(
            values,
            series_base_dir=directory,
            file_name=name,
            stat=placed.stat,
            nlink=placed.nlink,
            dump=lambda: _dump(dump_from),
            origin=source.origin,
            written=written,
        )

    def _index(self, values: Mapping[str, str], placed: Placed, origin: str) -> None:
        index = self._thread_index()
        if index is not None:
            try:
                index.add(
                    values,
                    path=placed.path,
                    size=placed.stat.st_size,
                    source=origin,
                    host=self.config.host,
                )
            except IndexFailure as exc:
                raise RecordError(origin, str(exc), errno=exc.errno) from None

    def _retire_earlier(
        self,
        where: dict[str, str] | None,
        written: Written,
        values: Mapping[str, str],
        placed: Placed,
        source: Source,
    ) -> None:
        """Retire every earlier copy of this SOP (core/retire.py); called under its lock,
        once indexed. Nothing to do, and nothing imported, for a SOP filed the first time."""
        if written.previous is None and (
            where is None or where["path"] in (placed.path, written.previous)
        ):
            return
        from .retire import retire_earlier

        retire_earlier(self, where, written, values, placed, source)

    def _sync_folders(self, placed: Placed, source: Source, written: Written) -> None:
        """With --fsync, or after a move that copied: the folders naming the new file and
        records synced before the source goes (core/retire.py: ``sync_folders``)."""
        copied_move = (
            isinstance(source, PathSource)
            and source.move
            and not placed.same_entry
            and placed.stat.st_ino != source.stat.st_ino
        )
        if not (self.config.fsync or copied_move):
            return
        from .retire import sync_folders

        sync_folders(self, placed, source, written)


def _dump(source: str | bytes | memoryview) -> dict[str, str]:
    """The series record's full-header dump (imported only when a series starts)."""
    from .dump import header_dump

    return header_dump(source)
