"""Benchmark corpora: find the instances of any folder tree, or grow one from seeds.

``dicom-repack corpus OUT --from SEED_DIR`` clones the seed instances with fresh,
deterministic UIDs over several patients, studies and series until it has
``--instances N`` files or ``--size 76GB`` of them. It exists so that anyone can
rebuild a corpus the size of the seed experiment's (76 GB of MR phantoms) from the
small folders that ship with the project, and so that ``bench`` has a default
corpus that needs no download at all (pydicom's bundled example files).

Generation streams: each clone is written as soon as it is made, only the seeds'
headers stay in memory (plus a small, byte-bounded cache of parsed seeds), so memory
stays flat whatever ``--size`` says.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from ..core.sizes import parse_size
from ..doors.plumbing import fail

__all__ = [
    "DEFAULT_SEED_FILES",
    "CorpusSpec",
    "describe_corpus",
    "find_instances",
    "generate_corpus",
    "is_part10",
    "main",
    "parse_size",
]

#: pydicom's bundled example files used for the default corpus: valid Part 10,
#: little endian, uncompressed, and shipped inside the wheel (no download).
DEFAULT_SEED_FILES: tuple[str, ...] = ("MR_small.dcm", "CT_small.dcm", "MR_small_implicit.dcm")

#: name of the manifest ``generate_corpus`` writes at the corpus root (not DICOM, so
#: ``find_instances`` never counts it)
MANIFEST = "corpus.json"


def is_part10(path: str | os.PathLike[str]) -> bool:
    """True when the file has the DICOM Part 10 magic ('DICM' after the 128-byte preamble).

    A cheap sniff, so that READMEs, licences and manifests lying in a corpus folder are
    never counted as instances (SAG-anon ships both)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def find_instances(root: str | os.PathLike[str]) -> list[Path]:
    """Every Part 10 file under ``root`` (recursively), sorted for a stable order."""
    out: list[Path] = []
    stack = [os.fspath(root)]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file() and is_part10(entry.path):
                    out.append(Path(entry.path))
    out.sort()
    return out


def describe_corpus(
    root: str | os.PathLike[str], files: list[Path] | None = None
) -> dict[str, Any]:
    """What the report says about a corpus: where, how many instances, how many bytes,
    and how it was made (the manifest, when ``generate_corpus`` made it)."""
    files = find_instances(root) if files is None else files
    total = sum(f.stat().st_size for f in files)
    desc: dict[str, Any] = {
        "path": str(Path(root).resolve()),
        "instances": len(files),
        "bytes": total,
        "mean_instance_bytes": (total / len(files)) if files else 0,
    }
    manifest = Path(root) / MANIFEST
    if manifest.is_file():
        try:
            desc["generated"] = json.loads(manifest.read_text())
        except (OSError, ValueError):
            pass
    return desc


@dataclass(frozen=True, slots=True)
class CorpusSpec:
    """How big a corpus to grow, and how to spread it over patients, studies, series.

    Exactly one of ``instances`` and ``size_bytes`` is used (``instances`` wins). The
    same ``seed`` (and the same seed files) gives the same UIDs and the same bytes."""

    instances: int | None = None
    size_bytes: int | None = None
    patients: int = 4
    studies_per_patient: int = 2
    series_per_study: int = 3
    seed: int = 0


@dataclass(slots=True)
class _SeedFile:
    path: Path
    size: int
    group: tuple[str, str]
    order: tuple[int, str]


@dataclass(slots=True)
class CorpusResult:
    """What ``generate_corpus`` wrote (also saved as ``corpus.json`` at the root)."""

    root: str
    instances: int
    bytes: int
    patients: int
    studies: int
    series: int
    seed: int
    seed_files: list[str] = field(default_factory=list)
    seconds: float = 0.0


