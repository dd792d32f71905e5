"""The series record's full-header dump: px-repack's text, made without pydicom where possible.

px-repack 3.12.6 runs on pydicom 2.4: the expected texts here were printed by the real
pydicom 2.4.5 (``"%s" % ds.Keyword``) for the datasets built below.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_repack.core.dump import header_dump
from dicom_repack.core.render import render_value
from helpers import run_cli

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


# --------------------------------------------------------------------------------------
# Issue 9, defect 8: a malformed element inside a sequence
# --------------------------------------------------------------------------------------


def malformed_in_sequence(path: Path, sop: str = "1.2.3.4.5") -> Path:
    """A Part 10 file whose ReferencedImageSequence item holds an FD element of 2 bytes.

    The layout's elements are fine, so the instance can be filed; pydicom raises on the
    nested element when the sequence is printed (px-repack itself crashes there).
    """
    import io

    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.PatientID = "P1"
    ds.PatientName = "Doe^J"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.SOPInstanceUID = sop
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.Modality = "MR"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    item.ReferencedSOPInstanceUID = "1.2.3.9"
    item.add_new(0x00281050, "DS", "40")
    ds.ReferencedImageSequence = Sequence([item])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = bytearray(buf.getvalue())
    at = data.find(b"\x28\x00\x50\x10DS")
    data[at + 4 : at + 6] = b"FD"  # 2 bytes of FD: not a multiple of 8
    path.write_bytes(bytes(data))
    return path


def series_dump(logdir: Path) -> dict[str, str]:
    (record,) = logdir.glob("studyData/*-series/*-meta.json")
    (series,) = json.loads(record.read_text()).values()
    return {k: v["value"] for k, v in series["DICOM"].items()}


def assert_filed_and_recorded(datadir: Path, logdir: Path) -> None:
    (filed,) = [p for p in datadir.rglob("*") if p.is_file()]
    assert filed.name.endswith("1.2.3.4.5.dcm")
    assert list(logdir.glob("seriesData/*-img/*.json"))
    dump = series_dump(logdir)
    assert dump["ReferencedImageSequence"].startswith("no attribute (cannot decode: ")
    assert "(0028,1050)" in dump["ReferencedImageSequence"]
    assert dump["PatientID"] == "P1" and dump["Modality"] == "MR"  # the rest is recorded


def test_dump_records_what_it_can_of_a_malformed_sequence(tmp_path: Path) -> None:
    dump = header_dump(malformed_in_sequence(tmp_path / "bad.dcm"))
    assert dump["ReferencedImageSequence"].startswith("no attribute (cannot decode: ")
    assert dump["SOPInstanceUID"] == "1.2.3.4.5"


def test_per_instance_door_files_and_records_a_malformed_sequence(tmp_path: Path) -> None:
    src = malformed_in_sequence(tmp_path / "bad.dcm")
    data, log = tmp_path / "data", tmp_path / "log"
    proc = run_cli(
        "--xcrdirfile", str(src), "--datadir", str(data), "--logdir", str(log), "--cleanup"
    )
    assert "Traceback" not in proc.stderr
    assert not src.exists()
    assert_filed_and_recorded(data, log)


def test_batch_files_and_records_a_malformed_sequence_and_goes_on(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    malformed_in_sequence(inbox / "bad.dcm")
    data, log = tmp_path / "data", tmp_path / "log"
    proc = run_cli("batch", str(inbox), "--datadir", str(data), "--logdir", str(log), "--jobs", "2")
    assert "Traceback" not in proc.stderr
    assert "1 instances filed" in proc.stdout + proc.stderr
    assert_filed_and_recorded(data, log)


@pytest.mark.dcmtk
def test_listen_files_and_records_a_malformed_sequence(tmp_path: Path) -> None:
    from test_listen_support import dcmtk, dcmtk_env, listening

    src = malformed_in_sequence(tmp_path / "bad.dcm")
    data, log = tmp_path / "data", tmp_path / "log"
    storescu = dcmtk("storescu")
    with listening(data, "--logdir", str(log), "--aet", "DICOM-REPACK") as listener:
        sent = subprocess.run(
            [storescu, "-aec", "DICOM-REPACK", "127.0.0.1", str(listener.port), str(src)],
            capture_output=True, text=True, env=dcmtk_env(), timeout=120,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert listener.stop() == 0
    assert "Traceback" not in listener.stderr
    assert "1 instances filed" in listener.stderr and "0 failed" in listener.stderr
    assert_filed_and_recorded(data, log)
