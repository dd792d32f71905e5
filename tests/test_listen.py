"""``dicom-repack listen`` from the outside: a real listener process, pynetdicom as sender.

dcmtk interoperability (storescu, and the storescp end-of-study deployment) is
in test_listen_dcmtk.py; hostile clients and limits in test_listen_hygiene.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from helpers import dicom_files, run_cli, series_groups
from test_listen_support import (
    assert_same_datasets,
    filed,
    immutable,
    listening,
    pynetdicom_send,
    records,
    wait_for,
)

CORPUS_NAMES = ("mr-explicit", "mr-implicit")


@pytest.fixture(scope="session")
def batch_reference(
    generated: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, Path]]:
    """Each generated corpus through the batch door: (datadir, logdir). The first instance
    (by name) of each series is filed alone first, so the series record's header dump,
    which the first instance of a series writes, comes from the same instance in every
    door (the senders send in name order)."""
    out: dict[str, tuple[Path, Path]] = {}
    for name in CORPUS_NAMES:
        base = tmp_path_factory.mktemp(f"batch-{name}")
        data, log = base / "data", base / "log"
        for group in series_groups(dicom_files(generated[name])).values():
            run_cli("--xcrdirfile", str(group[0]), "--datadir", str(data), "--logdir", str(log))
        run_cli("batch", str(generated[name]), "--datadir", str(data), "--logdir", str(log),
                "--no-progress")  # fmt: skip
        out[name] = (data, log)
    return out


@pytest.mark.parametrize("corpus", CORPUS_NAMES)
def test_pynetdicom_sender_files_every_instance_like_batch(
    corpus: str,
    generated: dict[str, Path],
    batch_reference: dict[str, tuple[Path, Path]],
    tmp_path: Path,
) -> None:
    files = dicom_files(generated[corpus])
    data, log = tmp_path / "data", tmp_path / "log"
    ndjson = tmp_path / "outcomes.ndjson"
    with listening(data, "--logdir", str(log), "--ndjson", str(ndjson)) as listener:
        assert pynetdicom_send(listener.port, files[:1]) == [0]
        statuses = pynetdicom_send(listener.port, files[1:])
        assert set(statuses) == {0}
        assert listener.stop() == 0
    assert_same_datasets(files, data)
    batch_data, batch_log = batch_reference[corpus]
    ours = records(log, data)
    assert len(ours) > len(files)  # one per instance, plus patient, study and series records
    assert ours == records(batch_log, batch_data)
    # the same relative tree as the batch door
    rel = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.dcm"))
    assert rel == sorted(p.relative_to(batch_data).as_posix() for p in batch_data.rglob("*.dcm"))
    lines = [json.loads(x) for x in ndjson.read_text().splitlines()]
    per_instance = [x for x in lines if "SOPInstanceUID" in x]
    assert len(per_instance) == len(files)
    assert all(x["error"] is None and x["CallingAETitle"] == "PYSCU" for x in per_instance)
    assert lines[-1]["event"] == "summary" and lines[-1]["stored"] == len(files)
    assert "instances filed" in listener.stderr


def test_same_instance_twice_is_one_file(mr: Path, tmp_path: Path) -> None:
    one = dicom_files(mr)[:1]
    data, log = tmp_path / "data", tmp_path / "log"
    with listening(data, "--logdir", str(log)) as listener:
        assert pynetdicom_send(listener.port, one + one) == [0, 0]
        assert pynetdicom_send(listener.port, one) == [0]
    assert len(list(data.rglob("*.dcm"))) == 1
    assert not [p for p in data.rglob("*") if p.is_file() and p.suffix != ".dcm"]
    assert len(list((log / "seriesData").rglob("*.dcm.json"))) == 1


def test_unwritable_datadir_refuses_at_start(mr: Path, tmp_path: Path) -> None:
    """A data folder that cannot be created (its parent is a file: root ignores modes)
    is refused at start with one line, instead of failing every C-STORE later."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    done = run_cli("listen", "--bind", "127.0.0.1", "--port", "0",
                   "--datadir", str(blocker / "data"), check=False, timeout=60)  # fmt: skip
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert "--datadir" in line and "blocker" in line
    assert blocker.read_text() == "not a folder"


def test_datadir_unwritable_later_answers_failure_and_leaves_nothing(
    mr: Path, tmp_path: Path
) -> None:
    """The data folder becomes unwritable while listening: every C-STORE is answered
    with a failure, nothing is left behind, and the listener keeps serving."""
    data = tmp_path / "data"
    with listening(data) as listener, immutable(data):
        statuses = pynetdicom_send(listener.port, dicom_files(mr)[:2])
        assert listener.stop() == 0
    assert all(s != 0 and s >= 0xA700 for s in statuses), statuses
    assert not [p for p in data.rglob("*") if p.is_file()]
    assert "2 failed" in listener.stderr


