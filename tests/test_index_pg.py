"""``--index postgresql://...``: the same rows and answers as SQLite, on a real server.

Every test runs the console script against a PostgreSQL server the tests start
(tests/postgres.py: initdb + pg_ctl on a free 127.0.0.1 port; skipped, saying
how to get one, without the binaries). No mocks: the outage test stops the
server for ~10 s while a receiver files, and starts it again.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from dicom_repack.core.index_rows import host_name
from helpers import dicom_files, dicom_repack_exe, run_cli
from postgres import PgServer
from test_listen_support import dcmtk, dcmtk_env, free_port, listening, wait_for
from test_live_page import get


def _pending(log: Path) -> list[str]:
    """The pending files (and files a fold set aside) in the log folder, every host's."""
    return sorted(n for n in os.listdir(log) if n.startswith("dicom-repack-index.")
                  and ".pending" in n)  # fmt: skip


def _status(*args: str) -> dict[str, object]:
    """``status --json`` without what differs between two runs of the same input (the
    index's name, when it was asked, and arrival times)."""
    doc = json.loads(run_cli("status", *args, "--json", "--series-idle", "0").stdout)
    del doc["index"], doc["generated"]
    for patient in doc["patients"]:
        for study in patient["studies"]:
            del study["first"], study["last"]
            for series in study["series"]:
                del series["first"], series["last"]
    assert isinstance(doc, dict)
    return doc


def _filed(data: Path) -> list[Path]:
    """The instances filed under ``data`` (its tree, not its top folder)."""
    return sorted(data.rglob("*.dcm")) if data.exists() else []


def _count(server: PgServer, url: str) -> int:
    found = server.query(url, "SELECT count(*) FROM instances")[0][0]
    assert isinstance(found, int)
    return found


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_batch_into_postgres_answers_as_sqlite(
    jobs: str, mr: Path, tmp_path: Path, postgres_url: str, pg_session: PgServer
) -> None:
    """Batch in one process (the flusher's group commit) and on a pool (the workers'
    pending rows, folded at the end): ``status`` over PostgreSQL says what it says over
    SQLite, and the log folder holds no SQLite file and no pending row."""
    data = tmp_path / "data"
    run_cli("batch", str(mr), "-d", str(data), "-l", str(tmp_path / "sqlite"), "-j", jobs)
    pg_log = tmp_path / "pg"
    run_cli("batch", str(mr), "-d", str(data), "-l", str(pg_log), "--index", postgres_url,
            "-j", jobs)  # fmt: skip
    assert _count(pg_session, postgres_url) == len(dicom_files(mr))
    assert not (pg_log / "dicom-repack-index.sqlite").exists()
    assert not _pending(pg_log)
    sqlite = _status("-l", str(tmp_path / "sqlite"))
    assert _status("--index", postgres_url) == sqlite
    assert _status("--index", postgres_url, "-l", str(pg_log)) == sqlite


def test_rebuild_into_postgres(
    mr: Path, tmp_path: Path, postgres_url: str, pg_session: PgServer
) -> None:
    """``index --rebuild`` makes a PostgreSQL index equal the tree, as it does SQLite's;
    a file gone from the tree loses its row at the next rebuild."""
    data, log = tmp_path / "data", tmp_path / "log"
    run_cli("batch", str(mr), "-d", str(data), "-l", str(log), "--no-index")
    out = run_cli("index", "--rebuild", "-d", str(data), "-l", str(log), "--index", postgres_url)
    files = _filed(data)
    assert len(files) == len(dicom_files(mr))
    assert f"{len(files)} instances indexed" in out.stdout
    assert postgres_url in out.stdout
    run_cli("index", "--rebuild", "-d", str(data), "-l", str(log))  # SQLite, in the log folder
    assert _status("--index", postgres_url) == _status("-l", str(log))
    short = postgres_url.replace("postgresql://", "postgres://")  # libpq's other spelling
    assert _status("--index", short) == _status("-l", str(log))
    files[0].unlink()
    out = run_cli("index", "--rebuild", "-d", str(data), "-l", str(log), "--index", postgres_url)
    assert "1 stale rows removed" in out.stdout
    assert _count(pg_session, postgres_url) == len(files) - 1


