"""Long fuzz run of the fast header path against pydicom.

    .venv/bin/python benchmarks/fuzz_header.py [SECONDS]   # default 180

The same two generators as tests/test_header.py, driven by hypothesis for as long
as asked instead of a few hundred examples: random values of every VR under
assorted character sets and byte orders, and random mutations (truncations, byte
flips, extreme lengths, deletions, insertions, duplications) of real files (both
shared corpora when present, and several of pydicom's test files). Each case must
give pydicom's Header, or a clean one-line NotDicomError/TruncatedError, or be
declined and then give pydicom's answer through the fallback (tests/corpora.py
``check``). Prints how many cases ran and every mismatch (with the bytes saved
under /tmp for replay); exits 1 if there was any.
"""

from __future__ import annotations

import logging
import random
import sys
import tarfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent / "src"))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import corpora  # noqa: E402


def seeds() -> list[tuple[str, bytes]]:
    from pydicom.data import get_testdata_file

    names = [
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small.dcm",
        "nested_priv_SQ.dcm",
        "priv_SQ.dcm",
        "rtplan.dcm",
        "rtstruct.dcm",
        "JPEG2000.dcm",
        "UN_sequence.dcm",
        "reportsi.dcm",
        "SC_rgb_rle.dcm",
        "waveform_ecg.dcm",
    ]
    out = [(n, Path(get_testdata_file(n)).read_bytes()) for n in names]  # type: ignore[arg-type]
    for name in corpora.INNER:
        src = corpora.tarball(name)
        if not src.exists():
            print(f"note: {src} absent, fuzzing without it")
            continue
        with tarfile.open(src) as tf:
            members = [m for m in tf.getmembers() if m.name.endswith(".dcm")][:3]
            for m in members:
                out.append((m.name, tf.extractfile(m).read()))  # type: ignore[union-attr]
    return out


def main() -> int:
    duration = float(sys.argv[1]) if len(sys.argv) > 1 else 180.0
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    files = seeds()
    stats = {"mutation": 0, "value": 0}
    problems: list[str] = []

    def record(kind: str, data: bytes, problem: str | None) -> None:
        stats[kind] += 1
        if problem is not None:
            path = Path(f"/tmp/fuzz_header_mismatch_{len(problems)}.dcm")
            path.write_bytes(data)
            problems.append(f"{kind} case -> {path}: {problem}")
            print("MISMATCH", problems[-1][:2000], flush=True)

    batch = settings(
        max_examples=500,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )

    @batch
    @given(seed=st.sampled_from(range(len(files))), rng=st.randoms(use_true_random=True))
    def mutation_case(seed: int, rng: random.Random) -> None:
        data = files[seed][1]
        for _ in range(rng.randint(1, 4)):
            data = corpora.mutate(data, rng)
        record("mutation", data, corpora.check(data))

    @batch
    @given(
        vr=st.sampled_from(sorted(corpora.VR_KEYWORDS)),
        values=st.lists(
            st.lists(st.sampled_from(corpora.VALUE_ALPHABET), max_size=40), min_size=1, max_size=4
        ),
        charset=st.sampled_from(corpora.CHARSETS),
        little=st.booleans(),
    )
    def value_case(vr: str, values: list[list[int]], charset: bytes | None, little: bool) -> None:
        data, keywords = corpora.value_case(vr, values, charset, little)
        record("value", data, corpora.check(data, keywords))

    start = time.monotonic()
    while time.monotonic() - start < duration:
        mutation_case()
        value_case()
        elapsed = time.monotonic() - start
        print(
            f"{elapsed:6.0f} s: {stats['mutation']} mutation + {stats['value']} value cases, "
            f"{len(problems)} mismatches",
            flush=True,
        )
    total = stats["mutation"] + stats["value"]
    print(
        f"ran {total} cases ({stats['mutation']} mutations of {len(files)} real files, "
        f"{stats['value']} random values) in {time.monotonic() - start:.0f} s: "
        f"{len(problems)} mismatches"
    )
    print("fast path outcomes:", dict(sorted(corpora.OUTCOMES.items())))
    for line in problems:
        print(" ", line[:2000])
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
