"""Sizes as people write them (``2GB``, ``1.5GiB``, ``256MiB``): one parser for every door.

``listen --memory-budget``, ``--spill-above``, ``--max-instance-size``, and the
bench's and corpus's ``--size`` all read sizes; decimal units (GB) and binary
ones (GiB) both work, because the seed experiment's "76 GB" is quoted in
decimal units.
"""

from __future__ import annotations

import re

__all__ = ["parse_size"]

_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(text: str) -> int:
    """``'2GB'`` -> 2_000_000_000; decimal units (GB) and binary ones (GiB) both work,
    because the seed experiment's "76 GB" is quoted in decimal units."""
    m = _SIZE_RE.match(text)
    if not m or (m.group(2) or "").lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (try 500MB, 2GB, 76GB, 1.5GiB)")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