def default_seed_paths() -> list[Path]:
    """pydicom's bundled example files that make the default corpus (never downloads)."""
    from pydicom.data import get_testdata_file

    paths: list[Path] = []
    for name in DEFAULT_SEED_FILES:
        found = get_testdata_file(name, download=False)
        if isinstance(found, str):
            paths.append(Path(found))
    if not paths:
        raise RuntimeError("pydicom's bundled example files are missing; use --from SEED_DIR")
    return paths


def _uid(*parts: object) -> str:
    """A deterministic UID under the UUID-derived root 2.25 (ISO/IEC 9834-8): the same
    parts give the same UID, different parts a different one with UUID odds."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def _scan_seeds(paths: list[Path]) -> list[list[_SeedFile]]:
    """Group the seed files by (series, transfer syntax) so every generated series is
    made of one real series' images, in their order: a grown corpus looks like the seed."""
    import pydicom

    groups: dict[tuple[str, str], list[_SeedFile]] = {}
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
        key = (str(ds.get("SeriesInstanceUID", "")), ts)
        try:
            number = int(ds.get("InstanceNumber", 0) or 0)
        except (TypeError, ValueError):
            number = 0
        groups.setdefault(key, []).append(
            _SeedFile(path, path.stat().st_size, key, (number, path.name))
        )
    out = [sorted(g, key=lambda s: s.order) for _, g in sorted(groups.items())]
    return out


class _SeedCache:
    """Parsed seed datasets, least recently used first out, bounded by file bytes.

    Re-parsing a seed costs ~0.4 ms; the cache only spares that for small seed sets
    while a huge seed folder (the real phantoms) simply streams through it."""

    def __init__(self, budget_bytes: int = 256 * 2**20) -> None:
        self.budget = budget_bytes
        self.used = 0
        self.items: OrderedDict[Path, tuple[Any, int]] = OrderedDict()

    def get(self, seed: _SeedFile) -> Any:
        import pydicom

        hit = self.items.get(seed.path)
        if hit is not None:
            self.items.move_to_end(seed.path)
            return hit[0]
        ds = pydicom.dcmread(seed.path)
        self.items[seed.path] = (ds, seed.size)
        self.used += seed.size
        while self.used > self.budget and len(self.items) > 1:
            _, (_, size) = self.items.popitem(last=False)
            self.used -= size
        return ds


def _plan(total: int, n_series: int) -> Iterator[tuple[int, int]]:
    """(series index, instance index within it) for ``total`` instances spread evenly."""
    for j in range(n_series):
        lo, hi = j * total // n_series, (j + 1) * total // n_series
        for k in range(hi - lo):
            yield j, k


