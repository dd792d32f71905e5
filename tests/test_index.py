"""The SQLite index and `status`, from the outside: rows equal the filed tree after
every door (including hundreds of concurrent per-instance processes), a rebuild
restores it, `status --json` has a generated corpus's shape."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pydicom
import pytest

from helpers import dicom_repack_exe, run_cli, sqlite_db

INDEX = "dicom-repack-index.sqlite"

#: concurrent per-instance processes; 512 stays well under 30 s on 2 busy cores here
CONCURRENT = 512


def make_corpus(out: Path, n: int, patients: int = 2, studies: int = 2, series: int = 3) -> Path:
    """``n`` clones of pydicom's small MR/CT examples spread evenly over a known shape."""
    from pydicom.data import get_testdata_file

    seeds = out.parent / f"{out.name}-seeds"
    seeds.mkdir()
    for name in ("MR_small.dcm", "CT_small.dcm"):
        (seeds / name).write_bytes(Path(str(get_testdata_file(name))).read_bytes())
    run_cli(
        "corpus", str(out), "--from", str(seeds), "--instances", str(n),
        "--patients", str(patients), "--studies-per-patient", str(studies),
        "--series-per-study", str(series), "-q",
    )  # fmt: skip
    (out / "corpus.json").rename(out.parent / f"{out.name}.json")
    return out


def tree_rows(data: Path) -> dict[str, tuple[str, int, str, str, str]]:
    """SOPInstanceUID -> (path, size, series, study, patient) of every filed file (pydicom)."""
    out = {}
    for p in data.rglob("*.dcm"):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        out[str(ds.SOPInstanceUID)] = (
            str(p), p.stat().st_size, str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID),
            str(ds.PatientID),
        )  # fmt: skip
    return out


def fold(index: Path) -> None:
    """Let a reader fold the per-instance door's pending rows in (core/index.py), as
    `status` does for a user, before the test reads the SQLite file itself."""
    run_cli("status", "--index", str(index), "--json")


def index_rows(index: Path) -> dict[str, tuple[str, int, str, str, str]]:
    fold(index)
    with sqlite_db(index) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute(
            "SELECT sop_instance_uid, path, size, series_instance_uid, study_instance_uid, "
            "patient_id FROM instances"
        ).fetchall()
    assert len(rows) == len({r[0] for r in rows})
    return {r[0]: tuple(r[1:]) for r in rows}


def test_batch_index_rows_equal_the_filed_tree(tmp_path: Path) -> None:
    src = make_corpus(tmp_path / "in", 60)
    data, log = tmp_path / "data", tmp_path / "log"
    run_cli("batch", str(src), "-d", str(data), "-l", str(log), "--no-progress", "-j", "2")
    rows = index_rows(log / INDEX)
    assert len(rows) == 60
    assert rows == tree_rows(data)
    with sqlite_db(log / INDEX) as conn:
        (journal,) = conn.execute("PRAGMA journal_mode").fetchone()
        sources = {r[0] for r in conn.execute("SELECT source FROM instances")}
    assert journal == "wal"
    assert sources == {str(p) for p in src.rglob("*.dcm")}