def test_per_instance_door_leaves_rows_pending_and_imports_nothing_new(
    mr: Path, tmp_path: Path, postgres_url: str, pg_session: PgServer
) -> None:
    """The per-instance door appends its row to this host's pending file in the log folder
    and loads neither psycopg nor the PostgreSQL module; ``index --fold`` folds every
    host's pending file, and so does ``status`` given the log folder."""
    data, log = tmp_path / "data", tmp_path / "log"
    files = dicom_files(mr)[:3]
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")  # python -X importtime
    for f in files:
        done = run_cli("--xcrdir", str(f.parent), "--xcrfile", f.name, "--datadir", str(data),
                       "--logdir", str(log), "--index", postgres_url, env=env)  # fmt: skip
        assert "psycopg" not in done.stderr and "index_pg" not in done.stderr
        assert "import time:" in done.stderr  # the check saw the imports
    mine = f"dicom-repack-index.{host_name()}.pending"
    assert _pending(log) == [mine]  # this host's file: one per host sharing the log folder
    (log / mine).rename(log / "dicom-repack-index.other-host.pending")  # as another host's
    assert pg_session.query(postgres_url, "SELECT to_regclass('instances')") == [(None,)]
    out = run_cli("index", "--fold", "-l", str(log), "--index", postgres_url)
    assert "3 pending rows folded" in out.stdout
    assert _count(pg_session, postgres_url) == 3
    assert not _pending(log)
    f = dicom_files(mr)[3]
    run_cli("--xcrdir", str(f.parent), "--xcrfile", f.name, "--datadir", str(data),
            "--logdir", str(log), "--index", postgres_url)  # fmt: skip
    assert _status("--index", postgres_url, "-l", str(log))["totals"]["instances"] == 4  # type: ignore[index]


def test_a_fold_keeps_the_newest_row_of_a_sop_pending_twice(
    tmp_path: Path, postgres_url: str, pg_session: PgServer
) -> None:
    """A fold sends its rows in one statement, which may touch a row once: a SOP pending
    three times (re-filed, its lines out of time order) ends with its newest row, as
    row-by-row upserts kept it; an older row than the one folded before is not taken."""
    from dicom_repack.core.index_rows import line_of, row_for

    log = tmp_path / "log"
    log.mkdir()
    values = {"SOPInstanceUID": "1.2.3.4", "SeriesInstanceUID": "1.2.3",
              "StudyInstanceUID": "1.2", "PatientID": "P"}  # fmt: skip
    pending = log / f"dicom-repack-index.{host_name()}.pending"

    def append(sop: str, path: str, when: float) -> None:
        with open(pending, "ab") as f:
            f.write(line_of(row_for({**values, "SOPInstanceUID": sop}, path, 1, None, when)))

    append("1.2.3.4", "/d/first", 100.0)
    append("1.2.3.5", "/d/other", 100.0)
    append("1.2.3.4", "/d/newest", 300.0)
    append("1.2.3.4", "/d/between", 200.0)
    append("1.2.3.4", "/d/newest-again", 300.0)  # as new as the newest, and later: it wins
    run_cli("index", "--fold", "-l", str(log), "--index", postgres_url)
    rows = pg_session.query(postgres_url, "SELECT sop_instance_uid, path FROM instances ORDER BY 1")
    assert rows == [("1.2.3.4", "/d/newest-again"), ("1.2.3.5", "/d/other")]
    append("1.2.3.4", "/d/stale", 150.0)  # older than the folded row: not taken
    run_cli("index", "--fold", "-l", str(log), "--index", postgres_url)
    rows = pg_session.query(postgres_url, "SELECT path FROM instances ORDER BY 1")
    assert rows == [("/d/newest-again",), ("/d/other",)]


