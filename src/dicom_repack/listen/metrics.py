"""Live counters that add up across ``listen --workers N`` processes.

The receiver's counters (:class:`~.counters.Counters`: connections, associations,
instances stored and failed, bytes ...) plus failures by kind live in one small
table in shared memory, created by the parent before it forks: each worker
writes only its own row (under a thread lock of its own, no cross-process lock,
the same scheme as :mod:`~.limits`), and the parent's live page sums the rows
whenever it is asked. A worker that dies and is replaced keeps its row, so every
counter only ever grows, as Prometheus expects of a ``_total``.

With one process the table is a plain list; nothing changes but the sums.
"""

from __future__ import annotations

import threading
from collections.abc import MutableSequence
from typing import cast

from ..core import errors
from .counters import Counters

__all__ = ["FAILURE_KINDS", "SharedCounters", "WorkerCounters"]

#: the kinds of failure counted apart (core/errors.py: each error's stable ``code``); others
#: are "other"
FAILURE_KINDS = (
    errors.NotDicomError.code,
    errors.NotRegularFileError.code,
    errors.TruncatedError.code,
    errors.MissingElementError.code,
    errors.SourceError.code,
    errors.PlacementError.code,
    errors.UnsafePathError.code,
    errors.RecordError.code,
    "other",
)
NAMES = Counters.NAMES + tuple(f"failed:{k}" for k in FAILURE_KINDS)
_COLUMN = {name: i for i, name in enumerate(NAMES)}


class SharedCounters:
    """The table: create it before forking; give worker ``i`` :meth:`view` ``(i)``."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self.rows: MutableSequence[int]
        if workers > 1:
            import ctypes
            import multiprocessing

            self.rows = cast(
                "MutableSequence[int]",
                multiprocessing.RawArray(ctypes.c_int64, len(NAMES) * workers),
            )
        else:
            self.rows = [0] * len(NAMES)

    def view(self, index: int) -> WorkerCounters:
        """Worker ``index``'s counters (the :class:`~.counters.Counters` interface)."""
        return WorkerCounters(self, index)

    def totals(self) -> dict[str, int]:
        """Every counter summed over the workers, as last written."""
        width = len(NAMES)
        rows = self.rows
        return {name: sum(rows[i::width]) for i, name in enumerate(NAMES)}


class WorkerCounters(Counters):
    """One worker's row; what :class:`~.scp.StorageServer` bumps (thread-safe)."""

    def __init__(self, table: SharedCounters, index: int) -> None:
        self._lock = threading.Lock()
        self._table = table
        self._base = len(NAMES) * index

    def add(self, name: str, n: int = 1) -> None:
        at = self._base + _COLUMN[name]
        with self._lock:
            self._table.rows[at] += n

    def failure(self, kind: str | None) -> None:
        """Count one instance not filed, by its error's code."""
        self.add(f"failed:{kind if kind in FAILURE_KINDS else 'other'}")

    def snapshot(self) -> dict[str, int]:
        """This worker's counters of :attr:`Counters.NAMES` (for the summary line)."""
        rows = self._table.rows
        return {name: rows[self._base + _COLUMN[name]] for name in Counters.NAMES}
