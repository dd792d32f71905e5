"""No line forged: control characters in a file name or a UID are escaped in every line the
doors print and listen logs (issue 22, small 7; core/errors.py ``one_line``).

(Its own file, after test_dump.py: pynetdicom, imported here to send, adds UIDs to
pydicom's UID dictionary, which test_dump compares with the generated one.)
"""

from __future__ import annotations

import warnings
from pathlib import Path

from helpers import run_cli
from test_doors_faults import make_instance

FORGED = "dicom-repack: 1 instances filed"


def test_a_newline_in_a_file_name_or_uid_forges_no_line(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    not_dicom = src / f"x\n{FORGED}\r\x1b[2K.dcm"
    not_dicom.write_text("not DICOM")
    no_patient = make_instance(src / f"y\n{FORGED}.dcm", sop=f"1.2.3\n{FORGED}", PatientID="")
    data = tmp_path / "data"
    for args in (
        ["--xcrdirfile", str(not_dicom)],
        ["--xcrdirfile", str(no_patient)],
        ["batch", str(src), "--no-progress", "--strict"],
    ):
        proc = run_cli(*args, "-d", str(data), check=False)
        assert proc.returncode == 1
        for line in (proc.stderr + proc.stdout).splitlines():
            assert not line.startswith(FORGED), proc.stderr
            assert "\r" not in line and "\x1b" not in line
        assert "\\n" + FORGED in proc.stderr


def test_listen_log_lines_escape_a_newline_in_a_uid(tmp_path: Path) -> None:
    from test_listen_support import listening, pynetdicom_send

    sent = make_instance(tmp_path / "in.dcm", sop="1.2.3.4", PatientID="", PatientName="A\nB")
    forged = make_instance(
        tmp_path / "in2.dcm", sop=f"1.2.3.5\n{FORGED}", PatientID=""
    )  # fmt: skip
    with listening(tmp_path / "data", "--log-level", "info") as listener:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom: "Invalid value for VR UI" (it is)
            statuses = pynetdicom_send(listener.port, [sent, forged])
        assert listener.stop() == 0
    assert all(s != 0 for s in statuses), statuses
    lines = listener.stderr.splitlines()
    assert not [ln for ln in lines if ln.startswith(FORGED)], listener.stderr
    assert any("\\n" + FORGED in ln for ln in lines), listener.stderr
