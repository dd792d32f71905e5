"""The doors under operational faults, from the outside (issue 9, defects 10-13).

FIFOs, sockets and devices among the inputs, pydicom's warnings, UIDs long enough
to overflow a file name, and destinations that cannot be written. Every input is
generated here (no shared corpora); every fault is real (real FIFOs, real
read-only mounts or folders).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import run_cli

MR = "1.2.840.10008.5.1.4.1.1.4"


def make_instance(
    path: Path, *, series: str = "1.2.3.4.5", sop: str = "1.2.3.4.5.6", pad: int = 0, **tags: str
) -> Path:
    """A small, valid MR instance written by pydicom (explicit VR little endian).

    ``pad``: a private OB element makes it that many bytes larger. pydicom's warnings
    are silenced: over-long UIDs are what some tests are about.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _write_instance(path, series, sop, pad, tags)
    return path


def _write_instance(path: Path, series: str, sop: str, pad: int, tags: dict[str, str]) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MR)
    meta.MediaStorageSOPInstanceUID = UID(sop)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MR
    ds.SOPInstanceUID = sop
    ds.PatientID = "P1"
    ds.PatientName = "Doe^Jane"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = series
    ds.SeriesNumber = "3"
    ds.InstanceNumber = "1"
    ds.Modality = "MR"
    for key, value in tags.items():
        setattr(ds, key, value)
    if pad:
        ds.add_new(0x00290010, "LO", "PADDING")
        ds.add_new(0x00291010, "OB", b"\1" * pad)
    ds.save_as(path, enforce_file_format=True)


# -- defect 10: FIFOs, sockets, devices ------------------------------------------------


@pytest.fixture()
def odd_inputs(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A folder holding one good instance, a FIFO (no writer) and a listening socket."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    make_instance(inbox / "good.dcm")
    fifo = inbox / "pipe.dcm"
    os.mkfifo(fifo)
    sock_path = inbox / "sock.dcm"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(sock_path))
    try:
        yield {"inbox": inbox, "fifo": fifo, "socket": sock_path}
    finally:
        sock.close()


