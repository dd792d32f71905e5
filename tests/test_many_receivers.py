"""Several receivers, one data/log tree, one index: the tested model of "many receivers".

Two ``dicom-repack listen`` processes with different ``--host-id`` share a data
folder, a log folder and one index: its SQLite file, and again a PostgreSQL
database (issue 21's cluster; one machine here, so the hosts are pretended by
``--host-id``). A series whose instances arrive at both is complete when the
index says so (quiet everywhere, the count as announced), and its hook runs once
for the pair, claimed in the index (listen/series_watch.py); a Dask batch can
file the same studies meanwhile. Real processes, real dcmtk storescu, kill -9;
no timing thresholds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from helpers import dicom_files, modified_copy, run_cli
from test_listen_support import (
    dcmtk,
    dcmtk_env,
    filed,
    free_port,
    listening,
    pynetdicom_send,
    sop_uid,
    wait_for,
)

SERIES = 12


class Backend:
    """The shared index of a test: the SQLite file in the log folder, or a PostgreSQL
    database (``--index URL``) the receivers share across (here: pretend) hosts."""

    def __init__(self, log: Path, url: str | None = None) -> None:
        self.log = log
        self.url = url

    def args(self) -> tuple[str, ...]:
        return ("--index", self.url) if self.url else ()

    def query(self, sql: str) -> list[tuple[object, ...]]:
        if self.url:
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as conn:
                return list(conn.execute(sql).fetchall())
        index = self.log / "dicom-repack-index.sqlite"
        if not index.exists():
            return []
        with contextlib.closing(sqlite3.connect(index, timeout=30)) as conn:
            return list(conn.execute(sql).fetchall())


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each test once on SQLite (one host) and once on PostgreSQL (issue 21's cluster)."""
    log = tmp_path / "log"
    if request.param == "sqlite":
        return Backend(log)
    return Backend(log, request.getfixturevalue("postgres_url"))


@pytest.fixture()
def series12(mr: Path, tmp_path: Path) -> list[Path]:
    """The generated 12-instance series, each announcing its size
    (NumberOfSeriesRelatedInstances = 12)."""
    out = tmp_path / "series"
    out.mkdir()
    files = dicom_files(mr)[:SERIES]
    copies = [modified_copy(f, out / f.name, NumberOfSeriesRelatedInstances=SERIES) for f in files]
    import pydicom

    assert len({str(pydicom.dcmread(f).SeriesInstanceUID) for f in copies}) == 1
    return copies


def _hook(out: Path) -> str:
    """A hook that appends its arguments (instances, hosts, series) as one line."""
    script = "import sys; open(sys.argv[1], 'a').write(' '.join(sys.argv[2:]) + '\\n')"
    return f'{sys.executable} -c "{script}" {out} {{instances}} {{hosts}} {{series_uid}}'


def _hook_lines(out: Path) -> list[list[str]]:
    return [line.split(" ") for line in out.read_text().splitlines()] if out.exists() else []


def _host_rows(backend: Backend) -> Counter[str]:
    rows = backend.query("SELECT host, count(*) FROM instances GROUP BY host")
    return Counter({str(h): int(n) for h, n in rows})  # type: ignore[call-overload]


def _status_series(backend: Backend) -> dict[str, object]:
    doc = json.loads(run_cli("status", "-l", str(backend.log), *backend.args(), "--json").stdout)
    ((series,),) = [s["series"] for p in doc["patients"] for s in p["studies"]]
    assert isinstance(series, dict)
    return series


