"""dcmtk interoperability: storescu -> listen, and the storescp end-of-study deployment."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from helpers import dicom_files, dicom_repack_exe
from test_listen import CORPUS_NAMES, batch_reference  # noqa: F401 - fixture
from test_listen_support import (
    assert_same_datasets,
    close_pipes,
    dcmtk,
    dcmtk_env,
    free_port,
    listening,
    records,
    wait_for,
)

pytestmark = pytest.mark.dcmtk


def storescu(port: int, *paths: Path, extra: tuple[str, ...] = ()) -> None:
    exe = dcmtk("storescu")
    argv = [exe, "-aet", "STORESCU", "-aec", "DICOM-REPACK", *extra, "127.0.0.1", str(port)]
    argv += [str(p) for p in paths]
    done = subprocess.run(argv, capture_output=True, text=True, env=dcmtk_env(), timeout=600)
    assert done.returncode == 0, done.stderr
    assert "E:" not in done.stderr and "F:" not in done.stderr, done.stderr


@pytest.mark.parametrize("corpus", CORPUS_NAMES)
def test_storescu_files_every_instance_like_batch(
    corpus: str,
    generated: dict[str, Path],
    batch_reference: dict[str, tuple[Path, Path]],  # noqa: F811
    tmp_path: Path,
) -> None:
    """storescu proposes explicit VR first, so the implicit corpus arrives transcoded:
    its data sets are then compared element by element, the other byte for byte."""
    files = dicom_files(generated[corpus])
    data, log = tmp_path / "data", tmp_path / "log"
    with listening(data, "--logdir", str(log), "--aet", "DICOM-REPACK") as listener:
        storescu(listener.port, files[0])
        storescu(listener.port, *files[1:])
        assert listener.stop() == 0
    assert f"{len(files)} instances filed" in listener.stderr
    assert_same_datasets(files, data)
    batch_data, batch_log = batch_reference[corpus]
    assert records(log, data) == records(batch_log, batch_data)


def test_storescu_implicit_only_keeps_bytes(generated: dict[str, Path], tmp_path: Path) -> None:
    """With -xi the implicit corpus is not transcoded: every data set lands byte for byte."""
    files = dicom_files(generated["mr-implicit"])[:20]
    data = tmp_path / "data"
    with listening(data) as listener:
        storescu(listener.port, *files, extra=("-xi",))
    assert_same_datasets(files, data)
    from test_listen_support import dataset_bytes, filed, sop_uid

    got = filed(data)
    assert all(dataset_bytes(f) == dataset_bytes(got[sop_uid(f)]) for f in files)


def test_echoscu(tmp_path: Path) -> None:
    exe = dcmtk("echoscu")
    with listening(tmp_path / "data") as listener:
        done = subprocess.run(
            [exe, "127.0.0.1", str(listener.port)], capture_output=True, text=True, timeout=60,
            env=dcmtk_env(),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert listener.stop() == 0
    assert "1 echoes" in listener.stderr


def test_storescp_end_of_study_hook_runs_batch_once_per_study(
    mr: Path,
    batch_reference: dict[str, tuple[Path, Path]],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The zero-code deployment for sites that keep storescp: it sorts each study into
    its own folder and, at the end of the study, runs the batch door on that folder
    (one process per study instead of one per instance)."""
    storescp = dcmtk("storescp")
    incoming, data, log = tmp_path / "incoming", tmp_path / "data", tmp_path / "log"
    incoming.mkdir()
    port = free_port()
    hook = f"{dicom_repack_exe()} batch #p --datadir {data} --logdir {log} --no-progress"
    argv = [
        storescp,
        "--output-directory", str(incoming),
        "--sort-on-study-uid", "study",
        "--exec-on-eostudy", hook,
        "--eostudy-timeout", "2",
        str(port),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, env=dcmtk_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        files = dicom_files(mr)
        deadline = time.monotonic() + 30
        while True:  # storescp takes a moment to listen
            try:
                storescu(port, files[0])
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        storescu(port, *files[1:])
        wait_for(lambda: len(list(data.rglob("*.dcm"))) == len(files), timeout=120,
                 what="the end-of-study batch run")  # fmt: skip
        wait_for(lambda: (log / "patientData").exists(), what="records")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        close_pipes(proc)
    assert_same_datasets(files, data)
    batch_data, batch_log = batch_reference["mr-explicit"]
    ours, theirs = records(log, data), records(batch_log, batch_data)
    assert ours.keys() == theirs.keys()
    # the series record's header dump comes from whichever instance storescp filed first;
    # everything else is identical
    assert {k: v for k, v in ours.items() if "-series/" not in k} == {
        k: v for k, v in theirs.items() if "-series/" not in k
    }
