"""px-repack's text for element values: ``"%s" % value`` as pydicom 2.4 prints it.

px-repack 3.12.6 runs on pydicom 2.4; the records downstream tools read carry its
text. We read with pydicom 3, whose ``str()`` of a value is the same as 2.4's
except for tags: 2.4 prints a tag as ``(0008, 010b)`` (a space, lower-case hex),
3 as ``(0008,010B)``. Tags appear in a sequence's text (every nested element
starts with its tag) and in AT values. :func:`render_value` renders those parts
itself, in 2.4's form, from pydicom's objects; everything else is pydicom's own
``str()``/``repr()``, so no text value is ever rewritten by pattern.

The second half renders raw element values (bytes from :mod:`.walker`) without
pydicom: :func:`decode` repeats pydicom's converter for each VR with the same str
operations, :func:`text` gives ``"%s" % value`` and :func:`repval` the text a
sequence item shows (``DataElement.repval``). Where pydicom takes a path not
reproduced here (retry-as-another-VR on a bad number, odd byte counts, escape
sequences, ...) they raise :class:`~.walker.Unsupported` and the caller lets
pydicom read the file.

This module imports nothing heavy: pydicom's classes are only touched for values
pydicom made.
"""

from __future__ import annotations

from _struct import unpack  # struct's C half: its wrapper is one module more at start

from .walker import Unsupported

__all__ = [
    "INDENT",
    "NAME_WIDTH",
    "charset_codec",
    "decode",
    "render_value",
    "repval",
    "tag_text",
    "text",
]

#: pydicom's Dataset.indent_chars and DataElement.descripWidth (the same in 2.4 and 3).
INDENT = "   "
NAME_WIDTH = 35
#: DataElement.maxBytesToDisplay: longer byte/text values and VMs print as a count.
MAX_DISPLAY = 16


def tag_text(tag: int) -> str:
    """pydicom 2.4's ``str(Tag)``: ``(gggg, eeee)`` in lower-case hex."""
    return "(%04x, %04x)" % (tag >> 16, tag & 0xFFFF)  # noqa: UP031 - the hot path's cheapest form


def render_value(value: object) -> str:
    """px-repack's text for a value pydicom decoded (``"%s" % value`` under pydicom 2.4).

    A plain ``str`` (and pydicom's str subclasses) is returned as it is; sequences,
    datasets and tags are printed the 2.4 way. Example::

        render_value(ds.ReferencedImageSequence)
        # "[(0008, 1150) Referenced SOP Class UID            UI: MR Image Storage\\n..."
    """
    if isinstance(value, str):
        return "%s" % (value,)  # noqa: UP031 - px-repack's exact formatting
    kind = _kind(value)
    if kind == "sequence":
        return "[" + "".join([_dataset_text(item, 0) for item in value]) + "]"  # type: ignore[attr-defined]
    if kind == "dataset":
        return _dataset_text(value, 0)
    if kind == "tag":
        return tag_text(value)  # type: ignore[arg-type]
    if kind == "tags":
        return _tags_text(value)
    return "%s" % (value,)  # noqa: UP031 - px-repack's exact formatting


def _kind(value: object) -> str:
    """Which of pydicom's types ``value`` is, without importing pydicom for plain values."""
    module = type(value).__module__
    if not module.startswith("pydicom"):
        return ""
    from pydicom.dataset import Dataset
    from pydicom.multival import MultiValue
    from pydicom.sequence import Sequence
    from pydicom.tag import BaseTag

    if isinstance(value, Sequence):
        return "sequence"
    if isinstance(value, Dataset):
        return "dataset"
    if isinstance(value, BaseTag):
        return "tag"
    if isinstance(value, MultiValue) and value and all(isinstance(v, BaseTag) for v in value):
        return "tags"
    return ""


def _tags_text(values: object) -> str:
    """MultiValue.__str__ of tags under 2.4: ``[(0008, 1150), (0008, 1155)]``."""
    return "[" + ", ".join([tag_text(v) for v in values]) + "]"  # type: ignore[attr-defined]


def _dataset_text(ds: object, indent: int) -> str:
    """pydicom 2.4's ``Dataset._pretty_str(indent)`` for a sequence item."""
    lines: list[str] = []
    pad = INDENT * indent
    nextpad = INDENT * (indent + 1)
    for elem in ds:  # type: ignore[attr-defined]
        tag = tag_text(elem.tag)
        if elem.VR == "SQ":
            lines.append(f"{pad}{tag}  {elem.name}  {len(elem.value)} item(s) ---- ")
            for item in elem.value:
                lines.append(_dataset_text(item, indent + 1))
                lines.append(nextpad + "---------")
        else:
            value = _repval(elem) or ""
            name = f"{elem.name[:NAME_WIDTH]:<{NAME_WIDTH}}"
            lines.append(f"{pad}{tag} {name} {elem.VR}: {value}")
    return "\n".join(lines)


