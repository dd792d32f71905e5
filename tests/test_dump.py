"""The series record's full-header dump: px-repack's text, made without pydicom where possible.

px-repack 3.12.6 runs on pydicom 2.4: the expected texts here were printed by the real
pydicom 2.4.5 (``"%s" % ds.Keyword``) for the datasets built below.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_repack.core.dump import _pydicom_dump as pydicom_dump
from dicom_repack.core.dump import fast_dump, header_dump
from dicom_repack.core.render import render_value
from dicom_repack.core.walker import Unsupported
from helpers import GENERATED_CORPORA, dicom_files, generated_bytes, run_cli

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


# --------------------------------------------------------------------------------------
# Issue 11, target 1: the dump by the project's own reader equals pydicom's
# --------------------------------------------------------------------------------------


def fast_or_declined(source: bytes | Path) -> dict[str, str] | None:
    """The own reader's dump, or None where it declines (pydicom then makes it)."""
    from dicom_repack.core.errors import NotDicomError, NotRegularFileError, TruncatedError
    from dicom_repack.core.header import with_buffer

    try:
        dump: dict[str, str] = with_buffer(source, fast_dump)
        return dump
    except (Unsupported, NotDicomError, TruncatedError, NotRegularFileError):
        return None


def assert_dump_equals_pydicom(source: bytes | Path) -> bool:
    """Equal to pydicom's dump, or declined; True when the own reader made it."""
    got = fast_or_declined(source)
    if got is None:
        return False
    ref = pydicom_dump(source)
    if got != ref:
        for key in sorted(set(got) | set(ref)):
            assert got.get(key) == ref.get(key), key
    return True


