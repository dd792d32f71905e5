"""Per-file cost of the fast header path against pydicom, on both shared corpora.

    .venv/bin/python benchmarks/header_speed.py [--runs N] [--process-runs M]

For each corpus: reads every file with ``read_header`` (the fast path; asserts
none fell back) and with ``read_header_pydicom`` (pydicom already imported),
asking for the CORE keywords, N times (default 7); prints the median per-file
time of each and their ratio. Then the per-instance view: the wall time of a
fresh interpreter that imports the fast path and reads one file, against a bare
interpreter and one that imports pydicom (median of M runs, default 21).
Files are read from the page cache (one warm-up pass first).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent / "src"))

import corpora  # noqa: E402
from dicom_repack.core.header import (  # noqa: E402
    _Unsupported,
    read_header,
    read_header_fast,
    read_header_pydicom,
)
from dicom_repack.core.keywords import CORE  # noqa: E402

KEYWORDS = tuple(CORE)


def per_file_us(funcs: list[object], files: list[Path], runs: int) -> list[float]:
    """Median per-file microseconds of each reader; runs interleaved so load hits all alike."""
    times: list[list[float]] = [[] for _ in funcs]
    for _ in range(runs):
        for i, func in enumerate(funcs):
            start = time.perf_counter()
            for path in files:
                func(path, KEYWORDS)  # type: ignore[operator]
            times[i].append((time.perf_counter() - start) / len(files) * 1e6)
    return [statistics.median(t) for t in times]


def process_ms(codes: list[str], runs: int, env: dict[str, str]) -> list[float]:
    """Median wall milliseconds of ``python -c CODE`` for each code, interleaved."""
    for code in codes:  # warm-up: writes the .pyc files an installed package would have
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
    times: list[list[float]] = [[] for _ in codes]
    for _ in range(runs):
        for i, code in enumerate(codes):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=env)
            times[i].append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--process-runs", type=int, default=21)
    args = parser.parse_args()

    import pydicom

    with tempfile.TemporaryDirectory() as tmp:
        first: Path | None = None
        print(
            f"python {sys.version.split()[0]}, pydicom {pydicom.__version__}, {len(KEYWORDS)} CORE keywords"
        )
        print(
            f"{'corpus':26} {'files':>5} {'fast us/file':>13} {'pydicom us/file':>16} {'ratio':>6}"
        )
        for name in corpora.INNER:
            try:
                folder = corpora.unpack(name, Path(tmp))
            except corpora.CorpusMissing:
                print(f"{name}: tarball absent, skipped")
                continue
            files = corpora.dicom_files(folder)
            first = first or files[0]
            for path in files:  # warm the page cache; the fast path must not decline
                try:
                    read_header_fast(path, KEYWORDS)
                except _Unsupported as exc:
                    raise SystemExit(f"{path}: fast path declined ({exc})") from None
                read_header_pydicom(path, KEYWORDS)
            fast, ref = per_file_us([read_header, read_header_pydicom], files, args.runs)
            print(f"{name:26} {len(files):5} {fast:13.1f} {ref:16.1f} {ref / fast:5.1f}x")

        if first is not None and args.process_runs:
            # A fresh interpreter per instance, as the per-instance door runs; byte code
            # cached (in a private prefix) as for an installed package.
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
            env["PYTHONPATH"] = str(HERE.parent / "src")
            fast_code = (
                "from dicom_repack.core.header import read_header\n"
                "from dicom_repack.core.keywords import CORE\n"
                f"read_header({str(first)!r}, tuple(CORE))"
            )
            ref_code = (
                "from dicom_repack.core.header import read_header_pydicom\n"
                "from dicom_repack.core.keywords import CORE\n"
                f"read_header_pydicom({str(first)!r}, tuple(CORE))"
            )
            bare, fast_proc, ref_proc = process_ms(
                ["pass", fast_code, ref_code], args.process_runs, env
            )
            print(f"\nfresh interpreter, one file (median of {args.process_runs}):")
            print(f"  bare 'python -c pass'        {bare:7.1f} ms")
            print(
                f"  import + fast read_header    {fast_proc:7.1f} ms  (+{fast_proc - bare:.1f} ms)"
            )
            print(f"  import + pydicom read        {ref_proc:7.1f} ms  (+{ref_proc - bare:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