def _repval(elem: object) -> str:
    """``DataElement.repval`` as 2.4 gives it: AT values printed as 2.4 prints tags,
    and a single DS as 2.4's ``DSfloat.__repr__`` (the float's repr, ``'1.0'``, where
    pydicom 3 repeats the original text, ``'1.000000e+00'``)."""
    text: str = elem.repval  # type: ignore[attr-defined]
    vr = elem.VR  # type: ignore[attr-defined]
    if vr == "DS":
        value = elem.value  # type: ignore[attr-defined]
        if isinstance(value, float):  # DSfloat (a MultiValue prints each item's str)
            return "'" + float.__repr__(value) + "'"
        return text
    if vr != "AT" or text.startswith("Array of "):
        return text
    value = elem.value  # type: ignore[attr-defined]
    kind = _kind(value)
    if kind == "tag":
        return tag_text(value)
    if kind == "tags":
        return _tags_text(value)
    return text


# --------------------------------------------------------------------------------------
# Raw values, without pydicom
# --------------------------------------------------------------------------------------

#: Python codec pydicom uses for text VRs, for the Specific Character Sets we reproduce
#: byte-for-byte. Any other (or a multi-valued) set: only ASCII text takes the fast path,
#: which every codec pydicom maps to decodes identically (checked in the tests).
CHARSET_CODECS = {
    "": "latin-1",  # pydicom's default 'iso8859' is Python's latin-1
    "ISO_IR 6": "latin-1",
    "ISO_IR 100": "latin-1",
    "ISO_IR 192": "utf-8",
}

#: VRs whose empty value pydicom represents as None (printed 'None').
_NONE_WHEN_EMPTY = frozenset(("IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"))
_TEXT_VRS = frozenset(
    ("AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT")
)
#: VRs whose value pydicom keeps as bytes.
BYTES_VRS = frozenset(("OB", "OD", "OF", "OL", "OV", "OW", "UN"))
#: pydicom's LONG_VALUE_VR (less the ambiguous VRs, which are declined): a longer value
#: shows as "Array of N elements" in a sequence item.
_LONG_VALUE_VRS = frozenset(("LT", "UC", "UT")) | BYTES_VRS
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


def charset_codec(raw: bytes | None, vr: bytes | None) -> str | None:
    """The codec for text VRs given SpecificCharacterSet's raw value (None: absent),
    or None when only plain ASCII text can be trusted."""
    if raw is None:
        return "latin-1"
    if vr is not None and vr != b"CS":
        raise Unsupported("SpecificCharacterSet is not CS")
    return CHARSET_CODECS.get(raw.decode("latin-1").rstrip(" \x00"))


def _decode_text(raw: bytes, codec: str | None) -> str:
    """pydicom's decode_bytes for one text value, or decline where it would differ."""
    if b"\x1b" in raw:
        raise Unsupported("ISO 2022 escape sequence in text")
    if codec is None:
        if not raw.isascii():
            raise Unsupported("non-ASCII text with an unsupported SpecificCharacterSet")
        return raw.decode("ascii")
    if codec == "utf-8":
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("utf-8", errors="replace")  # what pydicom does, with a warning
    return raw.decode("latin-1")


def decode(vr: str, raw: bytes, little: bool, codec: str | None) -> tuple[str, object]:
    """pydicom's value for one element, as (kind, value).

    Kinds: ``s`` (list of str: one per value), ``pn`` (list of names), ``t`` (one
    text), ``is``/``ds`` (list of the numbers' original texts), ``n`` (tuple of
    numbers), ``at`` (tuple of tags), ``b`` (bytes), ``none`` (an empty number, None),
    ``empty`` (an empty text, '').
    """
    if not raw:
        if vr in _NONE_WHEN_EMPTY or vr in BYTES_VRS or vr == "AT":
            return "none", None
        if vr in _TEXT_VRS:
            return "empty", ""
        raise Unsupported(f"empty {vr}")
    if vr in ("CS", "AS", "DA", "DT", "TM"):
        return "s", raw.decode("latin-1").rstrip(" \x00").split("\\")
    if vr == "UI":
        value = raw.decode("latin-1").rstrip("\0 ").rstrip(" \x00")
        return "ui", [v.strip() for v in value.split("\\")]
    if vr in ("LO", "SH", "UC"):
        return "s", [v.rstrip("\0 ") for v in _decode_text(raw, codec).split("\\")]
    if vr == "PN":
        if codec is None:
            # pydicom re-encodes names with the character set (ISO 2022 code paths
            # that even raise on some values): not reproduced
            raise Unsupported("PN with an unsupported SpecificCharacterSet")
        names = []
        for name in _decode_text(raw.rstrip(b"\x00 "), codec).split("\\"):
            groups = name.split("=")
            while groups and not groups[-1]:
                groups.pop()
            names.append("=".join(groups))
        return "pn", names
    if vr in ("ST", "LT", "UT"):
        return "t", _decode_text(raw, codec).rstrip("\0 ")
    if vr == "IS":
        return _numbers("is", raw.decode("latin-1").rstrip(" \x00").split("\\"), _IS_CHARS, int)
    if vr == "DS":
        items = raw.decode("latin-1").strip().rstrip(" \x00").split("\\")
        return _numbers("ds", items, _DS_CHARS, float)
    if vr == "AE":
        return "s", [v.strip() for v in raw.decode("latin-1").split("\\")]
    if vr == "UR":
        return "t", raw.decode("latin-1").rstrip()
    fmt = _BINARY_FORMATS.get(vr)
    if fmt is not None:
        code, size = fmt
        count, rest = divmod(len(raw), size)
        if rest:
            raise Unsupported(f"{vr} value of {len(raw)} bytes")
        return "n", unpack(("<" if little else ">") + str(count) + code, raw)
    if vr in BYTES_VRS:
        return "b", raw
    if vr == "AT":
        count, rest = divmod(len(raw), 4)
        if rest:
            raise Unsupported(f"AT value of {len(raw)} bytes")
        pairs = unpack(("<" if little else ">") + str(2 * count) + "H", raw)
        return "at", tuple(pairs[i] << 16 | pairs[i + 1] for i in range(0, len(pairs), 2))
    raise Unsupported(f"VR {vr}")