def test_generated_dictionary_equals_pydicoms() -> None:
    """scripts/gen_dictionary.py wrote the tables from the pydicom that is installed.

    Compared in a process of its own: importing pynetdicom (any listen or sender test
    earlier in the same run) adds UIDs to pydicom's dictionary in that process."""
    import subprocess
    import sys

    script = """
import pydicom
from pydicom._dicom_dict import DicomDictionary, RepeatersDictionary
from pydicom._private_dict import private_dictionaries
from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import masks

from dicom_repack.core import dictionary, private_dictionary

assert pydicom.__version__ == dictionary.PYDICOM_VERSION
assert {
    tag: f"{vr}\\t{keyword}\\t{name}"
    for tag, (vr, _vm, name, _retired, keyword) in DicomDictionary.items()
} == dictionary.ENTRIES, "the element table"
assert list(dictionary.REPEATERS) == [masks[m] for m in RepeatersDictionary], "repeaters"
assert {uid: entry[0] for uid, entry in UID_dictionary.items()} == dictionary.UID_NAMES, "UIDs"
assert {
    creator: {key: f"{vr}\\t{name}" for key, (vr, _vm, name, _retired) in entries.items()}
    for creator, entries in private_dictionaries.items()
} == private_dictionary.PRIVATE, "the private tables"
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_generated_corpora_take_the_fast_path_and_equal_pydicom(
    generated: dict[str, Path],
) -> None:
    for folder in generated.values():
        files = dicom_files(folder)
        assert files
        for path in files:
            assert assert_dump_equals_pydicom(path), path


@pytest.mark.shared
def test_both_shared_corpora_take_the_fast_path_and_equal_pydicom(
    corpora: dict[str, Path],
) -> None:
    for folder in corpora.values():
        files = [
            p for p in folder.iterdir() if p.is_file() and p.name not in ("LICENSE", "README.md")
        ]
        assert files
        for path in files:
            assert assert_dump_equals_pydicom(path), path


def test_pydicom_test_files_equal_pydicom_or_decline() -> None:
    from pydicom.data import get_testdata_files

    taken = 0
    for name in get_testdata_files():
        path = Path(name)
        if path.is_file():
            taken += assert_dump_equals_pydicom(path)
    assert taken >= 140  # 144 of pydicom 3.0's files at the time of writing


def test_default_bench_corpus_equals_pydicom(tmp_path: Path) -> None:
    from dicom_repack.bench.corpus import CorpusSpec, find_instances, generate_corpus

    generate_corpus(
        tmp_path,
        CorpusSpec(instances=60, patients=2, studies_per_patient=2, series_per_study=3, seed=1),
    )
    files = find_instances(tmp_path)
    taken = sum(assert_dump_equals_pydicom(path) for path in files)
    assert taken >= len(files) // 2


# Random datasets: nested sequences, private blocks, every VR the records print, in the
# three byte encodings. Each must dump as pydicom does, or be declined.

_TEXT = st.text(alphabet="AZaz09 ^.-_=\\()'\"é", max_size=16)
_NUMBER_TEXT = st.sampled_from(["1", "-2", "+3", "0005", "1.5", "1.000000e+00", "-0.25", "1e3"])
_ELEMENTS = [  # (tag, VR, value strategy)
    (
        0x00080008,
        "CS",
        st.lists(st.sampled_from(["ORIGINAL", "PRIMARY", "M", ""]), min_size=1, max_size=3),
    ),
    (
        0x00080016,
        "UI",
        st.sampled_from(["1.2.840.10008.5.1.4.1.1.4", "1.2.3.4", "1.2.840.10008.1.2.1"]),
    ),
    (0x00080100, "SH", _TEXT),
    (0x00080104, "LO", _TEXT),
    (0x0008010B, "CS", st.sampled_from(["Y", "N"])),
    (0x00081150, "UI", st.sampled_from(["1.2.840.10008.5.1.4.1.1.4", "1.9.8.7"])),
    (0x00100010, "PN", st.sampled_from(["Doe^John", "Roe^Jane^^Dr", "A=B", ""])),
    (0x00180050, "DS", _NUMBER_TEXT),
    (0x00200032, "DS", st.lists(_NUMBER_TEXT, min_size=1, max_size=20)),
    (0x00200013, "IS", st.sampled_from(["1", "0005", "-3", "+7"])),
    (0x00280010, "US", st.integers(0, 65535)),
    (0x00281050, "DS", st.lists(_NUMBER_TEXT, min_size=1, max_size=3)),
    (
        0x00209165,
        "AT",
        st.lists(st.sampled_from([0x00200032, 0x0008010B, 0x00280010]), min_size=1, max_size=3),
    ),
    (0x00204000, "LT", st.text(alphabet="ab c\n", max_size=40)),
    (0x00189087, "FD", st.floats(allow_nan=False, allow_infinity=False, width=64)),
    (0x00181310, "US", st.lists(st.integers(0, 65535), min_size=1, max_size=20)),
    (0x00420011, "OB", st.binary(max_size=40)),
    (0x0040A124, "UI", st.sampled_from(["1.2.3", "1.2.840.10008.1.2"])),
    (0x0040A30A, "DS", _NUMBER_TEXT),
    (0x00081199, "SQ", None),  # a nested sequence
    (0x00400275, "SQ", None),
]


@st.composite
def _datasets(draw: st.DrawFn, depth: int = 0) -> Dataset:
    ds = Dataset()
    for tag, vr, values in draw(st.lists(st.sampled_from(_ELEMENTS), max_size=6)):
        if vr == "SQ":
            if depth < 2:
                items = draw(st.lists(_datasets(depth + 1), max_size=3))
                ds.add_new(tag, "SQ", Sequence(items))
            continue
        assert values is not None
        value = draw(values)
        if vr == "DS" and isinstance(value, list) and len(value) == 1:
            value = value[0]
        ds.add_new(tag, vr, value)
    if draw(st.booleans()):  # a private block, known to pydicom's private dictionary or not
        creator = draw(
            st.sampled_from(["Philips Imaging DD 001", "SIEMENS CSA HEADER", "ACME 1.0"])
        )
        group = 0x2001 if creator.startswith("Philips") else 0x0029
        ds.add_new(group << 16 | 0x0010, "LO", creator)
        ds.add_new(group << 16 | 0x1003, "FL", 1.5)
        ds.add_new(group << 16 | 0x10C1, "LO", "nested")
        ds.add_new(group << 16 | 0x1008, "CS", "IMAGE NUM 4")
    return ds


def _part10(ds: Dataset, encoding: tuple[bool, bool], sop: str = "1.2.3.4.5") -> bytes:
    import io

    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    implicit, little = encoding
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = sop
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian
        if implicit
        else ExplicitVRLittleEndian
        if little
        else ExplicitVRBigEndian
    )
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(ds=_datasets(), encoding=st.sampled_from([(False, True), (True, True), (False, False)]))
def test_random_nested_datasets_dump_as_pydicom(ds: Dataset, encoding: tuple[bool, bool]) -> None:
    top = Dataset()
    top.PatientID = "P"
    top.ReferencedImageSequence = Sequence([ds])
    top.update(ds)  # the same elements at the top level too
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            data = _part10(top, encoding)
        except Exception:  # a value pydicom cannot write in this encoding
            return
    assert_dump_equals_pydicom(data)


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(seed=st.integers(0, 2**32 - 1), which=st.integers(0, 100))
def test_mutated_files_dump_as_pydicom_or_decline(seed: int, which: int) -> None:
    """Random damage to real files: equal, declined, or pydicom's dump (never an exception)."""
    import random

    from corpora import mutate

    seeds = _mutation_seeds()
    data = mutate(seeds[which % len(seeds)], random.Random(seed))
    assert_dump_equals_pydicom(data)
    assert isinstance(header_dump(data), dict)  # the door's call never raises


_SEEDS: list[bytes] = []


def _mutation_seeds() -> list[bytes]:
    if not _SEEDS:
        from pydicom.data import get_testdata_file

        for name in (
            "MR_small.dcm",
            "MR_small_bigendian.dcm",
            "nested_priv_SQ.dcm",
            "rtplan.dcm",
            "reportsi.dcm",
            "waveform_ecg.dcm",
        ):
            _SEEDS.append(Path(get_testdata_file(name)).read_bytes())  # type: ignore[arg-type]
        _SEEDS.extend(generated_bytes(name) for name in GENERATED_CORPORA)
    return _SEEDS


