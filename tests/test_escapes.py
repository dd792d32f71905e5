"""Nobody let in: no planted link or FIFO under the data or log folder makes a door touch
anything outside them, or hang (issue 22, "Escapes" and "Hangs").

Everything here is on a real filesystem: real symbolic links to real files outside,
real FIFOs (``os.mkfifo``) with no writer, the installed console script run with a
subprocess timeout, so a hang fails the test instead of hanging the suite.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from dicom_repack.core.records import record_paths
from helpers import dicom_repack_exe
from test_source_goes_last import generate

#: seconds a door may take on one tiny input before it counts as hung
HANG = 60
INDEX = "dicom-repack-index.sqlite"
#: what a planted link points at: a file outside both folders, which must stay as it is
SECRET = b"outside: must never be read, written, replaced or removed\n"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The console script with a timeout: a hang is a failure naming the command."""
    try:
        return subprocess.run(
            [dicom_repack_exe(), *args], capture_output=True, text=True, timeout=HANG
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"dicom-repack {' '.join(args)} hung (> {HANG} s)")


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (links as links): name -> content digest or kind."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = sha(p)
        else:
            out[rel] = "folder" if p.is_dir() else "other"
    return out


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(lines) == 1, proc.stderr
    return lines[0]


class Setting:
    """A data and log folder with one instance filed (records, index), a second
    instance of the same series waiting, and an ``outside`` folder."""

    def __init__(self, tmp_path: Path) -> None:
        self.first, self.second = generate(tmp_path / "in", 2, series=1, patients=1)
        self.data, self.log = tmp_path / "data", tmp_path / "log"
        self.outside = tmp_path / "outside"
        self.outside.mkdir()
        self.secret = self.outside / "secret"
        self.secret.write_bytes(SECRET)
        proc = cli("--xcrdirfile", str(self.first), "-d", str(self.data), "-l", str(self.log))
        assert proc.returncode == 0, proc.stderr
        proc = cli("status", "-l", str(self.log))  # folds the pending row: the index exists
        assert proc.returncode == 0, proc.stderr
        ds = pydicom.dcmread(self.second, stop_before_pixels=True)
        self.paths = record_paths(
            ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, "x"
        )  # fmt: skip

    def plant(self, rel: str, kind: str) -> Path:
        """Put a link to the secret (or a FIFO) at ``rel`` (under tmp_path), replacing it."""
        where = self.data.parent / rel
        if where.is_dir() and not where.is_symlink():
            shutil.rmtree(where)
        elif where.exists() or where.is_symlink():
            where.unlink()
        where.parent.mkdir(parents=True, exist_ok=True)
        if kind == "link":
            where.symlink_to(self.secret)
        elif kind == "folder link":
            where.symlink_to(self.outside, target_is_directory=True)
        else:
            os.mkfifo(where)
        return where


# -- 1: a re-file never deletes outside ------------------------------------------------------


def test_a_refile_never_removes_an_archived_copy_through_a_linked_patient_folder(
    tmp_path: Path,
) -> None:
    """The earlier copy of a re-sent instance is removed through its folders, never by
    path: a patient folder replaced by a link to an archive keeps the archive whole."""
    (src,) = generate(tmp_path / "in", 1, series=1, patients=1)
    corrected = tmp_path / "corrected.dcm"
    ds = pydicom.dcmread(src)
    ds.PatientName = "Corrected^Name"
    ds.save_as(corrected)
    data, log = tmp_path / "data", tmp_path / "log"
    proc = cli("--xcrdirfile", str(src), "-d", str(data), "-l", str(log))
    assert proc.returncode == 0, proc.stderr
    (patient,) = data.iterdir()
    archive = tmp_path / "archive"
    shutil.move(patient, archive)  # an operator archived it; someone leaves a link behind
    patient.symlink_to(archive, target_is_directory=True)
    before = snapshot(archive)
    proc = cli("--xcrdirfile", str(corrected), "-d", str(data), "-l", str(log))
    assert proc.returncode == 0, proc.stderr
    assert snapshot(archive) == before, "the archive lost a file or folder"
    assert patient.is_symlink()
    filed = [p for p in data.rglob("*.dcm") if "Corrected" in str(p)]
    assert len(filed) == 1 and sha(filed[0]) == sha(corrected)


# -- 5: no folder is trusted from one use to the next ----------------------------------------


@pytest.mark.parametrize("where", ["patient folder", "seriesData"])
def test_a_link_planted_after_a_folder_was_used_is_refused_at_once(
    tmp_path: Path, where: str
) -> None:
    """A long-running door (the receiver's Repacker) used the folder a moment ago: a link
    planted now is refused on the next instance, not written through for 30 s."""
    from dicom_repack.core.repack import Config, Repacker

    first, second = generate(tmp_path / "in", 2, series=1, patients=1)
    data, log = tmp_path / "data", tmp_path / "log"
    repacker = Repacker(Config(str(data), str(log), index=False))
    assert repacker.repack_buffer(first.read_bytes()).error is None
    (patient,) = data.iterdir()
    planted = patient if where == "patient folder" else log / "seriesData"
    outside = tmp_path / "outside"
    shutil.move(planted, outside)
    planted.symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    outcome = repacker.repack_buffer(second.read_bytes())
    assert outcome.error is not None and f"{planted} is a symbolic link" in outcome.error
    assert not outcome.retryable
    assert snapshot(outside) == before, "written through the link"
