"""``listen --workers N``: several processes on one port, still one receiver to the outside.

Generated instances only; dcmtk's storescu as the sender. No timing thresholds
(the speed-up is measured by benchmarks/listen_bench.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from helpers import run_cli
from test_listen_support import dcmtk, dcmtk_env, filed, listening, wait_for


@pytest.fixture(scope="module")
def instances192(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("generated")
    run_cli("corpus", str(out), "--instances", "192", "-q")
    return sorted(p for p in out.rglob("*") if p.is_file() and p.name != "corpus.json")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _series_of(files: list[Path]) -> Counter[str]:
    import pydicom

    return Counter(
        str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID) for f in files
    )


@pytest.mark.slow
def test_eight_senders_two_workers_one_receiver(instances192: list[Path], tmp_path: Path) -> None:
    """8 storescu at once, each a slice of every series, into 2 workers: every instance
    filed once, one summary with the totals, each series notified once with its
    full count although its instances arrived through both workers, and one index
    row per filed file (each worker's associations share one connection)."""
    data, ndjson, logs = tmp_path / "data", tmp_path / "out.ndjson", tmp_path / "log"
    opts = ("--workers", "2", "--series-idle", "2", "--ndjson", str(ndjson), "--logdir", str(logs))
    with listening(data, *opts) as listener:
        workers = _children(listener.proc.pid)
        assert len(workers) == 2
        base = [dcmtk("storescu"), "-aec", "DICOM-REPACK", "127.0.0.1", str(listener.port)]
        senders = [
            subprocess.Popen(
                [*base, *map(str, instances192[i::8])],
                env=dcmtk_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(8)
        ]
        for s in senders:
            _, err = s.communicate(timeout=120)
            assert s.returncode == 0, err
        expected = _series_of(instances192)

        def events() -> list[dict[str, object]]:
            lines = [json.loads(x) for x in ndjson.read_text().splitlines()]
            return [x for x in lines if x.get("event") == "series-complete"]

        wait_for(lambda: len(events()) >= len(expected), what="every series-complete event")
        assert listener.stop() == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "workers left"
    got = {str(e["SeriesInstanceUID"]): e["instances"] for e in events()}
    assert got == dict(expected)
    assert len(events()) == len(expected)  # once each
    assert len(filed(data)) == 192
    with contextlib.closing(sqlite3.connect(logs / "dicom-repack-index.sqlite")) as conn:
        rows = conn.execute("SELECT sop_instance_uid, path FROM instances").fetchall()
    assert len(rows) == 192
    assert dict(rows) == {uid: str(path) for uid, path in filed(data).items()}
    lines = [json.loads(x) for x in ndjson.read_text().splitlines()]
    per_instance = [x for x in lines if "SOPInstanceUID" in x]
    assert len(per_instance) == 192 and all(x["error"] is None for x in per_instance)
    summary = lines[-1]
    assert summary["event"] == "summary" and summary["stored"] == 192
    assert summary["associations"] == 8 and summary["workers"] == 2
    assert "192 instances filed" in listener.stderr and "2 workers" in listener.stderr


def test_a_killed_worker_is_replaced(instances192: list[Path], tmp_path: Path) -> None:
    """kill -9 of a worker: its share of the limits is cleared, a new worker takes its
    place, the port keeps serving; the exit status then says a worker was lost."""
    data = tmp_path / "data"
    with listening(data, "--workers", "2", "--max-associations", "2") as listener:
        first = _children(listener.proc.pid)
        os.kill(first[0], signal.SIGKILL)
        wait_for(
            lambda: len(set(_children(listener.proc.pid)) - set(first)) == 1,
            what="a replacement worker",
        )
        for _ in range(2):  # both slots usable again: the dead worker's row was cleared
            done = subprocess.run(
                [dcmtk("storescu"), "-aec", "DICOM-REPACK", "127.0.0.1", str(listener.port),
                 *map(str, instances192[:10])],
                env=dcmtk_env(), capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
        assert listener.stop() != 0
    assert "1 lost" in listener.stderr
    assert len(filed(data)) == 10
