"""The watch door's engine: file what a receiver writes into a folder, as it arrives.

storescp (or any receiver that writes files) keeps its job; this resident
process files each complete file through the core job, as ``batch`` does, with
no program started per instance. Arrivals (:mod:`.arrivals`) say which files are
complete; the job runs here (``jobs=1``) or on forked workers
(:class:`~..doors.fork_pool.ForkPool`, fed as files arrive); with workers, a
file that arrives alone while they are idle (a trickle: storescp writing one
instance at a time) is filed here too, without a message to a worker and back.

What it promises:

- **Nothing lost.** The source goes last (the core job). SIGTERM or Ctrl-C:
  each worker finishes the instance in hand; files not started stay where they
  are and are filed at the next start, which files whatever is already there
  first.
- **Once.** In copy mode a file is filed again only when it changed (size or
  mtime; across restarts: size or ctime, from the index, whose rows hold each
  source, its size and when it was filed). Without an index a restart files everything again, to the
  same paths with the same bytes.
- **Bad files stay.** A file that is not DICOM, is truncated, vanished or is not
  a regular file gets one line naming it and is left in place; it is tried
  again only when it changes, or at a start with ``retry_failed`` (failures are
  remembered in the index, across restarts).

Use (what ``dicom-repack watch`` does)::

    watcher = Watcher(["/incoming"], Config("/data", "/log"), move=True)
    signal.signal(signal.SIGTERM, lambda *_: watcher.stop())
    summary = watcher.run()
"""

from __future__ import annotations

import os
import select
import time

from ..core.errors import WORKER_LOST
from ..core.index_rows import RESIDENT_FOLD_AT, is_url
from ..core.outcome import Outcome
from ..core.repack import Config, Repacker
from ..doors.batch_engine import Summary
from .arrivals import Arrivals

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any

    from ..core.index import Index
    from ..core.index_pg import PgIndex

__all__ = ["Watcher"]

#: fold the workers' pending index rows here at most this often, and only while no path
#: is out with a worker: a fold here holds up the feeding of the workers (waiting on
#: SQLite's write lock, a checkpoint's fsyncs), so while they are busy they fold their
#: own rows (at :data:`~..core.index_rows.RESIDENT_FOLD_AT`) and this process waits for
#: a lull (readers fold what waits: ``status``, a series' event)
FOLD_EVERY_S = 1.0
#: the most paths per message to a worker: a burst (a start with a full folder, a
#: rescan) travels in chunks sized by the backlog, as a batch's do; a trickle goes one
#: by one (a pause ends a chunk early)
CHUNK_MAX = 128
#: the most paths taken from the arrivals at once: a burst's first chunks go out to the
#: workers before this process has looked at (lstat) its last files, and a scan after an
#: overflow waits until the workers hold what the events said (watch/arrivals.py: take)
TAKE_AT_MOST = 1024


