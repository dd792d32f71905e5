#!/usr/bin/env python3
"""A batch's fixed cost: CPU of ``dicom-repack batch`` on tiny inputs (issue 11, target 1).

Runs, alternated (the order rotated every repetition), each into a fresh output folder:

- ``python -c pass``                    the same interpreter doing nothing (the floor);
- ``dicom-repack batch IN --datadir D --logdir L --no-progress`` on corpora of
  ``--sizes`` instances (default 1, 5, 50: ``dicom-repack corpus``'s default MR-like
  instances, ~180 KB each). Up to 4 files are filed in the batch process itself; from
  5 on, the batch forks its worker pool (``--jobs``, default all cores);
- with ``--ab OLD_SRC NEW_SRC``: each batch once per version instead, by
  ``python -c "from dicom_repack.cli import run; run()" batch ...`` with ``PYTHONPATH``
  choosing the ``src`` folder (``git archive REV src | tar -x -C DIR``, then
  ``python -m compileall -q DIR/src``).

CPU is user + system of the whole process tree, from ``wait4`` (the batch reaps its
workers, so their CPU is in it); each run starts in its own session, and a run is refused
if any process of it outlives the batch (its CPU would be missing). Prints medians and
minima in ms (peak RSS is benchmarks/batch.py's: ``wait4``'s keeps the spawning
process's own from before ``exec``), and, from the pooled sizes, a
least-squares line: its intercept is the pooled batch's fixed cost, its slope the CPU
per instance.

    flock /work/wt/bench.lock .venv/bin/python benchmarks/batch_start.py --repeat 21
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import compile_package  # noqa: E402


def spawn_cpu(argv: list[str], env: dict[str, str]) -> float:
    """Run ``argv`` to completion in its own session: CPU seconds of its process tree."""
    devnull = [(os.POSIX_SPAWN_OPEN, fd, "/dev/null", os.O_WRONLY, 0) for fd in (1, 2)]
    pid = os.posix_spawn(argv[0], argv, env, file_actions=devnull, setsid=True)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed ({os.waitstatus_to_exitcode(status)}): {' '.join(argv)}")
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        pass
    else:
        raise SystemExit(f"a process of this run outlived it (CPU not counted): {' '.join(argv)}")
    return usage.ru_utime + usage.ru_stime


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of CPU against instances."""
    xs, ys = [float(x) for x, _ in points], [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - slope * mx, slope


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="1,5,50", help="corpus sizes, comma-separated")
    ap.add_argument("--repeat", type=int, default=21, help="runs of each contestant")
    ap.add_argument("--jobs", type=int, default=None, help="batch --jobs (default: all cores)")
    ap.add_argument("--ab", nargs=2, type=Path, metavar=("OLD_SRC", "NEW_SRC"))
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    py = sys.executable
    exe = str(Path(py).parent / "dicom-repack")
    compile_package()
    work = Path(tempfile.mkdtemp(prefix="batch-start-", dir=args.workdir))
    trash = work / "trash"
    trash.mkdir()
    env = dict(os.environ)
    try:
        for n in sizes:
            corpus = work / f"in{n}"
            subprocess.run([exe, "corpus", str(corpus), "--instances", str(n), "-q"], check=True)
            (corpus / "corpus.json").unlink()  # instances only: n files
        jobs = [] if args.jobs is None else ["--jobs", str(args.jobs)]
        versions: dict[str, tuple[list[str], dict[str, str]]] = {}
        if args.ab:
            for label, src in zip(("old", "new"), args.ab, strict=True):
                cmd = [py, "-c", "from dicom_repack.cli import run; run()"]
                versions[label] = (cmd, dict(env, PYTHONPATH=str(src.resolve())))
        else:
            versions["batch"] = ([exe], env)
        contestants: dict[str, tuple[int, list[str], dict[str, str]]] = {
            "python -c pass": (0, [py, "-c", "pass"], env)
        }
        for label, (cmd, venv) in versions.items():
            for n in sizes:
                contestants[f"{label} {n}"] = (n, [*cmd, "batch", str(work / f"in{n}")], venv)
        names = list(contestants)
        cpu: dict[str, list[float]] = {k: [] for k in names}
        for rep in range(args.repeat):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                n, argv, venv = contestants[name]
                out = work / "out"
                out.mkdir(exist_ok=True)  # --datadir's parent (only the last folder is created)
                if n:
                    argv = [*argv, "--datadir", str(out / "data"), "--logdir", str(out / "log")]
                    argv += ["--no-progress", *jobs]
                cpu[name].append(spawn_cpu(argv, venv) * 1e3)
                if out.exists():
                    out.rename(trash / f"{rep}-{name.replace(' ', '_')}")
        print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at the end")
        print(f"{'contestant':18} {'median CPU':>11} {'min':>9}")
        floor = statistics.median(cpu["python -c pass"])
        for name in names:
            med = statistics.median(cpu[name])
            print(
                f"{name:18} {med:8.1f} ms {min(cpu[name]):6.1f} ms   {med / floor:5.2f}x python -c pass"
            )
        for label in versions:
            pooled = [(n, statistics.median(cpu[f"{label} {n}"])) for n in sizes if n > 4]
            if len(pooled) >= 2:
                fixed, per = fit(pooled)
                print(
                    f"{label}, pooled batches ({', '.join(str(n) for n, _ in pooled)} instances): "
                    f"fixed cost {fixed:.1f} ms CPU, {per:.3f} ms per instance (least squares)"
                )
        if args.ab:
            for n in sizes:
                old, new = (statistics.median(cpu[f"{v} {n}"]) for v in ("old", "new"))
                print(f"{n} instances: new / old = {new / old:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
