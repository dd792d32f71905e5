"""The fast header path equals pydicom, element by element, or fails cleanly.

What is proven here (docs/header.md summarises it):

* on every file of both shared corpora the fast path is taken and gives exactly
  :func:`read_header_pydicom`'s Header for every CORE keyword and a few others;
* on every file pydicom ships as test data it gives pydicom's Header, or a clean
  NotDicomError/TruncatedError, or declines (and read_header then gives pydicom's);
* hostile files built here (empty, garbage, truncated at many offsets, no preamble,
  NUL bytes, '../', long values, non-ASCII names, big endian, undefined-length
  sequences, encapsulated pixel data, deflate) and hypothesis-generated values and
  mutations of real files obey the same rule, never another exception.
"""

from __future__ import annotations

import io
import os
import random
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import corpora
from corpora import (
    CHARSETS,
    KEYWORDS,
    LONG_VRS,
    VALUE_ALPHABET,
    VR_KEYWORDS,
    check,
    dicom_files,
    element,
    part10,
    read_header_pydicom,
    unpack,
    value_case,
)
from dicom_repack.core import header as header_module
from dicom_repack.core.errors import NotDicomError, TruncatedError
from dicom_repack.core.header import (
    Header,
    _Unsupported,
    read_header,
    read_header_fast,
    render_value,
)
from dicom_repack.core.keywords import CORE
from helpers import GENERATED_CORPORA, generated_bytes

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def header_corpora(
    generated: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[Path]]:
    """The generated corpora, always; the two shared ones too where ../shared has them
    (tests that name a shared corpus are marked ``shared`` and skip without it)."""
    out = {name: dicom_files(folder) for name, folder in generated.items()}
    base = tmp_path_factory.mktemp("header-corpora")
    for name in corpora.INNER:
        if corpora.tarball(name).exists():
            out[name] = dicom_files(unpack(name, base))
    return out


def shared(name: str, *values: object) -> object:
    """A parameter that needs the shared corpus ``name`` (skipped where it is absent)."""
    present = corpora.tarball(name).exists()
    mark = pytest.mark.skipif(not present, reason=f"{corpora.tarball(name)} is absent")
    return pytest.param(name, *values, marks=[pytest.mark.shared, mark])


#: the corpora each corpus test runs on: generated ones always, shared ones where present
CORPORA_AND_COUNTS = [
    ("mr-explicit", 20),
    ("mr-implicit", 10),
    shared("SAG-anon", 192),
    shared("example-dicom-structural", 384),
]
CORPUS_NAMES = [
    "mr-explicit",
    "mr-implicit",
    shared("SAG-anon"),
    shared("example-dicom-structural"),
]


def assert_fast_equals_pydicom(source: object, keywords: tuple[str, ...] = KEYWORDS) -> Header:
    """The fast path must be taken and must equal pydicom element by element."""
    fast = read_header_fast(source, keywords)  # type: ignore[arg-type]
    ref = read_header_pydicom(source, keywords)
    assert fast == ref, corpora.diff(fast, ref)
    return fast


def assert_declines_and_falls_back(data: bytes, keywords: tuple[str, ...] = KEYWORDS) -> None:
    with pytest.raises(_Unsupported):
        read_header_fast(data, keywords)
    assert check(data, keywords) is None


def undefined(
    tag: int,
    vr: bytes,
    items: list[bytes | None],
    *,
    implicit: bool = False,
    implicit_items: bool | None = None,
) -> bytes:
    """An undefined-length sequence; each item is defined-length bytes, or None for an
    undefined-length item holding a PatientID element (closed by an item delimiter)."""
    header_implicit = implicit
    if implicit_items is not None:
        implicit = implicit_items
    if header_implicit:
        out = struct.pack("<HHL", tag >> 16, tag & 0xFFFF, 0xFFFFFFFF)
    else:
        out = struct.pack("<HH2s2xL", tag >> 16, tag & 0xFFFF, vr, 0xFFFFFFFF)
    for item in items:
        if item is None:
            inner = element(0x00100020, b"LO", b"NESTED", implicit=implicit)
            out += struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner
            out += struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
        else:
            out += struct.pack("<HHL", 0xFFFE, 0xE000, len(item)) + item
    return out + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


