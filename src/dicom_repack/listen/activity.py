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

from ..core.index import Index, IndexFailure

if TYPE_CHECKING:
    from .metrics import WorkerCounters
    from .scp import Association

__all__ = ["Activity"]

LOG = logging.getLogger("dicom_repack.listen")

#: how many recent associations and failures the page lists
KEEP = 50


class Activity:
    """Thread-safe; one per receiving process."""

    def __init__(self, index: str | None = None, *, durable: bool = False) -> None:
        self.index_path = index
        self.durable = durable
        self._local = threading.local()
        self._lock = threading.Lock()
        self.failures: collections.deque[dict[str, object]] = collections.deque(maxlen=KEEP)
        self.ended: collections.deque[dict[str, object]] = collections.deque(maxlen=KEEP)
        self.failure_kinds: collections.Counter[str] = collections.Counter()
        #: this process's row of the shared counters (set by the worker that uses it)
        self.counters: WorkerCounters | None = None

    def _index(self) -> Index | None:
        if self.index_path is None:
            return None
        index: Index | None = getattr(self._local, "index", None)
        if index is None:
            index = self._local.index = Index(self.index_path, durable=self.durable, timeout=10.0)
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
            "INSERT OR REPLACE INTO associations (peer, started, calling_ae, called_ae) "
            "VALUES (?, ?, ?, ?)",
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
            "INSERT OR REPLACE INTO associations "
            "(peer, started, calling_ae, called_ae, ended, instances, bytes, result) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (me.peer, me.started, me.calling_ae, me.called_ae, now, me.instances, me.received,
             me.result),
        )  # fmt: skip

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
