"""Run outputs are set aside, not deleted, while the bench is timing.

On ext4 without a journal (the root filesystem of many VMs, these included) the
inode allocator passes over every inode freed in the last 60 s (360 s while its
inode-table block is dirty), checking them one by one (``recently_deleted()`` in
fs/ext4/ialloc.c). Deleting one run's tree of thousands of files just before the
next run made each file the next contestant created cost ~0.3-0.6 ms of kernel
CPU instead of ~20 us: the penalty fell on whoever ran next, not on who deleted.
A rename frees no inode, so trees are renamed into a trash folder and deleted
after the last run, unless the disk is too short of room to keep them; with
``empty_files`` their files are also truncated to 0 bytes when set aside, which
frees the blocks but no inode.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

__all__ = ["Scratch", "creation_cost_us"]


class Scratch:
    """Where finished run trees wait for the final cleanup (the bench's and benchmarks/'s)."""

    def __init__(
        self,
        work: Path,
        reserve_bytes: int = 0,
        *,
        delete_now: bool = False,
        empty_files: bool = False,
    ) -> None:
        self.trash = work / "trash"
        #: free space to keep for the next run (its tree and records); 0: never short
        self.reserve_bytes = reserve_bytes
        #: delete each tree at once (the old way, to show what it costs)
        self.delete_now = delete_now
        #: truncate every file set aside to 0 bytes: frees its blocks, keeps its inode
        #: (for benches whose runs, kept whole, would not fit on the disk)
        self.empty_files = empty_files
        self.deleted_between_runs = 0

    def set_aside(self, root: Path) -> None:
        """Rename ``root`` into the trash; delete it now only if asked or room is short."""
        if not os.path.lexists(root):
            return
        if self.delete_now or (
            self.reserve_bytes and shutil.disk_usage(root).free < self.reserve_bytes
        ):
            shutil.rmtree(root, ignore_errors=True)
            self.deleted_between_runs += 1
        else:
            self.trash.mkdir(exist_ok=True)
            dest, n = self.trash / root.name, 0
            while os.path.lexists(dest):  # a script may reuse one output name
                n += 1
                dest = self.trash / f"{root.name}.{n}"
            os.rename(root, dest)
            if self.empty_files:
                _truncate_all(dest)
        os.sync()  # the run's writeback happens now, not inside the next run

    def empty(self) -> None:
        """Delete every tree set aside (after the last timed run)."""
        shutil.rmtree(self.trash, ignore_errors=True)


def _truncate_all(root: Path) -> None:
    """Every regular file under ``root`` to 0 bytes (no inode is freed, so no slow state)."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                with contextlib.suppress(OSError):
                    os.truncate(path, 0)


def creation_cost_us(folder: Path, files: int = 500) -> float:
    """Kernel CPU to create one empty file in a new folder under ``folder``, in microseconds.

    ~10-30 us is normal for a local disk; hundreds mean recently deleted inodes
    are being skipped (see the module docstring) and file-creating runs are
    inflated. The probe's files stay for the final cleanup.
    """
    probe = Path(tempfile.mkdtemp(prefix=".probe-", dir=folder))
    t0 = time.process_time()
    for i in range(files):
        os.close(os.open(probe / str(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    return (time.process_time() - t0) / files * 1e6
