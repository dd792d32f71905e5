#!/usr/bin/env python3
"""Per-instance CPU of two versions of the code, alternated in one run (A/B).

Did a change make the per-instance door dearer? Export the two versions' ``src``
folders (``git archive REV src | tar -x -C DIR``), then::

    .venv/bin/python -m compileall -q /tmp/a/src /tmp/b/src
    .venv/bin/python benchmarks/per_instance_ab.py /tmp/a/src /tmp/b/src --corpus DIR -n 300

Each instance is filed by ``python -c "from dicom_repack.cli import run; run()" ...``
(with ``--script``: by each version's own console script, ``SRC/../scripts/dicom-repack``,
as storescp runs it: export ``src scripts``) with ``PYTHONPATH`` choosing the version, the same interpreter for both, A and B
alternating instance by instance (their order swapped every other time), into a
series folder both already started (so the once-per-series header dump is not
measured). CPU is the child's user+sys from ``wait4``. Run it twice with the same
tree as A and B to see this machine's noise (an A/A run): on the shared 2-core
machine it was within ±0.8%.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import spawn_wait


def run_one(src: Path, out: Path, corpus: Path, name: str, script: bool = False) -> float:
    """File ``corpus/name`` with the code under ``src``; return the child's CPU seconds."""
    env = dict(os.environ, PYTHONPATH=str(src))
    start = (
        [str(src.parent / "scripts" / "dicom-repack")]
        if script
        else ["-c", "from dicom_repack.cli import run; run()"]
    )
    argv = [
        sys.executable,
        *start,
        "--xcrdir", str(corpus), "--xcrfile", name,
        "--datadir", str(out / "data"), "--logdir", str(out / "log"),
    ]  # fmt: skip
    usage = spawn_wait(argv, env)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("a", type=Path, help="the first version's src folder")
    ap.add_argument("b", type=Path, help="the second version's src folder")
    ap.add_argument("--corpus", type=Path, required=True, help="a folder of .dcm instances")
    ap.add_argument("-n", type=int, default=300, help="instances per version (default 300)")
    ap.add_argument("--workdir", default="/dev/shm", help="where the output trees go")
    ap.add_argument(
        "--script",
        action="store_true",
        help="start through each version's scripts/dicom-repack (its start-up code too)",
    )
    args = ap.parse_args()
    names = sorted(p.name for p in args.corpus.iterdir() if p.suffix == ".dcm")
    if len(names) < 2:
        raise SystemExit(f"{args.corpus}: needs at least two .dcm files")
    versions = {"A": args.a.resolve(), "B": args.b.resolve()}
    cpu: dict[str, list[float]] = {k: [] for k in versions}
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        outs = {k: Path(work) / k for k in versions}
        for folder in outs.values():
            folder.mkdir()  # --datadir's parent (only the last folder is created)
        for k, src in versions.items():  # the series' first instance: its dump, not timed
            run_one(src, outs[k], args.corpus, names[0], args.script)
        for i in range(args.n):
            name = names[1 + i % (len(names) - 1)]
            order = list(versions) if i % 2 == 0 else list(versions)[::-1]
            for k in order:
                cpu[k].append(run_one(versions[k], outs[k], args.corpus, name, args.script))
    for k, src in versions.items():
        print(
            f"{k} {src}: median CPU/instance {statistics.median(cpu[k]) * 1e3:.3f} ms "
            f"(mean {statistics.mean(cpu[k]) * 1e3:.3f}, n={len(cpu[k])})"
        )
    ratio = statistics.median(cpu["B"]) / statistics.median(cpu["A"])
    print(f"B / A = {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
