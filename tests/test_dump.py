"""The series record's full-header dump: px-repack's text, made without pydicom where possible.

px-repack 3.12.6 runs on pydicom 2.4: the expected texts here were printed by the real
pydicom 2.4.5 (``"%s" % ds.Keyword``) for the datasets built below.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_repack.core.render import render_value

#: pydicom 2.4.5's ``"%s" % ds.ContentSequence`` for :func:`_nested` (two equal items).
PYDICOM_24_SEQUENCE = (
    "[(0008, 010b) Context Group Extension Flag        CS: 'Y'\n"
    "(0008, 2218)  Anatomic Region Sequence  1 item(s) ---- \n"
    "   (0008, 0100) Code Value                          SH: 'T-A0100'\n"
    "   ---------\n"
    "(0018, 0050) Slice Thickness                     DS: '1.0'\n"
    "(0020, 0032) Image Position (Patient)            DS: [1.000000e+00, -2.5, 3]\n"
    "(0020, 9165) Dimension Index Pointer             AT: [(0020, 0032), (0008, 010b)]\n"
    "(2001, 0010) Private Creator                     LO: 'Philips Imaging DD 001'\n"
    "(2001, 1003) [Diffusion B-Factor]                FL: 1.5\n"
    "(2001, 10c1) [Nested Object Type Name]           LO: 'private'(0008, 010b) Context Group Extension Flag        CS: 'Y'\n"
    "(0008, 2218)  Anatomic Region Sequence  1 item(s) ---- \n"
    "   (0008, 0100) Code Value                          SH: 'T-A0100'\n"
    "   ---------\n"
    "(0018, 0050) Slice Thickness                     DS: '1.0'\n"
    "(0020, 0032) Image Position (Patient)            DS: [1.000000e+00, -2.5, 3]\n"
    "(0020, 9165) Dimension Index Pointer             AT: [(0020, 0032), (0008, 010b)]\n"
    "(2001, 0010) Private Creator                     LO: 'Philips Imaging DD 001'\n"
    "(2001, 1003) [Diffusion B-Factor]                FL: 1.5\n"
    "(2001, 10c1) [Nested Object Type Name]           LO: 'private']"
)


def _nested() -> Dataset:
    """Hex letters in nested tags, a private block, AT and DS values, a sequence in a sequence."""
    item = Dataset()
    item.add_new(0x0008010B, "CS", "Y")
    item.add_new(0x00200032, "DS", ["1.000000e+00", "-2.5", "3"])
    item.add_new(0x00180050, "DS", "1.000000e+00")
    item.add_new(0x00209165, "AT", [0x00200032, 0x0008010B])
    item.add_new(0x20010010, "LO", "Philips Imaging DD 001")
    item.add_new(0x200110C1, "LO", "private")
    item.add_new(0x20011003, "FL", 1.5)
    inner = Dataset()
    inner.add_new(0x00080100, "SH", "T-A0100")
    item.add_new(0x00082218, "SQ", Sequence([inner]))
    ds = Dataset()
    ds.add_new(0x0040A730, "SQ", Sequence([item, item]))
    ds.add_new(0x00209165, "AT", 0x0008010B)
    return ds


def test_sequences_and_tags_render_as_pydicom_24_prints_them() -> None:
    """Lower-case hex in nested tags and AT values, 2.4's DS repr (issue 10, section 2)."""
    ds = _nested()
    assert render_value(ds.ContentSequence) == PYDICOM_24_SEQUENCE
    assert render_value(ds.DimensionIndexPointer) == "(0008, 010b)"
