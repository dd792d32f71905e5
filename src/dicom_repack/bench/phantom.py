"""Synthetic MR phantom studies: the bench's default corpus, generated, seeded, no download.

The seed experiment filed 76 GB of MR phantom scans. A benchmark corpus must look like
them where cost is decided: instance size (per-byte costs: copying, hashing), header
size and shape (per-instance costs: parsing, the series dump into the records, a
vendor private block and sequences to walk), and series lengths (per-series costs:
the first instance of a series writes its series records). So each study here follows
a scanner protocol:

- ``brain``: a 3-instance localizer (256x256), a sagittal T1 MPRAGE of 176 slices
  (256x256), axial T2 TSE and FLAIR of 25 slices each (320x320);
- ``fmri``: a localizer and a resting-state BOLD run of 120 volumes stored as Siemens
  mosaics (36 slices of 64x64 in one 384x384 image);

with 16-bit pixel data (12 bits stored), a Siemens-like header (MR image module,
``SIEMENS CSA HEADER`` and ``SIEMENS MR HEADER`` private blocks with CSA blobs of
realistic size, referenced-image, request-attributes and procedure-code sequences),
explicit VR little endian. Instances are 130-330 kB (mean ~200 kB).

Studies alternate between the two protocols, two per patient; patients are added
until the asked number of instances (or bytes) is reached, the last series being cut
short. The same ``seed`` gives the same bytes. The pixel values are a smooth ellipse
phantom, not noise: nothing here measures compression.

Call :func:`iter_instances` to get ``(relative path, dataset)`` pairs; ``corpus``
writes them.
"""

from __future__ import annotations

import array
import hashlib
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["PROTOCOLS", "SeriesPlan", "iter_instances", "plan_series"]

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"


@dataclass(frozen=True, slots=True)
class Protocol:
    """One series of a scanner protocol: its description and shape."""

    description: str
    instances: int
    rows: int
    cols: int
    sequence: str  # ScanningSequence
    tr: float
    te: float
    flip: float
    thickness: float
    orientation: str  # "sag", "tra", "cor"
    mosaic: int = 0  # slices per mosaic image (0: not a mosaic)
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND", "NORM")


LOCALIZER = Protocol("localizer", 3, 256, 256, "GR", 8.6, 4.0, 20, 7.0, "sag")

#: protocol name -> its series, in acquisition order
PROTOCOLS: dict[str, tuple[Protocol, ...]] = {
    "brain": (
        LOCALIZER,
        Protocol("t1_mprage_sag_p2_iso", 176, 256, 256, "GR\\IR", 2300, 2.98, 9, 1.0, "sag"),
        Protocol("t2_tse_tra_p2", 25, 320, 320, "SE", 6000, 96, 150, 4.0, "tra"),
        Protocol("t2_tirm_tra_dark-fluid", 25, 320, 320, "SE\\IR", 9000, 81, 150, 4.0, "tra"),
    ),
    "fmri": (
        LOCALIZER,
        Protocol(
            "ep2d_bold_rest",
            120,
            384,
            384,
            "EP",
            2000,
            30,
            90,
            3.0,
            "tra",
            mosaic=36,
            image_type=("ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"),
        ),
    ),
}
STUDY_ORDER = ("brain", "fmri")


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    """Where one series sits in the corpus: patient, study and series index (0-based),
    the protocol it follows, and how many instances it gets (the last may be cut)."""

    patient: int
    study: int
    series: int
    protocol: str
    spec: Protocol
    instances: int


def _mean_instance_bytes(spec: Protocol) -> int:
    # pixels + header (CSA blobs, sequences), on the low side so that a corpus asked by
    # size reaches it (a 10 GB corpus comes out ~1.5% above)
    return spec.rows * spec.cols * 2 + 40_000


