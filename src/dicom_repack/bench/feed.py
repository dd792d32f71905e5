"""The receiving contestants' driver: start a receiver, send it the corpus, stop it.

Run as ``python -m dicom_repack.bench.feed --list FILES --datadir D --logdir L
--summary S [--sender auto|storescu|pynetdicom] --program dicom-repack`` for
``dicom-repack listen``, or with ``--receiver storescp --incoming DIR --xcr COMMAND
--concurrency N`` for dcmtk's ``storescp -xcr COMMAND`` (the pipeline px-repack and
rx-repack are deployed in), or with ``--receiver storescp-watch --incoming DIR`` for
``storescp -od DIR`` beside ``dicom-repack watch DIR --cleanup`` (no program per
instance).

storescp starts the ``-xcr`` program for each instance and does not wait for it; the
driver makes itself the *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``), so
those programs stay in its tree when storescp exits and their CPU is counted. When the
last instance is sent, a C-ECHO (dcmtk ``echoscu``) on a new association proves that
storescp finished the previous one (it serves associations one after the other, and
starts the program for an instance before reading the next message); storescp is then
stopped and every program it started is waited for. Since a sender is faster than
any program started per instance, the driver sends in associations of at most
``concurrency / 2`` instances and starts the next one only once fewer than
``concurrency / 2`` programs are still running: at most ``concurrency`` run at once,
as in the seed experiment (512), instead of a backlog that would exhaust memory.

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
from collections.abc import Callable

from ..core.errors import EXIT_FAILED, EXIT_OK

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


def _stop_receiver(receiver: subprocess.Popen[bytes]) -> None:
    """SIGTERM the receiver and wait for it (killed after 60 s): its graceful path."""
    with contextlib.suppress(ProcessLookupError):
        receiver.send_signal(signal.SIGTERM)
    try:
        receiver.wait(timeout=60)
    except subprocess.TimeoutExpired:
        receiver.kill()
        receiver.wait()


def _dot() -> None:
    sys.stdout.buffer.write(b".")
    sys.stdout.buffer.flush()


def _send_pynetdicom(files: list[str], port: int, aet: str) -> tuple[int, list[str]]:
    """C-STORE every file over one association (re-opened if the peer drops it)."""
    import pydicom

    from dicom_repack.bench.scu import finish, storage_scu

    contexts: dict[tuple[str, str], None] = {}
    for path in files:
        meta = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        contexts[
            (str(meta.file_meta.MediaStorageSOPClassUID), str(meta.file_meta.TransferSyntaxUID))
        ] = None
    ae = storage_scu("BENCHSCU")
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
            if assoc is not None:
                finish(assoc)  # dropped by the peer: its socket closed, its threads joined
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
    if assoc is not None:
        finish(assoc)
    return ok, errors


def _set_subreaper() -> bool:
    """Adopt orphaned descendants (Linux >= 3.4), so storescp's children stay ours."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(36, 1, 0, 0, 0)) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _running_programs(exclude: set[int]) -> int:
    """How many of our descendants (storescp's -xcr programs) are alive, not zombies."""
    import psutil

    n = 0
    try:
        kids = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for kid in kids:
        if kid.pid in exclude:
            continue
        try:
            if kid.status() != psutil.STATUS_ZOMBIE:
                n += 1
        except psutil.Error:
            continue
    return n


