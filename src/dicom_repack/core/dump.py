"""The full-header dump that the series record carries (pydicom; once per series).

px-repack stores every keyword element of the dataset except PixelData, as
``"%s" % dataset.Keyword``, in ``studyData/<study>-series/<series>-meta.json``.
Reading a whole header is what pydicom is for, and it happens once per series,
so this stays with pydicom rather than the fast path.
"""

from __future__ import annotations

import io
import os

from .header import render_value


def header_dump(source: str | os.PathLike[str] | bytes | memoryview) -> dict[str, str]:
    """Every keyword element but PixelData, rendered as px-repack renders it."""
    import warnings

    from ._pydicom import pydicom

    fp = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom().dcmread(fp, defer_size="512 KB")
        out: dict[str, str] = {}
        for keyword in ds.dir():
            if keyword == "PixelData":
                continue
            try:
                value: object = getattr(ds, keyword)
            except Exception:  # px-repack records unreadable elements this way
                value = "no attribute"
            out[keyword] = render_value(value)
    return out
