"""`dicom-repack bench` and `dicom-repack corpus`, tested from the outside.

What a user would notice: the corpus is what was asked for (and the same for the same
seed); every contestant is in results.json with its figures and correctness; a
contestant that loses or damages an instance is FAILED whatever its speed; the
report has its charts and ratios; Ctrl-C keeps what finished. Tiny corpora, one
repetition, no timing thresholds, no network.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("psutil")
pytest.importorskip("matplotlib")

from dicom_repack.bench import cli as bench_cli
from dicom_repack.bench import corpus as corpus_mod
from dicom_repack.bench.energy import detect_rapl
from dicom_repack.bench.measure import run_tree

PROGRAM = str(Path(sys.executable).parent / "dicom-repack")


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.dcm"))
    }


# -- corpus -----------------------------------------------------------------------------


def test_corpus_has_the_asked_size_fresh_uids_and_is_reproducible(tmp_path: Path) -> None:
    import pydicom

    spec = corpus_mod.CorpusSpec(instances=20)
    a = corpus_mod.generate_corpus(tmp_path / "a", spec)
    corpus_mod.generate_corpus(tmp_path / "b", spec)
    # the default protocol starts with a 3-instance localizer, then a long T1 series (cut)
    assert a.instances == 20 and (a.patients, a.studies, a.series) == (1, 1, 2)
    files = corpus_mod.find_instances(tmp_path / "a")
    assert len(files) == 20  # corpus.json is not counted
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")  # same seed, same bytes

    sops = set()
    series = set()
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        sops.add(ds.SOPInstanceUID)
        series.add(ds.SeriesInstanceUID)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert len(ds.SOPInstanceUID) <= 64
    assert len(sops) == 20 and len(series) == 2

    other = corpus_mod.generate_corpus(tmp_path / "c", corpus_mod.CorpusSpec(instances=20, seed=1))
    assert other.instances == 20
    assert _tree_digest(tmp_path / "c").values() != _tree_digest(tmp_path / "a").values()


def test_default_corpus_looks_like_mr_phantom_studies(tmp_path: Path) -> None:
    """MR-sized instances with a vendor private block, sequences and 16-bit pixels of
    typical MR matrices; protocols with a 3-instance localizer beside long series."""
    import pydicom

    from dicom_repack.bench.phantom import plan_series

    plans = plan_series(480, None)
    lengths = [p.instances for p in plans]
    assert sum(lengths) == 480 and lengths[0] == 3 and max(lengths) >= 100
    assert len({p.patient for p in plans}) >= 2 and len({(p.patient, p.study) for p in plans}) >= 3
    big = plan_series(None, 10 * 10**9)
    assert len({p.patient for p in big}) > 20  # patients are added until the size is reached

    rc = subprocess.run(
        [PROGRAM, "corpus", str(tmp_path / "c"), "--instances", "130", "-q"], check=False
    ).returncode
    assert rc == 0
    files = corpus_mod.find_instances(tmp_path / "c")
    sizes = [f.stat().st_size for f in files]
    assert all(100_000 <= n <= 500_000 for n in sizes)
    matrices = set()
    for f in files[:: len(files) // 6]:
        ds = pydicom.dcmread(f)
        assert ds.Modality == "MR" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert ds.BitsAllocated == 16 and len(ds.PixelData) == ds.Rows * ds.Columns * 2
        assert ds.private_block(0x0029, "SIEMENS CSA HEADER")[0x20].value  # the CSA blob
        assert len(ds.RequestAttributesSequence) == 2
        matrices.add(ds.Rows)
    assert matrices <= {256, 320, 384}
    manifest = json.loads((tmp_path / "c" / "corpus.json").read_text())
    assert manifest["kind"] == "synthetic MR phantoms" and manifest["series_lengths"][0] == 3


def test_corpus_command_grows_a_seed_folder_to_a_size(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    corpus_mod.generate_corpus(seeds, corpus_mod.CorpusSpec(instances=3, patients=1))
    (seeds / "README.md").write_text("not DICOM")
    out = tmp_path / "grown"
    rc = corpus_mod.main([str(out), "--from", str(seeds), "--size", "200kB", "-q"])
    assert rc == 0
    manifest = json.loads((out / "corpus.json").read_text())
    assert manifest["bytes"] >= 200_000
    assert len(corpus_mod.find_instances(out)) == manifest["instances"]


def test_parse_size() -> None:
    assert corpus_mod.parse_size("76GB") == 76 * 10**9
    assert corpus_mod.parse_size("1.5GiB") == int(1.5 * 2**30)
    assert corpus_mod.parse_size("500") == 500
    with pytest.raises(ValueError):
        corpus_mod.parse_size("lots")


# -- measurement ---------------------------------------------------------------------------


def test_run_tree_counts_grandchildren_cpu(tmp_path: Path) -> None:
    """The tree's CPU includes processes started by the root's children, and the summed
    RSS is sampled; each grandchild reports its own CPU so the check needs no threshold."""
    work = (
        "import resource; sum(i * i for i in range(3 * 10**6)); "
        "u = resource.getrusage(resource.RUSAGE_SELF); print(u.ru_utime + u.ru_stime)"
    )
    report = tmp_path / "cpu.txt"
    script = f"{sys.executable} -c '{work}' >> {report} & {sys.executable} -c '{work}' >> {report} & wait"
    m = run_tree(["sh", "-c", f'sh -c "{script}"'], sample_interval=0.02)
    own = sum(float(x) for x in report.read_text().split())
    assert m.exit_code == 0
    assert m.cpu_s >= own * 0.999
    assert m.max_process_rss_bytes > 0


def test_rapl_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert detect_rapl(tmp_path / "nothing")[0] == "absent"
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "energy_uj").write_text("123\n")
    assert detect_rapl(tmp_path) == ("readable", None)

    real_open = open

    def deny(path: object, *args: object, **kwargs: object) -> object:
        if str(path).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", deny)
    state, hint = detect_rapl(tmp_path)
    assert state == "unreadable"
    assert hint is not None and "chmod -R a+r /sys/class/powercap/intel-rapl" in hint


# -- the bench ------------------------------------------------------------------------------


def _bench(tmp_path: Path, *extra: str, name: str = "out") -> tuple[int, Path]:
    out = tmp_path / name
    argv = [
        "--instances",
        "20",
        "--repeat",
        "1",
        "--concurrency",
        "4",
        "--out",
        str(out),
        "--workdir",
        str(tmp_path / "work"),
        "-q",
        *extra,
    ]
    return bench_cli.main(argv), out


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    """One real bench over every contestant available here, with CodeCarbon (px-repack
    only if it is installed: no setup at test time)."""
    tmp = tmp_path_factory.mktemp("bench")
    return _bench(tmp, "--no-setup")


@pytest.mark.slow
def test_bench_reports_every_contestant_correct(full_run: tuple[int, Path]) -> None:
    rc, out = full_run
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is True
    names = {c["name"] for c in results["contestants"]}
    assert {
        "px-repack",
        "rx-repack",
        "dicom-repack",
        "batch-copy",
        "batch-move",
        "listen",
        "storescp-rx-repack",
        "storescp-dicom-repack",
    } <= names
    for c in results["contestants"]:
        if not c["available"]:
            assert c["skip_reason"]  # says why, e.g. "px-repack not found on PATH ..."
    ran = {r["contestant"] for r in results["runs"]}
    assert ran == {c["name"] for c in results["contestants"] if c["available"]}
    assert {"dicom-repack", "batch-copy", "batch-move"} <= ran
    for run in results["runs"]:
        assert run["status"] == "ok", run["problems"]
        assert run["correct"] is True
        assert run["missing"] == 0 and run["damaged"] == 0
        assert run["records"] > 0 and run["records_unparseable"] == 0
        assert run["wall_s"] > 0 and run["cpu_s"] > 0
        assert run["peak_tree_rss_bytes"] > 0
        assert run["instances"] == 20
        assert run["energy_kwh"] is not None and run["co2_kg"] is not None
    assert results["corpus"]["instances"] == 20
    assert results["machine"]["logical_cpus"]
    assert results["energy_method"]["rapl"] in ("readable", "unreadable", "absent")
    assert results["energy_method"]["summary"]
    assert "warm cache" in results["settings"]["cache"]
    # the disk's file-creation cost is on record, and no run tree outlived the bench
    assert results["settings"]["file_creation_us_before"] > 0
    assert results["settings"]["file_creation_us_after"] > 0
    assert results["settings"]["runs_deleted_between_runs"] == 0
    assert not any((out.parent / "work").iterdir())


def test_run_trees_are_set_aside_and_deleted_now_only_when_room_is_short(tmp_path: Path) -> None:
    from dicom_repack.bench.scratch import Scratch

    for reserve, kept in ((0, True), (1 << 62, False)):
        work = tmp_path / f"work-{kept}"
        root = work / "runs" / "batch-copy-1"
        (root / "data").mkdir(parents=True)
        (root / "data" / "x.dcm").write_bytes(b"x")
        scratch = Scratch(work, reserve_bytes=reserve)
        scratch.set_aside(root)
        assert not root.exists()
        assert (work / "trash" / "batch-copy-1" / "data" / "x.dcm").exists() is kept
        assert scratch.deleted_between_runs == (0 if kept else 1)


def test_emptied_run_trees_keep_their_files_at_zero_bytes(tmp_path: Path) -> None:
    from dicom_repack.bench.scratch import Scratch

    work = tmp_path / "work"
    root = work / "runs" / "listen-1"
    (root / "data" / "a").mkdir(parents=True)
    (root / "data" / "a" / "x.dcm").write_bytes(b"x" * 4096)
    (root / "data" / "link").symlink_to(tmp_path / "outside")
    (tmp_path / "outside").write_bytes(b"keep")
    scratch = Scratch(work, empty_files=True)
    scratch.set_aside(root)
    kept = work / "trash" / "listen-1" / "data" / "a" / "x.dcm"
    assert kept.exists() and kept.stat().st_size == 0
    assert (tmp_path / "outside").read_bytes() == b"keep"  # a link is not followed
    assert scratch.deleted_between_runs == 0


@pytest.mark.slow
def test_bench_ratios_against_px_or_the_slowest(full_run: tuple[int, Path]) -> None:
    _, out = full_run
    summary = json.loads((out / "results.json").read_text())["summary"]
    rows = {r["contestant"]: r for r in summary["contestants"]}
    base = summary["baseline"]
    assert base in rows
    if "px-repack" not in rows:
        assert "slowest" in summary["baseline_basis"]
        assert all(r["speedup"] >= 1.0 for r in rows.values())
    assert rows[base]["speedup"] == pytest.approx(1.0)
    for r in rows.values():
        assert r["scaled_76GB"]["by_bytes"]["wall_s"] > r["wall_s"]
        assert r["scaled_76GB"]["by_instances"]["cpu_s"] > r["cpu_s"]
        assert r["per_instance"]["cpu_s"] == pytest.approx(r["cpu_s"] / 20)


@pytest.mark.slow
def test_bench_writes_csv_emissions_and_report(full_run: tuple[int, Path]) -> None:
    _, out = full_run
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    results = json.loads((out / "results.json").read_text())
    assert len(rows) == len(results["runs"])
    assert {"wall_s", "cpu_s", "peak_tree_rss_bytes", "energy_kwh", "co2_kg", "correct"} <= set(
        rows[0]
    )
    assert rows[0]["corpus_instances"] == "20"
    assert (out / "emissions.csv").read_text().count("\n") >= len(
        rows
    ) + 1  # header + a row per run

    html = (out / "report.html").read_text()
    assert html.count("src='data:image/png;base64,") == 5  # wall, CPU, energy, ratios, memory
    assert "http://" not in html and "https://" not in html  # nothing fetched at view time
    assert "as published" in html and "4.8 h" in html and "1.74 kWh" in html
    assert "PUBLISHED" in html and "by instance count" in html and "by bytes" in html
    assert "× px-repack" in html and "× rx-repack" in html
    assert "whole tree at one moment" in html and "largest single process" in html
    assert html.count("<tr class='contestant'>") == len({r["contestant"] for r in results["runs"]})
    assert "synthetic MR phantoms" in html


@pytest.mark.slow
def test_a_contestant_that_loses_or_damages_an_instance_fails(tmp_path: Path) -> None:
    """Two fakes: one silently drops one instance, one truncates each output by a byte.
    Both exit 0 like a correct program, and both must be reported FAILED."""
    drop = (
        'lossy=sh -c \'case "$0/$1" in */P0001/ST01/SE001/IM000001.dcm) exit 0;; esac; '
        f'exec {PROGRAM} --xcrdir "$0" --xcrfile "$1" --datadir "$2" --logdir "$3"\' '
        "{xcrdir} {xcrfile} {datadir} {logdir}"
    )
    truncate = (
        "damaging=sh -c '"
        f'dst=$({PROGRAM} --xcrdir "$0" --xcrfile "$1" --datadir "$2" --logdir "$3" --log-ndjson '
        f'| {sys.executable} -c "import json,sys; print(json.loads(sys.stdin.readline())[\\"dst\\"])"); '
        'truncate -s -1 "$dst"\' {xcrdir} {xcrfile} {datadir} {logdir}'
    )
    rc, out = _bench(
        tmp_path,
        "--only",
        "batch-copy,lossy,damaging",
        "--per-instance",
        drop,
        "--per-instance",
        truncate,
        "--no-energy",
    )
    assert rc == 1
    results = json.loads((out / "results.json").read_text())
    runs = {r["contestant"]: r for r in results["runs"]}
    assert runs["batch-copy"]["status"] == "ok"
    assert runs["lossy"]["status"] == "failed"
    assert runs["lossy"]["missing"] == 1
    assert any("missing" in p for p in runs["lossy"]["problems"])
    assert runs["damaging"]["status"] == "failed"
    assert runs["damaging"]["damaged"] == 20
    rows = {r["contestant"]: r for r in results["summary"]["contestants"]}
    assert rows["lossy"]["speedup"] is None  # no ratio for a failed contestant
    assert results["summary"]["baseline"] == "batch-copy"
    assert "FAILED" in (out / "report.html").read_text()


def test_list_and_selection(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_cli.main(["--list"]) == 0
    text = capsys.readouterr().out
    assert "dicom-repack" in text and "batch-move" in text
    with pytest.raises(SystemExit):
        bench_cli.main(["--only", "no-such-contestant", "--list"])


@pytest.mark.slow
def test_bench_on_a_given_corpus_ignores_non_dicom_files(tmp_path: Path) -> None:
    corpus = tmp_path / "given"
    corpus_mod.generate_corpus(corpus, corpus_mod.CorpusSpec(instances=12, patients=1))
    (corpus / "README.md").write_text("not DICOM")
    rc, out = _bench(
        tmp_path, "--corpus", str(corpus), "--only", "batch-copy,dicom-repack", "--no-energy"
    )
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["corpus"]["instances"] == 12
    assert (corpus / "README.md").exists() and len(corpus_mod.find_instances(corpus)) == 12


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_keeps_what_finished(tmp_path: Path) -> None:
    """A slow contestant is interrupted mid-run: the finished run is kept, the bench's
    files are still written, and everything is marked incomplete."""
    out = tmp_path / "out"
    work = tmp_path / "work"
    started = tmp_path / "started"  # made by the slow contestant's first instance
    slow = (
        f'slow=sh -c \'touch {started}; sleep 1; exec {PROGRAM} --xcrdir "$0" --xcrfile "$1" '
        '--datadir "$2" --logdir "$3"\' {xcrdir} {xcrfile} {datadir} {logdir}'
    )
    proc = subprocess.Popen(
        [
            PROGRAM,
            "bench",
            "--instances",
            "20",
            "--repeat",
            "1",
            "--concurrency",
            "1",
            "--only",
            "batch-copy,slow",
            "--per-instance",
            slow,
            "--no-energy",
            "--out",
            str(out),
            "--workdir",
            str(work),
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    # the signal goes once the slow contestant has an instance in hand (not after a guess
    # at how long the bench takes to get there): its driver is running and stops mid-run
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not started.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert started.exists(), "the slow contestant never started an instance"
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output.decode()
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is False
    runs = {r["contestant"]: r for r in results["runs"]}
    assert runs["batch-copy"]["status"] == "ok"
    assert runs["slow"]["status"] == "incomplete"
    assert runs["slow"]["driver"]["stopped"] is True
    assert "INCOMPLETE" in (out / "report.html").read_text()
    assert not list(work.glob("dicom-repack-bench-*"))  # scratch removed without --keep


@pytest.mark.slow
@pytest.mark.skipif(
    not (shutil.which("px-repack") or os.environ.get("PX_REPACK")),
    reason="px-repack not installed (benchmarks/setup-px-repack.sh; or PX_REPACK=path)",
)
def test_px_repack_contestant_is_checked_against_the_px_layout(tmp_path: Path) -> None:
    px = os.environ.get("PX_REPACK") or shutil.which("px-repack") or ""
    rc, out = _bench(tmp_path, "--only", "px-repack,batch-copy", "--px-repack", px, "--no-energy")
    results = json.loads((out / "results.json").read_text())
    runs = {r["contestant"]: r for r in results["runs"]}
    assert runs["px-repack"]["layout"] == "px"
    assert runs["px-repack"]["status"] == "ok", runs["px-repack"]["problems"]
    assert results["summary"]["baseline"] == "px-repack"
    assert rc == 0


def test_find_dcmtk_passes_over_pynetdicoms_same_named_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An activated venv puts pynetdicom's storescu first on PATH; the bench must not feed with it."""
    from dicom_repack.bench.feed import find_dcmtk

    fake = tmp_path / "storescu"
    fake.write_text("#!/bin/sh\necho 'storescu (pynetdicom) 2.1.1'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    found = find_dcmtk("storescu")
    assert found != str(fake)
    if os.path.exists("/usr/bin/storescu"):
        assert found == "/usr/bin/storescu"


def _fake_px_repack(tmp_path: Path) -> Path:
    """A stand-in for px-repack (the real one needs pydicom 2 and a pip install):
    dicom-repack's per-instance door with px-repack's tree."""
    fake = tmp_path / "bin" / "px-repack"
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_text(f'#!/bin/sh\nexec {PROGRAM} --layout px "$@"\n')
    fake.chmod(0o755)
    return fake


@pytest.mark.slow
def test_px_repack_runs_a_sample_scaled_by_instance_count(tmp_path: Path) -> None:
    """px-repack (~0.5 s of CPU per instance) runs on an evenly spaced sample; its row
    is scaled to the corpus by instance count, says so, and keeps the measured figures."""
    fake = _fake_px_repack(tmp_path)
    rc, out = _bench(
        tmp_path,
        "--only",
        "px-repack,batch-copy",
        "--px-repack",
        str(fake),
        "--px-sample",
        "5",
        "--no-energy",
    )
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    runs = {r["contestant"]: r for r in results["runs"]}
    assert runs["px-repack"]["sampled"] is True and runs["px-repack"]["instances"] == 5
    assert runs["px-repack"]["status"] == "ok", runs["px-repack"]["problems"]
    assert runs["batch-copy"]["instances"] == 20 and runs["batch-copy"]["sampled"] is False
    rows = {r["contestant"]: r for r in results["summary"]["contestants"]}
    px = rows["px-repack"]
    assert px["scale"] == pytest.approx(4.0)
    assert px["cpu_s"] == pytest.approx(px["measured"]["cpu_s"] * 4)
    assert px["per_instance"]["cpu_s"] == pytest.approx(px["measured"]["cpu_s"] / 5)
    assert rows["batch-copy"]["vs_px"]["cpu"] == pytest.approx(
        px["cpu_s"] / rows["batch-copy"]["cpu_s"]
    )
    html = (out / "report.html").read_text()
    assert "evenly spaced sample of 5 of the 20 instances" in html
    assert "px-repack, one process per instance *" in html


@pytest.mark.slow
def test_bench_without_px_repack_and_no_index_says_what_to_run(tmp_path: Path) -> None:
    """An offline machine: the setup fails fast, one line says what to run, the others race."""
    empty = tmp_path / "wheels"
    empty.mkdir()
    path = ":".join(
        d
        for d in os.environ.get("PATH", "").split(":")
        if d and not (Path(d) / "px-repack").exists()
    )
    env = dict(
        os.environ,
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(empty),
        PATH=path,
    )
    proc = subprocess.run(
        [PROGRAM, "bench", "--instances", "4", "--repeat", "1", "--only", "px-repack,batch-copy",
         "--no-energy", "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "work"), "-q"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "px-repack could not be set up" in ln]
    assert len(lines) == 1
    assert "pip install 'pypx==3.12.6' 'pydicom>=2.4,<3'" in lines[0]
    assert "setting up px-repack" in proc.stderr  # the progress line came first
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    px = next(c for c in results["contestants"] if c["name"] == "px-repack")
    assert px["available"] is False and "pip install" in px["skip_reason"]
    assert (
        not (tmp_path / "cache" / "dicom-repack" / "px-repack" / "bin" / "px-repack").exists()
        or not (
            tmp_path / "cache" / "dicom-repack" / "px-repack" / ".dicom-repack-setup-complete"
        ).exists()
    )


def test_no_setup_skips_the_install(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PATH="/usr/bin:/bin")
    proc = subprocess.run(
        [PROGRAM, "bench", "--no-setup", "--list"], capture_output=True, text=True, env=env,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0
    assert "px-repack" in proc.stdout and "skip:" in proc.stdout
    assert not (tmp_path / "cache").exists()


def test_rapl_counters_are_read_directly_across_a_wrap(tmp_path: Path) -> None:
    from dicom_repack.bench.energy import RaplReader

    for name, value in (("intel-rapl:0", 900), ("intel-rapl:1", 100), ("intel-rapl:0:0", 5)):
        zone = tmp_path / name
        zone.mkdir()
        (zone / "energy_uj").write_text(f"{value}\n")
        (zone / "max_energy_range_uj").write_text("999\n")
    reader = RaplReader(tmp_path)
    assert len(reader.counters) == 2  # packages only, not their sub-zones
    before = reader.read()
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("100\n")  # wrapped: +200
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("400\n")  # +300
    assert reader.joules(before, reader.read()) == pytest.approx(500e-6)


@pytest.mark.slow
def test_a_patient_record_that_lost_a_study_fails_the_run(tmp_path: Path) -> None:
    """Concurrent writers without a lock (rx-repack at 512 at once) lose studies from a
    patient's StudyList or leave it torn; the run must fail, whatever its speed."""
    from dicom_repack.bench.verify import build_truth, verify_run

    corpus = tmp_path / "corpus"
    corpus_mod.generate_corpus(corpus, corpus_mod.CorpusSpec(instances=232))  # 2 studies of P1
    files = corpus_mod.find_instances(corpus)
    data, log = tmp_path / "data", tmp_path / "log"
    subprocess.run(
        [PROGRAM, "batch", str(corpus), "--datadir", str(data), "--logdir", str(log)],
        check=True,
        capture_output=True,
    )
    truth = build_truth(files, {"rx"})
    assert verify_run(truth, "rx", data, log).ok
    (record,) = (log / "patientData").glob("*.json")
    doc = json.loads(record.read_text())
    (entry,) = doc.values()
    assert len(entry["StudyList"]) == 2
    entry["StudyList"] = entry["StudyList"][:1]
    record.write_text(json.dumps(doc))
    verdict = verify_run(truth, "rx", data, log)
    assert not verdict.ok
    assert any("StudyList" in p for p in verdict.problems)
