"""The full-header dump that the series record carries (once per series).

px-repack stores every keyword element of the dataset except PixelData, as
``"%s" % dataset.Keyword`` (pydicom 2.4's text), in
``studyData/<study>-series/<series>-meta.json``.

:func:`header_dump` makes it with the project's own reader (:mod:`.walker`,
:mod:`.render` and the tables generated from pydicom's dictionaries in
:mod:`.dictionary`), so the first instance of a series costs about what a later
one does; whatever that reader declines (:class:`~.walker.Unsupported`: repeater
groups, ambiguous VRs, character sets other than the four reproduced, ...) is
dumped by pydicom, the reference. tests/test_dump.py holds the two equal on both
corpora, pydicom's test files and fuzzed input.

:func:`header_dump` never raises for a bad instance: an element that cannot be
decoded is recorded as px-repack records it, ``no attribute``; where px-repack
itself would crash (a malformed element inside a sequence, a value of the wrong
length, an unknown VR: its ``"%s" % value`` raises) as ``no attribute (cannot
decode: <reason>)``, and every other element as usual; a file whose structure pydicom cannot read at all gives what could be read
before the damage. The instance is filed and recorded either way (issue 9, defect 8).
"""

from __future__ import annotations

import io
import os

from .render import INDENT, NAME_WIDTH, charset_codec, decode, render_value, repval, tag_text, text
from .walker import UNDEFINED, Truncated, Unsupported, encoding, walk_items

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .walker import Buffer, Element

__all__ = ["UNDECODABLE", "fast_dump", "header_dump"]

#: px-repack writes this for an element it cannot read; we add the reason after it.
UNDECODABLE = "no attribute"


def header_dump(source: str | os.PathLike[str] | bytes | memoryview) -> dict[str, str]:
    """Every keyword element but PixelData, rendered as px-repack renders it.

    ``source`` is a path or the whole Part 10 file's bytes. Never raises for a bad
    file (OSError reading a path propagates).
    """
    from .header import with_buffer

    try:
        return with_buffer(source, fast_dump)
    except OSError:
        raise
    except Exception:  # declined (Unsupported), damaged, or anything unforeseen: pydicom
        pass
    return _pydicom_dump(source)


def fast_dump(buf: Buffer, end: int) -> dict[str, str]:
    """The dump by the project's own reader; raises :class:`Unsupported` where it declines.

    ``buf`` holds the whole Part 10 file (``end`` bytes). NotDicomError and
    TruncatedError are raised as by :func:`~.header.read_header`.
    """
    from .dictionary import ENTRIES
    from .header import open_dataset

    ts, little, elements, _pixel_at, complete = open_dataset(buf, end, "<dump>")
    if not complete:
        raise Unsupported("structure past the pixel data")
    implicit = encoding(ts)[0]
    last: dict[int, Element] = {}
    for element in elements:
        last[element[0]] = element  # the last of duplicate tags wins, as in pydicom
    charset = last.get(_CHARSET_TAG)
    codec = charset_codec(
        None if charset is None else bytes(buf[charset[2] : charset[2] + charset[3]]),
        None if charset is None else charset[1],
    )
    named: list[tuple[str, int, str, str]] = []
    for tag in last:
        entry = ENTRIES.get(tag)
        if entry is None:
            if not tag & 0x10000 and _repeater(tag):
                raise Unsupported(f"repeater group tag {tag_text(tag)}")
            continue  # private or unknown: no keyword, not in ds.dir()
        dict_vr, keyword, name = entry.split("\t")
        if keyword and keyword != "PixelData":
            named.append((keyword, tag, dict_vr, name))
    named.sort()
    walk = _Items(buf, implicit, little, codec)
    out: dict[str, str] = {}
    pixel_rep = _pixel_representation(buf, last, little)
    for keyword, tag, dict_vr, _name in named:
        _t, file_vr, vpos, length, items = last[tag]
        if file_vr is None and dict_vr == "US or SS" and pixel_rep is not None:
            dict_vr = "SS" if pixel_rep else "US"  # pydicom's correct_ambiguous_vr
        vr = _standard_vr(tag, file_vr, dict_vr)
        if vr == "SQ":
            out[keyword] = "[" + "".join(walk.item_texts(vpos, length, items, 0)) + "]"
            continue
        out[keyword] = text(*walk.value(tag, vr, vpos, length))[0]
    return out


