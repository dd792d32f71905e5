"""The command line: one program, several doors.

``dicom-repack <px-repack flags>`` with no sub-command is the per-instance door
(what ``storescp -xcr`` calls); ``batch``, ``listen``, ``bench`` and ``corpus`` are
sub-commands. Each door is imported only when chosen: the per-instance door must
start almost as fast as the bare interpreter.
"""

from __future__ import annotations

import sys

#: sub-command -> module whose ``main(argv: list[str]) -> int`` runs it
SUBCOMMANDS: dict[str, str] = {
    "batch": "dicom_repack.batch",
    "listen": "dicom_repack.listen",
    "bench": "dicom_repack.bench.cli",
    "corpus": "dicom_repack.bench.corpus",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in SUBCOMMANDS:
        import importlib

        module = importlib.import_module(SUBCOMMANDS[args[0]])
        return int(module.main(args[1:]))
    from .instance import main as instance_main

    return instance_main(args)
