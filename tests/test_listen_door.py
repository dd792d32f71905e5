"""The receiver's door against slow, greedy or hostile peers (issue 22, listen's part).

Each test starts ``dicom-repack listen`` on 127.0.0.1 through the console script and
talks to it with raw PDUs over real sockets (or real HTTP). No timing thresholds:
each check is "the bound held / the peer was cut / the process ended", with
timeouts only to stop a hang.
"""

from __future__ import annotations

import select
import socket
from pathlib import Path

import pytest

from helpers import dicom_files
from test_listen_hygiene import _associate_rq, _raw
from test_listen_limits import _pdata, _read_pdu, _store_rq
from test_listen_support import filed, listening, pynetdicom_send, wait_for


def _cut_off(s: socket.socket, fragment: bytes, every: float, tries: int) -> bool:
    """Send ``fragment`` every ``every`` s until the listener aborts or closes the
    connection (True), or ``tries`` fragments went unanswered (False)."""
    for _ in range(tries):
        try:
            s.sendall(fragment)
        except OSError:  # reset: the listener closed it
            return True
        ready, _, _ = select.select([s], [], [], every)
        if ready:
            try:
                reply = s.recv(10)
            except OSError:
                return True
            return reply == b"" or reply[0] == 0x07  # closed, or A-ABORT
    return False


# -- 1. a message trickled in tiny PDUs ------------------------------------------------


@pytest.mark.slow
def test_a_trickled_message_loses_its_association(mr: Path, tmp_path: Path) -> None:
    """A peer that sends a C-STORE's data set two bytes at a time, each PDU well inside
    --dimse-timeout, is aborted once the whole message outlasts --message-timeout (plus
    what its size earns at --min-rate); its slot goes to a real sender. Before, it held
    the association for as long as it kept trickling."""
    data = tmp_path / "data"
    opts = ("--message-timeout", "2", "--dimse-timeout", "30", "--max-associations", "1")
    with listening(data, *opts, "--idle-evict", "30") as listener:
        with _raw(listener.port) as s:
            s.sendall(_associate_rq())
            _read_pdu(s, 0x02)
            s.sendall(_pdata(3, 0x03, _store_rq(1)))
            # 2 bytes every 0.5 s: at most 120 of them (60 s) before the test gives up
            assert _cut_off(s, _pdata(3, 0x00, b"\x00\x00"), 0.5, 120), "still trickling"
        assert pynetdicom_send(listener.port, dicom_files(mr)[:1]) == [0]
        assert listener.stop() == 0
    assert len(filed(data)) == 1
    assert "message not complete in time" not in listener.stderr  # logged at info only
    assert "Traceback" not in listener.stderr


# -- 2. association requests that are not ----------------------------------------------


def _rq_header(length: int) -> bytes:
    import struct

    return struct.pack(">BBL", 0x01, 0, length)


def test_an_oversized_association_request_is_refused_at_its_header(tmp_path: Path) -> None:
    """A connection announcing a 512 KiB A-ASSOCIATE-RQ (a real one is a few KiB) is
    aborted as soon as its header arrives, not held until --acse-timeout."""
    with listening(tmp_path / "data", "--acse-timeout", "30") as listener:
        with _raw(listener.port) as s:
            s.sendall(_rq_header(512 << 10) + b"\x00" * 1000)
            _read_pdu(s, 0x07)  # A-ABORT (before: nothing until the ARTIM timer closed it)
        assert listener.stop() == 0