# --------------------------------------------------------------------------------------
# Filing a typical instance imports no pydicom, through every door
# --------------------------------------------------------------------------------------


def typical_instance(path: Path, sop: str = "1.2.826.0.1.3680043.8.498.1") -> Path:
    """An MR-like instance: explicit VR LE, a referenced-image sequence, a private block."""
    import warnings

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.StudyDate = ds.SeriesDate = "20130308"
    ds.Modality = "MR"
    ds.Manufacturer = "SIEMENS"
    ds.PatientName = "Anon^Patient"
    ds.PatientID = "1449c1d"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.PatientAge = "042Y"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.10"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.11"
    ds.StudyDescription = "Brain"
    ds.SeriesDescription = "t1_mpr_sag"
    ds.SeriesNumber = 2
    ds.InstanceNumber = 7
    ds.SliceThickness = "1.000000e+00"
    ds.ImagePositionPatient = ["-86.5", "-124.7", "121.3"]
    ds.PixelSpacing = ["1", "1"]
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = 16
    ds.PixelRepresentation = 0
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    item.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.99"
    ds.ReferencedImageSequence = Sequence([item, item])
    ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
    ds.add_new(0x00291008, "CS", "IMAGE NUM 4")
    ds.PixelData = b"\0" * 32
    data = _part10(ds, (False, True), sop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path.write_bytes(data)
    return path


def pydicom_imports(importtime_stderr: str) -> list[str]:
    """The pydicom modules a ``-X importtime`` stderr shows imported."""
    return [
        line for line in importtime_stderr.splitlines()
        if line.startswith("import time:") and line.split("|")[-1].strip().startswith("pydicom")
    ]  # fmt: skip


def _assert_dumped(log: Path) -> None:
    dump = series_dump(log)
    assert dump["ReferencedImageSequence"].startswith("[(0008, 1150) Referenced SOP Class UID")
    assert dump["SliceThickness"] == "1.000000e+00"


def test_per_instance_door_files_a_typical_instance_without_pydicom(tmp_path: Path) -> None:
    import os

    src = typical_instance(tmp_path / "in.dcm")
    data, log = tmp_path / "data", tmp_path / "log"
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")  # python -X importtime
    proc = run_cli("--xcrdirfile", str(src), "--datadir", str(data), "--logdir", str(log), env=env)
    assert "import time:" in proc.stderr
    assert pydicom_imports(proc.stderr) == []
    _assert_dumped(log)


def test_batch_files_typical_instances_without_pydicom(tmp_path: Path) -> None:
    import os

    inbox = tmp_path / "in"
    inbox.mkdir()
    for i in range(3):
        typical_instance(inbox / f"{i}.dcm", sop=f"1.2.826.0.1.3680043.8.498.{i + 1}")
    data, log = tmp_path / "data", tmp_path / "log"
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")
    proc = run_cli(
        "batch", str(inbox), "--datadir", str(data), "--logdir", str(log), "--no-progress", env=env
    )
    assert "3 instances filed" in proc.stdout + proc.stderr
    assert pydicom_imports(proc.stderr) == []
    _assert_dumped(log)


@pytest.mark.dcmtk
def test_listen_files_a_typical_instance_without_importing_pydicom_for_it(tmp_path: Path) -> None:
    """pynetdicom itself imports pydicom at start; filing (the dump too) adds none of it."""
    import os
    import signal

    from helpers import dicom_repack_exe
    from test_listen_support import dcmtk, dcmtk_env

    src = typical_instance(tmp_path / "in.dcm")
    data, log = tmp_path / "data", tmp_path / "log"
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")  # python -X importtime
    argv = [dicom_repack_exe(), "listen", "--bind", "127.0.0.1", "--port", "0", "--aet", "DR"]
    proc = subprocess.Popen(
        [*argv, "--datadir", str(data), "--logdir", str(log)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the start's own imports come first
            if "listening on" in line:
                port = line.split("listening on ", 1)[1].split()[0].rsplit(":", 1)[1]
                break
        else:
            pytest.fail("listen did not start")
        sent = subprocess.run(
            [dcmtk("storescu"), "-aec", "DR", "127.0.0.1", port, str(src)],
            capture_output=True, text=True, env=dcmtk_env(), timeout=120,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        proc.send_signal(signal.SIGTERM)
        after_start = proc.stderr.read()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert "1 instances filed" in after_start
    assert "dicom_repack.core.dump" in after_start  # the filing's own imports are seen...
    assert pydicom_imports(after_start) == []  # ...and none of them is pydicom's
    _assert_dumped(log)


def test_per_instance_door_runs_under_python_S_from_this_install(tmp_path: Path) -> None:
    """``python -S dicom-repack ...`` (no site): the script finds the package itself,
    here through the editable install's .pth file or site-packages."""
    import sys

    from helpers import dicom_repack_exe

    src = typical_instance(tmp_path / "in.dcm")
    data, log = tmp_path / "data", tmp_path / "log"
    done = subprocess.run(
        [sys.executable, "-S", dicom_repack_exe(), "--xcrdirfile", str(src), "--datadir", str(data),
         "--logdir", str(log)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    _assert_dumped(log)
