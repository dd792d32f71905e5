"""``batch --dask``: the batch door's work on a Dask distributed cluster.

Same job, same options, same records: the client walks the inputs (streamed),
sends the paths out in chunks (a task costs the scheduler ~1 ms, so hundreds to
thousands of paths go in one), keeps a bounded number of tasks in flight (the
client's memory stays flat for millions of paths) and reports outcomes as
tasks finish. Every worker runs :func:`repack_chunk`, which is the core's
:class:`~dicom_repack.core.repack.Repacker` over a list of paths; nothing here
re-implements a step of the job.

Two things a single machine did not need:

* **Records written from several hosts.** The patient record's StudyList is
  the records' one read-modify-write. Locally it runs under an ``flock`` on the
  ``patientData`` folder, but ``flock`` on a *directory* is host-local on NFS
  (Linux emulates ``flock`` over NFS locks only for regular files) and absent
  or host-local on Lustre without ``-o flock`` and on BeeGFS by default. So on
  a cluster that update also holds a cluster-wide :class:`distributed.Lock`
  (one of 64, chosen by the patient ID), coordinated by the scheduler, which
  every filesystem can rely on. It is taken only when a study is new to a
  patient's record, so its cost (one scheduler round trip) is paid per study,
  not per instance.
* **A worker lost mid-task** (kill -9, node failure, pre-emption). Dask runs
  the lost task again elsewhere. In copy mode that is simply a second, identical
  filing. In move mode an instance whose source the first attempt already
  removed cannot be read again, so each task keeps a *journal* (one NDJSON line
  per instance, written once it is placed and recorded and before its source is
  removed, under ``DATADIR/.dicom-repack-journal/<run>/``): a re-run
  reports a journalled instance whose source is gone as the first attempt's
  outcome instead of a failure. Each instance is reported exactly once because
  each path belongs to one task and Dask delivers each task's result once. The
  journal folder is removed when the run ends.

How to call it (the command line does this)::

    summary = run(iter_paths(["/incoming"]), Config("/data", "/log"),
                  address="tcp://scheduler:8786", move=True, on_outcome=print)
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator

from ..core import jsonio
from ..core.errors import DicomRepackError, RecordError
from ..core.index_rows import PendingIndex, is_url
from ..core.outcome import Outcome
from ..core.repack import Config, Repacker
from ..core.tree import Folder, NotRegularError, Tree, open_file
from .plumbing import say

TYPE_CHECKING = False
if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from typing import Any

    from .batch_engine import Summary

    #: distributed's objects (its annotations are partial: handled as Any here)
    Client = Any
    Future = Any

__all__ = [
    "INSTALL_HINT",
    "DaskJobError",
    "DaskUnavailable",
    "repack_chunk",
    "run",
]

#: What to do when --dask is given without Dask distributed installed.
INSTALL_HINT = "--dask needs Dask distributed: pip install 'dicom-repack[dask]'"

#: The most paths in one task (a task costs the scheduler ~1 ms; 1,000 typical
#: instances take a worker ~1-3 s), and the fewest tasks per worker thread a
#: small batch is split into, so every worker gets some.
CHUNK_MAX = 1000
_SPLIT = 4

#: Tasks in flight per worker thread: enough that no worker waits for the client.
_IN_FLIGHT_PER_THREAD = 2

#: The move-mode journals' folder, inside the data folder (shared by all workers).
JOURNAL_DIR = ".dicom-repack-journal"

#: How many cluster-wide locks guard the patient records (by patient ID).
_LOCK_BUCKETS = 64


class DaskUnavailable(DicomRepackError):
    """Dask distributed is not installed (the message says what to install)."""

    code = "DaskUnavailable"


class DaskJobError(DicomRepackError):
    """The workers could not run the job at all (not one instance's fault)."""

    code = "DaskJobError"


def require_distributed() -> None:
    """Raise :class:`DaskUnavailable` unless ``distributed`` can be imported."""
    _distributed()


def _distributed() -> Any:
    """The ``distributed`` module (imported only when --dask is given)."""
    import importlib

    try:
        # by name: type-checking this project must not follow distributed's imports
        return importlib.import_module("distributed")
    except ImportError:
        raise DaskUnavailable(INSTALL_HINT) from None


# -- worker side ---------------------------------------------------------------------

#: run id -> the Repacker of that run, one per worker process (records caches kept)
_repackers: dict[str, Repacker] = {}
#: lock name -> distributed.Lock (each has a lease-refresh callback: reuse them)
_locks: dict[str, object] = {}
_filed_here = 0


def repack_chunk(
    run_id: str, config: Config, move: bool, paths: list[str], journal: str | None
) -> list[Outcome]:
    """The task every worker runs: the core job over ``paths``, one Outcome each.

    ``journal`` (move mode) names this task's journal: instances a previous,
    lost attempt of the same task already filed are read from it, and each
    instance this attempt files is added to it before its source is removed.
    """
    repacker = _repacker(run_id, config)
    earlier = read_journal(journal, config.datadir) if journal else {}
    outcomes: list[Outcome] = []
    log = _Journal(journal, config.datadir, sync=config.fsync) if journal and move else None
    try:
        for path in paths:
            done = earlier.get(path)
            if done is not None and not os.path.lexists(path):
                # filed and committed by a lost attempt: its outcome, not a failure
                outcomes.append(done)
                continue
            if log is not None:
                outcomes.append(repacker.repack_path(path, move=True, before_commit=log.add))
            else:
                outcomes.append(repacker.repack_path(path, move=move))
            _test_hook()
    finally:
        if log is not None:
            log.close()
    return outcomes


class _Journal:
    """One task's journal: a line per instance, written by the job's ``before_commit``.

    The job calls it once the instance is placed and recorded, right before the
    source is removed: a source that is gone always has its line.
    """

    def __init__(self, path: str, datadir: str, *, sync: bool) -> None:
        self.path = path
        self.datadir = datadir
        self.sync = sync
        self.fd = -1

    def add(self, outcome: Outcome) -> None:
        try:
            if self.fd < 0:
                self.fd = _open_journal(self.path, self.datadir)
            _journal_line(self.fd, outcome, sync=self.sync)
        except OSError as exc:
            # the source stays (not committed); the instance is filed, a re-run is harmless
            raise RecordError(
                outcome.src,
                f"cannot write the task journal {self.path}: {exc.strerror or exc}",
                errno=exc.errno,
            ) from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _repacker(run_id: str, config: Config) -> Repacker:
    repacker = _repackers.get(run_id)
    if repacker is None:
        if len(_repackers) >= 4:
            for old in _repackers.values():
                old.close()
            _repackers.clear()
        if config.host is None:  # no --host-id: the worker's host files, not the client's
            config = config.replace(host=os.uname().nodename)
        repacker = Repacker(config)
        if isinstance(repacker.index, PendingIndex):
            repacker.index.shared = True  # rows appended; only the client opens SQLite
        if repacker.records is not None and not is_url(config.index):
            # (a PostgreSQL index: the Repacker took its advisory lock, which receivers
            # on other hosts take too)
            logdir = repacker.records.logdir
            repacker.records.patient_lock = lambda patient_id: _cluster_lock(logdir, patient_id)
        _repackers[run_id] = repacker
    return repacker


def _cluster_lock(logdir: str, patient_id: str) -> AbstractContextManager[object]:
    """The cluster-wide lock for ``patient_id``'s record in ``logdir`` (a distributed.Lock)."""
    bucket = zlib.crc32(patient_id.encode("utf-8", "surrogateescape")) % _LOCK_BUCKETS
    name = f"dicom-repack:{logdir}:patientData:{bucket}"
    lock = _locks.get(name)
    if lock is None:
        lock = _locks[name] = _distributed().Lock(name)
    return lock  # type: ignore[return-value]


def _test_hook() -> None:
    """Tests only: ``DICOM_REPACK_DASK_TEST_HANG=N:MARKER`` hangs this worker after N filings.

    It creates MARKER, then sleeps, so a test can SIGKILL the worker at a known
    moment (N instances of its task committed, the task not yet reported).
    """
    global _filed_here
    spec = os.environ.get("DICOM_REPACK_DASK_TEST_HANG")
    if not spec:
        return
    _filed_here += 1
    count, _, marker = spec.partition(":")
    if _filed_here == int(count):
        with open(marker, "w", encoding="utf-8") as fh:
            fh.write(str(os.getpid()))
        while True:
            time.sleep(3600)


def worker_version() -> str:
    """Run on every worker at start: the dicom-repack it imports (a broken install raises)."""
    from .. import __version__

    return __version__


# -- the journal -----------------------------------------------------------------------


def _journal_folder(path: str, datadir: str, *, create: bool) -> Folder:
    """The folder of the journal ``path`` (inside ``datadir``), open, no link on the way."""
    return Tree(datadir, "data folder").folder_at(os.path.dirname(path), create=create)


def _open_journal(path: str, datadir: str) -> int:
    """The journal ``path``, open for appending: never through a planted link or FIFO."""
    with _journal_folder(path, datadir, create=True) as folder:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        name = os.path.basename(path)
        return open_file(name, flags, 0o644, dir_fd=folder.fd, path=path)[0]


def _journal_line(fd: int, outcome: Outcome, *, sync: bool) -> None:
    """One line per filed instance, written whole with one O_APPEND write."""
    os.write(fd, (jsonio.dumps(outcome.as_dict(), indent=None) + "\n").encode("ascii"))
    if sync:
        os.fsync(fd)


def read_journal(path: str, datadir: str) -> dict[str, Outcome]:
    """Source path -> outcome of every instance a journal says was filed.

    A last line cut short by a kill is ignored (its instance's source is still
    there if it was not committed, and is filed again). A journal that is a
    link, a FIFO or in a linked folder is not read (its instances count as not
    known to be filed: a re-run files what is still there).
    """
    try:
        with _journal_folder(path, datadir, create=False) as folder:
            fd, _ = open_file(os.path.basename(path), os.O_RDONLY, dir_fd=folder.fd, path=path)
        with open(fd, encoding="ascii", errors="replace") as fh:
            lines = fh.read().split("\n")
    except FileNotFoundError:
        return {}
    except NotRegularError:
        return {}
    done: dict[str, Outcome] = {}
    for line in lines:
        if not line:
            continue
        try:
            d = jsonio.loads(line)
        except jsonio.JSONError:
            continue
        if isinstance(d, dict) and isinstance(d.get("src"), str):
            done[d["src"]] = _outcome_from(d)
    return done


def _outcome_from(d: dict[str, object]) -> Outcome:
    def text(key: str) -> str | None:
        v = d.get(key)
        return v if isinstance(v, str) else None

    size = d.get("size")
    missing = d.get("layout_missing")
    elements = d.get("missing")
    return Outcome(
        str(d["src"]),
        dst=text("dst"),
        size=size if isinstance(size, int) else 0,
        patient_id=text("PatientID"),
        study_uid=text("StudyInstanceUID"),
        series_uid=text("SeriesInstanceUID"),
        sop_uid=text("SOPInstanceUID"),
        missing=tuple(str(m) for m in missing) if isinstance(missing, list) else (),
        elements_missing=tuple(
            (str(m.get("tag")), str(m.get("name")), str(m.get("error")))
            for m in (elements if isinstance(elements, list) else ())
            if isinstance(m, dict)
        ),
    )


# -- client side -----------------------------------------------------------------------


def connect(address: str) -> tuple[Client, Any]:
    """A Client of the scheduler at ``address``, or of a new local cluster for ``local:N``.

    Returns the client and the local cluster (None for a remote scheduler); the
    caller closes both.
    """
    dd = _distributed()
    import logging

    if address.startswith("local:"):
        n = int(address.partition(":")[2])
        cluster = dd.LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # the scheduler's HTTP routes (health, metrics) on loopback at a free port: on
            # the default 8787, a second cluster on the machine prints distributed's
            # "Port 8787 is already in use" warning into our output
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            silence_logs=logging.ERROR,
        )
        return dd.Client(cluster), cluster
    return dd.Client(address, timeout=f"{CONNECT_TIMEOUT}s"), None