@pytest.mark.slow
def test_many_concurrent_per_instance_processes_lose_no_row(tmp_path: Path) -> None:
    """storescp -xcr starts one process per instance, many at once: every one of them
    writes its row; the index stays sound and equals the tree."""
    src = make_corpus(tmp_path / "in", CONCURRENT, patients=4, studies=2, series=4)
    files = sorted(src.rglob("*.dcm"))
    data, log = tmp_path / "data", tmp_path / "log"
    exe = dicom_repack_exe()
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            [exe, "--xcrdirfile", str(f), "-d", str(data), "-l", str(log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for f in files
    ]
    finished = [(p.communicate()[1], p.returncode) for p in procs]  # closes every pipe
    errors = [err for err, status in finished if status != 0]
    assert not errors, errors[:3]
    rows = index_rows(log / INDEX)
    assert len(rows) == len(files)
    assert rows == tree_rows(data)
    print(f"{len(files)} concurrent per-instance processes in {time.monotonic() - t0:.1f} s")


def test_refiling_replaces_the_row_and_flags_choose_the_index(tmp_path: Path) -> None:
    src = make_corpus(tmp_path / "in", 6, patients=1, studies=1, series=1)
    f = sorted(src.rglob("*.dcm"))[0]
    data, log = tmp_path / "data", tmp_path / "log"
    run_cli("--xcrdirfile", str(f), "-d", str(data), "-l", str(log))
    fold(log / INDEX)
    with sqlite_db(log / INDEX) as conn:
        (first,) = conn.execute("SELECT filed_at FROM instances").fetchone()
    run_cli("--xcrdirfile", str(f), "-d", str(data), "-l", str(log))
    fold(log / INDEX)
    with sqlite_db(log / INDEX) as conn:
        rows = conn.execute("SELECT filed_at FROM instances").fetchall()
    assert len(rows) == 1 and rows[0][0] > first

    elsewhere = tmp_path / "var" / "idx.sqlite"
    run_cli("batch", str(src), "-d", str(tmp_path / "d2"), "-l", str(tmp_path / "l2"),
            "--index", str(elsewhere), "--no-progress")  # fmt: skip
    assert len(index_rows(elsewhere)) == 6
    assert not (tmp_path / "l2" / INDEX).exists()
    run_cli("batch", str(src), "-d", str(tmp_path / "d3"), "-l", str(tmp_path / "l3"),
            "--no-index", "--no-progress")  # fmt: skip
    run_cli("--xcrdirfile", str(f), "-d", str(tmp_path / "d3"), "-l", str(tmp_path / "l3"),
            "--no-index")  # fmt: skip
    assert not [p for p in (tmp_path / "l3").iterdir() if p.name.startswith(INDEX)]


def test_an_index_that_cannot_be_written_fails_the_instance_and_keeps_the_source(
    tmp_path: Path,
) -> None:
    src = make_corpus(tmp_path / "in", 2, patients=1, studies=1, series=1)
    f = sorted(src.rglob("*.dcm"))[0]
    before = f.read_bytes()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    data = tmp_path / "data"
    proc = run_cli("--xcrdirfile", str(f), "-d", str(data), "-l", str(tmp_path / "log"),
                   "--index", str(blocker / "idx.sqlite"), "--cleanup", check=False)  # fmt: skip
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert str(f) in line and "index" in line
    assert f.read_bytes() == before
    assert not list(data.rglob("*.dcm"))


def test_rebuild_restores_the_index_from_the_tree(tmp_path: Path) -> None:
    src = make_corpus(tmp_path / "in", 30)
    data, log = tmp_path / "data", tmp_path / "log"
    run_cli("batch", str(src), "-d", str(data), "-l", str(log), "--no-progress")
    want = index_rows(log / INDEX)
    with sqlite_db(log / INDEX) as conn:
        sources = dict(conn.execute("SELECT sop_instance_uid, source FROM instances"))

    # rows lost, a file removed by hand: the rebuild keeps what it can, drops what is gone
    # (the file and the rows are chosen by name, not by directory or table order: the
    # removed file's row must be one the rebuild finds stale, never one of the five lost)
    gone = min(data.rglob("*.dcm"))
    gone_sop = str(pydicom.dcmread(gone, stop_before_pixels=True).SOPInstanceUID)
    gone.unlink()
    with sqlite_db(log / INDEX) as conn:
        conn.execute(
            "DELETE FROM instances WHERE sop_instance_uid IN (SELECT sop_instance_uid "
            "FROM instances WHERE sop_instance_uid != ? ORDER BY sop_instance_uid LIMIT 5)",
            (gone_sop,),
        )
    proc = run_cli("index", "--rebuild", "-d", str(data), "-l", str(log))
    assert "29 instances indexed" in proc.stdout and "1 stale rows removed" in proc.stdout
    got = index_rows(log / INDEX)
    del want[gone_sop]
    assert got == want == tree_rows(data)
    with sqlite_db(log / INDEX) as conn:
        kept = dict(conn.execute("SELECT sop_instance_uid, source FROM instances"))
    assert sum(kept[k] == sources[k] for k in kept) >= 24  # rows that were never lost keep theirs

    # a damaged index is set aside and rebuilt
    for p in log.glob(INDEX + "*"):
        if p.is_file() and not p.name.endswith(".sop-lock"):  # the index and its WAL files
            p.unlink()
    (log / INDEX).write_bytes(b"this is not a database" * 100)
    proc = run_cli("index", "--rebuild", "-d", str(data), "-l", str(log))
    assert "set aside" in proc.stderr
    assert index_rows(log / INDEX) == tree_rows(data)
    assert list(log.glob(INDEX + ".damaged-*"))


def test_status_json_has_the_corpus_shape(tmp_path: Path) -> None:
    src = make_corpus(tmp_path / "in", 60, patients=2, studies=2, series=3)
    data, log = tmp_path / "data", tmp_path / "log"
    run_cli("batch", str(src), "-d", str(data), "-l", str(log), "--no-progress")
    doc = json.loads(run_cli("status", "-l", str(log), "--json").stdout)
    assert doc["totals"] == {
        "patients": 2,
        "studies": 4,
        "series": 12,
        "instances": 60,
        "bytes": sum(p.stat().st_size for p in data.rglob("*.dcm")),
    }
    for patient in doc["patients"]:
        assert len(patient["studies"]) == 2
        for study in patient["studies"]:
            assert len(study["series"]) == 3
            for series in study["series"]:
                assert series["instances"] == 5
                assert Path(series["folder"]).is_dir()
                assert len(list(Path(series["folder"]).glob("*.dcm"))) == 5
                assert series["state"] in ("receiving", "complete")
    # quiet longer than the series-idle period: complete
    doc = json.loads(run_cli("status", "-l", str(log), "--json", "--series-idle", "0").stdout)
    assert all(s["complete"] for p in doc["patients"] for st in p["studies"] for s in st["series"])

    one = doc["patients"][0]
    study = one["studies"][0]
    by_patient = json.loads(
        run_cli("status", "-l", str(log), "--json", "--patient-id", one["PatientID"]).stdout
    )
    assert by_patient["totals"]["instances"] == 30
    by_accession = json.loads(
        run_cli("status", "-l", str(log), "--json", "--accession", study["AccessionNumber"]).stdout
    )
    assert by_accession["totals"]["studies"] == 1
    assert by_accession["totals"]["instances"] == 15
    uid = study["StudyInstanceUID"]
    by_study = json.loads(
        run_cli("status", "--index", str(log / INDEX), "--json", "--study-uid", uid).stdout
    )
    assert by_study["patients"][0]["studies"][0]["StudyInstanceUID"] == study["StudyInstanceUID"]

    def studies_on(date: str) -> int:
        doc = json.loads(run_cli("status", "-l", str(log), "--json", "--date", date).stdout)
        return int(doc["totals"]["studies"])

    assert studies_on(study["StudyDate"]) >= 1
    assert studies_on("19000101") == 0
    assert studies_on("20000101-20991231") == studies_on("20000101-") == 4
    future = json.loads(run_cli("status", "-l", str(log), "--json", "--since", "2999-01-01").stdout)
    assert future["totals"]["instances"] == 0

    table = run_cli("status", "-l", str(log)).stdout
    assert "60 instances" in table and one["PatientID"] in table


def test_status_expected_count_marks_a_short_series_incomplete(tmp_path: Path) -> None:
    src = make_corpus(tmp_path / "in", 5, patients=1, studies=1, series=1)
    for p in src.rglob("*.dcm"):
        ds = pydicom.dcmread(p)
        ds.ImagesInAcquisition = 8
        ds.save_as(p)
    data, log = tmp_path / "data", tmp_path / "log"
    run_cli("batch", str(src), "-d", str(data), "-l", str(log), "--no-progress")
    doc = json.loads(run_cli("status", "-l", str(log), "--json", "--series-idle", "0").stdout)
    (series,) = doc["patients"][0]["studies"][0]["series"]
    assert (series["instances"], series["expected"], series["state"]) == (5, 8, "incomplete")


def test_status_without_an_index_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("status", "-l", str(tmp_path), check=False)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "no index" in proc.stderr
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("bad", [["--date", "2024"], ["--since", "yesterday-ish"]])
def test_status_bad_filters_are_usage_errors(tmp_path: Path, bad: list[str]) -> None:
    proc = run_cli("status", "-l", str(tmp_path), *bad, check=False)
    assert proc.returncode == 2
