"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import compileall
import os
import resource
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
INNER = {"SAG-anon": "SAG-anon", "example-dicom-structural": "example-dicom-structural/dicoms"}


def compile_package() -> None:
    """Write the package's .pyc files.

    An editable install does not, and PYTHONDONTWRITEBYTECODE=1 (set on these
    machines) stops the interpreter from caching them: every per-instance start
    would then recompile every module (~1 ms each). A wheel install compiles.
    """
    compileall.compile_dir(str(REPO / "src" / "dicom_repack"), quiet=1)


def unpack_shared(name: str, dest: Path) -> Path:
    """Unpack one of the shared corpora and return the folder holding its instances."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(SHARED / f"{name}.tar.gz") as tf:
        tf.extractall(dest, filter="data")
    return dest / INNER[name]


def dicom_files(folder: Path) -> list[Path]:
    """Every file under ``folder`` whose name ends in .dcm, sorted."""
    return sorted(p for p in folder.rglob("*.dcm") if p.is_file())


def cpu_times_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def spawn_wait(
    argv: list[str], env: Mapping[str, str] | None = None, **spawn: Any
) -> resource.struct_rusage:
    """posix_spawn ``argv`` (``spawn``: posix_spawn's keywords), wait for it, and return
    its rusage (wait4: its own CPU and that of the children it reaped); exit the
    benchmark in one line if it failed."""
    pid = os.posix_spawn(argv[0], argv, os.environ if env is None else env, **spawn)
    _, status, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"failed ({code}): {' '.join(argv)}")
    return usage


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    done: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
        cmd, check=True, text=True, capture_output=True, **kw
    )
    return done


def python() -> str:
    return sys.executable


def report_creation_cost(folder: Path, when: str) -> float:
    """Print what creating a file costs in ``folder``, warning when the disk is in its slow state.

    ~10-30 us is this disk's normal; hundreds of us mean ext4 is skipping recently
    deleted inodes (see dicom_repack/bench/scratch.py) and every contestant that creates files pays it.
    """
    from dicom_repack.bench.scratch import creation_cost_us

    us = creation_cost_us(folder)
    warn = (
        "  SLOW: files were deleted here in the last minutes; figures will be inflated "
        "(wait ~6 min after large deletions)"
        if us > 100
        else ""
    )
    print(f"file creation {when}: {us:.0f} us CPU each{warn}", flush=True)
    return us


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``proc`` and wait for it; SIGKILL if it is still there after 60 s."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def add_keep(ap: Any) -> None:
    """``--keep``: the work folder stays, for deletion after the last timed run."""
    ap.add_argument("--keep", action="store_true",
                    help="keep the work folder (delete it after the last timed run: a large "
                         "deletion slows this disk's file creation for minutes)")  # fmt: skip


def keep_or_remove(work: Path, keep: bool) -> None:
    """At a script's end: say where the kept work folder is, or remove it."""
    if keep:
        print(f"kept: {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
