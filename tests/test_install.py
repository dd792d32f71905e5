"""The console script from a wheel, in a fresh virtual environment (issue 11, target 2).

Builds the wheel with ``pip wheel`` (hatchling from pip's cache or PyPI; the test
skips when it cannot be built offline), installs it without dependencies into a
new venv and files a typical instance through the per-instance door, started as
the shebang starts it and under ``python -S``: a typical instance needs none of
the dependencies (no pydicom import).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from test_dump import series_dump, typical_instance

#: builds a wheel and a fresh venv: minutes, not seconds (pytest -m 'not slow' leaves it out)
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def test_wheel_in_a_fresh_venv_files_an_instance_with_and_without_site(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if built.returncode != 0:
        pytest.skip(f"cannot build the wheel here (offline?): {built.stderr.strip()[-300:]}")
    (wheel,) = dist.glob("dicom_repack-*.whl")
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        assert "dicom_repack/py.typed" in zf.namelist(), "the wheel ships py.typed (PEP 561)"
    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
         "--no-deps", "--no-index", str(wheel)],
        check=True, timeout=300,
    )  # fmt: skip
    exe = venv / "bin" / "dicom-repack"
    assert exe.read_text().startswith(f"#!{venv / 'bin' / 'python'}")
    data, log = tmp_path / "data", tmp_path / "log"
    for i, prefix in enumerate(([], [str(venv / "bin" / "python"), "-S"])):
        src = typical_instance(tmp_path / f"in{i}.dcm", sop=f"1.2.826.0.1.3680043.8.498.{i + 1}")
        done = subprocess.run(
            [*prefix, str(exe), "--xcrdirfile", str(src), "--datadir", str(data), "--logdir", str(log)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
    assert len([p for p in data.rglob("*.dcm")]) == 2
    assert series_dump(log)["PatientID"] == "1449c1d"
