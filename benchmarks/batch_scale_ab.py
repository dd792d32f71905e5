#!/usr/bin/env python3
"""Two versions' batch copy at scale, with and without the index, alternated (A/B).

Writes a corpus of ``--instances`` small instances (``dicom-repack corpus --from SEEDS``), then
runs ``batch CORPUS --datadir D --logdir L --no-progress [--no-index]`` through
``python -c "from dicom_repack.cli import run; run()"`` with ``PYTHONPATH`` choosing each
version's ``src`` folder, the four contestants alternated (order rotated each repetition),
``os.sync()`` after each run so no run pays another's writeback. Prints each run and the
medians: instances/s (wall) and CPU per instance (the whole process tree, ``wait4``).
Outputs are truncated, not deleted, after each run (no freed inode slows the next run's file
creation; see dicom_repack/bench/scratch.py); the work folder is deleted at the end.

    flock /work/wt/bench.lock .venv/bin/python benchmarks/batch_scale_ab.py OLD/src NEW/src \\
        --instances 50000 --repeat 3 --seeds SEEDS --workdir /work/scratch/NAME
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_keep, keep_or_remove


def truncate_tree(root: Path) -> None:
    """Free a finished output's blocks, keeping its inodes (deleted at the very end)."""
    for folder, _, names in os.walk(root):
        for name in names:
            os.truncate(os.path.join(folder, name), 0)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("a", type=Path, help="version A's src folder")
    ap.add_argument("b", type=Path, help="version B's src folder")
    ap.add_argument("--instances", type=int, default=50000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seeds", type=Path, default=None, help="corpus --from (default: its own)")
    ap.add_argument("--workdir", type=Path, default=None)
    add_keep(ap)
    args = ap.parse_args()
    py = sys.executable
    work = Path(tempfile.mkdtemp(prefix="batch-scale-ab-", dir=args.workdir))
    try:
        corpus = work / "corpus"
        seeds = ["--from", str(args.seeds)] if args.seeds else []
        exe = str(Path(py).parent / "dicom-repack")
        subprocess.run(
            [exe, "corpus", str(corpus), "--instances", str(args.instances), "-q", *seeds],
            check=True,
        )
        (corpus / "corpus.json").unlink()
        os.sync()
        n = args.instances
        versions = {"A": args.a.resolve(), "B": args.b.resolve()}
        contestants = [(v, index) for index in (True, False) for v in versions]
        runs: dict[tuple[str, bool], list[tuple[float, float]]] = {c: [] for c in contestants}
        for rep in range(args.repeat):
            k = rep % len(contestants)
            for v, index in contestants[k:] + contestants[:k]:
                out = work / f"out-{rep}-{v}-{index}"
                out.mkdir()  # --datadir's parent (only the last folder is created)
                argv = [py, "-c", "from dicom_repack.cli import run; run()", "batch",
                        str(corpus), "--datadir", str(out / "data"), "--logdir", str(out / "log"),
                        "--no-progress", *([] if index else ["--no-index"])]  # fmt: skip
                env = dict(os.environ, PYTHONPATH=str(versions[v]))
                devnull = [(os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)]
                t0 = time.perf_counter()
                pid = os.posix_spawn(py, argv, env, file_actions=devnull)
                _, status, usage = os.wait4(pid, 0)
                wall = time.perf_counter() - t0
                if os.waitstatus_to_exitcode(status) != 0:
                    raise SystemExit(f"failed: {' '.join(argv)}")
                cpu = usage.ru_utime + usage.ru_stime
                runs[v, index].append((wall, cpu))
                label = "index" if index else "no-index"
                print(f"{rep} {v} {label}: {n / wall:.0f}/s, {cpu / n * 1e3:.3f} ms CPU/inst")
                os.sync()
                truncate_tree(out)
        print(f"{n} instances, {args.repeat} runs each, medians:")
        for (v, index), rs in runs.items():
            wall = statistics.median(r[0] for r in rs)
            cpu = statistics.median(r[1] for r in rs)
            walls = ", ".join(f"{r[0]:.1f}" for r in rs)
            print(
                f"{v} {'index' if index else 'no-index':8}: {n / wall:.0f} instances/s, "
                f"{cpu / n * 1e3:.3f} ms CPU per instance (walls: {walls} s)"
            )
    finally:
        keep_or_remove(work, args.keep)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
