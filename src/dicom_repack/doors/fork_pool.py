"""Forked worker processes fed through pipes: the batch door's pool.

Why not ``multiprocessing.Pool``: importing it (with ``socket``, ``selectors``,
``tempfile``, ``random``, ``pickle``, ``threading``) and running its three
handler threads cost a batch ~20-30 ms of CPU before the first instance, more
than filing a small study; and a worker killed mid-task leaves
``imap_unordered`` waiting forever. This pool is ``os.fork``, two pipes per
worker and ``select.poll``; items and results travel as ``marshal`` data (a
built-in module: str, int, tuple, None, bool; no ``pickle``).

How it runs:

- the workers are forked when the pool is created: call it before any thread
  starts in this process (a thread's locks would be copied held);
- each worker calls ``start()`` once (after the fork) to get its ``work``
  function, then answers chunks of items with the list of their results, in
  order, until its task pipe closes; it leaves with ``os._exit`` (no ``atexit``
  handlers, no flushing of the parent's inherited buffers);
- the parent keeps two chunks in flight per worker, so no worker waits for the
  next one; its writes are non-blocking (a chunk may exceed the pipe) and it
  reads results as they come, in completion order;
- :meth:`ForkPool.stop` raises a flag the workers read in shared memory before
  each item: items already handed out come back as :data:`NOT_ATTEMPTED`, and
  no further item is taken from the input.

Signals and deaths: workers ignore SIGINT and SIGTERM (a Ctrl-C reaches the whole process
group; the parent decides, and a worker never stops half-way through an item);
closing the pool (also on KeyboardInterrupt) stops, closes the pipes and reaps
every worker, which finish their current item and exit. A worker whose parent
is gone (kill -9) exits after its current item: it checks ``getppid`` before
each item, reads EOF on its task pipe, or gets EPIPE writing results. A worker
that dies (kill -9, a crash) has the items it held reported as :data:`LOST`
and the run stops: whether they were done is not known.

Example::

    def start() -> Callable[[str], object]:
        repacker = Repacker(config)  # built in each worker, after the fork
        return lambda path: repacker.repack_path(path).__getstate__()

    with ForkPool(2, start) as pool:
        for item, result in pool.map_unordered(paths, chunk=16):
            ...  # result: what work(item) returned, NOT_ATTEMPTED or LOST
"""

from __future__ import annotations

import marshal
import os
import sys

from ..core.errors import EXIT_INTERRUPTED, EXIT_OK

TYPE_CHECKING = False
if TYPE_CHECKING:
    import select
    from collections.abc import Callable, Iterable, Iterator
    from types import TracebackType
    from typing import Any

__all__ = ["LOST", "NOT_ATTEMPTED", "PAUSE", "ForkPool", "usable_cores"]


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. a container's cpuset):
    how many workers a door starts by default (batch, watch, listen)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: the run was stopped before this item's turn: it was left untouched
NOT_ATTEMPTED = _Marker("NOT_ATTEMPTED")
#: the worker holding this item died: it may or may not have been done
LOST = _Marker("LOST")
#: yielded by an open-ended source (``watch``): "nothing to hand out now"; the pool
#: asks again when a wake fd is readable, ``wake_after()`` s passed, or a result came
PAUSE = _Marker("PAUSE")

#: chunks in flight per worker (one being worked on, one waiting in its pipe)
_IN_FLIGHT = 2
#: a worker's exit status when ``start`` or ``work`` raised (a bug: its traceback is on stderr)
_CRASHED = 70
_HEADER = 4


def _frame(obj: Any) -> bytes:  # marshal's own checks decide what it takes
    data = marshal.dumps(obj)
    return len(data).to_bytes(_HEADER, "little") + data


class _Worker:
    """The parent's view of one worker: its pid, pipe ends, chunks in flight."""

    __slots__ = ("inbox", "inflight", "outbox", "pid", "results", "status", "tasks")

    def __init__(self, pid: int, tasks: int, results: int) -> None:
        self.pid = pid
        self.tasks = tasks  # write end (non-blocking), -1 once closed
        self.results = results  # read end, -1 once closed
        self.outbox = bytearray()  # framed chunks not yet written to ``tasks``
        self.inbox = bytearray()  # bytes read from ``results`` not yet a whole message
        self.inflight: list[list[object]] = []  # chunks sent, oldest first
        self.status: int | None = None  # waitpid status once reaped


