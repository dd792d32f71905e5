"""Helpers for the ``dicom-repack listen`` tests (no tests here).

A running listener is a subprocess started with ``--port 0`` on 127.0.0.1; the
port is read from its "listening on" line, so tests never race for a port.
Every listener is stopped (SIGTERM, then SIGKILL by pid) when its ``with`` ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dicom_repack.bench.feed import find_dcmtk
from helpers import dicom_repack_exe


def dcmtk(tool: str) -> str:
    """Path of a dcmtk tool (not pynetdicom's same-named app), or skip."""
    exe = find_dcmtk(tool)
    if exe is None:
        pytest.skip(f"dcmtk's {tool} is not installed (apt-get install dcmtk)")
    return exe


def dcmtk_env() -> dict[str, str]:
    """dcmtk 3.6.7 keeps Nagle's algorithm on unless TCP_NODELAY=1 is in its environment."""
    return dict(os.environ, TCP_NODELAY="1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Listener:
    """A running ``dicom-repack listen``; stderr is collected in the background."""

    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.port = port
        self.stderr_lines: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait: the graceful path under test."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._reader.join(timeout=10)
        return rc


@contextmanager
def listening(datadir: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[Listener]:
    """Start a listener on 127.0.0.1 (free port) and stop it, whatever happens."""
    argv = [dicom_repack_exe(), "listen", "--bind", "127.0.0.1", "--port", "0"]
    argv += ["--datadir", str(datadir), *extra]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        if "listening on" not in first:
            proc.kill()
            out, err = proc.communicate(timeout=30)
            pytest.fail(f"listen did not start: {first}{err}{out}")
        port = int(first.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        listener = Listener(proc, port)
        yield listener
    finally:
        stop_process(proc)
        close_pipes(proc, listener if "listener" in locals() else None)


def stop_process(
    proc: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float = 60
) -> None:
    """SIGTERM a server a test started (if still running), wait, kill it after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def close_pipes(
    proc: subprocess.Popen[str] | subprocess.Popen[bytes], listener: Listener | None = None
) -> None:
    """Close a finished server's pipes (after its stderr reader drained them): an
    unclosed pipe is a ResourceWarning, an error under ``pytest -W error``."""
    if listener is not None:
        listener._reader.join(timeout=10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@contextmanager
def immutable(folder: Path) -> Iterator[Path]:
    """``folder`` (created) made immutable with chattr +i for the block: nothing can be
    created in it, not even by root, who ignores modes. Skips where chattr is refused."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("chattr is not installed")
    done = subprocess.run([chattr, "+i", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i refused here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


def dataset_bytes(path: Path) -> bytes:
    """The data set part of a Part 10 file: everything after the file meta group."""
    from dicom_repack.core.header import dataset_offset

    raw = path.read_bytes()
    return raw[dataset_offset(raw) :]  # the header reader's own walk of the meta group


def transfer_syntax(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def filed(datadir: Path) -> dict[str, Path]:
    """SOPInstanceUID -> file, for every .dcm under datadir (names end in -<SOP UID>.dcm)."""
    return {p.name.rsplit("-", 1)[1][: -len(".dcm")]: p for p in datadir.rglob("*.dcm")}


def sop_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def assert_same_datasets(originals: list[Path], datadir: Path) -> None:
    """Every original landed once, with its data set equal: byte for byte when the
    sender kept the transfer syntax, else element for element (decoded)."""
    import pydicom

    got = filed(datadir)
    assert len(got) == len(originals), (len(got), len(originals))
    for src in originals:
        dst = got[sop_uid(src)]
        if transfer_syntax(src) == transfer_syntax(dst):
            assert dataset_bytes(src) == dataset_bytes(dst), dst
        else:
            a, b = pydicom.dcmread(src), pydicom.dcmread(dst)
            assert [e.tag for e in a] == [e.tag for e in b], dst
            for ea in a:
                eb = b[ea.tag]
                if ea.VR == "SQ":
                    assert len(ea.value) == len(eb.value), (dst, ea.tag)
                else:
                    assert ea.value == eb.value, (dst, ea.tag)
    assert not list(datadir.rglob("*.tmp")), "temporary files left behind"


def records(logdir: Path, datadir: Path) -> dict[str, object]:
    """The pypx records, comparable across runs: the data folder becomes {datadir}, and
    each imageObj stat keeps only FSlocation (the rest is this file's os.stat:
    times, inode, and a size that includes the file meta group each writer builds)."""
    out: dict[str, object] = {}
    for f in sorted(logdir.rglob("*.json")):
        obj = json.loads(f.read_text().replace(str(datadir.resolve()), "{datadir}"))
        for series in obj.values() if isinstance(obj, dict) else ():
            if isinstance(series, dict) and "imageObj" in series:
                for name, stat in series["imageObj"].items():
                    series["imageObj"][name] = {"FSlocation": stat["FSlocation"]}
        out[f.relative_to(logdir).as_posix()] = obj
    return out


class AtomicCheckpoint:
    """A drop-in for pynetdicom's ``Association._reactor_checkpoint`` without its race.

    pynetdicom 3.0 pauses the association's reactor thread around each ``send_c_store``:
    it clears an Event, then spins until the reactor sets ``_is_paused``. The reactor
    writes ``_is_paused = False`` only *after* its ``wait()`` returns, so a send that
    follows another closely can read the stale True, go ahead, and have the reactor
    take the C-STORE response off the queue ("Received unexpected C-STORE service
    message"); the send then waits out the whole DIMSE timeout and aborts. Under load
    it happens every few hundred stores (pydicom/pynetdicom#875 is the same race with
    C-FIND; #435 another of the reactor's). Here ``wait()`` marks the reactor unpaused
    under the same lock that ``clear()`` takes, so a cleared checkpoint is never
    mistaken for a paused reactor. The network-timeout A-RELEASE path, the only
    caller of ``wait()`` that relies on ``_is_paused`` staying True, is not used
    (pynetdicom's default network_timeout_response is A-ABORT).
    """

    def __init__(self, assoc: object) -> None:
        self._assoc = assoc
        self._cond = threading.Condition()
        self._flag = True
        self.passes = 0  # how many times the reactor went through

    def set(self) -> None:
        with self._cond:
            self._flag = True
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        with self._cond:
            if self._cond.wait_for(lambda: self._flag, timeout):
                self._assoc._is_paused = False  # type: ignore[attr-defined]
                self.passes += 1
                return True
            return False


def pause_reactor_atomically(assoc: object) -> None:
    """Install :class:`AtomicCheckpoint` in an established association, and wait until
    its reactor has gone through it once (so no stale pause flag from the old Event
    remains)."""
    checkpoint = AtomicCheckpoint(assoc)
    assoc._reactor_checkpoint = checkpoint  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while checkpoint.passes < 2 and time.monotonic() < deadline:
        time.sleep(0.001)


def pynetdicom_send(
    port: int,
    files: list[Path],
    *,
    calling: str = "PYSCU",
    tls: object = None,
    echo: bool = True,
) -> list[int]:
    """Send files with pynetdicom (one association, contexts exactly as the files are
    encoded so nothing is transcoded); returns each C-STORE status (-1: no response).
    The association is ended and its socket closed before this returns, whatever
    happened (``bench.scu``: pynetdicom alone leaves a reset socket to the GC)."""
    import pydicom

    from dicom_repack.bench.scu import finish, storage_scu

    ae = storage_scu(calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    seen: set[tuple[str, str]] = set()
    for f in files:
        meta = pydicom.dcmread(f, stop_before_pixels=True).file_meta
        seen.add((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
    for sop_class, ts in sorted(seen):
        ae.add_requested_context(sop_class, ts)
    if echo:
        ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title="DICOM-REPACK",
        tls_args=tls,  # type: ignore[arg-type]  # (SSLContext, hostname) or None
    )
    statuses: list[int] = []
    try:
        if not assoc.is_established:
            raise ConnectionRefusedError("association not established")
        pause_reactor_atomically(assoc)
        if echo:
            rsp = assoc.send_c_echo()
            assert rsp and rsp.Status == 0
        for f in files:
            rsp = assoc.send_c_store(f)
            statuses.append(int(rsp.Status) if rsp and "Status" in rsp else -1)
    finally:
        finish(assoc)
    return statuses


def wait_for(predicate: object, timeout: float = 60.0, what: str = "condition") -> None:
    """Poll until ``predicate()`` is true (no timing assertion: the timeout only stops a hang)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")
