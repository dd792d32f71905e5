"""The fork pool on its own: real forked workers, real pipes (doors/fork_pool.py)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator

from dicom_repack.doors.fork_pool import LOST, NOT_ATTEMPTED, PAUSE, ForkPool


def _echo() -> Callable[[object], object]:
    return lambda item: (os.getpid(), item)


def test_every_item_once_and_results_larger_than_a_pipe_buffer() -> None:
    big = "x" * (1 << 20)  # a 1 MiB result: several pipe buffers per message

    def start() -> Callable[[object], object]:
        return lambda item: (item, big)

    with ForkPool(2, start) as pool:
        got = dict(pool.map_unordered(range(50), chunk=4))
    assert sorted(int(str(k)) for k in got) == list(range(50))
    assert all(result == (item, big) for item, result in got.items())


def test_an_open_ended_source_pauses_and_resumes_on_its_wake_fd() -> None:
    """watch's case: items come as they arrive; PAUSE means "nothing now"."""
    r, w = os.pipe()
    sent: list[int] = []

    def source() -> Iterator[object]:
        for batch in ([1, 2], [3], [4, 5, 6]):
            sent.extend(batch)
            yield from batch
            os.write(w, b".")  # the next batch "arrives" at once
            yield PAUSE
            os.read(r, 1)

    try:
        with ForkPool(2, _echo) as pool:
            got = sorted(
                int(str(i)) for i, _ in pool.map_unordered(source(), chunk=8, wake_fds=[r])
            )
    finally:
        os.close(r)
        os.close(w)
    assert got == sent == [1, 2, 3, 4, 5, 6]


def test_a_source_that_ends_while_workers_idle_ends_the_run() -> None:
    """The source ending while feeding a later worker closes the idle workers fed
    before it too (a watcher stopped by SIGTERM hung here: two idle workers waiting
    for work that would never come). Rounds of feeding, three workers: the first
    result makes round two, in which the source ends at the third worker."""
    calls = {"n": 0}

    def source() -> Iterator[object]:
        yield "only"
        while calls["n"] < 5:
            calls["n"] += 1
            yield PAUSE

    def hung(_signum: int, _frame: object) -> None:
        raise TimeoutError("the pool did not end with its source")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    try:
        with ForkPool(3, _echo) as pool:
            results = list(pool.map_unordered(source(), chunk=8, wake_after=lambda: None))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert [item for item, _ in results] == ["only"]


def test_stop_with_work_in_flight_returns_the_rest_not_attempted() -> None:
    def start() -> Callable[[object], object]:
        def work(item: object) -> object:
            time.sleep(0.01)
            return item

        return work

    with ForkPool(2, start) as pool:
        done: list[int] = []
        untouched: list[int] = []
        for item, result in pool.map_unordered(range(400), chunk=16):
            if result is NOT_ATTEMPTED:
                untouched.append(int(str(item)))
            else:
                done.append(int(str(item)))
                if len(done) == 5:
                    pool.stop()
    assert done and untouched
    assert sorted(done + untouched) == sorted(set(done + untouched))  # no item twice
    assert len(done) + len(untouched) < 400  # nothing taken from the input after the stop


def test_a_worker_killed_has_its_items_lost_and_the_run_stops() -> None:
    def start() -> Callable[[object], object]:
        def work(item: object) -> object:
            if item == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return item

        return work

    with ForkPool(2, start) as pool:
        results = dict(pool.map_unordered(range(100), chunk=1))
    assert results[3] is LOST
    assert pool.lost_workers(), "the dead worker's status is reported"


def test_workers_ignore_sigterm_sent_to_the_group() -> None:
    """A terminal's or service manager's SIGTERM to the whole group: the parent decides;
    a worker never stops half-way through an item."""

    def start() -> Callable[[object], object]:
        def work(item: object) -> object:
            if item == 0:
                os.kill(os.getpid(), signal.SIGTERM)
            return item

        return work

    with ForkPool(1, start) as pool:
        results = dict(pool.map_unordered(range(3), chunk=1))
    assert results == {0: 0, 1: 1, 2: 2}


def test_an_item_alone_while_workers_idle_is_worked_here_and_a_burst_goes_out() -> None:
    """``here``: a trickle (chunks of one, every worker idle) is worked on in
    this process; a burst of items goes to the workers; every item once."""
    burst = [f"b{i}" for i in range(40)]

    def source() -> Iterator[object]:
        yield "t1"
        yield PAUSE
        yield "t2"
        yield PAUSE
        yield from burst
        yield PAUSE

    where: dict[object, tuple[str, int]] = {}
    with ForkPool(2, lambda: lambda item: ("worker", os.getpid())) as pool:
        for item, result in pool.map_unordered(
            source(), chunk=4, here=lambda item: ("here", os.getpid()), wake_after=lambda: 0.0
        ):
            assert isinstance(result, tuple)
            where[item] = result
    assert set(where) == {"t1", "t2", *burst}
    assert where["t1"] == where["t2"] == ("here", os.getpid())
    assert all(where[b][0] == "worker" for b in burst)


def test_here_may_decline_and_the_item_goes_to_a_worker() -> None:
    """``here`` returning None (watch: more events are waiting) sends the item out."""

    def source() -> Iterator[object]:
        for i in range(6):
            yield f"t{i}"
            yield PAUSE

    where: dict[object, tuple[str, int]] = {}
    offered: list[object] = []

    def here(item: object) -> object:
        offered.append(item)
        return ("here", os.getpid()) if item == "t0" else None  # declines the rest

    with ForkPool(2, lambda: lambda item: ("worker", os.getpid())) as pool:
        for item, result in pool.map_unordered(
            source(), chunk=1, here=here, wake_after=lambda: 0.0
        ):
            assert isinstance(result, tuple)
            where[item] = result
    assert set(where) == {f"t{i}" for i in range(6)}
    assert where["t0"] == ("here", os.getpid())  # the first: every worker idle
    assert "t1" in offered  # offered, declined...
    assert all(where[k][0] == "worker" for k in where if k != "t0")  # ...and worked out there