def plan_series(
    total: int | None, size_bytes: int | None, studies_per_patient: int = 2
) -> list[SeriesPlan]:
    """The series of a corpus of ``total`` instances (or about ``size_bytes``): studies
    alternate between the protocols, ``studies_per_patient`` per patient, until full."""
    if total is None and size_bytes is None:
        raise ValueError("give the corpus size: instances or size_bytes")
    out: list[SeriesPlan] = []
    count = 0
    nbytes = 0
    study_index = 0

    def full() -> bool:
        return count >= total if total is not None else nbytes >= (size_bytes or 0)

    while not full():
        p, s = divmod(study_index, max(1, studies_per_patient))
        name = STUDY_ORDER[study_index % len(STUDY_ORDER)]
        for r, spec in enumerate(PROTOCOLS[name]):
            if full():
                break
            n = spec.instances
            if total is not None:
                n = min(n, total - count)
            else:
                left = (size_bytes or 0) - nbytes
                n = min(n, max(1, math.ceil(left / _mean_instance_bytes(spec))))
            out.append(SeriesPlan(p, s, r, name, spec, n))
            count += n
            nbytes += n * _mean_instance_bytes(spec)
        study_index += 1
    return out


def _uid(*parts: object) -> str:
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


_PIXELS: dict[tuple[int, int, int], bytes] = {}


def _pixels(rows: int, cols: int, variant: int) -> bytes:
    """A smooth ellipse phantom (12-bit values), 8 variants per matrix, cached."""
    key = (rows, cols, variant % 8)
    cached = _PIXELS.get(key)
    if cached is not None:
        return cached
    v = variant % 8
    cy, cx = rows / 2, cols / 2
    ry, rx = rows * (0.38 - 0.01 * v), cols * 0.32
    data = array.array("H", bytes(rows * cols * 2))
    for y in range(rows):
        dy = (y - cy) / ry
        base = y * cols
        for x in range(cols):
            dx = (x - cx) / rx
            d = dx * dx + dy * dy
            if d < 1.0:
                ring = 0.5 + 0.5 * math.cos(d * 9.0 + v)
                data[base + x] = int(600 + 1400 * (1.0 - d) + 500 * ring) & 0x0FFF
            else:
                data[base + x] = (x * 7 + y * 13 + v) % 23  # scanner noise floor
    if array.array("H").itemsize != 2:  # pragma: no cover - every platform we know
        raise RuntimeError("unsigned short is not 16 bits here")
    import sys

    if sys.byteorder == "big":  # pragma: no cover
        data.byteswap()
    out = data.tobytes()
    _PIXELS[key] = out
    return out


def _csa_blob(kind: str, size: int, seed: str) -> bytes:
    """A CSA-like private blob: Siemens' ``SV10`` container with name/value text, padded
    to ``size`` bytes (real series headers carry the ASCCONV protocol, 50-100 kB)."""
    rng = random.Random(seed)
    lines = [b"SV10\x04\x03\x02\x01"]
    total = len(lines[0])
    i = 0
    while total < size:
        line = f"sProtConsistencyInfo.{kind}[{i}].flValue\t = {rng.uniform(0, 1000):.6f}\n".encode()
        lines.append(line)
        total += len(line)
        i += 1
    blob = b"".join(lines)[:size]
    return blob + (b"\x00" if len(blob) % 2 else b"")


def _orientation(kind: str) -> list[float]:
    return {
        "sag": [0.0, 1.0, 0.0, 0.0, 0.0, -1.0],
        "tra": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        "cor": [1.0, 0.0, 0.0, 0.0, 0.0, -1.0],
    }[kind]