def test_newer_schema_is_refused_in_one_line(
    mr: Path, tmp_path: Path, postgres_url: str, pg_session: PgServer
) -> None:
    """A database migrated by a newer dicom-repack is refused, in one line, by every door
    that would write it, and by ``status``: nothing is filed."""
    data, log = tmp_path / "data", tmp_path / "log"
    run_cli("index", "--fold", "-l", str(log), "--index", postgres_url)  # creates the schema
    pg_session.execute(
        postgres_url,
        "INSERT INTO schema_version (version, applied_at, what) VALUES (99, 0, 'future')",
    )
    for argv in (
        ("batch", str(mr), "-d", str(data), "-l", str(log), "--index", postgres_url),
        ("status", "--index", postgres_url),
        ("index", "--fold", "-l", str(log), "--index", postgres_url),
        ("listen", "--port", "0", "-d", str(data), "-l", str(log), "--index", postgres_url),
        ("watch", str(mr), "-d", str(data), "-l", str(log), "--index", postgres_url),
    ):
        done = run_cli(*argv, check=False, timeout=120)
        assert done.returncode == 1, (argv, done.stderr)
        assert "schema version 99, newer than this dicom-repack knows" in _one_line(done)
    assert not _filed(data)


def test_postgres_index_needs_a_log_folder(mr: Path, tmp_path: Path, postgres_url: str) -> None:
    """Its pending rows live in the log folder: without one, refused before anything."""
    done = run_cli("batch", str(mr), "-d", str(tmp_path / "d"), "--index", postgres_url,
                   check=False)  # fmt: skip
    assert done.returncode == 1
    assert "a PostgreSQL --index needs --logdir" in _one_line(done)


def _storescu(port: int, *paths: Path) -> None:
    argv = [dcmtk("storescu"), "-aet", "STORESCU", "-aec", "DICOM-REPACK", "127.0.0.1", str(port)]
    done = subprocess.run([*argv, *map(str, paths)], capture_output=True, text=True,
                          env=dcmtk_env(), timeout=600)  # fmt: skip
    assert done.returncode == 0 and "E:" not in done.stderr, done.stderr


@pytest.mark.dcmtk
def test_listen_files_into_postgres(
    mr: Path, tmp_path: Path, postgres_url: str, pg_session: PgServer
) -> None:
    """storescu -> listen --index postgresql://: every row reaches the server (group
    commit), and ``status`` and the live page (``/api/status``) see the series."""
    data, log = tmp_path / "data", tmp_path / "log"
    files = dicom_files(mr)
    http = free_port()
    with listening(data, "--logdir", str(log), "--aet", "DICOM-REPACK", "--index", postgres_url,
                   "--http", f"127.0.0.1:{http}") as listener:  # fmt: skip
        _storescu(listener.port, *files)
        wait_for(lambda: _count(pg_session, postgres_url) == len(files), what="every row")
        doc = _status("--index", postgres_url)
        page = json.loads(get(f"http://127.0.0.1:{http}/api/status")[1])
        assert listener.stop() == 0
    series = page["series_in_progress"] + page["series_completed"]
    assert sum(s["instances"] for s in series) == len(files)
    assert [a["calling_ae"] for a in page["recent_associations"]] == ["STORESCU"]
    assert doc["totals"]["instances"] == len(files)  # type: ignore[index]
    assert doc["totals"]["series"] == 3  # type: ignore[index]
    peers = pg_session.query(postgres_url, "SELECT calling_ae FROM associations")
    assert ("STORESCU",) in peers