def generate_corpus(
    out: str | os.PathLike[str],
    spec: CorpusSpec,
    seeds: list[Path] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CorpusResult:
    """Write a corpus of fresh-UID clones of ``seeds`` (default: pydicom's examples) to
    ``out`` as ``P0001/ST01/SE001/IM000001.dcm`` and return what was written.

    ``progress(done, total)`` is called now and then. Each file is written to a
    temporary name and renamed, so an interrupted run leaves no half file behind.

    Without ``seeds``, the corpus is synthetic MR phantom studies (:mod:`.phantom`):
    series follow scanner protocols, so ``series_per_study`` does not apply, and
    patients (``studies_per_patient`` studies each) are added until the corpus is full."""
    if not seeds:
        return _generate_phantoms(Path(out), spec, progress)
    t0 = time.perf_counter()
    seed_paths = seeds
    groups = _scan_seeds(seed_paths)
    if not groups:
        raise ValueError("no DICOM Part 10 seed files")
    mean = sum(s.size for g in groups for s in g) / sum(len(g) for g in groups)
    if spec.instances is not None:
        total = spec.instances
    elif spec.size_bytes is not None:
        total = max(1, math.ceil(spec.size_bytes / mean))
    else:
        raise ValueError("give the corpus size: instances or size_bytes")
    n_series = max(1, spec.patients * spec.studies_per_patient * spec.series_per_study)
    n_series = min(n_series, max(1, total))
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    cache = _SeedCache()
    written = 0
    nbytes = 0
    patients: set[int] = set()
    studies: set[tuple[int, int]] = set()
    series_seen: set[int] = set()
    step = max(1, total // 200)
    for j, k in _plan(total, n_series):
        p, rest = divmod(j, spec.studies_per_patient * spec.series_per_study)
        s, r = divmod(rest, spec.series_per_study)
        group = groups[j % len(groups)]
        seed = group[k % len(group)]
        ds = cache.get(seed)
        _restamp(ds, spec.seed, p, s, r, j, k)
        folder = root / f"P{p + 1:04d}" / f"ST{s + 1:02d}" / f"SE{r + 1:03d}"
        if j not in series_seen:
            folder.mkdir(parents=True, exist_ok=True)
            series_seen.add(j)
        dest = folder / f"IM{k + 1:06d}.dcm"
        tmp = folder / f".IM{k + 1:06d}.dcm.part"
        try:
            ds.save_as(tmp)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        nbytes += dest.stat().st_size
        written += 1
        patients.add(p)
        studies.add((p, s))
        if progress is not None and (written % step == 0 or written == total):
            progress(written, total)
    result = CorpusResult(
        root=str(root.resolve()),
        instances=written,
        bytes=nbytes,
        patients=len(patients),
        studies=len(studies),
        series=len(series_seen),
        seed=spec.seed,
        seed_files=[str(s.path) for g in groups for s in g][:50],
        seconds=time.perf_counter() - t0,
    )
    (root / MANIFEST).write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def _generate_phantoms(
    root: Path, spec: CorpusSpec, progress: Callable[[int, int], None] | None
) -> CorpusResult:
    """The default corpus: synthetic MR phantom studies, written as they are made."""
    from pydicom import dcmwrite

    from .phantom import iter_instances, plan_series

    t0 = time.perf_counter()
    plans = plan_series(spec.instances, spec.size_bytes, spec.studies_per_patient)
    total = sum(p.instances for p in plans)
    root.mkdir(parents=True, exist_ok=True)
    step = max(1, total // 200)
    written = nbytes = 0
    folders: set[str] = set()
    for rel, ds, _ in iter_instances(plans, spec.seed):
        dest = root / rel
        folder = str(dest.parent)
        if folder not in folders:
            dest.parent.mkdir(parents=True, exist_ok=True)
            folders.add(folder)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            dcmwrite(tmp, ds, enforce_file_format=True)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        nbytes += dest.stat().st_size
        written += 1
        if progress is not None and (written % step == 0 or written == total):
            progress(written, total)
    result = CorpusResult(
        root=str(root.resolve()),
        instances=written,
        bytes=nbytes,
        patients=len({p.patient for p in plans}),
        studies=len({(p.patient, p.study) for p in plans}),
        series=len(plans),
        seed=spec.seed,
        seed_files=["synthetic MR phantom studies (dicom_repack.bench.phantom)"],
        seconds=time.perf_counter() - t0,
    )
    manifest = asdict(result)
    manifest["kind"] = "synthetic MR phantoms"
    manifest["series_lengths"] = [p.instances for p in plans][:2000]
    manifest["protocols"] = sorted({p.protocol for p in plans})
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return result


def _restamp(ds: Any, seed: int, p: int, s: int, r: int, j: int, k: int) -> None:
    """Give a cached seed dataset the identity of clone (patient p, study s, series r,
    instance k). Every field set here is set on every clone, so reusing the dataset
    object between clones leaks nothing from one to the next."""
    pid = f"BENCH{seed}-P{p + 1:04d}"
    ds.PatientID = pid
    ds.PatientName = f"BENCH^PATIENT{p + 1:04d}"
    ds.StudyInstanceUID = _uid("study", seed, p, s)
    ds.StudyID = f"{s + 1}"
    ds.AccessionNumber = f"B{seed}P{p + 1}S{s + 1}"[:16]
    ds.SeriesInstanceUID = _uid("series", seed, p, s, r)
    ds.SeriesNumber = r + 1
    ds.InstanceNumber = k + 1
    sop = _uid("instance", seed, j, k)
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    # absent layout elements are an edge case for parity tests, not for a benchmark:
    # fill the ones pydicom's small examples lack, as a scanner would
    if not ds.get("StudyDescription"):
        ds.StudyDescription = f"BENCH STUDY {s + 1}"
    if not ds.get("StudyDate"):
        ds.StudyDate = "20240101"
    if not ds.get("SeriesDescription"):
        ds.SeriesDescription = f"BENCH SERIES {r + 1}"
    if not ds.get("PatientBirthDate"):
        ds.PatientBirthDate = f"19{50 + p % 50:02d}0101"
    if "FrameOfReferenceUID" in ds:
        ds.FrameOfReferenceUID = _uid("frame", seed, p, s)


def main(argv: list[str]) -> int:
    """``dicom-repack corpus OUT [--from SEED_DIR] (--instances N | --size 76GB) ...``"""
    parser = argparse.ArgumentParser(
        prog="dicom-repack corpus",
        description="Write a benchmark corpus: fresh-UID clones of seed DICOM files over "
        "several patients, studies and series. Streams; memory stays flat.",
    )
    parser.add_argument("out", help="folder to write (created; files are added)")
    parser.add_argument(
        "--from",
        dest="seed_dir",
        help="folder of seed DICOM files (default: pydicom's bundled example files)",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--instances", type=int, help="number of instances to write")
    size.add_argument("--size", help="total size to reach, e.g. 2GB, 76GB, 1.5GiB")
    parser.add_argument("--patients", type=int, default=4)
    parser.add_argument("--studies-per-patient", type=int, default=2)
    parser.add_argument("--series-per-study", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="same seed, same UIDs (default 0)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        size_bytes = parse_size(args.size) if args.size else None
    except ValueError as exc:
        parser.error(str(exc))
    instances = args.instances
    if instances is None and size_bytes is None:
        instances = 1000
    if any(v < 1 for v in (args.patients, args.studies_per_patient, args.series_per_study)):
        parser.error("--patients, --studies-per-patient and --series-per-study must be >= 1")
    seeds: list[Path] | None = None
    if args.seed_dir and not os.path.isdir(args.seed_dir):
        parser.error(f"--from {args.seed_dir}: no such folder")
    from ..core.destination import DestinationError, check_writable

    try:
        check_writable(args.out, "OUT", parents=True)
    except DestinationError as exc:
        return fail("corpus", str(exc))
    if args.seed_dir:
        seeds = find_instances(args.seed_dir)
        if not seeds:
            return fail("corpus", f"no DICOM Part 10 files under {args.seed_dir}", EXIT_USAGE)
    spec = CorpusSpec(
        instances=instances,
        size_bytes=size_bytes,
        patients=args.patients,
        studies_per_patient=args.studies_per_patient,
        series_per_study=args.series_per_study,
        seed=args.seed,
    )
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=args.quiet,
    ) as bar:
        task = bar.add_task("corpus", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            result = generate_corpus(args.out, spec, seeds, progress)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: the files written so far are complete[/]")
            return EXIT_INTERRUPTED
        except OSError as exc:  # the output folder failed (full, read-only) mid-way
            bar.stop()
            return fail(
                "corpus", f"writing {args.out}: {exc}; the files written so far are complete"
            )
    console.print(
        f"wrote {result.instances} instances, {result.bytes / 1e6:.1f} MB "
        f"({result.patients} patients, {result.studies} studies, {result.series} series) "
        f"to {result.root} in {result.seconds:.1f} s"
    )
    return EXIT_OK