def build(ts: str = EXPLICIT_LE, /, **elements: object) -> bytes:
    """A Part 10 file written by pydicom itself from keyword=value pairs."""
    import warnings

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID

    ds = Dataset()
    ds.SOPClassUID = MR_STORAGE
    ds.SOPInstanceUID = "1.2.3.4"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for keyword, value in elements.items():
            setattr(ds, keyword, value)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = UID(MR_STORAGE)
        ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4")
        ds.file_meta.TransferSyntaxUID = UID(ts)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@contextmanager
def no_hang(seconds: int = 20) -> Iterator[None]:
    """Fail (rather than hang the suite) if one case takes absurdly long."""

    def _alarm(signum: int, frame: object) -> None:
        raise AssertionError(f"a header read took more than {seconds} s: hang")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# --------------------------------------------------------------------------------------
# the corpora and pydicom's own test files
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "count"), CORPORA_AND_COUNTS)
def test_corpus_fast_path_equals_pydicom(
    header_corpora: dict[str, list[Path]], name: str, count: int
) -> None:
    files = header_corpora[name]
    assert len(files) == count
    mismatches = []
    for path in files:
        fast = read_header_fast(path, KEYWORDS)  # must not decline: raises _Unsupported
        ref = read_header_pydicom(path)
        if fast != ref:
            mismatches.append(f"{path.name}: {corpora.diff(fast, ref)}")
        for kw in CORE:
            if kw != "PerformedStationAETitle":  # absent from every corpus
                assert (kw in fast.values) == (kw in ref.values)
    assert not mismatches, "\n".join(mismatches[:20])


def test_corpus_sources_path_bytes_memoryview_agree(header_corpora: dict[str, list[Path]]) -> None:
    for files in header_corpora.values():
        for path in files[:5]:
            data = path.read_bytes()
            by_path = read_header_fast(path, KEYWORDS)
            assert read_header_fast(str(path), KEYWORDS) == by_path
            assert read_header_fast(data, KEYWORDS) == by_path
            assert read_header_fast(bytearray(data), KEYWORDS) == by_path
            assert read_header_fast(memoryview(data), KEYWORDS) == by_path
            assert read_header(path, KEYWORDS) == by_path