_CHARSET_TAG = 0x00080005
_LUT_DESCRIPTOR_TAGS = frozenset((0x00281101, 0x00281102, 0x00281103, 0x00283002))


def _pixel_representation(buf: Buffer, last: dict[int, Element], little: bool) -> int | None:
    """The top-level PixelRepresentation (0 or 1) that settles a "US or SS" VR, or None."""
    found = last.get(0x00280103)
    if found is None or found[3] != 2 or found[1] not in (None, b"US"):
        return None
    value = (
        buf[found[2]] | buf[found[2] + 1] << 8 if little else buf[found[2]] << 8 | buf[found[2] + 1]
    )
    return value if value in (0, 1) else None


def _repeater(tag: int) -> bool:
    """pydicom's ``mask_match``: the tag belongs to a repeating group (50xx, 60xx, ...)."""
    from .dictionary import REPEATERS

    return any((tag ^ mask1) & mask2 == 0 for mask1, mask2 in REPEATERS)


def _standard_vr(tag: int, file_vr: bytes | None, dict_vr: str | None) -> str:
    """The VR pydicom gives a non-private element (its ``raw_element_vr`` hook)."""
    if file_vr is None:  # implicit VR: the dictionary's
        if dict_vr is None:
            return "UL" if tag & 0xFFFF == 0 else "UN"
        if " or " in dict_vr:
            raise Unsupported(f"ambiguous VR {dict_vr} for {tag_text(tag)}")
        return dict_vr
    vr = file_vr.decode("latin-1")
    if vr == "UN" and dict_vr is not None:
        raise Unsupported(f"UN for the known element {tag_text(tag)}")  # pydicom replaces it
    return vr


class _Items:
    """Renders sequence items as pydicom 2.4 prints them (``Dataset._pretty_str``)."""

    def __init__(self, buf: Buffer, implicit: bool, little: bool, codec: str | None) -> None:
        from .dictionary import ENTRIES, UID_NAMES

        self.buf = buf
        self.implicit = implicit
        self.little = little
        self.codec = codec
        self.entries = ENTRIES
        self.uid_names = UID_NAMES

    def value(self, tag: int, vr: str, vpos: int, length: int) -> tuple[str, object]:
        """(kind, value) of a defined-length, non-sequence element."""
        if length == UNDEFINED:
            raise Unsupported(f"undefined length {vr} {tag_text(tag)}")
        if tag in _LUT_DESCRIPTOR_TAGS:
            raise Unsupported("LUT descriptor (pydicom adjusts its first value)")
        return decode(vr, bytes(self.buf[vpos : vpos + length]), self.little, self.codec)

    def item_texts(
        self, vpos: int, length: int, items: list[list[Element]] | None, indent: int
    ) -> list[str]:
        """Each item's text; a defined-length sequence is parsed here, on demand."""
        if length != UNDEFINED:
            try:
                items = walk_items(
                    self.buf, vpos, vpos + length, self.implicit, self.little, True, bounded=True
                )[1]
            except Truncated:
                raise Unsupported("sequence items overrun their sequence") from None
        if items is None:
            raise Unsupported("a sequence without items")
        return [self.item_text(item, indent) for item in items]

    def item_text(self, elements: list[Element], indent: int) -> str:
        last: dict[int, Element] = {}
        for element in elements:
            last[element[0]] = element
        if _CHARSET_TAG in last:
            raise Unsupported("SpecificCharacterSet inside a sequence item")
        creators: dict[int, str] = {}
        for tag in last:
            if tag & 0x10000 and tag & 0xFFFF < 0x100:
                if tag & 0xFFFF < 0x10:
                    raise Unsupported(f"private element {tag_text(tag)} below the creators")
                creators[tag] = self._creator(last[tag])
        pad = INDENT * indent
        nextpad = INDENT * (indent + 1)
        lines: list[str] = []
        for tag in sorted(last):
            _t, file_vr, vpos, length, items = last[tag]
            if tag & 0x10000:
                vr, name = self._private(tag, file_vr, creators)
            else:
                entry = self.entries.get(tag)
                if entry is None:
                    if _repeater(tag):
                        raise Unsupported(f"repeater group tag {tag_text(tag)}")
                    dict_vr = None
                    name = "Group Length" if tag & 0xFFFF == 0 else ""
                else:
                    dict_vr, _kw, name = entry.split("\t")
                vr = _standard_vr(tag, file_vr, dict_vr)
            if vr == "SQ":
                texts = self.item_texts(vpos, length, items, indent + 1)
                lines.append(f"{pad}{tag_text(tag)}  {name}  {len(texts)} item(s) ---- ")
                for item in texts:
                    lines.append(item)
                    lines.append(nextpad + "---------")
                continue
            kind, value = self.value(tag, vr, vpos, length)
            shown = repval(vr, kind, value, self.uid_names) or ""
            lines.append(f"{pad}{tag_text(tag)} {name[:NAME_WIDTH]:<{NAME_WIDTH}} {vr}: {shown}")
        return "\n".join(lines)

    def _creator(self, element: Element) -> str:
        """A private creator's value (pydicom's ``private_creator`` of its block)."""
        tag, file_vr, vpos, length, _items = element
        if file_vr is not None and file_vr != b"LO":
            raise Unsupported(f"private creator {tag_text(tag)} is not LO")
        kind, value = self.value(tag, "LO", vpos, length)
        if kind == "empty":
            return ""
        if len(value) != 1:  # type: ignore[arg-type]
            raise Unsupported(f"multi-valued private creator {tag_text(tag)}")
        return value[0]  # type: ignore[index, no-any-return]

    def _private(
        self, tag: int, file_vr: bytes | None, creators: dict[int, str]
    ) -> tuple[str, str]:
        """(VR, name) of a private element as pydicom 3 gives them."""
        element = tag & 0xFFFF
        block = element >> 8
        creator = creators.get((tag & 0xFFFF0000) | block) if block else None
        entry = _private_entry(tag, creator) if creator else None
        if file_vr is None:  # implicit VR: pydicom's _private_vr_for_tag
            if 0x10 <= element < 0x100:
                vr = "LO"
            elif entry is not None:
                vr = entry[0]
                if " or " in vr:
                    raise Unsupported(f"ambiguous private VR {vr} for {tag_text(tag)}")
            else:
                vr = "UN"
        else:
            vr = file_vr.decode("latin-1")
            if vr == "UN" and (0x10 <= element < 0x100 or entry is not None):
                raise Unsupported(f"UN for the known private element {tag_text(tag)}")
        if entry is not None:
            return vr, f"[{entry[1]}]"
        if creator is None and block == 0:
            return vr, "Private Creator"
        return vr, "Private tag data"


