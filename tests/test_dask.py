"""``batch --dask`` on a real Dask cluster: a scheduler and two workers, separate processes.

Everything binds 127.0.0.1 and every process a test starts is stopped by it.
The corpus is generated (``dicom-repack corpus``), several patients, studies
and series, so records are written by both workers at once. A worker is killed
(SIGKILL) at a known moment: ``DICOM_REPACK_DASK_TEST_HANG=N:MARKER`` makes it
stop after filing N instances of its task, before reporting it; the test waits
for MARKER and kills it, and the scheduler runs that task again on the other.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import run_cli

#: local Dask clusters (a scheduler and worker processes each): pytest -m 'not slow' leaves them out
pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
INSTANCES = 160
#: the elements every instance of a series shares (the series record's dump is one instance's)
SERIES_LEVEL = {
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesDescription",
    "SeriesNumber",
    "Modality",
}
#: stat fields that differ between two filings of the same bytes
VOLATILE = {"atime", "ctime", "mtime", "ino", "dev", "nlink", "uid", "gid", "blocks", "blksize"}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def records(log: Path, data: Path) -> dict[str, object]:
    """Every record, with the data folder's path and per-filing stat fields taken out."""

    def clean(obj: object) -> object:
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items() if k not in VOLATILE}
        if isinstance(obj, list):
            return [clean(v) for v in obj]
        if isinstance(obj, str):
            return obj.replace(str(data), "<DATA>")
        return obj

    out: dict[str, object] = {}
    for p in sorted(log.rglob("*.json")):
        obj = json.loads(p.read_text())
        if p.parent.name == "patientData":  # the order of StudyList is arrival order
            for entry in obj.values():
                entry["StudyList"] = sorted(entry["StudyList"])
        if p.parent.name.endswith("-series"):
            # The series record carries the full header of the series' first
            # instance to arrive, which depends on arrival order: compare its
            # series-level elements, and that it is a full header.
            for entry in obj.values():
                dump = entry["DICOM"]
                assert len(dump) > 20, f"{p}: not a full header dump"
                entry["DICOM"] = {k: v for k, v in dump.items() if k in SERIES_LEVEL}
        out[p.relative_to(log).as_posix()] = clean(obj)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Several patients x studies x series, generated (no ../shared needed)."""
    out = tmp_path_factory.mktemp("dask-corpus") / "in"
    # clones of pydicom's example files, spread evenly over 4 x 2 x 2 series (the
    # default corpus, MR phantom studies, puts 160 instances in one study)
    from pydicom.data import get_testdata_file

    seeds = out.parent / "seeds"
    seeds.mkdir()
    for name in ("MR_small.dcm", "CT_small.dcm", "MR_small_implicit.dcm"):
        shutil.copy(str(get_testdata_file(name, download=False)), seeds / name)
    run_cli(
        "corpus", str(out), "--from", str(seeds), "--instances", str(INSTANCES), "--patients",
        "4", "--studies-per-patient", "2", "--series-per-study", "2", "-q",
    )  # fmt: skip
    (out / "corpus.json").unlink()  # its description, not an instance
    # The generator clones several seed files per patient, whose patient facts
    # differ; a patient record keeps its first writer's, so arrival order would
    # show. Real patients have one age and sex: give each generated one its own.
    import pydicom

    for path in sorted(out.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.PatientAge, ds.PatientSex, ds.PatientBirthDate = "042Y", "O", "19800101"
        ds.save_as(path)
    return out


@pytest.fixture(scope="module")
def expected(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same corpus through the local batch door: what the cluster must produce."""
    base = tmp_path_factory.mktemp("dask-expected")
    run_cli("batch", str(corpus), "-d", str(base / "data"), "-l", str(base / "log"), "-j", "1")
    return base / "data", base / "log"


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


ENV = dict(os.environ, DASK_DISTRIBUTED__LOGGING__DISTRIBUTED="error")


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One ``dask scheduler`` on 127.0.0.1 for the module's tests (each starts its workers)."""
    folder = tmp_path_factory.mktemp("dask-scheduler")
    info = folder / "scheduler.json"
    proc = _start(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", str(info)],
        ENV, folder / "scheduler.log",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not info.exists() or not info.read_text().strip():
            assert proc.poll() is None, "the dask scheduler did not start"
            assert time.monotonic() < deadline, "the dask scheduler did not start in 30 s"
            time.sleep(0.05)
        time.sleep(0.05)
        yield json.loads(info.read_text())["address"]
    finally:
        _stop([proc])


class Workers:
    """``dask worker --nthreads 1 --no-nanny`` processes, by name, each with its own env."""

    def __init__(self, address: str, folder: Path, envs: dict[str, dict[str, str]]) -> None:
        self.address = address
        self.folder = folder
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for name, extra in envs.items():
                self.procs[name] = _start(
                    [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-nanny",
                     "--no-dashboard", "--host", "127.0.0.1", "--name", name],
                    dict(ENV, **extra), folder / f"{name}.log",
                )  # fmt: skip
            self._wait_for(set(envs))
        except BaseException:
            self.stop()
            raise

    def _wait_for(self, names: set[str]) -> None:
        """Until exactly these workers are registered (an earlier test's are gone)."""
        import importlib

        dd: Any = importlib.import_module("distributed")  # its annotations are partial
        with dd.Client(self.address, timeout="30s") as client:
            deadline = time.monotonic() + 60
            while {w["name"] for w in client.scheduler_info()["workers"].values()} != names:
                assert time.monotonic() < deadline, self.logs()
                time.sleep(0.05)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.folder.glob("*.log"))
        )

    def stop(self) -> None:
        _stop(list(self.procs.values()))


