#!/usr/bin/env python3
"""Where the per-instance door's start goes: floors and layers, alternated, in one run.

Issue 11's target 2 compares the door's CPU with ``python -c pass``. This splits the
door into layers by running, alternated instance by instance (CPU from ``wait4``):

- ``python -c pass``              the yardstick (start, ``site``, teardown);
- ``... posix._exit(0)``          start + ``site``, no teardown: the floor of ANY door
                                  launched by the installed script (pip writes its
                                  ``#!`` line without flags, so ``site`` always runs);
- ``... import the door; _exit``  + the modules a later instance imports, no job;
- ``dicom-repack``                + the job (a later instance of a series);

and the same three with ``python -S`` (no ``site``: the README's fastest storescp line).
The differences are what each layer costs; the ``_exit`` floors say how much room
0.9x leaves for the rest. Two more price one module of ours apart from its content:
a package of ``EMPTY_MODULES`` empty modules imported after the package alone.

    .venv/bin/python benchmarks/per_instance_floor.py --corpus /work/scratch/corpora/SAG-anon \\
        --rounds 60 --workdir /tmp
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import compile_package, dicom_files, spawn_wait  # noqa: E402

#: how many empty modules the module-cost contestant imports
EMPTY_MODULES = 20

#: what a later instance of a series imports (the door, the job, the keyword table)
DOOR_IMPORTS = (
    "dicom_repack.cli",
    "dicom_repack.doors.instance",
    "dicom_repack.core.repack",
    "dicom_repack.core.keywords",
)


def cpu_of(argv: list[str]) -> float:
    """Spawn, wait; the child's user+sys CPU seconds."""
    usage = spawn_wait(argv)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--corpus", type=Path, required=True, help="a folder of .dcm instances")
    ap.add_argument("--rounds", type=int, default=60, help="instances per contestant")
    ap.add_argument("--workdir", default=None, help="where the two output trees go")
    args = ap.parse_args()
    files = dicom_files(args.corpus)
    if len(files) < 2:
        raise SystemExit(f"{args.corpus}: needs at least two instances")
    bin_dir = Path(sys.executable).parent
    python, exe = str(bin_dir / "python"), str(bin_dir / "dicom-repack")
    compile_package()
    # under -S the package is found as scripts/dicom-repack finds it (site-packages, or
    # the source folder an editable install names)
    import dicom_repack

    package_root = str(Path(dicom_repack.__file__).resolve().parent.parent)
    imports = f"import {', '.join(DOOR_IMPORTS)}, posix; posix._exit(0)"
    no_site_path = f"import sys; sys.path.append({package_root!r}); "
    exit_now = "import posix; posix._exit(0)"
    work = Path(tempfile.mkdtemp(prefix="per-instance-floor-", dir=args.workdir))

    empty = work / "empty"
    (empty / "pkg").mkdir(parents=True)
    (empty / "pkg" / "__init__.py").write_text("")
    for i in range(EMPTY_MODULES):
        (empty / "pkg" / f"m{i}.py").write_text(f"X = {i}\n")
    import compileall

    compileall.compile_dir(str(empty), quiet=1)
    empty_path = f"import sys; sys.path.insert(0, {str(empty)!r}); import pkg; "
    all_empty = ", ".join(f"pkg.m{i}" for i in range(EMPTY_MODULES))

    def door(pre: list[str], tree: str) -> Callable[[Path], list[str]]:
        (work / tree).mkdir(exist_ok=True)  # --datadir's parent (only the last folder is made)
        return lambda f: [*pre, "--xcrdir", str(f.parent), "--xcrfile", f.name,
                          "-d", str(work / tree / "data"), "-l", str(work / tree / "log")]  # fmt: skip

    contestants: dict[str, Callable[[Path], list[str]]] = {
        "python -c pass": lambda f: [python, "-c", "pass"],
        "start + site, _exit": lambda f: [python, "-c", exit_now],
        "  + door imports, _exit": lambda f: [python, "-c", imports],
        "  + job: dicom-repack": door([exe], "site"),
        "python -S: start, _exit": lambda f: [python, "-S", "-c", exit_now],
        "  + door imports, _exit ": lambda f: [python, "-S", "-c", no_site_path + imports],
        "  + job: python -S dicom-repack": door([python, "-S", exe], "nosite"),
        "python -S: an empty package, _exit": lambda f: [python, "-S", "-c", empty_path + exit_now],
        f"  + {EMPTY_MODULES} empty modules, _exit": lambda f: [
            python,
            "-S",
            "-c",
            f"{empty_path}import {all_empty}; {exit_now}",
        ],
    }
    for make in contestants.values():  # each tree's first instance: the series dump, untimed
        cpu_of(make(files[0]))
    cpu: dict[str, list[float]] = {k: [] for k in contestants}
    for i in range(args.rounds):
        f = files[1 + i % (len(files) - 1)]
        names = list(contestants) if i % 2 == 0 else list(contestants)[::-1]
        for name in names:
            cpu[name].append(cpu_of(contestants[name](f)))
    base = statistics.median(cpu["python -c pass"])
    previous = 0.0
    print(f"{'contestant':34} {'CPU':>9} {'x pass':>7} {'layer':>9}")
    for name, values in cpu.items():
        m = statistics.median(values)
        layer = "" if name.startswith("python") else f"{(m - previous) * 1e3:+7.2f} ms"
        print(f"{name:34} {m * 1e3:6.2f} ms {m / base:6.3f}x {layer:>9}")
        previous = m
    per_module = statistics.median(
        cpu[f"  + {EMPTY_MODULES} empty modules, _exit"]
    ) - statistics.median(cpu["python -S: an empty package, _exit"])
    print(
        f"one module's own cost (finder, loader, no content): {per_module / EMPTY_MODULES * 1e6:.0f} us"
    )
    print(
        f"(medians of {args.rounds} alternated rounds; 0.9x python -c pass = {0.9 * base * 1e3:.2f} ms)"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
