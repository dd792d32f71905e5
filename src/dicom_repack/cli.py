"""The command line: one program, several doors.

``dicom-repack <px-repack flags>`` with no sub-command is the per-instance door
(what ``storescp -xcr`` calls); ``batch``, ``listen``, ``bench`` and ``corpus`` are
sub-commands. Each door is imported only when chosen: the per-instance door must
start almost as fast as the bare interpreter.
"""

from __future__ import annotations

import os
import sys

#: sub-command -> module whose ``main(argv: list[str]) -> int`` runs it
SUBCOMMANDS: dict[str, str] = {
    "batch": "dicom_repack.doors.batch",
    "listen": "dicom_repack.listen.cli",
    "bench": "dicom_repack.bench.cli",
    "corpus": "dicom_repack.bench.corpus",
    "status": "dicom_repack.doors.status",
    "index": "dicom_repack.doors.reindex",
    "watch": "dicom_repack.watch.cli",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in SUBCOMMANDS:
        import importlib

        module = importlib.import_module(SUBCOMMANDS[args[0]])
        return int(module.main(args[1:]))
    from .doors.instance import main as instance_main

    return instance_main(args)


def run() -> None:
    """The console script's entry: run a door, then exit with its status.

    The per-instance door starts once per received file, and the interpreter's
    teardown (freeing every module and object) costs ~1.3 ms of its ~10 ms. By
    then everything is written, renamed and closed, so that door flushes its
    output and leaves with ``os._exit``. The other doors (worker pools, threads,
    CodeCarbon's exit handlers) exit normally.
    """
    status = main()
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        sys.exit(status)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: nothing more can be said
        status = status or 1
    os._exit(status)
