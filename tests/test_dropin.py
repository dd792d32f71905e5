"""Differences from rx-repack that are not about names or records (issue 20): a damaged
file after the 'DICM' marker, the order batch walks folders in (hence which instance the
series header dump comes from), and files rx-repack never leaves behind."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from helpers import read_records, run_cli, write_set


def test_dicm_then_garbage_is_not_dicom(tmp_path: Path) -> None:
    """'DICM' then bytes that are no file meta group: one line saying it is not DICOM
    (damaged), not "missing PatientID..."; batch counts it as skipped (not DICOM)."""
    src = tmp_path / "in"
    src.mkdir()
    bad = src / "bad.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"hello, no meta group here " * 40)
    data = tmp_path / "data"
    proc = run_cli("-p", str(src), "-f", bad.name, "-d", str(data), check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"dicom-repack: {bad}: not DICOM (damaged after the 'DICM' marker: no file meta group)"
    ]
    proc = run_cli("batch", str(src), "-d", str(data), "--no-progress", check=False)
    assert proc.returncode == 0, proc.stderr
    assert "0 instances filed" in proc.stdout and "1 skipped (not DICOM)" in proc.stdout
    assert bad.read_bytes().startswith(b"\0" * 128 + b"DICM")  # untouched
    assert not data.exists() or not any(data.rglob("*.dcm"))


def _shuffled_copy(files: list[Path], dest: Path) -> list[str]:
    """Copy ``files`` into ``dest`` and two subfolders, created in reverse name order
    (so that a folder's listing order is not its name order); their names in name order."""
    names = []
    for i, f in enumerate(files):
        sub = ("a-sub/" if i % 3 == 1 else "b-sub/" if i % 3 == 2 else "") + f.name
        names.append(sub)
    for rel in reversed(sorted(names)):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files[[f.name for f in files].index(Path(rel).name)], dest / rel)
    return sorted(names)


def test_batch_walks_each_folder_in_name_order(tmp_path: Path) -> None:
    files = write_set("mr-implicit", tmp_path / "gen")
    src = tmp_path / "in"
    names = _shuffled_copy(files, src)
    out = tmp_path / "lines.ndjson"
    run_cli("batch", str(src), "-d", str(tmp_path / "data"), "-j", "1", "--no-progress",
            "--no-index", f"--log-ndjson={out}")  # fmt: skip
    got = [json.loads(x)["src"] for x in out.read_text().splitlines()]
    # a folder's entries in name order, a subfolder at its place: what `sorted` gives here
    assert [os.path.relpath(p, src) for p in got] == names


def test_series_dump_is_the_same_whichever_door_filed_the_series(tmp_path: Path) -> None:
    """The series record dumps the header of the series' first instance; in a given order
    (names), the per-instance door and batch dump the same instance."""
    files = write_set("mr-explicit", tmp_path / "gen")
    src = tmp_path / "in"
    names = _shuffled_copy(files, src)
    one, batch = tmp_path / "one", tmp_path / "batch"
    one.mkdir()
    batch.mkdir()
    for rel in names:
        run_cli("--xcrdirfile", str(src / rel), "-d", str(one / "data"), "-l", str(one / "log"),
                "--no-index")  # fmt: skip
    run_cli("batch", str(src), "-d", str(batch / "data"), "-l", str(batch / "log"), "-j", "1",
            "--no-progress", "--no-index")  # fmt: skip
    a = read_records(one / "log", str((one / "data").resolve()))
    b = read_records(batch / "log", str((batch / "data").resolve()))
    dumps = [rel for rel in a if "-series/" in rel]
    assert len(dumps) == 3
    for rel in dumps:
        assert a[rel] == b[rel], rel


# -- files rx-repack never leaves --------------------------------------------------------


def test_listen_leaves_no_spool_folder_and_no_wal_after_a_clean_stop(tmp_path: Path) -> None:
    """Instances spooled to disk (--spill-above 1) and indexed: once listen stops
    cleanly, neither the spool folder nor SQLite's -wal/-shm are left (the spool folder
    goes when empty; each association closes its index connections)."""
    from test_listen_support import filed, listening, pynetdicom_send

    files = write_set("mr-implicit", tmp_path / "in")[:4]
    data, log = tmp_path / "data", tmp_path / "log"
    for workers in ("1", "2"):
        with listening(data, "-l", str(log), "--spill-above", "1", "--workers", workers) as lis:
            assert pynetdicom_send(lis.port, files) == [0] * len(files)
            assert lis.stop() == 0
        assert f"{len(files)} spooled to disk" in lis.stderr
        assert len(filed(data)) == len(files)
        assert not (data / ".dicom-repack-incoming").exists()
        left = sorted(p.name for p in log.iterdir() if p.name.startswith("dicom-repack-index"))
        assert not [n for n in left if n.endswith(("-wal", "-shm"))], left


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_status_reads_a_read_only_log_folder_without_writing(tmp_path: Path) -> None:
    """status on a log folder it may not write (a read-only bind mount: tests run as
    root): the folded rows and the per-instance door's pending rows, nothing written;
    where it may write, it folds the pending rows as before."""
    import subprocess

    import pytest

    files = write_set("mr-implicit", tmp_path / "in")
    data, log = tmp_path / "data", tmp_path / "log"
    run_cli("batch", str(tmp_path / "in" / files[0].name), str(tmp_path / "in" / files[1].name),
            "-d", str(data), "-l", str(log), "--no-progress")  # fmt: skip
    for f in files[2:5]:  # the per-instance door leaves its rows pending
        run_cli("--xcrdirfile", str(f), "-d", str(data), "-l", str(log))
    assert any(p.name.endswith(".pending") for p in log.iterdir()), sorted(log.iterdir())
    before = _snapshot(log)
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "--bind", str(log), str(ro)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here (mount --bind needs root)")
    try:
        mounted = subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True)
        assert mounted.returncode == 0, mounted.stderr
        assert not os.access(ro, os.W_OK)
        proc = run_cli("status", "-l", str(ro), "--json")
        doc = json.loads(proc.stdout)
        assert doc["totals"]["instances"] == 5, doc["totals"]
        assert _snapshot(log) == before  # nothing folded, nothing written
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    proc = run_cli("status", "-l", str(log), "--json")  # writable: folds
    assert json.loads(proc.stdout)["totals"]["instances"] == 5
    assert not any(p.name.endswith(".pending") for p in log.iterdir())


