"""Batch's engine: every path under the inputs through the job, on all cores.

What ``dicom-repack batch`` (doors/batch.py: its command line, progress bar and
report) runs: the streamed walk (:func:`iter_paths`), the run on one process or
on forked workers (:func:`run`, doors/fork_pool.py), and its counters
(:class:`Summary`, which ``--dask`` (doors/dask_batch.py) and watch report too).
One interpreter start for the whole corpus instead of one per instance, and a
worker per core. The walk is streamed into the pool (the pool's pipe bounds what
is in flight), so memory stays flat however large the corpus is.
"""

from __future__ import annotations

import itertools
import os
import sys
import time

from ..core.index_rows import is_url
from ..core.outcome import Outcome
from ..core.repack import Config, Repacker
from ..core.tree import OWN_PREFIX
from .plumbing import say

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

__all__ = ["CHUNK_MAX", "IN_PROCESS_MAX", "Summary", "iter_paths", "run"]


class Summary:
    """Counters of one batch run (what the closing line reports)."""

    __slots__ = (
        "bytes",
        "elapsed",
        "failed",
        "filed",
        "not_attempted",
        "not_regular",
        "skipped",
        "stopped",
    )

    def __init__(self) -> None:
        self.filed = 0
        self.bytes = 0
        #: inputs that are not DICOM, and among them those not even regular files
        self.skipped = 0
        self.not_regular = 0
        self.failed = 0
        #: inputs handed out but left untouched because the run stopped early
        self.not_attempted = 0
        #: the run stopped early (its destination failed)
        self.stopped = False
        self.elapsed = 0.0

    def add(self, outcome: Outcome) -> None:
        if outcome.error is None:
            self.filed += 1
            self.bytes += outcome.size
        elif outcome.skipped:
            self.skipped += 1
            self.not_regular += outcome.not_regular
        else:
            self.failed += 1

    def as_dict(self) -> dict[str, object]:
        rate = self.filed / self.elapsed if self.elapsed > 0 else 0.0
        return {
            "instances": self.filed,
            "bytes": self.bytes,
            "skipped_not_dicom": self.skipped - self.not_regular,
            "skipped_not_regular": self.not_regular,
            "failed": self.failed,
            "not_attempted": self.not_attempted,
            "stopped_early": self.stopped,
            "elapsed_s": round(self.elapsed, 3),
            "instances_per_s": round(rate, 1),
        }

    def line(self) -> str:
        d = self.as_dict()
        mb = self.bytes / 1e6
        odd = f", {self.not_regular} skipped (not a regular file)" if self.not_regular else ""
        left = f", stopped early ({self.not_attempted} handed out, not attempted)"
        left = left if self.stopped else ""
        return (
            f"{d['instances']} instances filed ({mb:.1f} MB), "
            f"{d['skipped_not_dicom']} skipped (not DICOM){odd}, {d['failed']} failed{left}, "
            f"in {d['elapsed_s']:.2f} s ({d['instances_per_s']:.0f} instances/s)"
        )


def iter_paths(
    paths: Iterable[str], *, exclude: Iterable[str] = (), stdin: Iterable[str] | None = None
) -> Iterator[str]:
    """Every entry under ``paths`` (recursively) but folders, streamed, in name order.

    Each folder is listed, sorted by name, and walked in that order, a subfolder
    at its place (depth first): the order ``ls -R`` or a per-instance run over
    sorted names gives, so that each series' first instance, whose header the
    series record dumps, is the one rx-repack (run once per file in name order)
    dumps, whichever door files it. One folder's names are held at a time per
    level, never the whole tree.

    Folders in ``exclude`` (the data and log folders, when they sit inside an
    input) are not entered, so a run never picks up its own output; an input that
    *is* the data folder is walked (a re-run over the data tree repairs what a
    kill left half-done), but never the project's own folders in it (the
    receiver's spool, ``--dask``'s journals: ``OWN_PREFIX``). Symbolic links to
    folders are not followed (no loops).
    FIFOs, sockets, devices and links to folders are yielded too, for the job
    to skip and count as "not a regular file" (it never reads them), rather
    than silently ignored.
    """
    excluded = {os.path.realpath(p) for p in exclude}
    for top in paths:
        if top == "-":
            for line in stdin if stdin is not None else sys.stdin:
                line = line.rstrip("\n")
                if line:
                    yield line
            continue
        if not os.path.isdir(top):
            yield top
            continue
        skip = excluded - {os.path.realpath(top)}
        stack = [iter(_listing(top))]
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
                continue
            path, is_dir = entry
            if not is_dir:
                yield path
            elif os.path.realpath(path) not in skip:
                stack.append(iter(_listing(path)))


