#!/usr/bin/env python3
"""Per-instance door vs the interpreter's floor vs px-repack, side by side, in one run.

Runs each contestant once per instance, sequentially, exactly as ``storescp -xcr``
would (``--xcrdir D --xcrfile F --datadir ... --logdir ...``), into a fresh output
folder per repetition, alternating contestants; reports medians and ratios (this
machine is shared and noisy: never a lone absolute time).

    .venv/bin/python benchmarks/per_instance.py --corpus /tmp/SAG-anon \\
        --px-repack .venv-px/bin/px-repack --repeat 5

px-repack takes ~0.9 s per instance, so it runs on a sample (--px-sample) of the
corpus in each repetition; its figures are per instance like everyone else's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
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


def run_one(argv: list[str]) -> tuple[float, float, int]:
    """Spawn, wait; return (wall s, CPU s user+sys, peak RSS KiB) of that one process."""
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, os.environ)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"contestant failed: {' '.join(argv)}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--corpus", type=Path, help="folder of instances (default: SAG-anon from ../shared)"
    )
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--px-repack",
        help="path of a real px-repack (pip install pypx 'pydicom<3' in its own venv)",
    )
    ap.add_argument(
        "--px-sample", type=int, default=16, help="instances px-repack runs per repetition"
    )
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    venv_bin = Path(sys.executable).parent
    python = str(venv_bin / "python")
    exe = str(venv_bin / "dicom-repack")
    compile_package()
    work = Path(tempfile.mkdtemp(prefix="per-instance-", dir=args.workdir))
    trash = Scratch(work)
    corpus = args.corpus or unpack_shared("SAG-anon", work / "corpus")
    files = dicom_files(corpus)
    print(
        f"corpus: {corpus} ({len(files)} instances); {args.repeat} repetitions, contestants alternated"
    )

    def cmd_floor(_: Path, __: Path) -> list[str]:
        return [python, "-c", "pass"]

    def cmd_floor_s(_: Path, __: Path) -> list[str]:
        return [python, "-S", "-c", "pass"]

    def cmd_ours(f: Path, out: Path) -> list[str]:
        return [exe, "--xcrdir", str(f.parent), "--xcrfile", f.name, "--datadir", str(out / "data"),
                "--logdir", str(out / "log")]  # fmt: skip

    def cmd_ours_move(f: Path, out: Path) -> list[str]:
        # storescp deployments usually pass --cleanup: the received file is moved
        staged = out / "incoming" / f.name
        staged.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, staged)  # before the clock starts (run_one times the spawn only)
        return [exe, "--xcrdir", str(staged.parent), "--xcrfile", f.name, "--datadir", str(out / "data"),
                "--logdir", str(out / "log"), "--cleanup"]  # fmt: skip

    def cmd_px(f: Path, out: Path) -> list[str]:
        return [str(args.px_repack), "--xcrdir", str(f.parent), "--xcrfile", f.name,
                "--datadir", str(out / "data"), "--logdir", str(out / "log"), "--verbosity", "0"]  # fmt: skip

    contestants: list[tuple[str, object, list[Path]]] = [
        ("python -c pass", cmd_floor, files),
        ("python -S -c pass", cmd_floor_s, files),
        ("dicom-repack", cmd_ours, files),
        ("dicom-repack --cleanup", cmd_ours_move, files),
    ]
    if args.px_repack:
        step = max(1, len(files) // args.px_sample)
        contestants.append(("px-repack", cmd_px, files[::step][: args.px_sample]))

    report_creation_cost(work, "before the runs")
    walls: dict[str, list[float]] = {c[0]: [] for c in contestants}
    cpus: dict[str, list[float]] = {c[0]: [] for c in contestants}
    rss: dict[str, int] = {c[0]: 0 for c in contestants}
    for rep in range(args.repeat):
        order = contestants[rep % len(contestants) :] + contestants[: rep % len(contestants)]
        for name, make, subset in order:
            out = work / f"out-{rep}-{name.replace(' ', '_')}"
            for f in subset:
                wall, cpu, peak = run_one(make(f, out))  # type: ignore[operator]
                walls[name].append(wall)
                cpus[name].append(cpu)
                rss[name] = max(rss[name], peak)
            trash.set_aside(out)
        print(f"  repetition {rep + 1}/{args.repeat} done", file=sys.stderr)

    report_creation_cost(work, "after the runs")
    floor = statistics.median(walls["python -c pass"])
    ours = statistics.median(walls["dicom-repack"])
    print()
    print(
        f"{'contestant':20} {'median wall/inst':>17} {'x floor':>8} {'median CPU/inst':>16} {'peak RSS':>9}  n"
    )
    for name, _, _ in contestants:
        w = statistics.median(walls[name])
        c = statistics.median(cpus[name])
        print(
            f"{name:20} {w * 1e3:14.2f} ms {w / floor:7.2f}x {c * 1e3:13.2f} ms {rss[name] / 1024:6.1f} MB  {len(walls[name])}"
        )
    print()
    print(
        f"dicom-repack / python -c pass (median per instance): {ours / floor:.2f}x   (target <= 1.3x)"
    )
    ours_move = statistics.median(walls["dicom-repack --cleanup"])
    print(
        f"dicom-repack --cleanup / python -c pass (median per instance): {ours_move / floor:.2f}x"
    )
    if args.px_repack:
        px = statistics.median(walls["px-repack"])
        print(
            f"px-repack / dicom-repack (median per instance):      {px / ours:.0f}x   (target >= 40x)"
        )
    peak = max(rss["dicom-repack"], rss["dicom-repack --cleanup"])
    print(f"dicom-repack peak RSS: {peak / 1024:.1f} MB   (target <= 30 MB)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
