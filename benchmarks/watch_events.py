"""Which inotify library for ``dicom-repack watch``: events/s, CPU per event, idle CPU.

Three maintained libraries, each in its own consumer process watching one folder
for close-after-write events:

- ``inotify_simple`` (a thin ctypes wrapper: read the fd, parse the events);
- ``asyncinotify`` (asyncio: an event loop and an async iterator);
- ``watchdog`` (an observer thread, an emitter thread, handler callbacks).

The producer (this process) writes N small files into the folder as fast as it can
(open, write, close); each consumer counts N close-write events. Printed per library
and round (alternated): the consumer's CPU from its first event to its last, per
event; events/s over that span; the CPU it spends idle (no file written) for
``--idle`` seconds. Run on a quiet machine; the load average is printed beside the
figures (re-run a figure taken above 1.5).

    python benchmarks/watch_events.py --events 10000 --rounds 3 --idle 10
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIBRARIES = ("inotify_simple", "asyncinotify", "watchdog")
IN_CLOSE_WRITE = 0x8


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# -- consumers (each in its own process) ---------------------------------------------------


def consume_inotify_simple(folder: str, n: int, idle: float) -> tuple[float, float, float]:
    from inotify_simple import INotify, flags

    ino = INotify()
    ino.add_watch(folder, flags.CLOSE_WRITE)
    _ready()
    t0 = c0 = 0.0
    seen = 0
    while seen < n:
        events = ino.read()
        if not seen:
            t0, c0 = time.perf_counter(), _cpu()
        seen += sum(1 for ev in events if ev.mask & IN_CLOSE_WRITE)
    span, cpu = time.perf_counter() - t0, _cpu() - c0
    c1 = _cpu()
    ino.read(timeout=int(idle * 1000))  # nothing comes: how much does waiting cost?
    idle_cpu = _cpu() - c1
    ino.close()
    return span, cpu, idle_cpu


def consume_asyncinotify(folder: str, n: int, idle: float) -> tuple[float, float, float]:
    import asyncio

    from asyncinotify import Inotify, Mask

    async def main() -> tuple[float, float, float]:
        with Inotify() as inotify:
            inotify.add_watch(folder, Mask.CLOSE_WRITE)
            _ready()
            t0 = c0 = 0.0
            seen = 0
            async for _event in inotify:
                if not seen:
                    t0, c0 = time.perf_counter(), _cpu()
                seen += 1
                if seen >= n:
                    break
            span, cpu = time.perf_counter() - t0, _cpu() - c0
            c1 = _cpu()
            try:
                await asyncio.wait_for(inotify.get(), timeout=idle)
            except TimeoutError:
                pass
            return span, cpu, _cpu() - c1

    return asyncio.run(main())


def consume_watchdog(folder: str, n: int, idle: float) -> tuple[float, float, float]:
    import threading

    from watchdog.events import FileClosedEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    done = threading.Event()
    state = {"seen": 0, "t0": 0.0, "c0": 0.0}

    class Count(FileSystemEventHandler):
        def on_closed(self, event: FileClosedEvent) -> None:
            if not state["seen"]:
                state["t0"], state["c0"] = time.perf_counter(), _cpu()
            state["seen"] += 1
            if state["seen"] >= n:
                done.set()

    observer = Observer()
    observer.schedule(Count(), folder, recursive=False)
    observer.start()
    _ready()
    done.wait()
    span, cpu = time.perf_counter() - state["t0"], _cpu() - state["c0"]
    c1 = _cpu()
    time.sleep(idle)
    idle_cpu = _cpu() - c1
    observer.stop()
    observer.join()
    return span, cpu, idle_cpu


def _ready() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()


def consumer_main(library: str, folder: str, n: int, idle: float) -> int:
    run = {
        "inotify_simple": consume_inotify_simple,
        "asyncinotify": consume_asyncinotify,
        "watchdog": consume_watchdog,
    }[library]
    span, cpu, idle_cpu = run(folder, n, idle)
    print(f"{span} {cpu} {idle_cpu}")
    return 0


# -- the producer ----------------------------------------------------------------------------


def one_round(library: str, n: int, idle: float, work: Path) -> tuple[float, float, float]:
    folder = Path(tempfile.mkdtemp(prefix=f"ev-{library}-", dir=work))
    proc = subprocess.Popen(
        [sys.executable, __file__, "--consumer", library, str(folder), str(n), str(idle)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"{library}: the consumer did not start")
    payload = b"x" * 64
    for i in range(n):
        fd = os.open(folder / f"f{i:06d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, payload)
        os.close(fd)
    out, _ = proc.communicate(timeout=600)
    span, cpu, idle_cpu = (float(x) for x in out.split()[-3:])
    return span, cpu, idle_cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", type=float, default=10.0, help="s of idle waiting measured")
    ap.add_argument("--workdir", default=None, help="where the folders go (not tmpfs)")
    ap.add_argument("--consumer", nargs=4, metavar=("LIB", "DIR", "N", "IDLE"))
    args = ap.parse_args()
    if args.consumer:
        lib, folder, n, idle = args.consumer
        return consumer_main(lib, folder, int(n), float(idle))
    work = Path(tempfile.mkdtemp(prefix="watch-events-", dir=args.workdir))
    print(f"load average before: {os.getloadavg()[0]:.2f}; {args.events} events per round")
    rows: dict[str, list[tuple[float, float, float]]] = {lib: [] for lib in LIBRARIES}
    try:
        for r in range(args.rounds):
            order = LIBRARIES if r % 2 == 0 else tuple(reversed(LIBRARIES))
            for lib in order:
                rows[lib].append(one_round(lib, args.events, args.idle, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"{'library':16} {'events/s':>10} {'us CPU/event':>13} {'idle CPU % of a core':>21}")
    for lib, got in rows.items():
        rates = sorted(args.events / span for span, _, _ in got)
        per = sorted(cpu / args.events * 1e6 for _, cpu, _ in got)
        idle = sorted(i / args.idle * 100 for _, _, i in got)
        mid = len(got) // 2
        print(
            f"{lib:16} {rates[mid]:10.0f} {per[mid]:13.1f} {idle[mid]:21.3f}"
            f"   (min-max: {rates[0]:.0f}-{rates[-1]:.0f}/s, {per[0]:.1f}-{per[-1]:.1f} us,"
            f" {idle[0]:.3f}-{idle[-1]:.3f} %)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
