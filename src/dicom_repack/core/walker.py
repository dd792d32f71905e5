"""Walk the raw bytes of a Part 10 file: element headers, the meta group, sequences.

One element-header decoder (:func:`element_header`) serves every level: the file
meta group, the top-level dataset and the items of sequences. The walk mirrors
pydicom's reader where it matters for values (the last of duplicate tags wins,
undefined-length sequences are parsed item by item, an explicit VR item that is
really implicit VR is read as implicit, as pydicom switches per item) and declines
(:class:`Unsupported`) whatever it does not follow, so the caller can let pydicom
read the file instead. A file that ends inside an element raises :class:`Truncated`.

Used by :mod:`.header` (the requested elements) and :mod:`.dump` (the series
record's full dump). Imports only ``_struct``, the C half of :mod:`struct` (its
Python wrapper is one module more to load, ~450,000 instructions of the per-instance
door's start, for a name this module does not use).
"""

from __future__ import annotations

from _struct import Struct

TYPE_CHECKING = False  # importing typing costs time the per-instance door does not have
if TYPE_CHECKING:
    import mmap
    from typing import TypeAlias

    Buffer: TypeAlias = bytes | bytearray | memoryview | mmap.mmap
    #: (tag, explicit VR or None, value offset, value length or UNDEFINED, items)
    #: where items is the list of item datasets of an undefined-length sequence.
    Element: TypeAlias = tuple[int, bytes | None, int, int, "list[list[Element]] | None"]
    Mode: TypeAlias = tuple[bool, object, object, object]


class Unsupported(Exception):
    """The fast path declines this file; pydicom must read it (the reason is the text)."""


class Truncated(Exception):
    """The file ends inside an element (turned into TruncatedError with the file's name)."""

    def __init__(self, what: str, offset: int) -> None:
        super().__init__(what, offset)
        self.what = what
        self.offset = offset


UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIM = 0xFFFEE00D
SEQ_DELIM = 0xFFFEE0DD
#: pydicom's stop_before_pixels stops at the first of these at the top level.
PIXEL_TAGS = frozenset((0x7FE00010, 0x7FE00009, 0x7FE00008))

#: Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)
#: Explicit VRs with a 2-byte length.
SHORT_VRS = frozenset(
    (
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO",
        b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    )
)  # fmt: skip

_EXPL_LE = Struct("<HH2sH").unpack_from
_EXPL_BE = Struct(">HH2sH").unpack_from
_IMPL_LE = Struct("<HHL").unpack_from
_IMPL_BE = Struct(">HHL").unpack_from
_U32_LE = Struct("<L").unpack_from
_U32_BE = Struct(">L").unpack_from

#: (implicit, little) -> what element_header needs, so it never branches on byte order
MODES: dict[tuple[bool, bool], Mode] = {
    (True, True): (True, _IMPL_LE, _EXPL_LE, _U32_LE),
    (True, False): (True, _IMPL_BE, _EXPL_BE, _U32_BE),
    (False, True): (False, _IMPL_LE, _EXPL_LE, _U32_LE),
    (False, False): (False, _IMPL_BE, _EXPL_BE, _U32_BE),
}


def is_upper_pair(b0: int, b1: int) -> bool:
    """pydicom's test for "this looks like an explicit VR" (two capital letters)."""
    return 0x40 < b0 < 0x5B and 0x40 < b1 < 0x5B


def element_header(
    buf: Buffer, pos: int, end: int, mode: Mode, what: str
) -> tuple[int, bytes | None, int, int]:
    """Decode the element header at ``pos``: return (tag, VR or None, length, value offset).

    The one decoder for every level. Item and delimiter tags (group FFFE) carry no
    VR even in explicit VR data: a tag and a 4-byte length. ``what`` names the place
    in a :class:`Truncated` error.
    """
    implicit, impl, expl, u32 = mode
    if end - pos < 8:
        raise Truncated(what, pos)
    if implicit:
        group, elem, length = impl(buf, pos)  # type: ignore[operator]
        return group << 16 | elem, None, length, pos + 8
    group, elem, vr, length = expl(buf, pos)  # type: ignore[operator]
    if group == 0xFFFE:
        group, elem, length = impl(buf, pos)  # type: ignore[operator]
        return group << 16 | elem, None, length, pos + 8
    if vr in SHORT_VRS:
        return group << 16 | elem, vr, length, pos + 8
    if vr in LONG_VRS:
        if end - pos < 12:
            raise Truncated(what, pos)
        return group << 16 | elem, vr, u32(buf, pos + 8)[0], pos + 12  # type: ignore[operator]
    raise Unsupported(f"VR {vr!r} at offset {pos}")