def test_waiting_association_requests_count_in_the_memory_budget(mr: Path, tmp_path: Path) -> None:
    """40 connections each send 200 KiB of a declared 250 KiB request and wait: past
    16 KiB each, their buffers come out of --memory-budget (1 MiB here), so all but
    the few that fit are rejected at once (A-ASSOCIATE-RJ), and a real sender is
    still served. Before, all 40 were held (up to 1 MiB each, 1,024 per worker)."""
    n, sent = 40, 200 << 10
    opts = ("--workers", "1", "--memory-budget", "1MiB", "--acse-timeout", "60")
    with listening(tmp_path / "data", *opts) as listener:
        conns: list[socket.socket] = []
        try:
            for _ in range(n):
                conns.append(s := _raw(listener.port))
                s.sendall(_rq_header(250 << 10) + b"\x00" * sent)
            answered: set[int] = set()

            def refused() -> int:
                for i, s in enumerate(conns):
                    if i in answered:
                        continue
                    ready, _, _ = select.select([s], [], [], 0)
                    if ready:
                        reply = s.recv(10)
                        assert reply == b"" or reply[0] == 0x03, reply  # closed or RJ
                        answered.add(i)
                return len(answered)

            fit = (1 << 20) // (sent - (16 << 10))  # requests the budget can hold
            wait_for(lambda: refused() >= n - fit, what="requests over the budget refused")
            assert pynetdicom_send(listener.port, dicom_files(mr)[:1]) == [0]
        finally:
            for s in conns:
                s.close()
        assert listener.stop() == 0
    assert "Traceback" not in listener.stderr


# -- 4. the spool: --spill-above at any value, a dead worker's files -------------------


def test_spill_above_below_a_mebibyte_takes_effect(mr: Path, tmp_path: Path) -> None:
    """--spill-above under the 1 MiB reservation grain spools every instance larger
    than it (before, memory was reserved a mebibyte at a time and nothing spilled)."""
    files = dicom_files(mr)
    below = min(f.stat().st_size for f in files) // 2
    data = tmp_path / "data"
    with listening(data, "--spill-above", str(below)) as listener:
        assert pynetdicom_send(listener.port, files) == [0] * len(files)
        assert listener.stop() == 0
    assert f"{len(files)} spooled to disk" in listener.stderr
    assert len(filed(data)) == len(files)
    assert not list(data.rglob("*.part"))


def test_a_killed_workers_spool_files_go_when_it_is_replaced(tmp_path: Path) -> None:
    """A worker killed (-9) while spooling an instance: its spool file is removed when
    the worker is replaced, not at the next start of listen."""
    import os
    import signal

    data = tmp_path / "data"
    spool = data / ".dicom-repack-incoming"
    with listening(data, "--workers", "2", "--spill-above", "1") as listener:
        with _raw(listener.port) as s:
            s.sendall(_associate_rq())
            _read_pdu(s, 0x02)
            s.sendall(_pdata(3, 0x03, _store_rq(1)) + _pdata(3, 0x00, b"\x00" * 4096))
            wait_for(lambda: list(spool.glob("*.part")), what="a spool file")
            (part,) = spool.glob("*.part")
            os.kill(int(part.name.split("-", 1)[0]), signal.SIGKILL)
            wait_for(lambda: "replacing it" in listener.stderr, what="the worker replaced")
            wait_for(lambda: not part.exists(), what="the dead worker's spool file removed")
        assert listener.stop() == 1  # a worker was lost: the exit status says so


# -- 5. the shutdown grace is a hard bound ---------------------------------------------