@pytest.mark.slow
@pytest.mark.dcmtk
def test_listen_files_on_while_postgres_is_away(
    mr: Path, tmp_path: Path, pg_server: PgServer
) -> None:
    """PostgreSQL stopped for ~10 s while a receiver files: every C-STORE still succeeds,
    /healthz says degraded (200: still ready, docs/scale.md), /metrics counts the waiting
    rows; once the server is back every row arrives and /healthz says ok."""
    data, log = tmp_path / "data", tmp_path / "log"
    url = pg_server.url
    files = dicom_files(mr)
    http = free_port()
    with listening(data, "--logdir", str(log), "--aet", "DICOM-REPACK", "--index", url,
                   "--http", f"127.0.0.1:{http}", "--workers", "1") as listener:  # fmt: skip
        base = f"http://127.0.0.1:{http}"
        wait_for(lambda: get(f"{base}/healthz") == (200, "ok\n"), what="/healthz ok")
        _storescu(listener.port, *files[:5])
        wait_for(lambda: _count(pg_server, url) == 5, what="the first rows")
        pg_server.stop()
        away = time.monotonic()
        for f in files[5:]:  # one association each, spread over the outage
            _storescu(listener.port, f)
        wait_for(lambda: get(f"{base}/healthz")[1].startswith("degraded: "), what="degraded")
        status, body = get(f"{base}/healthz")
        assert status == 200 and "rows wait in the pending file" in body, body
        metrics = get(f"{base}/metrics")[1]
        waiting = [ln for ln in metrics.splitlines() if ln.startswith("dicom_repack_index_pending")]
        assert waiting and int(waiting[0].split()[1]) == len(files) - 5, metrics
        time.sleep(max(0.0, 10 - (time.monotonic() - away)))  # the outage lasts ~10 s
        pg_server.start()
        wait_for(lambda: _count(pg_server, url) == len(files), what="every row, once back")
        wait_for(lambda: get(f"{base}/healthz") == (200, "ok\n"), what="/healthz ok again")
        assert listener.stop() == 0
    assert len(_filed(data)) == len(files)
    assert f"{len(files)} instances filed" in listener.stderr
    assert not _pending(log)


def test_batch_files_while_the_server_is_away_and_fold_brings_the_rows(
    mr: Path, tmp_path: Path, postgres_url: str, pg_session: PgServer
) -> None:
    """No server at the URL: ``batch`` says so in one line and files everything, its rows
    waiting in the pending file; ``status`` says it cannot reach the server, in one line;
    ``index --fold`` to a server that is there brings every row (the same database name
    on another port stands for the server coming back)."""
    data, log = tmp_path / "data", tmp_path / "log"
    away = postgres_url.replace(f":{pg_session.port}/", f":{free_port()}/")
    done = run_cli("batch", str(mr), "-d", str(data), "-l", str(log), "--index", away, "-j", "1")
    assert "filing on, the rows wait in the pending file" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(_filed(data)) == len(dicom_files(mr))
    assert _pending(log)
    status = run_cli("status", "--index", away.replace("postgres@", "postgres:secret@"),
                     check=False)  # fmt: skip
    assert status.returncode == 1 and "cannot use the index" in _one_line(status)
    assert "postgres:***@" in status.stderr and "secret" not in status.stderr
    out = run_cli("index", "--fold", "-l", str(log), "--index", postgres_url)
    assert f"{len(dicom_files(mr))} pending rows folded" in out.stdout
    assert _count(pg_session, postgres_url) == len(dicom_files(mr))
    assert not _pending(log)


@pytest.mark.slow
def test_dask_batch_into_postgres(
    mr: Path, tmp_path: Path, postgres_url: str, pg_session: PgServer
) -> None:
    """``batch --dask``: each worker process commits its host's pending rows in groups,
    the client folds what is left: every row arrives, no pending file stays."""
    pytest.importorskip("distributed")
    data, log = tmp_path / "data", tmp_path / "log"
    run_cli("batch", str(mr), "-d", str(data), "-l", str(log), "--index", postgres_url,
            "--dask", "local:2", timeout=600)  # fmt: skip
    assert _count(pg_session, postgres_url) == len(dicom_files(mr))
    assert not _pending(log)
    assert _status("--index", postgres_url)["totals"]["instances"] == len(dicom_files(mr))  # type: ignore[index]