def _listing(folder: str) -> list[tuple[str, bool]]:
    """``folder``'s entries in name order, as (path, is a folder to enter); a folder
    that cannot be read is reported in one line and counts as empty."""
    entries: list[tuple[str, str, bool]] = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False  # let the job report what is wrong with it
                if is_dir and entry.name.startswith(OWN_PREFIX):  # spool, journals
                    continue
                entries.append((entry.name, entry.path, is_dir))
    except OSError as exc:
        say("batch", f"cannot read folder {folder}: {exc.strerror}")
        return []
    entries.sort()
    return [(path, is_dir) for _, path, is_dir in entries]


# -- the run ---------------------------------------------------------------------------

#: The most paths sent to a worker at once.
CHUNK_MAX = 128
#: inputs of at most this many files are filed in the batch process itself (no pool)
IN_PROCESS_MAX = 4


def run(
    paths: Iterable[str],
    config: Config,
    *,
    move: bool = False,
    jobs: int | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    stop_when: Callable[[Outcome], bool] | None = None,
    on_started: Callable[[], None] | None = None,
) -> Summary:
    """Repack every path; call ``on_outcome`` for each (in completion order).

    ``stop_when(outcome)`` returning True stops the run early: no further path is
    handed out, paths already handed out are left untouched (counted in
    ``Summary.not_attempted``), and only instances already in the job finish.
    The batch door stops this way when the destination itself fails. A worker
    process that dies (kill -9, out of memory) stops the run too: the paths it
    held are failures (not known to be filed; a re-run finishes them).

    With more than one job the workers are forked (doors/fork_pool.py): call this
    before any thread starts. ``on_started()`` is called once they are (the
    place to start a progress bar's thread).
    """
    if not jobs:
        from .fork_pool import usable_cores

        jobs = usable_cores()
    summary = Summary()
    start = time.perf_counter()
    stopping = [False]

    def take(outcome: Outcome | None) -> None:
        if outcome is None:
            summary.not_attempted += 1
            return
        summary.add(outcome)
        if stop_when is not None and not stopping[0] and stop_when(outcome):
            stopping[0] = summary.stopped = True
        if on_outcome:
            on_outcome(outcome)

    if jobs > 1:
        # Paths go to the workers in chunks; the first are looked at so a small batch
        # still gets split, and a tiny one (a few files) is filed here: forking
        # workers costs more than filing them.
        head = list(itertools.islice(paths, jobs * CHUNK_MAX * 4))
        paths = iter(head) if len(head) <= IN_PROCESS_MAX else itertools.chain(head, paths)
        if len(head) <= IN_PROCESS_MAX:
            jobs = 1
    if jobs == 1:
        with Repacker(config) as repacker:  # its index connection closed at the end
            if on_started is not None:
                on_started()
            for path in paths:
                if stopping[0]:
                    break
                take(repacker.repack_path(path, move=move))
        if is_url(config.index):  # the flusher's last group, now rather than at exit
            _fold(config)
    else:
        # Outcomes come back in chunks too: per-instance messages and pipe traffic
        # cost ~15% of a small instance's time at 16 a chunk.
        chunk = max(1, min(CHUNK_MAX, len(head) // (jobs * 4)))
        jobs = min(jobs, len(head))  # never a worker with nothing to do
        _preload(config, large=len(head) == jobs * CHUNK_MAX * 4)
        _run_pooled(paths, config, move, jobs, chunk, take, stopping, on_started, summary)
    summary.elapsed = time.perf_counter() - start
    return summary


def _run_pooled(
    paths: Iterable[str],
    config: Config,
    move: bool,
    jobs: int,
    chunk: int,
    take: Callable[[Outcome | None], None],
    stopping: list[bool],
    on_started: Callable[[], None] | None,
    summary: Summary,
) -> None:
    """``run`` on ``jobs`` forked workers (doors/fork_pool.py)."""
    from ..core.index_rows import RESIDENT_FOLD_AT
    from .fork_pool import LOST, NOT_ATTEMPTED, ForkPool

    # The workers append their index rows to the pending file (core/index_rows.py)
    # and this process folds them into SQLite at the end, in one transaction: two
    # workers inserting a row per instance into SQLite wait on its write lock, whose
    # busy handler sleeps (10,000 small instances: +2.5-3 s wall, +2 s of kernel CPU).
    # A worker folds on the way only past RESIDENT_FOLD_AT (4 MiB), as watch's do: at
    # 64 KiB a quarter of a worker's time went to folds (each commit a WAL checkpoint).
    deferred = config.replace(index_mode="pending", fold_at=RESIDENT_FOLD_AT)

    def start() -> Callable[[object], object]:
        """In each worker, after the fork: its own Repacker."""
        repacker = Repacker(deferred)

        def work(path: object) -> object:
            return repacker.repack_path(str(path), move=move).__getstate__()

        return work

    with ForkPool(jobs, start) as pool:
        if on_started is not None:
            on_started()
        for path, result in pool.map_unordered(paths, chunk=chunk):
            if result is NOT_ATTEMPTED:
                take(None)
                continue
            if result is LOST:
                summary.stopped = True
                outcome = Outcome(
                    str(path),
                    error=f"{path}: not known to be filed: the worker process filing it "
                    f"{_death(pool.lost_workers())}; run the batch again to finish it",
                    kind="WorkerLost",
                )
            else:
                outcome = Outcome.__new__(Outcome)
                outcome.__setstate__(result)  # type: ignore[arg-type]  # Outcome's own state
            take(outcome)
            if stopping[0] and not pool.stopped:
                pool.stop()
    if config.index:
        _fold(config)


def _fold(config: Config) -> None:
    """Fold the workers' pending index rows into the index; if that fails they stay
    pending (safe: every reader of the index folds first) and a line says so."""
    from ..core.index import fold_pending

    assert config.index is not None
    problem = fold_pending(config.index, durable=config.fsync, logdir=config.logdir)
    if problem:
        say("batch", problem)


def _preload(config: Config, *, large: bool) -> None:
    """Import, before the fork, what every worker would import for itself.

    Each new series' record carries a full-header dump, made with the element-name
    tables (~1.5 ms to import), records are locked with ``fcntl``, and the index needs
    its SQLite driver: imported here, the workers share one import. pydicom is not
    imported at all unless a file needs it (core/dump.py's fallback). For a ``large``
    batch, ``functools`` first (~1.3 ms): ``_sqlite3`` then keeps a statement cache
    (core/index.py's ``driver``), ~5 us less per instance's row.
    """
    if config.logdir:
        import fcntl  # noqa: F401

        from ..core import dictionary, dump, keywords  # noqa: F401
    if is_url(config.index):  # PostgreSQL: each worker looks up folded rows itself
        import psycopg  # noqa: F401
    elif config.index:
        if large:
            import functools  # noqa: F401

        from ..core.index import driver

        driver()


def _death(statuses: list[int]) -> str:
    """How the last lost worker ended, in words."""
    code = os.waitstatus_to_exitcode(statuses[-1]) if statuses else 0
    return f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