def test_large_files_are_mapped_and_read_alike(
    header_corpora: dict[str, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files above the read-whole limit are mmapped; both ways give the same answer,
    truncation included."""
    for files in header_corpora.values():
        for path in files[:3]:
            cut = tmp_path / f"cut-{path.name}"
            cut.write_bytes(path.read_bytes()[:-100])
            monkeypatch.setattr(header_module, "_READ_WHOLE_MAX", 1 << 20)
            read = read_header_fast(path, KEYWORDS)
            with pytest.raises(TruncatedError):
                read_header_fast(cut, KEYWORDS)
            monkeypatch.setattr(header_module, "_READ_WHOLE_MAX", 0)
            assert read_header_fast(path, KEYWORDS) == read
            with pytest.raises(TruncatedError):
                read_header_fast(cut, KEYWORDS)


def test_corpus_values_look_right(header_corpora: dict[str, list[Path]]) -> None:
    explicit = read_header(header_corpora["mr-explicit"][0], KEYWORDS)
    assert explicit.transfer_syntax == EXPLICIT_LE
    assert explicit.get("PatientName") == "Phantom^A"
    assert explicit.get("Modality") == "MR"
    assert explicit.get("ImageType") == "['ORIGINAL', 'PRIMARY', 'M', 'ND', 'NORM']"
    implicit = read_header(header_corpora["mr-implicit"][0], KEYWORDS)
    assert implicit.transfer_syntax == IMPLICIT_LE
    assert implicit.get("AccessionNumber") == ""
    assert "AccessionNumber" in implicit.empty


@pytest.mark.shared
def test_shared_corpus_values_look_right(header_corpora: dict[str, list[Path]]) -> None:
    if "SAG-anon" not in header_corpora or "example-dicom-structural" not in header_corpora:
        pytest.skip("the shared corpora are absent (../shared/data)")
    sag = read_header(header_corpora["SAG-anon"][0], KEYWORDS)
    assert sag.transfer_syntax == EXPLICIT_LE
    assert sag.get("PatientName") == "anonymized"
    assert sag.get("Modality") == "MR"
    assert (sag.get("ImageType") or "").startswith("['ORIGINAL', 'PRIMARY'")
    structural = read_header(header_corpora["example-dicom-structural"][0], KEYWORDS)
    assert structural.transfer_syntax == IMPLICIT_LE
    assert structural.get("AccessionNumber") == ""
    assert "AccessionNumber" in structural.empty


def _pydicom_test_files() -> list[Path]:
    from pydicom.data import get_testdata_files

    return sorted(Path(f) for f in get_testdata_files() if os.path.isfile(f))


def test_pydicom_test_files() -> None:
    problems = []
    fast_taken = 0
    for path in _pydicom_test_files():
        data = path.read_bytes()
        with no_hang():
            problem = check(data)
        if problem:
            problems.append(f"{path.name}: {problem}")
        try:
            read_header_fast(data, KEYWORDS)
            fast_taken += 1
        except (_Unsupported, NotDicomError, TruncatedError):
            pass
    assert not problems, "\n".join(problems)
    assert fast_taken >= 150  # nearly all of pydicom's ~170 readable files


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "rtplan_truncated.dcm"])
def test_pydicom_truncated_files_are_truncated(name: str) -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    with pytest.raises(TruncatedError) as info:
        read_header(path, KEYWORDS)  # type: ignore[arg-type]
    assert str(info.value).startswith(f"{path}: truncated")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "name", ["no_meta.dcm", "ExplVR_BigEndNoMeta.dcm", "ExplVR_LitEndNoMeta.dcm"]
)
def test_pydicom_files_without_preamble_are_not_dicom(name: str) -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    with pytest.raises(NotDicomError):
        read_header(path, KEYWORDS)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# not DICOM, truncated
# --------------------------------------------------------------------------------------


def test_empty_file_and_buffer(tmp_path: Path) -> None:
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    for reader in (read_header, read_header_fast):
        with pytest.raises(NotDicomError) as info:
            reader(empty, KEYWORDS)
        assert str(info.value) == f"{empty}: empty file, not DICOM"
        with pytest.raises(NotDicomError):
            reader(b"", KEYWORDS)


@pytest.mark.parametrize(
    "data",
    [
        b"x",
        b"\0" * 131,
        b"\0" * 132,
        b"\0" * 128 + b"DICX" + b"\0" * 100,
        bytes(random.Random(1).randrange(256) for _ in range(5000)),
        b"%PDF-1.4\n" + b"\0" * 500,
    ],
    ids=["1-byte", "131-zeros", "132-zeros", "DICX", "random", "pdf"],
)
def test_garbage_is_not_dicom(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "garbage.dcm"
    path.write_bytes(data)
    with pytest.raises(NotDicomError) as info:
        read_header(path, KEYWORDS)
    assert str(info.value).startswith(f"{path}: ")
    assert "\n" not in str(info.value)
    assert check(data) is None


def test_without_preamble_is_not_dicom(header_corpora: dict[str, list[Path]]) -> None:
    data = header_corpora["mr-explicit"][0].read_bytes()
    meta_and_dataset = data[132:]
    bare = part10(b"")
    raw_dataset = data[len(bare) + 20 :]  # roughly past the meta: junk to pydicom too
    for variant in (meta_and_dataset, b"DICM" + meta_and_dataset, raw_dataset):
        with pytest.raises(NotDicomError):
            read_header(variant, KEYWORDS)
        assert check(variant) is None


def test_preamble_and_magic_only() -> None:
    data = b"\0" * 128 + b"DICM"
    assert check(data) is None
    assert read_header(data, KEYWORDS).values == {}


def test_meta_only_file_is_an_empty_dataset() -> None:
    data = part10(b"")
    header = assert_fast_equals_pydicom(data)
    assert header.values == {}
    assert header.transfer_syntax == EXPLICIT_LE


def _top_level_elements(data: bytes) -> list[tuple[int, int, int]]:
    """(header start, value start, value end) of pydicom's raw top-level elements."""
    import warnings

    import pydicom
    from pydicom.dataelem import RawDataElement

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data))
    implicit = ds.file_meta.TransferSyntaxUID == IMPLICIT_LE
    out = []
    for raw in ds._dict.values():
        if not isinstance(raw, RawDataElement) or raw.length == 0xFFFFFFFF:
            continue
        vr = (raw.VR or "").encode()
        start = raw.value_tell - (8 if implicit or vr not in LONG_VRS else 12)
        out.append((start, raw.value_tell, raw.value_tell + raw.length))
    return sorted(out)


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_truncated_at_many_offsets(header_corpora: dict[str, list[Path]], name: str) -> None:
    data = header_corpora[name][0].read_bytes()
    elements = _top_level_elements(data)
    assert len(elements) > 50
    cuts = {133, 140, 150, len(data) - 1, len(data) - 2}
    ends = set()
    for start, value, stop in elements:
        cuts.update({start + 1, start + 4, start + 7})
        if stop - value >= 2:
            cuts.add(value + (stop - value) // 2)  # inside the value (pixel data included)
        ends.add(stop)
    cuts -= ends
    for cut in sorted(cuts):
        with pytest.raises(TruncatedError) as info:
            read_header(data[:cut], KEYWORDS)
        assert "truncated" in str(info.value)
        assert "\n" not in str(info.value)
    for cut in sorted(ends)[::7]:  # ending exactly between elements is a complete dataset
        assert check(data[:cut]) is None
        read_header_fast(data[:cut], KEYWORDS)


def test_truncated_error_names_the_file(
    header_corpora: dict[str, list[Path]], tmp_path: Path
) -> None:
    data = header_corpora["mr-explicit"][0].read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TruncatedError) as info:
        read_header(path, KEYWORDS)
    assert str(info.value).startswith(f"{path}: truncated DICOM: ends inside ")


