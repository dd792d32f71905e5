"""``listen --workers N``: N processes serve one listening socket (one GIL each).

The parent binds the socket, creates what the workers share (the
:class:`~.limits.Limits` table, and any object registered in ``before_fork``),
then forks N workers. Each worker runs a full :class:`~.scp.StorageServer` on
the inherited socket: the kernel hands each new connection to one of the
workers waiting in ``accept`` (a worker that already carries more load than
another lets it take the connection, see :class:`~.gate.Gate`'s ``may_accept``).

Series completion is decided in the parent, the one place that sees every
instance: each worker sends one short line per filed instance down a pipe
(``{"seen": [folder, patient, study, series]}``; lines under PIPE_BUF are
written atomically), and the parent feeds them to the single
:class:`~.series_watch.SeriesWatch`, so a series whose instances arrive through
several workers is still notified once, with its full count. Each worker sends
its counters down the same pipe when it stops; the parent prints one summary.

Signals: SIGTERM or SIGINT to the parent is passed to every worker (each
finishes the messages it is receiving, as a single process does); the parent
exits once all have. A worker that dies otherwise (kill -9, a crash) has its
share of the limits cleared, the spool files it was writing removed (``on_lost``)
and is replaced.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable

from ..core.jsonio import ndjson_line
from .limits import Limits
from .scp import Counters, StorageServer
from .series_watch import SeriesWatch

__all__ = ["Relay", "serve_workers"]

LOG = logging.getLogger("dicom_repack.listen")

#: A slot whose worker died is refilled at most this often (a crash loop stays slow).
_RESPAWN_EVERY = 1.0


class Relay:
    """A worker's stand-in for the parent's SeriesWatch: ``seen`` goes down the pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def seen(self, folder: str, patient_id: str, study_uid: str, series_uid: str) -> None:
        self.send({"seen": [folder, patient_id, study_uid, series_uid]})

    def send(self, obj: dict[str, object]) -> None:
        line = ndjson_line(obj).encode()  # the one NDJSON encoder
        view = memoryview(line)
        while view:
            view = view[os.write(self.fd, view) :]


def serve_workers(
    n: int,
    limits: Limits,
    make_server: Callable[[int, Relay], StorageServer],
    watch: SeriesWatch | None,
    on_started: Callable[[], None],
    on_lost: Callable[[int], None] = lambda pid: None,
    kill_after: float = float("inf"),
    on_stopping: Callable[[], None] = lambda: None,
) -> tuple[dict[str, int], int, int]:
    """Run ``n`` workers until SIGTERM/SIGINT; returns (summed counters, workers lost,
    stuck: workers killed at shutdown plus associations the others left behind).

    ``make_server(index, relay)`` runs in the worker, after the fork: it builds
    the worker's server on the inherited socket with ``limits.share(index)`` and
    a filer that reports filed instances to ``relay``. ``on_lost(pid)`` runs in
    the parent for each worker that died while serving (e.g. to remove its spool
    files: nobody else will finish them). A worker still running ``kill_after``
    seconds after the stop signal (one stuck past its grace) is killed (SIGKILL),
    so that the shutdown keeps its bound. ``on_stopping`` runs once, in the
    signal handler, when the stop signal first arrives.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    pids: dict[int, int] = {}  # pid -> worker index
    stopping = False
    kill_at = float("inf")
    lost = killed = 0

    def spawn(index: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            stuck = False
            try:
                os.close(read_fd)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                relay = Relay(write_fd)
                server = make_server(index, relay)

                def stop(_signum: int, _frame: object) -> None:
                    server.stop()

                signal.signal(signal.SIGTERM, stop)
                signal.signal(signal.SIGINT, stop)
                server.serve_forever()
                stuck = server.stuck > 0
                relay.send({"counters": server.counters.snapshot(), "stuck": server.stuck})
                code = 0
            except BaseException:  # a worker must never return into the parent's code
                LOG.exception("worker %d failed", index)
            finally:
                if not stuck:  # a stuck association may hold stdout's lock: no flush then
                    with contextlib.suppress(Exception):
                        sys.stdout.flush()
                        sys.stderr.flush()
                os._exit(code)
        pids[pid] = index

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping, kill_at
        if not stopping:
            kill_at = time.monotonic() + kill_after
            on_stopping()
        stopping = True
        for pid in list(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for i in range(n):
        spawn(i)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    on_started()

    totals = dict.fromkeys(Counters.NAMES, 0)
    totals["stuck"] = 0
    pending = bytearray()
    respawn_at: dict[int, float] = {}

    def drain() -> None:
        while True:
            try:
                chunk = os.read(read_fd, 65536)
            except (BlockingIOError, InterruptedError):
                return
            if not chunk:
                return
            pending.extend(chunk)
            while (end := pending.find(b"\n")) >= 0:
                line = bytes(pending[:end])
                del pending[: end + 1]
                _dispatch(line, watch, totals)

    while pids or (respawn_at and not stopping):
        with contextlib.suppress(InterruptedError):
            select.select([read_fd], [], [], 0.2)
        drain()
        while pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pids.clear()
                break
            if pid == 0:
                break
            index = pids.pop(pid, None)
            if index is None:
                continue
            limits.clear(index)
            try:
                on_lost(pid)
            except Exception:  # cleaning up after a dead worker must not stop the others
                LOG.exception("cleaning up after worker %d (pid %d) failed", index, pid)
            if not stopping:
                lost += 1
                LOG.warning(
                    "worker %d (pid %d) ended unexpectedly (status %d); replacing it",
                    index,
                    pid,
                    status,
                )
                respawn_at[index] = time.monotonic() + _RESPAWN_EVERY
        now = time.monotonic()
        if now >= kill_at:
            for pid, index in list(pids.items()):
                killed += 1
                LOG.warning("worker %d (pid %d) outlived the shutdown grace; killed", index, pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            kill_at = float("inf")
        for index, when in list(respawn_at.items()):
            if stopping:
                respawn_at.clear()
            elif now >= when:
                del respawn_at[index]
                spawn(index)
    drain()
    os.close(read_fd)
    os.close(write_fd)
    stuck = totals.pop("stuck") + killed
    return totals, lost, stuck


def _dispatch(line: bytes, watch: SeriesWatch | None, totals: dict[str, int]) -> None:
    try:
        msg = json.loads(line)
    except ValueError:
        LOG.warning("unreadable line from a worker: %r", line[:200])
        return
    seen = msg.get("seen")
    if seen is not None and watch is not None:
        watch.seen(*seen)
    for name, value in (msg.get("counters") or {}).items():
        if name in totals:
            totals[name] += int(value)
    totals["stuck"] += int(msg.get("stuck") or 0)
