"""dicom-repack: file DICOM instances into a tag-named tree and write the pypx records.

The public API, for programs that file instances themselves (a receiver, a
pipeline step) instead of running the console script::

    from dicom_repack import Config, Layout, Repacker, read_header

    with Repacker(Config("/data", logdir="/log", layout=Layout.rx())) as repacker:
        outcome = repacker.repack_path("/incoming/MR.1.2.3.dcm", move=True)
        if not outcome.ok:
            print(outcome.error)  # one line naming the file; nothing was changed

    header = read_header("/incoming/MR.1.2.4.dcm", ("PatientID", "SeriesDescription"))
    header.get("PatientID")       # the value as pypx prints it, or None when absent

Names (docs/api.md has each with its parameters and an example):

* :class:`Repacker` -- the job: header, plan, place, records, then the source goes.
* :class:`Config` -- where to file (data and log folders), which layout, fsync.
* :class:`Layout` -- the four path templates (``Layout.rx()``, ``Layout.px()``,
  ``Layout.from_options(...)``).
* :class:`Outcome` -- what happened to one instance (``ok``, ``error``, ``dst``, ...).
* :func:`read_header` / :class:`Header` -- read some elements of a Part 10 file.
* :class:`RepackError` -- the base of every error the job reports (``read_header``
  raises its :class:`NotDicomError` / :class:`TruncatedError` subclasses), under
  :class:`DicomRepackError`, the base of every error dicom-repack raises on purpose
  (:class:`TemplateError` for a bad layout template too); each has a stable ``code``.

Every name is imported on first use (module ``__getattr__``, PEP 562): the
per-instance door runs once per received instance and imports ``dicom_repack``
without paying for any of them. Nothing else in the package is public.
"""

__version__ = "0.1.0"

__all__ = [
    "Config",
    "DicomRepackError",
    "Header",
    "Layout",
    "NotDicomError",
    "Outcome",
    "RepackError",
    "Repacker",
    "TemplateError",
    "TruncatedError",
    "read_header",
]

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from .core.errors import (
        DicomRepackError,
        NotDicomError,
        RepackError,
        TemplateError,
        TruncatedError,
    )
    from .core.header import Header, read_header
    from .core.layout import Layout
    from .core.outcome import Outcome
    from .core.repack import Config, Repacker

#: public name -> the module that defines it
_WHERE = {
    "Config": "dicom_repack.core.repack",
    "Repacker": "dicom_repack.core.repack",
    "Layout": "dicom_repack.core.layout",
    "Outcome": "dicom_repack.core.outcome",
    "Header": "dicom_repack.core.header",
    "read_header": "dicom_repack.core.header",
    "RepackError": "dicom_repack.core.errors",
    "DicomRepackError": "dicom_repack.core.errors",
    "NotDicomError": "dicom_repack.core.errors",
    "TruncatedError": "dicom_repack.core.errors",
    "TemplateError": "dicom_repack.core.errors",
}


def __getattr__(name: str) -> object:
    """Import a public name the first time it is asked for."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'dicom_repack' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups are plain globals
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
