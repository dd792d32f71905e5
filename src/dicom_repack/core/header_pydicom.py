"""The reference reader: pydicom reads the header, for whatever the fast path declines.

:func:`.header.read_header_pydicom` calls it: loaded with pydicom (~100 ms), never by
a file the fast path reads, so its code and the :class:`RxValues` class are not made
at every start of the per-instance door (~200,000 instructions).
"""

from __future__ import annotations

import os

from .errors import NotDicomError, TruncatedError
from .render import render_value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection

    from .header import Source

__all__ = ["RxValues", "read_values"]

_CHARSET_TAG = 0x00080005


def _one_line(text: str) -> str:
    """Error reasons are one line (pydicom's messages sometimes are not)."""
    return " ".join(text.split())


def read_values(
    source: Source, keywords: Collection[str], name: str
) -> tuple[dict[str, str], frozenset[str], str]:
    """pydicom's reading of ``keywords`` (the texts, the keywords present but empty, the
    transfer syntax); NotDicomError or TruncatedError naming ``name``."""
    import io

    from ._pydicom import pydicom as _light_pydicom

    pydicom = _light_pydicom()  # without numpy/Pillow/requests: see _pydicom.py
    from pydicom.errors import InvalidDicomError

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
    except Exception as exc:  # EOFError, OSError, struct.error, zlib.error, ...
        raise TruncatedError(
            name, _one_line(f"unreadable or truncated DICOM ({exc.__class__.__name__}: {exc})")
        ) from None
    values: dict[str, str] = {}
    empty: set[str] = set()
    rx_text: dict[str, str] = {}
    rx_decodes = _rx_decodes(ds)
    for kw in keywords:
        if kw not in ds:
            continue
        try:
            if not rx_decodes:
                _rx_text(ds, kw, rx_text)
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
    if rx_text:
        values = RxValues(values, rx_text)
    return values, frozenset(empty), ts


class RxValues(dict[str, str]):
    r"""Header values (decoded as pydicom decodes them) that also say how rx-repack reads
    some of them: ``rx_text`` maps a keyword to rx-repack's text where it differs.

    rx-repack (dicom-rs 0.6) decodes text with the *first* value of SpecificCharacterSet
    when it knows it (ISO_IR 6/100/101/109/110/144/192, GB18030) and as ISO 8859-1
    otherwise, escape sequences included: a Japanese name under ``\\ISO 2022 IR 87``
    is ``Yamada^Tarou=\x1b$B;3ED\x1b(B^...`` to it, which its sanitising rule files
    as ``Yamada_Tarou_B_3ED_B_...``. For every known set but GB18030 the ISO 8859-1
    reading sanitises to the same name as the proper one (their ASCII range is ASCII),
    so ``rx_text`` is filled only when the first value is not GB18030 and a value has a
    byte outside printable ASCII. The rx layout names folders from it
    (:meth:`~.layout.Layout.plan`); records keep the decoded value, as px-repack.
    """

    __slots__ = ("rx_text",)

    def __init__(self, values: dict[str, str], rx_text: dict[str, str]) -> None:
        super().__init__(values)
        self.rx_text = rx_text


def _rx_decodes(ds: object) -> bool:
    """Whether rx-repack decodes this dataset's text as pydicom does, up to its
    sanitising rule: only GB18030 (as first value) needs its own decoding."""
    elem = getattr(ds, "get_item", lambda _tag: None)(_CHARSET_TAG)
    if elem is None:
        return True
    raw = elem.value
    if isinstance(raw, bytes):
        first = raw.split(b"\\", 1)[0].decode("latin-1").rstrip(" \x00")
    else:
        first = (raw[0] if isinstance(raw, list) and raw else str(raw or "")).rstrip()
    return first == "GB18030"


def _rx_text(ds: object, keyword: str, out: dict[str, str]) -> None:
    """rx-repack's text of ``keyword`` (its raw bytes as ISO 8859-1, trimmed) into ``out``
    when it has bytes outside printable ASCII; called before pydicom converts the value."""
    from .keywords import lookup

    found = lookup(keyword)
    if found is None or found[1] not in _RX_TEXT_VRS:
        return
    raw = getattr(ds, "get_item", lambda _tag: None)(found[0])
    value = getattr(raw, "value", None)
    if isinstance(value, bytes) and not all(0x20 <= b < 0x7F for b in value):
        out[keyword] = value.decode("latin-1").replace("\0", "").strip()


#: text VRs whose raw bytes rx-repack reads with its character set
_RX_TEXT_VRS = frozenset(("AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"))