# --------------------------------------------------------------------------------------
# hostile and unusual values and encodings, built with pydicom
# --------------------------------------------------------------------------------------


def test_missing_elements_are_absent() -> None:
    data = build(PatientID="P1")
    header = assert_fast_equals_pydicom(data)
    assert header.values == {"SOPInstanceUID": "1.2.3.4", "PatientID": "P1"}


def test_hostile_values_take_the_fast_path() -> None:
    data = build(
        PatientID="../../etc/passwd",
        PatientName="A\0B^C",
        StudyDescription="a\0\0b ",
        SeriesDescription="x" * 1000,
        AccessionNumber="",
        InstanceNumber="",
        SeriesNumber=" 7 ",
        Modality="MR\0",
        ImageType=["ORIGINAL", "PRIMARY", "../x", "it's"],
        PixelSpacing=["0.5", " 1e-3"],
        EchoTime="2.52",
        Rows=256,
        StudyDate="20130308",
        PatientAge="042Y",
        ProtocolName="(0008,1150) x (abcd,EF01)",
        ReferringPhysicianName="Doe^John==",
        WindowCenter=["40", "-600"],
        ImageComments="back\\slash",
        PerformedStationAETitle="  AE TITLE  ",
    )
    header = assert_fast_equals_pydicom(data)
    assert header.get("PatientID") == "../../etc/passwd"
    assert header.get("InstanceNumber") == "None"
    assert {"AccessionNumber", "InstanceNumber"} <= header.empty
    # text that looks like a tag is text: px-repack (pydicom 2.4) prints it unchanged
    assert header.get("ProtocolName") == "(0008,1150) x (abcd,EF01)"


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("ISO_IR 100", "Buc^Jérôme"),
        ("ISO_IR 192", "Buc^Jérôme"),
        ("ISO_IR 192", "山田^太郎=やまだ^たろう"),
        (None, "Müller^Hans"),
        ("ISO_IR 6", "Plain^Name"),
    ],
)
def test_character_sets_on_the_fast_path(charset: str | None, name: str) -> None:
    elements: dict[str, object] = {"PatientName": name, "StudyDescription": name.replace("^", " ")}
    if charset is not None:
        elements["SpecificCharacterSet"] = charset
    data = build(**elements)  # no character set: pydicom writes latin-1
    header = assert_fast_equals_pydicom(data)
    assert header.get("PatientName") == name


