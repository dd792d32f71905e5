"""``--host-id``: who filed each instance, in the index row and the NDJSON line.

Several receivers may share one data/log tree and one index (docs/scale.md, "Several
receivers"); the host identity tells their rows apart. Every door that files takes
the flag (declared once, doors/options.py); the default is the host name. An index
made before the column existed gains it at first use (old rows NULL).
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

from helpers import dicom_files, run_cli


def _rows(log: Path) -> list[tuple[str, str | None]]:
    with contextlib.closing(sqlite3.connect(log / "dicom-repack-index.sqlite")) as conn:
        return conn.execute("SELECT sop_instance_uid, host FROM instances").fetchall()


def test_every_door_that_files_takes_host_id() -> None:
    for door in (("batch",), ("watch",), ("listen",), ()):
        helped = run_cli(*door, "--help")
        assert "--host-id" in helped.stdout, door


def test_batch_rows_and_lines_carry_the_host_id(mr: Path, tmp_path: Path) -> None:
    data, log, lines = tmp_path / "data", tmp_path / "log", tmp_path / "out.ndjson"
    run_cli("batch", str(mr), "-d", str(data), "-l", str(log), "-j", "1",
            "--host-id", "rx-a", f"--log-ndjson={lines}")  # fmt: skip
    rows = _rows(log)
    assert rows and {host for _, host in rows} == {"rx-a"}
    parsed = [json.loads(x) for x in lines.read_text().splitlines()]
    assert parsed and all(x["host"] == "rx-a" for x in parsed)


def test_the_default_host_id_is_the_host_name(mr: Path, tmp_path: Path) -> None:
    """The per-instance door, without the flag: the row (pending, then folded by
    ``status``) and the line name ``socket.gethostname()``."""
    data, log = tmp_path / "data", tmp_path / "log"
    data.mkdir()
    log.mkdir()
    first = dicom_files(mr)[0]
    done = run_cli("--xcrdir", str(first.parent), "--xcrfile", first.name,
                   "-d", str(data), "-l", str(log), "--log-ndjson")  # fmt: skip
    assert json.loads(done.stdout)["host"] == socket.gethostname()
    doc = json.loads(run_cli("status", "-l", str(log), "--json").stdout)
    (series,) = doc["patients"][0]["studies"][0]["series"]
    assert series["hosts"] == {socket.gethostname(): 1}
    assert _rows(log) == [(_rows(log)[0][0], socket.gethostname())]


def test_the_per_instance_door_imports_nothing_new(mr: Path, tmp_path: Path) -> None:
    """The host name comes from ``os.uname()``: no ``socket`` (nor anything else) is
    imported for it (``python -X importtime``)."""
    data, log = tmp_path / "data", tmp_path / "log"
    data.mkdir()
    log.mkdir()
    first = dicom_files(mr)[0]
    from helpers import dicom_repack_exe

    argv = [sys.executable, "-X", "importtime", dicom_repack_exe(), "--xcrdir",
            str(first.parent), "--xcrfile", first.name, "-d", str(data), "-l", str(log)]  # fmt: skip
    for extra in ([], ["--host-id", "rx-a"]):
        done = subprocess.run([*argv, *extra], capture_output=True, text=True, check=True)
        imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
        assert "socket" not in imported and "argparse" not in imported, extra


def test_an_older_index_gains_the_host_column(mr: Path, tmp_path: Path) -> None:
    """An index made before ``host`` (schema 1): the next door to file adds the column
    (``ALTER TABLE``), the old rows keep NULL, ``status`` counts them under no host."""
    data, log = tmp_path / "data", tmp_path / "log"
    files = dicom_files(mr)
    run_cli("batch", *map(str, files[:3]), "-d", str(data), "-l", str(log), "--host-id", "a")
    index = log / "dicom-repack-index.sqlite"
    with contextlib.closing(sqlite3.connect(index)) as conn:  # back to schema 1
        conn.execute("ALTER TABLE instances DROP COLUMN host")
        conn.execute("DROP TABLE series_claims")
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    run_cli("batch", *map(str, files[3:5]), "-d", str(data), "-l", str(log), "--host-id", "b")
    assert sorted(host or "" for _, host in _rows(log)) == ["", "", "", "b", "b"]
    with contextlib.closing(sqlite3.connect(index)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM series_claims").fetchone() == (0,)
    doc = json.loads(run_cli("status", "-l", str(log), "--json").stdout)
    (series,) = doc["patients"][0]["studies"][0]["series"]
    assert series["hosts"] == {"": 3, "b": 2}


def test_status_migrates_an_older_index_before_reading(mr: Path, tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "log"
    run_cli("batch", *map(str, dicom_files(mr)[:2]), "-d", str(data), "-l", str(log))
    with contextlib.closing(sqlite3.connect(log / "dicom-repack-index.sqlite")) as conn:
        conn.execute("ALTER TABLE instances DROP COLUMN host")
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    doc = json.loads(run_cli("status", "-l", str(log), "--json").stdout)
    (series,) = doc["patients"][0]["studies"][0]["series"]
    assert series["hosts"] == {"": 2}


def test_status_shows_per_host_counts_in_the_table_and_the_blocks(mr: Path, tmp_path: Path) -> None:
    """Two hosts filed one series: the table (``--wide``) has a Hosts column with each
    host's count, the 80-column blocks a Hosts line; one host alone adds neither."""
    import os

    data, log = tmp_path / "data", tmp_path / "log"
    files = dicom_files(mr)
    run_cli("batch", *map(str, files[:1]), "-d", str(data), "-l", str(log), "--host-id", "rx-a")
    alone = run_cli("status", "-l", str(log), "--wide").stdout
    assert "Hosts" not in alone
    run_cli("batch", *map(str, files[1:3]), "-d", str(data), "-l", str(log), "--host-id", "rx-b")
    wide = run_cli("status", "-l", str(log), "--wide").stdout
    assert "Hosts" in wide and "rx-a:1 rx-b:2" in wide, wide
    env = {**os.environ, "COLUMNS": "80"}
    narrow = run_cli("status", "-l", str(log), env=env).stdout
    assert "Hosts rx-a:1 rx-b:2" in narrow, narrow