def _numbers(
    kind: str, items: list[str], allowed: frozenset[str], parse: type
) -> tuple[str, object]:
    """IS/DS: pydicom keeps each number's original text (``.strip()``-ed) and prints that."""
    if len(items) == 1 and not items[0]:
        return "empty", ""
    out = []
    for item in items:
        if not item.strip(" ") or len(item) > 64 or not allowed.issuperset(item):
            raise Unsupported("IS/DS value pydicom would retry as another VR")
        try:
            parse(item)
        except ValueError:
            raise Unsupported("IS/DS value pydicom would retry as another VR") from None
        out.append(item.strip())
    return kind, out


def text(kind: str, value: object) -> tuple[str, bool]:
    """(``"%s" % value`` under pydicom 2.4, ``DataElement.is_empty``) for a decoded value."""
    if kind == "s" or kind == "ui":
        items: list[str] = value  # type: ignore[assignment]
        if len(items) == 1:
            return items[0], not items[0]
        return "[" + ", ".join([repr(i) for i in items]) + "]", False
    if kind == "pn" or kind == "is" or kind == "ds":
        items = value  # type: ignore[assignment]
        if len(items) == 1:
            return items[0], not items[0]
        return "[" + ", ".join(items) + "]", False
    if kind == "t":
        return value, not value  # type: ignore[return-value]
    if kind == "n":
        numbers: tuple[int | float, ...] = value  # type: ignore[assignment]
        if len(numbers) == 1:
            return str(numbers[0]), False
        return str(list(numbers)), False
    if kind == "none":
        return "None", True
    if kind == "empty":
        return "", True
    if kind == "b":
        return "%s" % (value,), not value  # noqa: UP031 - str(bytes), as px-repack prints it
    if kind == "at":
        tags: tuple[int, ...] = value  # type: ignore[assignment]
        if len(tags) == 1:
            return tag_text(tags[0]), False
        return "[" + ", ".join([tag_text(t) for t in tags]) + "]", False
    raise Unsupported(f"value kind {kind}")


def repval(vr: str, kind: str, value: object, uid_names: dict[str, str]) -> str:
    """pydicom 2.4's ``DataElement.repval`` (what a sequence item shows after ``VR:``)."""
    if vr in _LONG_VALUE_VRS and value is not None:
        length = len(value)  # type: ignore[arg-type]
        if kind == "s" and len(value) == 1:  # type: ignore[arg-type]
            length = len(value[0])  # type: ignore[index]
        if length > MAX_DISPLAY:
            return f"Array of {length} elements"
    if kind in ("s", "ui", "pn", "is", "ds", "n", "at"):
        vm = len(value)  # type: ignore[arg-type]
        single = vm == 1
        if single and kind in ("s", "ui", "pn"):
            vm = 1 if value[0] else 0  # type: ignore[index]
        if vm > MAX_DISPLAY:
            return f"Array of {vm} elements"
        if single:
            one = value[0]  # type: ignore[index]
            if kind == "ui":
                return uid_names.get(one, one)  # type: ignore[no-any-return]
            if kind == "is":
                return "'" + repr(int(one)) + "'"
            if kind == "ds":
                return "'" + float.__repr__(float(one)) + "'"  # 2.4's DSfloat repr
            if kind == "n":
                return repr(one)
            if kind == "at":
                return tag_text(one)
            return repr(one)
        if kind == "s" or kind == "ui":
            return "[" + ", ".join([repr(i) for i in value]) + "]"  # type: ignore[attr-defined]
        if kind == "n":
            return str(list(value))  # type: ignore[call-overload]
        if kind == "at":
            return "[" + ", ".join([tag_text(t) for t in value]) + "]"  # type: ignore[attr-defined]
        return "[" + ", ".join(value) + "]"  # type: ignore[arg-type]
    if kind == "none":
        return "None"
    return repr(value)  # t, b, empty