def read_meta(buf: Buffer, end: int) -> tuple[str, int]:
    """Walk the file meta group (explicit VR LE) after 'DICM'; return (TS UID, dataset offset).

    Like pydicom, the group ends at the first element of another group (its group
    length is not trusted). Implicit-VR meta, odd VRs and a missing transfer syntax
    are left to pydicom, which guesses in those cases.
    """
    pos = 132
    meta_first = end - pos >= 6 and buf[pos] == 2 and buf[pos + 1] == 0
    if meta_first and not is_upper_pair(buf[pos + 4], buf[pos + 5]):
        raise Unsupported("file meta is not explicit VR")
    mode = MODES[False, True]
    ts_raw: bytes | None = None
    first = True
    while pos < end:
        if end - pos >= 2 and (buf[pos] != 2 or buf[pos + 1] != 0):
            break  # the first element of another group ends the meta group
        try:
            tag, vr, length, vpos = element_header(
                buf, pos, end, mode, "a file meta element header"
            )
        except Unsupported:
            raise Unsupported("file meta VR") from None
        if vr is None:
            raise Unsupported("file meta VR")
        if length == UNDEFINED:
            raise Unsupported("undefined length in file meta")
        if first:
            size = _BINARY_SIZES.get(vr)
            if size is not None and length % size:
                raise Unsupported("first file meta element has a bad length")
            first = False
        nxt = vpos + length
        if nxt > end:
            raise Truncated(f"file meta element ({tag >> 16:04X},{tag & 0xFFFF:04X})", pos)
        if tag & 0xFFFF == 0x0010:
            if vr != b"UI":
                raise Unsupported("TransferSyntaxUID is not UI")
            ts_raw = bytes(buf[vpos:nxt])
        pos = nxt
    if ts_raw is None:
        raise Unsupported("no TransferSyntaxUID")
    ts = ts_raw.decode("latin-1").rstrip("\0 ").strip()
    if "\\" in ts:
        raise Unsupported("multi-valued TransferSyntaxUID")
    return ts, pos


_BINARY_SIZES = {b"US": 2, b"SS": 2, b"UL": 4, b"SL": 4, b"FL": 4, b"FD": 8, b"SV": 8, b"UV": 8}

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
#: Encapsulated syntaxes whose dataset is plain explicit VR little endian.
#: 1.2.840.10008.1.2.4.95 (JPIP Referenced Deflate) has a deflated dataset: not here.
_ENCAPSULATED_PREFIX = "1.2.840.10008.1.2.4."
_ENCAPSULATED_OTHER = frozenset(("1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1.98"))
_DEFLATED_JPIP = "1.2.840.10008.1.2.4.95"


def encoding(ts: str) -> tuple[bool, bool]:
    """(implicit VR, little endian) of the dataset under transfer syntax ``ts``."""
    if ts == IMPLICIT_LE:
        return True, True
    if ts == EXPLICIT_LE:
        return False, True
    if ts == EXPLICIT_BE:
        return False, False
    if (ts.startswith(_ENCAPSULATED_PREFIX) and ts != _DEFLATED_JPIP) or ts in _ENCAPSULATED_OTHER:
        return False, True
    raise Unsupported(f"transfer syntax {ts!r}")


def walk_top(
    buf: Buffer, pos: int, end: int, implicit: bool, little: bool
) -> tuple[list[Element], int, bool]:
    """Walk every top-level element to the end of the file.

    Returns (elements in file order, index of the first pixel data element or -1,
    complete). Past the pixel data the walk only looks for truncation; structure it
    cannot follow there ends it quietly (``complete`` is then False), since pydicom
    with ``stop_before_pixels`` never reads that far. Before it, :class:`Unsupported`.
    """
    if end - pos >= 2 and buf[pos] == 0 and buf[pos + 1] == 0:
        raise Unsupported("command set (group 0000) elements")  # pydicom reads those apart
    if end - pos >= 6 and is_upper_pair(buf[pos + 4], buf[pos + 5]) == implicit:
        # pydicom switches VR mode when the first element contradicts the syntax
        raise Unsupported("dataset VR encoding contradicts the transfer syntax")
    mode = MODES[implicit, little]
    pixel_tags = PIXEL_TAGS
    elements: list[Element] = []
    append = elements.append
    pixel_at = -1
    try:
        while pos < end:
            tag, vr, length, vpos = element_header(buf, pos, end, mode, "an element header")
            if tag >> 16 == 0xFFFE:
                raise Unsupported(f"item or delimiter tag at top level, offset {pos}")
            if pixel_at < 0 and tag in pixel_tags:
                pixel_at = len(elements)
            if length == UNDEFINED:
                pos, items = skip_undefined(buf, vpos, end, implicit, little, vr, tag)
                append((tag, vr, vpos, UNDEFINED, items))
                continue
            nxt = vpos + length
            if nxt > end:
                raise Truncated(f"the value of element ({tag >> 16:04X},{tag & 0xFFFF:04X})", pos)
            append((tag, vr, vpos, length, None))
            pos = nxt
    except Unsupported:
        if pixel_at < 0:
            raise
        return elements, pixel_at, False
    return elements, pixel_at, True