@pytest.fixture()
def start_workers(scheduler: str, tmp_path: Path) -> Iterator[Callable[..., Workers]]:
    """``start_workers(name=env, ...)``; every worker started is stopped at the end."""
    started: list[Workers] = []

    def start(**envs: dict[str, str]) -> Workers:
        folder = tmp_path / f"workers{len(started)}"
        folder.mkdir()
        workers = Workers(scheduler, folder, envs)
        started.append(workers)
        return workers

    try:
        yield start
    finally:
        for w in started:
            w.stop()


@pytest.mark.parametrize("mode", ["copy", "move"])
def test_a_worker_killed_mid_task_loses_nothing_and_counts_nothing_twice(
    mode: str,
    corpus: Path,
    expected: tuple[Path, Path],
    start_workers: Callable[..., Workers],
    tmp_path: Path,
) -> None:
    """Two workers, one SIGKILLed mid-task; tree and records equal the local batch's."""
    src = tmp_path / "in"
    shutil.copytree(corpus, src)
    sources = sorted(str(p) for p in src.rglob("*.dcm"))
    marker = tmp_path / "victim-hangs"
    workers = start_workers(victim={"DICOM_REPACK_DASK_TEST_HANG": f"3:{marker}"}, healthy={})

    extra = ["--cleanup"] if mode == "move" else []
    data, log = tmp_path / "out" / "data", tmp_path / "out" / "log"
    data.parent.mkdir()
    cmd = ["batch", str(src), "-d", str(data), "-l", str(log), "--dask", workers.address,
           "--log-ndjson", "--no-progress", *extra]  # fmt: skip
    from helpers import dicom_repack_exe

    with subprocess.Popen(
        [dicom_repack_exe(), *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as run:
        try:
            deadline = time.monotonic() + 60
            while not marker.exists():
                assert run.poll() is None, "the run ended before the victim filed 3 instances"
                assert time.monotonic() < deadline, workers.logs()
                time.sleep(0.02)
            os.kill(workers.procs["victim"].pid, signal.SIGKILL)  # mid-task: 3 filed, none reported
            out, err = run.communicate(timeout=90)
        finally:
            if run.poll() is None:
                run.kill()
    assert workers.procs["victim"].wait(timeout=10) == -signal.SIGKILL
    assert run.returncode == 0, f"{out}\n{err}\n{workers.logs()}"

    lines = [json.loads(line) for line in out.splitlines()]
    reported = sorted(str(r["src"]) for r in lines)
    assert reported == sources, "every instance reported exactly once"
    assert all(r["error"] is None for r in lines), [r["error"] for r in lines if r["error"]]
    assert f"{INSTANCES} instances filed" in err and "0 failed" in err
    exp_data, exp_log = expected
    assert tree(data) == tree(exp_data), "every instance filed once, none lost"
    assert records(log, data) == records(exp_log, exp_data)
    if mode == "move":
        assert list(src.rglob("*.dcm")) == [], "every source removed once filed"
    assert not (data / ".dicom-repack-journal").exists(), "the run's journals are removed"


def test_local_cluster(corpus: Path, expected: tuple[Path, Path], tmp_path: Path) -> None:
    """``local:N`` starts worker processes by "spawn", which re-imports the console script."""
    data, log = tmp_path / "data", tmp_path / "log"
    proc = run_cli(
        "batch", str(corpus), "-d", str(data), "-l", str(log), "--dask", "local:1",
        "--no-progress", timeout=120,
    )  # fmt: skip
    assert f"{INSTANCES} instances filed" in proc.stdout
    exp_data, exp_log = expected
    assert tree(data) == tree(exp_data)
    assert records(log, data) == records(exp_log, exp_data)


def test_without_dask_installed_one_line_says_what_to_install(corpus: Path, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "distributed"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no distributed here')\n")
    env = dict(os.environ, PYTHONPATH=str(shadow.parent))
    proc = run_cli(
        "batch", str(corpus), "-d", str(tmp_path / "d"), "--dask", "tcp://127.0.0.1:1",
        check=False, env=env,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "dicom-repack batch: --dask needs Dask distributed: pip install 'dicom-repack[dask]'"
    ]
    assert not (tmp_path / "d").exists()


def test_bad_dask_address_is_a_usage_error(corpus: Path, tmp_path: Path) -> None:
    for address in ("local:0", "local:x", "nonsense"):
        proc = run_cli("batch", str(corpus), "-d", str(tmp_path / "d"), "--dask", address, check=False)  # fmt: skip
        assert proc.returncode == 2 and "--dask" in proc.stderr, address
    assert not (tmp_path / "d").exists()


def test_a_worker_that_cannot_run_the_job_stops_the_run_in_one_line(
    corpus: Path, start_workers: Callable[..., Workers], tmp_path: Path
) -> None:
    shadow = tmp_path / "shadow" / "dicom_repack"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('a broken install')\n")
    workers = start_workers(broken={"PYTHONPATH": str(shadow.parent)})
    proc = run_cli(
        "batch", str(corpus), "-d", str(tmp_path / "d"), "--dask", workers.address,
        "--no-progress", check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    waiting, line = proc.stderr.splitlines()
    assert waiting.startswith("dicom-repack batch: waiting up to 30 s for the Dask scheduler")
    assert "cannot run the job" in line and "a broken install" in line, line
    assert not any((tmp_path / "d").rglob("*.dcm")), "nothing filed"
