"""`listen` as a service, from the outside: config file precedence, timestamped log
lines (one per association), --log-file reopened on SIGHUP, associations in the index."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from helpers import REPO, dicom_repack_exe, run_cli, sqlite_db
from test_index import INDEX, make_corpus
from test_listen_support import dcmtk, dcmtk_env, listening, wait_for

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def storescu(port: int, *paths: Path, aet: str = "MODALITY1") -> None:
    argv = [dcmtk("storescu"), "-aet", aet, "-aec", "DICOM-REPACK", "127.0.0.1", str(port)]
    done = subprocess.run(
        argv + [str(p) for p in paths], capture_output=True, text=True, env=dcmtk_env(), timeout=300
    )
    assert done.returncode == 0, done.stderr


def start_line(*args: str, env: dict[str, str] | None = None) -> str:
    """The listener's first line (where it says what it listens as), then stop it."""
    argv = [dicom_repack_exe(), "listen", "--bind", "127.0.0.1", "--port", "0", *args]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, line
    return line


@pytest.mark.slow
def test_config_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "listen.toml"
    config.write_text(
        f'aet = "FROM-FILE"\nmax-associations = 3\ndatadir = "{tmp_path / "data"}"\n'
        'allow_calling = ["A", "B"]\nfsync = true\n'
    )
    assert "as FROM-FILE" in start_line("--config", str(config))
    assert (tmp_path / "data").is_dir()  # the file's datadir was used
    env = dict(os.environ, DICOM_REPACK_LISTEN_AET="FROM-ENV")
    assert "as FROM-ENV" in start_line("--config", str(config), env=env)
    env["DICOM_REPACK_LISTEN_CONFIG"] = str(config)
    assert "as FROM-ENV" in start_line(env=env)
    assert "as FROM-FLAG" in start_line("--aet", "FROM-FLAG", env=env)


def test_the_shipped_config_file_is_accepted(tmp_path: Path) -> None:
    """deploy/listen.toml as installed; the flags move its folders into tmp_path."""
    line = start_line(
        "--config", str(REPO / "deploy" / "listen.toml"), "-d", str(tmp_path / "data"),
        "-l", str(tmp_path / "log"), "--log-file", str(tmp_path / "listen.log"),
    )  # fmt: skip
    assert "as DICOM-REPACK" in line
    assert (tmp_path / "listen.log").exists()


@pytest.mark.parametrize(
    "text, complaint",
    [("bogus-option = 1\n", "unknown option 'bogus-option'"),
     ("port = 'x'\n", "port"),
     ("port = \n", "not TOML")],
)  # fmt: skip
def test_a_bad_config_file_is_refused_in_one_line(
    tmp_path: Path, text: str, complaint: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    proc = run_cli("listen", "--config", str(config), "-d", str(tmp_path / "d"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and complaint in proc.stderr and str(config) in proc.stderr


@pytest.mark.dcmtk
def test_one_log_line_per_association_and_sighup_reopens_the_log_file(tmp_path: Path) -> None:
    files = sorted(make_corpus(tmp_path / "in", 6, patients=1, studies=1, series=2).rglob("*.dcm"))
    log_file = tmp_path / "listen.log"
    data, log = tmp_path / "data", tmp_path / "log"
    with listening(data, "--logdir", str(log), "--log-file", str(log_file),
                   "--log-level", "info") as li:  # fmt: skip
        storescu(li.port, *files[:4])
        wait_for(lambda: "association" in log_file.read_text(), what="the association line")
        rotated = tmp_path / "listen.log.1"
        log_file.rename(rotated)
        li.proc.send_signal(signal.SIGHUP)
        wait_for(log_file.exists, what="the log file reopened")
        storescu(li.port, *files[4:], aet="MODALITY2")
        wait_for(lambda: "MODALITY2" in log_file.read_text(), what="the second association line")
        assert li.stop() == 0
    first = rotated.read_text().splitlines()
    (line,) = [x for x in first if "MODALITY1" in x]
    assert re.match(STAMP + r" INFO ", line), line
    assert "MODALITY1 -> DICOM-REPACK" in line and "4 instances" in line and "released" in line
    assert ("127.0.0.1:" in line and " s," in line) or " s " in line
    second = log_file.read_text()
    assert "reopened" in second and "2 instances" in second
    with sqlite_db(log / INDEX) as conn:
        assocs = conn.execute(
            "SELECT calling_ae, instances, result, ended >= started FROM associations "
            "ORDER BY started"
        ).fetchall()
        calling = dict(conn.execute("SELECT calling_ae, count(*) FROM instances GROUP BY 1"))
    assert assocs == [("MODALITY1", 4, "released", 1), ("MODALITY2", 2, "released", 1)]
    assert calling == {"MODALITY1": 4, "MODALITY2": 2}
    # the association ended, so status calls its series complete however short the wait
    doc = json.loads(run_cli("status", "-l", str(log), "--json", "--series-idle", "3600").stdout)
    states = {s["state"] for p in doc["patients"] for st in p["studies"] for s in st["series"]}
    assert states == {"complete"}


@pytest.mark.parametrize("door", ["listen", "watch"])
def test_every_option_is_recorded_for_the_config_file_and_environment(door: str) -> None:
    """The config file and the environment reach every option, however it was declared
    (on the parser, in a group, from doors/options.py): the parser records each as it is
    declared, instead of reading argparse's private list of them."""
    from dicom_repack.listen import cli as listen_cli
    from dicom_repack.watch import cli as watch_cli

    parser = (listen_cli if door == "listen" else watch_cli).build_parser()
    shown = set(re.findall(r"^  (?:-\w[^,]*, )?(--[a-z][A-Za-z0-9-]*)", parser.format_help(), re.M))
    declared = {
        name for o in parser.declared.values() for name in o.action.option_strings
    }  # fmt: skip
    assert shown <= declared, shown - declared
    kinds = {o.dest: o.kind for o in parser.declared.values()}
    assert kinds["fsync"] == "store_true" and kinds["datadir"] == "store"
    if door == "listen":
        assert kinds["allow_calling"] == "append"
        help_text = run_cli("listen", "--help").stdout
        flat = " ".join(help_text.split())
        for dest in ("aet", "tls_cert", "series_idle", "log_file", "fsync", "layout"):
            assert f"[env: DICOM_REPACK_LISTEN_{dest.upper()}]" in flat, dest
