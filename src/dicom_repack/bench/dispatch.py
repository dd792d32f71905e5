"""The per-instance driver: one subprocess per instance, at most N at once, like ``storescp -xcr``.

Run as ``python -m dicom_repack.bench.dispatch --list FILES --concurrency N --summary S
-- PROGRAM ARG...`` where the arguments may contain ``{xcrdir}`` and ``{xcrfile}``.

Why a separate process: the bench measures a contestant as one process tree (wall,
``wait4`` CPU of the tree, summed RSS). The driver is the root of that tree, the way
storescp is in the seed experiment, so its own cost (spawning) is counted and
reported apart (``driver_cpu_s`` in the summary) and nothing the bench itself does
(progress bar, samplers, CodeCarbon) leaks into the contestant's figures.

The driver uses ``posix_spawn`` and ``os.wait`` directly: no threads, no pipes per
child, so it costs little more than storescp's fork+exec. Each finished instance is
reported as one byte ``.`` on stdout (the bench's progress bar). SIGTERM (or SIGINT)
stops launching new instances; the ones running are waited for, so a stopped run
leaves no half-written file behind.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import sys

from ..core.errors import EXIT_INTERRUPTED, EXIT_OK

_stop = False


def _on_signal(signum: int, frame: object) -> None:
    global _stop
    _stop = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dicom_repack.bench.dispatch")
    parser.add_argument("--list", required=True, help="file with one instance path per line")
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--summary", required=True, help="JSON summary written at the end")
    parser.add_argument("--stderr", default=os.devnull, help="where the children's stderr goes")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    template = (
        [a for a in args.command if a != "--"] if args.command[:1] == ["--"] else args.command
    )
    if not template:
        parser.error("no command")
    program = shutil.which(template[0]) or template[0]
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    with open(args.list, encoding="utf-8") as fh:
        files = [line.rstrip("\n") for line in fh if line.strip()]
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, args.stderr, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644),
    ]
    env = dict(os.environ)
    running: dict[int, str] = {}
    launched = finished = 0
    failures: list[dict[str, object]] = []
    nonzero = 0
    spawn_errors = 0
    out = sys.stdout.buffer
    it = iter(files)
    exhausted = False
    while True:
        while not _stop and not exhausted and len(running) < max(1, args.concurrency):
            path = next(it, None)
            if path is None:
                exhausted = True
                break
            xcrdir, xcrfile = os.path.split(path)
            argv_i = [a.replace("{xcrdir}", xcrdir).replace("{xcrfile}", xcrfile) for a in template]
            try:
                pid = os.posix_spawn(program, argv_i, env, file_actions=actions)
            except OSError as exc:
                spawn_errors += 1
                if len(failures) < 20:
                    failures.append({"file": path, "error": f"spawn: {exc}"})
                continue
            running[pid] = path
            launched += 1
        if not running:
            break
        try:
            pid, status = os.wait()
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
            continue
        except ChildProcessError:
            break
        path = running.pop(pid, "?")
        finished += 1
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            nonzero += 1
            if len(failures) < 20:
                failures.append({"file": path, "exit": code})
        out.write(b".")
        out.flush()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    summary = {
        "instances": len(files),
        "launched": launched,
        "finished": finished,
        "nonzero_exits": nonzero,
        "spawn_errors": spawn_errors,
        "failures": failures,
        "stopped": _stop,
        "driver_cpu_s": usage.ru_utime + usage.ru_stime,
    }
    with open(args.summary, "w", encoding="utf-8") as fh:
        json.dump(summary, fh)
    return EXIT_OK if not _stop else EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
