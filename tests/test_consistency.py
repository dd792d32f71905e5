"""One instance, one file, its records and its index row, whatever fails or races (issue 22).

Every fault here is real: an index on a tmpfs that is full, an index file that is
not a database, two batch workers re-filing variants of one SOPInstanceUID at once.
Each test runs the installed console script and then reads what a user would: the
data tree, the pypx records and the index.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import run_cli
from test_doors_faults import make_instance, mounted_tmpfs


def data_files(data: Path) -> list[Path]:
    return sorted(p for p in data.rglob("*") if p.is_file()) if data.exists() else []


def image_locations(log: Path) -> list[str]:
    """The FSlocation of every image record under ``log``."""
    out: list[str] = []
    for rec in (log / "seriesData").glob("*-img/*.json"):
        (entry,) = json.loads(rec.read_text()).values()
        out.extend(stat["FSlocation"] for stat in entry["imageObj"].values())
    return sorted(out)


def assert_records_match_files(data: Path, log: Path) -> None:
    """Every record names what is there: image records = files; every series, study
    and StudyList entry has an instance filed."""
    files = data_files(data)
    assert image_locations(log) == sorted(str(p) for p in files)
    series_with_images = {
        p.name[: -len("-img")] for p in (log / "seriesData").glob("*-img") if any(p.iterdir())
    }
    series_records = {
        p.name[: -len("-meta.json")] for p in (log / "seriesData").glob("*-meta.json")
    }
    assert series_records == series_with_images, "a series record without an instance"
    studies_with_series = {
        p.name[: -len("-series")] for p in (log / "studyData").glob("*-series") if any(p.iterdir())
    }
    study_records = {p.name[: -len("-meta.json")] for p in (log / "studyData").glob("*-meta.json")}
    assert study_records == studies_with_series, "a study record without a series"
    listed = set()
    for rec in (log / "patientData").glob("*.json"):
        for entry in json.loads(rec.read_text()).values():
            listed.update(entry["StudyList"])
    assert listed == studies_with_series, "a StudyList entry without a study"


def instances(folder: Path, count: int) -> list[Path]:
    """``count`` instances, each its own SOP, ten to a series."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        make_instance(
            folder / f"{i:04d}.dcm",
            sop=f"1.2.3.4.5.6.{i}",
            series=f"1.2.3.4.5.{i // 10}",
            InstanceNumber=str(i),
        )
        for i in range(count)
    ]