@pytest.mark.parametrize(
    "charset", ["ISO 2022 IR 87", "ISO_IR 144", "\\ISO 2022 IR 149", "GB18030"]
)
def test_ascii_text_with_other_character_sets_takes_the_fast_path(charset: str) -> None:
    data = build(SpecificCharacterSet=charset, StudyDescription="Plain text", PatientID="ID")
    assert assert_fast_equals_pydicom(data).get("StudyDescription") == "Plain text"
    # ... but not a person name, which pydicom re-encodes through the character set
    assert_declines_and_falls_back(build(SpecificCharacterSet=charset, PatientName="Plain^Name"))


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        ("ISO_IR 144", "Люкceмбypг"),
        ("GB18030", "Wang^XiaoDong=王^小东="),
    ],
)
def test_other_character_sets_fall_back(charset: str, name: str) -> None:
    data = build(SpecificCharacterSet=charset, PatientName=name)
    assert_declines_and_falls_back(data)


def test_big_endian() -> None:
    data = part10(
        element(0x00080060, b"CS", b"MR", little=False)
        + element(0x00100010, b"PN", b"Big^Endian", little=False)
        + element(0x00200013, b"IS", b"12", little=False)
        + element(0x00280010, b"US", struct.pack(">H", 512), little=False)
        + element(0x00281050, b"DS", b"40\\400 ", little=False)
        + element(0x7FE00010, b"OW", b"\1\2\3\4", little=False),
        ts=EXPLICIT_BE,
    )
    header = assert_fast_equals_pydicom(data)
    assert header.get("Rows") == "512"
    assert header.get("WindowCenter") == "[40, 400]"
    with pytest.raises(TruncatedError):
        read_header(data[:-1], KEYWORDS)


@pytest.mark.parametrize("implicit", [True, False])
def test_undefined_length_sequences(implicit: bool) -> None:
    ts = IMPLICIT_LE if implicit else EXPLICIT_LE

    def el(tag: int, vr: bytes, value: bytes) -> bytes:
        return element(tag, vr, value, implicit=implicit)

    nested_item = undefined(
        0x00081115, b"SQ", [None, el(0x00080060, b"CS", b"CT")], implicit=implicit
    )
    body = (
        el(0x00080005, b"CS", b"ISO_IR 100")
        + el(0x00080060, b"CS", b"MR")
        + undefined(0x00081140, b"SQ", [None, nested_item, b""], implicit=implicit)
        + undefined(0x00091010, b"SQ" if not implicit else b"UN", [None, None], implicit=implicit)
        + el(0x00100010, b"PN", b"After^Sequences")
        + el(0x00100020, b"LO", b"TOP ")
        + el(0x00200013, b"IS", b"7 ")
    )
    if not implicit:
        body += undefined(0x00291020, b"UN", [None], implicit_items=True)  # UN: implicit inside
    body += el(0x7FE00010, b"OW", b"\0" * 16)
    data = part10(body, ts=ts)
    header = assert_fast_equals_pydicom(data)
    assert header.get("PatientID") == "TOP"  # the nested PatientIDs are not top level
    assert header.get("PatientName") == "After^Sequences"
    cut = data.index(b"NESTED") + 2
    with pytest.raises(TruncatedError):
        read_header(data[:cut], KEYWORDS)


def test_sequence_inside_explicit_item_may_be_implicit() -> None:
    item = element(0x00080060, b"CS", b"CT", implicit=True)
    body = undefined(0x00081140, b"SQ", [item]) + element(0x00100020, b"LO", b"ID")
    assert assert_fast_equals_pydicom(part10(body)).get("PatientID") == "ID"


