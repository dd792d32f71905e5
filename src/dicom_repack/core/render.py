"""px-repack's text for element values: ``"%s" % value`` as pydicom 2.4 prints it.

px-repack 3.12.6 runs on pydicom 2.4; the records downstream tools read carry its
text. We read with pydicom 3, whose ``str()`` of a value is the same as 2.4's
except for tags: 2.4 prints a tag as ``(0008, 010b)`` (a space, lower-case hex),
3 as ``(0008,010B)``. Tags appear in a sequence's text (every nested element
starts with its tag) and in AT values. :func:`render_value` renders those parts
itself, in 2.4's form, from pydicom's objects; everything else is pydicom's own
``str()``/``repr()``, so no text value is ever rewritten by pattern.

This module imports nothing heavy: pydicom's classes are only touched for values
pydicom made.
"""

from __future__ import annotations

__all__ = ["INDENT", "NAME_WIDTH", "render_value", "tag_text"]

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