def skip_undefined(
    buf: Buffer, pos: int, end: int, implicit: bool, little: bool, vr: bytes | None, tag: int
) -> tuple[int, list[list[Element]] | None]:
    """Walk the value of an undefined-length element from ``pos``; return (next offset, items).

    A sequence (SQ, UN, or in implicit VR anything but pixel data) has its items parsed
    as pydicom parses them (and returned); encapsulated data (OB/OW, pixel data) is a
    run of defined-length fragments, which pydicom also walks item by item first.
    """
    if vr is None:
        return walk_items(buf, pos, end, implicit, little, tag not in PIXEL_TAGS)
    if vr == b"SQ" or vr == b"UN":
        return walk_items(buf, pos, end, implicit, little, True)
    if vr == b"OB" or vr == b"OW":
        return walk_items(buf, pos, end, implicit, little, False)
    raise Unsupported(f"undefined length with VR {vr!r}")


def walk_items(
    buf: Buffer,
    pos: int,
    end: int,
    implicit: bool,
    little: bool,
    datasets: bool,
    *,
    bounded: bool = False,
) -> tuple[int, list[list[Element]] | None]:
    """Walk items up to the sequence delimiter (or to ``end`` when ``bounded``, a
    defined-length sequence); ``datasets`` says items hold elements (else fragments).
    Returns (next offset, the items' elements, or None for fragments)."""
    mode = MODES[True, little]  # item tags are a tag and a 4-byte length in every mode
    items: list[list[Element]] | None = [] if datasets else None
    while True:
        if bounded and pos == end:
            return pos, items
        tag, _, length, pos = element_header(buf, pos, end, mode, "a sequence item header")
        if tag == SEQ_DELIM:
            if bounded:
                raise Unsupported("sequence delimiter in a defined-length sequence")
            return pos, items
        if tag != ITEM:
            raise Unsupported(
                f"({tag >> 16:04X},{tag & 0xFFFF:04X}) where a sequence item was expected"
            )
        if length == UNDEFINED:
            if items is None:
                raise Unsupported("undefined-length fragment")
            pos, item = walk_item(buf, pos, end, implicit, little, False)
            items.append(item)
            continue
        nxt = pos + length
        if nxt > end:
            raise Truncated("a sequence item", pos - 8)
        if items is not None:
            # The item lies inside the file, so anything in it that overruns it is a
            # broken item, not a truncated file.
            try:
                items.append(walk_item(buf, pos, nxt, implicit, little, True)[1])
            except Truncated:
                raise Unsupported("sequence item contents overrun the item") from None
        pos = nxt


def walk_item(
    buf: Buffer, pos: int, end: int, implicit: bool, little: bool, bounded: bool
) -> tuple[int, list[Element]]:
    """Walk one item's dataset; return (offset after it, its elements in file order).

    ``bounded``: a defined-length item that ends exactly at ``end``; otherwise an
    undefined-length item, ended by an item delimiter. As pydicom does for each item,
    the first element decides whether an explicit VR item is really implicit VR
    (PS3.5 6.2.2 allows that inside sequences): its elements then carry no VR.
    """
    if not implicit and end - pos >= 6 and not is_upper_pair(buf[pos + 4], buf[pos + 5]):
        implicit = True
    mode = MODES[implicit, little]
    elements: list[Element] = []
    while True:
        if bounded and pos == end:
            return pos, elements
        tag, vr, length, vpos = element_header(
            buf, pos, end, mode, "an element header in a sequence item"
        )
        if tag >> 16 == 0xFFFE:
            if tag == ITEM_DELIM and not bounded:
                return vpos, elements
            raise Unsupported(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) inside a sequence item")
        if length == UNDEFINED:
            # (implicit VR: pydicom asks its dictionary, which for anything but pixel
            # data says SQ; walk_items declines a value that does not start with items)
            pos, items = skip_undefined(buf, vpos, end, implicit, little, vr, tag)
            elements.append((tag, vr, vpos, UNDEFINED, items))
            continue
        nxt = vpos + length
        if nxt > end:
            raise Truncated(f"the value of element ({tag >> 16:04X},{tag & 0xFFFF:04X})", pos)
        elements.append((tag, vr, vpos, length, None))
        pos = nxt