def test_requested_sequence_and_odd_vrs_fall_back() -> None:
    body = undefined(0x00081140, b"SQ", [None]) + element(0x00100020, b"LO", b"ID")
    data = part10(body)
    assert_declines_and_falls_back(data, ("ReferencedImageSequence", "PatientID"))
    at = part10(element(0x00100020, b"LO", b"ID") + element(0x00209165, b"AT", b"\x10\0\x20\0"))
    assert_declines_and_falls_back(at, ("DimensionIndexPointer", "PatientID"))
    un = part10(element(0x00100020, b"UN", b"ID"))
    assert_declines_and_falls_back(un, ("PatientID",))


def test_encapsulated_pixel_data() -> None:
    fragments = [b"\xff\xd8" + b"\xfe\xff\xdd\xe0" * 3 + b"\xff\xd9", b"second"]
    pixel = struct.pack("<HH2s2xL", 0x7FE0, 0x0010, b"OB", 0xFFFFFFFF)
    pixel += struct.pack("<HHL", 0xFFFE, 0xE000, 0)  # basic offset table
    for fragment in fragments:
        fragment += b"\0" * (len(fragment) % 2)
        pixel += struct.pack("<HHL", 0xFFFE, 0xE000, len(fragment)) + fragment
    pixel += struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    body = element(0x00080060, b"CS", b"MR") + element(0x00100020, b"LO", b"JPEG") + pixel
    trailer = element(0xFFFCFFFC, b"OB", b"\0" * 8)
    data = part10(body + trailer, ts=JPEG_BASELINE)
    header = assert_fast_equals_pydicom(data)
    assert header.transfer_syntax == JPEG_BASELINE
    for cut in (len(body) - 20, len(body) - 4, len(data) - 3):
        offset = cut + len(part10(b""))
        with pytest.raises(TruncatedError):
            read_header(data[:offset] if offset < len(data) else data[:cut], KEYWORDS)


def test_elements_after_pixel_data_do_not_count() -> None:
    body = element(0x00100020, b"LO", b"BEFORE") + element(0x7FE00010, b"OW", b"\0\0")
    body += element(0x00100010, b"PN", b"Late^Name") + element(0x00100020, b"LO", b"LATE")
    header = assert_fast_equals_pydicom(part10(body))
    assert header.get("PatientID") == "BEFORE"
    assert "PatientName" not in header.values


def test_duplicate_elements_last_wins() -> None:
    body = element(0x00100020, b"LO", b"FIRST") + element(0x00100020, b"LO", b"SECOND")
    assert assert_fast_equals_pydicom(part10(body)).get("PatientID") == "SECOND"


def test_deflated_falls_back() -> None:
    plain = element(0x00080060, b"CS", b"MR") + element(0x00100020, b"LO", b"DEFLATED")
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(plain) + compressor.flush()
    data = part10(deflated, ts=DEFLATED)
    assert_declines_and_falls_back(data)
    assert read_header(data, KEYWORDS).get("PatientID") == "DEFLATED"
    pydicom_written = build(DEFLATED, PatientID="P", Modality="CT")
    assert_declines_and_falls_back(pydicom_written)


def test_unknown_transfer_syntax_and_no_transfer_syntax_fall_back() -> None:
    body = element(0x00100020, b"LO", b"X")
    assert_declines_and_falls_back(part10(body, ts="1.2.3.4.5.6"))
    no_ts = b"\0" * 128 + b"DICM" + element(0x00020001, b"OB", b"\0\1") + body
    assert_declines_and_falls_back(no_ts)


def test_unknown_keyword_is_absent() -> None:
    data = build(PatientID="P")
    assert read_header(data, ("NotADicomKeyword", "PatientID")).values == {"PatientID": "P"}


# --------------------------------------------------------------------------------------
# fuzzing: values (per VR) and mutations of real files
# --------------------------------------------------------------------------------------


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(
    vr=st.sampled_from(sorted(VR_KEYWORDS)),
    values=st.lists(st.lists(st.sampled_from(VALUE_ALPHABET), max_size=24), min_size=1, max_size=3),
    charset=st.sampled_from(CHARSETS),
    little=st.booleans(),
)
def test_value_fuzz(vr: str, values: list[list[int]], charset: bytes | None, little: bool) -> None:
    """Random bytes as the value of each VR: equal to pydicom, or declined."""
    data, keywords = value_case(vr, values, charset, little)
    with no_hang():
        assert check(data, keywords) is None