def _private_entry(tag: int, creator: str) -> list[str] | None:
    """pydicom's ``get_private_entry``: (VR, name) for ``tag`` under ``creator``, or None."""
    from .private_dictionary import PRIVATE

    entries = PRIVATE.get(creator)
    if entries is None:
        return None
    group = f"{tag >> 16:04X}"
    elem = f"{tag & 0xFFFF:04X}"
    for key in (group + elem, f"{group}xx{elem[-2:]}", f"{group[:2]}xxxx{elem[-2:]}"):
        found = entries.get(key)
        if found is not None:
            return found.split("\t")
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def undecodable(exc: BaseException) -> str:
    """The recorded text of an element that cannot be decoded."""
    return f"{UNDECODABLE} (cannot decode: {_one_line(f'{type(exc).__name__}: {exc}')})"


def _pydicom_dump(source: str | os.PathLike[str] | bytes | memoryview) -> dict[str, str]:
    """The reference dump, with pydicom (the fallback for what the own reader declines)."""
    import warnings

    from ._pydicom import pydicom

    data = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = None
        for options in ({"defer_size": "512 KB"}, {"stop_before_pixels": True}):
            fp = io.BytesIO(data) if data is not None else source
            try:
                ds = pydicom().dcmread(fp, **options)
                break
            except (FileNotFoundError, PermissionError):
                raise  # the file itself is gone or unreadable: not a damaged header
            except Exception:  # a structure pydicom cannot follow: try less of the file
                pass
        if ds is None:
            return {}
        out: dict[str, str] = {}
        for keyword in ds.dir():
            if keyword == "PixelData":
                continue
            try:
                value: object = getattr(ds, keyword)
            except Exception:  # px-repack records unreadable elements this way
                out[keyword] = UNDECODABLE
                continue
            try:
                out[keyword] = render_value(value)  # a sequence decodes its items here
            except Exception as exc:
                out[keyword] = undecodable(exc)
    return out
