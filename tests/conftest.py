"""Shared fixtures: the two shared corpora, unpacked once per test session.

The tarballs live in ../shared/data beside the checkout (read only; CI has them
there too). Tests that need them are skipped, loudly, where they are absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
EXPECTED = SHARED / "expected"

#: corpus name -> folder (inside the tarball) that holds its DICOM files
CORPORA = {"SAG-anon": "SAG-anon", "example-dicom-structural": "example-dicom-structural/dicoms"}


def dicom_repack_exe() -> str:
    """The installed console script (the thing users run), beside this interpreter."""
    exe = Path(sys.executable).parent / "dicom-repack"
    if not exe.exists():
        found = shutil.which("dicom-repack")
        if found is None:
            pytest.fail("the dicom-repack console script is not installed (pip install -e .)")
        return found
    return str(exe)


def run_cli(*args: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run the console script; fail the test with its output if it fails unexpectedly."""
    proc = subprocess.run([dicom_repack_exe(), *args], capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if check and proc.returncode != 0:
        pytest.fail(
            f"dicom-repack {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="session")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both shared corpora unpacked (read-only use: copy before modifying)."""
    out: dict[str, Path] = {}
    base = tmp_path_factory.mktemp("corpora")
    for name, inner in CORPORA.items():
        tarball = SHARED / f"{name}.tar.gz"
        if not tarball.exists():
            pytest.skip(f"{tarball} is absent (the shared corpora sit beside the checkout)")
        with tarfile.open(tarball) as tf:
            tf.extractall(base, filter="data")
        out[name] = base / inner
    return out


@pytest.fixture()
def sag(corpora: dict[str, Path]) -> Path:
    return corpora["SAG-anon"]


def dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".dcm")


os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
