"""Read just the elements the layout and the records need from a DICOM file.

Public API: :func:`read_header`, :class:`Header`, :func:`read_header_pydicom` and
:func:`render_value`. Values are rendered the way px-repack renders them
(``"%s" % dataset.Keyword``), because the pypx records downstream tools read are
built from that text.

Two paths give the same answer:

* :func:`read_header_fast`, pure Python over the raw bytes (``struct`` + ``mmap``,
  no pydicom import): pydicom's import alone costs ~100 ms and its reader ~1.5 ms
  per Siemens file, while the per-instance door has ~5 ms in all. It handles the
  transfer syntaxes that make up nearly every file received (implicit/explicit VR
  little endian, explicit VR big endian, the encapsulated syntaxes) and the VRs
  whose pydicom rendering it reproduces exactly. Anything else it *declines* by
  raising :class:`_Unsupported`;
* :func:`read_header_pydicom`, the reference, used for everything declined.

:func:`read_header` tries the first and falls back to the second. The fast path
walks every top-level element to the end of the file (skipping values by length,
so GB multi-frame files cost no more than small ones) and so tells truncated
files apart even where pydicom (``stop_before_pixels``) would read them silently.
tests/test_header.py holds both paths equal on both corpora, on pydicom's own
test files and under fuzzing; docs/header.md summarises what falls back.
"""

from __future__ import annotations

import os
import struct

from .errors import NotDicomError, NotRegularFileError, TruncatedError
from .render import render_value

TYPE_CHECKING = False  # importing typing/collections.abc costs time the door does not have
if TYPE_CHECKING:
    import mmap
    from collections.abc import Collection, Mapping
    from typing import TypeAlias

    Source: TypeAlias = str | os.PathLike[str] | bytes | bytearray | memoryview
    Buffer: TypeAlias = bytes | bytearray | memoryview | mmap.mmap

__all__ = [
    "Header",
    "dataset_offset",
    "open_regular",
    "read_header",
    "read_header_pydicom",
    "read_small_file",
    "render_value",
]