# -- --layout px: px-repack's names and records ------------------------------------------


def test_px_layout_files_and_records_the_dropin_set_as_px_repack(tmp_path: Path) -> None:
    """Under --layout px the character sets and the empty elements follow px-repack 3.12.6
    (tests/expected/px-repack/dropin): ISO 2022 names decoded (``Yamada_Tarou_``), an empty
    PatientBirthDate ``""`` and an empty SeriesNumber ``"None"`` in the records. The one
    difference is px-repack's mispairing of an absent element with the next template
    function (docs/records.md): its ``_seahash_7_SeriesInstanceUID`` is our hash."""
    from helpers import EXPECTED, read_expected_records, read_tree_tsv, tree

    expected = EXPECTED / "px-repack" / "dropin"
    src = tmp_path / "in"
    files = write_set("dropin", src)
    data, log = tmp_path / "data", tmp_path / "log"
    for f in files:
        run_cli("-p", str(src), "-f", f.name, "-d", str(data), "-l", str(log), "--layout", "px",
                "--no-index")  # fmt: skip

    def unmispaired(text: str) -> str:
        return text.replace(
            "_SeriesDescription-_seahash_7_SeriesInstanceUID", "_SeriesDescription-ffc0818"
        )

    assert tree(data) == {
        unmispaired(k): v for k, v in read_tree_tsv(expected / "data-tree.tsv").items()
    }
    ours = read_records(log, str(data.resolve()))
    px = read_expected_records(expected / "log")
    assert sorted(ours) == sorted(px)
    for rel, record in px.items():
        if "-series/" in rel:
            continue  # the dumps: tests/test_parity.py holds them equal on the shared corpora
        assert ours[rel] == json.loads(unmispaired(json.dumps(record))), rel
    (empty,) = [r for rel, r in ours.items() if rel == "patientData/DROPIN-e01-empty.json"]
    assert empty["DROPIN-e01-empty"]["PatientBirthDate"] == ""  # type: ignore[index]


# -- the records' rx semantics, at the library's level ----------------------------------


def test_record_writer_rx_writes_empty_and_absent_elements_as_rx_repack(tmp_path: Path) -> None:
    """RecordWriter(rx=True) (what the rx layout's Repacker uses) writes rx-repack's records
    for elements present but empty, and ``Written.missing`` is rx-repack's ``missing``
    (tests/expected/rx-repack/dropin). The console-script tests of the same are in
    test_rx_parity.py."""
    from dicom_repack.core.header import read_header
    from dicom_repack.core.records import RECORD_KEYWORDS, RecordWriter, Written
    from helpers import EXPECTED

    rx = EXPECTED / "rx-repack" / "dropin"
    rx_lines = [json.loads(x) for x in (rx / "outcomes.ndjson").read_text().splitlines()]
    files = write_set("dropin", tmp_path / "in")
    log = tmp_path / "log"
    writer = RecordWriter(str(log), rx=True)
    for f, line in zip(files, rx_lines, strict=True):
        if not f.name.startswith("e0"):
            continue
        header = read_header(f, RECORD_KEYWORDS)
        written = Written()
        name = Path(line["dst"]).name  # rx-repack's file name: its image record's name
        writer.write(header.values, series_base_dir="/d", file_name=name, stat=f.stat(),
                     dump=dict, origin=str(f), written=written)  # fmt: skip
        want = [(m["tag"], m["name"], m["error"]) for m in line.get("missing", [])]
        assert written.missing == want, f.name
    for name in ("DROPIN-e01-empty", "DROPIN-e02-absent"):
        ours = json.loads((log / "patientData" / f"{name}.json").read_text())
        theirs = json.loads((rx / "log" / "patientData" / f"{name}.json").read_text())
        assert ours == theirs, name
    assert len(list((log / "seriesData").glob("*-img/*.json"))) == 3
    for image in (log / "seriesData").glob("*-img/*.json"):
        ((_, ours),) = json.loads(image.read_text()).items()
        ((_, theirs),) = json.loads((rx / "log" / image.relative_to(log)).read_text()).items()
        del ours["imageObj"], theirs["imageObj"], ours["outputFile"], theirs["outputFile"]
        assert ours == theirs, image.name
