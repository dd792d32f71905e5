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

from .errors import NotDicomError, NotRegularFileError, TruncatedError
from .render import CHARSET_CODECS, charset_codec, decode, render_value, text
from .walker import UNDEFINED, Truncated, Unsupported, encoding, read_meta, walk_top

TYPE_CHECKING = False  # importing typing/collections.abc costs time the door does not have
if TYPE_CHECKING:
    import mmap
    from collections.abc import Callable, Collection, Mapping
    from typing import TypeAlias, TypeVar

    from .walker import Element

    T = TypeVar("T")

    Source: TypeAlias = str | os.PathLike[str] | bytes | bytearray | memoryview
    Buffer: TypeAlias = bytes | bytearray | memoryview | mmap.mmap

__all__ = [
    "Header",
    "dataset_offset",
    "open_regular",
    "read_all",
    "read_header",
    "read_header_pydicom",
    "read_small_file",
    "render_value",
    "show_pydicom_warnings",
    "with_buffer",
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


def _name(source: Source) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<buffer>"
    return os.fspath(source)


def show_pydicom_warnings(show: bool) -> None:
    """Let pydicom's warnings through (a door's ``-v``) or not (the default): see
    core/_pydicom.py's ``show_warnings``; installed once, when pydicom is first needed."""
    from ._pydicom import show_warnings

    show_warnings(show)


def read_header_pydicom(
    source: Source, keywords: Collection[str], *, name: str | None = None
) -> Header:
    """The reference path: pydicom reads the file; used for anything the fast path declines
    (core/header_pydicom.py, loaded with pydicom, never by a file the fast path reads)."""
    from .header_pydicom import read_values

    values, empty, ts = read_values(source, keywords, name or _name(source))
    return Header(values=values, empty=empty, transfer_syntax=ts)


# --------------------------------------------------------------------------------------
# The fast path
# --------------------------------------------------------------------------------------

_Unsupported = Unsupported  # the names the tests and older callers use
_Truncated = Truncated

_CHARSET_TAG = 0x00080005
_LUT_DESCRIPTOR_TAGS = frozenset((0x00281101, 0x00281102, 0x00281103, 0x00283002))
_CHARSET_CODECS = CHARSET_CODECS

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


#: Files up to this size are read whole; larger ones (multi-frame, GBs) are mapped,
#: so that only their element headers are ever touched.
_READ_WHOLE_MAX = 1 << 20


def with_buffer(source: Source, parse: Callable[[Buffer, int], T]) -> T:
    """Call ``parse(buffer, length)`` on the whole of ``source``.

    A path is read whole with one ``read()`` up to 1 MiB (cheaper than importing
    :mod:`mmap` for a typical instance) and memory-mapped above, so only the
    element headers of a multi-GB file are ever touched. A path that is not a
    regular file raises NotRegularFileError (see :func:`open_regular`); OSError
    propagates.
    """
    if isinstance(source, (bytes, bytearray)):
        return parse(source, len(source))
    if isinstance(source, memoryview):
        view = source if (source.format == "B" and source.ndim == 1) else source.cast("B")
        return parse(view, len(view))
    data = read_small_file(source)
    if data is not None:
        return parse(data, len(data))
    fd, st = open_regular(source)
    try:
        import mmap

        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        try:
            return parse(mm, st.st_size)
        finally:
            mm.close()
    finally:
        os.close(fd)


def read_header_fast(
    source: Source, keywords: Collection[str], *, name: str | None = None
) -> Header:
    """The pure-Python reader; raises :class:`Unsupported` when it declines the file.

    NotDicomError / TruncatedError are raised here as by :func:`read_header`.
    """
    label = name or _name(source)
    return with_buffer(source, lambda buf, end: _read_buffer(buf, end, label, keywords))


#: What each kind of non-regular file is called in an error (S_IFMT bits -> words).
_NOT_REGULAR = {
    0o010000: "a FIFO",
    0o020000: "a character device",
    0o040000: "a folder",
    0o060000: "a block device",
    0o140000: "a socket",
}


def open_regular(
    path: str | os.PathLike[str], *, follow_symlinks: bool = True
) -> tuple[int, os.stat_result]:
    """Open ``path`` for reading only if it is a regular file: ``(fd, its fstat)``.

    The one rule for reading a source, used wherever a source path is opened:
    a FIFO, socket, device or folder is never read. The open itself cannot
    block (``O_NONBLOCK``: a FIFO without a writer would otherwise hang the door
    forever), and the kind is checked on the open file (``fstat``), so nothing
    can swap it in between. Raises NotRegularFileError (a skipped input, like
    NotDicomError), or OSError when the path cannot be opened. The caller closes
    ``fd``; reads from a regular file ignore ``O_NONBLOCK``. With
    ``follow_symlinks=False`` a symbolic link raises OSError (ELOOP) instead.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
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


def read_all(fd: int, size: int) -> bytes:
    """Everything in ``fd`` (``size`` as fstat said; a file that grew is read to its end)."""
    data = os.read(fd, size + 1)
    while len(data) < size + 1:
        more = os.read(fd, size + 1 - len(data))
        if not more:
            break
        data += more
    return data


def read_header_fd(fd: int, size: int, keywords: Collection[str], *, name: str) -> Header:
    """:func:`read_header` on the open file ``fd`` (``size`` bytes): read whole up to
    1 MiB, mapped above. For callers that opened the file themselves, without
    following a link (:func:`.tree.open_file`): the retire of an earlier copy,
    ``index --rebuild``."""
    if size <= 1 << 20:
        return read_header(read_all(fd, size), keywords, name=name)
    import mmap

    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            return read_header(view, keywords, name=name)
        finally:
            view.release()


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
        return read_all(fd, st.st_size)
    finally:
        os.close(fd)


def dataset_offset(data: bytes | bytearray | memoryview) -> int:
    """Where the data set starts in a Part 10 file: after the preamble, 'DICM' and the file
    meta group. The header reader's own walk of the meta group (:func:`.walker.read_meta`),
    for the bench's verifier and the tests, which compare data sets across writers.

    Raises ValueError when ``data`` is not a Part 10 file whose meta group this reader
    walks (no 'DICM', truncated, implicit-VR meta, no transfer syntax).
    """
    end = len(data)
    if end < 132 or data[128:132] != b"DICM":
        raise ValueError("not a Part 10 file (no 'DICM' at offset 128)")
    try:
        return read_meta(data, end)[1]
    except (Unsupported, Truncated) as exc:
        raise ValueError(f"file meta group not walked: {exc}") from None


def open_dataset(buf: Buffer, end: int, name: str) -> tuple[str, bool, list[Element], int, bool]:
    """Check the preamble, read the meta group and walk the dataset.

    Returns (transfer syntax, little endian, top-level elements, index of the first
    pixel data element or -1, walk complete). NotDicomError / TruncatedError name
    ``name``; :class:`Unsupported` declines.
    """
    if end == 0:
        raise NotDicomError(name, "empty file, not DICOM")
    if end < 132:
        raise NotDicomError(name, f"not DICOM (only {end} bytes, no 'DICM' at offset 128)")
    if buf[128:132] != b"DICM":
        raise NotDicomError(name, "not DICOM (no 'DICM' magic at offset 128)")
    if end >= 134 and bytes(buf[132:134]) not in (b"\x02\x00", b"\x00\x02"):
        # a Part 10 file's meta group follows the marker; pydicom would read on and
        # take whatever follows for a dataset (rx-repack: "Could not parse meta group")
        raise NotDicomError(name, "not DICOM (damaged after the 'DICM' marker: no file meta group)")
    try:
        ts, pos = read_meta(buf, end)
        implicit, little = encoding(ts)
        elements, pixel_at, complete = walk_top(buf, pos, end, implicit, little)
    except Truncated as exc:
        raise TruncatedError(
            name, f"truncated DICOM: ends inside {exc.what} at offset {exc.offset} ({end} bytes)"
        ) from None
    return ts, little, elements, pixel_at, complete


def _read_buffer(buf: Buffer, end: int, name: str, keywords: Collection[str]) -> Header:
    """Parse a whole Part 10 file held in ``buf`` (bytes, memoryview or mmap)."""
    ts, little, elements, pixel_at, _ = open_dataset(buf, end, name)
    requested, wanted = _plan(keywords)
    found: dict[int, tuple[bytes | None, int, int]] = {}
    # like pydicom's stop_before_pixels: what follows the pixel data does not count
    for tag, elem_vr, vpos, length, _items in elements if pixel_at < 0 else elements[:pixel_at]:
        if tag in wanted:
            if length == UNDEFINED:
                raise Unsupported(
                    f"requested element ({tag >> 16:04X},{tag & 0xFFFF:04X}) is a sequence"
                )
            found[tag] = (elem_vr, vpos, length)

    hit = found.get(_CHARSET_TAG)
    codec = charset_codec(
        None if hit is None else bytes(buf[hit[1] : hit[1] + hit[2]]),
        None if hit is None else hit[0],
    )
    values: dict[str, str] = {}
    empty: set[str] = set()
    for kw, tag, dict_vr in requested:
        found_at = found.get(tag)
        if found_at is None:
            continue
        file_vr, vpos, length = found_at
        vr = dict_vr if file_vr is None else file_vr.decode("latin-1")
        if tag in _LUT_DESCRIPTOR_TAGS:
            raise Unsupported("LUT descriptor (pydicom adjusts its first value)")
        if vr in _DECLINED_VRS:
            raise Unsupported(f"requested element ({tag >> 16:04X},{tag & 0xFFFF:04X}) is {vr}")
        kind, value = decode(vr, bytes(buf[vpos : vpos + length]), little, codec)
        values[kw], is_empty = text(kind, value)
        if is_empty:
            empty.add(kw)
    return Header(values=values, empty=frozenset(empty), transfer_syntax=ts)


#: requested elements whose values the header path leaves to pydicom (as it always has):
#: binary blobs, tags, sequences, and ambiguous dictionary VRs.
_DECLINED_VRS = frozenset(("OB", "OD", "OF", "OL", "OV", "OW", "UN", "AT", "SQ"))