def _fuzz_seeds() -> list[bytes]:
    from pydicom.data import get_testdata_file

    names = [
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "nested_priv_SQ.dcm",
        "rtplan.dcm",
        "JPEG2000.dcm",
        "UN_sequence.dcm",
        "reportsi.dcm",
    ]
    seeds = [Path(get_testdata_file(n)).read_bytes() for n in names]  # type: ignore[arg-type]
    seeds += [generated_bytes(name) for name in GENERATED_CORPORA]
    for name in corpora.INNER:
        if corpora.tarball(name).exists():
            seeds.append(_first_corpus_file(name))
    return seeds


_SEED_CACHE: dict[str, bytes] = {}


def _first_corpus_file(name: str) -> bytes:
    if name not in _SEED_CACHE:
        import tarfile

        with tarfile.open(corpora.tarball(name)) as tf:
            member = next(m for m in tf.getmembers() if m.name.endswith(".dcm"))
            _SEED_CACHE[name] = tf.extractfile(member).read()  # type: ignore[union-attr]
    return _SEED_CACHE[name]


SEEDS = _fuzz_seeds()


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(seed=st.sampled_from(range(len(SEEDS))), rng=st.randoms(use_true_random=False))
def test_mutation_fuzz(seed: int, rng: random.Random) -> None:
    """Mutated real files: pydicom's answer or a clean NotDicom/Truncated error, no hang."""
    data = SEEDS[seed]
    for _ in range(rng.randint(1, 3)):
        data = corpora.mutate(data, rng)
    with no_hang():
        problem = check(data)
    assert problem is None, problem


# --------------------------------------------------------------------------------------
# the contract around the fast path
# --------------------------------------------------------------------------------------


def test_header_api() -> None:
    header = Header(values={"PatientID": "P"}, empty=frozenset({"X"}), transfer_syntax="1.2")
    assert header.get("PatientID") == "P"
    assert header.get("Modality") is None
    assert header == Header({"PatientID": "P"}, frozenset({"X"}), "1.2")
    assert header != Header({"PatientID": "P"})
    assert Header({}).empty == frozenset()
    assert Header({}).transfer_syntax == ""
    with pytest.raises(AttributeError):
        header.values = {}
    assert "PatientID" in repr(header)


def test_fast_path_imports_nothing_heavy(tmp_path: Path) -> None:
    path = tmp_path / "one.dcm"
    path.write_bytes(build(PatientID="P", SeriesNumber="3"))
    code = (
        "import sys\n"
        "from dicom_repack.core.header import read_header\n"
        "from dicom_repack.core.keywords import CORE\n"
        f"h = read_header({str(path)!r}, list(CORE))\n"
        "assert h.get('PatientID') == 'P', h\n"
        "heavy = {'pydicom', 're', 'json', 'enum', 'argparse', 'datetime', 'dataclasses',\n"
        "         'typing', 'inspect', 'collections'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_core_vrs_match_pydicom_dictionary() -> None:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    for keyword, (tag, vr) in CORE.items():
        assert tag_for_keyword(keyword) == tag
        assert dictionary_VR(tag) == vr


def test_ascii_decodes_alike_in_every_pydicom_codec() -> None:
    """Why ASCII text may take the fast path whatever the Specific Character Set."""
    from pydicom.charset import python_encoding

    ascii_bytes = bytes(b for b in range(128) if b != 0x1B)
    for codec in set(python_encoding.values()):
        assert ascii_bytes.decode(codec) == ascii_bytes.decode("latin-1"), codec
    for name, codec in header_module._CHARSET_CODECS.items():
        assert python_encoding[name or "ISO_IR 6"].replace("_", "-").lower() in (
            codec,
            "iso8859",
            "utf8",
        )


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(alphabet="(),0123456789abcdefABCDEFgx (", max_size=40))
def test_text_values_are_never_rewritten_by_pattern(text: str) -> None:
    """Only tags pydicom made are printed the 2.4 way; text that looks like a tag stays."""
    assert render_value(text) == text
