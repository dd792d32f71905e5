"""The full-header dump that the series record carries (once per series).

px-repack stores every keyword element of the dataset except PixelData, as
``"%s" % dataset.Keyword`` (pydicom 2.4's text), in
``studyData/<study>-series/<series>-meta.json``.

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

from .render import render_value

__all__ = ["UNDECODABLE", "header_dump"]

#: px-repack writes this for an element it cannot read; we add the reason after it.
UNDECODABLE = "no attribute"


def header_dump(source: str | os.PathLike[str] | bytes | memoryview) -> dict[str, str]:
    """Every keyword element but PixelData, rendered as px-repack renders it.

    ``source`` is a path or the whole Part 10 file's bytes. Never raises for a bad
    file (OSError reading a path propagates).
    """
    return _pydicom_dump(source)


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