def test_a_column_the_database_lacks_is_added_at_start(
    tmp_path: Path, postgres_url: str, pg_session: PgServer
) -> None:
    """A column of ``COLUMNS`` that the table lacks (added to the code after the database
    was made) is added at the next start, with no migration; the version stays."""
    log = tmp_path / "log"
    run_cli("index", "--fold", "-l", str(log), "--index", postgres_url)  # creates the schema
    pg_session.execute(postgres_url, "ALTER TABLE instances DROP COLUMN modality")
    run_cli("index", "--fold", "-l", str(log), "--index", postgres_url)
    columns = pg_session.query(
        postgres_url,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'instances'",
    )
    assert ("modality",) in columns
    from dicom_repack.core.index_pg import SCHEMA_VERSION

    assert pg_session.query(postgres_url, "SELECT max(version) FROM schema_version") == [
        (SCHEMA_VERSION,)
    ]


def test_a_row_a_fold_holds_aside_is_still_found(
    tmp_path: Path, postgres_url: str, pg_session: PgServer
) -> None:
    """Where a SOP was filed is known while a fold has moved its pending row aside and
    not committed it yet (the flusher folds every 100 ms: a re-file in that window must
    still retire the earlier copy); a newer row in the index (another host's) wins over
    an older one held aside."""
    from dicom_repack.core.index_files import fold_files
    from dicom_repack.core.index_pg import PgIndex
    from dicom_repack.core.index_rows import PendingIndex, pending_path

    local = str(tmp_path / "dicom-repack-index.h1")
    values = {"SOPInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.4",
              "StudyInstanceUID": "1.2.5", "PatientID": "P"}  # fmt: skip
    writer = PendingIndex(local, target=postgres_url)
    writer.add(values, path="/data/a/0001-1.2.3.dcm", size=1, source=None, when=100.0)
    index = PgIndex(postgres_url, local)
    try:
        index.fold()  # the schema, and the first row folded
        writer.add(values, path="/data/b/0002-1.2.3.dcm", size=1, source=None, when=200.0)
        assert (index.where("1.2.3") or {}).get("path") == "/data/b/0002-1.2.3.dcm"
        os.rename(pending_path(local), pending_path(local) + ".1-2")  # a fold, mid-way
        assert (index.where("1.2.3") or {}).get("path") == "/data/b/0002-1.2.3.dcm"
        pg_session.execute(
            postgres_url,
            "INSERT INTO instances (sop_instance_uid, series_instance_uid, study_instance_uid,"
            " patient_id, path, size, filed_at) VALUES ('1.2.3', '1.2.4', '1.2.5', 'P',"
            " '/data/c/0003-1.2.3.dcm', 1, 300) ON CONFLICT (sop_instance_uid) DO UPDATE"
            " SET path = excluded.path, filed_at = excluded.filed_at",
        )  # filed since by another host
        assert (index.where("1.2.3") or {}).get("path") == "/data/c/0003-1.2.3.dcm"
        assert fold_files(pending_path(local), lambda rows: None) == 1  # the fold ends
        assert (index.where("1.2.3") or {}).get("path") == "/data/c/0003-1.2.3.dcm"
    finally:
        index.close()
        writer.close()


