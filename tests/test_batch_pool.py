"""The batch door's worker pool (doors/fork_pool.py), from the outside, on real processes.

Ctrl-C, kill -9 of the batch process alone, kill -9 of one worker: each ends the run
(no hang, no traceback, no worker left behind), and a re-run files everything, once.
And a pooled batch starts without multiprocessing's imports.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from dicom_repack.doors import batch_engine
from helpers import dicom_repack_exe, run_cli
from test_dump import pydicom_imports
from test_source_goes_last import assert_filed_once, files_under, sha

#: the paths a pooled batch (--jobs 2) reads before it forks its workers
#: (doors/batch_engine.py: jobs x CHUNK_MAX x 4): the kill tests write these, and a few more,
#: on the batch's stdin, which they keep open, so the batch has work in hand and cannot
#: end before the test has signalled it, however fast or busy the machine
HEAD = 2 * batch_engine.CHUNK_MAX * 4
N = HEAD + 16


#: enough for a pooled batch (more than the 4 a batch files in its own process), for the
#: tests that only need the pool to run
FEW = 40


def _corpus(tmp_path_factory: pytest.TempPathFactory, count: int) -> Path:
    """``count`` small instances (~25 KB: pydicom's CT_small/MR_small as seeds) in 4 patients."""
    import pydicom.data

    seeds = tmp_path_factory.mktemp("seeds")
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(pydicom.data.get_testdata_file(name), seeds / name)  # type: ignore[arg-type]
    out = tmp_path_factory.mktemp("small") / "corpus"
    run_cli("corpus", str(out), "--from", str(seeds), "--instances", str(count), "-q")
    (out / "corpus.json").unlink()
    return out


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """N instances: the kill tests' corpus."""
    return _corpus(tmp_path_factory, N)


@pytest.fixture(scope="module")
def few_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _corpus(tmp_path_factory, FEW)


def _communicate(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """``proc.communicate``; if the batch hangs (the bug these tests catch), its whole
    process group is killed before the test fails, so no batch or worker outlives it."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise


def _start(inbox: Path, tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    """A pooled batch (2 workers) of the paths under ``inbox``, given on its stdin (``batch -``),
    in its own session (process group). Stdin stays open: the batch waits for more paths,
    so it is still running when the test signals it (the test closes stdin when it wants
    the batch to see the end of its input; ``_communicate`` does)."""
    argv = [
        dicom_repack_exe(), "batch", "-", "--datadir", str(tmp_path / "data"),
        "--logdir", str(tmp_path / "log"), "--no-progress", "--jobs", "2", *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    paths = sorted(inbox.rglob("*.dcm"))
    assert len(paths) > HEAD, "fewer paths than the batch reads before it starts its workers"
    assert proc.stdin is not None
    proc.stdin.write("".join(f"{p}\n" for p in paths))
    proc.stdin.flush()
    return proc


def _when_filed(proc: subprocess.Popen[str], data: Path, count: int) -> list[int]:
    """Wait until ``data`` holds ``count`` instances; the batch's worker pids then."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the batch ended with its stdin still open"
        if data.exists() and sum(1 for _ in data.rglob("*.dcm")) >= count:
            workers = [c.pid for c in psutil.Process(proc.pid).children()]
            assert len(workers) == 2, workers
            return workers
        time.sleep(0.005)
    pytest.fail("the batch filed too little in 60 s")


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _wait_until(done: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _rerun_files_everything(
    originals: dict[str, str], inbox: Path, tmp_path: Path, *extra: str
) -> None:
    again = run_cli(
        "batch", str(inbox), "--datadir", str(tmp_path / "data"), "--logdir",
        str(tmp_path / "log"), "--no-progress", "--jobs", "2", *extra,
    )  # fmt: skip
    assert " 0 failed" in again.stdout, again.stdout + again.stderr
    assert_filed_once(originals, tmp_path / "data", tmp_path / "log")


@pytest.fixture()
def inbox(small_corpus: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "in"
    shutil.copytree(small_corpus, copy)
    return copy


@pytest.fixture()
def few(few_corpus: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "in"
    shutil.copytree(few_corpus, copy)
    return copy


@pytest.mark.slow
def test_ctrl_c_ends_the_run_in_one_line_and_reaps_every_worker(
    inbox: Path, tmp_path: Path
) -> None:
    """SIGINT to the process group (a terminal's Ctrl-C): exit 130, one line, no traceback,
    no worker left, no half-written file; every source is in the input or filed; a re-run
    finishes the job."""
    originals = {sha(p): p.name for p in inbox.rglob("*.dcm")}
    proc = _start(inbox, tmp_path, "--cleanup")
    workers = _when_filed(proc, tmp_path / "data", 20)
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = _communicate(proc, 60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("dicom-repack batch: interrupted;"), err
    assert all(_gone(pid) for pid in workers), "the batch returned before its workers ended"
    left = {sha(p) for p in inbox.rglob("*.dcm")}
    filed = {sha(p) for p in (tmp_path / "data").rglob("*.dcm")}
    assert set(originals) <= left | filed, "an instance was lost"
    assert not [p for p in files_under(tmp_path) if p.name.endswith(".tmp")]
    _rerun_files_everything(originals, inbox, tmp_path, "--cleanup")


@pytest.mark.slow
def test_kill_9_of_the_batch_alone_leaves_no_worker_behind(inbox: Path, tmp_path: Path) -> None:
    """kill -9 of the batch process only (not its group): its workers notice and exit
    after their current instance, without a traceback; a re-run finishes the job."""
    originals = {sha(p): p.name for p in inbox.rglob("*.dcm")}
    proc = _start(inbox, tmp_path, "--cleanup")
    workers = _when_filed(proc, tmp_path / "data", 20)
    os.kill(proc.pid, signal.SIGKILL)
    _out, err = _communicate(proc, 60)
    assert _wait_until(lambda: all(_gone(pid) for pid in workers), 20), "orphaned workers"
    assert "Traceback" not in err, err
    _rerun_files_everything(originals, inbox, tmp_path, "--cleanup")


@pytest.mark.slow
def test_a_killed_worker_ends_the_run_with_its_instances_named(inbox: Path, tmp_path: Path) -> None:
    """kill -9 of one worker mid-run: the run does not hang; it stops, names in one line
    each the instances that worker held (not known to be filed), exits 1; the other
    worker is reaped; a re-run finishes the job."""
    originals = {sha(p): p.name for p in inbox.rglob("*.dcm")}
    proc = _start(inbox, tmp_path)
    workers = _when_filed(proc, tmp_path / "data", 20)
    os.kill(workers[0], signal.SIGKILL)
    out, err = _communicate(proc, 120)  # closes stdin: a batch waiting for more paths goes on
    assert proc.returncode == 1, out + err
    assert "Traceback" not in err, err
    lost = [line for line in err.splitlines() if "not known to be filed" in line]
    assert lost, err
    assert all(
        line.startswith("dicom-repack batch: ") and "killed by signal 9" in line for line in lost
    ), lost
    assert "stopped early" in out, out
    assert all(_gone(pid) for pid in workers)
    _rerun_files_everything(originals, inbox, tmp_path)


def test_a_pooled_batch_starts_without_multiprocessing(few: Path, tmp_path: Path) -> None:
    """The pool is os.fork and pipes: none of multiprocessing's imports (pickle, socket,
    threading...) nor pydicom; outcomes and NDJSON lines come back from the workers."""
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")  # python -X importtime
    for extra in list(few.rglob("*.dcm"))[8:]:
        extra.unlink()
    proc = run_cli(
        "batch", str(few), "--datadir", str(tmp_path / "data"), "--logdir",
        str(tmp_path / "log"), "--no-progress", "--jobs", "2",
        "--log-ndjson", str(tmp_path / "log.ndjson"), env=env,
    )  # fmt: skip
    imported = {
        line.split("|")[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "dicom_repack.doors.fork_pool" in imported  # the pool ran...
    heavy = {"multiprocessing", "pickle", "socket", "threading", "typing"}
    assert sorted(heavy & imported) == []  # ...without these
    assert pydicom_imports(proc.stderr) == []
    assert "8 instances filed" in proc.stdout
    lines = (tmp_path / "log.ndjson").read_text().splitlines()
    assert len(lines) == 8


def test_progress_bar_on_a_terminal_with_the_pool(few: Path, tmp_path: Path) -> None:
    """On a terminal the progress bar shows (its thread starts after the workers are
    forked: a thread's held locks must not be copied into them) and the run completes."""
    import pty
    import threading

    controller, terminal = pty.openpty()
    shown = bytearray()

    def read() -> None:
        while True:
            try:
                data = os.read(controller, 4096)
            except OSError:  # EIO: the terminal's last holder closed it
                return
            if not data:
                return
            shown.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(
            [dicom_repack_exe(), "batch", str(few), "--datadir", str(tmp_path / "data"),
             "--jobs", "2"],
            stdout=terminal, stderr=terminal, timeout=300,
        )  # fmt: skip
    finally:
        os.close(terminal)
        reader.join(timeout=10)
        os.close(controller)
    assert proc.returncode == 0, bytes(shown).decode(errors="replace")
    assert f"{FEW} instances filed".encode() in shown
    assert b"repacking" in shown
    assert b"Traceback" not in shown
