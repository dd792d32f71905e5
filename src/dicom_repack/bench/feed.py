"""The receiver contestant's driver: start ``dicom-repack listen``, send it the corpus, stop it.

Run as ``python -m dicom_repack.bench.feed --list FILES --datadir D --logdir L
--summary S [--sender auto|storescu|pynetdicom] --program dicom-repack``.

The whole exchange (receiver and sender) is one measured process tree, since in the
seed experiment the sender ran on the same machine as storescp. The receiver answers
a C-STORE only once the instance is filed, so when the sender is done the work is
done; the receiver is then stopped (SIGTERM) and waited for. ``send_s`` in the
summary is the time from the first C-STORE to the last answer, without the
receiver's start-up and shutdown.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

_stop = False


def _on_signal(signum: int, frame: object) -> None:
    global _stop
    _stop = True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        time.sleep(0.05)
    return False


def _dot() -> None:
    sys.stdout.buffer.write(b".")
    sys.stdout.buffer.flush()


def _send_pynetdicom(files: list[str], port: int, aet: str) -> tuple[int, list[str]]:
    """C-STORE every file over one association (re-opened if the peer drops it)."""
    import pydicom
    from pynetdicom import AE

    contexts: dict[tuple[str, str], None] = {}
    for path in files:
        meta = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        contexts[
            (str(meta.file_meta.MediaStorageSOPClassUID), str(meta.file_meta.TransferSyntaxUID))
        ] = None
    ae = AE(ae_title="BENCHSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    for sop, ts in list(contexts)[:128]:
        ae.add_requested_context(sop, ts)
    ok = 0
    errors: list[str] = []
    assoc = None
    for path in files:
        if _stop:
            break
        if assoc is None or not assoc.is_established:
            assoc = ae.associate("127.0.0.1", port, ae_title=aet)
            if not assoc.is_established:
                errors.append("association rejected or aborted")
                break
        status = assoc.send_c_store(path)
        if status and int(getattr(status, "Status", 0xFFFF)) == 0:
            ok += 1
        elif len(errors) < 20:
            errors.append(f"{path}: status {getattr(status, 'Status', None)!r}")
        _dot()
    if assoc is not None and assoc.is_established:
        assoc.release()
    return ok, errors


def _send_storescu(files: list[str], port: int, aet: str, program: str) -> tuple[int, list[str]]:
    """dcmtk's storescu, in chunks of files (one association per chunk) to stay under ARG_MAX."""
    ok = 0
    errors: list[str] = []
    chunk = 500
    for i in range(0, len(files), chunk):
        if _stop:
            break
        part = files[i : i + chunk]
        proc = subprocess.run(
            [program, "-aec", aet, "-aet", "BENCHSCU", "127.0.0.1", str(port), *part],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        if proc.returncode == 0:
            ok += len(part)
        elif len(errors) < 20:
            errors.append(f"storescu exit {proc.returncode}: {proc.stderr.decode()[-300:]}")
        for _ in part:
            _dot()
    return ok, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dicom_repack.bench.feed")
    parser.add_argument("--list", required=True)
    parser.add_argument("--datadir", required=True)
    parser.add_argument("--logdir", required=True)
    parser.add_argument("--summary", required=True)
    parser.add_argument("--sender", choices=("auto", "storescu", "pynetdicom"), default="auto")
    parser.add_argument("--program", default="dicom-repack")
    parser.add_argument("--aet", default="REPACK")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with open(args.list, encoding="utf-8") as fh:
        files = [line.rstrip("\n") for line in fh if line.strip()]
    port = _free_port()
    env = dict(os.environ, TCP_NODELAY="1")
    receiver = subprocess.Popen(
        [
            args.program,
            "listen",
            "--port",
            str(port),
            "--aet",
            args.aet,
            "--datadir",
            args.datadir,
            "--logdir",
            args.logdir,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    summary: dict[str, object] = {"instances": len(files), "port": port}
    try:
        if not _wait_port(port, receiver):
            summary["error"] = f"receiver did not open port {port} (exit {receiver.poll()})"
            return 1
        storescu = find_dcmtk("storescu") if args.sender in ("auto", "storescu") else None
        if args.sender == "storescu" and storescu is None:
            summary["error"] = "dcmtk's storescu not found (apt-get install dcmtk)"
            return 1
        t0 = time.perf_counter()
        if storescu:
            summary["sender"] = "dcmtk storescu"
            ok, errors = _send_storescu(files, port, args.aet, storescu)
        else:
            summary["sender"] = "pynetdicom (in process)"
            ok, errors = _send_pynetdicom(files, port, args.aet)
        summary["send_s"] = time.perf_counter() - t0
        summary["stored"] = ok
        summary["errors"] = errors
        summary["stopped"] = _stop
    finally:
        with contextlib.suppress(ProcessLookupError):
            receiver.send_signal(signal.SIGTERM)
        try:
            receiver.wait(timeout=60)
        except subprocess.TimeoutExpired:
            receiver.kill()
            receiver.wait()
        summary["receiver_exit"] = receiver.returncode
        with open(args.summary, "w", encoding="utf-8") as fh:
            json.dump(summary, fh)
    return 0 if summary.get("stored") == len(files) else 1


def find_dcmtk(tool: str) -> str | None:
    """The path of dcmtk's ``tool`` (on PATH, else /usr/bin), or None.

    pynetdicom installs same-named apps (storescu, storescp, echoscu) into the
    venv's bin folder, which shadows dcmtk's on an activated venv's PATH and takes
    other flags; only a binary whose ``--version`` says "dcmtk" counts.
    """
    for candidate in (shutil.which(tool), f"/usr/bin/{tool}"):
        if not candidate or not os.path.exists(candidate):
            continue
        try:
            out = subprocess.run(
                [candidate, "--version"], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if "dcmtk" in (out.stdout + out.stderr).lower():
            return candidate
    return None


if __name__ == "__main__":
    sys.exit(main())
