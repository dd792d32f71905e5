"""What an operator installs beside the code: the systemd unit and the licence."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import REPO, dicom_repack_exe

UNIT = REPO / "deploy" / "dicom-repack-listen.service"
WATCH_UNIT = REPO / "deploy" / "dicom-repack-watch.service"


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    proc = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    if "Failed to" in proc.stderr and "manager" in proc.stderr.lower():
        pytest.skip(f"systemd-analyze cannot run in this container: {proc.stderr.strip()}")
    return proc


def _installed_copy(tmp_path: Path, text: str, name: str = UNIT.name) -> Path:
    """The unit as installed, with ExecStart pointing at this checkout's console script
    (verify checks that the program exists)."""
    unit = tmp_path / name
    unit.write_text(text.replace("/opt/dicom-repack/bin/dicom-repack", dicom_repack_exe()))
    return unit


def test_unit_verifies_clean_and_is_sandboxed(tmp_path: Path) -> None:
    text = UNIT.read_text()
    proc = _verify(_installed_copy(tmp_path, text))
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#"
    )
    assert settings["User"] == "dicom-repack"
    assert settings["ProtectSystem"] == "strict"
    assert settings["NoNewPrivileges"] == "yes"
    assert "/srv/dicom-repack/data" in settings["ReadWritePaths"]
    assert "/srv/dicom-repack/log" in settings["ReadWritePaths"]
    assert "--config /etc/dicom-repack/listen.toml" in settings["ExecStart"]


def test_watch_unit_verifies_clean_and_stops_the_main_process_only(tmp_path: Path) -> None:
    text = WATCH_UNIT.read_text()
    proc = _verify(_installed_copy(tmp_path, text, WATCH_UNIT.name))
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#"
    )
    assert settings["ProtectSystem"] == "strict"
    assert settings["KillMode"] == "mixed"  # the watcher stops its own workers
    for folder in ("incoming", "data", "log"):
        assert f"/srv/dicom-repack/{folder}" in settings["ReadWritePaths"]
    assert "watch --config /etc/dicom-repack/watch.toml" in settings["ExecStart"]


def test_watch_config_is_what_watch_reads(tmp_path: Path) -> None:
    """deploy/watch.toml as installed (its folders moved into tmp_path by flags)."""
    from helpers import run_cli

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    proc = run_cli(
        "watch", "--config", str(REPO / "deploy" / "watch.toml"), str(incoming),
        "-d", str(tmp_path / "data"), "-l", str(tmp_path / "log"),
        "--log-file", str(tmp_path / "watch.log"), "--help",
    )  # fmt: skip
    assert "--retry-failed" in proc.stdout


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The clean verdict above means something: a bad value is reported."""
    broken = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=sometimes")
    proc = _verify(_installed_copy(tmp_path, broken))
    assert "protect system value" in proc.stderr, proc.stderr


def test_licence_is_mit_as_the_readme_says() -> None:
    licence = (REPO / "LICENSE").read_text()
    assert licence.startswith("MIT License")
    assert "dicom-repack contributors" in licence
    assert "Licence: MIT" in (REPO / "README.md").read_text()
