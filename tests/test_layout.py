"""The template language, the one sanitising rule, and the hand-written SeaHash."""

from __future__ import annotations

import hashlib

import pytest
import seahash
from hypothesis import given, settings
from hypothesis import strategies as st

from dicom_repack.core.errors import TemplateError
from dicom_repack.core.layout import Layout, safe_name, seahash64

VALUES = {
    "PatientID": "1449c1d",
    "PatientName": "anonymized",
    "PatientBirthDate": "20090701",
    "StudyDescription": "MR-Brain w/o Contrast",
    "AccessionNumber": "98edede8b2",
    "StudyDate": "20130308",
    "SeriesNumber": "5",
    "SeriesDescription": "SAG MPRAGE 220 FOV",
    "SeriesInstanceUID": "1.3.12.2.1107.5.2.19.45152.2013030808061520200285270.0.0.0",
    "InstanceNumber": "61",
    "SOPInstanceUID": "1.3.12.2.1107.5.2.19.45152.2013030808110087109885915",
}


def test_rx_repack_readme_example() -> None:
    plan = Layout.rx().plan(VALUES)
    assert plan.relpath == (
        "1449c1d-anonymized-20090701/MR-Brain_w_o_Contrast-98edede8b2-20130308/"
        "00005-SAG_MPRAGE_220_FOV-a27cf06/0061-1.3.12.2.1107.5.2.19.45152.2013030808110087109885915.dcm"
    )
    assert plan.missing == ()


def test_absent_and_empty_elements() -> None:
    values = dict(VALUES, AccessionNumber="")
    del values["PatientBirthDate"]
    rx = Layout.rx().plan(values, empty={"AccessionNumber"})
    assert rx.root == "1449c1d-anonymized-PatientBirthDate"
    assert rx.study == "MR-Brain_w_o_Contrast-AccessionNumber-20130308"
    assert rx.missing == ("PatientBirthDate", "AccessionNumber")
    px = Layout.px().plan(values, empty={"AccessionNumber"})
    assert px.study == "MR-Brain_w_o_Contrast--20130308", "px-repack writes an empty element as ''"
    assert px.root == "1449c1d-anonymized-_PatientBirthDate", "px-repack leaves %Keyword, sanitised"
    assert px.missing == ("PatientBirthDate",)
    del values["InstanceNumber"]
    assert Layout.px().plan(values).image.startswith("_InstanceNumber-1.3.12"), (
        "no function applied"
    )


def test_functions() -> None:
    layout = Layout.from_options(
        None,
        "%_md5|6_PatientID",
        "%_strmsk|**xx****_StudyDate",
        "%_nospc|-_SeriesDescription",
        "%_pad|6,z_InstanceNumber-%_seahash_SOPInstanceUID",
    )
    plan = layout.plan(VALUES)
    assert plan.root == hashlib.md5(b"1449c1d").hexdigest()[:6]
    assert plan.study == "20xx0308"
    assert plan.series == "SAG-MPRAGE-220-FOV"
    assert plan.image == "zzzz61-" + format(seahash.hash(VALUES["SOPInstanceUID"].encode()), "x")


def test_values_are_stripped_and_nul_removed() -> None:
    plan = Layout.rx().plan(dict(VALUES, PatientID="  ab\x00c  "))
    assert plan.root.startswith("abc-")


@pytest.mark.parametrize(
    ("templates", "message"),
    [
        (("%PatientIDD", None, None, None), "unknown DICOM keyword 'PatientIDD'"),
        ((None, "%_rot13_StudyDate", None, None), "unknown function 'rot13'"),
        ((None, None, "%_pad|5,0", None), "unterminated function"),
        ((None, None, None, "%-x"), "not followed by a DICOM keyword"),
    ],
)
def test_bad_templates_are_refused(templates: tuple[str | None, ...], message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        Layout.from_options(None, *templates)


def test_custom_keyword_from_dictionary() -> None:
    layout = Layout.from_options(None, None, None, "%ProtocolName", None)
    assert "ProtocolName" in layout.keywords
    assert layout.plan(dict(VALUES, ProtocolName="t1 mprage")).series == "t1_mprage"


@given(st.text(max_size=600))
@settings(max_examples=400)
def test_safe_name_never_escapes(text: str) -> None:
    name = safe_name(text)
    assert "/" not in name and "\0" not in name
    assert name not in ("", ".", "..")
    assert len(name.encode()) <= 255
    assert set(name) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_")


def test_long_names_stay_distinct_and_keep_their_extension() -> None:
    a, b = safe_name("A" * 1000 + "1.dcm"), safe_name("A" * 1000 + "2.dcm")
    assert a != b and a.endswith(".dcm") and b.endswith(".dcm")
    assert len(a) <= 255


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_seahash64_equals_the_seahash_package(data: bytes) -> None:
    assert seahash64(data) == seahash.hash(data)
