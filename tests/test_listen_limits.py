"""The receiver's bounds, from the outside: idle peers, memory, refusals at start.

Issue 9 defects 6, 7 and 13 (listen's part). Generated instances only (no
../shared); the real sender is dcmtk's storescu where it is installed. No timing
thresholds: each check is "everything stored / the bound held / refused with
one line", with timeouts only to stop a hang.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import run_cli
from test_listen_hygiene import _associate_rq, _raw
from test_listen_support import (
    dcmtk,
    dcmtk_env,
    filed,
    immutable,
    listening,
    pynetdicom_send,
    wait_for,
)


@pytest.fixture(scope="module")
def instances192(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """192 generated instances (several patients, studies, series)."""
    out = tmp_path_factory.mktemp("generated")
    run_cli("corpus", str(out), "--instances", "192", "-q")
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "corpus.json")
    assert len(files) == 192
    return files


def storescu(port: int, files: list[Path]) -> subprocess.CompletedProcess[str]:
    argv = [dcmtk("storescu"), "-aet", "STORESCU", "-aec", "DICOM-REPACK", "127.0.0.1", str(port)]
    return subprocess.run(
        argv + [str(f) for f in files], capture_output=True, text=True, env=dcmtk_env(),
        timeout=120,
    )  # fmt: skip


def _idle_crowd(port: int, idle: int, half_open: int) -> Iterator[socket.socket]:
    rq = _associate_rq()
    for _ in range(idle):
        yield socket.create_connection(("127.0.0.1", port), timeout=30)
    for _ in range(half_open):
        s = _raw(port)
        s.sendall(rq[: len(rq) // 2])  # part of an A-ASSOCIATE-RQ, then nothing
        yield s


@pytest.mark.parametrize("extra", [(), ("--max-pending", "64")], ids=["default", "pending-64"])
def test_idle_and_half_open_sockets_never_deny_service(
    extra: tuple[str, ...], instances192: list[Path], tmp_path: Path
) -> None:
    """200 idle sockets and 20 half-sent association requests held open (more than
    --max-pending in the second case, so the oldest are pushed out) while storescu
    stores 192 instances: all 192 are stored."""
    data = tmp_path / "data"
    with listening(data, *extra) as listener:
        crowd: list[socket.socket] = []
        try:
            crowd.extend(_idle_crowd(listener.port, 200, 20))  # kept, to close, if one fails
            done = storescu(listener.port, instances192)
            assert done.returncode == 0, done.stderr
            # the crowd was still there while storescu ran (not merely timed out)
            alive = sum(1 for s in crowd if _still_open(s))
            assert alive >= (len(crowd) if not extra else 1)
        finally:
            for s in crowd:
                s.close()
        assert listener.stop() == 0
    assert len(filed(data)) == 192
    assert "192 instances filed" in listener.stderr


def _still_open(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("slots", [1, 2])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_idle_associations_make_room_for_a_new_one(
    slots: int, workers: str, instances192: list[Path], tmp_path: Path
) -> None:
    """Every slot held by an associated peer that sends nothing: an idle one is aborted
    (between messages, nothing lost) to admit a real sender. With 2 workers and 1 slot
    the idle association sits in the other worker (connections go to the less loaded)."""
    import select

    data = tmp_path / "data"
    opts = ("--max-associations", str(slots), "--idle-evict", "0.5", "--workers", workers)
    with listening(data, *opts) as listener:
        held: list[socket.socket] = []
        try:
            for _ in range(slots):
                held.append(s := _raw(listener.port))
                s.sendall(_associate_rq())
                _read_pdu(s, 0x02)  # A-ASSOCIATE-AC, then silence
            time.sleep(1.0)  # let them be idle longer than --idle-evict
            assert pynetdicom_send(listener.port, instances192[:1], echo=False) == [0]
            ready, _, _ = select.select(held, [], [], 30)
            assert len(ready) == 1  # exactly one was asked to leave
            _read_pdu(ready[0], 0x07)  # A-ABORT
        finally:
            for s in held:
                s.close()
        assert listener.stop() == 0
    assert "1 evicted" in listener.stderr


def _read_pdu(s: socket.socket, expected: int) -> bytes:
    s.settimeout(30)
    head = b""
    while len(head) < 6:
        chunk = s.recv(6 - len(head))
        assert chunk, "closed without a PDU"
        head += chunk
    assert head[0] == expected, head
    body = b""
    length = int.from_bytes(head[2:6], "big")
    while len(body) < length:
        chunk = s.recv(length - len(body))
        assert chunk
        body += chunk
    return body


# -- memory (defect 7) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "extra", [("--spill-above", "1"), ("--memory-budget", "0")], ids=["spill-all", "no-budget"]
)
def test_spooled_instances_are_filed_like_in_memory_ones(
    extra: tuple[str, ...], instances192: list[Path], tmp_path: Path
) -> None:
    """Every instance through the spool file (too large, or no budget left): filed byte
    for byte, recorded, and no spool file left behind."""
    from test_listen_support import records

    files = instances192[:24]
    ref_data, ref_log = tmp_path / "ref-data", tmp_path / "ref-log"
    with listening(ref_data, "--logdir", str(ref_log)) as listener:
        assert pynetdicom_send(listener.port, files) == [0] * len(files)
    data, log = tmp_path / "data", tmp_path / "log"
    with listening(data, "--logdir", str(log), *extra) as listener:
        assert pynetdicom_send(listener.port, files) == [0] * len(files)
        assert listener.stop() == 0
    assert f"{len(files)} spooled to disk" in listener.stderr
    got, ref = filed(data), filed(ref_data)
    assert sorted(got) == sorted(ref)
    assert all(got[uid].read_bytes() == ref[uid].read_bytes() for uid in got)
    assert records(log, data) == records(ref_log, ref_data)
    assert not [p for p in data.rglob("*") if p.is_file() and p.suffix != ".dcm"]


def _store_rq(message_id: int) -> bytes:
    """A C-STORE-RQ command set (MR Image Storage) announcing a data set."""
    from pydicom.dataset import Dataset
    from pynetdicom.dsutils import encode

    rq = Dataset()
    rq.CommandGroupLength = 0
    rq.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    rq.CommandField = 0x0001
    rq.MessageID = message_id
    rq.Priority = 0
    rq.CommandDataSetType = 0x0000
    rq.AffectedSOPInstanceUID = f"1.2.3.4.{message_id}"
    raw = encode(rq, True, True)
    assert raw is not None
    return bytes(raw)


def _pdata(cx: int, mch: int, payload: bytes) -> bytes:
    import struct

    pdv = struct.pack(">LBB", len(payload) + 2, cx, mch) + payload
    return struct.pack(">BBL", 4, 0, len(pdv)) + pdv


def _rss_kib(pid: int, field: str) -> tuple[int, int]:
    """``field`` (VmRSS, VmHWM) of ``pid`` and of its children, summed, from /proc;
    and how many processes that was."""
    total = 0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(c) for c in (task / "children").read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                total += int(line.split()[1])
    return total, len(pids)


#: listen's resident memory before any data arrives (interpreter, pydicom, pynetdicom),
#: per process (the parent and each worker), with margin; documented in docs/listen.md#bounds
BASELINE_MIB = 100


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "budget_mib"),
    [((), 256), (("--memory-budget", "128MiB", "--spill-above", "1GiB"), 128)],
    ids=["default", "budget-128MiB"],
)
def test_unfinished_data_sets_stay_within_the_memory_budget(
    extra: tuple[str, ...], budget_mib: int, tmp_path: Path
) -> None:
    """4 associations each send 200 MB of a data set and stall: peak resident memory
    stays under the budget plus the baseline; the bytes are in spool files, which are
    removed when the associations go away."""
    data = tmp_path / "data"
    per_assoc = 200 * 10**6
    chunk = 131072 - 6  # our announced maximum PDU, minus the PDV header
    payload = b"\x5a" * chunk
    pdu = _pdata(3, 0x00, payload)
    with listening(data, "--workers", "2", *extra) as listener:
        held = []
        try:
            for i in range(4):
                held.append(s := _raw(listener.port))
                s.sendall(_associate_rq())
                _read_pdu(s, 0x02)
                s.sendall(_pdata(3, 0x03, _store_rq(i + 1)))
                for _ in range(per_assoc // chunk):
                    s.sendall(pdu)
            spool = data / ".dicom-repack-incoming"

            def spooled() -> int:
                return sum(p.stat().st_size for p in spool.glob("*.part"))

            sent = (per_assoc // chunk) * chunk
            wait_for(lambda: spooled() >= 4 * sent, what="spool files")
            peak_kib, processes = _rss_kib(listener.proc.pid, "VmHWM")
            peak_mib = peak_kib / 1024
            bound = budget_mib + BASELINE_MIB * processes
            assert peak_mib <= bound, f"peak RSS {peak_mib:.0f} MiB in {processes} processes"
        finally:
            for s in held:
                s.close()
        wait_for(lambda: not list(spool.glob("*.part")), what="spool files removed")
        assert listener.stop() == 0
    assert "0 instances filed" in listener.stderr


# -- refusals at start (defect 13) --------------------------------------------------


def _refused(*args: str, env: dict[str, str] | None = None) -> str:
    done = run_cli("listen", "--bind", "127.0.0.1", *args, check=False, timeout=60, env=env)
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_bad_port_is_refused_with_one_line(tmp_path: Path) -> None:
    line = _refused("--port", "99999", "--datadir", str(tmp_path / "data"))
    assert "99999" in line
    env = dict(os.environ, DICOM_REPACK_LISTEN_PORT="eleven")
    line = _refused("--datadir", str(tmp_path / "data"), env=env)
    assert "DICOM_REPACK_LISTEN_PORT" in line and "eleven" in line
    env = dict(os.environ, DICOM_REPACK_LISTEN_MAX_ASSOCIATIONS="-3")
    assert "MAX_ASSOCIATIONS" in _refused("--port", "0", "--datadir", str(tmp_path), env=env)


def test_read_only_data_or_log_folder_is_refused_at_start(tmp_path: Path) -> None:
    with immutable(tmp_path / "ro") as ro:
        line = _refused("--port", "0", "--datadir", str(ro))
        assert "--datadir" in line and str(ro) in line
        line = _refused("--port", "0", "--datadir", str(tmp_path / "d"), "--logdir", str(ro))
        assert "--logdir" in line
        assert not list(ro.iterdir())