def _send_halves(series: list[Path], port_a: int, port_b: int) -> None:
    """Two storescu at once: every other instance of ``series`` to each receiver."""
    senders = [
        subprocess.Popen(
            [
                dcmtk("storescu"),
                "-aec",
                "DICOM-REPACK",
                "127.0.0.1",
                str(port),
                *map(str, series[i::2]),
            ],
            env=dcmtk_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, port in enumerate((port_a, port_b))
    ]
    for s in senders:
        _, err = s.communicate(timeout=120)
        assert s.returncode == 0, err


def _get_json(port: int, path: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        doc = json.loads(resp.read())
    assert isinstance(doc, dict)
    return doc


@pytest.mark.slow
def test_two_receivers_share_a_series_and_its_hook_runs_once(
    series12: list[Path], tmp_path: Path, backend: Backend
) -> None:
    """Two listen processes (rx-a, rx-b), one tree and index; two storescu at once, each
    sending half of one series to one of them: every instance filed once, the patient's
    StudyList has the study, the hook ran once with the full count and both hosts, and
    status says complete with both hosts' counts."""
    data, log, hook = tmp_path / "data", tmp_path / "log", tmp_path / "hook.txt"
    data.mkdir()
    log.mkdir()
    common = ("--logdir", str(log), "--series-idle", "1", "--on-series-complete", _hook(hook),
              "--workers", "1", *backend.args())  # fmt: skip
    http_a = free_port()
    with (
        listening(data, *common, "--host-id", "rx-a", "--http", f"127.0.0.1:{http_a}") as a,
        listening(data, *common, "--host-id", "rx-b") as b,
    ):
        _send_halves(series12, a.port, b.port)
        wait_for(lambda: _hook_lines(hook), what="the series hook")
        doc = _get_json(http_a, "/api/status")
        assert doc["host"] == "rx-a"
        about = doc["about"]
        assert isinstance(about, dict) and about["host"] == "rx-a"
        completed = doc["series_completed"]
        assert isinstance(completed, list) and len(completed) == 1
        assert completed[0]["hosts"] == {"rx-a": SERIES // 2, "rx-b": SERIES // 2}
        # both stop: a receiver that had not decided yet decides at shutdown, and loses
        assert a.stop() == 0 and b.stop() == 0
    (line,) = _hook_lines(hook)
    instances, hosts, series_uid = line
    assert (instances, hosts) == (str(SERIES), "rx-a,rx-b")
    assert series_uid == _series_uid(series12[0])
    got = filed(data)
    assert sorted(got) == sorted(sop_uid(f) for f in series12)  # each once
    assert _host_rows(backend) == Counter({"rx-a": SERIES // 2, "rx-b": SERIES // 2})
    _assert_records(series12, data, log)
    series = _status_series(backend)
    assert series["state"] == "complete" and series["instances"] == SERIES
    assert series["hosts"] == {"rx-a": SERIES // 2, "rx-b": SERIES // 2}
    claims = backend.query("SELECT series_instance_uid, instances, hosts FROM series_claims")
    ((uid, n, claimed_hosts),) = claims
    assert isinstance(claimed_hosts, str)
    assert (uid, n, json.loads(claimed_hosts)) == (series_uid, SERIES, series["hosts"])


def _series_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def _assert_records(files: list[Path], data: Path, log: Path) -> None:
    """Every instance where the layout puts it, its data set intact, every record there
    and parseable, the patient's StudyList naming the study (bench/verify.py)."""
    from dicom_repack.bench.verify import build_truth, verify_run

    verdict = verify_run(build_truth(files, ["rx"]), "rx", data, log, compare="dataset")
    assert verdict.ok, verdict.as_dict()
    import pydicom

    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    patient = json.loads((log / "patientData" / f"{ds.PatientID}.json").read_text())
    assert str(ds.StudyInstanceUID) in json.dumps(patient)


@pytest.mark.slow
def test_a_receiver_killed_mid_series_never_makes_it_complete_twice(
    series12: list[Path], tmp_path: Path, backend: Backend
) -> None:
    """rx-b is killed (SIGKILL) while its half of a series is arriving one instance per
    association: every instance it acknowledged is filed (file and row); the series
    then ends as its count says (complete only with all 12), its state is claimed once;
    the missing instances sent again to rx-a complete it (a new round: the claim is
    taken again because the series grew) and the hook runs, once; the whole series
    sent yet again (re-arrivals, nothing new) notifies nobody."""
    data, log, hook = tmp_path / "data", tmp_path / "log", tmp_path / "hook.txt"
    lines = tmp_path / "a.ndjson"
    data.mkdir()
    log.mkdir()
    common = ("--logdir", str(log), "--series-idle", "1", "--on-series-complete", _hook(hook),
              "--workers", "1", *backend.args())  # fmt: skip
    acked: list[Path] = []
    with (
        listening(data, *common, "--host-id", "rx-a", "--log-ndjson", str(lines)) as a,
        listening(data, *common, "--host-id", "rx-b") as b,
    ):

        def send_to_b() -> None:
            for f in series12[1::2]:
                try:
                    if pynetdicom_send(b.port, [f], echo=False) == [0]:
                        acked.append(f)
                except (ConnectionError, OSError, RuntimeError):
                    return  # the receiver is gone

        sender = threading.Thread(target=send_to_b)
        sender.start()
        assert pynetdicom_send(a.port, series12[0::2]) == [0] * (SERIES // 2)
        wait_for(lambda: _host_rows(backend)["rx-b"] >= 2, what="rx-b filing")
        os.kill(b.proc.pid, signal.SIGKILL)
        sender.join(timeout=120)
        assert not sender.is_alive()
        got = filed(data)
        assert {sop_uid(f) for f in acked} <= set(got)  # nothing acknowledged is lost
        acked_uids = {sop_uid(f) for f in acked}

        def rows() -> set[object]:
            return {r[0] for r in backend.query("SELECT sop_instance_uid FROM instances")}

        # PostgreSQL: rx-b's last rows wait in the pending file until rx-a's flusher folds
        wait_for(lambda: acked_uids <= rows(), what="every acknowledged instance's row")
        indexed = rows()
        count = len(indexed)

        def decided() -> bool:
            said = lines.exists() and "series-incomplete" in lines.read_text()
            return said or bool(_hook_lines(hook))

        wait_for(decided, what="rx-a deciding the series")
        series = _status_series(backend)
        if count < SERIES:  # as the counts say
            assert series["state"] == "incomplete" and not _hook_lines(hook)
            missing = [f for f in series12 if sop_uid(f) not in indexed]
            assert pynetdicom_send(a.port, missing) == [0] * len(missing)
            wait_for(lambda: _hook_lines(hook), what="the hook once the series is complete")
        assert _status_series(backend)["state"] == "complete"
        assert pynetdicom_send(a.port, series12) == [0] * SERIES  # re-arrivals: nothing new
        assert a.stop() == 0  # decides what it still watches, at shutdown: claimed already
    (line,) = _hook_lines(hook)  # complete once
    assert line[0] == str(SERIES)
    assert set(line[1].split(",")) <= {"rx-a", "rx-b"} and "rx-a" in line[1]
    assert sorted(filed(data)) == sorted(sop_uid(f) for f in series12)
    _assert_records(series12, data, log)
    events = [json.loads(x) for x in lines.read_text().splitlines()]
    incomplete = [e for e in events if e.get("event") == "series-incomplete"]
    assert len(incomplete) == (1 if count < SERIES else 0)
    if incomplete:
        assert incomplete[0]["instances"] == count and incomplete[0]["expected"] == SERIES


def test_one_claimant_of_many_wins(tmp_path: Path) -> None:
    """Eight processes claim one series at once in one index: exactly one wins; a claim
    with the same count later wins nothing, one with more instances wins again (the
    round after re-arrivals), one with fewer does not."""
    index = tmp_path / "index.sqlite"
    code = (
        "import sys; from dicom_repack.core.index import Index\n"
        "i = Index(sys.argv[1])\n"
        "won = i.claim_series('1.2.3', host=sys.argv[2], instances=int(sys.argv[3]),"
        " hosts={sys.argv[2]: 1}, state='complete')\n"
        "i.close(); print(int(won))\n"
    )

    def claim(host: str, n: int) -> subprocess.Popen[str]:
        argv = [sys.executable, "-c", code, str(index), host, str(n)]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)

    racers = [claim(f"rx-{i}", 12) for i in range(8)]
    outs = [p.communicate(timeout=120)[0].strip() for p in racers]
    assert all(p.returncode == 0 for p in racers)
    assert sorted(outs) == ["0"] * 7 + ["1"]
    for n, wins in ((12, "0"), (13, "1"), (5, "0"), (13, "0")):
        p = claim("rx-late", n)
        assert p.communicate(timeout=120)[0].strip() == wins, n
    with contextlib.closing(sqlite3.connect(index)) as conn:
        assert conn.execute("SELECT instances, host FROM series_claims").fetchall() == [
            (13, "rx-late")
        ]


@pytest.mark.slow
def test_a_dask_batch_and_two_receivers_file_overlapping_studies_into_one_tree(
    series12: list[Path], mr: Path, tmp_path: Path, backend: Backend
) -> None:
    """``batch --dask`` over a folder holding the series (and more) while two receivers
    each get half of the same series from storescu: one tree, one index; every instance
    filed once where the layout puts it, every record sound, one row per instance."""
    pytest.importorskip("distributed")
    data, log = tmp_path / "data", tmp_path / "log"
    data.mkdir()
    log.mkdir()
    batch_in = tmp_path / "batch-in"
    batch_in.mkdir()
    for f in [*series12, *dicom_files(mr)[SERIES:]]:
        (batch_in / f.name).write_bytes(f.read_bytes())
    common = ("--logdir", str(log), "--workers", "1", *backend.args())
    with (
        listening(data, *common, "--host-id", "rx-a") as a,
        listening(data, *common, "--host-id", "rx-b") as b,
    ):
        batch = subprocess.Popen(
            [sys.executable, "-m", "dicom_repack", "batch", str(batch_in), "-d", str(data),
             "-l", str(log), *backend.args(), "--dask", "local:2", "--no-progress"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            _send_halves(series12, a.port, b.port)
            _, err = batch.communicate(timeout=600)
            assert batch.returncode == 0, err
        finally:
            if batch.returncode is None:
                batch.kill()
                batch.communicate()
        assert a.stop() == 0 and b.stop() == 0
    every = sorted(batch_in.iterdir())
    assert sorted(filed(data)) == sorted(sop_uid(f) for f in every)  # each once
    _assert_records(every, data, log)
    rows = backend.query("SELECT sop_instance_uid FROM instances")
    if backend.url is None:  # SQLite: what waits in the pending file is folded by status
        run_cli("status", "-l", str(log), "--json")
        rows = backend.query("SELECT sop_instance_uid FROM instances")
    assert sorted(r[0] for r in rows) == sorted(sop_uid(f) for f in every)  # type: ignore[type-var]
