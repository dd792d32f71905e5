"""What the receiver did, beyond the instances: associations and failures.

The server calls :meth:`Activity.association_ended` for each accepted
association and the store handler calls :meth:`Activity.failure` for each
instance it could not file. Each becomes:

- one log line (an association at INFO: peer, AE titles, instances, bytes,
  duration, result; a failure at WARNING: the one-line reason);
- a row in the index (``associations``, ``failures``), so ``status`` can call a
  series complete once the association that brought it has ended, and the live
  page of a multi-process receiver can show every process's activity;
- an entry in a short in-memory list, and a count per failure kind, for the
  live page and ``/metrics`` of this process.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING

from ..core.index import IndexFailure, open_index

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core.index import Index
    from ..core.index_pg import PgIndex
    from .metrics import WorkerCounters
    from .scp import Association

__all__ = ["Activity"]

LOG = logging.getLogger("dicom_repack.listen")

#: how many recent associations and failures the page lists
KEEP = 50


class Activity:
    """Thread-safe; one per receiving process."""

    def __init__(
        self, index: str | None = None, *, durable: bool = False, logdir: str | None = None
    ) -> None:
        self.index_path = index
        self.durable = durable
        #: a PostgreSQL index's local folder (core/index_rows.py: local_path)
        self.logdir = logdir
        self._local = threading.local()
        self._lock = threading.Lock()
        self.failures: collections.deque[dict[str, object]] = collections.deque(maxlen=KEEP)
        self.ended: collections.deque[dict[str, object]] = collections.deque(maxlen=KEEP)
        self.failure_kinds: collections.Counter[str] = collections.Counter()
        #: this process's row of the shared counters (set by the worker that uses it)
        self.counters: WorkerCounters | None = None

    def _index(self) -> Index | PgIndex | None:
        if self.index_path is None:
            return None
        index: Index | PgIndex | None = getattr(self._local, "index", None)
        if index is None:
            index = self._local.index = open_index(
                self.index_path, self.logdir, durable=self.durable, timeout=10.0
            )
        return index

    def _write(self, sql: str, row: tuple[object, ...]) -> None:
        index = self._index()
        if index is None:
            return
        try:
            index.execute(sql, row)
        except IndexFailure as exc:  # the instances are filed; only the page loses a line
            LOG.warning("%s", exc)

    def association_started(self, me: Association) -> None:
        """An open row (no end yet): the live page of a multi-process receiver lists it."""
        self._write(
            "INSERT INTO associations (peer, started, calling_ae, called_ae) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (peer, started) DO UPDATE SET "
            "calling_ae = excluded.calling_ae, called_ae = excluded.called_ae",
            (me.peer, me.started, me.calling_ae, me.called_ae),
        )

    def association_ended(self, me: Association) -> None:
        """The log line and the index row of one association that was accepted."""
        now = time.time()
        duration = now - me.started
        LOG.info(
            "association %s %s -> %s: %d instances, %d bytes in %.2f s, %s",
            me.peer, me.calling_ae, me.called_ae, me.instances, me.received, duration, me.result,
        )  # fmt: skip
        entry: dict[str, object] = {
            "peer": me.peer,
            "calling_ae": me.calling_ae,
            "called_ae": me.called_ae,
            "started": me.started,
            "ended": now,
            "instances": me.instances,
            "bytes": me.received,
            "result": me.result,
        }
        with self._lock:
            self.ended.appendleft(entry)
        self._write(
            "INSERT INTO associations "
            "(peer, started, calling_ae, called_ae, ended, instances, bytes, result) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (peer, started) DO UPDATE SET "
            "calling_ae = excluded.calling_ae, called_ae = excluded.called_ae, "
            "ended = excluded.ended, instances = excluded.instances, bytes = excluded.bytes, "
            "result = excluded.result",
            (me.peer, me.started, me.calling_ae, me.called_ae, now, me.instances, me.received,
             me.result),
        )  # fmt: skip
        self._end_thread()

    def close_when_association_ends(self, close: Callable[[], None]) -> None:
        """Have ``close()`` called, in this thread, when its association ends.

        An association's thread opens SQLite connections (this Activity's and its
        Repacker's index). CPython frees a connection that is not closed only when
        the garbage collector runs (the connection's statement cache refers back to
        it), so at exit some stay open and SQLite leaves the index's ``-wal`` and
        ``-shm`` behind; a connection can only be closed in the thread that opened
        it. So each association closes its own, at its end; the last one closed
        checkpoints the WAL and removes both files, as rx-repack leaves none.
        """
        closers: list[Callable[[], None]] | None = getattr(self._local, "closers", None)
        if closers is None:
            closers = self._local.closers = []
        closers.append(close)

    def _end_thread(self) -> None:
        """Close what this association's thread opened (see close_when_association_ends)."""
        closers: list[Callable[[], None]] = getattr(self._local, "closers", None) or []
        self._local.closers = []
        index: Index | PgIndex | None = getattr(self._local, "index", None)
        self._local.index = None
        if index is not None:
            closers.append(index.close)
        for close in closers:
            try:
                close()
            except Exception as exc:  # closing must not take the association's thread down
                LOG.warning("closing the index connection: %s", exc)

    def failure(
        self, source: str, kind: str | None, reason: str, calling_ae: str, peer: str
    ) -> None:
        """One instance not filed (its reason is already one line naming it)."""
        now = time.time()
        kind = kind or "Error"
        if self.counters is not None:
            self.counters.failure(kind)
        with self._lock:
            self.failure_kinds[kind] += 1
            self.failures.appendleft(
                {"at": now, "source": source, "kind": kind, "reason": reason,
                 "calling_ae": calling_ae, "peer": peer}
            )  # fmt: skip
        self._write(
            "INSERT INTO failures (at, source, kind, reason, calling_ae, peer) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (now, source, kind, reason, calling_ae, peer),
        )

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "failures": list(self.failures),
                "ended": list(self.ended),
                "failure_kinds": dict(self.failure_kinds),
            }