def test_a_patients_record_waits_for_the_clusters_advisory_lock(
    mr: Path, tmp_path: Path, postgres_url: str, pg_session: PgServer
) -> None:
    """With a PostgreSQL index a patient's StudyList is updated under PostgreSQL's
    advisory lock for that patient (receivers on other hosts take the same one; the
    log folder's flock is host-local on NFS): while another session holds it, a batch
    waits before the patient's record and writes it once the lock is released."""
    import psycopg

    from dicom_repack.core.index_pg import patient_key
    from dicom_repack.core.jsonio import loads

    first = dicom_files(mr)[0]
    run_cli("batch", str(first), "-d", str(tmp_path / "probe"), "-l", str(tmp_path / "pl"),
            "--no-index")  # fmt: skip
    (record,) = (tmp_path / "pl" / "patientData").glob("*.json")
    doc = loads(record.read_text())
    assert isinstance(doc, dict)
    (patient_id,) = doc
    assert isinstance(patient_id, str)
    data, log = tmp_path / "data", tmp_path / "log"
    waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    with psycopg.connect(postgres_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (patient_key(patient_id),))
        proc = subprocess.Popen(
            [dicom_repack_exe(), "batch", str(mr), "-d", str(data), "-l", str(log),
             "--index", postgres_url, "-j", "1", "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            try:
                wait_for(lambda: pg_session.query(postgres_url, waiting)[0][0] == 1, timeout=60)
                assert proc.poll() is None  # held at the lock, not finished
                assert not (log / "patientData" / record.name).exists()
            finally:
                holder.execute("SELECT pg_advisory_unlock(%s)", (patient_key(patient_id),))
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    studies = loads((log / "patientData" / record.name).read_text())
    assert isinstance(studies, dict) and studies[patient_id]["StudyList"]
    assert _count(pg_session, postgres_url) == len(dicom_files(mr))


#: the files a PostgreSQL index keeps in the log folder (core/index_rows.py: local_path,
#: lock_base): this host's pending rows, a file a fold set aside, the shared SOP lock
PG_PLACES = {
    "pending rows": f"dicom-repack-index.{host_name()}.pending",
    "fold file": f"dicom-repack-index.{host_name()}.pending.1-2",
    "SOP lock file": "dicom-repack-index.sop-lock",
}


@pytest.mark.parametrize("kind", ["link", "fifo"])
@pytest.mark.parametrize("name", list(PG_PLACES))
def test_a_link_or_fifo_at_a_postgresql_indexs_local_file_touches_nothing_outside(
    mr: Path, tmp_path: Path, postgres_url: str, kind: str, name: str
) -> None:
    """A link to a file outside, or a FIFO, planted where a PostgreSQL index keeps its
    local files: batch, status and ``index --fold`` neither hang, nor read, write or
    remove anything outside, nor replace what was planted; every line said names it."""
    from test_escapes import SECRET, cli

    data, log, outside = tmp_path / "data", tmp_path / "log", tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret"
    secret.write_bytes(SECRET)
    first, second = dicom_files(mr)[:2]
    run_cli("batch", str(first), "-d", str(data), "-l", str(log), "--index", postgres_url)
    planted = log / PG_PLACES[name]
    if planted.exists():
        planted.unlink()
    if kind == "link":
        planted.symlink_to(secret)
    else:
        os.mkfifo(planted)
    index = ("-l", str(log), "--index", postgres_url)
    for door, args in {
        "batch": ("batch", str(second), "-d", str(data), *index, "--no-progress"),
        "status": ("status", *index),
        "index --fold": ("index", "--fold", *index),
    }.items():
        proc = cli(*args)  # fails the test if it hangs
        assert "Traceback" not in proc.stderr, f"{door}: {proc.stderr}"
        assert proc.returncode in (0, 1), f"{door}: {proc.returncode} {proc.stderr}"
        if proc.returncode == 1:  # each line names it
            lines = proc.stderr.splitlines()
            assert lines and all(str(planted) in line for line in lines), f"{door}: {lines}"
        if door == "batch" and name == "pending rows":  # refused once, at start
            assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
            assert "nothing was done" in proc.stderr, proc.stderr
        assert secret.read_bytes() == SECRET, f"{door} wrote through the link"
        assert sorted(p.name for p in outside.iterdir()) == ["secret"], door
        assert planted.is_symlink() == (kind == "link"), f"{door} replaced the {kind}"
        assert kind == "link" or stat.S_ISFIFO(planted.stat().st_mode), door
