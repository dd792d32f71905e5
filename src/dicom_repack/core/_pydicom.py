"""Import pydicom for reading headers only, without its pixel and network stacks.

``import pydicom`` also imports numpy, Pillow and requests when they are installed
(pixel handlers, example-data download): +100 ms and +20 MB per process. We never
decode pixels or download anything, and the per-instance door and every batch
worker pay each import, so those optional modules are hidden while pydicom is
imported (pydicom then simply records them as unavailable). If pydicom was
already imported by someone else, that import is used as it is.
"""

from __future__ import annotations

import sys
from types import ModuleType

_OPTIONAL = ("numpy", "PIL", "requests", "pooch")


def pydicom() -> ModuleType:
    """The pydicom module, imported lightly if this is the first import."""
    loaded = sys.modules.get("pydicom")
    if loaded is not None:
        return loaded
    hidden = [name for name in _OPTIONAL if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes "import name" fail
    try:
        import pydicom as module
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
    return module
