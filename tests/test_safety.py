"""Nothing lost, nobody let in: each rule of the core issue's section 5 has a test here."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from dicom_repack.core import place
from dicom_repack.core.records import record_paths
from dicom_repack.core.repack import Config, Repacker
from helpers import HOSTILE, dicom_files, dicom_repack_exe, run_cli

# the hostile files are invalid on purpose; pydicom says so when writing them
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


def make_instance(seed: Path, out: Path, **changes: object) -> Path:
    """A copy of ``seed`` with some elements changed (None deletes the element)."""
    ds = pydicom.dcmread(seed)
    for keyword, value in changes.items():
        if value is None:
            if keyword in ds:
                del ds[keyword]
        else:
            setattr(ds, keyword, value)
    ds.save_as(out)
    return out


@pytest.fixture()
def seed(mr: Path) -> Path:
    return dicom_files(mr)[0]


# -- bad input -------------------------------------------------------------------------


def bad_inputs(seed: Path, folder: Path) -> dict[str, Path]:
    folder.mkdir()
    data = seed.read_bytes()
    files = {
        "not DICOM": folder / "notes.txt",
        "empty": folder / "empty.dcm",
        "truncated header": folder / "cut-header.dcm",
        "truncated pixels": folder / "cut-pixels.dcm",
        "no preamble": folder / "raw.dcm",
    }
    files["not DICOM"].write_text("hello, I am not an image\n")
    files["empty"].write_bytes(b"")
    files["truncated header"].write_bytes(data[:700])
    files["truncated pixels"].write_bytes(data[: len(data) - 1000])
    files["no preamble"].write_bytes(data[132:])
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "PatientID"):
        files[f"missing {keyword}"] = make_instance(
            seed, folder / f"no-{keyword}.dcm", **{keyword: None}
        )
    files["empty PatientID"] = make_instance(seed, folder / "empty-pid.dcm", PatientID="")
    return files


def test_bad_input_gets_one_line_error_and_leaves_everything_as_it_was(
    seed: Path, tmp_path: Path
) -> None:
    files = bad_inputs(seed, tmp_path / "in")
    before = {p: sha(p) for p in files.values()}
    data, log = tmp_path / "data", tmp_path / "log"
    for kind, path in files.items():
        for cleanup in ((), ("--cleanup",)):
            proc = run_cli(
                "--xcrdirfile",
                str(path),
                "--datadir",
                str(data),
                "--logdir",
                str(log),
                *cleanup,
                check=False,
            )
            assert proc.returncode == 1, (kind, proc.stderr)
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1, (kind, proc.stderr)
            assert str(path) in lines[0], kind
            assert sha(path) == before[path], f"{kind}: source changed"
    assert not data.exists() or all_files(data) == [], "nothing partial at the destination"
    assert not log.exists() or all_files(log) == [], "no records for instances not filed"


def test_batch_files_the_good_and_lists_the_bad(seed: Path, mr: Path, tmp_path: Path) -> None:
    files = bad_inputs(seed, tmp_path / "in")
    good = dicom_files(mr)[:5]
    for g in good:
        shutil.copy(g, tmp_path / "in" / g.name)
    data, log = tmp_path / "data", tmp_path / "log"
    proc = run_cli(
        "batch",
        str(tmp_path / "in"),
        "--datadir",
        str(data),
        "--logdir",
        str(log),
        "--no-progress",
        check=False,
    )
    assert proc.returncode == 1
    assert len(all_files(data)) == 5
    failures = [k for k in files if k not in ("not DICOM", "empty", "no preamble")]
    for kind in failures:
        assert str(files[kind]) in proc.stderr, f"{kind} not listed"
    assert "5 instances filed" in proc.stdout
    assert f"{len(failures)} failed" in proc.stdout
    assert "3 skipped (not DICOM)" in proc.stdout


def test_a_source_that_cannot_be_read_is_an_error_naming_it(seed: Path, tmp_path: Path) -> None:
    """A file that vanished between storescp's call (or the walk) and the read."""
    gone = tmp_path / "in" / "gone.dcm"
    data, log = tmp_path / "data", tmp_path / "log"
    for cleanup in ((), ("--cleanup",)):
        proc = run_cli(
            "--xcrdirfile", str(gone), "--datadir", str(data), "--logdir", str(log), *cleanup,
            check=False,
        )  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        assert (
            proc.stderr.strip() == f"dicom-repack: {gone}: cannot read: No such file or directory"
        )
    good = tmp_path / "good.dcm"
    shutil.copy(seed, good)
    proc = run_cli(
        "batch", "-", "--datadir", str(data), "--logdir", str(log), "--no-progress",
        input=f"{gone}\n{good}\n", check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert f"{gone}: cannot read" in proc.stderr
    assert "1 instances filed" in proc.stdout and "1 failed" in proc.stdout
    assert len(all_files(data)) == 1


def test_records_failure_keeps_an_earlier_copy(
    seed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Undoing a failed repeat must not remove the copy an earlier, recorded repack made."""
    data, log = tmp_path / "data", tmp_path / "log"
    with Repacker(Config(str(data), str(log))) as repacker:
        first = repacker.repack_path(str(seed))
    assert first.ok and first.dst is not None
    import dicom_repack.core.records as records

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records, "place_bytes", full)
    with Repacker(Config(str(data), str(log))) as repacker:
        again = repacker.repack_path(str(seed))
    assert again.error is not None and "records" in again.error
    assert Path(first.dst).exists() and sha(Path(first.dst)) == sha(seed)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "is not JSON"),
        ('["a list"]', "is not a JSON object"),
        ('{"%s": {"PatientID": "x", "StudyList": "1.2.3"}}', "StudyList is not a JSON list"),
    ],
)
def test_a_damaged_patient_record_is_reported_and_left_alone(
    seed: Path, tmp_path: Path, text: str, why: str
) -> None:
    """A hand-edited or damaged record must not crash the door or be overwritten."""
    patient_id = pydicom.dcmread(seed, stop_before_pixels=True).PatientID
    log = tmp_path / "log"
    record = log / record_paths(patient_id, "", "").patient  # the writer's own rule
    record.parent.mkdir(parents=True)
    record.write_text(text.replace("%s", patient_id))
    data = tmp_path / "data"
    proc = run_cli(
        "--xcrdirfile", str(seed), "--datadir", str(data), "--logdir", str(log), check=False
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(record) in lines[0] and why in lines[0], proc.stderr
    assert record.read_text() == text.replace("%s", patient_id)
    assert not data.exists() or all_files(data) == [], "no file without its records"


# -- hostile tag values -----------------------------------------------------------------


def hostile_instances(seed: Path, folder: Path) -> list[Path]:
    folder.mkdir()
    out: list[Path] = []
    for keyword, values in HOSTILE.items():
        for i, value in enumerate(values):
            changes: dict[str, object] = {keyword: value}
            if keyword not in ("SOPInstanceUID",):
                changes["SOPInstanceUID"] = f"1.2.3.{len(out)}"
            if any(ord(c) > 127 for c in value):
                changes["SpecificCharacterSet"] = "ISO_IR 192"
            out.append(make_instance(seed, folder / f"{keyword}-{i}.dcm", **changes))
    return out


@pytest.mark.parametrize("layout", ["rx", "px"])
def test_no_tag_value_leaves_the_data_or_log_folder(
    seed: Path, tmp_path: Path, layout: str
) -> None:
    files = hostile_instances(seed, tmp_path / "in")
    jail = tmp_path / "jail"
    jail.mkdir()
    data, log = jail / "data", jail / "log"
    proc = run_cli(
        "batch",
        str(tmp_path / "in"),
        "--datadir",
        str(data),
        "--logdir",
        str(log),
        "--no-progress",
        "--layout",
        layout,
        "--no-index",  # every file in the log folder must be a pypx record
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{len(files)} instances filed" in proc.stdout
    for p in all_files(tmp_path):
        rel = p.relative_to(tmp_path).as_posix()
        assert rel.startswith(("in/", "jail/data/", "jail/log/")), f"written outside: {rel}"
    assert sorted(p.name for p in jail.iterdir()) == ["data", "log"]
    for p in all_files(data):
        assert len(p.relative_to(data).parts) == 4
        assert all(len(part.encode()) <= 255 for part in p.parts)
    for p in all_files(log):
        assert p.relative_to(log).parts[0] in ("patientData", "studyData", "seriesData")
        json.loads(p.read_text())
    assert not (tmp_path.parent / "x").exists()
    assert not Path("/tmp/evil").exists() and not Path("/tmp/pwned").exists()


# -- --cleanup ------------------------------------------------------------------------------


def test_disk_full_during_copy_keeps_source_and_leaves_nothing(
    seed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "in.dcm"
    shutil.copy(seed, src)
    digest = sha(src)

    def full(*_: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "sendfile", full)
    monkeypatch.setattr(os, "write", full)
    data = tmp_path / "data"
    for move in (False, True):
        if move:  # a move across filesystems has to copy too
            real_rename = os.rename

            def rename(a: str, b: str, _real: Callable[[str, str], None] = real_rename) -> None:
                if str(a) == str(src):
                    raise OSError(errno.EXDEV, "Invalid cross-device link")
                _real(a, b)

            monkeypatch.setattr(os, "rename", rename)
        with Repacker(Config(str(data), str(tmp_path / "log"))) as repacker:
            outcome = repacker.repack_path(str(src), move=move)
        assert (
            outcome.error is not None and str(src) in outcome.error and "No space" in outcome.error
        )
        assert src.exists() and sha(src) == digest
        assert [p for p in all_files(data)] == []


def test_records_failure_undoes_the_placement(
    seed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No file may stand in the tree without its records (e.g. the log disk is full)."""
    src = tmp_path / "in.dcm"
    shutil.copy(seed, src)
    data, log = tmp_path / "data", tmp_path / "log"

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(place, "place_bytes", full)
    import dicom_repack.core.records as records

    monkeypatch.setattr(records, "place_bytes", full)
    for move in (False, True):
        with Repacker(Config(str(data), str(log))) as repacker:
            outcome = repacker.repack_path(str(src), move=move)
        assert outcome.error is not None and "records" in outcome.error
        assert src.exists()
        assert all_files(data) == []


# -- concurrency and repeats ------------------------------------------------------------------


@pytest.mark.slow
def test_64_concurrent_processes_lose_no_study(seed: Path, tmp_path: Path) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    paths = []
    for study in range(8):
        for series in range(8):
            paths.append(
                make_instance(
                    seed,
                    incoming / f"s{study}-{series}.dcm",
                    StudyInstanceUID=f"1.2.826.0.1.99.{study}",
                    SeriesInstanceUID=f"1.2.826.0.1.99.{study}.{series}",
                    SOPInstanceUID=f"1.2.826.0.1.99.{study}.{series}.1",
                )
            )
    data, log = tmp_path / "data", tmp_path / "log"
    procs = [
        subprocess.Popen(
            [
                dicom_repack_exe(),
                "--xcrdirfile",
                str(p),
                "--datadir",
                str(data),
                "--logdir",
                str(log),
                "--no-index",  # every file in the log folder must be a JSON record
            ],
            stderr=subprocess.PIPE,
        )
        for p in paths
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    (patient_file,) = (log / "patientData").iterdir()
    (entry,) = json.loads(patient_file.read_text()).values()
    assert sorted(entry["StudyList"]) == sorted(f"1.2.826.0.1.99.{s}" for s in range(8))
    for f in all_files(log):
        assert not f.name.endswith(".tmp"), f"temporary file left: {f}"
        json.loads(f.read_text())
    assert len(all_files(data)) == 64


def test_same_instance_twice_is_one_file_with_consistent_records(
    seed: Path, tmp_path: Path
) -> None:
    data, log = tmp_path / "data", tmp_path / "log"
    for _ in range(2):
        run_cli("--xcrdirfile", str(seed), "--datadir", str(data), "--logdir", str(log))
    (only,) = all_files(data)
    assert sha(only) == sha(seed)
    images = list((log / "seriesData").glob("*-img/*.json"))
    assert len(images) == 1
    (entry,) = json.loads(images[0].read_text()).values()
    assert entry["imageObj"][only.name]["FSlocation"] == str(only)
    (patient,) = (log / "patientData").iterdir()
    (p,) = json.loads(patient.read_text()).values()
    assert len(p["StudyList"]) == 1
    assert not [f for f in all_files(tmp_path) if f.name.endswith(".tmp")]


# -- refused at start ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "template", "message"),
    [
        (
            "--seriesDirTemplate",
            "%SeriesDescriptionn",
            "unknown DICOM keyword 'SeriesDescriptionn'",
        ),
        ("--rootDirTemplate", "%_sha1|4_PatientID", "unknown function 'sha1'"),
        ("--imageTemplate", "%_pad|x_InstanceNumber", "needs a width"),
    ],
)
def test_bad_template_is_refused_before_anything_is_done(
    seed: Path, tmp_path: Path, flag: str, template: str, message: str
) -> None:
    for door in ((), ("batch",)):
        args = [*door, "--datadir", str(tmp_path / "data"), flag, template]
        args += [str(seed)] if door else ["--xcrdirfile", str(seed)]
        proc = run_cli(*args, check=False)
        assert proc.returncode == 2
        assert message in proc.stderr
        assert not (tmp_path / "data").exists()


def test_without_o_tmpfile_named_temporaries_leave_nothing_behind(
    seed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kernels or filesystems without O_TMPFILE get hidden temporary names instead."""
    monkeypatch.setattr(place, "_tmpfile_works", False)
    data, log = tmp_path / "data", tmp_path / "log"
    with Repacker(Config(str(data), str(log))) as repacker:
        for _ in range(2):  # the second time replaces: same instance, one file
            outcome = repacker.repack_path(str(seed))
            assert outcome.error is None
    assert len(all_files(data)) == 1
    assert not [p for p in all_files(tmp_path) if p.name.endswith(".tmp")]
    assert sha(Path(outcome.dst or "")) == sha(seed)


def test_a_series_header_dump_is_made_once_when_its_first_instances_race(tmp_path: Path) -> None:
    """storescp starts many processes at once; only one may pay for the series' full dump."""
    import threading
    import time

    from dicom_repack.core.records import RecordWriter

    calls: list[int] = []

    def make() -> dict[str, object]:
        calls.append(1)
        time.sleep(0.2)  # a pydicom import and a whole-header read
        return {"dump": True}

    def writer() -> None:
        RecordWriter(str(tmp_path / "log"))._create_if_absent(
            "series/r.json", "<test>", make, serialise=True
        )

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1]
    assert json.loads((tmp_path / "log" / "series" / "r.json").read_text()) == {"dump": True}


def test_fsync_option_flushes_every_file_and_record(
    seed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with Repacker(Config(str(tmp_path / "data"), str(tmp_path / "log"), fsync=True)) as repacker:
        outcome = repacker.repack_path(str(seed))
    assert outcome.dst is not None
    files = [p for p in synced if not os.path.isdir(p)]
    folders = {p for p in synced if os.path.isdir(p)}
    # the data file (fsynced unnamed) and six records (patient, study, study-series, series,
    # image, pack; each unnamed or a temporary name)
    assert len(files) == 7
    # then every folder that names one of them, up to the data and log folders
    dst = Path(outcome.dst)
    assert {str(p) for p in [*dst.parents][:4]} <= folders
    assert str(tmp_path / "data") in folders and str(tmp_path / "log") in folders
    for rec in ("patientData", "studyData", "seriesData"):
        assert str(tmp_path / "log" / rec) in folders
    assert len([p for p in folders if p.endswith("-img")]) == 1
    synced.clear()
    with Repacker(Config(str(tmp_path / "data2"), str(tmp_path / "log2"))) as repacker:
        repacker.repack_path(str(seed))
    assert synced == [], "no fsync unless asked: it costs a disk flush per file"


def test_outcome_says_whose_fault_a_failure_is(seed: Path, tmp_path: Path) -> None:
    """A receiver answers "retry later" for the destination's failures only."""
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(seed.read_bytes()[:1000])
    with Repacker(Config(str(tmp_path / "data"))) as repacker:
        assert repacker.repack_path(str(bad)).kind == "TruncatedError"
        assert not repacker.repack_path(str(bad)).retryable
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    try:
        with Repacker(Config(str(tmp_path / "ro" / "data"))) as repacker:
            outcome = repacker.repack_path(str(seed))
        if os.geteuid() != 0:  # root writes anyway
            assert outcome.kind == "PlacementError" and outcome.retryable
    finally:
        (tmp_path / "ro").chmod(0o700)
