"""Each option declared once (doors/options.py), one NDJSON encoder and flag, --fsync everywhere.

From the outside: every door's --help shows the shared flags with the same words;
the per-instance door's hand-written parser reads a command line exactly as the
argparse parser built from the same declarations does.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from dicom_repack.doors import instance, options
from helpers import run_cli
from test_doors_faults import make_instance

SHARED = options.DESTINATION + options.FILING + options.LAYOUT


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_every_door_shows_the_shared_flags_with_the_same_help() -> None:
    helps = {
        door: _one_line(run_cli(*door.split(), "--help").stdout) for door in ("", "batch", "listen")
    }
    for flag in SHARED:
        name, words = options.long_name(flag), flag[options.HELP]
        for door, text in helps.items():
            if door == "listen" and flag is options.CLEANUP:
                continue  # a receiver has no source to clean up
            assert name in text, (door, name)
            if words:
                assert _one_line(words.replace("%%", "%"))[:40] in text, (door, name)


@pytest.mark.parametrize(
    "argv",
    [
        ["-p", "/in", "-f", "x.dcm", "-d", "/data", "-l", "/log", "--cleanup", "--fsync"],
        ["--xcrdirfile", "/in/x.dcm", "--datadir=/data", "--log-ndjson", "-v", "1"],
        ["--xcrdirfile", "/x", "-d", "/d", "--log-ndjson", "/tmp/lines.ndjson"],
        ["--xcrdirfile", "/x", "-d", "/d", "--log-ndjson=/tmp/l", "--layout", "px"],
        ["-d", "/d", "--rootDirTemplate", "%PatientID", "--imageFileTemplate", "%SOPInstanceUID"],
        ["--xcrdir", "/in", "--parseAllFilesWithSubStr", ",", "-d", "/d", "--debug"],
    ],
)
def test_fast_parser_reads_a_command_line_as_argparse_does(argv: list[str]) -> None:
    fast = instance.parse(argv)
    ns = vars(instance.build_parser().parse_args(argv))
    given = {k: v for k, v in ns.items() if v not in (None, False)}
    assert fast == given


def test_log_ndjson_is_one_flag_and_one_format_in_every_door(tmp_path: Path) -> None:
    src = make_instance(tmp_path / "a.dcm")
    lines = tmp_path / "lines.ndjson"
    run_cli("--xcrdirfile", str(src), "-d", str(tmp_path / "d1"), f"--log-ndjson={lines}")
    run_cli("batch", str(src), "-d", str(tmp_path / "d2"), "--log-ndjson", str(lines))
    first, second = lines.read_text().splitlines()
    for line in (first, second):
        rec = json.loads(line)
        assert rec["src"] == str(src) and rec["error"] is None
        assert line == json.dumps(rec, separators=(",", ":")), "compact, as rx-repack writes"
    # bare: on stdout, the same encoder
    out = run_cli("--xcrdirfile", str(src), "-d", str(tmp_path / "d3"), "--log-ndjson").stdout
    assert json.loads(out)["dst"].startswith(str(tmp_path / "d3"))


def test_fsync_in_the_per_instance_door(tmp_path: Path) -> None:
    """--fsync reaches the core from the per-instance door too: every file and record is
    flushed (counted by a sitecustomize in the real console script's interpreter)."""
    src = make_instance(tmp_path / "a.dcm")
    hook = tmp_path / "hook"
    hook.mkdir()
    count = tmp_path / "fsyncs"
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "_real = os.fsync\n"
        "def _counted(fd):\n"
        f"    with open({str(count)!r}, 'a') as fh:\n"
        "        fh.write('x')\n"
        "    return _real(fd)\n"
        "os.fsync = _counted\n"
    )
    env = {**os.environ, "PYTHONPATH": str(hook)}
    args = ["--xcrdirfile", str(src), "-l", str(tmp_path / "log")]
    run_cli(*args, "-d", str(tmp_path / "plain"), env=env)
    assert not count.exists(), "no fsync unless asked"
    run_cli(
        *args, "-d", str(tmp_path / "durable"), "-l", str(tmp_path / "log2"), "--fsync", env=env
    )
    # the data file + six records (patient, study, study-series, series, image, pack)
    assert len(count.read_text()) == 7


def test_python_dash_m_is_the_same_program() -> None:
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "dicom_repack", "--help"], capture_output=True, text=True, check=True
    )
    assert proc.stdout == run_cli("--help").stdout
