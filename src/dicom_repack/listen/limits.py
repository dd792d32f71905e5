"""Association slots and the in-memory byte budget, shared by every worker process.

Two limits hold across all of ``listen``'s processes: at most
``max_associations`` associations at once, and at most ``memory_budget`` bytes
of unfinished data sets held in memory (the rest goes to temporary files, see
:mod:`dicom_repack.listen.sink`). Each worker owns one row of a small shared
table (associations it holds, bytes it holds) and writes only its own row; a
check sums every row. No cross-process lock, so a worker killed at any moment
cannot leave one held: the parent clears a dead worker's row
(:meth:`Limits.clear`). The price: two workers checking at the same instant can
both pass, so a limit may be exceeded by at most one association, or one PDU of
bytes, per other worker. With one process (``--workers 1``) the limits are exact.
"""

from __future__ import annotations

import threading
from collections.abc import MutableSequence
from typing import cast

__all__ = ["Limits", "Share"]


class Limits:
    """The shared table; create it before forking, then give each worker :meth:`share`."""

    def __init__(self, max_associations: int, memory_budget: int, workers: int = 1) -> None:
        self.max_associations = max_associations
        self.memory_budget = memory_budget
        self.workers = workers
        self.rows: MutableSequence[int]
        if workers > 1:
            import ctypes
            import multiprocessing

            shared = multiprocessing.RawArray(ctypes.c_int64, 2 * workers)
            self.rows = cast("MutableSequence[int]", shared)
        else:
            self.rows = [0, 0]

    def share(self, index: int) -> Share:
        """The view worker ``index`` (0-based) uses; it writes only its own row."""
        return Share(self, index)

    def clear(self, index: int) -> None:
        """Forget what a worker that died held (call from the parent only)."""
        self.rows[2 * index] = 0
        self.rows[2 * index + 1] = 0

    def totals(self) -> tuple[int, int]:
        """(associations, bytes in memory) over every worker, as last written."""
        rows = self.rows
        return sum(rows[0::2]), sum(rows[1::2])


class Share:
    """One worker's view: take and give slots and bytes (thread-safe within the worker)."""

    __slots__ = ("_lock", "_row", "limits")

    def __init__(self, limits: Limits, index: int) -> None:
        self.limits = limits
        self._row = 2 * index
        self._lock = threading.Lock()

    def take_slot(self) -> bool:
        """One association slot, or False when all are taken."""
        lim = self.limits
        with self._lock:
            if sum(lim.rows[0::2]) >= lim.max_associations:
                return False
            lim.rows[self._row] += 1
            return True

    def give_slot(self) -> None:
        with self._lock:
            self.limits.rows[self._row] -= 1

    def reserve(self, n: int) -> bool:
        """Room for ``n`` more bytes in memory, or False when the budget is spent."""
        lim = self.limits
        with self._lock:
            if sum(lim.rows[1::2]) + n > lim.memory_budget:
                return False
            lim.rows[self._row + 1] += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self.limits.rows[self._row + 1] -= n

    @property
    def held(self) -> tuple[int, int]:
        """(associations, bytes in memory) this worker holds."""
        rows = self.limits.rows
        return rows[self._row], rows[self._row + 1]
