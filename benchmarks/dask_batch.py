"""``batch --dask`` beside the local pool: instances/s, CPU per instance, scheduler cost per task.

Runs, alternated in each round on one generated corpus (on /dev/shm: the disk
is not what is measured):

* ``batch -j 1`` and ``batch -j 2`` (the local pool, what one machine does);
* ``batch --dask ADDRESS`` with one, then two ``dask worker`` processes
  (``--nthreads 1 --no-nanny``) on a ``dask scheduler``, all on 127.0.0.1.

CPU is counted for every process involved: the batch command (and its pool's
children) through ``RUSAGE_CHILDREN``, the scheduler and the workers through
psutil. Then the scheduler's own cost per task: a stream of no-op tasks
submitted the way the door submits chunks (bounded in flight, as_completed),
wall time and scheduler CPU per task.

    .venv/bin/python benchmarks/dask_batch.py --instances 3000 --rounds 3

Prints one line per run and a summary with ratios; run it on a quiet machine
(it says so when the load average is high).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import compile_package, cpu_times_children

BIN = Path(sys.executable).parent


def _dd() -> Any:
    """The distributed module (its annotations are partial: used as Any)."""
    import importlib

    return importlib.import_module("distributed")


def _cpu(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


class Cluster:
    """A scheduler and up to two workers on 127.0.0.1, started and stopped here."""

    def __init__(self, work: Path) -> None:
        self.work = work
        info = work / "scheduler.json"
        info.unlink(missing_ok=True)
        self.scheduler = self._start(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--scheduler-file", str(info)]
        )  # fmt: skip
        while not info.exists() or not info.read_text().strip():
            if self.scheduler.poll() is not None:
                raise SystemExit("dask scheduler did not start")
            time.sleep(0.05)
        time.sleep(0.1)
        self.address: str = json.loads(info.read_text())["address"]
        self.workers: list[subprocess.Popen[bytes]] = []

    @staticmethod
    def _start(cmd: list[str]) -> subprocess.Popen[bytes]:
        env = dict(os.environ, DASK_DISTRIBUTED__LOGGING__DISTRIBUTED="error")
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def scale(self, n: int) -> None:
        while len(self.workers) > n:
            w = self.workers.pop()
            w.terminate()
            w.wait()
        worker = [str(BIN / "dask"), "worker", self.address, "--nthreads", "1",
                  "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"]  # fmt: skip
        while len(self.workers) < n:
            self.workers.append(self._start(worker))
        with _dd().Client(self.address, timeout="30s") as client:
            deadline = time.monotonic() + 60
            while len(client.nthreads()) != n:
                if time.monotonic() > deadline:
                    raise SystemExit(f"expected {n} workers")
                time.sleep(0.1)

    def pids(self) -> list[int]:
        return [self.scheduler.pid, *(w.pid for w in self.workers)]

    def stop(self) -> None:
        for p in [*self.workers, self.scheduler]:
            if p.poll() is None:
                p.terminate()
        for p in [*self.workers, self.scheduler]:
            p.wait()


def batch(corpus: Path, out: Path, extra: list[str], cluster: Cluster | None) -> dict[str, float]:
    cmd = [str(BIN / "dicom-repack"), "batch", str(corpus), "-d", str(out / "data"),
           "-l", str(out / "log"), "--no-progress", "--summary-json", str(out / "s.json"), *extra]  # fmt: skip
    out.mkdir(parents=True)
    others = cluster.pids() if cluster else []
    c0, o0, t0 = cpu_times_children(), _cpu(others), time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    client_cpu = cpu_times_children() - c0
    other_cpu = _cpu(others) - o0
    filed = json.loads((out / "s.json").read_text())["instances"]
    shutil.rmtree(out)  # tmpfs: no slow-after-delete state to wait out
    return {
        "wall": wall,
        "filed": filed,
        "cpu": client_cpu + other_cpu,
        "client_cpu": client_cpu,
        "cluster_cpu": other_cpu,
    }


def _noop(i: int) -> int:
    return i


def task_overhead(cluster: Cluster, tasks: int) -> dict[str, float]:
    """Per-task cost of the scheduler: no-op tasks streamed like the door streams chunks."""
    dd = _dd()
    with dd.Client(cluster.address, timeout="30s") as client:
        limit = 2 * sum(client.nthreads().values()) + 1
        s0, w0 = _cpu([cluster.scheduler.pid]), _cpu([w.pid for w in cluster.workers])
        t0 = time.perf_counter()
        ac = dd.as_completed()
        submitted = 0
        in_flight = 0
        while submitted < min(limit, tasks):
            ac.add(client.submit(_noop, submitted, pure=False))
            submitted += 1
            in_flight += 1
        for fut in ac:
            fut.release()
            in_flight -= 1
            if submitted < tasks:
                ac.add(client.submit(_noop, submitted, pure=False))
                submitted += 1
                in_flight += 1
        wall = time.perf_counter() - t0
        sched = _cpu([cluster.scheduler.pid]) - s0
        workers = _cpu([w.pid for w in cluster.workers]) - w0
    return {
        "wall_ms": wall / tasks * 1e3,
        "scheduler_cpu_ms": sched / tasks * 1e3,
        "worker_cpu_ms": workers / tasks * 1e3,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=2000, help="no-op tasks for the per-task cost")
    ap.add_argument("--work", type=Path, default=Path("/dev/shm/dicom-repack-dask-bench"))
    args = ap.parse_args()

    compile_package()
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.1f}"
          + ("  (LOADED: shared machine, trust ratios within a round, not absolute figures)"
             if load > (os.cpu_count() or 1) else ""))  # fmt: skip
    work = args.work
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    corpus = work / "corpus"
    subprocess.run(
        [str(BIN / "dicom-repack"), "corpus", str(corpus), "--instances", str(args.instances),
         "--patients", "20", "-q"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    (corpus / "corpus.json").unlink()

    cluster = Cluster(work)
    results: dict[str, list[dict[str, float]]] = {}
    try:
        for r in range(args.rounds):
            runs: list[tuple[str, list[str], int | None]] = [
                ("local -j 1", ["-j", "1"], None),
                ("local -j 2", ["-j", "2"], None),
                ("dask 1 worker", ["--dask", cluster.address], 1),
                ("dask 2 workers", ["--dask", cluster.address], 2),
            ]
            if r % 2:
                runs.reverse()
            for name, extra, workers in runs:
                if workers is not None:
                    cluster.scale(workers)
                res = batch(corpus, work / "out", extra, cluster if workers else None)
                results.setdefault(name, []).append(res)
                print(
                    f"round {r + 1} {name:15s} {res['filed'] / res['wall']:7.0f} inst/s  "
                    f"{res['cpu'] / res['filed'] * 1e3:6.2f} ms CPU/inst "
                    f"(client {res['client_cpu']:.2f} s, scheduler+workers {res['cluster_cpu']:.2f} s)",
                    flush=True,
                )
        cluster.scale(2)
        over = task_overhead(cluster, args.tasks)
    finally:
        cluster.stop()
    shutil.rmtree(work)

    def best(name: str, key: str) -> float:
        vals = [r["filed"] / r["wall"] if key == "rate" else r["cpu"] / r["filed"]
                for r in results[name]]  # fmt: skip
        return max(vals) if key == "rate" else min(vals)

    print(f"\n{args.instances} instances, {args.rounds} rounds alternated; best of each:")
    print(f"{'':16s}{'inst/s':>9s}{'ms CPU/inst':>13s}{'rate vs -j 2':>14s}{'CPU vs -j 2':>13s}")
    for name in results:
        rate, cpu = best(name, "rate"), best(name, "cpu")
        print(
            f"{name:16s}{rate:9.0f}{cpu * 1e3:13.2f}"
            f"{rate / best('local -j 2', 'rate'):13.2f}x{cpu / best('local -j 2', 'cpu'):12.2f}x"
        )
    print(
        f"\nscheduler cost per task ({args.tasks} no-op tasks, 2 workers): "
        f"{over['wall_ms']:.2f} ms wall, {over['scheduler_cpu_ms']:.2f} ms scheduler CPU, "
        f"{over['worker_cpu_ms']:.2f} ms worker CPU"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
