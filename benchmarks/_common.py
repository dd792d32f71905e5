"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import compileall
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

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
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)  # type: ignore[call-overload]


def python() -> str:
    return sys.executable


class Trash:
    """Set benchmark outputs aside during the timed runs; delete them all at the end.

    Why not delete between runs: on ext4 without a journal (these VMs' root
    filesystem), the inode allocator skips every inode freed in the last
    60 s (360 s while its table block is dirty), checking each free inode of the
    group one by one (``recently_deleted()`` in fs/ext4/ialloc.c). Deleting a
    5,000-file output just before the next contestant runs makes each file that
    contestant creates cost ~0.2-0.6 ms of kernel CPU instead of ~10-20 us, and
    the penalty falls on whoever runs next. Renaming a tree away frees no inode.
    """

    def __init__(self, work: Path, *, delete_now: bool = False) -> None:
        self.root = work / ".trash"
        self.count = 0
        #: the old way (delete each output at once), to show what it costs
        self.delete_now = delete_now

    def discard(self, path: Path) -> None:
        """Move ``path`` out of the way (a rename, no inode freed); nothing if absent."""
        if not os.path.lexists(path):
            return
        if self.delete_now:
            shutil.rmtree(path, ignore_errors=True)
            return
        self.root.mkdir(exist_ok=True)
        self.count += 1
        os.rename(path, self.root / str(self.count))
        os.sync()  # its writeback happens now, between runs, not inside the next one

    def empty(self) -> None:
        """Delete everything set aside (after the last timed run)."""
        shutil.rmtree(self.root, ignore_errors=True)


def report_creation_cost(folder: Path, when: str) -> float:
    """Print what creating a file costs in ``folder``, warning when the disk is in its slow state.

    ~10-30 us is this disk's normal; hundreds of us mean ext4 is skipping recently
    deleted inodes (see :class:`Trash`) and every contestant that creates files pays it.
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