class Header:
    """The requested elements of one instance.

    ``values`` maps each requested keyword that is present to its px-repack text
    (``"%s" % value``: e.g. ``'5'``, ``'anonymized'``, ``"['GR', 'IR']"``, and
    ``'None'`` for an empty numeric element). Absent keywords are not in it.
    ``empty`` names the present keywords whose value is empty (zero length after
    pydicom's decoding): rx-repack treats those as absent.

    A plain class rather than a dataclass: importing :mod:`dataclasses` pulls in
    ``inspect`` and ``re`` (~11 ms), twice the per-instance budget. Immutable by
    convention and by ``__setattr__``.
    """

    __slots__ = ("empty", "transfer_syntax", "values")

    values: Mapping[str, str]
    empty: frozenset[str]
    transfer_syntax: str

    def __init__(
        self,
        values: Mapping[str, str],
        empty: frozenset[str] = frozenset(),
        transfer_syntax: str = "",
    ) -> None:
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "empty", frozenset(empty))
        object.__setattr__(self, "transfer_syntax", transfer_syntax)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Header is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Header is immutable (cannot delete {name!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Header):
            return NotImplemented
        return (
            dict(self.values) == dict(other.values)
            and self.empty == other.empty
            and self.transfer_syntax == other.transfer_syntax
        )

    __hash__ = None  # type: ignore[assignment]  # values is a mutable mapping

    def __repr__(self) -> str:
        return (
            f"Header(values={dict(self.values)!r}, empty={self.empty!r}, "
            f"transfer_syntax={self.transfer_syntax!r})"
        )

    def get(self, keyword: str) -> str | None:
        return self.values.get(keyword)


def read_header(source: Source, keywords: Collection[str], *, name: str | None = None) -> Header:
    """Read ``keywords`` from a Part 10 file given as a path or its bytes.

    Raises NotDicomError (empty, no 'DICM' magic) or TruncatedError (ends inside an
    element), both naming the file (``name``, by default the path or "<buffer>").
    OSError from reading a path propagates. Never modifies the source. Uses the
    fast path and falls back to pydicom for whatever the fast path declines.
    """
    try:
        return read_header_fast(source, keywords, name=name)
    except _Unsupported:
        return read_header_pydicom(source, keywords, name=name)


def _one_line(text: str) -> str:
    """Error reasons are one line (pydicom's messages sometimes are not)."""
    return " ".join(text.split())


def _name(source: Source) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<buffer>"
    return os.fspath(source)


def read_header_pydicom(
    source: Source, keywords: Collection[str], *, name: str | None = None
) -> Header:
    """The reference path: pydicom reads the file; used for anything the fast path declines."""
    import io

    from ._pydicom import pydicom as _light_pydicom

    pydicom = _light_pydicom()  # without numpy/Pillow/requests: see _pydicom.py
    from pydicom.errors import InvalidDicomError

    name = name or _name(source)
    fp: object
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise NotDicomError(name, "empty file, not DICOM")
        fp = io.BytesIO(bytes(source))
    else:
        if os.path.getsize(source) == 0:
            raise NotDicomError(name, "empty file, not DICOM")
        fp = source
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise NotDicomError(name, _one_line(f"not DICOM ({exc})")) from None
    except Exception as exc:  # EOFError, OSError, struct.error, zlib.error, BytesLengthException...
        raise TruncatedError(
            name, _one_line(f"unreadable or truncated DICOM ({exc.__class__.__name__}: {exc})")
        ) from None
    values: dict[str, str] = {}
    empty: set[str] = set()
    for kw in keywords:
        if kw not in ds:
            continue
        try:
            elem = ds[kw]
            values[kw] = render_value(elem.value)  # a sequence decodes its items only here
            if elem.is_empty:
                empty.add(kw)
        except Exception as exc:  # pydicom raises assorted errors on damaged values
            raise TruncatedError(name, _one_line(f"cannot decode {kw} ({exc})")) from None
    try:
        ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    except Exception as exc:
        raise TruncatedError(name, _one_line(f"cannot decode TransferSyntaxUID ({exc})")) from None
    return Header(values=values, empty=frozenset(empty), transfer_syntax=ts)


# --------------------------------------------------------------------------------------
# The fast path
# --------------------------------------------------------------------------------------


class _Unsupported(Exception):
    """The fast path declines this file; pydicom must read it (the reason is the text)."""


class _Truncated(Exception):
    """The file ends inside an element (internal; turned into TruncatedError with the name)."""

    def __init__(self, what: str, offset: int) -> None:
        super().__init__(what, offset)
        self.what = what
        self.offset = offset


_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_DELIM = 0xFFFEE00D
_SEQ_DELIM = 0xFFFEE0DD
#: pydicom's stop_before_pixels stops at the first of these at the top level.
_PIXEL_TAGS = frozenset((0x7FE00010, 0x7FE00009, 0x7FE00008))
_CHARSET_TAG = 0x00080005
_LUT_DESCRIPTOR_TAGS = frozenset((0x00281101, 0x00281102, 0x00281103, 0x00283002))

#: Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)
#: Explicit VRs with a 2-byte length.
_SHORT_VRS = frozenset(
    (
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO",
        b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    )
)  # fmt: skip

_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"
#: Encapsulated syntaxes whose dataset is plain explicit VR little endian.
#: 1.2.840.10008.1.2.4.95 (JPIP Referenced Deflate) has a deflated dataset: not here.
_ENCAPSULATED_PREFIX = "1.2.840.10008.1.2.4."
_ENCAPSULATED_OTHER = frozenset(("1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1.98"))
_DEFLATED_JPIP = "1.2.840.10008.1.2.4.95"

#: Python codec pydicom uses for text VRs, for the Specific Character Sets we reproduce
#: byte-for-byte. Any other (or a multi-valued) set: only ASCII text takes the fast path,
#: which every codec pydicom maps to decodes identically (checked in the tests).
_CHARSET_CODECS = {
    "": "latin-1",  # pydicom's default 'iso8859' is Python's latin-1
    "ISO_IR 6": "latin-1",
    "ISO_IR 100": "latin-1",
    "ISO_IR 192": "utf-8",
}

#: Text VRs pydicom decodes with the dataset's character set (the others use latin-1).
_CHARSET_VRS = frozenset(("SH", "LO", "UC", "ST", "LT", "UT", "PN"))
#: VRs whose empty value pydicom represents as None (printed 'None').
_NONE_WHEN_EMPTY = frozenset(("IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"))
_BINARY_FORMATS = {
    "US": ("H", 2),
    "SS": ("h", 2),
    "UL": ("L", 4),
    "SL": ("l", 4),
    "FL": ("f", 4),
    "FD": ("d", 8),
    "SV": ("q", 8),
    "UV": ("Q", 8),
}
_IS_CHARS = frozenset("0123456789+- ")
_DS_CHARS = frozenset("0123456789+-.eE ")

_EXPL_LE = struct.Struct("<HH2sH").unpack_from
_EXPL_BE = struct.Struct(">HH2sH").unpack_from
_IMPL_LE = struct.Struct("<HHL").unpack_from
_IMPL_BE = struct.Struct(">HHL").unpack_from
_U32_LE = struct.Struct("<L").unpack_from
_U32_BE = struct.Struct(">L").unpack_from

#: keyword -> (tag, dictionary VR) or None, filled on demand from keywords.lookup.
_LOOKUP_CACHE: dict[str, tuple[int, str] | None] = {}


def _lookup(keyword: str) -> tuple[int, str] | None:
    try:
        return _LOOKUP_CACHE[keyword]
    except KeyError:
        pass
    from .keywords import lookup

    hit = lookup(keyword)
    _LOOKUP_CACHE[keyword] = hit
    return hit


#: keywords (as given) -> (requested (keyword, tag, VR) list, wanted tags); batch mode
#: asks for the same keywords for every file.
_PLANS: dict[tuple[str, ...], tuple[list[tuple[str, int, str]], frozenset[int]]] = {}


def _plan(keywords: Collection[str]) -> tuple[list[tuple[str, int, str]], frozenset[int]]:
    key = tuple(keywords)
    plan = _PLANS.get(key)
    if plan is None:
        requested = []
        for kw in key:
            hit = _lookup(kw)
            if hit is not None:
                requested.append((kw, hit[0], hit[1]))
        wanted = frozenset([_CHARSET_TAG, *(tag for _, tag, _ in requested)])
        plan = _PLANS[key] = (requested, wanted)
        if len(_PLANS) > 64:  # callers with ever-changing keyword sets: do not grow
            _PLANS.clear()
    return plan


def _is_upper_pair(b0: int, b1: int) -> bool:
    """pydicom's test for "this looks like an explicit VR" (two capital letters)."""
    return 0x40 < b0 < 0x5B and 0x40 < b1 < 0x5B


#: Files up to this size are read whole; larger ones (multi-frame, GBs) are mapped,
#: so that only their element headers are ever touched.
_READ_WHOLE_MAX = 1 << 20


def read_header_fast(
    source: Source, keywords: Collection[str], *, name: str | None = None
) -> Header:
    """The pure-Python reader; raises :class:`_Unsupported` when it declines the file.

    NotDicomError / TruncatedError are raised here as by :func:`read_header`.
    """
    name = name or _name(source)
    if isinstance(source, (bytes, bytearray)):
        return _read_buffer(source, len(source), name, keywords)
    if isinstance(source, memoryview):
        view = source if (source.format == "B" and source.ndim == 1) else source.cast("B")
        return _read_buffer(view, len(view), name, keywords)
    # one read() beats mmap's import and its map/unmap for a typical instance
    data = read_small_file(source)
    if data is not None:
        return _read_buffer(data, len(data), name, keywords)
    fd, st = open_regular(source)
    try:
        import mmap

        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        try:
            return _read_buffer(mm, st.st_size, name, keywords)
        finally:
            mm.close()
    finally:
        os.close(fd)


#: What each kind of non-regular file is called in an error (S_IFMT bits -> words).
_NOT_REGULAR = {
    0o010000: "a FIFO",
    0o020000: "a character device",
    0o040000: "a folder",
    0o060000: "a block device",
    0o140000: "a socket",
}


def open_regular(path: str | os.PathLike[str]) -> tuple[int, os.stat_result]:
    """Open ``path`` for reading only if it is a regular file: ``(fd, its fstat)``.

    The one rule for reading a source, used wherever a source path is opened:
    a FIFO, socket, device or folder is never read. The open itself cannot
    block (``O_NONBLOCK``: a FIFO without a writer would otherwise hang the door
    forever), and the kind is checked on the open file (``fstat``), so nothing
    can swap it in between. Raises NotRegularFileError (a skipped input, like
    NotDicomError), or OSError when the path cannot be opened. The caller closes
    ``fd``; reads from a regular file ignore ``O_NONBLOCK``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        import errno

        if exc.errno != errno.ENXIO:  # ENXIO: a socket, or a device with no driver
            raise
        st = os.stat(path)
        raise NotRegularFileError(os.fspath(path), _not_regular_reason(st.st_mode)) from None
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if (st.st_mode & 0o170000) != 0o100000:  # stat.S_ISREG without importing stat
        os.close(fd)
        raise NotRegularFileError(os.fspath(path), _not_regular_reason(st.st_mode))
    return fd, st


def _not_regular_reason(mode: int) -> str:
    kind = _NOT_REGULAR.get(mode & 0o170000, "not a file")
    return f"not a regular file ({kind}); skipped"


def _read_all(fd: int, size: int) -> bytes:
    """Everything in ``fd`` (``size`` as fstat said; a file that grew is read to its end)."""
    data = os.read(fd, size + 1)
    while len(data) < size + 1:
        more = os.read(fd, size + 1 - len(data))
        if not more:
            break
        data += more
    return data


def read_small_file(path: str | os.PathLike[str]) -> bytes | None:
    """The whole of ``path`` if it is at most 1 MiB, else None.

    A copy made from the bytes the header was parsed from costs no second open
    and read of the source, and is exactly what was parsed. Larger files are left
    to :func:`read_header`'s mapping and a kernel-side copy. OSError propagates;
    NotRegularFileError for a FIFO, socket, device or folder (see :func:`open_regular`).
    """
    fd, st = open_regular(path)
    try:
        if st.st_size > _READ_WHOLE_MAX:
            return None
        return _read_all(fd, st.st_size)
    finally:
        os.close(fd)


def _read_buffer(buf: Buffer, end: int, name: str, keywords: Collection[str]) -> Header:
    """Parse a whole Part 10 file held in ``buf`` (bytes, memoryview or mmap)."""
    if end == 0:
        raise NotDicomError(name, "empty file, not DICOM")
    if end < 132:
        raise NotDicomError(name, f"not DICOM (only {end} bytes, no 'DICM' at offset 128)")
    if buf[128:132] != b"DICM":
        raise NotDicomError(name, "not DICOM (no 'DICM' magic at offset 128)")
    try:
        ts, pos = _read_meta(buf, end)
        if ts == _IMPLICIT_LE:
            implicit, little = True, True
        elif ts == _EXPLICIT_LE:
            implicit, little = False, True
        elif ts == _EXPLICIT_BE:
            implicit, little = False, False
        elif (
            ts.startswith(_ENCAPSULATED_PREFIX) and ts != _DEFLATED_JPIP
        ) or ts in _ENCAPSULATED_OTHER:
            implicit, little = False, True
        else:
            raise _Unsupported(f"transfer syntax {ts!r}")

        requested, wanted = _plan(keywords)
        found = _walk_top(buf, pos, end, implicit, little, wanted)
    except _Truncated as exc:
        raise TruncatedError(
            name, f"truncated DICOM: ends inside {exc.what} at offset {exc.offset} ({end} bytes)"
        ) from None

    codec = _charset_codec(buf, found.get(_CHARSET_TAG))
    values: dict[str, str] = {}
    empty: set[str] = set()
    for kw, tag, dict_vr in requested:
        hit = found.get(tag)
        if hit is None:
            continue
        file_vr, vpos, length = hit
        vr = dict_vr if file_vr is None else file_vr.decode("latin-1")
        if tag in _LUT_DESCRIPTOR_TAGS:
            raise _Unsupported("LUT descriptor (pydicom adjusts its first value)")
        text, is_empty = _render(vr, bytes(buf[vpos : vpos + length]), little, codec)
        values[kw] = text
        if is_empty:
            empty.add(kw)
    return Header(values=values, empty=frozenset(empty), transfer_syntax=ts)


def dataset_offset(data: bytes | bytearray | memoryview) -> int:
    """Where the data set starts in a Part 10 file: after the preamble, 'DICM' and the file
    meta group. The header reader's own walk of the meta group (:func:`_read_meta`), for
    the bench's verifier and the tests, which compare data sets across writers.

    Raises ValueError when ``data`` is not a Part 10 file whose meta group this reader
    walks (no 'DICM', truncated, implicit-VR meta, no transfer syntax).
    """
    end = len(data)
    if end < 132 or data[128:132] != b"DICM":
        raise ValueError("not a Part 10 file (no 'DICM' at offset 128)")
    try:
        return _read_meta(data, end)[1]
    except (_Unsupported, _Truncated) as exc:
        raise ValueError(f"file meta group not walked: {exc}") from None


def _read_meta(buf: Buffer, end: int) -> tuple[str, int]:
    """Walk the file meta group (explicit VR LE) after 'DICM'; return (TS UID, dataset offset).

    Like pydicom, the group ends at the first element of another group (its group
    length is not trusted). Implicit-VR meta, odd VRs and a missing transfer syntax
    are left to pydicom, which guesses in those cases.
    """
    pos = 132
    meta_first = end - pos >= 6 and buf[pos] == 2 and buf[pos + 1] == 0
    if meta_first and not _is_upper_pair(buf[pos + 4], buf[pos + 5]):
        raise _Unsupported("file meta is not explicit VR")
    ts_raw: bytes | None = None
    first = True
    while pos < end:
        if end - pos < 8:
            raise _Truncated("a file meta element header", pos)
        group, elem, vr, length = _EXPL_LE(buf, pos)
        if group != 2:
            break
        if vr in _SHORT_VRS:
            vpos = pos + 8
        elif vr in _LONG_VRS:
            if end - pos < 12:
                raise _Truncated("a file meta element header", pos)
            length = _U32_LE(buf, pos + 8)[0]
            vpos = pos + 12
        else:
            raise _Unsupported(f"file meta VR {vr!r}")
        if length == _UNDEFINED:
            raise _Unsupported("undefined length in file meta")
        if first:
            fmt = _BINARY_FORMATS.get(vr.decode("latin-1"))
            if fmt is not None and length % fmt[1]:
                raise _Unsupported("first file meta element has a bad length")
            first = False
        nxt = vpos + length
        if nxt > end:
            raise _Truncated(f"file meta element ({group:04X},{elem:04X})", pos)
        if elem == 0x0010:
            if vr != b"UI":
                raise _Unsupported("TransferSyntaxUID is not UI")
            ts_raw = bytes(buf[vpos:nxt])
        pos = nxt
    if ts_raw is None:
        raise _Unsupported("no TransferSyntaxUID")
    ts = ts_raw.decode("latin-1").rstrip("\0 ").strip()
    if "\\" in ts:
        raise _Unsupported("multi-valued TransferSyntaxUID")
    return ts, pos


def _walk_top(
    buf: Buffer,
    pos: int,
    end: int,
    implicit: bool,
    little: bool,
    wanted: frozenset[int],
) -> dict[int, tuple[bytes | None, int, int]]:
    """Walk every top-level element to the end; return {tag: (VR, offset, length)} wanted.

    Mirrors pydicom's reader where it matters for the values: the last of duplicate
    tags wins, nothing after the first pixel data tag counts (stop_before_pixels),
    undefined-length sequences are parsed item by item. Past the pixel data the walk
    only looks for truncation; structure it cannot follow there ends it quietly,
    since pydicom never reads that far.
    """
    found: dict[int, tuple[bytes | None, int, int]] = {}
    if end - pos >= 2 and buf[pos] == 0 and buf[pos + 1] == 0:
        raise _Unsupported("command set (group 0000) elements")  # pydicom reads those apart
    if end - pos >= 6 and _is_upper_pair(buf[pos + 4], buf[pos + 5]) == implicit:
        # pydicom switches VR mode when the first element contradicts the syntax
        raise _Unsupported("dataset VR encoding contradicts the transfer syntax")
    if implicit:  # noqa: SIM108
        unpack = _IMPL_LE if little else _IMPL_BE
    else:
        unpack = _EXPL_LE if little else _EXPL_BE
    u32 = _U32_LE if little else _U32_BE
    long_vrs = _LONG_VRS
    short_vrs = _SHORT_VRS
    pixel_tags = _PIXEL_TAGS
    collecting = True
    vr: bytes | None = None
    try:
        while pos < end:
            if end - pos < 8:
                raise _Truncated("an element header", pos)
            if implicit:
                group, elem, length = unpack(buf, pos)
                vpos = pos + 8
            else:
                group, elem, vr, length = unpack(buf, pos)
                if vr in short_vrs:
                    vpos = pos + 8
                elif vr in long_vrs:
                    if end - pos < 12:
                        raise _Truncated("an element header", pos)
                    length = u32(buf, pos + 8)[0]
                    vpos = pos + 12
                else:
                    raise _Unsupported(f"VR {vr!r} at offset {pos}")
            tag = group << 16 | elem
            if group == 0xFFFE:
                raise _Unsupported(f"item or delimiter tag at top level, offset {pos}")
            if collecting and tag in pixel_tags:
                collecting = False
            if length == _UNDEFINED:
                if collecting and tag in wanted:
                    raise _Unsupported(f"requested element ({group:04X},{elem:04X}) is a sequence")
                pos = _skip_undefined(buf, vpos, end, implicit, little, vr, tag)
                continue
            nxt = vpos + length
            if nxt > end:
                raise _Truncated(f"the value of element ({group:04X},{elem:04X})", pos)
            if collecting and tag in wanted:
                found[tag] = (vr, vpos, length)
            pos = nxt
    except _Unsupported:
        if collecting:
            raise
    return found


def _skip_undefined(
    buf: Buffer, pos: int, end: int, implicit: bool, little: bool, vr: bytes | None, tag: int
) -> int:
    """Skip the value of an undefined-length element starting at ``pos``; return the next offset.

    A sequence (SQ, UN, or in implicit VR anything but pixel data) has its items parsed
    as pydicom parses them; encapsulated data (OB/OW, pixel data) is a run of
    defined-length fragments, which pydicom also walks item by item first.
    """
    if vr is None:
        return _skip_items(buf, pos, end, implicit, little, tag not in _PIXEL_TAGS)
    if vr == b"SQ" or vr == b"UN":
        return _skip_items(buf, pos, end, implicit, little, True)
    if vr == b"OB" or vr == b"OW":
        return _skip_items(buf, pos, end, implicit, little, False)
    raise _Unsupported(f"undefined length with VR {vr!r}")


def _skip_items(
    buf: Buffer, pos: int, end: int, implicit: bool, little: bool, datasets: bool
) -> int:
    """Walk items up to the sequence delimiter; ``datasets`` says items hold elements."""
    unpack = _IMPL_LE if little else _IMPL_BE
    while True:
        if end - pos < 8:
            raise _Truncated("a sequence item header", pos)
        group, elem, length = unpack(buf, pos)
        tag = group << 16 | elem
        pos += 8
        if tag == _SEQ_DELIM:
            return pos
        if tag != _ITEM:
            raise _Unsupported(f"({group:04X},{elem:04X}) where a sequence item was expected")
        if length == _UNDEFINED:
            if not datasets:
                raise _Unsupported("undefined-length fragment")
            pos = _walk_nested(buf, pos, end, implicit, little, False)
            continue
        nxt = pos + length
        if nxt > end:
            raise _Truncated("a sequence item", pos - 8)
        if datasets:
            # The item lies inside the file, so anything in it that overruns it is a
            # broken item, not a truncated file.
            try:
                _walk_nested(buf, pos, nxt, implicit, little, True)
            except _Truncated:
                raise _Unsupported("sequence item contents overrun the item") from None
        pos = nxt


def _walk_nested(
    buf: Buffer, pos: int, end: int, implicit: bool, little: bool, bounded: bool
) -> int:
    """Walk one item's dataset and return the offset after it.

    ``bounded``: a defined-length item that ends exactly at ``end``; otherwise an
    undefined-length item, ended by an item delimiter. As pydicom does for each item,
    the first element decides whether an explicit VR item is really implicit VR
    (PS3.5 6.2.2 allows that inside sequences).
    """
    if not implicit and end - pos >= 6 and not _is_upper_pair(buf[pos + 4], buf[pos + 5]):
        implicit = True
    tag_length = _IMPL_LE if little else _IMPL_BE
    explicit = _EXPL_LE if little else _EXPL_BE
    u32 = _U32_LE if little else _U32_BE
    vr: bytes | None = None
    while True:
        if bounded and pos == end:
            return pos
        if end - pos < 8:
            raise _Truncated("an element header in a sequence item", pos)
        if implicit:
            group, elem, length = tag_length(buf, pos)
            vpos = pos + 8
        else:
            group, elem, vr, length = explicit(buf, pos)
            if group == 0xFFFE:
                # item and delimiter tags carry no VR: a tag and a 4-byte length
                group, elem, length = tag_length(buf, pos)
                vr = None
                vpos = pos + 8
            elif vr in _SHORT_VRS:
                vpos = pos + 8
            elif vr in _LONG_VRS:
                if end - pos < 12:
                    raise _Truncated("an element header in a sequence item", pos)
                length = u32(buf, pos + 8)[0]
                vpos = pos + 12
            else:
                raise _Unsupported(f"VR {vr!r} in a sequence item at offset {pos}")
        tag = group << 16 | elem
        if group == 0xFFFE:
            if tag == _ITEM_DELIM and not bounded:
                return pos + 8
            raise _Unsupported(f"({group:04X},{elem:04X}) inside a sequence item")
        if length == _UNDEFINED:
            # (implicit VR: pydicom asks its dictionary, which for anything but pixel
            # data says SQ; _skip_items declines a value that does not start with items)
            pos = _skip_undefined(buf, vpos, end, implicit, little, None if implicit else vr, tag)
            continue
        nxt = vpos + length
        if nxt > end:
            raise _Truncated(f"the value of element ({group:04X},{elem:04X})", pos)
        pos = nxt


def _charset_codec(buf: Buffer, hit: tuple[bytes | None, int, int] | None) -> str | None:
    """The codec for text VRs, or None when only plain ASCII text can be trusted."""
    if hit is None:
        return "latin-1"
    vr, vpos, length = hit
    if vr is not None and vr != b"CS":
        raise _Unsupported("SpecificCharacterSet is not CS")
    value = bytes(buf[vpos : vpos + length]).decode("latin-1").rstrip(" \x00")
    return _CHARSET_CODECS.get(value)


def _strings(items: list[str]) -> tuple[str, bool]:
    """pydicom's text for a str value or a MultiValue of str (``[repr, repr]``)."""
    if len(items) == 1:
        return items[0], not items[0]
    return "[" + ", ".join([repr(i) for i in items]) + "]", False


def _decode_text(raw: bytes, codec: str | None) -> str:
    """pydicom's decode_bytes for one text value, or decline where it would differ."""
    if b"\x1b" in raw:
        raise _Unsupported("ISO 2022 escape sequence in text")
    if codec is None:
        if not raw.isascii():
            raise _Unsupported("non-ASCII text with an unsupported SpecificCharacterSet")
        return raw.decode("ascii")
    if codec == "utf-8":
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("utf-8", errors="replace")  # what pydicom does, with a warning
    return raw.decode("latin-1")


def _render(vr: str, raw: bytes, little: bool, codec: str | None) -> tuple[str, bool]:
    """Return (pydicom 3's ``"%s" % value``, ``is_empty``) for one element value.

    Each branch repeats pydicom's converter for that VR (pydicom/values.py) with the
    same str operations, so the result is the same by construction; where pydicom
    takes a path we do not reproduce (retry-as-another-VR on a bad number, odd byte
    counts, escape sequences, ...) the file is declined.
    """
    if not raw:
        if vr in _NONE_WHEN_EMPTY:
            return "None", True
        if vr in _TEXT_VRS:
            return "", True
        raise _Unsupported(f"empty {vr}")
    if vr in ("CS", "AS", "DA", "DT", "TM"):
        return _strings(raw.decode("latin-1").rstrip(" \x00").split("\\"))
    if vr == "UI":
        text = raw.decode("latin-1").rstrip("\0 ").rstrip(" \x00")
        return _strings([s.strip() for s in text.split("\\")])
    if vr in ("LO", "SH", "UC"):
        text = _decode_text(raw, codec)
        return _strings([s.rstrip("\0 ") for s in text.split("\\")])
    if vr == "PN":
        if codec is None:
            # pydicom re-encodes names with the character set (ISO 2022 code paths
            # that even raise on some values): not reproduced
            raise _Unsupported("PN with an unsupported SpecificCharacterSet")
        text = _decode_text(raw.rstrip(b"\x00 "), codec)
        names = []
        for name in text.split("\\"):
            groups = name.split("=")
            while groups and not groups[-1]:
                groups.pop()
            names.append("=".join(groups))
        if len(names) == 1:
            return names[0], not names[0]
        return "[" + ", ".join(names) + "]", False
    if vr in ("ST", "LT", "UT"):
        text = _decode_text(raw, codec).rstrip("\0 ")
        return text, not text
    if vr == "IS":
        items = raw.decode("latin-1").rstrip(" \x00").split("\\")
        return _numbers(items, _IS_CHARS, int)
    if vr == "DS":
        items = raw.decode("latin-1").strip().rstrip(" \x00").split("\\")
        return _numbers(items, _DS_CHARS, float)
    if vr == "AE":
        return _strings([s.strip() for s in raw.decode("latin-1").split("\\")])
    if vr == "UR":
        text = raw.decode("latin-1").rstrip()
        return text, not text
    fmt = _BINARY_FORMATS.get(vr)
    if fmt is not None:
        code, size = fmt
        count, rest = divmod(len(raw), size)
        if rest:
            raise _Unsupported(f"{vr} value of {len(raw)} bytes")
        numbers = struct.unpack(("<" if little else ">") + str(count) + code, raw)
        if count == 1:
            return str(numbers[0]), False
        return str(list(numbers)), False
    raise _Unsupported(f"VR {vr}")


_TEXT_VRS = frozenset(
    ("AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT")
)


def _numbers(items: list[str], allowed: frozenset[str], parse: type) -> tuple[str, bool]:
    """IS/DS: pydicom keeps each number's original text (``.strip()``-ed) and prints that."""
    if len(items) == 1 and not items[0]:
        return "", True
    out = []
    for item in items:
        if not item.strip(" ") or len(item) > 64 or not allowed.issuperset(item):
            raise _Unsupported("IS/DS value pydicom would retry as another VR")
        try:
            parse(item)
        except ValueError:
            raise _Unsupported("IS/DS value pydicom would retry as another VR") from None
        out.append(item.strip())
    if len(out) == 1:
        return out[0], False
    return "[" + ", ".join(out) + "]", False
