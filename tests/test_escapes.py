"""Nobody let in: no planted link or FIFO under the data or log folder makes a door touch
anything outside them, or hang (issue 22, "Escapes" and "Hangs").

Everything here is on a real filesystem: real symbolic links to real files outside,
real FIFOs (``os.mkfifo``) with no writer, the installed console script run with a
subprocess timeout, so a hang fails the test instead of hanging the suite.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
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
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
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


@pytest.mark.parametrize("where", ["patient folder", "seriesData", "image records"])
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
    (images,) = (log / "seriesData").glob("*-img")  # a folder below a folder of the log's
    planted = {
        "patient folder": patient,
        "seriesData": log / "seriesData",
        "image records": images,
    }[where]
    outside = tmp_path / "outside"
    shutil.move(planted, outside)
    planted.symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    outcome = repacker.repack_buffer(second.read_bytes())
    assert outcome.error is not None and f"{planted} is a symbolic link" in outcome.error
    folder = f"inside the data folder {data};" if planted == patient else f"log folder {log};"
    assert folder in outcome.error, outcome.error  # the root named, not the folder walked from
    assert not outcome.retryable
    assert snapshot(outside) == before, "written through the link"


# -- 6 and hangs: every name the project opens under data and log ----------------------------

#: where, under tmp_path, each file the doors open lives ({series} etc. filled in)
PLACES = {
    "patient record": "log/{patient}",
    "image record": "log/{image}",
    "study record": "log/{study}",
    "series dump": "log/{study_series}",
    "series record": "log/{series}",
    "pack record": "log/{pack}",
    "index": f"log/{INDEX}",
    "index -wal": f"log/{INDEX}-wal",
    "index -shm": f"log/{INDEX}-shm",
    "index -journal": f"log/{INDEX}-journal",
    "pending rows": f"log/{INDEX}.pending",
    "fold file": f"log/{INDEX}.pending.1-2",
    "SOP lock file": f"log/{INDEX}.sop-lock",
    "data file": "data/{filed}",  # never opened: a re-send replaces the name, atomically
}


def place_of(setting: Setting, name: str) -> str:
    p = setting.paths
    (image,) = (setting.log / p.image_dir).iterdir()  # the first instance's record
    (filed,) = setting.data.rglob("*.dcm")
    return PLACES[name].format(
        filed=filed.relative_to(setting.data).as_posix(),
        patient=p.patient,
        image=f"{p.image_dir}/{image.name}",
        study=p.study,
        study_series=p.study_series,
        series=p.series,
        pack=p.pack,
    )


def doors(s: Setting) -> dict[str, Callable[[Path], subprocess.CompletedProcess[str]]]:
    """Each door, given a fresh copy of the filed instance (moved, where the door files)."""
    folders = ["-d", str(s.data), "-l", str(s.log)]
    return {
        "per-instance": lambda src: cli("--xcrdirfile", str(src), *folders, "--cleanup"),
        "batch": lambda src: cli("batch", str(src), *folders, "--no-progress", "--cleanup"),
        "status": lambda src: cli("status", "-l", str(s.log)),
        "index --rebuild": lambda src: cli("index", "--rebuild", *folders),
    }


def fresh_copy(s: Setting, door: str) -> Path:
    """A copy of the filed instance (a re-send: its image record is read, then replaced)."""
    src = s.first.parent.parent / "copies" / f"{door.replace(' ', '_')}.dcm"
    src.parent.mkdir(exist_ok=True)
    shutil.copy(s.first, src)
    return src


@pytest.mark.parametrize("kind", ["link", "fifo"])
@pytest.mark.parametrize("name", list(PLACES))
def test_a_link_or_fifo_at_any_name_the_doors_open_touches_nothing_outside_and_never_hangs(
    tmp_path: Path, name: str, kind: str
) -> None:
    setting = Setting(tmp_path)
    planted = setting.plant(place_of(setting, name), kind)
    digest = sha(setting.first)
    for door, run in doors(setting).items():
        src = fresh_copy(setting, door)
        proc = run(src)  # fails the test if it hangs
        assert "Traceback" not in proc.stderr, f"{door}: {proc.stderr}"
        assert proc.returncode in (0, 1), f"{door}: {proc.returncode} {proc.stderr}"
        if proc.returncode == 1:
            line = one_line(proc)
            assert str(planted) in line or str(planted.parent) in line, f"{door}: {line}"
            if door in ("per-instance", "batch"):
                assert src.exists() and sha(src) == digest, "the source stays"
        assert setting.secret.read_bytes() == SECRET, f"{door} wrote through the link"
        assert sorted(p.name for p in setting.outside.iterdir()) == ["secret"], door
        if name == "data file":
            assert planted.is_file() and not planted.is_symlink(), f"{door}: not re-filed"
        else:
            assert planted.is_symlink() == (kind == "link"), f"{door} replaced the {kind}"
        assert "/etc/passwd" not in proc.stdout


def test_a_forged_fold_file_linked_from_outside_is_never_imported_or_removed(
    tmp_path: Path,
) -> None:
    """A ``<index>.pending.*`` link to a file of forged rows: not read, not unlinked."""
    setting = Setting(tmp_path)
    forged = setting.outside / "forged"
    row = ("9.9.9", "9.9", "9", "FORGED", "/etc/passwd", 1, 1e12) + (None,) * 10
    forged.write_bytes(f"\n{row!a}\n".encode())
    link = setting.log / f"{INDEX}.pending.1-2"
    link.symlink_to(forged)
    proc = cli("status", "-l", str(setting.log), "--json")
    assert "/etc/passwd" not in proc.stdout and "FORGED" not in proc.stdout
    assert str(link) in one_line(proc)
    assert link.is_symlink() and forged.exists()


# -- 2, 3, 4: the project's own files and folders planted as links -------------------------


def test_an_index_linked_from_outside_is_refused_by_every_door(tmp_path: Path) -> None:
    setting = Setting(tmp_path)
    target = setting.outside / "db.sqlite"
    link = setting.log / INDEX
    link.unlink()
    link.symlink_to(target)
    for door, run in doors(setting).items():
        proc = run(fresh_copy(setting, door))
        if door == "per-instance" and proc.returncode == 0:
            continue  # it appends its row to the pending file and opens no database
        assert proc.returncode == 1, f"{door}: {proc.stderr}"
        assert str(link) in one_line(proc), door
        assert sorted(p.name for p in setting.outside.iterdir()) == ["secret"], door


@pytest.mark.parametrize("name", ["index", "index -wal", "pending rows"])
def test_a_batch_refuses_at_start_in_one_line_when_its_index_is_planted(
    tmp_path: Path, name: str
) -> None:
    """A link at the index (or a companion, or its pending rows) would fail every instance
    the same way: batch says so once, at its start, and files nothing (its sources stay)."""
    setting = Setting(tmp_path)
    planted = setting.plant(place_of(setting, name), "link")
    many = tmp_path / "many"
    many.mkdir()
    for i in range(5):
        shutil.copy(setting.second, many / f"{i}.dcm")
    proc = cli("batch", str(many), "-d", str(setting.data), "-l", str(setting.log),
               "--no-progress", "--cleanup")  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    line = one_line(proc)
    assert str(planted) in line and "nothing was done" in line, line
    assert len(list(many.iterdir())) == 5
    assert sorted(p.name for p in setting.outside.iterdir()) == ["secret"]
    assert setting.secret.read_bytes() == SECRET


def test_the_spool_folder_planted_as_a_link_is_never_written_nor_swept(tmp_path: Path) -> None:
    from dicom_repack.listen.sink import SPOOL_DIR, Spool

    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    stale = outside / "999999999-abc.part"  # a pid that runs nowhere: "left by a kill"
    stale.write_bytes(SECRET)
    (data / SPOOL_DIR).symlink_to(outside, target_is_directory=True)
    spool = Spool(str(data))
    spool.sweep()
    assert stale.read_bytes() == SECRET, "the sweep removed a file outside"
    with pytest.raises(OSError, match="symbolic link"):
        spool.create()
    assert sorted(p.name for p in outside.iterdir()) == [stale.name]


def test_a_batch_over_the_data_folder_never_files_the_projects_own_hidden_folders(
    tmp_path: Path,
) -> None:
    setting = Setting(tmp_path)
    for hidden in (".dicom-repack-incoming", ".dicom-repack-journal/run"):
        folder = setting.data / hidden
        folder.mkdir(parents=True)
        shutil.copy(setting.second, folder / "999999999-x.part")
    proc = cli(
        "batch", str(setting.data), "-d", str(setting.data), "-l", str(setting.log),
        "--no-progress", "--no-index",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    filed = [p for p in setting.data.rglob("*.dcm")]
    assert len(filed) == 1, "a spool or journal file was filed"
    assert (setting.data / ".dicom-repack-incoming" / "999999999-x.part").exists()


@pytest.mark.slow
def test_the_dask_journal_folder_planted_as_a_link_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    setting = Setting(tmp_path)
    (setting.data / ".dicom-repack-journal").symlink_to(
        setting.outside, target_is_directory=True
    )  # fmt: skip
    proc = cli(
        "batch", str(setting.second), "-d", str(setting.data), "-l", str(setting.log),
        "--no-progress", "--cleanup", "--dask", "local:1",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    said = [x for x in proc.stderr.splitlines() if x.startswith("dicom-repack batch: ")]
    line = [x for x in said if "waiting for a Dask worker" not in x]
    assert len(line) == 1 and ".dicom-repack-journal is a symbolic link" in line[0], proc.stderr
    assert sorted(p.name for p in setting.outside.iterdir()) == ["secret"]


@pytest.mark.parametrize("name", ["patient record", "image record", "pending rows"])
def test_the_receivers_job_refuses_a_fifo_in_one_line_instead_of_blocking(
    tmp_path: Path, name: str
) -> None:
    """What listen's association thread calls for every C-STORE (Repacker.repack_buffer),
    in a process of its own so that a block fails the test instead of hanging it."""
    import sys

    setting = Setting(tmp_path)
    planted = setting.plant(place_of(setting, name), "fifo")
    script = (
        "import sys\n"
        "from dicom_repack.core.repack import Config, Repacker\n"
        "config = Config(sys.argv[1], sys.argv[2], index_mode='pending' if sys.argv[4] == 'pending' else 'direct')\n"
        "with open(sys.argv[3], 'rb') as fh:\n"
        "    with Repacker(config) as repacker:\n"
        "        out = repacker.repack_buffer(fh.read())\n"
        "print(out.error)\n"
    )
    mode = "pending" if name == "pending rows" else "sqlite"
    args = [str(setting.data), str(setting.log), str(setting.first), mode]
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=HANG
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the receiver's job blocked on the FIFO at {planted}")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    (error,) = proc.stdout.splitlines()
    assert f"{planted} is a FIFO" in error
    assert planted.exists() and not planted.is_file()


def test_index_rebuild_never_reads_a_file_through_a_link_planted_in_the_data_tree(
    tmp_path: Path,
) -> None:
    """A link in the data tree to an instance outside: skipped with its reason, not indexed."""
    setting = Setting(tmp_path)
    outside_instance = setting.outside / "other.dcm"
    shutil.copy(setting.second, outside_instance)
    (filed,) = setting.data.rglob("*.dcm")
    planted = filed.parent / "planted.dcm"
    planted.symlink_to(outside_instance)
    proc = cli("index", "--rebuild", "-d", str(setting.data), "-l", str(setting.log))
    assert proc.returncode == 0, proc.stderr
    assert f"skipped {planted} is a symbolic link" in proc.stderr
    status = cli("status", "-l", str(setting.log), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["totals"]["instances"] == 1, "the outside instance indexed"


def test_a_spooled_instance_is_filed_from_its_open_file_even_if_the_spool_is_swapped(
    tmp_path: Path,
) -> None:
    """The receiver files a spooled instance from the spool file it holds open and removes
    it inside the spool folder: a link put in the spool folder's place between the last
    fragment and the filing changes nothing outside (no read, no removal there)."""
    from dicom_repack.core.repack import Config
    from dicom_repack.listen.filer import Filer
    from dicom_repack.listen.limits import Limits
    from dicom_repack.listen.scp import StoreInfo
    from dicom_repack.listen.sink import SPOOL_DIR, Incoming, Spool

    (src,) = generate(tmp_path / "in", 1, series=1, patients=1)
    data, log, outside = tmp_path / "data", tmp_path / "log", tmp_path / "outside"
    outside.mkdir()
    received = src.read_bytes()
    limits = Limits(1, 1 << 20)
    incoming = Incoming(received[:1000], limits.share(0), Spool(str(data)), spill_above=0)
    try:
        incoming.add(received[1000:])
        incoming.finish()
        assert incoming.path is not None and incoming.buffer is None, "not spooled"
        spool = data / SPOOL_DIR
        shutil.move(spool, outside / "moved")  # the real spool folder, now outside
        spool.symlink_to(outside, target_is_directory=True)
        decoy = outside / Path(incoming.path).name  # same name, other bytes
        decoy.write_bytes(SECRET)
        info = StoreInfo("SCU", "REPACK", "127.0.0.1:1", "1.2", "1.2.3", "1.2.840.10008.1.2.1")
        status, comment = Filer(Config(str(data), str(log), index=False))(incoming, info)
    finally:
        incoming.close()
    assert decoy.read_bytes() == SECRET, "the decoy outside was read or removed"
    (filed,) = data.rglob("*.dcm")
    assert filed.read_bytes() == received, (status, comment)