class Watcher:
    """Watches ``roots`` and files every complete file under ``config``.

    ``report(outcome)`` is called for each file taken (filed, skipped or failed),
    in this process; ``say(line)`` for what the operator should know (polling,
    an overflow, files left alone). ``on_started()`` runs once the workers are
    forked and the folders watched (the place to start threads: a page, a hook).
    """

    def __init__(
        self,
        roots: Iterable[str],
        config: Config,
        *,
        move: bool = False,
        jobs: int = 1,
        poll: float | None = None,
        settle: float = 1.0,
        ignore: Iterable[str] = (),
        retry_failed: bool = False,
        report: Callable[[Outcome], None] = lambda outcome: None,
        say: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.config = config
        self.move = move
        self.jobs = max(1, jobs)
        self.retry_failed = retry_failed
        self.report = report
        self.say = say
        exclude = [config.datadir] + ([config.logdir] if config.logdir else [])
        if config.index and not is_url(config.index):  # a PostgreSQL index's: the log folder
            exclude.append(os.path.dirname(os.path.abspath(config.index)))
        self.arrivals = Arrivals(
            roots, exclude=exclude, ignore=ignore, poll=poll, settle=settle, say=say
        )
        self.summary = Summary()
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._filed_since_fold = 0
        self._last_fold = 0.0
        #: paths taken from the arrivals and not yet handed out (sizes the chunks)
        self._backlog = 0
        #: paths handed out whose outcome has not come back yet
        self._out = 0
        self._failures: Index | PgIndex | None = None

    # -- control -------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the instances in hand, then return from :meth:`run` (signal-safe)."""
        self._stopping = True
        try:
            os.write(self._wake_w, b"s")
        except OSError:  # full (already woken) or closed (already stopped)
            pass

    def close(self) -> None:
        """Release the inotify descriptor, the wake pipe and the index connection."""
        self.arrivals.close()
        if self._failures is not None:
            self._failures.close()
            self._failures = None
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    # -- the run ---------------------------------------------------------------------------

    def run(self, on_started: Callable[[], None] | None = None) -> Summary:
        """Watch and file until :meth:`stop`; the summary of what was taken."""
        start = time.perf_counter()
        self._remember_earlier_runs()
        self.arrivals.start()
        try:
            if self.jobs == 1:
                self._run_here(on_started)
            else:
                self._run_pooled(on_started)
        finally:
            self._fold()
            self.summary.elapsed = time.perf_counter() - start
        return self.summary

    def _config(self) -> Config:
        """The job's config: index rows appended to the pending file (~20 us), folded by
        the workers as it passes RESIDENT_FOLD_AT and here in a lull, instead of one
        SQLite commit per instance."""
        return self.config.replace(index_mode="pending", fold_at=RESIDENT_FOLD_AT)

    def _items(self) -> Iterator[object]:
        """Paths as they become complete; PAUSE when there are none now; ends on stop."""
        from ..doors.fork_pool import PAUSE

        while True:
            self._drain_wake()
            if self._stopping:
                return
            paths = self.arrivals.take(TAKE_AT_MOST)
            more = self.arrivals.ready()
            for i, path in enumerate(paths):
                self._backlog = len(paths) - i + more
                self._out += 1
                yield path
                if self._stopping:
                    return
            self._backlog = 0
            if more:
                continue  # the rest of a burst: no pause (a short chunk) in between
            if (
                self._filed_since_fold
                and not self._out
                and time.monotonic() - self._last_fold >= FOLD_EVERY_S
            ):
                self._fold()
            yield PAUSE

    def _wake_fds(self) -> list[int]:
        fd = self.arrivals.fileno()
        return [self._wake_r] + ([fd] if fd is not None else [])

    def _run_here(self, on_started: Callable[[], None] | None) -> None:
        from ..doors.fork_pool import PAUSE

        with Repacker(self._config()) as repacker:
            if on_started is not None:
                on_started()
            poller = select.poll()
            registered: list[int] = []
            for item in self._items():
                if item is not PAUSE:
                    self._take(repacker.repack_path(str(item), move=self.move))
                    continue
                fds = self._wake_fds()  # inotify may have given way to polling
                if fds != registered:
                    for fd in registered:
                        poller.unregister(fd)
                    for fd in fds:
                        poller.register(fd, select.POLLIN)
                    registered = fds
                after = self.arrivals.wake_after()
                poller.poll(None if after is None else int(after * 1000 + 0.999))

    def _run_pooled(self, on_started: Callable[[], None] | None) -> None:
        from ..doors.fork_pool import LOST, NOT_ATTEMPTED, ForkPool

        config, move = self._config(), self.move

        def start() -> Callable[[object], object]:
            repacker = Repacker(config)  # in each worker, after the fork

            def work(path: object) -> object:
                return repacker.repack_path(str(path), move=move).__getstate__()

            return work

        with ForkPool(self.jobs, start) as pool, Repacker(config) as here:
            if on_started is not None:
                on_started()

            def file_here(path: object) -> object:
                """A file that arrives alone while the workers are idle: filed in this
                process (no message each way, no worker woken); None (a worker's) when
                more events wait: a burst must not queue behind this process."""
                if self.arrivals.waiting():
                    return None
                return here.repack_path(str(path), move=move).__getstate__()

            results = pool.map_unordered(
                self._items(),
                chunk=self._chunk,
                wake_fds=self._wake_fds(),  # fixed for the run: a fall-back to polling
                wake_after=self.arrivals.wake_after,  # then wakes on the timer alone
                here=file_here,
            )
            for path, result in results:
                if self._stopping and not pool.stopped:
                    pool.stop()  # chunks queued to a worker come back untouched: in hand only
                if result is NOT_ATTEMPTED:
                    self._out -= 1
                    self.arrivals.forget(str(path))  # untouched: the next start takes it
                    self.summary.not_attempted += 1
                    continue
                if result is LOST:
                    self.summary.stopped = True
                    outcome = Outcome(
                        str(path),
                        error=f"{path}: not known to be filed: a worker process died; "
                        "stopping (a restart files whatever is left)",
                        kind=WORKER_LOST,
                    )
                else:
                    outcome = Outcome.__new__(Outcome)
                    outcome.__setstate__(result)  # type: ignore[arg-type]  # Outcome's own state
                self._take(outcome)

    def _chunk(self) -> int:
        """Paths in the next message to a worker: a share of the backlog (each worker
        gets some of a burst; two messages are in flight per worker)."""
        return max(1, min(CHUNK_MAX, self._backlog // (4 * self.jobs)))

    def _take(self, outcome: Outcome) -> None:
        self._out -= 1
        self.summary.add(outcome)
        if outcome.error is None:
            self._filed_since_fold += 1
            if self.move:
                self.arrivals.forget(outcome.src)  # gone: nothing to remember
        elif outcome.kind != WORKER_LOST:
            self._remember_failure(outcome)
        self.report(outcome)

    def _remember_failure(self, outcome: Outcome) -> None:
        """A failure row in the index: the next start leaves the file alone unless it
        changed (or ``retry_failed``)."""
        if not self.config.index:
            return
        from ..core.index import IndexFailure, open_index

        if self._failures is None:
            self._failures = open_index(
                self.config.index, self.config.logdir, durable=self.config.fsync, timeout=10.0
            )
        try:
            self._failures.execute(
                "INSERT INTO failures (at, source, kind, reason) VALUES (?, ?, ?, ?)",
                (time.time(), outcome.src, outcome.kind or "Error", outcome.error),
            )
        except IndexFailure as exc:
            self.say(f"{exc}; {outcome.src} may be tried again at the next start")

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except (BlockingIOError, OSError):
            pass

    # -- the index ---------------------------------------------------------------------------

    def _fold(self) -> None:
        """Fold the pending index rows into SQLite (status folds too: this keeps it small)."""
        self._last_fold = time.monotonic()
        if not self._filed_since_fold or not self.config.index:
            return
        self._filed_since_fold = 0
        from ..core.index import fold_pending

        problem = fold_pending(
            self.config.index, durable=self.config.fsync, logdir=self.config.logdir
        )
        if problem:
            self.say(problem)

    def _remember_earlier_runs(self) -> None:
        """What earlier runs did with the files now under the roots, from the index:
        filed (copy mode: not again unless changed) or failed (not again unless
        changed, or ``retry_failed``)."""
        index_path = self.config.index
        pg = is_url(index_path)
        if not index_path or not (pg or os.path.exists(index_path)):
            return
        from ..core.index import IndexFailure, connect_reader, open_index

        try:
            index = open_index(index_path, self.config.logdir, durable=self.config.fsync)
        except IndexFailure as exc:
            self.say(f"{exc}; files filed before may be filed again")
            return
        try:
            index.fold()
        except IndexFailure as exc:
            self.say(f"{exc}; files filed before may be filed again")
        finally:
            index.close()
        try:
            if pg:
                from ..core.status_query import open_pg

                conn: Any = open_pg(index_path)
            else:
                conn = connect_reader(index_path)
        except IndexFailure:
            return
        roots = tuple(r.rstrip("/") + "/" for r in self.arrivals.roots)
        left_alone = 0
        try:
            if not self.move:
                rows = conn.execute("SELECT source, size, filed_at FROM instances").fetchall()
                for source, size, filed_at in rows:
                    if isinstance(source, str) and source.startswith(roots):
                        self._skip_if_unchanged(source, size, filed_at)
            if not self.retry_failed:
                rows = conn.execute(
                    "SELECT source, max(at) FROM failures WHERE source IS NOT NULL GROUP BY source"
                ).fetchall()
                for source, at in rows:
                    if isinstance(source, str) and source.startswith(roots):
                        left_alone += self._skip_if_unchanged(source, None, at)
        finally:
            conn.close()
        if left_alone:
            self.say(
                f"{left_alone} files that failed before and have not changed are left alone "
                "(--retry-failed tries them again)"
            )

    def _skip_if_unchanged(self, path: str, size: int | None, since: float) -> int:
        try:
            st = os.lstat(path)
        except OSError:
            return 0
        # ctime, not mtime: any write, truncation or touch moves it on, and no tool can
        # set it back (a copy keeping old mtimes, cp -p, rsync -t, is still a change)
        if (size is not None and st.st_size != size) or st.st_ctime > since:
            return 0
        self.arrivals.taken(path, (st.st_size, st.st_mtime_ns))
        return 1
