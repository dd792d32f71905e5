"""The per-instance and batch doors from the outside: the flags a hospital's scripts use."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from helpers import EXPECTED, dicom_files, dicom_repack_exe, read_tree_tsv, run_cli


def rx_tree() -> set[str]:
    """The files the real rx-repack 1.0.3 filed from the ``mr`` corpus (tests/expected)."""
    return set(read_tree_tsv(EXPECTED / "rx-repack" / "mr-explicit" / "data-tree.tsv"))


def with_non_dicom(mr: Path, folder: Path) -> Path:
    """A copy of the corpus with a README.md and a LICENSE beside the instances, as
    corpora ship (SAG-anon does): not DICOM, so named and skipped."""
    shutil.copytree(mr, folder)
    (folder / "README.md").write_text("# a corpus\n")
    (folder / "LICENSE").write_text("MIT\n")
    return folder


def filed(data: Path) -> set[str]:
    return {p.relative_to(data).as_posix() for p in data.rglob("*.dcm")}


def test_help_and_version() -> None:
    proc = run_cli("--help")
    for flag in (
        "--xcrdir",
        "--xcrfile",
        "--datadir",
        "--logdir",
        "--cleanup",
        "--log-ndjson",
        "--imageTemplate",
    ):
        assert flag in proc.stdout
    assert run_cli("--version").stdout.startswith("dicom-repack ")
    batch_help = run_cli("batch", "--help").stdout
    assert (
        "--jobs" in batch_help and "--cleanup" in batch_help and "--seriesDirTemplate" in batch_help
    )


def test_usage_errors_exit_2_and_touch_nothing(tmp_path: Path, mr: Path) -> None:
    f = dicom_files(mr)[0]
    for args in (
        ["--xcrdirfile", str(f)],  # no --datadir
        ["--datadir", str(tmp_path / "d")],  # no file
        ["--xcrdirfile", str(f), "--datadir", str(tmp_path / "d"), "--bogus"],
        ["--xcrdirfile", str(f), "--datadir", str(tmp_path / "d"), "--layout", "tree"],
        ["batch", "--datadir", str(tmp_path / "d"), str(tmp_path / "absent")],
    ):
        proc = run_cli(*args, check=False)
        assert proc.returncode == 2, args
        assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("(see --help)\n")
    assert not (tmp_path / "d").exists()


def test_per_instance_ndjson_line(tmp_path: Path, mr: Path) -> None:
    f = dicom_files(mr)[0]
    proc = run_cli("-p", str(mr), "-f", f.name, "-d", str(tmp_path / "data"), "--log-ndjson")
    (line,) = proc.stdout.splitlines()
    rec = json.loads(line)
    assert rec["src"] == str(f)
    # rx-repack leaves "missing" out when empty (no log folder here: nothing recorded)
    assert rec["error"] is None and "missing" not in rec
    assert rec["PatientID"] == "PH1000"
    assert rec["SeriesInstanceUID"] == "2.25.268532539344348507199911521435944942"
    assert Path(rec["dst"]).stat().st_size == rec["size"] == f.stat().st_size


def test_parse_all_files_with_substr_and_jsonargs(tmp_path: Path, mr: Path) -> None:
    """px-repack's own folder mode and its JSON form of the flags."""
    mr = with_non_dicom(mr, tmp_path / "in")
    data = tmp_path / "data"
    run_cli("--xcrdir", str(mr), "--parseAllFilesWithSubStr", "0001-,0002-", "--datadir", str(data))
    assert len(filed(data)) == 2
    args = {"xcrdir": str(mr), "parseAllFilesWithSubStr": ",", "datadir": str(tmp_path / "all")}
    proc = run_cli("--JSONargs", json.dumps(args), check=False)
    assert proc.returncode == 1, "README.md and LICENSE are not DICOM: named, non-zero exit"
    assert "README.md" in proc.stderr and "LICENSE" in proc.stderr
    assert filed(tmp_path / "all") == rx_tree()


def test_batch_reads_paths_from_stdin_and_reports_ndjson(tmp_path: Path, mr: Path) -> None:
    files = dicom_files(mr)
    listing = "".join(f"{p}\n" for p in files)
    proc = subprocess.run(
        [
            dicom_repack_exe(),
            "batch",
            "-",
            "--datadir",
            str(tmp_path / "data"),
            "--log-ndjson",
            "--jobs",
            "2",
        ],
        input=listing,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == len(files)
    assert {r["src"] for r in lines} == {str(p) for p in files}
    assert all(r["error"] is None for r in lines)
    assert f"{len(files)} instances filed" in proc.stderr, (
        "summary goes to stderr when stdout is NDJSON"
    )
    assert filed(tmp_path / "data") == rx_tree()


def test_batch_move_empties_the_source_and_never_walks_its_output(tmp_path: Path, mr: Path) -> None:
    incoming = with_non_dicom(mr, tmp_path / "incoming")
    data = incoming / "packed"  # the output inside the input: must not be walked again
    summary = tmp_path / "summary.json"
    proc = run_cli(
        "batch", str(incoming), "--datadir", str(data), "--cleanup", "--summary-json", str(summary)
    )
    assert "20 instances filed" in proc.stdout
    assert sorted(p.name for p in incoming.iterdir()) == ["LICENSE", "README.md", "packed"]
    assert filed(data) == rx_tree()
    facts = json.loads(summary.read_text())
    assert facts["instances"] == 20 and facts["failed"] == 0 and facts["skipped_not_dicom"] == 2


def test_every_door_says_what_it_could_not_do_in_one_line_with_its_name(
    tmp_path: Path, mr: Path
) -> None:
    """One style for every door (doors/plumbing.py): ``dicom-repack <door>: <message>``
    (the per-instance door: ``dicom-repack: <message>``), one line, exit status 1 when
    the command line is right and the machine says no."""
    data, nowhere = tmp_path / "data", tmp_path / "no-such-folder" / "lines.ndjson"
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    ndjson = ["--log-ndjson", str(nowhere)]
    cases = {
        "": ["--xcrdirfile", str(tmp_path / "gone.dcm"), "-d", str(data)],
        "batch": ["batch", str(mr), "-d", str(data), *ndjson],
        "watch": ["watch", str(empty), "-d", str(data), *ndjson],
        "listen": ["listen", "--bind", "127.0.0.1", "--port", "0", "-d", str(data), *ndjson],
        "status": ["status", "-l", str(empty)],
        "index": ["index", "--rebuild", "-d", str(empty), "--index", str(a_file / "x.sqlite")],
    }
    for door, argv in cases.items():
        proc = run_cli(*argv, check=False)
        prefix = f"dicom-repack {door}: " if door else "dicom-repack: "
        assert proc.returncode == 1, (door, proc.stderr)
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(prefix), (door, proc.stderr)
        assert "error:" not in proc.stderr, (door, proc.stderr)
