"""The public API: the names ``dicom_repack`` exports, loaded lazily, typed, as documented.

docs/api.md documents them; this file pins them, so that removing or renaming one is
a decision (and a failing test), not an accident.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import dicom_repack
from helpers import dicom_files, open_files, sqlite_db

EXPORTED = [
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


def test_exported_names_are_pinned() -> None:
    assert dicom_repack.__all__ == EXPORTED
    for name in EXPORTED:
        value = getattr(dicom_repack, name)
        assert value.__module__.startswith("dicom_repack.core."), name
        assert value.__doc__, f"{name} has no docstring"
    assert set(EXPORTED) <= set(dir(dicom_repack))
    with pytest.raises(AttributeError, match="no attribute 'repack_path'"):
        dicom_repack.repack_path  # noqa: B018 - the attribute access is the test
    namespace: dict[str, object] = {}
    exec("from dicom_repack import *", namespace)
    assert set(EXPORTED) <= set(namespace)


def test_importing_the_package_loads_none_of_them() -> None:
    """The per-instance door imports ``dicom_repack`` once per instance: the API is
    imported on first use only (``python -X importtime -c 'import dicom_repack'``
    shows one module)."""
    code = (
        "import sys, dicom_repack; "
        "print(sorted(m for m in sys.modules if m.startswith('dicom_repack')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['dicom_repack']"
    code = "import sys, dicom_repack; dicom_repack.Layout; print('pydicom' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", "the layout needs no pydicom"


def test_the_package_is_typed() -> None:
    assert (Path(dicom_repack.__file__).parent / "py.typed").is_file()


def test_documented_example_runs(mr: Path, tmp_path: Path) -> None:
    """The module docstring's and docs/api.md's example, on a generated instance."""
    from dicom_repack import Config, Layout, Outcome, Repacker, RepackError, read_header

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    first, second = dicom_files(mr)[:2]
    src = incoming / first.name
    src.write_bytes(first.read_bytes())

    with Repacker(
        Config(str(tmp_path / "data"), logdir=str(tmp_path / "log"), layout=Layout.rx())
    ) as repacker:
        outcome = repacker.repack_path(str(src), move=True)
        assert isinstance(outcome, Outcome)
        assert outcome.ok and outcome.error is None, outcome.error
        assert outcome.dst is not None and Path(outcome.dst).is_file() and not src.exists()
        assert outcome.patient_id == "PH1000"
        assert (tmp_path / "log" / "patientData" / "PH1000.json").is_file()

        header = read_header(str(second), ("PatientID", "SeriesDescription", "AccessionNumber"))
        assert header.get("PatientID") == "PH1000"
        assert header.get("SeriesDescription") == "t1_mprage_sag"
        assert header.get("StationName") is None  # not asked for

        bad = incoming / "notes.txt"
        bad.write_text("not DICOM")
        failed = repacker.repack_path(str(bad))
        assert not failed.ok and failed.skipped and str(bad) in (failed.error or "")
        with pytest.raises(RepackError):
            read_header(str(bad), ("PatientID",))

    plan = Layout.px().plan(header.values)
    assert plan.relpath.count("/") == 3


def test_every_error_has_one_base_and_a_stable_unique_code() -> None:
    """The NDJSON ``error_kind`` and the metrics' ``kind`` are these codes (a contract,
    docs/api.md): pinned here, so renaming a class cannot change what users read."""
    # in a process of its own: importing every module brings pynetdicom, which adds UIDs
    # to pydicom's dictionary for the rest of this process (tests/test_dump.py compares it)
    script = (
        "import importlib, json, pkgutil, dicom_repack\n"
        "from dicom_repack.core.errors import DicomRepackError\n"
        "for info in pkgutil.walk_packages(dicom_repack.__path__, 'dicom_repack.'):\n"
        "    if not info.name.endswith(('__main__', '.dictionary', '.private_dictionary')):\n"
        "        importlib.import_module(info.name)\n"
        "def below(cls):\n"
        "    return [cls] + [s for c in cls.__subclasses__() for s in below(c)]\n"
        "print(json.dumps({c.__name__: c.code for c in below(DicomRepackError)}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    codes: dict[str, str] = json.loads(done.stdout)
    assert len(set(codes.values())) == len(codes), codes
    pinned = {
        "RepackError": "RepackError",
        "SourceError": "SourceError",
        "NotDicomError": "NotDicomError",
        "NotRegularFileError": "NotRegularFileError",
        "TruncatedError": "TruncatedError",
        "MissingElementError": "MissingElementError",
        "PlacementError": "PlacementError",
        "UnsafePathError": "UnsafePathError",
        "RecordError": "RecordError",
        "TemplateError": "TemplateError",
        "IndexFailure": "IndexFailure",
        "IndexRefused": "IndexRefused",
    }
    assert {k: codes[k] for k in pinned} == pinned
    api = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    for code in pinned.values():
        assert f"`{code}`" in api, f"docs/api.md does not list the code {code}"


def test_one_repacker_shared_by_threads_with_a_connection_each(mr: Path, tmp_path: Path) -> None:
    """``Repacker(config, threads=True)``: a receiver's one Repacker per process. Every
    thread files through an index connection of its own (a SQLite connection may not
    cross threads) and closes it with ``close_thread`` when it is done."""
    import threading

    from dicom_repack import Config, Repacker

    files = dicom_files(mr)[:6]
    log = tmp_path / "log"
    index = str(log / "dicom-repack-index.sqlite")
    errors: list[str | None] = []
    with Repacker(Config(str(tmp_path / "data"), str(log)), threads=True) as repacker:

        def work(batch: list[Path]) -> None:
            try:
                for f in batch:
                    errors.append(repacker.repack_path(str(f)).error)
            finally:
                repacker.close_thread()

        for round_ in range(3):  # threads come and go, as associations do
            threads = [threading.Thread(target=work, args=([f],)) for f in files]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert errors == [None] * len(files) * (round_ + 1), errors
            assert index not in open_files("self", index), "a thread's connection left open"
    assert open_files("self", index) in ([], [index + ".sop-lock"])
    with sqlite_db(index) as db:
        assert db.execute("SELECT count(*) FROM instances").fetchone()[0] == len(files)