def test_per_instance_door_never_opens_a_fifo(odd_inputs: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "data"
    for args in (
        ["--xcrdir", str(odd_inputs["inbox"]), "--xcrfile", "pipe.dcm"],
        ["--xcrdirfile", str(odd_inputs["fifo"])],
        ["--xcrdirfile", str(odd_inputs["socket"])],
        ["--xcrdirfile", "/dev/null"],
    ):
        # a hang is the failure: the timeout turns it into one instead of a stalled suite
        proc = run_cli(*args, "--datadir", str(data), "--cleanup", check=False, timeout=60)
        assert proc.returncode == 1, (args, proc.stderr)
        (line,) = proc.stderr.splitlines()
        assert "not a regular file" in line and "Traceback" not in proc.stderr
    assert odd_inputs["fifo"].exists() and odd_inputs["socket"].exists()
    assert not data.exists() or not any(data.rglob("*"))


def test_per_instance_folder_mode_lists_a_fifo(odd_inputs: dict[str, Path], tmp_path: Path) -> None:
    inbox = odd_inputs["inbox"]
    proc = run_cli(
        "--xcrdir",
        str(inbox),
        "--parseAllFilesWithSubStr",
        ",",
        "--datadir",
        str(tmp_path / "d"),
        check=False,
        timeout=60,
    )
    assert proc.returncode == 1
    assert len(list((tmp_path / "d").rglob("*.dcm"))) == 1
    assert "pipe.dcm: not a regular file (a FIFO)" in proc.stderr


def test_batch_skips_counts_and_lists_fifos_and_sockets(
    odd_inputs: dict[str, Path], tmp_path: Path
) -> None:
    inbox = odd_inputs["inbox"]
    data = tmp_path / "data"
    data.mkdir()
    # walked, given explicitly, and listed on stdin
    for i, args in enumerate(
        (
            [str(inbox)],
            [str(odd_inputs["fifo"]), str(inbox / "good.dcm")],
            ["-"],
        )
    ):
        stdin = f"{odd_inputs['fifo']}\n{odd_inputs['socket']}\n{inbox / 'good.dcm'}\n"
        out = data / str(i)
        proc = run_cli(
            "batch",
            *args,
            "--datadir",
            str(out),
            "--jobs",
            "2",
            "--summary-json",
            str(tmp_path / f"s{i}.json"),
            input=stdin,
            timeout=60,
        )
        facts = json.loads((tmp_path / f"s{i}.json").read_text())
        assert facts["instances"] == 1 and facts["failed"] == 0
        assert facts["skipped_not_regular"] == (1 if i == 1 else 2)
        assert f"skipped (not a regular file): {odd_inputs['fifo']}" in proc.stderr
        assert "skipped (not a regular file)" in proc.stdout  # the summary line
        assert len(list(out.rglob("*.dcm"))) == 1
    assert odd_inputs["fifo"].exists()


def test_batch_cleanup_never_moves_a_fifo(odd_inputs: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_cli("batch", str(odd_inputs["inbox"]), "--datadir", str(data), "--cleanup", timeout=60)
    assert odd_inputs["fifo"].exists() and odd_inputs["socket"].exists()
    assert not (odd_inputs["inbox"] / "good.dcm").exists()
    assert [p.name for p in data.rglob("*") if not p.is_dir()] == ["0001-1.2.3.4.5.6.dcm"]


# -- defect 12: long UIDs --------------------------------------------------------------


def test_uids_too_long_for_a_file_name_are_filed_and_recorded(tmp_path: Path) -> None:
    """Record names get the data names' cut-and-hash rule, suffix kept whole; the bench's
    verifier finds every record where the writer put it (one rule: record_paths)."""
    from dicom_repack.bench.verify import build_truth, verify_run

    inbox = tmp_path / "in"
    inbox.mkdir()
    study = "1.2." + "3" * 300
    files = []
    for i, n in enumerate((246, 250, 300)):
        series = "1." + "7" * (n - 2)
        files.append(
            make_instance(
                inbox / f"{i}.dcm", series=series, sop=f"1.2.3.{i}", StudyInstanceUID=study
            )
        )
    data, log = tmp_path / "data", tmp_path / "log"
    # the per-instance door for the first, batch for the rest
    run_cli("--xcrdirfile", str(files[0]), "--datadir", str(data), "--logdir", str(log))
    run_cli("batch", str(files[1]), str(files[2]), "--datadir", str(data), "--logdir", str(log))
    names = [p.name for p in (*data.rglob("*"), *log.rglob("*"))]
    assert max(len(n.encode()) for n in names) <= 255
    dumps = list(log.glob("studyData/*-series/*-meta.json"))
    assert len(dumps) == 3 and len(list(log.glob("seriesData/*-pack.json"))) == 3
    filed = sorted(data.rglob("*.dcm"))
    assert len(filed) == 3
    for f in filed:
        image = json.loads((log / image_record_of(f)).read_text())
        (series_uid,) = image
        assert len(series_uid) in (246, 250, 300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom reads the over-long UIDs with warnings
        truth = build_truth(files, ["rx"])
        verdict = verify_run(truth, "rx", data, log)
    assert verdict.ok, verdict.as_dict()


def image_record_of(dcm: Path) -> str:
    """The image record of a filed instance, by the writer's own rule."""
    import pydicom

    from dicom_repack.core.records import record_paths

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the UIDs are over-long on purpose
        ds = pydicom.dcmread(dcm, stop_before_pixels=True)
        uids = (str(ds.PatientID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
    image: str = record_paths(*uids, dcm.name).image
    return image


# -- defect 13: operational errors -----------------------------------------------------


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A real tmpfs at ``where`` (root only: as root, chmod does not stop writes)."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextlib.contextmanager
def read_only_folder(where: Path) -> Iterator[Path]:
    """A folder nobody can write: a read-only tmpfs as root, else mode 0555."""
    if os.geteuid() == 0:
        with mounted_tmpfs(where, "ro,size=1m") as folder:
            yield folder
    else:
        where.mkdir(parents=True, exist_ok=True)
        where.chmod(0o555)
        try:
            yield where
        finally:
            where.chmod(0o755)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def many_instances(folder: Path, n: int, pad: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        make_instance(folder / f"{i:03d}.dcm", sop=f"1.2.3.4.5.{i}", InstanceNumber=str(i), pad=pad)
        for i in range(n)
    ]


def test_corpus_and_bench_with_a_missing_folder_say_so_in_one_line(tmp_path: Path) -> None:
    for args in (
        ["corpus", str(tmp_path / "out"), "--from", "/missing", "--instances", "2", "-q"],
        ["bench", "--corpus", "/missing", "--no-energy"],
        ["bench", "--corpus-from", "/missing", "--no-energy"],
    ):
        proc = run_cli(*args, check=False, timeout=120)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "/missing" in proc.stderr.splitlines()[-1] and "Traceback" not in proc.stderr


def test_corpus_into_a_read_only_folder_is_one_line(tmp_path: Path) -> None:
    with read_only_folder(tmp_path / "ro") as ro:
        proc = run_cli("corpus", str(ro / "corpus"), "--instances", "2", "-q", check=False)
    assert proc.returncode == 1
    assert str(ro / "corpus") in one_error_line(proc)


def test_batch_into_a_read_only_data_folder_refuses_at_start(tmp_path: Path) -> None:
    sources = many_instances(tmp_path / "in", 30)
    with read_only_folder(tmp_path / "ro") as ro:
        for dest in (
            ["--datadir", str(ro)],
            ["--datadir", str(tmp_path / "d"), "--logdir", str(ro)],
        ):
            proc = run_cli("batch", str(tmp_path / "in"), *dest, "--cleanup", check=False)
            assert proc.returncode == 1
            line = one_error_line(proc)
            assert "not writable" in line and str(ro) in line
    assert all(p.exists() for p in sources), "sources untouched"
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").rglob("*.dcm"))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_batch_stops_early_with_one_line_when_the_destination_fills(
    tmp_path: Path, jobs: str
) -> None:
    """The disk fills mid-run: one line, not one per remaining file; the sources are
    untouched, every filed instance is complete, no temporary file is left. With one
    worker, nothing is attempted after the first failure. (Copy mode: --cleanup onto a
    second filesystem is issue 9 defect 2's test.)"""
    import pydicom

    sources = many_instances(tmp_path / "in", 60, pad=40_000)
    facts = tmp_path / "summary.json"
    with mounted_tmpfs(tmp_path / "small", "size=400k") as small:
        proc = run_cli(
            "batch",
            str(tmp_path / "in"),
            "--datadir",
            str(small),
            "--jobs",
            jobs,
            "--summary-json",
            str(facts),
            check=False,
            timeout=120,
        )
        filed = list(small.rglob("*.dcm"))
        assert proc.returncode == 1
        line = one_error_line(proc)
        assert "destination failed" in line and "No space left" in line
        assert "stopped early" in proc.stdout
        summary = json.loads(facts.read_text())
        assert summary["stopped_early"] and summary["instances"] == len(filed)
        assert 0 < len(filed) < 60
        if jobs == "1":
            assert summary["failed"] == 1, "nothing attempted after the first failure"
        assert all(p.exists() for p in sources)
        assert not [p for p in small.rglob("*") if p.name.endswith(".tmp")]
        for f in filed:  # complete, readable instances
            assert pydicom.dcmread(f)[0x00291010].value == b"\1" * 40_000


# -- defect 11: pydicom's warnings -----------------------------------------------------


def element(tag: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b" "
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def warning_bait(path: Path) -> Path:
    """A file pydicom must read (no transfer syntax in its meta: the fast path declines)
    and warns about five times (bad UIDs, over-long PN, an IS that is not a number), and
    that cannot be filed (no PatientID)."""
    meta = element(0x00020002, b"UI", MR.encode() + b"\0") + element(0x00020003, b"UI", b"1.2.3\0")
    body = (
        element(0x00080016, b"UI", MR.encode() + b"\0")
        + element(0x00080018, b"UI", b"1.2.3.x" + b"9" * 80)
        + element(0x00100010, b"PN", b"A" * 80)
        + element(0x0020000D, b"UI", b"1.2.3.4.y")
        + element(0x0020000E, b"UI", b"1.2.3.4.5.z" + b"7" * 80)
        + element(0x00200011, b"IS", b"abc")
    )
    path.write_bytes(b"\0" * 128 + b"DICM" + meta + body)
    return path


def test_pydicom_warnings_stay_quiet_unless_asked_for(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    baits = [warning_bait(inbox / f"{i}.dcm") for i in range(3)]
    data = str(tmp_path / "data")
    proc = run_cli("--xcrdirfile", str(baits[0]), "--datadir", data, check=False)
    assert proc.returncode == 1
    assert "missing or empty PatientID" in one_error_line(proc)
    proc = run_cli("batch", str(inbox), "--datadir", data, "--jobs", "2", check=False)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 3 and all("missing or empty PatientID" in ln for ln in lines), lines
    # asked for: pydicom's own words come through
    loud = run_cli("--xcrdirfile", str(baits[0]), "--datadir", data, "-v", "2", check=False)
    assert "Invalid value for VR IS" in loud.stderr
    loud = run_cli("batch", str(inbox), "--datadir", data, "-v", "--jobs", "1", check=False)
    assert "Invalid value for VR IS" in loud.stderr