def _send_storescu(
    files: list[str],
    port: int,
    aet: str,
    program: str,
    chunk: int = 500,
    throttle: Callable[[], None] | None = None,
) -> tuple[int, list[str]]:
    """dcmtk's storescu, in chunks of files (one association per chunk) to stay under
    ARG_MAX; ``throttle()`` is called before each chunk (flow control)."""
    ok = 0
    errors: list[str] = []
    for i in range(0, len(files), chunk):
        if throttle is not None:
            throttle()
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
    parser.add_argument(
        "--receiver", choices=("listen", "storescp", "storescp-watch"), default="listen"
    )
    parser.add_argument("--incoming", help="storescp: its output folder (-od)")
    parser.add_argument("--xcr", help="storescp: the -xcr command (with #p and #f)")
    parser.add_argument("--concurrency", type=int, default=512, help="storescp: -xcr programs")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with open(args.list, encoding="utf-8") as fh:
        files = [line.rstrip("\n") for line in fh if line.strip()]
    if args.receiver == "storescp":
        return _storescp_main(args, files)
    if args.receiver == "storescp-watch":
        return _storescp_watch_main(args, files)
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
            return EXIT_FAILED
        storescu = find_dcmtk("storescu") if args.sender in ("auto", "storescu") else None
        if args.sender == "storescu" and storescu is None:
            summary["error"] = "dcmtk's storescu not found (apt-get install dcmtk)"
            return EXIT_FAILED
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
        _stop_receiver(receiver)
        summary["receiver_exit"] = receiver.returncode
        with open(args.summary, "w", encoding="utf-8") as fh:
            json.dump(summary, fh)
    return EXIT_OK if summary.get("stored") == len(files) else EXIT_FAILED