def test_logdir_unwritable_later_answers_failure_and_unfiles(mr: Path, tmp_path: Path) -> None:
    """The file is placed, then its records fail: the file must not stay without them."""
    data, log = tmp_path / "data", tmp_path / "log"
    with listening(data, "--logdir", str(log)) as listener, immutable(log):
        statuses = pynetdicom_send(listener.port, dicom_files(mr)[:2])
    assert all(s != 0 for s in statuses), statuses
    assert not [p for p in data.rglob("*") if p.is_file()], "partial output left"


def test_allow_list_refuses_other_calling_ae(mr: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with listening(data, "--allow-calling", "GOOD,OTHER") as listener:
        with pytest.raises(ConnectionRefusedError):
            pynetdicom_send(listener.port, dicom_files(mr)[:1], calling="EVIL")
        assert pynetdicom_send(listener.port, dicom_files(mr)[:1], calling="GOOD") == [0]
        assert listener.stop() == 0
    assert len(filed(data)) == 1
    assert "1 rejected" in listener.stderr


def test_environment_configures_like_flags(mr: Path, tmp_path: Path) -> None:
    env = dict(os.environ, DICOM_REPACK_LISTEN_ALLOW_CALLING="ENVAE",
               DICOM_REPACK_LISTEN_LAYOUT="px")  # fmt: skip
    data = tmp_path / "data"
    with listening(data, env=env) as listener:
        with pytest.raises(ConnectionRefusedError):
            pynetdicom_send(listener.port, dicom_files(mr)[:1], calling="PYSCU")
        assert pynetdicom_send(listener.port, dicom_files(mr)[:1], calling="ENVAE") == [0]
    (dst,) = filed(data).values()
    # px layout: series folder is "<SeriesDescription>-<hash>", no padded series number
    assert not dst.parent.name.startswith("0000")


def test_sigterm_finishes_and_exits_zero_with_summary(mr: Path, tmp_path: Path) -> None:
    """An idle open association does not hold the shutdown; the summary is printed."""
    from dicom_repack.bench.scu import finish, storage_scu

    data = tmp_path / "data"
    with listening(data) as listener:
        assert pynetdicom_send(listener.port, dicom_files(mr)[:3]) == [0, 0, 0]
        ae = storage_scu("IDLE")
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", listener.port)
        assert assoc.is_established
        try:
            assert listener.stop() == 0
        finally:
            finish(assoc, abort=True)
    assert "3 instances filed" in listener.stderr
    assert "2 associations" in listener.stderr


def test_series_idle_runs_command_with_folder_and_uids(mr: Path, tmp_path: Path) -> None:
    out = tmp_path / "hook.txt"
    script = "import sys; open(sys.argv[1], 'a').write(' '.join(sys.argv[2:]) + '\\n')"
    command = f'{sys.executable} -c "{script}" {out} {{folder}} {{study_uid}} {{series_uid}} {{instances}}'
    data = tmp_path / "data"
    files = dicom_files(mr)[:4]
    with listening(data, "--series-idle", "0.3", "--on-series-complete", command) as listener:
        assert pynetdicom_send(listener.port, files) == [0] * 4
        wait_for(out.exists, what="the series hook")
        assert listener.stop() == 0
    (line,) = out.read_text().splitlines()
    folder, study, series, count = line.split(" ")
    dst = next(iter(filed(data).values()))
    assert folder == str(dst.parent)
    import pydicom

    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert (study, series, count) == (ds.StudyInstanceUID, ds.SeriesInstanceUID, "4")


def test_series_idle_without_command_writes_event_line(mr: Path, tmp_path: Path) -> None:
    ndjson = tmp_path / "events.ndjson"
    data = tmp_path / "data"
    with listening(data, "--series-idle", "0.2", "--ndjson", str(ndjson)) as listener:
        assert pynetdicom_send(listener.port, dicom_files(mr)[:2]) == [0, 0]

        def has_event() -> bool:
            return ndjson.exists() and "series-complete" in ndjson.read_text()

        wait_for(has_event, what="the series-complete event")
    events = [json.loads(x) for x in ndjson.read_text().splitlines()]
    (ev,) = [e for e in events if e.get("event") == "series-complete"]
    assert ev["instances"] == 2 and Path(ev["folder"]).is_dir()


def test_tls_round_trip(mr: Path, tmp_path: Path) -> None:
    import datetime
    import ssl

    crypto = pytest.importorskip("cryptography")
    del crypto
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem, key_pem = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert_pem))
    data = tmp_path / "data"
    files = dicom_files(mr)[:3]
    extra = ("--tls-cert", str(cert_pem), "--tls-key", str(key_pem))
    with listening(data, *extra) as listener:
        assert pynetdicom_send(listener.port, files, tls=(client, "localhost")) == [0, 0, 0]
        # a plain-TCP client gets nowhere, and does not hurt the server
        with pytest.raises(ConnectionRefusedError):
            pynetdicom_send(listener.port, files[:1])
        assert pynetdicom_send(listener.port, files[:1], tls=(client, "localhost")) == [0]
        assert listener.stop() == 0
    assert_same_datasets(files, data)