def _series_template(plan: SeriesPlan, seed: int, patient_info: dict[str, str]) -> Any:
    """The dataset shared by every instance of a series (each instance restamps its own
    elements on it): file meta, patient, study, series, equipment, MR image module,
    sequences and the private blocks."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import UID

    spec = plan.spec
    p, s, r = plan.patient, plan.study, plan.series
    rng = random.Random(f"{seed}/{p}/{s}/{r}")
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MR_IMAGE_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID("2.25.0")
    meta.TransferSyntaxUID = UID(EXPLICIT_VR_LE)
    meta.ImplementationClassUID = UID("2.25.329800735698586629295641978511506172918")
    meta.ImplementationVersionName = "DICOMREPACK_PH"
    ds.file_meta = meta

    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(spec.image_type)
    ds.InstanceCreationDate = patient_info["study_date"]
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = patient_info["study_date"]
    ds.StudyTime = "101500.000000"
    ds.SeriesTime = f"10{16 + r * 6:02d}00.000000"
    ds.AccessionNumber = f"A{seed}{p + 1:04d}{s + 1:02d}"
    ds.Modality = "MR"
    ds.Manufacturer = "SIEMENS"
    ds.InstitutionName = "Phantom Imaging Center"
    ds.InstitutionAddress = "1 Scanner Road, Hanover, NH, US"
    ds.ReferringPhysicianName = "PHYSICIAN^REFERRING"
    ds.StationName = "AWP66112"
    ds.StudyDescription = (
        "QA^Phantom brain routine" if plan.protocol == "brain" else "QA^Phantom fMRI"
    )
    ds.SeriesDescription = spec.description
    ds.PerformingPhysicianName = ""
    ds.OperatorsName = "TECH^ONE"
    ds.ManufacturerModelName = "Prisma_fit"
    ds.ProcedureCodeSequence = Sequence([_code("RPID3112", "RADLEX", "MRI Head w/o contrast")])
    ds.ReferencedPerformedProcedureStepSequence = Sequence(
        [_ref("1.2.840.10008.3.1.2.3.3", _uid("pps", seed, p, s))]
    )
    ds.PatientName = patient_info["name"]
    ds.PatientID = patient_info["id"]
    ds.IssuerOfPatientID = "PHANTOMS"
    ds.PatientBirthDate = patient_info["birth_date"]
    ds.PatientSex = "O"
    ds.PatientAge = patient_info["age"]
    ds.PatientSize = "1.0"
    ds.PatientWeight = "20.0"
    ds.BodyPartExamined = "HEAD"
    ds.ScanningSequence = spec.sequence
    ds.SequenceVariant = "SK\\SP\\MP" if "IR" in spec.sequence else "SK\\SS"
    ds.ScanOptions = "IR" if "IR" in spec.sequence else "FS"
    ds.MRAcquisitionType = "3D" if spec.thickness <= 1.0 else "2D"
    ds.SequenceName = f"*{spec.description[:6].lower()}{r}"
    ds.AngioFlag = "N"
    ds.SliceThickness = f"{spec.thickness}"
    ds.RepetitionTime = f"{spec.tr}"
    ds.EchoTime = f"{spec.te}"
    ds.NumberOfAverages = "1"
    ds.ImagingFrequency = "123.255234"
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = "1"
    ds.MagneticFieldStrength = "3"
    ds.SpacingBetweenSlices = f"{spec.thickness}"
    ds.NumberOfPhaseEncodingSteps = str(spec.rows)
    ds.EchoTrainLength = "1"
    ds.PercentSampling = "100"
    ds.PercentPhaseFieldOfView = "100"
    ds.PixelBandwidth = f"{rng.choice((130, 200, 240, 2232))}"
    ds.DeviceSerialNumber = "66112"
    ds.SoftwareVersions = "syngo MR XA30"
    ds.ProtocolName = spec.description
    ds.TransmitCoilName = "Body"
    ds.AcquisitionMatrix = [0, spec.cols, spec.rows, 0]
    ds.InPlanePhaseEncodingDirection = "ROW" if spec.orientation == "tra" else "COL"
    ds.FlipAngle = f"{spec.flip}"
    ds.VariableFlipAngleFlag = "N"
    ds.SAR = f"{rng.uniform(0.01, 0.9):.8f}"
    ds.dBdt = "0"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = _uid("study", seed, p, s)
    ds.SeriesInstanceUID = _uid("series", seed, p, s, r)
    ds.StudyID = "1"
    ds.SeriesNumber = r + 1
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = _orientation(spec.orientation)
    ds.FrameOfReferenceUID = _uid("frame", seed, p, s)
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = spec.rows
    ds.Columns = spec.cols
    fov = 256.0 if spec.mosaic == 0 else 192.0
    ds.PixelSpacing = [f"{fov / spec.rows:.6f}", f"{fov / spec.cols:.6f}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "600"
    ds.WindowWidth = "1400"
    ds.WindowCenterWidthExplanation = "Algo1"
    ds.RequestedProcedureDescription = "MRI HEAD PHANTOM QA"
    ds.RequestAttributesSequence = Sequence(
        [_request(seed, p, s, "MRI HEAD PHANTOM QA"), _request(seed, p, s + 100, "QA WEEKLY")]
    )
    ds.PerformedProcedureStepStartDate = patient_info["study_date"]
    ds.PerformedProcedureStepID = f"PPS{p + 1:04d}{s + 1:02d}"
    ds.PerformedProcedureStepDescription = ds.StudyDescription
    if r > 0:  # every series after the localizer refers to it, as scanners do
        ds.ReferencedImageSequence = Sequence(
            [
                _ref(MR_IMAGE_STORAGE, _uid("instance", seed, p, s, 0, k))
                for k in range(LOCALIZER.instances)
            ]
        )

    mr = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    mr.add_new(0x08, "CS", "IMAGE NUM 4")
    mr.add_new(0x09, "LO", "1.0")
    mr.add_new(0x0B, "DS", f"{spec.tr * 1000:.0f}")
    mr.add_new(0x0F, "SH", "FAST")
    mr.add_new(0x11, "SH", "No")
    mr.add_new(0x12, "SL", [0, 0, 0])
    mr.add_new(0x13, "SL", [0, 0, 0])
    mr.add_new(0x14, "IS", ["0", "0", "0"])
    mr.add_new(0x15, "FD", [0.0, -12.5, 40.0])
    mr.add_new(0x17, "DS", "1")
    mr.add_new(0x18, "IS", "2700")
    if spec.mosaic:
        mr.add_new(0x0A, "US", spec.mosaic)
        mr.add_new(0x29, "FD", [round(i * spec.tr / spec.mosaic, 2) for i in range(spec.mosaic)])
    csa = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    csa.add_new(0x08, "CS", "IMAGE NUM 4")
    csa.add_new(0x09, "LO", "20240101")
    csa.add_new(0x10, "OB", b"")  # per instance: the image header (restamped)
    csa.add_new(0x18, "CS", "MR")
    csa.add_new(0x19, "LO", "20240101")
    csa.add_new(0x20, "OB", _csa_blob("series", rng.choice((24_000, 32_000, 40_000)), str(r)))
    return ds


def _code(value: str, scheme: str, meaning: str) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _ref(sop_class: str, sop_instance: str) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


def _request(seed: int, p: int, s: int, description: str) -> Any:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.RequestedProcedureID = f"RP{p + 1:04d}{s + 1:03d}"
    item.ScheduledProcedureStepID = f"SPS{p + 1:04d}{s + 1:03d}"
    item.ScheduledProcedureStepDescription = description
    item.ScheduledProtocolCodeSequence = Sequence([_code("QA01", "99LOCAL", description)])
    return item


def iter_instances(
    plans: list[SeriesPlan], seed: int
) -> Iterator[tuple[str, Any, tuple[int, int, int]]]:
    """``(relative path, dataset, (patient, study, series))`` for every instance of
    ``plans``, in order. The dataset object is reused within a series: write it before
    asking for the next one."""
    for plan in plans:
        p, s, r = plan.patient, plan.study, plan.series
        info = {
            "id": f"PHANTOM{seed}-{p + 1:04d}",
            "name": f"PHANTOM^QA{p + 1:04d}",
            "birth_date": f"{1950 + (seed + p) % 50}0{1 + p % 9}1{p % 10}",
            "age": f"{(74 - (seed + p) % 50):03d}Y",
            "study_date": f"2024{1 + s % 12:02d}{10 + p % 18:02d}",
        }
        ds = _series_template(plan, seed, info)
        spec = plan.spec
        csa_image = _csa_blob("image", 9_000, f"{seed}/{p}/{s}/{r}")
        normal_axis = {"sag": 0, "tra": 2, "cor": 1}[spec.orientation]
        for k in range(plan.instances):
            sop = _uid("instance", seed, p, s, r, k)
            ds.SOPInstanceUID = sop
            ds.file_meta.MediaStorageSOPInstanceUID = sop
            ds.InstanceNumber = k + 1
            ds.InstanceCreationTime = ds.ContentTime = ds.AcquisitionTime = (
                f"10{16 + r * 6 + k // 60:02d}{k % 60:02d}.{k * 2500 % 1000000:06d}"
            )
            pos = [-128.0, -128.0, -60.0]
            pos[normal_axis] += (k - plan.instances / 2) * spec.thickness
            ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
            ds.SliceLocation = f"{pos[normal_axis]:.6f}"
            csa_tag = ds.private_block(0x0029, "SIEMENS CSA HEADER").get_tag(0x10)
            ds[csa_tag].value = csa_image[:-16] + f"{k:016d}".encode()
            ds.PixelData = _pixels(spec.rows, spec.cols, k)
            ds["PixelData"].VR = "OW"
            rel = f"P{p + 1:04d}/ST{s + 1:02d}/SE{r + 1:03d}/IM{k + 1:06d}.dcm"
            yield rel, ds, (p, s, r)
