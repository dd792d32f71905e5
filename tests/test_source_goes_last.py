"""The source goes last: moves across real filesystems, symlink sources, kill -9, repair.

Every test here runs the installed console script on real files: a second
filesystem is a tmpfs the test mounts (as root) or /dev/shm (a tmpfs on the
development machines, while /tmp is not), never a mocked syscall.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import dicom_repack_exe, run_cli


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


def generate(out: Path, instances: int = 12, *, series: int = 2, patients: int = 2) -> list[Path]:
    """Fresh instances (fresh UIDs) from pydicom's example files, via ``dicom-repack corpus``."""
    run_cli(
        "corpus", str(out), "--instances", str(instances), "--patients", str(patients),
        "--studies-per-patient", "1", "--series-per-study", str(series), "-q",
    )  # fmt: skip
    return sorted(out.rglob("*.dcm"))


@pytest.fixture()
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A folder on another filesystem than tmp_path: a fresh tmpfs (root) or /dev/shm."""
    if os.geteuid() == 0:
        mnt = tmp_path / "tmpfs"
        mnt.mkdir()
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True
        )
        if mounted.returncode == 0:
            try:
                yield mnt
            finally:
                subprocess.run(["umount", "-l", str(mnt)], check=False)
            return
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem: cannot mount a tmpfs and /dev/shm is not one")
    folder = shm / f"dicom-repack-test-{uuid.uuid4().hex}"
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def image_records(log: Path) -> dict[str, dict[str, object]]:
    """FSlocation -> the imageObj stat entry, for every image record under ``log``."""
    out: dict[str, dict[str, object]] = {}
    for rec in (log / "seriesData").glob("*-img/*.json"):
        (entry,) = json.loads(rec.read_text()).values()
        for stat in entry["imageObj"].values():
            out[stat["FSlocation"]] = stat
    return out


def assert_filed_once(originals: dict[str, str], data: Path, log: Path) -> None:
    """Every original (sha -> name) is in ``data`` exactly once, complete, with its record."""
    filed = files_under(data)
    assert not [p for p in filed if p.is_symlink()], "a link in the tree"
    assert not [p for p in files_under(data.parent) if p.name.endswith(".tmp")], "temp files"
    digests = [sha(p) for p in filed]
    assert sorted(digests) == sorted(originals), "each instance exactly once, bytes equal"
    records = image_records(log)
    assert sorted(records) == sorted(str(p) for p in filed), "each file with its image record"
    for p in filed:
        assert records[str(p)]["size"] == p.stat().st_size


# -- defects 2 and 3: --cleanup across filesystems ---------------------------------------


def test_cleanup_across_filesystems_files_the_first_of_every_new_folder(
    tmp_path: Path, other_fs: Path
) -> None:
    """storescp's -od on tmpfs, the data tree on disk: every instance filed, sources gone."""
    incoming = other_fs / "incoming"
    srcs = generate(incoming, 8, series=2)
    originals = {sha(p): p.name for p in srcs}
    data, log = tmp_path / "data", tmp_path / "log"
    first, rest = srcs[0], srcs[1:]
    proc = run_cli(
        "--xcrdirfile", str(first), "--datadir", str(data), "--logdir", str(log), "--cleanup",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert not first.exists()
    proc = run_cli(
        "batch", str(incoming), "--datadir", str(data), "--logdir", str(log), "--cleanup",
        "--no-progress", check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"{len(rest)} instances filed" in proc.stdout
    assert not [p for p in rest if p.exists()], "every source removed once filed"
    assert_filed_once(originals, data, log)


def test_cleanup_across_filesystems_undoes_the_copy_when_records_fail(
    tmp_path: Path, other_fs: Path
) -> None:
    """A record failure after a cross-filesystem copy: source kept, the copy removed."""
    (src,) = generate(other_fs / "in", 1, series=1, patients=1)
    digest = sha(src)
    log = tmp_path / "log"
    (log / "patientData").mkdir(parents=True)
    import pydicom

    patient_id = pydicom.dcmread(src, stop_before_pixels=True).PatientID
    damaged = log / "patientData" / f"{patient_id}.json"
    damaged.write_text("{not json")
    data = tmp_path / "data"
    proc = run_cli(
        "--xcrdirfile", str(src), "--datadir", str(data), "--logdir", str(log), "--cleanup",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and str(damaged) in proc.stderr
    assert src.exists() and sha(src) == digest, "the source stays until the records are written"
    assert files_under(data) == [], "no file without its records"


def test_cross_filesystem_move_fsyncs_the_copy_before_removing_the_source(
    tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order on a real second filesystem (fsync and unlink observed, not faked)."""
    from dicom_repack.core.repack import Config, Repacker

    (src,) = generate(other_fs / "in", 1, series=1, patients=1)
    digest = sha(src)
    calls: list[str] = []
    real_fsync, real_unlink = os.fsync, os.unlink

    def fsync(fd: int) -> None:
        calls.append(f"fsync {os.readlink(f'/proc/self/fd/{fd}')}")
        real_fsync(fd)

    def unlink(p: str, *a: object, **kw: object) -> None:
        calls.append("unlink-source" if str(p) == str(src) else "unlink")
        real_unlink(p, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "unlink", unlink)
    data = tmp_path / "data"
    with Repacker(Config(str(data), str(tmp_path / "log"))) as repacker:
        outcome = repacker.repack_path(str(src), move=True)
    assert outcome.error is None, outcome.error
    assert calls[0].startswith("fsync") and calls[-1] == "unlink-source", calls
    assert not src.exists() and sha(Path(outcome.dst or "")) == digest
    # the copy's name is durable too: its folder, and each folder above it up to the
    # data folder (all new here), fsynced before the source goes
    dst = Path(outcome.dst or "")
    chain = [str(p) for p in dst.parents if p == data or data in p.parents]
    assert len(chain) == 4
    before = set(calls[: calls.index("unlink-source")])
    assert {f"fsync {p}" for p in chain} <= before, calls
    log = tmp_path / "log"
    assert {f"fsync {log / d}" for d in ("patientData", "studyData", "seriesData")} <= before


# -- defect 1: symlink sources ------------------------------------------------------------


@pytest.mark.parametrize("door", ["per-instance", "batch"])
def test_a_symlink_source_is_filed_as_bytes_and_its_target_kept(tmp_path: Path, door: str) -> None:
    targets = generate(tmp_path / "elsewhere", 2, series=1, patients=1)
    originals = {sha(p): p.name for p in targets}
    incoming = tmp_path / "in"
    incoming.mkdir()
    absolute = incoming / "abs.dcm"
    absolute.symlink_to(targets[0])
    relative = incoming / "rel.dcm"
    relative.symlink_to(os.path.relpath(targets[1], incoming))
    data, log = tmp_path / "data", tmp_path / "log"
    if door == "batch":
        proc = run_cli(
            "batch", str(incoming), "--datadir", str(data), "--logdir", str(log), "--cleanup",
            "--no-progress", check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    else:
        for link in (absolute, relative):
            proc = run_cli(
                "--xcrdirfile", str(link), "--datadir", str(data), "--logdir", str(log),
                "--cleanup", check=False,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
    assert_filed_once(originals, data, log)
    assert all(p.is_file() and not p.is_symlink() for p in files_under(data))
    assert all(t.exists() and sha(t) in originals for t in targets), "targets never removed"
    assert not absolute.is_symlink() and not relative.is_symlink(), "the links themselves go"


# -- the stat record ----------------------------------------------------------------------------


@pytest.mark.parametrize("cleanup", [False, True])
def test_the_image_record_says_nlink_1_as_px_repack(tmp_path: Path, cleanup: bool) -> None:
    (src,) = generate(tmp_path / "in", 1, series=1, patients=1)
    data, log = tmp_path / "data", tmp_path / "log"
    run_cli(
        "--xcrdirfile", str(src), "--datadir", str(data), "--logdir", str(log),
        *(["--cleanup"] if cleanup else []),
    )  # fmt: skip
    ((location, stat),) = image_records(log).items()
    assert stat["nlink"] == 1 == os.stat(location).st_nlink


# -- defect 4: re-runs repair -----------------------------------------------------------------


def test_a_batch_over_the_data_tree_repairs_files_without_records(tmp_path: Path) -> None:
    """Files in the tree without their image records (an older kill) get them; none moves."""
    srcs = generate(tmp_path / "in", 6, series=2)
    originals = {sha(p): p.name for p in srcs}
    data, log = tmp_path / "data", tmp_path / "log"
    run_cli("batch", str(tmp_path / "in"), "--datadir", str(data), "--no-progress")
    placed = files_under(data)
    assert len(placed) == 6 and not log.exists()
    for cleanup in ([], ["--cleanup"]):
        proc = run_cli(
            "batch", str(data), "--datadir", str(data), "--logdir", str(log), "--no-progress",
            *cleanup, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "6 instances filed" in proc.stdout
        assert files_under(data) == placed, "never the only copy removed"
        assert_filed_once(originals, data, log)


# -- the kill -9 test ---------------------------------------------------------------------------


def _kill_when(proc: subprocess.Popen[bytes], data: Path, count: int) -> bool:
    """SIGKILL ``proc``'s whole process group once ``data`` holds ``count`` files."""
    import signal
    import time

    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        if data.exists() and sum(1 for p in data.rglob("*.dcm")) >= count:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.wait()
    return False


@pytest.mark.slow
@pytest.mark.parametrize("where", ["same filesystem", "across filesystems"])
def test_batch_cleanup_killed_at_any_moment_then_rerun_loses_nothing(
    tmp_path: Path, other_fs: Path, where: str
) -> None:
    """kill -9 (the whole process tree) at several moments, then a re-run: all filed, once."""
    incoming = (other_fs if where == "across filesystems" else tmp_path) / "incoming"
    srcs = generate(incoming, 120, series=4)
    originals = {sha(p): p.name for p in srcs}
    data, log = tmp_path / "data", tmp_path / "log"
    argv = [
        dicom_repack_exe(), "batch", str(incoming), "--datadir", str(data), "--logdir", str(log),
        "--cleanup", "--no-progress", "--jobs", "2",
        "--index", str(tmp_path / "index.sqlite"),  # the log folder holds only records
    ]  # fmt: skip
    killed = 0
    for count in (1, 10, 40, 80):
        proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        killed += _kill_when(proc, data, count)
        # at every moment, every instance is somewhere, complete: in the input or in the tree
        left = {sha(p) for p in incoming.rglob("*.dcm")}
        there = {sha(p) for p in data.rglob("*.dcm")} if data.exists() else set()
        assert set(originals) <= left | there, "an instance was lost"
    assert killed >= 2, "the runs ended before they could be killed: kill moments too late"
    proc_done = run_cli(*argv[1:])
    assert "0 failed" in proc_done.stdout, proc_done.stdout
    assert not list(incoming.rglob("*.dcm")), "every source removed once filed"
    assert_filed_once(originals, data, log)
    for f in files_under(log):
        json.loads(f.read_text())  # no half-written record


# -- defect 5: links planted inside the data or log folder ---------------------------------------


def _plant(folder: Path, outside: Path) -> None:
    """Replace ``folder`` (inside a tree) by a symbolic link to ``outside``."""
    shutil.rmtree(folder)
    outside.mkdir(exist_ok=True)
    folder.symlink_to(outside)


@pytest.mark.parametrize("door", ["per-instance", "batch", "buffer"])
@pytest.mark.parametrize("where", ["patient folder", "patientData", "seriesData"])
def test_no_write_leaves_the_tree_through_a_planted_link(
    tmp_path: Path, door: str, where: str
) -> None:
    first, second = generate(tmp_path / "in", 2, series=1, patients=1)
    data, log = tmp_path / "data", tmp_path / "log"
    run_cli("--xcrdirfile", str(first), "--datadir", str(data), "--logdir", str(log))
    (patient,) = data.iterdir()
    planted = {"patient folder": patient, "patientData": log / "patientData",
               "seriesData": log / "seriesData"}[where]  # fmt: skip
    outside = tmp_path / "outside"
    _plant(planted, outside)
    digest = sha(second)
    if door == "buffer":  # what the receiver (listen) calls for every C-STORE
        from dicom_repack.core.repack import Config, Repacker

        with Repacker(Config(str(data), str(log))) as repacker:
            outcome = repacker.repack_buffer(second.read_bytes())
        errors = [outcome.error or ""]
        assert not outcome.retryable, "an operator must remove the link: retrying cannot help"
    else:
        args = [str(second)] if door == "batch" else ["--xcrdirfile", str(second)]
        proc = run_cli(
            *(["batch"] if door == "batch" else []), *args, "--datadir", str(data),
            "--logdir", str(log), "--cleanup", *(["--no-progress"] if door == "batch" else []),
            check=False,
        )  # fmt: skip
        assert proc.returncode == 1
        errors = [line for line in proc.stderr.splitlines() if line.startswith("dicom-repack")]
    assert len(errors) == 1, errors
    assert f"{planted} is a symbolic link" in errors[0] and "refusing" in errors[0], errors[0]
    assert list(outside.iterdir()) == [], "nothing written through the link"
    assert second.exists() and sha(second) == digest, "the source stays"


# -- defect 9: one instance, one path, one image record ---------------------------------------------


@pytest.mark.parametrize("index", [True, False])
@pytest.mark.parametrize("cleanup", [False, True])
def test_an_instance_refiled_with_a_changed_layout_tag_stands_at_one_path(
    tmp_path: Path, cleanup: bool, index: bool
) -> None:
    import pydicom

    (src,) = generate(tmp_path / "in", 1, series=1, patients=1)
    corrected = tmp_path / "corrected.dcm"
    ds = pydicom.dcmread(src)
    ds.PatientName = "Corrected^Name"
    ds.save_as(corrected)
    data, log = tmp_path / "data", tmp_path / "log"
    digest = sha(corrected)
    flags = ["--datadir", str(data), "--logdir", str(log), *(["--cleanup"] if cleanup else [])]
    flags += [] if index else ["--no-index"]  # the image record alone finds the earlier copy
    run_cli("--xcrdirfile", str(src), *flags)
    (before,) = files_under(data)
    run_cli("--xcrdirfile", str(corrected), *flags)
    (after,) = files_under(data)
    assert after != before and "Corrected" in str(after) and sha(after) == digest
    assert not before.parent.exists(), "the folders the earlier copy leaves empty go too"
    assert list(image_records(log)) == [str(after)]


def test_the_record_shapes_are_declared_once_and_the_writer_fills_them() -> None:
    """record_shapes.py (the TypedDicts) and the writer's field tuples name the same keys."""
    from dicom_repack.core import record_shapes as shapes
    from dicom_repack.core import records

    assert tuple(shapes.StudyRecord.__annotations__) == records.STUDY_FIELDS
    assert tuple(shapes.SeriesRecord.__annotations__) == records.SERIES_FIELDS
    assert tuple(shapes.PatientRecord.__annotations__) == (*records.PATIENT_FIELDS, "StudyList")
    assert tuple(shapes.ImageRecord.__annotations__) == (
        *records.SERIES_FIELDS, "outputFile", "imageObj",
    )  # fmt: skip
    st = os.stat(__file__)
    assert tuple(records._stat_record(st, "/x", 1)) == tuple(shapes.ImageStat.__annotations__)
    values = {"PatientID": "P"}
    assert records._study_model(values)["StudyDate"] == records.NOT_DEFINED
    assert list(records._series_model(values)) == list(records.SERIES_FIELDS)


def test_before_commit_sees_the_instance_filed_and_the_source_still_there(tmp_path: Path) -> None:
    """The hook a journaling door (batch --dask) writes its line from."""
    from dicom_repack.core.repack import Config, Repacker

    (src,) = generate(tmp_path / "in", 1, series=1, patients=1)
    seen: list[tuple[bool, bool, bool]] = []

    def hook(outcome: object) -> None:
        dst = Path(getattr(outcome, "dst", "") or "")
        seen.append((src.exists(), dst.is_file(), bool(image_records(tmp_path / "log"))))

    with Repacker(Config(str(tmp_path / "data"), str(tmp_path / "log"))) as repacker:
        outcome = repacker.repack_path(str(src), move=True, before_commit=hook)
    assert outcome.error is None and seen == [(True, True, True)] and not src.exists()


@pytest.mark.parametrize("door", ["instance", "batch"])
def test_a_source_that_cannot_be_removed_is_filed_and_named_in_one_line(
    tmp_path: Path, door: str
) -> None:
    """--cleanup from an input folder that refuses removal (chattr +i, which binds root
    too): the instance is filed and recorded, the source stays, one line names it."""
    from test_listen_support import immutable

    src = generate(tmp_path / "in", 3, series=1, patients=1)
    originals = {p.name: sha(p) for p in src}
    data, log = tmp_path / "data", tmp_path / "log"
    assert len({p.parent for p in src}) == 1  # one series: one folder to make immutable
    with immutable(src[0].parent):
        if door == "instance":
            args = ["--xcrdirfile", str(src[0]), "-d", str(data), "-l", str(log), "--cleanup"]
        else:
            args = ["batch", str(tmp_path / "in"), "-d", str(data), "-l", str(log), "--cleanup"]
        proc = run_cli(*args, check=False)
        assert all(p.exists() for p in src)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    wanted = src[:1] if door == "instance" else src
    failed = [ln for ln in proc.stderr.splitlines() if "cannot be removed" in ln]
    assert len(failed) == len(wanted), proc.stderr
    assert all(str(tmp_path / "in") in ln for ln in failed), proc.stderr
    assert sorted(sha(p) for p in files_under(data)) == sorted(originals[p.name] for p in wanted)
    assert len(image_records(log)) == len(wanted)
