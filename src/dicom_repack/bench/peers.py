"""The rivals: where px-repack and rx-repack are, and setting px-repack up when it is absent.

px-repack (pypx) needs pydicom 2 while dicom-repack needs pydicom 3, so it lives in
its own virtual environment under the user's cache folder
(``$XDG_CACHE_HOME/dicom-repack/px-repack``, by default ``~/.cache/...``). When the
bench does not find it, it creates that environment and pip-installs the exact
version the seed experiment and the reference outputs used (pypx 3.12.6 with
pydicom < 3), once; a marker file says the install finished, so an interrupted
install is redone rather than trusted. ``--no-setup`` skips this; a machine that
cannot reach the package index gets one line saying what to run.

rx-repack (FNNDSC/pypx-listener, Rust) is not published as a crate (crates.io has no
``rx-repack``), so it is not set up here: it is found on PATH, in
``~/.cargo/bin``, or given with ``--rx-repack``; docs/bench.md gives its build steps.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "PYDICOM_FOR_PX",
    "PYPX_VERSION",
    "cache_dir",
    "find_px_repack",
    "find_rx_repack",
    "px_setup_command",
    "px_venv",
    "rx_version",
    "setup_px_repack",
]

PYPX_VERSION = "3.12.6"
PYDICOM_FOR_PX = "pydicom>=2.4,<3"
_MARKER = ".dicom-repack-setup-complete"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/dicom-repack`` (``~/.cache/dicom-repack`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dicom-repack"


def px_venv() -> Path:
    return cache_dir() / "px-repack"


def px_setup_command(venv: Path | None = None) -> str:
    """The shell command that sets px-repack up by hand (what the bench runs itself)."""
    v = venv or px_venv()
    return f"python3 -m venv {v} && {v}/bin/pip install 'pypx=={PYPX_VERSION}' '{PYDICOM_FOR_PX}'"


def _installed(venv: Path) -> str | None:
    exe = venv / "bin" / "px-repack"
    return str(exe) if exe.exists() and (venv / _MARKER).exists() else None


def find_px_repack(explicit: str | None = None) -> str | None:
    """``--px-repack`` if given (None when it does not exist), else PATH, else the
    bench's own install in the cache folder, else ``./.venv-px`` (the old setup script's)."""
    if explicit:
        return explicit if Path(explicit).exists() or shutil.which(explicit) else None
    found = shutil.which("px-repack")
    if found:
        return found
    own = _installed(px_venv())
    if own:
        return own
    legacy = Path.cwd() / ".venv-px" / "bin" / "px-repack"
    return str(legacy) if legacy.exists() else None


def find_rx_repack(explicit: str | None = None) -> str | None:
    """``--rx-repack`` if given, else PATH, else ``~/.cargo/bin/rx-repack``."""
    if explicit:
        return explicit if Path(explicit).exists() or shutil.which(explicit) else None
    found = shutil.which("rx-repack")
    if found:
        return found
    cargo = Path.home() / ".cargo" / "bin" / "rx-repack"
    return str(cargo) if cargo.exists() else None


def rx_version(program: str) -> str:
    """rx-repack has no ``--version``: read it from the Cargo.toml of the checkout it was
    built in (``<checkout>/target/release/rx-repack``), when it is there."""
    path = Path(program).resolve()
    for parent in list(path.parents)[:4]:
        manifest = parent / "Cargo.toml"
        if manifest.is_file():
            try:
                import tomllib

                data = tomllib.loads(manifest.read_text(encoding="utf-8"))
                pkg = data.get("package", {})
                return f"{pkg.get('name', 'rx-repack')} {pkg.get('version', '?')} (built from {parent})"
            except (OSError, ValueError):
                break
    return "rx-repack (version unknown: it has no --version)"


def setup_px_repack(say: Callable[[str], None], venv: Path | None = None) -> str | None:
    """Create ``venv`` (default :func:`px_venv`) and install pypx into it; return the
    path of px-repack, or None (after one line through ``say``) when it cannot be done.

    ``say`` prints a line (the progress line before, the reason on failure)."""
    venv = venv or px_venv()
    done = _installed(venv)
    if done:
        return done
    say(
        f"setting up px-repack (pypx {PYPX_VERSION} with pydicom < 3) in {venv}, once "
        "(about 15 s; --no-setup skips it)"
    )
    if venv.exists():  # an interrupted earlier install: start over
        shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--retries",
            "1",
            "--timeout",
            "20",
            f"pypx=={PYPX_VERSION}",
            PYDICOM_FOR_PX,
        ],
    ]
    for argv in steps:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = str(exc)
        else:
            if proc.returncode == 0:
                continue
            tail = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
            reason = tail[-1] if tail else f"exit status {proc.returncode}"
        say(
            f"px-repack could not be set up ({reason[:160]}); it will not race. "
            f"To set it up by hand: {px_setup_command(venv)} (or pass --px-repack PATH)"
        )
        return None
    exe = venv / "bin" / "px-repack"
    if not exe.exists():
        say(f"pypx installed but {exe} is missing; px-repack will not race")
        return None
    (venv / _MARKER).write_text(f"pypx=={PYPX_VERSION}\n", encoding="utf-8")
    return str(exe)
