"""The first hour (issue 20): each door tried as a new user would, through the console script.

Usage errors are one line and exit 2 in every door; an unusable destination (a
mistyped --datadir, a folder that cannot be written, a busy port) is one line and
exit 1; ``--version`` and ``--help`` work alone; listen takes storescp's spellings.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from helpers import dicom_files, dicom_repack_exe, run_cli
from test_listen_support import close_pipes

#: every door that parses a command line, with arguments that make it a usage error
USAGE_ERRORS: dict[str, list[str]] = {
    "": ["--bogus"],
    "batch": ["in", "--datadir", "d", "--bogus"],
    "listen": ["--datadir", "d", "--bogus"],
    "watch": ["in", "--datadir", "d", "--bogus"],
    "status": ["--logdir", "l", "--bogus"],
    "index": ["--rebuild", "--datadir", "d", "--bogus"],
}


@pytest.mark.parametrize("door", list(USAGE_ERRORS))
def test_a_usage_error_is_one_line_and_exit_2_in_every_door(door: str, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    argv = ([door] if door else []) + USAGE_ERRORS[door]
    proc = run_cli(*argv, check=False, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    prog = f"dicom-repack {door}".strip()
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"{prog}: ") and proc.stderr.endswith("(see --help)\n")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("door", ["", "batch", "listen", "watch", "status", "index"])
def test_version_works_alone_in_every_door(door: str) -> None:
    proc = run_cli(*([door] if door else []), "--version")
    assert proc.stdout.startswith("dicom-repack ") and proc.stdout.count("\n") == 1


def test_top_level_help_lists_every_sub_command() -> None:
    from dicom_repack.cli import SUBCOMMANDS

    text = run_cli("--help").stdout
    for name in SUBCOMMANDS:
        assert f"dicom-repack {name} " in text, name


def test_listen_help_shows_its_defaults() -> None:
    text = " ".join(run_cli("listen", "--help").stdout.split())
    for shown in (
        "(default: 11112)",  # --port
        "(default: DICOM-REPACK)",  # --aet
        "(default: 16)",  # --max-associations
        "(default: 1024)",  # --max-pending
        "(default: 10.0)",  # --acse-timeout
        "(default: 120.0)",  # --network-timeout
        "(default: 30.0)",  # --shutdown-grace
    ):
        assert shown in text, shown
    assert "(default: None)" not in text and "(default: False)" not in text


def test_a_missing_parent_of_the_destination_is_refused_in_every_door(
    tmp_path: Path, mr: Path
) -> None:
    """A mistyped --datadir is not created with its parents: one line, exit 1, nothing
    made; --parents (every door) creates them."""
    typo = tmp_path / "srv" / "dicm" / "data"
    one = str(dicom_files(mr)[0])
    for argv in (
        ["batch", str(mr), "--no-progress"],
        ["listen", "--bind", "127.0.0.1", "--port", "0"],
        ["watch", str(mr)],
        ["--xcrdirfile", one],
    ):
        for flag in ("--datadir", "--logdir"):
            dest = [flag, str(typo)] + (["--datadir", str(tmp_path / "d")] * (flag != "--datadir"))
            proc = run_cli(*argv, *dest, check=False, timeout=60)
            assert proc.returncode == 1, (argv, proc.stderr)
            assert proc.stderr.count("\n") == 1 and "--parents" in proc.stderr, proc.stderr
            assert str(typo.parent) in proc.stderr and "Traceback" not in proc.stderr
            assert not (tmp_path / "srv").exists()
    run_cli("batch", str(mr), "--no-progress", "--datadir", str(typo), "--parents")
    assert any(typo.rglob("*.dcm"))
    run_cli("--xcrdirfile", one, "--datadir", str(tmp_path / "a" / "b"), "--parents")
    assert any((tmp_path / "a" / "b").rglob("*.dcm"))
    run_cli("batch", str(mr), "--no-progress", "--datadir", str(tmp_path / "last"))
    assert any((tmp_path / "last").rglob("*.dcm")), "the last folder alone is still created"


@pytest.mark.parametrize("door", ["listen", "watch"])
def test_a_busy_http_port_is_refused_at_start(door: str, tmp_path: Path) -> None:
    """As a busy DICOM port is: one line, exit 1, nothing served without its page."""
    (tmp_path / "in").mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        first = ["listen", "--bind", "127.0.0.1", "--port", "0"] if door == "listen" else []
        argv = first or ["watch", str(tmp_path / "in")]
        proc = run_cli(
            *argv, "--datadir", str(tmp_path / "d"), "--http", f"127.0.0.1:{port}",
            check=False, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and f"--http on 127.0.0.1:{port}" in proc.stderr
    with socket.socket() as dicom:
        dicom.bind(("127.0.0.1", 0))
        dicom.listen()
        port = dicom.getsockname()[1]
        busy_dicom = run_cli(
            "listen", "--bind", "127.0.0.1", "--port", str(port), "--datadir",
            str(tmp_path / "d"), check=False, timeout=60,
        )  # fmt: skip
    assert busy_dicom.returncode == proc.returncode


def test_listen_takes_storescps_positional_port_and_aet(tmp_path: Path) -> None:
    argv = [dicom_repack_exe(), "listen", "-aet", "STORESCP", "--bind", "127.0.0.1"]
    argv += ["--datadir", str(tmp_path / "d"), "0"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "listening on 127.0.0.1:" in first and " as STORESCP" in first, first
        assert not first.split("listening on 127.0.0.1:")[1].startswith("11112 ")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        close_pipes(proc)
    twice = run_cli("listen", "104", "--port", "105", "--datadir", str(tmp_path / "d"), check=False)
    assert twice.returncode == 2 and twice.stderr.count("\n") == 1


def test_status_fits_80_columns_with_every_header_and_value_whole(
    tmp_path: Path, mr_seed: Path
) -> None:
    from helpers import modified_copy

    long = "t1_mprage_sag_p2_iso_0.9mm_ND_with_a_long_tail"
    (tmp_path / "in").mkdir()
    modified_copy(mr_seed, tmp_path / "in" / "a.dcm", SeriesDescription=long, AccessionNumber="A77")
    run_cli("batch", str(tmp_path / "in"), "--datadir", str(tmp_path / "d"), "--logdir",
            str(tmp_path / "l"), "--no-progress")  # fmt: skip
    env = {**os.environ, "COLUMNS": "80"}
    text = run_cli("status", "-l", str(tmp_path / "l"), env=env).stdout
    lines = [line for line in text.splitlines() if not line.startswith("index ")]  # a path
    assert max(len(line) for line in lines) <= 80, text
    assert "…" not in text
    for header in ("Patient", "Study", "Series", "Instances", "Bytes", "First", "Last", "State"):
        assert header in text, header
    for value in (long, "A77", "1 instances", "receiving"):
        assert value in text, value
    wide = run_cli("status", "-l", str(tmp_path / "l"), "--wide", env=env).stdout
    assert "…" not in wide and long in wide
    assert any(all(h in line for h in ("Patient", "Series", "State")) for line in wide.splitlines())


def test_batch_strict_counts_a_non_dicom_file_once(tmp_path: Path, mr: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.dcm").write_bytes(dicom_files(mr)[0].read_bytes())
    (src / "notes.txt").write_text("hi")
    proc = run_cli("batch", str(src), "--datadir", str(tmp_path / "d"), "--strict",
                   "--no-progress", check=False)  # fmt: skip
    assert proc.returncode == 1
    assert "1 instances filed" in proc.stdout and "1 failed" in proc.stdout
    assert "0 skipped (not DICOM)" in proc.stdout, proc.stdout
    assert proc.stderr.count("\n") == 1 and "notes.txt" in proc.stderr, proc.stderr
    assert "more skipped" not in proc.stderr


def test_batch_over_an_empty_folder_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = run_cli("batch", str(tmp_path / "empty"), "--datadir", str(tmp_path / "d"))
    assert proc.stderr == f"dicom-repack batch: no files found under {tmp_path / 'empty'}\n"


def test_batch_on_a_remote_dask_scheduler_says_at_once_what_it_waits_for(
    tmp_path: Path, mr: Path
) -> None:
    pytest.importorskip("distributed")
    argv = [dicom_repack_exe(), "batch", str(mr), "--datadir", str(tmp_path / "d")]
    proc = subprocess.Popen(
        [*argv, "--dask", "tcp://127.0.0.1:1"], stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # before the 30 s are up
    finally:
        proc.kill()
        proc.wait()
        close_pipes(proc)
    assert (
        first == "dicom-repack batch: waiting up to 30 s for the Dask scheduler at "
        "tcp://127.0.0.1:1\n"
    )


def test_batch_progress_on_a_terminal_shows_the_total_and_an_eta(tmp_path: Path, mr: Path) -> None:
    import pty

    n = len(dicom_files(mr))
    main, sub = pty.openpty()
    env = {**os.environ, "COLUMNS": "100"}
    argv = [dicom_repack_exe(), "batch", str(mr), "--datadir", str(tmp_path / "d"), "-j", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=sub, text=True, env=env)
    os.close(sub)
    screen = b""
    try:
        while chunk := _read_pty(main):
            screen += chunk
    finally:
        os.close(main)
        proc.wait(timeout=60)
        close_pipes(proc)
    text = screen.decode("utf-8", "replace")
    assert f"{n} of {n} files" in text and "ETA" in text, text[-400:]


def _read_pty(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the other side is closed
        return b""


def test_bench_verdict_at_80_columns_shows_spreads_and_a_failed_peer_is_not_our_failure(
    tmp_path: Path,
) -> None:
    """A peer (here a stand-in named rx-repack that drops an instance) fails its own checks:
    the verdict says so and why, the exit status is 0 since dicom-repack's contestant was
    verified; at 80 columns every figure is whole, with its min–max over the rounds."""
    exe = dicom_repack_exe()
    lossy = (
        'rx-repack=sh -c \'case "$0/$1" in */P0001/ST01/SE001/IM000001.dcm) exit 0;; esac; '
        f'exec {exe} --xcrdir "$0" --xcrfile "$1" --datadir "$2" --logdir "$3"\' '
        "{xcrdir} {xcrfile} {datadir} {logdir}"
    )
    proc = run_cli(
        "bench", "--instances", "6", "--repeat", "2", "--concurrency", "2",
        "--only", "batch-copy,rx-repack", "--per-instance", lossy, "--no-energy", "--no-setup",
        "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "work"), "-q",
        env={**os.environ, "COLUMNS": "80"}, check=False, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout + proc.stderr
    assert "…" not in text
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80, proc.stdout
    assert "rx-repack FAILED the checks" in " ".join(text.split())
    assert "tears its pypx records" in " ".join(text.split())
    assert "wall " in proc.stdout and "–" in proc.stdout  # a spread: two rounds
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert all("machine" in run for run in results["runs"])
    batch = next(r for r in results["summary"]["contestants"] if r["contestant"] == "batch-copy")
    low, high = batch["range"]["wall_s"]
    assert low <= batch["wall_s"] <= high


def test_the_headline_names_energy_and_warns_of_a_busy_machine() -> None:
    from dicom_repack.bench import report

    vs = {"speed": 12.0, "cpu": 3.0, "energy": 2.5}
    results = {
        "runs": [{"contestant": "dicom-repack", "interrupted": False}],
        "summary": {
            "baseline_basis": "px-repack",
            "rivals": {},
            "busy_runs": [
                {
                    "contestant": "dicom-repack",
                    "repetition": 1,
                    "others_cores": 1.5,
                    "steal_pct": 0.0,
                    "cores": 2,
                    "busy": True,
                },
            ],
            "contestants": [
                {"contestant": "px-repack", "label": "px", "status": "ok", "wall_s": 12.0},
                {
                    "contestant": "dicom-repack",
                    "label": "dicom-repack",
                    "status": "ok",
                    "wall_s": 1.0,
                    "vs_px": vs,
                    "vs_rx": None,
                },
            ],
        },
    }
    lines = report.headline(results)
    assert any("less energy" in line and "12× faster" in line for line in lines), lines
    assert any(line.startswith("WARNING: the machine was busy") for line in lines), lines


def test_a_stray_byte_before_associating_is_a_dropped_connection(tmp_path: Path) -> None:
    """listen's shutdown summary: a connection that sent one byte (not a request) and was
    answered with A-ABORT never associated: dropped before associating, not aborted."""
    from test_listen_support import listening

    with listening(tmp_path / "data", "--workers", "1") as li:
        with socket.create_connection(("127.0.0.1", li.port), timeout=30) as s:
            s.sendall(b"\x00")
            while s.recv(4096):  # the A-ABORT, then the server closes
                pass
        assert li.stop() == 0
    (summary,) = [line for line in li.stderr.splitlines() if "connections (" in line]
    assert "0 aborted" in summary and "(1 dropped before associating)" in summary, summary


@pytest.mark.chromium
def test_the_live_page_shows_the_service_disk_rate_window_graph_and_open_counts(
    tmp_path: Path, mr: Path
) -> None:
    """listen --workers 2 --http: an open association's instances so far, the rate's
    window, the port, AE title and folders, their free bytes, a rate graph; HEAD works."""
    import urllib.request

    import pydicom

    from dicom_repack.bench.scu import finish, storage_scu
    from test_listen_support import free_port, listening, pause_reactor_atomically, wait_for
    from test_live_page import CHROMIUM, get, page_dom, shown

    files = dicom_files(mr)[:3]
    data, log = tmp_path / "data", tmp_path / "log"
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    with listening(data, "--logdir", str(log), "--http", f"127.0.0.1:{port}", "--workers", "2",
                   "-aet", "ARCHIVE1") as li:  # fmt: skip
        wait_for(lambda: get(base + "healthz") == (200, "ok\n"), what="/healthz")
        head = urllib.request.Request(base + "api/status", method="HEAD")
        with urllib.request.urlopen(head, timeout=10) as resp:
            assert resp.status == 200 and resp.read() == b""
            assert int(resp.headers["Content-Length"]) > 0

        def status() -> dict[str, object]:
            return dict(json.loads(get(base + "api/status")[1]))

        ae = storage_scu("MODALITY1")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        meta = pydicom.dcmread(files[0], stop_before_pixels=True).file_meta
        ae.add_requested_context(str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
        assoc = ae.associate("127.0.0.1", li.port, ae_title="ARCHIVE1")
        try:
            assert assoc.is_established
            pause_reactor_atomically(assoc)
            for f in files:
                assert assoc.send_c_store(f).Status == 0

            def open_count() -> int:
                assocs = status()["associations"]
                assert isinstance(assocs, list)
                return int(assocs[0]["instances"]) if assocs else -1

            wait_for(lambda: open_count() == len(files), what="the open association's count")
        finally:
            finish(assoc)
        doc = status()
        assert doc["rate_window_s"] == 10.0
        about = doc["about"]
        assert isinstance(about, dict)
        assert about["port"] == li.port and about["ae_title"] == "ARCHIVE1"
        assert about["datadir"] == str(data) and about["logdir"] == str(log)
        disk = doc["disk"]
        assert isinstance(disk, list) and {d["folder"] for d in disk} == {"datadir", "logdir"}
        assert all(int(d["free_bytes"]) > 0 for d in disk)
        wait_for(lambda: bool(status()["rate_history"]), what="a point on the rate graph")
        if CHROMIUM is None:
            pytest.skip("chromium is not installed (apt-get install chromium)")
        dom = page_dom(base, tmp_path)
        assert shown(dom, "window") == "(last 10 s)"
        assert "ARCHIVE1" in dom and str(data) in dom and "free in datadir" in dom
        assert int(re.search(r'id="graph"[^>]*data-points="(\d+)"', dom)[1]) >= 1  # type: ignore[index]
        assert li.stop() == 0