@pytest.fixture()
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real tmpfs with no space left (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    with mounted_tmpfs(tmp_path / "full", "size=256k") as mnt:
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass  # full
        finally:
            os.close(fd)
        yield mnt


# -- 1. a failing index undoes everything the job wrote -------------------------------------


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_an_index_on_a_full_disk_leaves_no_record_without_its_file(
    tmp_path: Path, full_disk: Path, jobs: str
) -> None:
    srcs = instances(tmp_path / "in", 40)
    data, log = tmp_path / "data", tmp_path / "log"
    facts = tmp_path / "summary.json"
    proc = run_cli(
        "batch", str(tmp_path / "in"), "-d", str(data), "-l", str(log), "--jobs", jobs,
        "--index", str(full_disk / "index.sqlite"), "--no-progress", "--cleanup",
        "--summary-json", str(facts), check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("dicom-repack batch: ")]
    assert len(errors) == 1 and "destination failed" in errors[0], proc.stderr
    assert "stopped early" in proc.stdout
    assert json.loads(facts.read_text())["stopped_early"]
    assert all(p.exists() for p in srcs), "no source removed without its index row"
    assert data_files(data) == []
    assert_records_match_files(data, log)


def test_a_damaged_index_leaves_no_record_without_its_file(tmp_path: Path) -> None:
    srcs = instances(tmp_path / "in", 12)
    data, log = tmp_path / "data", tmp_path / "log"
    index = tmp_path / "index.sqlite"
    index.write_bytes(b"this is not an SQLite database" * 200)
    for door in ("per-instance", "batch"):
        if door == "batch":
            args = ["batch", str(tmp_path / "in"), "--jobs", "1", "--no-progress"]
        else:
            args = ["--xcrdirfile", str(srcs[0])]
        proc = run_cli(
            *args, "-d", str(data), "-l", str(log), "--index", str(index), check=False
        )  # fmt: skip
        if door == "per-instance":
            # the per-instance door appends a pending row: filed; the fold fails later
            assert proc.returncode == 0, proc.stderr
            continue
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert "stopped early" in proc.stdout, proc.stdout
    assert_records_match_files(data, log)


def test_a_refiled_instance_whose_index_fails_keeps_its_earlier_copy_and_record(
    tmp_path: Path,
) -> None:
    """The image record an index failure replaced is put back: the earlier copy stands."""
    (src,) = instances(tmp_path / "in", 1)
    data, log = tmp_path / "data", tmp_path / "log"
    index = tmp_path / "index.sqlite"
    run_cli("batch", str(src), "-d", str(data), "-l", str(log), "--index", str(index))
    (before,) = data_files(data)
    record_before = image_locations(log)
    corrected = make_instance(
        tmp_path / "corrected.dcm", sop="1.2.3.4.5.6.0", series="1.2.3.4.5.0",
        InstanceNumber="0", PatientName="Corrected^Name",
    )  # fmt: skip
    index.unlink()
    index.write_bytes(b"damaged" * 1000)
    proc = run_cli(
        "batch", str(corrected), "-d", str(data), "-l", str(log), "--index", str(index),
        check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert data_files(data) == [before]
    assert image_locations(log) == record_before
    assert_records_match_files(data, log)


# -- 2 and 3. one SOP, one file, under concurrency ---------------------------------------------


def variants(folder: Path, count: int, sop: str = "1.2.3.4.5.6.7") -> list[Path]:
    """``count`` copies of one SOPInstanceUID, each with its own PatientName."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        make_instance(folder / f"{i:04d}.dcm", sop=sop, PatientName=f"Variant^{i}")
        for i in range(count)
    ]


def index_paths(index: Path) -> dict[str, str]:
    conn = sqlite3.connect(index)
    try:
        return dict(conn.execute("SELECT sop_instance_uid, path FROM instances"))
    finally:
        conn.close()


@pytest.mark.slow
def test_concurrent_refiles_of_one_sop_leave_one_file(tmp_path: Path) -> None:
    variants(tmp_path / "in", 300)
    data, log = tmp_path / "data", tmp_path / "log"
    proc = run_cli(
        "batch", str(tmp_path / "in"), "-d", str(data), "-l", str(log), "--jobs", "2",
        "--no-progress", check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "300 instances filed" in proc.stdout and "0 failed" in proc.stdout
    (only,) = data_files(data)
    assert image_locations(log) == [str(only)]
    run_cli("status", "-l", str(log))  # folds the workers' pending rows (batch did too)
    assert index_paths(log / "dicom-repack-index.sqlite") == {"1.2.3.4.5.6.7": str(only)}
    run_cli("index", "--rebuild", "-d", str(data), "-l", str(log))
    assert index_paths(log / "dicom-repack-index.sqlite") == {"1.2.3.4.5.6.7": str(only)}
    assert_records_match_files(data, log)


@pytest.mark.slow
def test_refiles_racing_into_folders_that_retires_empty_never_fail(tmp_path: Path) -> None:
    """Two SOPs, one per worker, each re-filed 200 times between two patient names in
    opposite phase: one's retire removes the folders it leaves empty while the other
    makes them again and files into them (the paths come on stdin, in blocks of 50,
    so each worker holds one SOP)."""
    src = tmp_path / "in"
    src.mkdir()
    blocks: list[list[Path]] = [[], []]
    for round_ in range(200):
        for k in (0, 1):
            name = "Left^Side" if (round_ + k) % 2 else "Right^Side"
            blocks[k].append(
                make_instance(
                    src / f"{k}-{round_:03d}.dcm", sop=f"1.2.3.9.{k}", series=f"1.2.3.9.{k}",
                    PatientName=name,
                )
            )  # fmt: skip
    order = [p for i in range(0, 200, 50) for k in (0, 1) for p in blocks[k][i : i + 50]]
    data, log = tmp_path / "data", tmp_path / "log"
    proc = run_cli(
        "batch", "-", "-d", str(data), "-l", str(log), "--jobs", "2", "--no-progress",
        input="".join(f"{p}\n" for p in order), check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "400 instances filed" in proc.stdout and "0 failed" in proc.stdout
    assert len(data_files(data)) == 2
    assert_records_match_files(data, log)


# -- 4. a changed InstanceNumber or SeriesInstanceUID ------------------------------------------


@pytest.mark.parametrize("door", ["per-instance", "batch"])
@pytest.mark.parametrize("changed", ["InstanceNumber", "SeriesInstanceUID", "both"])
def test_an_instance_refiled_with_a_changed_file_name_or_series_stands_at_one_path(
    tmp_path: Path, door: str, changed: str
) -> None:
    first = make_instance(tmp_path / "a.dcm", sop="1.2.3.4.5.6.1", InstanceNumber="1")
    number = "2" if changed != "SeriesInstanceUID" else "1"
    series = "1.2.3.4.5.99" if changed != "InstanceNumber" else "1.2.3.4.5"
    second = make_instance(
        tmp_path / "b.dcm", sop="1.2.3.4.5.6.1", series=series, InstanceNumber=number
    )
    data, log = tmp_path / "data", tmp_path / "log"
    for src in (first, second):
        if door == "batch":
            run_cli("batch", str(src), "-d", str(data), "-l", str(log), "--no-progress")
        else:
            run_cli("--xcrdirfile", str(src), "-d", str(data), "-l", str(log))
    (only,) = data_files(data)
    assert only.read_bytes() == second.read_bytes()
    assert image_locations(log) == [str(only)]
    assert_records_match_files(data, log)
    run_cli("status", "-l", str(log))
    assert index_paths(log / "dicom-repack-index.sqlite") == {"1.2.3.4.5.6.1": str(only)}


# -- 5. every skipped file named somewhere ------------------------------------------------------


def test_batch_names_every_skipped_file_in_its_ndjson_log_and_says_so(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(30):
        (src / f"notes-{i:02d}.txt").write_text("not DICOM")
    make_instance(src / "one.dcm")
    log = tmp_path / "outcomes.ndjson"
    proc = run_cli(
        "batch", str(src), "-d", str(tmp_path / "data"), "--no-progress",
        f"--log-ndjson={log}",
    )  # fmt: skip
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    skipped = sorted(d["src"] for d in lines if d["error_kind"] == "NotDicomError")
    assert skipped == sorted(str(p) for p in src.glob("*.txt"))
    more = [ln for ln in proc.stderr.splitlines() if "more skipped" in ln]
    assert more == [
        f"dicom-repack batch: ... and 10 more skipped files; every skipped file is named in the "
        f"--log-ndjson lines ({log})"
    ], proc.stderr
    proc = run_cli("batch", str(src), "-d", str(tmp_path / "data2"), "--no-progress")
    assert "10 more skipped files; --log-ndjson names every skipped file" in proc.stderr


@pytest.mark.slow
def test_receiver_threads_refiling_one_sop_leave_one_file(tmp_path: Path) -> None:
    """listen's associations are threads of one process, each with its own Repacker
    (what every C-STORE calls): the per-SOP lock holds between them too."""
    import threading

    from dicom_repack.core.repack import Config, Repacker

    payloads = [p.read_bytes() for p in variants(tmp_path / "in", 120)]
    data, log = tmp_path / "data", tmp_path / "log"
    errors: list[str] = []

    def association(part: list[bytes]) -> None:
        with Repacker(Config(str(data), str(log))) as repacker:
            for payload in part:
                outcome = repacker.repack_buffer(payload)
                if outcome.error:
                    errors.append(outcome.error)

    threads = [threading.Thread(target=association, args=(payloads[k::3],)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    (only,) = data_files(data)
    assert image_locations(log) == [str(only)]
    assert_records_match_files(data, log)


def test_without_a_log_folder_the_index_alone_keeps_one_file_per_sop(tmp_path: Path) -> None:
    """No records, but an index: its row still finds the earlier copy."""
    first = make_instance(tmp_path / "a.dcm", sop="1.2.3.4.5.6.1", InstanceNumber="1")
    second = make_instance(
        tmp_path / "b.dcm", sop="1.2.3.4.5.6.1", series="1.2.3.4.5.99", InstanceNumber="2"
    )
    data, index = tmp_path / "data", tmp_path / "idx" / "index.sqlite"
    for src in (first, second):
        run_cli("--xcrdirfile", str(src), "-d", str(data), "--index", str(index))
    (only,) = data_files(data)
    assert only.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in index.parent.iterdir()) == [
        "index.sqlite.pending",
        "index.sqlite.sop-lock",
    ]
