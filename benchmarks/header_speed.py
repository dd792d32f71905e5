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
from dicom_repack.header import (  # noqa: E402
    _Unsupported,
    read_header,
    read_header_fast,
    read_header_pydicom,
)
from dicom_repack.keywords import CORE  # noqa: E402

KEYWORDS = tuple(CORE)


def per_file_us(func: object, files: list[Path], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for path in files:
            func(path, KEYWORDS)  # type: ignore[operator]
        times.append((time.perf_counter() - start) / len(files) * 1e6)
    return statistics.median(times)


def process_ms(code: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


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
            fast = per_file_us(read_header, files, args.runs)
            ref = per_file_us(read_header_pydicom, files, args.runs)
            print(f"{name:26} {len(files):5} {fast:13.1f} {ref:16.1f} {ref / fast:5.1f}x")

        if first is not None and args.process_runs:
            bare = process_ms("pass", args.process_runs)
            fast_code = (
                "from dicom_repack.header import read_header\n"
                "from dicom_repack.keywords import CORE\n"
                f"read_header({str(first)!r}, tuple(CORE))"
            )
            ref_code = (
                "from dicom_repack.header import read_header_pydicom\n"
                "from dicom_repack.keywords import CORE\n"
                f"read_header_pydicom({str(first)!r}, tuple(CORE))"
            )
            fast_proc = process_ms(fast_code, args.process_runs)
            ref_proc = process_ms(ref_code, args.process_runs)
            print(f"\nfresh interpreter, one file (median of {args.process_runs}):")
            print(f"  bare 'python -c pass'        {bare:7.1f} ms")
            print(
                f"  import + fast read_header    {fast_proc:7.1f} ms  (+{fast_proc - bare:.1f} ms)"
            )
            print(f"  import + pydicom read        {ref_proc:7.1f} ms  (+{ref_proc - bare:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
