"""Correctness of one run: is every input instance at its expected path, byte for byte,
and does every record parse?

A benchmark that only times things rewards a program that loses files quickly. So
every run is checked against the corpus itself: the expected path of each instance
comes from :mod:`dicom_repack.core.layout` (the px layout for px-repack, the rx layout
for the others), the expected bytes are the input's sha256, and every ``*.json``
under the log folder must parse. Each instance must also have its image record
(``seriesData/<SeriesInstanceUID>-img/<file name>.json``), as px-repack writes it, at
the path :func:`dicom_repack.core.records.record_paths` gives (the writer's own rule).
Any miss makes the run *failed*, whatever its speed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CorpusTruth", "Verdict", "build_truth", "verify_run"]

_EXAMPLES = 5


def dataset_offset(data: bytes) -> int:
    """Where the data set starts in a Part 10 file (the header reader's own walk of the
    file meta group); 0 when it is not a Part 10 file that walk reads."""
    from dicom_repack.core.header import dataset_offset as walk_meta

    try:
        return walk_meta(data)
    except ValueError:
        return 0


def digests_of(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """(sha256 of the whole file, sha256 of its data set), or None when it cannot be read.

    The second exists for receivers: a Storage SCP writes its own file meta header
    (its implementation UID, the sender's AE title), so only the data set can be, and
    must be, byte-identical to what was sent."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    start = dataset_offset(data)
    view = memoryview(data)
    return hashlib.sha256(view).hexdigest(), hashlib.sha256(view[start:]).hexdigest()


def _normalized(path: str | os.PathLike[str]) -> bytes:
    """The data set re-encoded one fixed way (explicit VR little endian, without group
    lengths and trailing padding, which carry no data), so that two encodings of the
    same elements compare equal."""
    import io

    import pydicom

    ds = pydicom.dcmread(path)
    for tag in [e.tag for e in ds if e.tag.element == 0 or e.tag == 0xFFFCFFFC]:
        del ds[tag]
    buf = io.BytesIO()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.preamble = None
    pydicom.dcmwrite(buf, ds, implicit_vr=False, little_endian=True, enforce_file_format=False)
    return buf.getvalue()


def same_dataset(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when two files hold the same data set, whatever the transfer syntax.

    A C-STORE sender may legitimately re-encode an instance (dcmtk's storescu converts
    implicit to explicit VR when the receiver prefers it, drops group lengths and
    trailing padding), so
    a receiver is judged on the elements and values it filed, not on the bytes."""
    try:
        return _normalized(a) == _normalized(b)
    except Exception:  # anything pydicom cannot read back is not the same data set
        return False


def _hash_all(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[str, str] | None]:
    """Digests of many files; threads, because hashlib releases the GIL on big buffers."""
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        return list(pool.map(digests_of, paths, chunksize=64))


@dataclass(slots=True)
class CorpusTruth:
    """What a correct run must produce. ``expected[layout]`` maps each relative path to
    the indexes of the instances that belong there (more than one only when the
    corpus holds duplicates); ``records[layout]`` lists the image records."""

    files: list[Path]
    digests: list[str]
    dataset_digests: list[str]
    expected: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    records: dict[str, set[str]] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    #: patient record path -> (the key inside it, every StudyInstanceUID of that patient):
    #: a patient's StudyList must name all of its studies (concurrent writers that read,
    #: modify and rewrite it without a lock lose studies or leave a torn file)
    patients: dict[str, tuple[str, set[str]]] = field(default_factory=dict)


def build_truth(files: list[Path], layouts: Iterable[str]) -> CorpusTruth:
    """Hash the corpus once and plan every instance under each layout ("rx", "px").

    Reading the whole corpus here is also what warms the page cache before the first
    run, which the report states."""
    from dicom_repack.core.header import read_header
    from dicom_repack.core.layout import Layout
    from dicom_repack.core.records import record_paths

    both = _hash_all(files)
    truth = CorpusTruth(
        files=files,
        digests=[d[0] if d else "" for d in both],
        dataset_digests=[d[1] if d else "" for d in both],
    )
    for name in sorted(set(layouts)):
        layout = Layout.px() if name == "px" else Layout.rx()
        keywords = (*layout.keywords, "PatientID", "StudyInstanceUID", "SeriesInstanceUID")
        expected: dict[str, list[int]] = {}
        records: set[str] = set()
        for i, path in enumerate(files):
            header = read_header(path, keywords)
            plan = layout.plan(header.values, header.empty)
            expected.setdefault(plan.relpath, []).append(i)
            uid = header.values.get
            paths = record_paths(
                uid("PatientID", ""),
                uid("StudyInstanceUID", ""),
                uid("SeriesInstanceUID", ""),
                plan.image,
            )
            records.add(paths.image)  # the writer's own rule, sanitising included
            pid = uid("PatientID", "")
            entry = truth.patients.setdefault(paths.patient, (pid.strip(), set()))
            entry[1].add(uid("StudyInstanceUID", "").strip())
        truth.expected[name] = expected
        truth.records[name] = records
        truth.duplicates[name] = len(files) - len(expected)
    return truth


@dataclass(slots=True)
class Verdict:
    """The correctness part of a run's result."""

    ok: bool
    instances: int
    placed: int
    missing: int
    damaged: int
    records: int
    records_unparseable: int
    image_records_missing: int
    extra_files: int
    problems: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "instances": self.instances,
            "placed": self.placed,
            "missing": self.missing,
            "damaged": self.damaged,
            "records": self.records,
            "records_unparseable": self.records_unparseable,
            "image_records_missing": self.image_records_missing,
            "extra_files": self.extra_files,
            "problems": self.problems,
            "examples": self.examples,
        }


def _walk_files(root: Path) -> list[str]:
    """Relative paths (with '/') of every file under ``root``."""
    out: list[str] = []
    if not root.is_dir():
        return out
    base = len(str(root)) + 1
    for folder, _dirs, names in os.walk(root):
        for n in names:
            out.append(os.path.join(folder, n)[base:].replace(os.sep, "/"))
    return out


def verify_run(
    truth: CorpusTruth, layout: str, datadir: Path, logdir: Path | None, compare: str = "file"
) -> Verdict:
    """Check one run's output folders against ``truth`` under ``layout``.

    ``compare="file"``: each output must be byte-identical to its input (a copy or a
    move); ``"dataset"``: its data set must be (a receiver writes its own file meta)."""
    expected = truth.expected[layout]
    want_of = truth.digests if compare == "file" else truth.dataset_digests
    rels = list(expected)
    got = _hash_all([datadir / r for r in rels])
    missing = damaged = placed = 0
    examples: list[str] = []
    for rel, digests in zip(rels, got, strict=True):
        owners = expected[rel]
        want = {want_of[i] for i in owners}
        # duplicates in the corpus (same tags) share one destination: either is right,
        # and the corpus description reports how many there are
        if digests is None:
            missing += 1
            if len(examples) < _EXAMPLES:
                examples.append(f"missing: {rel}")
            continue
        digest = digests[0] if compare == "file" else digests[1]
        if (
            digest not in want
            and compare == "dataset"
            and any(same_dataset(truth.files[i], datadir / rel) for i in owners)
        ):
            digest = next(iter(want))  # re-encoded in transit, same elements and values
        if digest not in want:
            damaged += 1
            if len(examples) < _EXAMPLES:
                examples.append(f"damaged: {rel}")
        else:
            placed += 1
    present = _walk_files(datadir)
    extra = sum(1 for p in present if p not in expected)

    n_records = unparseable = 0
    records_missing = 0
    if logdir is not None:
        found = set()
        for rel in _walk_files(logdir):
            if not rel.endswith(".json"):
                continue
            n_records += 1
            found.add(rel)
            try:
                with open(logdir / rel, "rb") as fh:
                    json.load(fh)
            except (OSError, ValueError):
                unparseable += 1
                if len(examples) < 2 * _EXAMPLES:
                    examples.append(f"unparseable record: {rel}")
        for rec in truth.records[layout]:
            if rec not in found:
                records_missing += 1
                if len(examples) < 2 * _EXAMPLES:
                    examples.append(f"missing record: {rec}")

    studies_lost = 0
    if logdir is not None:
        for rel, (pid, studies) in truth.patients.items():
            listed: set[str] = set()
            try:
                with open(logdir / rel, "rb") as fh:
                    doc = json.load(fh)
                entry = doc.get(pid) if isinstance(doc, dict) else None
                if entry is None and isinstance(doc, dict) and len(doc) == 1:
                    entry = next(iter(doc.values()))
                found_list = entry.get("StudyList") if isinstance(entry, dict) else None
                if isinstance(found_list, list):
                    listed = {str(x).strip() for x in found_list}
            except (OSError, ValueError):
                pass  # missing or unparseable: counted above
            lost = studies - listed
            if lost:
                studies_lost += len(lost)
                if len(examples) < 2 * _EXAMPLES:
                    examples.append(f"StudyList of {rel} lacks {len(lost)} of {len(studies)}")

    problems: list[str] = []
    if studies_lost:
        problems.append(f"{studies_lost} study(ies) missing from patient records' StudyList")
    if missing:
        problems.append(f"{missing} instance(s) missing")
    if damaged:
        problems.append(f"{damaged} instance(s) damaged")
    if unparseable:
        problems.append(f"{unparseable} record(s) do not parse")
    if records_missing:
        problems.append(f"{records_missing} image record(s) missing")
    return Verdict(
        ok=not problems,
        instances=len(truth.files),
        placed=placed,
        missing=missing,
        damaged=damaged,
        records=n_records,
        records_unparseable=unparseable,
        image_records_missing=records_missing,
        extra_files=extra,
        problems=problems,
        examples=examples,
    )