#: seconds to wait for a remote scheduler before giving up (batch says so at once)
CONNECT_TIMEOUT = 30


def parse_address(address: str) -> str | None:
    """None if ``address`` is usable for --dask, else what is wrong with it."""
    if address.startswith("local:"):
        n = address.partition(":")[2]
        if not n.isdigit() or int(n) < 1:
            return f"--dask local:N needs a number of workers >= 1, not {n!r}"
        return None
    if "://" not in address and ":" not in address:
        return f"--dask takes a scheduler address (tcp://host:8786) or local:N, not {address!r}"
    return None


def run(
    paths: Iterable[str],
    config: Config,
    *,
    address: str,
    move: bool = False,
    on_outcome: Callable[[Outcome], None] | None = None,
    stop_when: Callable[[Outcome], bool] | None = None,
    chunk: int | None = None,
) -> Summary:
    """Repack every path on the Dask cluster at ``address``; ``on_outcome`` for each.

    ``stop_when(outcome)`` returning True stops the run early, as in
    :func:`~.batch.run`: no further task is sent; tasks already sent finish
    and are reported (a task cannot be interrupted halfway without losing
    count of what it moved), at most two per worker thread. ``chunk`` fixes the paths per task (default: from the batch's size, at most
    :data:`CHUNK_MAX`). Raises :class:`DaskUnavailable` without Dask distributed,
    :class:`DaskJobError` when the workers cannot run the job at all.
    """
    client, cluster = connect(address)
    try:
        return _drive(
            client,
            paths,
            config,
            move=move,
            on_outcome=on_outcome,
            stop_when=stop_when,
            chunk=chunk,
        )
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _threads(client: Client) -> int:
    return max(1, sum(client.nthreads().values()))  # type: ignore[no-any-return]


