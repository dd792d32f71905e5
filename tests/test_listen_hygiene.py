"""Hostile or broken clients never crash, block or starve the listener; limits hold.

No timing thresholds: each check is "the good sender still gets its instances
filed while the bad clients hang on", with timeouts only to stop a hang.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from pathlib import Path

import pytest

from dicom_repack.listen import wire as listen_wire
from helpers import dicom_files, open_files
from test_listen_support import filed, listening, pynetdicom_send, wait_for


def _associate_rq(calling: str = "RAW", called: str = "DICOM-REPACK") -> bytes:
    """A minimal valid A-ASSOCIATE-RQ (Verification + MR Image Storage), via pynetdicom."""
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
    from pynetdicom.presentation import build_context

    prim = A_ASSOCIATE()
    prim.application_context_name = "1.2.840.10008.3.1.1.1"
    prim.calling_ae_title = calling
    prim.called_ae_title = called
    cx1 = build_context("1.2.840.10008.1.1")
    cx1.context_id = 1
    cx3 = build_context("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.1")
    cx3.context_id = 3
    prim.presentation_context_definition_list = [cx1, cx3]
    ml = MaximumLengthNotification()
    ml.maximum_length_received = 16384
    prim.user_information = [ml]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(prim)
    return pdu.encode()


def _raw(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


@pytest.mark.slow
def test_garbage_midpdu_and_idle_clients_do_not_block_others(mr: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    files = dicom_files(mr)[:5]
    opts = ("--acse-timeout", "30", "--dimse-timeout", "30", "--network-timeout", "30")
    with listening(data, *opts) as listener:
        port = listener.port
        with contextlib.ExitStack() as clients:  # each closed however the test ends

            def client() -> socket.socket:
                return clients.enter_context(_raw(port))

            garbage = client()
            garbage.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)) * 8)
            client()  # idle: connects, says nothing
            half_rq = client()  # announces an A-ASSOCIATE-RQ and stops half-way
            rq = _associate_rq()
            half_rq.sendall(rq[: len(rq) // 2])
            half_pdata = client()  # associates, then stops inside a P-DATA-TF PDU
            half_pdata.sendall(_associate_rq())
            assert half_pdata.recv(6)[0] == 0x02  # A-ASSOCIATE-AC
            half_pdata.settimeout(0.5)
            try:
                while half_pdata.recv(65536):
                    pass
            except TimeoutError:
                pass
            half_pdata.sendall(struct.pack(">BBL", 4, 0, 100000) + b"\x00" * 1000)
            huge = client()  # claims a 4 GB PDU
            huge.sendall(struct.pack(">BBL", 1, 0, 0xFFFFFFF0))
            # the well-behaved sender is served while all of the above hang on
            assert pynetdicom_send(port, files) == [0] * 5
            assert pynetdicom_send(port, files[:1]) == [0]
            # garbage and the absurd length were answered with A-ABORT (or closed)
            for bad in (garbage, huge):
                bad.settimeout(30)
                reply = bad.recv(10)
                assert reply == b"" or reply[0] == 0x07
        assert listener.stop() == 0
    assert len(filed(data)) == 5
    assert listener.proc.returncode == 0


def test_idle_association_is_dropped_after_network_timeout(mr: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with listening(data, "--network-timeout", "0.5", "--acse-timeout", "0.5") as listener:
        with _raw(listener.port) as s:
            s.sendall(_associate_rq())
            assert s.recv(6)[0] == 0x02
            s.settimeout(30)
            chunks = []
            while True:  # the listener aborts and closes: the read ends, it does not hang
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        assert pynetdicom_send(listener.port, dicom_files(mr)[:1]) == [0]


def test_max_associations_rejects_the_extra_one(mr: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with listening(data, "--max-associations", "1") as listener:
        with _raw(listener.port) as first:
            first.sendall(_associate_rq())
            assert first.recv(6)[0] == 0x02  # accepted, and held open
            with _raw(listener.port) as second:
                second.sendall(_associate_rq())
                reply = second.recv(10)
                assert reply[0] == 0x03, reply  # A-ASSOCIATE-RJ
                assert reply[7:10] == bytes((2, 3, 2))  # transient, local limit exceeded
        # the slot frees when the first goes away
        for _ in range(50):
            try:
                assert pynetdicom_send(listener.port, dicom_files(mr)[:1]) == [0]
                break
            except ConnectionRefusedError:
                import time

                time.sleep(0.1)
        else:
            pytest.fail("the association slot was never freed")


def test_command_set_round_trip_with_pynetdicom() -> None:
    """Our C-STORE-RSP decodes with pynetdicom; pynetdicom's C-STORE-RQ decodes with ours."""
    from pydicom.dataset import Dataset
    from pynetdicom.dsutils import decode, encode

    rq = Dataset()
    rq.CommandGroupLength = 0
    rq.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    rq.CommandField = 0x0001
    rq.MessageID = 7
    rq.Priority = 0
    rq.CommandDataSetType = 0x0000
    rq.AffectedSOPInstanceUID = "1.2.3.4.5"
    raw = encode(rq, True, True)
    assert raw is not None
    cmd = listen_wire.decode_command(raw)
    assert (cmd.field, cmd.message_id, cmd.has_dataset) == (1, 7, True)
    assert cmd.sop_instance_uid == "1.2.3.4.5"
    rsp = decode(__import__("io").BytesIO(listen_wire.store_response(cmd, 0xA700, "disk full")),
                 True, True)  # fmt: skip
    assert rsp.CommandField == 0x8001 and rsp.MessageIDBeingRespondedTo == 7
    assert rsp.Status == 0xA700 and rsp.ErrorComment == "disk full"
    assert rsp.AffectedSOPInstanceUID == "1.2.3.4.5"
    assert rsp.CommandGroupLength == len(listen_wire.store_response(cmd, 0xA700, "disk full")) - 12
    with pytest.raises(ValueError):
        listen_wire.decode_command(raw[:-3])


def test_series_hook_words_are_never_shell_parsed() -> None:
    """Tag values end up inside argv words, not in a shell command line."""
    from dicom_repack.listen.series_watch import SeriesEvent, command_argv

    ev = SeriesEvent("/data/a b; rm -rf ~", "$(id)", "1.2", "1.2.3", 4, 0.0, 0.0)
    argv = command_argv("notify --dir {folder} --pid={patient_id} {series_uid}", ev)
    assert argv == ["notify", "--dir", "/data/a b; rm -rf ~", "--pid=$(id)", "1.2.3"]


def test_associations_leave_no_index_connection_open(mr: Path, tmp_path: Path) -> None:
    """One Repacker per receiving process, each association's thread filing through an
    index connection of its own and closing it when the association ends: after many
    associations the worker holds no more of the index's files than after the first."""
    files = dicom_files(mr)[:2]
    data, log = tmp_path / "data", tmp_path / "log"
    index = str(log / "dicom-repack-index.sqlite")
    with listening(data, "--logdir", str(log), "--workers", "1") as listener:
        pid = listener.proc.pid
        held: list[list[str]] = []
        for n in range(12):
            assert pynetdicom_send(listener.port, files, echo=False) == [0, 0]
            # the association's thread closes its connections as it ends, after the
            # sender saw the release: wait for that (only a hang is timed out)
            wait_for(
                lambda: open_files(pid, index) == [index + ".sop-lock"],
                what=f"the index's connections closed after association {n + 1}",
            )
            held.append(open_files(pid, index))
        # the lock file is held for the process's life (core/sop_lock.py), nothing else
        assert held == [[index + ".sop-lock"]] * 12
    assert listener.proc.returncode == 0, listener.stderr