def _fill_pipe(pid: int, fd: int) -> None:
    """Fill the pipe behind ``pid``'s descriptor ``fd`` (a reader that stopped reading)."""
    import os

    w = os.open(f"/proc/{pid}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
    try:
        while True:
            os.write(w, b"\n" * 65536)
    except BlockingIOError:
        pass
    finally:
        os.close(w)


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_ends_listen_within_the_grace_even_with_a_stuck_handler(
    workers: str, mr: Path, tmp_path: Path
) -> None:
    """--log-ndjson to a stdout nobody reads: the association filing an instance blocks
    writing its line, for ever. SIGTERM with --shutdown-grace 3 still ends the process
    (one line says why), instead of waiting on that thread and then on the same pipe.
    With workers, the stuck worker is killed and the parent, whose summary line would
    block on the same pipe, ends as well."""
    import signal
    import subprocess
    import threading

    data = tmp_path / "data"
    with listening(data, "--log-ndjson", "--shutdown-grace", "3", "--workers", workers) as li:
        _fill_pipe(li.proc.pid, 1)
        statuses: list[int] = []
        sender = threading.Thread(
            target=lambda: statuses.extend(pynetdicom_send(li.port, dicom_files(mr)[:1])),
            daemon=True,
        )
        sender.start()
        wait_for(lambda: len(filed(data)) == 1, what="the instance filed (its line then blocks)")
        li.proc.send_signal(signal.SIGTERM)
        try:
            li.proc.wait(timeout=3 + 30)  # not a speed check: only "it ended at all"
        except subprocess.TimeoutExpired:
            raise AssertionError("listen still running 33 s after SIGTERM") from None
        sender.join(timeout=120)
    assert "Traceback" not in li.stderr
    assert "shutdown grace" in li.stderr


# -- 3. --http: bounded, quiet, and only for its own names -----------------------------


def _http(port: int, path: str, host: str | None) -> int:
    """The status of GET ``path`` with this Host header (None: no Host header);
    0 when nothing answers."""
    try:
        conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    except ConnectionRefusedError:
        return 0
    with conn as s:
        head = f"GET {path} HTTP/1.0\r\n" + (f"Host: {host}\r\n" if host is not None else "")
        s.sendall((head + "\r\n").encode())
        reply = b""
        while b"\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0


@pytest.mark.slow
def test_http_answers_only_its_own_host_names(tmp_path: Path) -> None:
    """A page on another name (DNS rebinding: evil.example resolving to 127.0.0.1) gets
    421; the bound address, localhost, an IP literal and no Host at all are served."""
    from test_listen_support import free_port

    port = free_port()
    with listening(tmp_path / "data", "--http", f"127.0.0.1:{port}", "--workers", "1") as li:
        wait_for(lambda: _http(port, "/healthz", f"127.0.0.1:{port}") == 200, what="/healthz")
        for host in ("evil.example", f"evil.example:{port}", f"localhost.evil.example:{port}"):
            assert _http(port, "/api/status", host) == 421, host
        served: list[str | None] = [f"127.0.0.1:{port}", f"localhost:{port}", "localhost"]
        for name in [*served, f"[::1]:{port}", "LOCALHOST.", None]:
            assert _http(port, "/api/status", name) == 200, name
        assert li.stop() == 0
    assert "Traceback" not in li.stderr


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


@pytest.mark.slow
def test_http_bounds_slow_clients_and_stays_quiet(tmp_path: Path) -> None:
    """200 clients that send half a request line and wait cost at most the connection
    cap in threads (before: a thread each, for ever); 50 that reset the connection after
    their request leave no traceback on stderr; once the slow ones time out, the page
    answers again."""
    import struct

    from test_listen_support import free_port

    port = free_port()
    with listening(tmp_path / "data", "--http", f"127.0.0.1:{port}", "--workers", "1") as li:
        wait_for(lambda: _http(port, "/healthz", None) == 200, what="/healthz")
        before = _threads(li.proc.pid)
        slow: list[socket.socket] = []
        try:
            for _ in range(200):
                slow.append(s := socket.create_connection(("127.0.0.1", port), timeout=30))
                s.sendall(b"GET /api/sta")
            # accepted in order: once this one is answered, all 200 were accepted
            assert _http(port, "/healthz", None) in (200, 503)
            assert _threads(li.proc.pid) - before <= 32
            for _ in range(50):  # ask for the page, then reset instead of reading it
                with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            wait_for(lambda: _http(port, "/healthz", None) == 200, what="the page again")
        finally:
            for s in slow:
                s.close()
        assert li.stop() == 0
    assert "Traceback" not in li.stderr
    assert "Error" not in li.stderr
