"""The shared corpora, and the oracle that holds the fast header path to pydicom.

Used by tests/test_header.py and by benchmarks/fuzz_header.py and
benchmarks/header_speed.py (which put this folder on sys.path). The tarballs live
read-only in ``../shared/data`` beside the checkout; nothing here copies them into
the repository.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

from dicom_repack.core.errors import NotDicomError, TruncatedError
from dicom_repack.core.header import Header, _Unsupported, read_header, read_header_fast
from dicom_repack.core.header import read_header_pydicom as _read_header_pydicom
from dicom_repack.core.keywords import CORE
from helpers import SHARED, SHARED_CORPORA, shared_tarball, unpack_shared
from helpers import CorpusMissing as CorpusMissing  # re-exported for the benchmarks
from helpers import dicom_files as dicom_files  # re-exported for tests and benchmarks

#: the shared corpora (one definition, in helpers.py): name -> folder inside its tarball
INNER = SHARED_CORPORA
DATA = SHARED


def tarball(name: str) -> Path:
    return shared_tarball(name)


def unpack(corpus_name: str, dest: Path) -> Path:
    """Extract a shared corpus into ``dest`` (helpers.unpack_shared: skips when absent)."""
    return unpack_shared(corpus_name, dest)


#: every CORE keyword plus non-core ones (multi-valued, DS, FD-free US, LO ...)
KEYWORDS: tuple[str, ...] = (
    *CORE,
    "ProtocolName",
    "ImageType",
    "PixelSpacing",
    "EchoTime",
    "Rows",
    "Columns",
    "SliceThickness",
    "ImagePositionPatient",
    "WindowCenter",
    "AcquisitionTime",
    "ImageComments",
    "ReferringPhysicianName",
)


def read_header_pydicom(source: object, keywords: tuple[str, ...] = KEYWORDS) -> Header:
    """The reference path, with pydicom's warnings (expected on hostile input) silenced."""
    import logging
    import warnings

    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _read_header_pydicom(source, keywords)  # type: ignore[arg-type]


def _outcome(func: object, data: object, keywords: tuple[str, ...]) -> object:
    try:
        return func(data, keywords)  # type: ignore[operator]
    except (NotDicomError, TruncatedError) as exc:
        return exc


#: how often check() saw each outcome of the fast path (for the fuzz script's report)
OUTCOMES: dict[str, int] = {}


def _count(outcome: str) -> None:
    OUTCOMES[outcome] = OUTCOMES.get(outcome, 0) + 1


def check(data: bytes, keywords: tuple[str, ...] = KEYWORDS) -> str | None:
    """Return None if the fast path and read_header behave on ``data``, else what went wrong.

    The rules: the fast path either returns exactly pydicom's Header, or raises a
    clean NotDicomError/TruncatedError (pydicom may have read a truncated file
    silently), or declines, in which case read_header must give what pydicom gives.
    Anything else (another exception, a different value) is a mismatch.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fast: object = read_header_fast(data, keywords)
        except _Unsupported:
            fast = None
            _count("declined")
        except (NotDicomError, TruncatedError) as exc:
            _count(exc.__class__.__name__)
            return _check_error(exc)
        except Exception as exc:
            return f"fast path raised {exc.__class__.__name__}: {exc}"
        try:
            ref = _outcome(read_header_pydicom, data, keywords)
        except Exception as exc:
            return f"read_header_pydicom raised {exc.__class__.__name__}: {exc}"
        if fast is None:
            try:
                public = _outcome(read_header, data, keywords)
            except Exception as exc:
                return f"read_header raised {exc.__class__.__name__}: {exc}"
            if isinstance(public, Exception):
                if type(public) is not type(ref):
                    return f"fallback raised {public!r}, pydicom gave {ref!r}"
                return _check_error(public)
            return None if public == ref else f"fallback {public!r} != pydicom {ref!r}"
        _count("fast path returned a Header")
        if isinstance(ref, Exception):
            return f"fast path returned {fast!r} but pydicom raised {ref!r}"
        return None if fast == ref else diff(fast, ref)  # type: ignore[arg-type]


def _check_error(exc: Exception) -> str | None:
    text = str(exc)
    if "\n" in text or not text.startswith("<buffer>: "):
        return f"error message is not one line naming the file: {text!r}"
    return None


def diff(fast: Header, ref: Header) -> str:
    lines = []
    for kw in sorted(set(fast.values) | set(ref.values)):
        a, b = fast.values.get(kw), ref.values.get(kw)
        if a != b:
            lines.append(f"{kw}: fast {a!r} != pydicom {b!r}")
    if fast.empty != ref.empty:
        lines.append(f"empty differs: {sorted(fast.empty ^ ref.empty)}")
    if fast.transfer_syntax != ref.transfer_syntax:
        lines.append(f"transfer syntax {fast.transfer_syntax!r} != {ref.transfer_syntax!r}")
    return "; ".join(lines) or "headers differ"


def header_end(data: bytes) -> int:
    """Offset of the pixel data element (or the end): where mutations matter most."""
    for tag in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"):
        at = data.rfind(tag)
        if at > 132:
            return at + 16
    return len(data)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random structural mutation of a real file (used with a seeded Random)."""
    if len(data) <= 140:
        return data[: rng.randrange(len(data) + 1)]
    hot = max(133, min(len(data), header_end(data)))
    kind = rng.randrange(7)
    buf = bytearray(data)
    if kind == 0:  # truncate anywhere
        return bytes(buf[: rng.randrange(len(buf) + 1)])
    if kind == 1:  # truncate in the header region
        return bytes(buf[: rng.randrange(hot)])
    if kind == 2:  # flip bytes in the header region
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(hot)] = rng.randrange(256)
        return bytes(buf)
    if kind == 3:  # overwrite a 16/32-bit length-ish field with something extreme
        at = rng.randrange(132, hot)
        value = rng.choice([0, 1, 0xFFFF, 0xFFFFFFFF, rng.randrange(1 << 32)])
        buf[at : at + 4] = value.to_bytes(4, "little")
        return bytes(buf)
    if kind == 4:  # delete a few bytes
        at = rng.randrange(132, hot)
        del buf[at : at + rng.randint(1, 16)]
        return bytes(buf)
    if kind == 5:  # insert interesting bytes
        at = rng.randrange(132, hot)
        junk = rng.choice([b"\\", b"\x00", b" ", b"\xff\xfe\x00\xe0", b"\x1b", b"\xc3", b"SQ"])
        buf[at:at] = junk * rng.randint(1, 4)
        return bytes(buf)
    # duplicate a slice (repeated elements)
    at = rng.randrange(132, hot)
    n = rng.randint(8, 64)
    buf[at:at] = buf[at : at + n]
    return bytes(buf)


