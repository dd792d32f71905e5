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
from hypothesis import given, settings
from hypothesis import strategies as st

from dicom_repack.doors import batch, instance, options
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
    # the data file + six records (patient, study, study-series, series, image, pack), then
    # the folders naming them: the data file's four (series, study, patient, the data
    # folder) and six in the log folder (patientData, studyData, its -series folder,
    # seriesData, its -img folder, the log folder)
    assert len(count.read_text()) == 7 + 4 + 6


def test_python_dash_m_is_the_same_program() -> None:
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "dicom_repack", "--help"], capture_output=True, text=True, check=True
    )
    assert proc.stdout == run_cli("--help").stdout


# -- the batch door's plain-command-line parser (options.parse_plain) ---------------------


def _segments() -> list[tuple[str, ...]]:
    """Pieces a batch command line is made of: every batch flag by each of its names with
    plain and odd values, paths, and words only argparse handles."""
    values = ["in", "/data", "x y", "", "-", "2", "0", "-3", "px", "rx", "a=b", "--cleanup"]
    out: list[tuple[str, ...]] = []
    for flag in batch._flags():
        for name in flag[options.NAMES]:
            if flag[options.KIND] == options.BOOL:
                out += [(name,), (f"{name}=1",)]
            else:
                out += [(name, v) for v in values] + [(f"{name}={v}",) for v in values[:6]]
                if flag[options.KIND] == options.OPTIONAL:
                    out.append((name,))
    odd = ["--", "-h", "--help", "--datad", "-j2", "-j=2", "-vj", "--unknown", "-x y"]
    return out + [(w,) for w in ["in", "other", "-", "x y", "", "a=b", *odd]]


_SEGMENTS = _segments()


def _argparse_batch(argv: list[str]) -> dict[str, object] | None:
    """vars() of argparse's namespace for ``argv``, or None where argparse exits (error, help)."""
    import contextlib
    import io

    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            return vars(batch.build_parser().parse_args(argv))
    except SystemExit:
        return None


@pytest.mark.parametrize(
    "argv",
    [
        ["in", "--datadir", "/d", "--logdir", "/l", "--no-progress"],
        ["--datadir=/d", "-j", "2", "in", "other", "--log-ndjson"],
        ["-", "-d", "/d", "--log-ndjson", "/l.nd", "--cleanup", "--layout", "px", "-v"],
        ["a", "b", "-d", "/d", "--index", "/i.sqlite", "--no-index", "--strict", "--fsync"],
        ["in", "-d", "/d", "--summary-json", "s.json", "--dask", "local:2", "--jobs=3"],
    ],
)
def test_batch_reads_a_plain_command_line_as_argparse_does(argv: list[str]) -> None:
    plain = options.parse_plain(argv, batch._flags(), positional="paths", required=["datadir"])
    assert plain is not None
    assert plain == _argparse_batch(argv)


@pytest.mark.slow
@given(
    st.lists(st.sampled_from(_SEGMENTS), max_size=6),
    st.booleans(),
    st.integers(min_value=0, max_value=6),
)
@settings(max_examples=1500, deadline=None)
def test_batch_parser_agrees_with_argparse_or_leaves_it_the_command_line(
    segments: list[tuple[str, ...]], usual: bool, where: int
) -> None:
    """On any command line: parse_plain gives argparse's result, or None (argparse then
    decides) -- never a different reading, never one argparse would refuse. (``usual``
    puts a path and --datadir in, somewhere, so that most lines are complete.)"""
    if usual:
        segments = [*segments]
        segments.insert(min(where, len(segments)), ("in",))
        segments.insert(min(where // 2, len(segments)), ("--datadir", "/d"))
    argv = [word for segment in segments for word in segment]
    plain = options.parse_plain(argv, batch._flags(), positional="paths", required=["datadir"])
    if plain is not None:
        assert plain == _argparse_batch(argv), argv


def test_batch_parses_a_plain_command_line_without_argparse(tmp_path: Path) -> None:
    """argparse (with re, enum, gettext, locale, shutil) stays out of a plain batch;
    a usage error still gets argparse's usage line."""
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")  # python -X importtime
    src = tmp_path / "in"
    src.mkdir()
    make_instance(src / "a.dcm")
    argv = ["batch", str(src), "--datadir", str(tmp_path / "d"), "--no-progress", "-j", "1"]
    proc = run_cli(*argv, env=env)
    imported = {
        line.split("|")[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "1 instances filed" in proc.stdout
    assert sorted(imported & {"argparse", "re", "enum", "gettext", "locale", "shutil"}) == []
    bad = run_cli(*argv, "-j", "0", check=False)
    assert bad.returncode == 2
    assert bad.stderr == "dicom-repack batch: --jobs must be at least 1 (see --help)\n"
