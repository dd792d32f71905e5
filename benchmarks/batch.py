#!/usr/bin/env python3
"""Batch door vs ``cp -r`` vs px-repack, side by side, in one run (issue #3, targets 2-5).

Builds a corpus of small instances with ``dicom-repack corpus`` (fresh UIDs over several
patients, studies and series, from pydicom's bundled examples: ~21 KB each), then runs,
alternating, with fresh output folders each repetition:

- ``cp -r``                         the disk's floor for copying the corpus;
- ``dicom-repack batch`` (copy)     with records;
- ``dicom-repack batch --cleanup``  (move) with records, on a staged copy (staging untimed);
- ``px-repack --parseAllFilesWithSubStr ,`` (px-repack's own batch mode) on a flat sample;
- ``px-repack`` per instance on a small sample (the energy proxy's reference);
- ``rx-repack`` per instance (``--rx-repack PATH``, the Rust rewrite, one process per
  instance as storescp runs it) on ``--rx-sample`` instances: issue 11's yardstick, batch's
  CPU per instance must be <= 1/3 of it.

Reports medians and ratios: wall, CPU-seconds of the whole process tree (wait4 rusage, which
includes the pool workers the batch process reaps), CPU per instance, instances/s, and peak
RSS of the tree (psutil, sampled every 10 ms). ``--scale 50000`` adds the scaling check:
instances/s at 50,000 instances against the run at ``--instances``.

    .venv/bin/python benchmarks/batch.py --px-repack .venv-px/bin/px-repack --repeat 5 \\
        --rx-repack /opt/peers/pypx-listener/target/release/rx-repack
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import (  # noqa: E402
    compile_package,
    dicom_files,
    report_creation_cost,
    unpack_shared,
)
from dicom_repack.bench.scratch import Scratch  # noqa: E402


class Run:
    """One timed run of one command: wall, tree CPU, tree peak RSS."""

    def __init__(self, wall: float, cpu: float, rss: int) -> None:
        self.wall, self.cpu, self.rss = wall, cpu, rss


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        total: int = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return 0


def timed(argv: list[str], *, stdin: int | None = None, env: dict[str, str] | None = None) -> Run:
    """Run ``argv`` to completion; measure wall, CPU (process tree) and peak tree RSS."""
    peak = 0
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=stdin, env=env
    )
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}\n{err}")
    return Run(wall, usage.ru_utime + usage.ru_stime, peak)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def px_argv(px: str, out: Path, *source: str) -> list[str]:
    """px-repack on ``source`` (its --xcrdir/--xcrfile or folder flags), quiet, into ``out``."""
    return [
        px,
        *source,
        "--datadir",
        str(out / "data"),
        "--logdir",
        str(out / "log"),
        "--verbosity",
        "0",
    ]


def batch_argv(exe: str, src: Path, out: Path, *extra: str) -> list[str]:
    """``dicom-repack batch`` of ``src`` into ``out/data`` with records in ``out/log``."""
    return [
        exe,
        "batch",
        str(src),
        "--datadir",
        str(out / "data"),
        "--logdir",
        str(out / "log"),
        "--no-progress",
        *extra,
    ]


#: ``--ab``: each version runs as ``python -c`` this, with PYTHONPATH choosing its src folder
_AB_RUN = "from dicom_repack.cli import run; run()"


def ab_runs(args: argparse.Namespace) -> list[tuple[str, list[str], dict[str, str]]]:
    """``(label, command prefix, env)`` of each ``--ab`` version (none without ``--ab``)."""
    if not args.ab:
        return []
    return [
        (f"batch copy {label}", [sys.executable, "-c", _AB_RUN],
         dict(os.environ, PYTHONPATH=str(Path(src).resolve())))
        for label, src in zip(("A", "B"), args.ab, strict=True)
    ]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--instances", type=int, default=5460, help="corpus size (default 5460, ~115 MB)"
    )
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--px-repack", help="a real px-repack (pip install pypx 'pydicom<3' in its own venv)"
    )
    ap.add_argument(
        "--px-batch-sample", type=int, default=300, help="instances for px-repack's batch mode"
    )
    ap.add_argument(
        "--px-instance-sample", type=int, default=8, help="instances for px-repack per instance"
    )
    ap.add_argument(
        "--corpus-from", type=Path, default=None, help="seed folder for the corpora (corpus --from)"
    )
    ap.add_argument("--rx-repack", help="a real rx-repack (FNNDSC/pypx-listener, Rust)")
    ap.add_argument(
        "--rx-sample", type=int, default=500, help="instances rx-repack files per repetition"
    )
    ap.add_argument(
        "--scale", type=int, default=0, help="also measure batch copy at this many instances"
    )
    ap.add_argument("--shared", action="store_true", help="also run the two shared corpora")
    ap.add_argument("--jobs", type=int, default=None, help="batch --jobs (default: all cores)")
    ap.add_argument(
        "--workdir", type=Path, default=None, help="scratch folder (default: a temp folder)"
    )
    ap.add_argument(
        "--keep-free",
        type=float,
        default=0.0,
        metavar="GB",
        help="delete a finished output at once when the disk has less than GB free "
        "(default 0: every output is set aside until the end)",
    )
    ap.add_argument(
        "--ab",
        nargs=2,
        metavar=("A_SRC", "B_SRC"),
        help="also batch copy with two versions' src folders (git archive REV src | tar -x "
        "-C DIR; python -m compileall -q DIR/src), alternated with the rest, in the corpus "
        "runs and the --scale check: CPU per instance, instances/s, RSS, A/B",
    )
    ap.add_argument(
        "--io-floor",
        action="store_true",
        help="also run benchmarks/io_floor.py: the batch copy's file I/O alone, in Python",
    )
    ap.add_argument(
        "--delete-between-runs",
        action="store_true",
        help="delete each output as soon as its run ends (the old way; shows ext4's penalty)",
    )
    args = ap.parse_args()

    exe = str(Path(sys.executable).parent / "dicom-repack")
    compile_package()
    work = Path(tempfile.mkdtemp(prefix="batch-bench-", dir=args.workdir))
    trash = Scratch(
        work, reserve_bytes=int(args.keep_free * 1e9), delete_now=args.delete_between_runs
    )
    print(f"scratch: {work} ({os.cpu_count()} cores); caches warm (corpus just written or read)")
    if args.delete_between_runs:
        print("outputs are deleted as soon as each run ends (--delete-between-runs)")
    else:
        print(
            "outputs are set aside between runs and deleted at the end (see dicom_repack/bench/scratch.py)"
        )
    try:
        corpora: list[tuple[str, Path]] = []
        corpus = work / "corpus"
        seeds = ["--from", str(args.corpus_from)] if args.corpus_from else []
        subprocess.run(
            [exe, "corpus", str(corpus), "--instances", str(args.instances), "-q", *seeds],
            check=True,
        )
        corpora.append((f"generated {args.instances}", corpus))
        if args.shared:
            for name in ("SAG-anon", "example-dicom-structural"):
                corpora.append((name, unpack_shared(name, work / "shared" / name)))
        jobs = [] if args.jobs is None else ["--jobs", str(args.jobs)]
        report_creation_cost(work, "before the runs")
        results: dict[str, dict[str, object]] = {}
        for label, root in corpora:
            results[label] = bench_corpus(label, root, work, exe, jobs, args, trash)
        if args.scale:
            big = work / "corpus-big"
            subprocess.run(
                [exe, "corpus", str(big), "--instances", str(args.scale), "-q", *seeds], check=True
            )
            scale_check(corpus, big, work, exe, jobs, args, trash)
        report_creation_cost(work, "after the runs")
        if trash.deleted_between_runs:
            print(
                f"{trash.deleted_between_runs} outputs deleted between runs (less than "
                f"{args.keep_free} GB free): the runs after them created files on a slower disk"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def bench_corpus(
    label: str,
    corpus: Path,
    work: Path,
    exe: str,
    jobs: list[str],
    args: argparse.Namespace,
    trash: Scratch,
) -> dict[str, object]:
    files = [p for p in dicom_files(corpus)]
    n = len(files)
    size = sum(p.stat().st_size for p in files)
    print(
        f"\n== {label}: {n} instances, {size / 1e6:.0f} MB; {args.repeat} repetitions, alternated"
    )
    runs: dict[str, list[Run]] = {
        "cp -r": [],
        "batch copy": [],
        "batch copy --no-index": [],  # the SQLite index's cost apart (core/index.py)
        "batch move": [],
    }
    if args.io_floor:
        runs["python io floor"] = []
    versions = ab_runs(args)
    for label, _, _ in versions:
        runs[label] = []
    px_flat = None
    if args.px_repack:
        runs["px-repack batch"] = []
        runs["px-repack per instance"] = []
        px_flat = work / f"px-flat-{label.replace(' ', '_')}"
        px_flat.mkdir()
        step = max(1, n // args.px_batch_sample)
        for i, f in enumerate(files[::step][: args.px_batch_sample]):
            shutil.copy(f, px_flat / f"{i:06d}-{f.name}")
    px_counts = {
        "px-repack batch": len(list(px_flat.iterdir())) if px_flat else 0,
        "px-repack per instance": 0,
    }
    rx_sample: list[Path] = []
    if args.rx_repack:
        runs["rx-repack per instance"] = []
        rx_sample = files[:: max(1, n // args.rx_sample)][: args.rx_sample]
        px_counts["rx-repack per instance"] = len(rx_sample)

    names = list(runs)
    for rep in range(args.repeat):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            out = work / f"out-{rep}-{name.replace(' ', '_')}"
            out.mkdir()
            if name == "cp -r":
                runs[name].append(timed(["cp", "-r", str(corpus), str(out / "copy")]))
            elif name == "batch copy":
                runs[name].append(timed(batch_argv(exe, corpus, out, *jobs)))
            elif name.startswith("batch copy ") and name[-1] in "AB":
                _, prefix, env = next(v for v in versions if v[0] == name)
                argv = batch_argv("-", corpus, out, *jobs)[1:]
                runs[name].append(timed([*prefix, *argv], env=env))
            elif name == "batch copy --no-index":
                runs[name].append(timed(batch_argv(exe, corpus, out, "--no-index", *jobs)))
            elif name == "python io floor":
                floor = [sys.executable, str(HERE / "io_floor.py"), str(corpus), str(out)]
                runs[name].append(timed(floor))
            elif name == "batch move":
                subprocess.run(["cp", "-r", str(corpus), str(out / "stage")], check=True)
                runs[name].append(timed(batch_argv(exe, out / "stage", out, "--cleanup", *jobs)))
            elif name == "px-repack batch":
                assert px_flat is not None
                runs[name].append(
                    timed(
                        px_argv(
                            args.px_repack,
                            out,
                            "--xcrdir",
                            str(px_flat),
                            "--parseAllFilesWithSubStr",
                            ",",
                        )
                    )
                )
            elif name == "px-repack per instance":
                sample = files[:: max(1, n // args.px_instance_sample)][: args.px_instance_sample]
                px_counts[name] = len(sample)
                total = Run(0.0, 0.0, 0)
                for f in sample:
                    r = timed(
                        px_argv(args.px_repack, out, "--xcrdir", str(f.parent), "--xcrfile", f.name)
                    )
                    total.wall += r.wall
                    total.cpu += r.cpu
                    total.rss = max(total.rss, r.rss)
                runs[name].append(total)
            elif name == "rx-repack per instance":
                runs[name].append(per_process(rx_argv(args.rx_repack, out), rx_sample))
            trash.set_aside(out)
        print(f"  repetition {rep + 1}/{args.repeat} done", file=sys.stderr)

    count = {k: px_counts.get(k, n) for k in runs}
    table: dict[str, dict[str, float]] = {}
    print(
        f"{'contestant':24} {'median wall':>12} {'inst/s':>9} {'CPU-s':>8} {'CPU ms/inst':>12} {'peak RSS':>9}"
    )
    for name, rs in runs.items():
        wall = median([r.wall for r in rs])
        cpu = median([r.cpu for r in rs])
        rss = max(r.rss for r in rs) / 2**20
        table[name] = {
            "wall": wall,
            "cpu": cpu,
            "per_inst_cpu": cpu / count[name],
            "rate": count[name] / wall,
            "rss": rss,
        }
        print(
            f"{name:24} {wall:10.3f} s {count[name] / wall:9.0f} {cpu:8.2f} {cpu / count[name] * 1e3:12.3f} {rss:7.1f} MB"
        )
    cp, bc, bm = table["cp -r"], table["batch copy"], table["batch move"]
    print(f"batch copy / cp -r (median wall): {bc['wall'] / cp['wall']:.2f}x   (target <= 2.5x)")
    bare = table["batch copy --no-index"]
    print(
        f"the index's cost: {(bc['per_inst_cpu'] - bare['per_inst_cpu']) * 1e3:+.3f} ms CPU per "
        f"instance, batch copy / --no-index = {bc['cpu'] / bare['cpu']:.2f}x CPU, "
        f"{bc['wall'] / bare['wall']:.2f}x wall"
    )
    if versions:
        a, b = table["batch copy A"], table["batch copy B"]
        print(
            f"A/B: CPU per instance B / A = {b['per_inst_cpu'] / a['per_inst_cpu']:.3f}, "
            f"instances/s B / A = {b['rate'] / a['rate']:.3f}, peak RSS A {a['rss']:.0f} MB, "
            f"B {b['rss']:.0f} MB"
        )
    if "python io floor" in table:
        fl = table["python io floor"]
        print(
            f"I/O floor / cp -r: {fl['wall'] / cp['wall']:.2f}x; batch copy / I/O floor: "
            f"{bc['wall'] / fl['wall']:.2f}x (the share parsing, layout, records and JSON add)"
        )
    print(f"batch move: {bm['rate']:.0f} instances/s   (target >= 5000/s on 2 cores)")
    print(
        f"batch peak RSS (tree): copy {bc['rss']:.0f} MB, move {bm['rss']:.0f} MB   (target <= 100 MB)"
    )
    if "px-repack batch" in table:
        pi, pb = table["px-repack per instance"], table["px-repack batch"]
        print(
            f"CPU per instance: batch copy {bc['per_inst_cpu'] * 1e3:.3f} ms; px-repack per instance / batch copy = "
            f"{pi['per_inst_cpu'] / bc['per_inst_cpu']:.0f}x (target >= 1000x); px-repack batch / batch copy = "
            f"{pb['per_inst_cpu'] / bc['per_inst_cpu']:.0f}x (target >= 30x)"
        )
    if "rx-repack per instance" in table:
        rx = table["rx-repack per instance"]
        print(
            f"CPU per instance vs rx-repack per instance ({rx['per_inst_cpu'] * 1e3:.3f} ms): "
            f"batch copy {bc['per_inst_cpu'] / rx['per_inst_cpu']:.2f}x, batch move "
            f"{bm['per_inst_cpu'] / rx['per_inst_cpu']:.2f}x   (target <= 0.33x)"
        )
    return table  # type: ignore[return-value]


def rx_argv(rx: str, out: Path) -> Callable[[Path], list[str]]:
    """rx-repack's command line for one instance, as storescp -xcr gives it."""

    def argv(f: Path) -> list[str]:
        return [rx, "--xcrdir", str(f.parent), "--xcrfile", f.name,
                "--datadir", str(out / "data"), "--logdir", str(out / "log")]  # fmt: skip

    return argv