# --------------------------------------------------------------------------------------
# files built by hand, so that values pydicom would never write can be tried
# --------------------------------------------------------------------------------------

EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT"}
LONG_VRS |= {b"UV"}


def element(
    tag: int, vr: bytes, value: bytes, *, little: bool = True, implicit: bool = False
) -> bytes:
    """One element, encoded by hand (so that values pydicom would not write can be tried)."""
    e = "<" if little else ">"
    group, elem = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack(e + "HHL", group, elem, len(value)) + value
    if vr in LONG_VRS:
        return struct.pack(e + "HH2s2xL", group, elem, vr, len(value)) + value
    return struct.pack(e + "HH2sH", group, elem, vr, len(value)) + value


def part10(body: bytes, ts: str = EXPLICIT_LE, preamble: bytes = b"\0" * 128) -> bytes:
    """Preamble, 'DICM', a file meta group naming ``ts``, then ``body`` as the dataset."""
    uid = ts.encode()
    if len(uid) % 2:
        uid += b"\0"
    meta = (
        element(0x00020001, b"OB", b"\0\1")
        + element(0x00020002, b"UI", MR_STORAGE.encode() + b"\0")
        + element(0x00020003, b"UI", b"1.2.3.4\0")
        + element(0x00020010, b"UI", uid)
    )
    group_length = element(0x00020000, b"UL", struct.pack("<L", len(meta)))
    return preamble + b"DICM" + group_length + meta + body


#: VR -> a standard keyword of that VR (explicit VR: the file's VR is what pydicom uses)
VR_KEYWORDS = {
    "AE": "PerformedStationAETitle",
    "AS": "PatientAge",
    "CS": "Modality",
    "DA": "StudyDate",
    "DS": "PixelSpacing",
    "DT": "AcquisitionDateTime",
    "IS": "InstanceNumber",
    "LO": "PatientID",
    "LT": "AdditionalPatientHistory",
    "PN": "PatientName",
    "SH": "AccessionNumber",
    "ST": "InstitutionAddress",
    "TM": "StudyTime",
    "UC": "LongCodeValue",
    "UI": "SOPInstanceUID",
    "UR": "CodingSchemeURL",
    "UT": "PrivateDataElementDescription",
    "US": "Rows",
    "SS": "TagAngleSecondAxis",
    "UL": "PrivateDataElementValueMultiplicity",
    "SL": "ReferencePixelX0",
    "FL": "RecommendedDisplayFrameRateInFloat",
    "FD": "TimeRange",
    "SV": "SelectorSVValue",
    "UV": "FileOffsetInContainer",
    "AT": "DataElement",
    "OB": "RecordKey",
    "UN": "SelectorUNValue",
}
VALUE_ALPHABET = list(b" \0\\0123456789.+-eE=^AZaz_()',\t\r\n\x1b\x7f\x80\xa0\xc3\xa9\xe9\xff")
CHARSETS = [
    None,
    b"",
    b"ISO_IR 100",
    b"ISO_IR 192",
    b"ISO_IR 6",
    b"ISO 2022 IR 87",
    b"\\ISO 2022 IR 100",
]
CHARSETS += [b"ISO_IR 100 ", b"GARBAGE", b"ISO_IR 13"]


def value_case(
    vr: str, values: list[list[int]], charset: bytes | None, little: bool
) -> tuple[bytes, tuple[str, ...]]:
    """A file holding one element of ``vr`` made of ``values`` (and maybe a character set)."""
    from dicom_repack.core.keywords import lookup

    raw = b"\\".join(bytes(v) for v in values)
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "AT", "OB", "UN"):
        raw = bytes(values[0])  # binary: the byte count is what matters
    body = b""
    if charset is not None:
        body += element(0x00080005, b"CS", charset, little=little)
    tag = lookup(VR_KEYWORDS[vr])[0]  # type: ignore[index]
    body += element(tag, vr.encode(), raw, little=little)
    data = part10(body, ts=EXPLICIT_LE if little else EXPLICIT_BE)
    return data, (VR_KEYWORDS[vr], "SpecificCharacterSet")