class ForkPool:
    """``jobs`` forked workers, each running ``start()``'s work function on items.

    Items and results must be ``marshal``-able (str, bytes, int, float, None,
    bool, and tuples/lists/dicts of them). Use it as a context manager: leaving
    the ``with`` block (normally, on an exception or Ctrl-C) reaps every worker.
    """

    def __init__(self, jobs: int, start: Callable[[], Callable[[object], object]]) -> None:
        import mmap

        self._flag = mmap.mmap(-1, 1)  # shared with the workers: 1 = stop
        self._parent = os.getpid()
        self._workers: list[_Worker] = []
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            for _ in range(jobs):
                self._workers.append(self._fork(start))
        except BaseException:
            self.close()
            raise

    @property
    def stopped(self) -> bool:
        return self._flag[0] == 1

    def stop(self) -> None:
        """Hand out no further item; items already handed out come back NOT_ATTEMPTED."""
        self._flag[0] = 1

    def lost_workers(self) -> list[int]:
        """Wait statuses of the workers that died before their work was done."""
        return [w.status for w in self._workers if w.status is not None and w.status != 0]

    # -- the worker --------------------------------------------------------------------

    def _fork(self, start: Callable[[], Callable[[object], object]]) -> _Worker:
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the parent's code
            code = _CRASHED
            try:
                for w in self._workers:  # the earlier workers' pipes: theirs, not ours
                    os.close(w.tasks)
                    os.close(w.results)
                os.close(task_w)
                os.close(result_r)
                code = self._serve(start, task_r, result_w)
            except KeyboardInterrupt:  # Ctrl-C before it could ignore SIGINT: no traceback
                code = EXIT_INTERRUPTED
            except BaseException:
                try:
                    import traceback

                    traceback.print_exc()
                    sys.stderr.flush()
                except BaseException:
                    pass
            finally:
                os._exit(code)
        os.close(task_r)
        os.close(result_w)
        os.set_blocking(task_w, False)
        return _Worker(pid, task_w, result_r)

    def _serve(
        self, start: Callable[[], Callable[[object], object]], task_fd: int, result_fd: int
    ) -> int:
        import _signal  # signal.py would import enum (~2 ms) for its IntEnums

        # Ctrl-C and SIGTERM (to the whole group: a terminal, a service manager) are
        # the parent's to handle: an item is never left half-done
        _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
        _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)
        work = start()
        flag, parent = self._flag, self._parent
        while True:
            size = _read_exactly(task_fd, _HEADER)
            if size is None:
                return EXIT_OK  # the task pipe closed: no more work (or the parent is gone)
            chunk = _read_exactly(task_fd, int.from_bytes(size, "little"))
            if chunk is None:
                return EXIT_OK
            results: list[object] = []
            for item in marshal.loads(chunk):
                if os.getppid() != parent:
                    return EXIT_OK  # the parent was killed: nobody to report to
                # None stands for NOT_ATTEMPTED (a work function never returns None)
                results.append(None if flag[0] else work(item))
            data = memoryview(_frame(results))
            try:
                while data:
                    data = data[os.write(result_fd, data) :]
            except BrokenPipeError:
                return EXIT_OK  # the parent closed the pool (Ctrl-C) or is gone

    # -- the parent --------------------------------------------------------------------

    def map_unordered(
        self,
        items: Iterable[object],
        *,
        chunk: int | Callable[[], int] = 1,
        wake_fds: Iterable[int] = (),
        wake_after: Callable[[], float | None] | None = None,
        here: Callable[[object], object] | None = None,
    ) -> Iterator[tuple[object, object]]:
        """``(item, work(item))`` for every item, in completion order, ``chunk`` items per message.

        ``work`` must not return None. After :meth:`stop`, the items already handed
        out come back with NOT_ATTEMPTED; those of a worker that died with LOST
        (and the pool stops: a run with a dead worker ends).

        An open-ended source (``watch``'s arrivals) yields :data:`PAUSE` when it has
        nothing now: what was taken so far goes out as a short chunk, and the source
        is asked again once one of ``wake_fds`` is readable (the source reads it, not
        the pool), ``wake_after()`` seconds passed (None: no timer), or a worker
        returned results. ``chunk`` may be a function, asked before each message: an
        open-ended source sizes its chunks by its backlog (a burst travels in big
        chunks, as a batch's does; a trickle one by one). The
        source ends the run by returning, as any iterator does.

        ``here``: a chunk of one item (``chunk`` said 1: no backlog) while no worker
        has anything in flight is offered to ``here(item)``, which works it in this
        process and returns its result, or declines with None (more is waiting: the
        item goes to a worker): a trickle then costs no message each way and no
        worker's wake-up (``watch`` beside storescp: ~0.17 ms of ~1 ms an instance).
        Once items come faster than this process works them, chunks grow or a worker
        is busy, and they go out.
        """
        import select

        source = iter(items)
        exhausted = False
        paused = False
        wakers = tuple(wake_fds)
        waiting_on_wakers = False
        poll = select.poll()
        by_fd: dict[int, _Worker] = {}
        done_here: list[tuple[object, object]] = []

        def drain() -> Iterator[tuple[object, object]]:
            """What ``here`` did since the last look."""
            while done_here:
                yield done_here.pop(0)

        def feed(w: _Worker) -> None:
            """Top up ``w``'s chunks in flight from ``source``, then write what it can."""
            nonlocal exhausted, paused
            paused = False
            while (
                not exhausted and not paused and not self.stopped and len(w.inflight) < _IN_FLIGHT
            ):
                taken: list[object] = []
                size = chunk() if callable(chunk) else chunk
                for item in source:
                    if item is PAUSE:
                        paused = True
                        break
                    taken.append(item)
                    if len(taken) >= size:
                        break
                else:
                    exhausted = True
                result = (
                    here(taken[0])
                    if here is not None
                    and len(taken) == 1
                    and not any(x.inflight for x in self._workers)
                    else None
                )
                if result is not None:
                    done_here.append((taken[0], result))  # a trickle: worked here
                elif taken:
                    w.inflight.append(taken)
                    w.outbox += _frame(taken)
            flush(w)

        def feed_all() -> None:
            """Every worker with room asks the source; then wait on the wakers only if
            the source paused while a worker still has room (else a readable waker
            nobody reads would spin the loop)."""
            nonlocal waiting_on_wakers
            for w in self._workers:
                if w.results >= 0:
                    feed(w)
            if exhausted or self.stopped:  # ended while feeding a later worker: close the
                for w in self._workers:  # idle ones fed before it too
                    flush(w)
            want = (
                paused
                and not exhausted
                and not self.stopped
                and any(w.tasks >= 0 and len(w.inflight) < _IN_FLIGHT for w in self._workers)
            )
            if want != waiting_on_wakers:
                for fd in wakers:
                    if want:
                        poll.register(fd, select.POLLIN)
                    else:
                        poll.unregister(fd)
                waiting_on_wakers = want

        def flush(w: _Worker) -> None:
            """Write ``w``'s outbox without blocking; watch for room while some is left."""
            if w.tasks < 0:
                return
            if w.outbox:
                try:
                    del w.outbox[: os.write(w.tasks, w.outbox)]
                except BlockingIOError:
                    pass
                except BrokenPipeError:  # it died: its results pipe says so
                    w.outbox.clear()
            waiting = w.tasks in by_fd
            if w.outbox and not waiting:
                by_fd[w.tasks] = w
                poll.register(w.tasks, select.POLLOUT)
            elif not w.outbox and waiting:
                poll.unregister(w.tasks)
                del by_fd[w.tasks]
            if not w.outbox and not w.inflight and (exhausted or self.stopped):
                os.close(w.tasks)  # nothing left for it: it reads EOF and exits
                w.tasks = -1

        for w in self._workers:
            by_fd[w.results] = w
            poll.register(w.results, select.POLLIN)
        feed_all()
        yield from drain()
        while by_fd:
            timeout = None
            if waiting_on_wakers and wake_after is not None:
                after = wake_after()
                timeout = None if after is None else max(0, int(after * 1000 + 0.999))
            events = poll.poll(timeout)
            if not events or (waiting_on_wakers and any(fd in wakers for fd, _ in events)):
                feed_all()  # the source may have something now
                yield from drain()
            for fd, _event in events:
                ready = by_fd.get(fd)  # None: a waker, or closed while handling an earlier event
                if ready is None:
                    continue
                if fd == ready.tasks:
                    flush(ready)
                    continue
                data = os.read(fd, 1 << 16)
                if not data:  # the worker exited (or died)
                    yield from self._ended(ready, poll, by_fd)
                    continue
                ready.inbox += data
                while len(ready.inbox) >= _HEADER:
                    size = _HEADER + int.from_bytes(ready.inbox[:_HEADER], "little")
                    if len(ready.inbox) < size:
                        break
                    results = marshal.loads(ready.inbox[_HEADER:size])
                    del ready.inbox[:size]
                    for item, result in zip(ready.inflight.pop(0), results, strict=True):
                        yield item, NOT_ATTEMPTED if result is None else result
                    if wakers or wake_after is not None:
                        feed_all()  # an open-ended source: any worker may be idle
                    else:
                        feed(ready)
                    yield from drain()

    def _ended(
        self, w: _Worker, poll: select.poll, by_fd: dict[int, _Worker]
    ) -> Iterator[tuple[object, object]]:
        """``w``'s results pipe closed: reap it; what it held is LOST if it had work."""
        for fd in (w.results, w.tasks):
            if fd in by_fd:
                poll.unregister(fd)
                del by_fd[fd]
            if fd >= 0:
                os.close(fd)
        w.results = w.tasks = -1
        w.outbox.clear()
        w.status = _reap(w.pid)
        if w.inflight:
            self.stop()
            if w.status == 0:  # it left with work in hand (cannot happen unless killed)
                w.status = _CRASHED << 8
            for taken in w.inflight:
                for item in taken:
                    yield item, LOST
            w.inflight.clear()

    def close(self) -> None:
        """Stop, close every pipe, reap every worker (each finishes its current item)."""
        self.stop()
        for w in self._workers:
            for fd in (w.tasks, w.results):
                if fd >= 0:
                    os.close(fd)
            w.tasks = w.results = -1
        for w in self._workers:
            if w.status is None:
                w.status = _reap(w.pid)

    def __enter__(self) -> ForkPool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _reap(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return 0
        except InterruptedError:  # pragma: no cover - PEP 475 retries it
            continue


def _read_exactly(fd: int, n: int) -> bytes | None:
    """``n`` bytes from ``fd`` (blocking), or None at end of file."""
    data = b""
    while len(data) < n:
        part = os.read(fd, n - len(data))
        if not part:
            return None
        data += part
    return data