def per_process(argv: Callable[[Path], list[str]], files: list[Path]) -> Run:
    """One process per instance, sequentially: summed wall and CPU (wait4), max RSS."""
    total = Run(0.0, 0.0, 0)
    for f in files:
        t0 = time.perf_counter()
        cmd = argv(f)
        pid = os.posix_spawn(cmd[0], cmd, os.environ)
        _, status, usage = os.wait4(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"contestant failed: {' '.join(cmd)}")
        total.wall += time.perf_counter() - t0
        total.cpu += usage.ru_utime + usage.ru_stime
        total.rss = max(total.rss, usage.ru_maxrss * 1024)
    return total


def scale_check(
    small: Path,
    big: Path,
    work: Path,
    exe: str,
    jobs: list[str],
    args: argparse.Namespace,
    trash: Scratch,
) -> None:
    n_small, n_big = len(dicom_files(small)), len(dicom_files(big))
    # a one-instance batch measures the fixed cost (interpreter, pool, pydicom for the
    # series dump), so the per-instance rate can be compared apart from it
    one = work / "corpus-one"
    one.mkdir(exist_ok=True)
    shutil.copy(dicom_files(small)[0], one / "one.dcm")
    print(
        f"\n== scaling: batch copy at {n_small} vs {n_big} instances (and 1, for the fixed cost), "
        f"{args.repeat} repetitions, alternated"
    )
    walls: dict[int, list[float]] = {1: [], n_small: [], n_big: []}
    cpus: dict[int, list[float]] = {1: [], n_small: [], n_big: []}
    rss: dict[int, int] = {1: 0, n_small: 0, n_big: 0}
    versions = ab_runs(args)  # --ab: each version at both sizes too, alternated with the rest
    ab: dict[tuple[str, int], list[Run]] = {
        (label, n): [] for label, _, _ in versions for n in (n_small, n_big)
    }
    sizes: list[tuple[Path, int, str]] = [(one, 1, ""), (small, n_small, ""), (big, n_big, "")]
    sizes += [(small if n == n_small else big, n, label) for label, n in ab]
    for rep in range(args.repeat):
        for corpus, n, label in sizes[rep % len(sizes) :] + sizes[: rep % len(sizes)]:
            out = work / "out-scale"
            out.mkdir(exist_ok=True)  # --datadir's parent (only the last folder is created)
            if label:
                _, prefix, env = next(v for v in versions if v[0] == label)
                argv = batch_argv("-", corpus, out, *jobs)[1:]
                ab[label, n].append(timed([*prefix, *argv], env=env))
                trash.set_aside(out)
                continue
            r = timed(batch_argv(exe, corpus, out, *jobs))
            walls[n].append(r.wall)
            cpus[n].append(r.cpu)
            rss[n] = max(rss[n], r.rss)
            trash.set_aside(out)
    for (label, n), rs in ab.items():
        wall, cpu = median([r.wall for r in rs]), median([r.cpu for r in rs])
        print(
            f"{label} at {n}: {n / wall:.0f} instances/s, {cpu / n * 1e3:.3f} ms CPU per "
            f"instance, peak RSS (tree) {max(r.rss for r in rs) / 2**20:.0f} MB"
        )
    fixed = median(walls[1])
    a, b = n_small / median(walls[n_small]), n_big / median(walls[n_big])
    a2 = n_small / (median(walls[n_small]) - fixed)
    b2 = n_big / (median(walls[n_big]) - fixed)
    print(
        f"instances/s: {n_small}: {a:.0f}; {n_big}: {b:.0f}; ratio {b / a:.2f} (target within 10%)"
    )
    print(
        f"fixed cost (1-instance batch): {fixed:.3f} s wall, {median(cpus[1]):.3f} s CPU "
        f"(target <= 0.050 s); CPU per instance: {n_small}: "
        f"{median(cpus[n_small]) / n_small * 1e3:.3f} ms; {n_big}: {median(cpus[n_big]) / n_big * 1e3:.3f} ms"
    )
    print(
        f"fixed cost (1-instance batch): {fixed:.3f} s; instances/s beyond it: {n_small}: {a2:.0f}; "
        f"{n_big}: {b2:.0f}; ratio {b2 / a2:.2f}"
    )
    print(
        f"peak RSS (tree): {n_small}: {rss[n_small] / 2**20:.0f} MB; {n_big}: {rss[n_big] / 2**20:.0f} MB"
    )


if __name__ == "__main__":
    raise SystemExit(main())
