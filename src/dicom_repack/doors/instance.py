"""The per-instance door: what ``storescp -xcr`` runs once per received file.

It accepts px-repack's flags (and rx-repack's ``--log-ndjson``) so that only the
program name changes in an existing storescp line::

    storescp -xcr "dicom-repack --xcrdir #p --xcrfile #f --datadir D --logdir L --cleanup" ...

This door starts once per instance, so its cost is mostly start-up: the argument
parser is hand-written (argparse imports ``re`` and ``enum``, ~10 ms) and nothing
is imported that the instance does not need. pydicom is imported only for a
series' first instance (its full-header record) or an unusual file.
"""

from __future__ import annotations

import os
import sys

from .. import __version__
from ..core.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, one_line
from .options import (
    DESTINATION,
    FILING,
    INDEX,
    INSTANCE,
    LAYOUT,
    config_from,
    fast_tables,
    optional_const,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

#: every option this door takes, as declared once in doors/options.py
FLAGS = INSTANCE + DESTINATION + FILING + INDEX + LAYOUT
_BOOL_FLAGS, _VALUE_FLAGS, _OPTIONAL_FLAGS = fast_tables(FLAGS)
_CONST = optional_const(FLAGS)

DESCRIPTION = """\
File DICOM instances into a folder tree named from their tags and write the pypx
log records (patientData/, studyData/, seriesData/) that pypx's tools read.
Without a sub-command this is the per-instance door, a drop-in for px-repack and
rx-repack under dcmtk's storescp:

  storescp -xcr "dicom-repack --xcrdir #p --xcrfile #f --datadir /data --logdir /log \\
                --cleanup" 11113

This door is for compatibility: it starts a Python interpreter per instance (about
1.3-1.6x `python -c pass`). The fast ways to keep storescp are `dicom-repack watch`
beside `storescp -od DIR` (resident: no program per instance), or to receive with
`dicom-repack listen`.
"""

EPILOG = """\
sub-commands:
  dicom-repack batch PATH... --datadir DIR ...       folders (or paths on stdin), all cores
  dicom-repack watch DIR... --datadir DIR ...        file what a receiver writes, resident
  dicom-repack listen --port PORT --datadir DIR ...  a DICOM Storage SCP, in process
  dicom-repack status --logdir DIR ...               what arrived (the index)
  dicom-repack index --rebuild ...                   remake the index from the tree
  dicom-repack bench [--corpus DIR] ...              against px-repack and rx-repack
  dicom-repack corpus OUT [--from SEED] ...          a benchmark corpus

exit status: 0 filed; 1 the instance was not filed (one-line reason on stderr, the
source untouched); 2 usage error. See `dicom-repack batch --help` for folders.
"""


def build_parser() -> argparse.ArgumentParser:
    """argparse's view of this door's options (for --help and usage errors only)."""
    import argparse

    from .options import LAYOUT_HELP, add_arguments
    from .usage import RawDefaultsFormatter

    parser = argparse.ArgumentParser(
        prog="dicom-repack",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=RawDefaultsFormatter,
    )
    add_arguments(parser, INSTANCE + DESTINATION + FILING + INDEX)
    add_arguments(parser, LAYOUT, title="layout", description=LAYOUT_HELP)
    return parser


class UsageError(Exception):
    """The command line is wrong (exit 2)."""


def parse(argv: list[str]) -> dict[str, str | bool]:
    """px-repack's command line, parsed without argparse (see the module docstring)."""
    opts: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        flag, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if flag in _BOOL_FLAGS and not eq:
            opts[_BOOL_FLAGS[flag]] = True
        elif flag in _OPTIONAL_FLAGS:  # as argparse's nargs="?": a next word not an option
            dest = _OPTIONAL_FLAGS[flag]
            if eq:
                opts[dest] = inline
            elif i < len(argv) and not argv[i].startswith("-"):
                opts[dest] = argv[i]
                i += 1
            else:
                opts[dest] = _CONST[dest]
        elif flag in _VALUE_FLAGS:
            if eq:
                value = inline
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                raise UsageError(f"{flag} needs a value")
            opts[_VALUE_FLAGS[flag]] = value
        else:
            raise UsageError(f"unknown argument {arg!r}")
    if "jsonargs" in opts:
        opts = _merge_jsonargs(opts)
    return opts


def _merge_jsonargs(opts: dict[str, str | bool]) -> dict[str, str | bool]:
    """px-repack's --JSONargs: {"xcrdir": "...", "cleanup": true, ...} replaces the flags."""
    from ..core import jsonio

    try:
        data = jsonio.loads(str(opts["jsonargs"]))
    except jsonio.JSONError as exc:
        raise UsageError(f"--JSONargs: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError("--JSONargs must be a JSON object")
    argv: list[str] = []
    for key, value in data.items():
        argv.append(f"--{key}")
        if value is not True and value is not False:
            argv.append(str(value))
    return parse(argv)


def _files(opts: dict[str, str | bool]) -> list[str]:
    if opts.get("xcrdirfile"):
        return [str(opts["xcrdirfile"])]
    xcrdir = str(opts.get("xcrdir") or "")
    if "substr" in opts:
        if not xcrdir:
            raise UsageError("--parseAllFilesWithSubStr needs --xcrdir")
        subs = str(opts["substr"]).split(",")
        try:
            # FIFOs, sockets, devices are listed too: the job skips them, never reads them
            names = sorted(e.name for e in os.scandir(xcrdir) if not e.is_dir())
        except OSError as exc:
            raise UsageError(f"--xcrdir {xcrdir}: {exc.strerror}") from None
        return [f"{xcrdir}/{n}" for n in names if any(s in n for s in subs)]
    if not opts.get("xcrfile"):
        raise UsageError("which file? give --xcrdir and --xcrfile, or --xcrdirfile")
    xcrfile = str(opts["xcrfile"])
    return [xcrfile if not xcrdir or os.path.isabs(xcrfile) else f"{xcrdir}/{xcrfile}"]


def main(argv: list[str]) -> int:
    try:
        opts = parse(argv)
        if opts.get("help"):
            sys.stdout.write(build_parser().format_help())
            return EXIT_OK
        if opts.get("version"):
            sys.stdout.write(f"dicom-repack {__version__}\n")
            return EXIT_OK
        if not opts.get("datadir"):
            raise UsageError("--datadir is required (the root of the packed tree)")
        verbosity = str(opts.get("verbosity", "0"))
        if not verbosity.lstrip("-").isdigit():
            raise UsageError(f"--verbosity takes a number, not {verbosity!r}")
        files = _files(opts)
        from ..core.errors import TemplateError
        from .options import layout_from

        try:
            layout = layout_from(opts)
        except TemplateError as exc:
            raise UsageError(str(exc)) from None
    except UsageError as exc:
        from .plumbing import fail

        return fail("", f"{exc} (see --help)", EXIT_USAGE)

    from ..core.repack import Repacker

    if int(verbosity) >= 2:
        from .plumbing import show_pydicom_warnings

        show_pydicom_warnings(True)
    # one instance per process: rows to the pending file, no SQLite start (core/index.py)
    config = config_from(opts, layout, index_mode="pending")
    folders = (config.datadir, config.logdir or config.datadir)
    if not opts.get("parents") and not all(map(os.path.isdir, folders)):  # one stat each
        from ..core.destination import DestinationError, refuse_missing_parent

        try:
            refuse_missing_parent(config.datadir, "--datadir")
            if config.logdir:
                refuse_missing_parent(config.logdir, "--logdir")
        except DestinationError as exc:
            from .plumbing import fail

            return fail("", str(exc))
    repacker = Repacker(config)
    move = bool(opts.get("cleanup"))
    ndjson = None
    if "log_ndjson" in opts:
        from .plumbing import Refused, fail, open_ndjson

        try:
            ndjson = open_ndjson(str(opts["log_ndjson"]))
        except Refused as exc:
            return fail("", str(exc), exc.status)
    loud = int(verbosity) >= 1
    status = EXIT_OK
    for src in files:
        outcome = repacker.repack_path(src, move=move)
        if ndjson is not None:
            ndjson.write(outcome.as_dict())
        if outcome.error is not None:
            from .plumbing import say

            say("", outcome.error)
            status = EXIT_FAILED
        elif loud:
            sys.stdout.write(f"{one_line(outcome.src)} -> {one_line(str(outcome.dst))}\n")
    return status
