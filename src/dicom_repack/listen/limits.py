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

A third column holds each worker's connections still waiting in its gate, so
that a worker can tell whether another carries less load (:meth:`Share.may_accept`);
a fourth, since when its longest-idle association has been idle, and a fifth,
how many of them other workers ask it to evict (the one column others write: a
lost increment only means one newcomer is refused).
"""

from __future__ import annotations

import threading
from collections.abc import MutableSequence
from typing import cast

__all__ = ["Limits", "Share"]

_COLUMNS = 5
_SLOTS, _BYTES, _WAITING, _IDLE_SINCE_MS, _EVICT = 0, 1, 2, 3, 4


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

            shared = multiprocessing.RawArray(ctypes.c_int64, _COLUMNS * workers)
            self.rows = cast("MutableSequence[int]", shared)
        else:
            self.rows = [0] * _COLUMNS

    def share(self, index: int) -> Share:
        """The view worker ``index`` (0-based) uses; it writes only its own row."""
        return Share(self, index)

    def clear(self, index: int) -> None:
        """Forget what a worker that died held (call from the parent only)."""
        for column in range(_COLUMNS):
            self.rows[_COLUMNS * index + column] = 0

    def totals(self) -> tuple[int, int]:
        """(associations, bytes in memory) over every worker, as last written."""
        rows = self.rows
        return sum(rows[_SLOTS::_COLUMNS]), sum(rows[_BYTES::_COLUMNS])


class Share:
    """One worker's view: take and give slots and bytes (thread-safe within the worker)."""

    __slots__ = ("_lock", "_row", "limits")

    def __init__(self, limits: Limits, index: int) -> None:
        self.limits = limits
        self._row = _COLUMNS * index
        self._lock = threading.Lock()

    def take_slot(self) -> bool:
        """One association slot, or False when all are taken."""
        lim = self.limits
        with self._lock:
            if sum(lim.rows[_SLOTS::_COLUMNS]) >= lim.max_associations:
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
            if sum(lim.rows[_BYTES::_COLUMNS]) + n > lim.memory_budget:
                return False
            lim.rows[self._row + _BYTES] += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self.limits.rows[self._row + _BYTES] -= n

    @property
    def held(self) -> tuple[int, int]:
        """(associations, bytes in memory) this worker holds."""
        rows = self.limits.rows
        return rows[self._row + _SLOTS], rows[self._row + _BYTES]

    def publish_waiting(self, n: int) -> None:
        """How many connections wait in this worker's gate (only this worker writes it)."""
        self.limits.rows[self._row + _WAITING] = n

    def publish_idle(self, since: float | None) -> None:
        """Since when (time.monotonic, the same clock in every process) this worker's
        longest-idle association waits between messages; None when none does."""
        self.limits.rows[self._row + _IDLE_SINCE_MS] = 0 if since is None else int(since * 1000)

    def request_eviction(self, idle_before: float) -> bool:
        """Ask the worker with the longest-idle association (idle since before
        ``idle_before``) to evict it; False when no other worker has one."""
        rows, me = self.limits.rows, self._row
        best, best_since = -1, int(idle_before * 1000)
        for k in range(0, len(rows), _COLUMNS):
            since = rows[k + _IDLE_SINCE_MS]
            if k != me and 0 < since <= best_since:
                best, best_since = k, since
        if best < 0:
            return False
        rows[best + _EVICT] += 1
        return True

    def eviction_requests(self) -> int:
        """Evictions other workers asked of this one since the last call."""
        rows = self.limits.rows
        n = rows[self._row + _EVICT]
        if n:
            rows[self._row + _EVICT] = 0
        return n

    def may_accept(self) -> bool:
        """True unless another worker carries less load (associations + waiting connections)."""
        lim = self.limits
        if lim.workers == 1:
            return True
        rows = lim.rows
        loads = [rows[k + _SLOTS] + rows[k + _WAITING] for k in range(0, len(rows), _COLUMNS)]
        mine = loads[self._row // _COLUMNS]
        return mine <= min(loads)
