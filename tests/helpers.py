"""What the tests share: the console script, the corpora (shared and generated), expected data.

Import from here (``from helpers import run_cli, dicom_files``), never from conftest:
conftest.py only turns these into fixtures.

Two kinds of corpora, one definition each:

* ``SHARED_CORPORA`` -- the two real corpora whose tarballs sit read-only in
  ``../shared/data`` beside the checkout, with px-repack's reference outputs in
  ``../shared/data/expected``. Only parity tests use them (they skip, loudly, when
  the tarballs are absent).
* ``GENERATED_CORPORA`` -- MR-like instances written here with pydicom, seeded, so
  every other test has realistic input on any machine. The bytes are a pure
  function of the spec (fixed file meta, no pydicom version in it), and
  ``tests/expected/rx-repack/<set>/inputs.tsv`` pins them: the rx-repack parity
  data were made from exactly these files.

Nothing here imports pytest at module level: benchmarks put this folder on
sys.path and import it outside pytest.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NoReturn

if TYPE_CHECKING:
    import sqlite3

    from pydicom import Dataset

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"

#: the shared, read-only material beside the checkout (tarballs and px-repack's outputs)
SHARED = REPO.parent / "shared" / "data"
#: px-repack 3.12.6's reference outputs for the shared corpora (see ../shared/README.md)
SHARED_EXPECTED = SHARED / "expected"
#: expected data committed with the tests (outputs of the real peers, never their code)
EXPECTED = TESTS / "expected"

#: shared corpus name -> folder (inside its tarball) that holds its DICOM files
SHARED_CORPORA: dict[str, str] = {
    "SAG-anon": "SAG-anon",
    "example-dicom-structural": "example-dicom-structural/dicoms",
}

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def fail(message: str) -> NoReturn:
    """pytest.fail inside pytest, AssertionError elsewhere (benchmarks)."""
    try:
        import pytest
    except ImportError:  # pragma: no cover - benchmarks without pytest
        raise AssertionError(message) from None
    pytest.fail(message)


def skip(message: str) -> NoReturn:
    """pytest.skip inside pytest; outside it, CorpusMissing (callers decide)."""
    try:
        import pytest
    except ImportError:  # pragma: no cover - benchmarks without pytest
        raise CorpusMissing(message) from None
    pytest.skip(message)


class CorpusMissing(Exception):
    """A shared tarball is not beside the checkout."""


# -- the console script ------------------------------------------------------------------


def dicom_repack_exe() -> str:
    """The installed console script (the thing users run), beside this interpreter."""
    exe = Path(sys.executable).parent / "dicom-repack"
    if exe.exists():
        return str(exe)
    found = shutil.which("dicom-repack")
    if found is None:
        fail("the dicom-repack console script is not installed (pip install -e .)")
    return found


def run_cli(*args: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run the console script with ``args``; fail the test with its output if it fails
    and ``check`` is true. Extra keywords go to subprocess.run (env, input, cwd, ...)."""
    proc = subprocess.run(  # type: ignore[call-overload]
        [dicom_repack_exe(), *args], capture_output=True, text=True, **kw
    )
    assert isinstance(proc, subprocess.CompletedProcess)
    if check and proc.returncode != 0:
        fail(f"dicom-repack {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def open_files(pid: int | str, prefix: str) -> list[str]:
    """What process ``pid`` (or ``"self"``) holds open under ``prefix``: its
    ``/proc/<pid>/fd`` links, sorted (an fd closed while they are read is skipped)."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(prefix):
            out.append(target)
    return sorted(out)


@contextmanager
def sqlite_db(path: Path | str) -> Iterator[sqlite3.Connection]:
    """A connection to the SQLite file at ``path``, committed and closed at the end.

    ``with sqlite3.connect(path) as conn`` commits but does not close, and Python 3.13
    reports the connection left to the garbage collector (a ResourceWarning: an error here).
    """
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


# -- files and trees -----------------------------------------------------------------------


def dicom_files(folder: Path) -> list[Path]:
    """The ``*.dcm`` files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix == ".dcm")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root``: relative POSIX path -> (size, sha256)."""
    return {
        p.relative_to(root).as_posix(): (p.stat().st_size, sha256(p))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def read_tree_tsv(tsv: Path) -> dict[str, tuple[int, str]]:
    """A ``path<TAB>size<TAB>sha256`` listing with a header line, as ``tree`` gives it."""
    rows = tsv.read_text(encoding="utf-8").splitlines()[1:]
    return {path: (int(size), sha) for path, size, sha in (r.split("\t") for r in rows)}


def write_tree_tsv(listing: dict[str, tuple[int, str]], tsv: Path) -> None:
    lines = ["path\tsize\tsha256"]
    lines += [f"{path}\t{size}\t{sha}" for path, (size, sha) in sorted(listing.items())]
    tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")


# -- the shared corpora (parity tests only) ------------------------------------------------


def shared_tarball(name: str) -> Path:
    return SHARED / f"{name}.tar.gz"


def unpack_shared(name: str, dest: Path) -> Path:
    """Extract ``<name>.tar.gz`` from ../shared/data into ``dest``; return its DICOM folder.

    Skips the calling test when the tarball is absent (CorpusMissing outside pytest).
    """
    src = shared_tarball(name)
    if not src.exists():
        skip(f"{src} is absent (the shared corpora sit beside the checkout; parity tests only)")
    with tarfile.open(src) as tf:
        tf.extractall(dest, filter="data")
    return dest / SHARED_CORPORA[name]


# -- generated corpora (every other test) --------------------------------------------------


@dataclass(frozen=True)
class SeriesSpec:
    """One series: who, which study, how many instances, how it looks."""

    patient: int
    study: int
    number: int
    instances: int
    description: str
    protocol: str


@dataclass(frozen=True)
class GeneratedCorpus:
    """A seeded MR-like corpus: same spec, same bytes, on any machine.

    ``names`` is ``"numbered"`` (``0001-<SOPInstanceUID>.dcm``, as SAG-anon) or
    ``"n2d"`` (``N2D_0001.dcm``, as example-dicom-structural).
    """

    seed: int
    transfer_syntax: str
    series: tuple[SeriesSpec, ...]
    names: str = "numbered"
    rows: int = 64
    columns: int = 64
    empty_accession: bool = False

    @property
    def instances(self) -> int:
        return sum(s.instances for s in self.series)


#: the generated corpora, by name. "mr-explicit" stands where SAG-anon stood (explicit VR,
#: a long series first, then a 3-instance localizer, then a second patient); "mr-implicit"
#: where example-dicom-structural stood (implicit VR, an empty AccessionNumber).
GENERATED_CORPORA: dict[str, GeneratedCorpus] = {
    "mr-explicit": GeneratedCorpus(
        seed=1,
        transfer_syntax=EXPLICIT_VR_LE,
        series=(
            SeriesSpec(0, 0, 2, 12, "t1_mprage_sag", "MPRAGE"),
            SeriesSpec(0, 0, 1, 3, "localizer", "AAHead_Scout"),
            SeriesSpec(1, 0, 3, 5, "T2W_TSE tra", "T2W_TSE"),
        ),
    ),
    "mr-implicit": GeneratedCorpus(
        seed=2,
        transfer_syntax=IMPLICIT_VR_LE,
        series=(SeriesSpec(0, 0, 1, 10, "Structural", "MPRAGE"),),
        names="n2d",
        empty_accession=True,
    ),
}


def uid(seed: int, *parts: object) -> str:
    """A deterministic UID under 2.25 (a UUID-derived root needs no registration)."""
    digest = hashlib.sha256("/".join(map(str, (seed, *parts))).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:15], "big"))


def mr_instance(
    corpus: GeneratedCorpus,
    series: SeriesSpec,
    index: int,
    **changes: object,
) -> Dataset:
    """One MR instance of ``series`` (``index`` from 0): a realistic header with a vendor
    private block, code sequences whose nested tags have hex letters ((0008,010B),
    (2001,10C1)), and 16-bit pixel data. ``changes`` set (or, with None, delete) keywords."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as Seq
    from pydicom.uid import UID

    seed = corpus.seed
    rng = random.Random(f"{seed}/{series.patient}/{series.study}/{series.number}/{index}")
    study_uid = uid(seed, "study", series.patient, series.study)
    series_uid = uid(seed, "series", series.patient, series.study, series.number)
    sop_uid = uid(seed, "sop", series.patient, series.study, series.number, index)

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"]
    ds.InstanceCreationDate = "20240305"
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = f"202403{5 + series.study:02d}"
    ds.SeriesDate = ds.StudyDate
    ds.AcquisitionDate = ds.StudyDate
    ds.ContentDate = ds.StudyDate
    ds.StudyTime = "081106.250000"
    ds.SeriesTime = f"08{12 + series.number:02d}05.125000"
    ds.AccessionNumber = (
        "" if corpus.empty_accession else f"ACC{seed}{series.patient}{series.study}7"
    )
    ds.Modality = "MR"
    ds.Manufacturer = "Philips Medical Systems"
    ds.InstitutionName = "Test Hospital"
    ds.ReferringPhysicianName = "Doctor^Referring"
    ds.StationName = "MRC25050"
    ds.StudyDescription = "BRAIN^ROUTINE"
    ds.SeriesDescription = series.description
    ds.ManufacturerModelName = "Achieva"
    ds.ProcedureCodeSequence = Seq([_code("RPID2574", "RADLEX", "MRI BRAIN WO CONTRAST")])
    ds.ReferencedImageSequence = Seq(
        [
            _referenced(uid(seed, "localizer", series.patient, series.study, n))
            for n in range(2 if series.instances > 3 else 0)
        ]
    )
    ds.PatientName = f"Phantom^{'ABCDEFGH'[series.patient]}"
    ds.PatientID = f"PH{seed}{series.patient:03d}"
    ds.PatientBirthDate = f"19{70 + series.patient}0101"
    ds.PatientSex = "FM"[series.patient % 2]
    ds.PatientAge = f"{54 - series.patient:03d}Y"
    ds.PatientWeight = "70"
    ds.BodyPartExamined = "BRAIN"
    ds.ScanningSequence = ["GR", "IR"]
    ds.SequenceVariant = ["SP", "MP"]
    ds.MRAcquisitionType = "3D"
    ds.SliceThickness = "1"
    ds.RepetitionTime = "8.1"
    ds.EchoTime = "3.7"
    ds.MagneticFieldStrength = "3"
    ds.ProtocolName = series.protocol
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = f"{1000 + series.study}"
    ds.SeriesNumber = str(series.number)
    ds.AcquisitionNumber = "1"
    ds.InstanceNumber = str(index + 1)
    ds.ImagePositionPatient = ["-90", "-126.5", f"{-80 + index:.1f}"]
    ds.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]
    ds.FrameOfReferenceUID = uid(seed, "frame", series.patient, series.study)
    ds.RequestAttributesSequence = Seq([_request(seed, series)])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = corpus.rows
    ds.Columns = corpus.columns
    ds.PixelSpacing = ["0.9765625", "0.9765625"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "600"
    ds.WindowWidth = "1200"
    # the vendor's private block (Philips-like): a creator, then elements with hex letters
    block = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
    block.add_new(0x0B, "CS", "N")
    block.add_new(0x2D, "SS", 1)
    block.add_new(0xC1, "LO", f"stack{series.number}")
    pixels = corpus.rows * corpus.columns
    raw = bytearray(rng.randbytes(2 * pixels))
    raw[1::2] = bytes(b & 0x0F for b in raw[1::2])  # 12 bits stored
    ds.PixelData = bytes(raw)
    _apply(ds, changes)

    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\0\1"
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    _apply(meta, {"MediaStorageSOPInstanceUID": ds.get("SOPInstanceUID", sop_uid)})
    meta.TransferSyntaxUID = UID(corpus.transfer_syntax)
    meta.ImplementationClassUID = UID("2.25.1700000000000000000000000000000000001")
    meta.ImplementationVersionName = "REPACK_TESTS"
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    item.MappingResource = "DCMR"  # (0008,0105)
    item.ContextGroupExtensionFlag = "N"  # (0008,010B)
    item.ContextIdentifier = "4030"  # (0008,010F)
    return item


def _referenced(sop: str) -> Dataset:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = MR_IMAGE_STORAGE
    item.ReferencedSOPInstanceUID = sop
    return item


def _request(seed: int, series: SeriesSpec) -> Dataset:
    """A request item holding a code sequence and a private element, as Philips writes."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as Seq

    item = Dataset()
    item.RequestedProcedureID = f"RP{seed}{series.patient}"
    item.ScheduledProcedureStepID = f"SPS{series.number}"
    item.ScheduledProtocolCodeSequence = Seq([_code("MRBRAIN", "99PHI", "MR Brain")])
    block = item.private_block(0x2001, "Philips Imaging DD 001", create=True)
    block.add_new(0xC1, "LO", "ROUTINE")  # (2001,10C1)
    block.add_new(0x0B, "CS", "Y")  # (2001,100B)
    return item


def file_name(corpus: GeneratedCorpus, number: int, sop_uid: str) -> str:
    if corpus.names == "n2d":
        return f"N2D_{number:04d}.dcm"
    return f"{number:04d}-{sop_uid}.dcm"


def write_corpus(corpus: GeneratedCorpus | str, dest: Path) -> list[Path]:
    """Write a generated corpus into ``dest`` (created); return its files in name order."""
    spec = GENERATED_CORPORA[corpus] if isinstance(corpus, str) else corpus
    dest.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    number = 0
    for series in spec.series:
        for index in range(series.instances):
            number += 1
            ds = mr_instance(spec, series, index)
            path = dest / file_name(spec, number, str(ds.SOPInstanceUID))
            write_dataset(ds, path)
            out.append(path)
    return sorted(out)


def write_dataset(ds: Dataset, path: Path | BinaryIO) -> Path | BinaryIO:
    """Save ``ds`` as Part 10 with the meta it carries, in its meta's transfer syntax."""
    import warnings

    from pydicom.uid import ImplicitVRLittleEndian

    implicit = ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    with warnings.catch_warnings():
        # hostile values (NUL bytes, 1000-character IDs) are invalid on purpose
        warnings.simplefilter("ignore")
        ds.save_as(path, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
    return path


def generated_bytes(name: str, index: int = 0) -> bytes:
    """The bytes of instance ``index`` of the first series of generated corpus ``name``
    (exactly what write_corpus writes for it), without touching the disk."""
    import io

    spec = GENERATED_CORPORA[name]
    buffer = io.BytesIO()
    write_dataset(mr_instance(spec, spec.series[0], index), buffer)
    return buffer.getvalue()


# -- hostile tag values --------------------------------------------------------------------

#: values of the keywords that name folders and records, chosen to escape or break them
HOSTILE: dict[str, list[str]] = {
    "PatientID": [
        "../../../x",
        "/etc/passwd",
        "..",
        ".",
        "a/../../b",
        "x\x00y",
        "é" * 300,
        "A" * 1000,
    ],
    "StudyInstanceUID": ["1.2/../../3", "..", "/1.2.3"],
    "SeriesInstanceUID": ["1.2/../../4", "../..", "1.2\x00.5"],
    "SOPInstanceUID": ["../../../../evil", "/tmp/evil"],
    "PatientName": ["../../..", "Ünïcødé^Näme", "x" * 1000],
    "SeriesDescription": ["../../../../../tmp/pwned", "\x00\x00"],
    "StudyDescription": ["/" * 64],
}


def hostile_changes(
    values: dict[str, list[str]] = HOSTILE,
) -> Iterable[tuple[str, dict[str, object]]]:
    """(file stem, keyword changes) for each hostile value; each gets its own SOPInstanceUID
    (unless that is the hostile one) and UTF-8 when the value is not ASCII."""
    count = 0
    for keyword, options in values.items():
        for i, value in enumerate(options):
            changes: dict[str, object] = {keyword: value}
            if keyword != "SOPInstanceUID":
                changes["SOPInstanceUID"] = f"1.2.3.{count}"
            if any(ord(c) > 127 for c in value):
                changes["SpecificCharacterSet"] = "ISO_IR 192"
            count += 1
            yield f"{keyword}-{i}", changes


def write_hostile(dest: Path, values: dict[str, list[str]] = HOSTILE) -> list[Path]:
    """One generated MR instance per hostile value, in ``dest``; files in name order."""
    spec = GENERATED_CORPORA["mr-explicit"]
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for stem, changes in hostile_changes(values):
        ds = mr_instance(spec, spec.series[0], 0, **changes)
        path = dest / f"{stem}.dcm"
        write_dataset(ds, path)
        out.append(path)
    return sorted(out)


# -- character sets and empty/absent elements (the "dropin" set) ---------------------------

#: (file stem, SpecificCharacterSet, PatientName, SeriesDescription): the standard's examples
#: (PS3.5 Annex H: Japanese, ISO 2022 IR 87 and IR 13 + IR 87; Annex I: Korean, ISO 2022
#: IR 149) and single-byte, GB and UTF-8 names that rx-repack decodes before sanitising
CHARSET_NAMES: tuple[tuple[str, object, str, str], ...] = (
    ("c01-ir87", ["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう", "頭部"),
    ("c02-ir13-87", ["ISO 2022 IR 13", "ISO 2022 IR 87"], "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう", "ﾃｽﾄ"),
    ("c03-ir149", ["", "ISO 2022 IR 149"], "Hong^Gildong=洪^吉洞=홍^길동", "뇌"),
    ("c04-latin1", "ISO_IR 100", "Buc^Jérôme", "Tête"),
    ("c05-cyrillic", "ISO_IR 144", "Люкceмбypг", "Голова"),
    ("c06-greek", "ISO_IR 126", "Διονυσιος", "Κεφάλι"),
    ("c07-gb18030", "GB18030", "Wang^XiaoDong=王^小东=Jérôme", "头部"),
    ("c08-gbk", "GBK", "Wang^XiaoDong=王^小东=", "头部"),
    # GBK's second bytes may be ASCII letters (丄 is 0x81 'A'): rx-repack reads GBK as
    # ISO 8859-1, so they stay in its folder names
    ("c08b-gbk-ascii", "GBK", "Wang^丄丅", "丆丏"),
    ("c09-utf8", "ISO_IR 192", "Wang^XiaoDong=王^小東=", "頭部"),
)

#: elements present but empty, and elements absent (two instances of one series: the
#: second shows what rx-repack reports once the series' records exist)
EMPTY_ELEMENTS = (
    "PatientName", "PatientBirthDate", "PatientSex", "PatientAge", "StudyDescription",
    "AccessionNumber", "StudyDate", "SeriesDate", "SeriesNumber", "SeriesDescription",
    "Modality", "InstanceNumber",
)  # fmt: skip
ABSENT_ELEMENTS = (
    "PatientName", "PatientBirthDate", "PatientSex", "PatientAge", "StudyDescription",
    "AccessionNumber", "StudyDate", "SeriesDate", "SeriesNumber", "SeriesDescription",
    "Modality", "InstanceNumber",
)  # fmt: skip


def write_dropin(dest: Path) -> list[Path]:
    """Names in every character set rx-repack meets, then empty and absent elements: one
    patient, study and series per case (the absent case has two instances)."""
    spec = GENERATED_CORPORA["mr-explicit"]
    series = spec.series[0]
    dest.mkdir(parents=True, exist_ok=True)
    cases: list[tuple[str, dict[str, object]]] = []
    for stem, charset, name, description in CHARSET_NAMES:
        cases.append(
            (stem, {"SpecificCharacterSet": charset, "PatientName": name,
                    "SeriesDescription": description})
        )  # fmt: skip
    cases.append(("e01-empty", dict.fromkeys(EMPTY_ELEMENTS, "")))
    absent: dict[str, object] = dict.fromkeys(ABSENT_ELEMENTS)
    cases += [("e02-absent-1", absent), ("e02-absent-2", absent)]
    out = []
    for n, (stem, changes) in enumerate(cases):
        key = stem.rsplit("-", 1)[0] if stem.startswith("e02") else stem
        ds = mr_instance(spec, series, n)
        ds.PatientID = f"DROPIN-{key}"
        ds.StudyInstanceUID = uid(9, "study", key)
        ds.SeriesInstanceUID = uid(9, "series", key)
        ds.SOPInstanceUID = uid(9, "sop", stem)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        _apply(ds, changes)
        path = dest / f"{stem}.dcm"
        write_dataset(ds, path)
        out.append(path)
    return sorted(out)


def modified_copy(seed: Path, out: Path, **changes: object) -> Path:
    """A copy of the instance ``seed`` with some elements changed (None deletes one)."""
    import pydicom

    ds = pydicom.dcmread(seed)
    _apply(ds, changes)
    write_dataset(ds, out)
    return out


def _apply(ds: Dataset, changes: dict[str, object]) -> None:
    """Set (or, for None, delete) keywords; hostile values are invalid on purpose, so
    pydicom's validation warnings are silenced."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for keyword, value in changes.items():
            if value is None:
                if keyword in ds:
                    del ds[keyword]
            else:
                setattr(ds, keyword, value)


# -- the sets the peers' expected data were made from ----------------------------------------

#: ``dicom-repack corpus OUT <these>``: the bench's default generator and seed, fewer
#: instances than the bench's default so that the parity test stays fast
BENCH_DEFAULT_ARGS: tuple[str, ...] = ("--instances", "24", "--seed", "0")

#: the sets under tests/expected/<peer>/: generated ones are rebuilt by write_set, byte
#: for byte (inputs.tsv pins them); shared ones come from ../shared
GENERATED_SETS: tuple[str, ...] = (*GENERATED_CORPORA, "hostile", "bench-default", "dropin")


def write_set(name: str, dest: Path) -> list[Path]:
    """Write (or unpack) the input set ``name`` into ``dest``; its DICOM files in name order."""
    if name in GENERATED_CORPORA:
        return write_corpus(name, dest)
    if name == "hostile":
        return write_hostile(dest)
    if name == "bench-default":
        return write_bench_default(dest)
    if name == "dropin":
        return write_dropin(dest)
    if name in SHARED_CORPORA:
        folder = unpack_shared(name, dest.parent / f"{dest.name}-unpacked")
        dest.mkdir(parents=True)
        for f in dicom_files(folder):
            shutil.copy2(f, dest / f.name)
        return dicom_files(dest)
    raise ValueError(f"unknown set {name!r}")


def write_bench_default(dest: Path) -> list[Path]:
    """The bench's default corpus generator, flattened into one folder (names kept unique)."""
    from dicom_repack.bench.corpus import find_instances

    raw = dest.parent / f"{dest.name}-raw"
    run_cli("corpus", str(raw), *BENCH_DEFAULT_ARGS, "-q")
    dest.mkdir(parents=True)
    for f in find_instances(raw):
        shutil.copyfile(f, dest / f.relative_to(raw).as_posix().replace("/", "__"))
    return dicom_files(dest)


#: the imageObj stat fields kept in expected records (the rest is this machine's os.stat)
IMAGE_STAT_KEPT = ("size", "nlink", "FSlocation")


def normalise_record(text: str, datadir: str) -> object:
    """A record as the expected data hold it: parsed, the data folder replaced by
    ``{datadir}``, each imageObj stat cut to IMAGE_STAT_KEPT."""
    import json

    obj = json.loads(text.replace(datadir, "{datadir}"))
    for entry in obj.values() if isinstance(obj, dict) else ():
        images = entry.get("imageObj") if isinstance(entry, dict) else None
        if isinstance(images, dict):
            for file, stat in images.items():
                images[file] = {k: stat[k] for k in IMAGE_STAT_KEPT if k in stat}
    return obj


def canonical(obj: object) -> str:
    """Stable JSON text: sorted keys, sorted StudyList (rx-repack's sets and maps print in
    a random order), two-space indent."""
    import json

    return json.dumps(_sort_lists(obj), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _sort_lists(obj: object) -> object:
    if isinstance(obj, dict):
        return {
            k: sorted(v) if k == "StudyList" and isinstance(v, list) else _sort_lists(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_sort_lists(v) for v in obj]
    return obj


def read_records(log: Path, datadir: Path | str) -> dict[str, object]:
    """Every record under ``log`` (relative path -> normalise_record'ed object)."""
    out: dict[str, object] = {}
    for f in sorted(log.rglob("*")):
        if f.is_file():
            out[f.relative_to(log).as_posix()] = normalise_record(f.read_text(), str(datadir))
    return out


def read_expected_records(log: Path) -> dict[str, object]:
    """Expected records as committed (already normalised)."""
    import json

    return {
        f.relative_to(log).as_posix(): json.loads(f.read_text())
        for f in sorted(log.rglob("*"))
        if f.is_file()
    }


def series_groups(files: Sequence[Path]) -> dict[str, list[Path]]:
    """Files grouped by SeriesInstanceUID (read with pydicom), in the given order."""
    import pydicom

    groups: dict[str, list[Path]] = {}
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        groups.setdefault(str(ds.SeriesInstanceUID), []).append(f)
    return groups


os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