def _storescp_main(args: argparse.Namespace, files: list[str]) -> int:
    """``storescp -xcr`` fed by ``storescu``; waits for every program storescp started."""
    summary: dict[str, object] = {"instances": len(files), "receiver": "dcmtk storescp -xcr"}
    scp, scu, echo = find_dcmtk("storescp"), find_dcmtk("storescu"), find_dcmtk("echoscu")
    if not (scp and scu and echo and args.incoming and args.xcr):
        summary["error"] = "dcmtk's storescp, storescu and echoscu, --incoming and --xcr needed"
        with open(args.summary, "w", encoding="utf-8") as fh:
            json.dump(summary, fh)
        return EXIT_FAILED
    summary["subreaper"] = _set_subreaper()
    port = _free_port()
    env = dict(os.environ, TCP_NODELAY="1")
    receiver = subprocess.Popen(
        [scp, "-aet", args.aet, "-od", args.incoming, "-xcr", args.xcr, str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    half = max(1, args.concurrency // 2)
    waited = 0.0

    def throttle() -> None:
        nonlocal waited
        t = time.perf_counter()
        while not _stop and _running_programs({receiver.pid}) >= half:
            time.sleep(0.01)
        waited += time.perf_counter() - t

    reaped = 0
    try:
        if not _wait_port_echo(port, receiver, echo, args.aet):
            summary["error"] = f"storescp did not answer on port {port} (exit {receiver.poll()})"
            return EXIT_FAILED
        t0 = time.perf_counter()
        ok, errors = _send_storescu(files, port, args.aet, scu, chunk=half, throttle=throttle)
        # a C-ECHO on a new association: storescp is done with the last one (and so has
        # started the program for its last instance)
        _echo_once(echo, args.aet, port, env)
        summary["send_s"] = time.perf_counter() - t0
        summary["stored"] = ok
        summary["errors"] = errors
        summary["throttled_s"] = waited
    finally:
        _stop_receiver(receiver)
        summary["receiver_exit"] = receiver.returncode
        # every program storescp started and did not wait for is ours now: wait for all
        failed = 0
        while True:
            try:
                _, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            reaped += 1
            if os.waitstatus_to_exitcode(status) != 0:
                failed += 1
        summary["programs_reaped_after_storescp"] = reaped
        summary["nonzero_exits"] = failed
        summary["left_in_incoming"] = _files_under(args.incoming)
        summary["stopped"] = _stop
        with open(args.summary, "w", encoding="utf-8") as fh:
            json.dump(summary, fh)
    return EXIT_OK if summary.get("stored") == len(files) else EXIT_FAILED


def _echo_once(echo: str, aet: str, port: int, env: dict[str, str]) -> None:
    """One C-ECHO on a new association: storescp serves associations one after the
    other, so its answer proves the previous association is done with."""
    subprocess.run(
        [echo, "-aec", aet, "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        check=False,
    )


def _files_under(folder: str) -> int:
    """Regular files left under ``folder`` (what a receiver wrote and nobody filed)."""
    n = 0
    for _dirpath, _dirs, names in os.walk(folder):
        n += len(names)
    return n


def _storescp_watch_main(args: argparse.Namespace, files: list[str]) -> int:
    """``storescp -od IN`` (no ``-xcr``) beside ``dicom-repack watch IN --cleanup``, fed by
    ``storescu``: storescp keeps its job, no program is started per instance.

    The watcher starts first (and files what it finds). When the last instance is sent
    and a C-ECHO proves storescp wrote it, the driver waits until the watcher has taken
    every file out of IN (or nothing moved for 60 s), then stops storescp and the
    watcher (SIGTERM: it finishes the instance in hand)."""
    summary: dict[str, object] = {"instances": len(files), "receiver": "storescp + watch"}
    scp, scu, echo = find_dcmtk("storescp"), find_dcmtk("storescu"), find_dcmtk("echoscu")
    if not (scp and scu and echo and args.incoming):
        summary["error"] = "dcmtk's storescp, storescu and echoscu, and --incoming needed"
        with open(args.summary, "w", encoding="utf-8") as fh:
            json.dump(summary, fh)
        return EXIT_FAILED
    env = dict(os.environ, TCP_NODELAY="1")
    log_path = os.path.join(os.path.dirname(os.path.abspath(args.summary)), "watch-stderr.log")
    with open(log_path, "wb") as log:
        watcher = subprocess.Popen(
            [args.program, "watch", args.incoming, "--datadir", args.datadir,
             "--logdir", args.logdir, "--cleanup"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )  # fmt: skip
    port = _free_port()
    receiver: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 60
        while b"watching" not in _read(log_path) and watcher.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if watcher.poll() is not None or b"watching" not in _read(log_path):
            summary["error"] = f"watch did not start: {_read(log_path)[-300:].decode()}"
            return EXIT_FAILED
        receiver = subprocess.Popen(
            [scp, "-aet", args.aet, "-od", args.incoming, str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        if not _wait_port_echo(port, receiver, echo, args.aet):
            summary["error"] = f"storescp did not answer on port {port} (exit {receiver.poll()})"
            return EXIT_FAILED
        t0 = time.perf_counter()
        ok, errors = _send_storescu(files, port, args.aet, scu)
        _echo_once(echo, args.aet, port, env)  # storescp wrote the last instance
        summary["send_s"] = time.perf_counter() - t0
        left, since = _files_under(args.incoming), time.monotonic()
        while left and not _stop and time.monotonic() - since < 60:
            time.sleep(0.01)
            now_left = _files_under(args.incoming)
            if now_left != left:
                left, since = now_left, time.monotonic()
        summary["filed_s"] = time.perf_counter() - t0
        summary["stored"] = ok
        summary["errors"] = errors
        summary["stopped"] = _stop
    finally:
        if receiver is not None:
            _stop_receiver(receiver)
            summary["receiver_exit"] = receiver.returncode
        _stop_receiver(watcher)
        summary["watcher_exit"] = watcher.returncode
        summary["left_in_incoming"] = _files_under(args.incoming)
        with open(args.summary, "w", encoding="utf-8") as fh:
            json.dump(summary, fh)
    done = summary.get("stored") == len(files) and not summary["left_in_incoming"]
    return EXIT_OK if done and summary["watcher_exit"] == EXIT_OK else EXIT_FAILED


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _wait_port_echo(
    port: int, proc: subprocess.Popen[bytes], echo: str, aet: str, timeout: float = 60.0
) -> bool:
    """Wait until the receiver answers a C-ECHO (a bare TCP probe would make storescp
    log an aborted association)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        done = subprocess.run(
            [echo, "-aec", aet, "-to", "2", "127.0.0.1", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode == 0:
            return True
        time.sleep(0.05)
    return False


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
