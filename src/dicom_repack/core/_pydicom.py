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

#: Whether pydicom's warnings reach stderr. A damaged or fuzzed file can make
#: pydicom warn dozens of times (1,793 lines in one batch of fuzzed files), while
#: the door already says in one line why the instance was not filed. Doors set
#: this from their verbose flag (``-v``) with :func:`show_warnings`.
_show = False
_filtered = False


def show_warnings(show: bool) -> None:
    """Let pydicom's warnings through (``True``: the doors' ``-v``) or not (the default).

    Call before the first :func:`pydicom`; the filter is installed once, when
    pydicom is first needed, so a run that never needs pydicom pays nothing.
    """
    global _show
    _show = show


def _quiet() -> None:
    """Ignore warnings raised from pydicom's modules (or pointed by it at ours), once."""
    global _filtered
    if _filtered or _show:
        return
    import warnings

    warnings.filterwarnings("ignore", module=r"(pydicom|dicom_repack)(\.|$)")
    _filtered = True


def pydicom() -> ModuleType:
    """The pydicom module, imported lightly if this is the first import.

    Its warnings are ignored unless :func:`show_warnings` asked for them.
    """
    _quiet()
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