def _drive(
    client: Client,
    paths: Iterable[str],
    config: Config,
    *,
    move: bool,
    on_outcome: Callable[[Outcome], None] | None,
    stop_when: Callable[[Outcome], bool] | None,
    chunk: int | None,
) -> Summary:
    from .batch_engine import Summary

    if not client.nthreads():
        say("batch", "waiting for a Dask worker to join the scheduler")
        client.wait_for_workers(1)
    _check_workers(client)
    summary = Summary()
    start = time.perf_counter()
    threads = _threads(client)
    run_id = uuid.uuid4().hex[:16]
    # The workers append their index rows to the pending file and this process folds
    # them once at the end: SQLite's locking is not safe on a shared filesystem (NFS),
    # an append under lockf is (docs/scale.md). With PostgreSQL each worker process also
    # commits its host's pending rows in groups as it goes (core/index_pg.py: Flusher)
    if not is_url(config.index):
        config = config.replace(index_mode="pending")
    journal_root = f"{os.path.abspath(config.datadir)}/{JOURNAL_DIR}/{run_id}" if move else None
    if journal_root is not None:  # NotRegularError (an OSError: one line) for a planted link
        _journal_folder(f"{journal_root}/-", config.datadir, create=True).close()

    stream = iter(paths)
    head = list(itertools.islice(stream, threads * CHUNK_MAX * _SPLIT))
    size = chunk or max(1, min(CHUNK_MAX, -(-len(head) // (threads * _SPLIT))))
    chunks = _chunks(itertools.chain(head, stream), size)
    del head

    pending: dict[object, tuple[list[str], str | None]] = {}
    completed = _distributed().as_completed()
    counter = itertools.count()
    limit = threads * _IN_FLIGHT_PER_THREAD + 1
    last_census = time.monotonic()

    def submit_more() -> None:
        while len(pending) < limit and not summary.stopped:
            paths_ = next(chunks, None)
            if paths_ is None:
                return
            n = next(counter)
            journal = f"{journal_root}/{n}.ndjson" if journal_root is not None else None
            future = client.submit(
                repack_chunk,
                run_id,
                config,
                move,
                paths_,
                journal,
                key=f"dicom-repack-chunk-{run_id}-{n}",
                pure=False,
            )
            pending[future.key] = (paths_, journal)
            completed.add(future)

    submit_more()
    try:
        for future in completed:
            paths_, journal = pending.pop(future.key)
            outcomes = _outcomes(future, paths_, journal, config.datadir)
            future.release()
            for outcome in outcomes:
                summary.add(outcome)
                if stop_when is not None and not summary.stopped and stop_when(outcome):
                    summary.stopped = True
                if on_outcome is not None:
                    on_outcome(outcome)
            now = time.monotonic()
            if now - last_census > 5.0:  # workers come and go (adaptive clusters)
                limit = _threads(client) * _IN_FLIGHT_PER_THREAD + 1
                last_census = now
                _fold(config)  # keeps the pending file (and what workers search) short
            submit_more()
    except BaseException:
        for future in list(completed.futures):
            future.cancel()
        raise
    if journal_root is not None:
        _remove_journals(journal_root, config.datadir)
    _fold(config)
    summary.elapsed = time.perf_counter() - start
    return summary


def _fold(config: Config) -> None:
    """Fold the workers' pending rows (this process is the run's one SQLite writer)."""
    if config.index:
        from ..core.index import fold_pending

        problem = fold_pending(config.index, durable=config.fsync, logdir=config.logdir)
        if problem:
            say("batch", problem)


def _check_workers(client: Client) -> None:
    """Refuse to start when a worker cannot import this dicom-repack, or another version of it.

    Without this, a worker lacking the package dies on its first task and the
    run would wait for workers forever.
    """
    from .. import __version__

    versions = client.run(worker_version, on_error="return")
    for worker, version in sorted(versions.items()):
        if isinstance(version, BaseException):
            raise DaskJobError(
                f"the Dask worker {worker} cannot run the job: {type(version).__name__}: {version}"
            )
        if version != __version__:
            raise DaskJobError(
                f"the Dask worker {worker} runs dicom-repack {version}, this client {__version__}"
            )


def _chunks(paths: Iterator[str], size: int) -> Iterator[list[str]]:
    while True:
        chunk = list(itertools.islice(paths, size))
        if not chunk:
            return
        yield chunk


def _outcomes(future: Future, paths: list[str], journal: str | None, datadir: str) -> list[Outcome]:
    """The outcomes of one finished task; a task Dask gave up on is resolved here."""
    if future.status == "finished":
        return future.result()  # type: ignore[no-any-return]
    exc = future.exception()
    if not isinstance(exc, _distributed().KilledWorker):
        raise DaskJobError(f"the Dask workers cannot run the job: {type(exc).__name__}: {exc}")
    # The workers running this task died too often (allowed-failures): perhaps an
    # instance that kills its worker. What the journal says was filed was filed;
    # the rest is reported failed, sources untouched, for a later re-run.
    done = read_journal(journal, datadir) if journal else {}
    out = []
    for path in paths:
        earlier = done.get(path)
        if earlier is not None and not os.path.lexists(path):
            out.append(earlier)
        else:
            failed = Outcome(path)
            failed.error = f"{path}: not filed: every Dask worker that ran its task died ({exc})"
            failed.kind = "WorkerLostError"
            out.append(failed)
    return out


def _remove_journals(root: str, datadir: str) -> None:
    """Remove this run's journals (every task reported: they are not needed any more),
    inside their folders opened without following a link."""
    try:
        tree = Tree(datadir, "data folder")
        with tree.folder_at(root, create=False) as folder:
            for name in os.listdir(folder.fd):
                try:
                    os.unlink(name, dir_fd=folder.fd)
                except OSError:
                    pass
        with tree.folder_at(os.path.dirname(root), create=False) as parent:
            os.rmdir(os.path.basename(root), dir_fd=parent.fd)
        with tree.folder_at(tree.root, create=False) as top:
            os.rmdir(JOURNAL_DIR, dir_fd=top.fd)  # only if no other run is using it
    except OSError:
        pass
