"""Tags and VRs of the elements the default layout and the pypx records need.

A small literal table, so that the per-instance door never imports pydicom's
data dictionary (tens of milliseconds) for the common case. Keywords outside it
(custom templates) are looked up in pydicom's dictionary on demand.
"""

from __future__ import annotations

#: keyword -> (tag as int 0xGGGGEEEE, VR)
CORE: dict[str, tuple[int, str]] = {
    "SpecificCharacterSet": (0x00080005, "CS"),
    "StudyDate": (0x00080020, "DA"),
    "SeriesDate": (0x00080021, "DA"),
    "AccessionNumber": (0x00080050, "SH"),
    "Modality": (0x00080060, "CS"),
    "StudyDescription": (0x00081030, "LO"),
    "SeriesDescription": (0x0008103E, "LO"),
    "SOPInstanceUID": (0x00080018, "UI"),
    "PatientName": (0x00100010, "PN"),
    "PatientID": (0x00100020, "LO"),
    "PatientBirthDate": (0x00100030, "DA"),
    "PatientSex": (0x00100040, "CS"),
    "PatientAge": (0x00101010, "AS"),
    "StudyInstanceUID": (0x0020000D, "UI"),
    "SeriesInstanceUID": (0x0020000E, "UI"),
    "SeriesNumber": (0x00200011, "IS"),
    "InstanceNumber": (0x00200013, "IS"),
    "ImagesInAcquisition": (0x00201002, "IS"),
    "NumberOfSeriesRelatedInstances": (0x00201209, "IS"),
    "PerformedStationAETitle": (0x00400241, "AE"),
    "NumberOfSlices": (0x00540081, "US"),
}


def lookup(keyword: str) -> tuple[int, str] | None:
    """Return (tag, VR) for a DICOM keyword, or None if DICOM has no such keyword."""
    hit = CORE.get(keyword)
    if hit is not None:
        return hit
    from ._pydicom import pydicom

    pydicom()  # imported lightly (no numpy/Pillow/requests) if this is the first import
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    return tag, dictionary_VR(tag)
