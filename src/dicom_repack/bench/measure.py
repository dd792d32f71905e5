"""Run one command as a process tree and measure it: wall time, CPU of the tree, memory.

- Wall time: from launch to the root's exit (``time.perf_counter``).
- CPU-seconds: user+sys of the root *and every descendant it waited for*, taken from
  ``os.wait4`` on the root (Linux folds reaped children into the parent's figures).
  That is the ``getrusage(RUSAGE_CHILDREN)`` delta of the seed, but exact for this
  one tree, whatever else the bench process runs meanwhile (CodeCarbon, samplers).
- Peak tree RSS: the largest sum of RSS over the root and all its descendants seen
  by a psutil sampler (every ``interval`` seconds). A sum of RSS counts shared pages
  (the interpreter, libraries) once per process, which is what "512 Python processes
  need ~30 GB" means in the seed; it is a sampled figure, so very short-lived peaks
  can be missed.
- Largest process: the largest single RSS the same sampler saw. (Not ``ru_maxrss``:
  Linux carries the high-water mark across fork+exec, so every child would report at
  least the bench's own size, matplotlib and CodeCarbon included.)

The tree runs in its own session, so a Ctrl-C in the terminal reaches only the bench;
the bench then asks the root to stop (SIGTERM for the per-instance driver, which
finishes the instances in flight) and the run is marked interrupted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

__all__ = ["Measurement", "run_tree"]


@dataclass(slots=True)
class Measurement:
    """The figures of one run of one contestant."""

    wall_s: float
    user_s: float
    sys_s: float
    peak_tree_rss_bytes: int
    max_process_rss_bytes: int
    exit_code: int
    interrupted: bool = False
    rss_samples: int = 0

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


class _RssSampler(threading.Thread):
    """Sums the RSS of a process and all its descendants, keeps the maximum."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.largest = 0
        self.samples = 0
        self.done = threading.Event()

    def sample(self) -> bool:
        """Take one sample; False once the tree cannot be looked at any more."""
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return False
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                rss = proc.memory_info().rss
                total += rss
                self.largest = max(self.largest, rss)
        self.peak = max(self.peak, total)
        self.samples += 1
        return True

    def run(self) -> None:
        while not self.done.is_set() and self.sample():
            self.done.wait(self.interval)


def run_tree(
    argv: list[str],
    *,
    stderr_path: str | None = None,
    on_output: Callable[[bytes], None] | None = None,
    stop_signal: int = signal.SIGTERM,
    sample_interval: float = 0.1,
    env: dict[str, str] | None = None,
    grace_s: float = 60.0,
    stdin: IO[bytes] | None = None,
) -> Measurement:
    """Run ``argv`` to completion and return its :class:`Measurement`.

    ``on_output`` gets the root's stdout as it arrives (progress); without it stdout
    goes to /dev/null. A KeyboardInterrupt while waiting sends ``stop_signal`` to the
    root, waits up to ``grace_s`` for it to finish cleanly (then kills the tree), and
    returns the measurement with ``interrupted=True`` instead of raising.
    """
    err = open(stderr_path, "ab") if stderr_path else subprocess.DEVNULL  # noqa: SIM115
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if on_output else subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            env=env,
        )
    finally:
        if not isinstance(err, int):
            err.close()
    sampler = _RssSampler(proc.pid, sample_interval)
    # one sample now, before the thread is scheduled: a run shorter than the wait for
    # the thread's first turn on a busy machine would otherwise report no memory at all
    sampler.sample()
    sampler.start()
    reader: threading.Thread | None = None
    if on_output is not None and proc.stdout is not None:
        fd = proc.stdout.fileno()

        def pump() -> None:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                on_output(chunk)

        reader = threading.Thread(target=pump, name="progress-reader", daemon=True)
        reader.start()
    interrupted = False
    while True:
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            break
        except KeyboardInterrupt:
            interrupted = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, stop_signal)
            deadline = time.monotonic() + grace_s
            pid = 0
            while time.monotonic() < deadline:
                try:
                    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                    if pid:
                        break
                    time.sleep(0.05)
                except KeyboardInterrupt:
                    break  # a second Ctrl-C: stop waiting politely
            if pid:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.done.set()
    sampler.join(timeout=2)
    if reader is not None:
        reader.join(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()
    return Measurement(
        wall_s=wall,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        peak_tree_rss_bytes=sampler.peak,
        max_process_rss_bytes=sampler.largest,
        exit_code=proc.returncode,
        interrupted=interrupted,
        rss_samples=sampler.samples,
    )
