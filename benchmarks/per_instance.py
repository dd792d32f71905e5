#!/usr/bin/env python3
"""Per-instance door vs the interpreter's floor vs px-repack, side by side, in one run.

Runs each contestant once per instance, sequentially, exactly as ``storescp -xcr``
would (``--xcrdir D --xcrfile F --datadir ... --logdir ...``), into a fresh output
folder per repetition, alternating contestants; reports medians and ratios (this
machine is shared and noisy: never a lone absolute time).

    .venv/bin/python benchmarks/per_instance.py --corpus /tmp/SAG-anon \\
        --px-repack .venv-px/bin/px-repack --rx-repack PATH/rx-repack --repeat 5

px-repack takes ~0.9 s per instance, so it runs on a sample (--px-sample) of the
corpus in each repetition; its figures are per instance like everyone else's.
"dicom-repack, first of series" files every instance into a fresh tree, so each
one writes its series' records and full-header dump (a study's first arrivals);
"dicom-repack" files the corpus into one tree, as storescp does with one series.
Ratios are of CPU time (user+sys of each process), the stable figure on a shared
machine; wall times are printed beside them.
"""

from __future__ import annotations

import argparse
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
    spawn_wait,
    unpack_shared,
)
from dicom_repack.bench.scratch import Scratch  # noqa: E402


def run_one(argv: list[str]) -> tuple[float, float, int]:
    """Spawn, wait; return (wall s, CPU s user+sys, peak RSS KiB) of that one process."""
    t0 = time.perf_counter()
    usage = spawn_wait(argv)
    wall = time.perf_counter() - t0
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
    ap.add_argument("--rx-repack", help="path of a real rx-repack (FNNDSC/pypx-listener, Rust)")
    ap.add_argument(
        "--first-sample", type=int, default=48, help="instances filed as first of their series"
    )
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    venv_bin = Path(sys.executable).parent
    python = str(venv_bin / "python")
    exe = str(venv_bin / "dicom-repack")
    compile_package()
    work = Path(tempfile.mkdtemp(prefix="per-instance-", dir=args.workdir))
    corpus = args.corpus or unpack_shared("SAG-anon", work / "corpus")
    files = dicom_files(corpus)
    # trees are set aside (ext4's slow creation after a deletion); on a small tmpfs,
    # deleted once room for the next contestant's tree runs short (no such penalty there)
    trash = Scratch(work, reserve_bytes=3 * sum(f.stat().st_size for f in files))
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

    def cmd_ours_s(f: Path, out: Path) -> list[str]:
        # the README's fastest storescp line: the interpreter without `site` (scripts/dicom-repack)
        return [python, "-S", *cmd_ours(f, out)]

    def cmd_ours_no_index(f: Path, out: Path) -> list[str]:
        # the SQLite index (core/index.py) is on by default with --logdir: its cost apart
        return [*cmd_ours(f, out), "--no-index"]

    def cmd_ours_first(f: Path, out: Path) -> list[str]:
        # a fresh tree per instance: every one is the first of its series
        fresh = out / f.name
        fresh.mkdir(parents=True, exist_ok=True)  # before the clock: --datadir's parent
        return [exe, "--xcrdir", str(f.parent), "--xcrfile", f.name, "--datadir", str(fresh / "data"),
                "--logdir", str(fresh / "log")]  # fmt: skip

    def cmd_rx(f: Path, out: Path) -> list[str]:
        return [str(args.rx_repack), "--xcrdir", str(f.parent), "--xcrfile", f.name,
                "--datadir", str(out / "data"), "--logdir", str(out / "log")]  # fmt: skip

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
        ("python -S dicom-repack", cmd_ours_s, files),
        ("dicom-repack --no-index", cmd_ours_no_index, files),
        ("dicom-repack --cleanup", cmd_ours_move, files),
        ("dicom-repack, first of series", cmd_ours_first, _sample(files, args.first_sample)),
    ]
    if args.rx_repack:
        contestants.append(("rx-repack", cmd_rx, files))
    if args.px_repack:
        contestants.append(("px-repack", cmd_px, _sample(files, args.px_sample)))

    report_creation_cost(work, "before the runs")
    walls: dict[str, list[float]] = {c[0]: [] for c in contestants}
    cpus: dict[str, list[float]] = {c[0]: [] for c in contestants}
    rss: dict[str, int] = {c[0]: 0 for c in contestants}
    for rep in range(args.repeat):
        order = contestants[rep % len(contestants) :] + contestants[: rep % len(contestants)]
        for name, make, subset in order:
            out = work / f"out-{rep}-{name.replace(' ', '_')}"
            out.mkdir(exist_ok=True)  # --datadir's parent (only the last folder is created)
            for f in subset:
                wall, cpu, peak = run_one(make(f, out))  # type: ignore[operator]
                walls[name].append(wall)
                cpus[name].append(cpu)
                rss[name] = max(rss[name], peak)
            trash.set_aside(out)
        print(f"  repetition {rep + 1}/{args.repeat} done", file=sys.stderr)

    report_creation_cost(work, "after the runs")
    floor = statistics.median(walls["python -c pass"])
    floor_cpu = statistics.median(cpus["python -c pass"])
    print()
    print(
        f"{'contestant':31} {'wall/inst':>10} {'x floor':>8} {'CPU/inst':>10} {'x floor':>8} {'peak RSS':>9}  n"
    )
    for name, _, _ in contestants:
        w = statistics.median(walls[name])
        c = statistics.median(cpus[name])
        print(
            f"{name:31} {w * 1e3:7.2f} ms {w / floor:7.2f}x {c * 1e3:7.2f} ms {c / floor_cpu:7.2f}x"
            f" {rss[name] / 1024:6.1f} MB  {len(walls[name])}"
        )
    print()
    ours = statistics.median(cpus["dicom-repack"])
    first = statistics.median(cpus["dicom-repack, first of series"])
    print("Ratios of median CPU per instance (user+sys):")
    print(
        f"  dicom-repack / python -c pass:                 {ours / floor_cpu:.2f}x  (target <= 0.9x)"
    )
    no_site = statistics.median(cpus["python -S dicom-repack"])
    print(
        f"  python -S dicom-repack / python -c pass:       {no_site / floor_cpu:.2f}x  "
        f"(python -S -c pass: {statistics.median(cpus['python -S -c pass']) / floor_cpu:.2f}x)"
    )
    print(f"  first of series / later instance:              {first / ours:.2f}x  (target <= 1.5x)")
    bare = statistics.median(cpus["dicom-repack --no-index"])
    print(
        f"  the index's cost per instance (CPU):           {(ours - bare) * 1e3:+.2f} ms "
        f"({ours / bare:.2f}x the door with --no-index)"
    )
    if args.rx_repack:
        rx = statistics.median(cpus["rx-repack"])
        print(f"  dicom-repack / rx-repack:                      {ours / rx:.1f}x  (target <= 8x)")
        print(f"  dicom-repack, first of series / rx-repack:     {first / rx:.1f}x")
    if args.px_repack:
        px = statistics.median(cpus["px-repack"])
        print(f"  px-repack / dicom-repack:                      {px / ours:.0f}x")
    peak = max(
        rss["dicom-repack"], rss["dicom-repack --cleanup"], rss["dicom-repack, first of series"]
    )
    print(f"dicom-repack peak RSS: {peak / 1024:.1f} MB   (target <= 30 MB)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _sample(files: list[Path], n: int) -> list[Path]:
    """``n`` instances spread over the corpus."""
    step = max(1, len(files) // max(1, n))
    return files[::step][:n]


if __name__ == "__main__":
    raise SystemExit(main())
