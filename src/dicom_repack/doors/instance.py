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

USAGE = """\
usage: dicom-repack [--xcrdir DIR --xcrfile FILE | --xcrdirfile PATH] --datadir DIR
                    [--logdir DIR] [--cleanup] [--log-ndjson] [--verbosity N]
                    [--layout {rx,px}] [--rootDirTemplate T] [--studyDirTemplate T]
                    [--seriesDirTemplate T] [--imageTemplate T]
                    [--parseAllFilesWithSubStr SUBSTR]
       dicom-repack batch PATH... --datadir DIR [--logdir DIR] [--cleanup] [--jobs N]
       dicom-repack listen --port PORT --aet AE --datadir DIR [--logdir DIR]
       dicom-repack bench [--corpus DIR] ...
       dicom-repack corpus OUT --from SEED ...
"""

HELP = (
    USAGE
    + """
File DICOM instances into a folder tree named from their tags and write the pypx
log records (patientData/, studyData/, seriesData/) that pypx's tools read.
Without a sub-command this is the per-instance door, a drop-in for px-repack and
rx-repack under dcmtk's storescp:

  storescp -xcr "dicom-repack --xcrdir #p --xcrfile #f --datadir /data --logdir /log \\
                --cleanup" 11113

options (px-repack's names; short forms as in px-repack):
  -p, --xcrdir DIR         folder holding the received file
  -f, --xcrfile FILE       the file's name in --xcrdir
  --xcrdirfile PATH        the file as one path (instead of --xcrdir/--xcrfile)
  --parseAllFilesWithSubStr SUBSTR
                           repack every file in --xcrdir whose name contains one of
                           the comma-separated SUBSTRs ("," means every file)
  -d, --datadir DIR        root of the packed tree (required)
  -l, --logdir DIR         pypx log folder; records are written only when given
  --cleanup                move instead of copy: the source is removed only once its
                           copy is complete (a rename on one filesystem)
  --log-ndjson             print one JSON line per instance on stdout (src, dst, size,
                           PatientID, SeriesInstanceUID, missing, error)
  -v, --verbosity N        0 (default): quiet on success; 1: print the destination;
                           2: also let pydicom's warnings about a damaged file through
  --layout {rx,px}         rx (default): rx-repack 1.0's tree (series number padded to
                           5 digits, empty element -> its keyword); px: px-repack 3.12.6's
  --rootDirTemplate T, --studyDirTemplate T, --seriesDirTemplate T, --imageTemplate T
                           px-repack's templates: %Keyword, %_pad|W,C_Keyword,
                           %_md5|N_Keyword, %_seahash|N_Keyword, %_strmsk|MASK_Keyword,
                           %_nospc|C_Keyword. Giving any of them selects px-repack's
                           defaults for the others (unless --layout rx).
  --JSONargs JSON          px-repack's JSON form of the same options
  --debug, -x/--desc, -y/--synopsis
                           accepted for px-repack compatibility; ignored / print help
  --version                print the version
  -h, --help               this help

exit status: 0 filed; 1 the instance was not filed (one-line reason on stderr, the
source untouched); 2 usage error. See `dicom-repack batch --help` for folders.
"""
)

_VALUE_FLAGS = {
    "-p": "xcrdir",
    "--xcrdir": "xcrdir",
    "-f": "xcrfile",
    "--xcrfile": "xcrfile",
    "--xcrdirfile": "xcrdirfile",
    "-d": "datadir",
    "--datadir": "datadir",
    "-l": "logdir",
    "--logdir": "logdir",
    "-v": "verbosity",
    "--verbosity": "verbosity",
    "--parseAllFilesWithSubStr": "substr",
    "--rootDirTemplate": "root",
    "--studyDirTemplate": "study",
    "--seriesDirTemplate": "series",
    "--imageTemplate": "image",
    "--imageFileTemplate": "image",
    "--layout": "layout",
    "--JSONargs": "jsonargs",
}
_BOOL_FLAGS = {
    "--cleanup": "cleanup",
    "--log-ndjson": "ndjson",
    "--debug": "debug",
    "-h": "help",
    "--help": "help",
    "-x": "help",
    "--desc": "help",
    "-y": "help",
    "--synopsis": "help",
    "--version": "version",
}


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
            sys.stdout.write(HELP)
            return 0
        if opts.get("version"):
            sys.stdout.write(f"dicom-repack {__version__}\n")
            return 0
        if not opts.get("datadir"):
            raise UsageError("--datadir is required (the root of the packed tree)")
        verbosity = str(opts.get("verbosity", "0"))
        if not verbosity.lstrip("-").isdigit():
            raise UsageError(f"--verbosity takes a number, not {verbosity!r}")
        files = _files(opts)
        from ..core.errors import TemplateError
        from ..core.layout import Layout

        try:
            layout = Layout.from_options(
                _opt(opts, "layout"),
                _opt(opts, "root"),
                _opt(opts, "study"),
                _opt(opts, "series"),
                _opt(opts, "image"),
            )
        except TemplateError as exc:
            raise UsageError(str(exc)) from None
    except UsageError as exc:
        sys.stderr.write(f"{USAGE}dicom-repack: error: {exc}\n")
        return 2

    from ..core.repack import Config, Repacker

    if int(verbosity) >= 2:
        from ..core._pydicom import show_warnings

        show_warnings(True)
    repacker = Repacker(Config(str(opts["datadir"]), _opt(opts, "logdir"), layout))
    move = bool(opts.get("cleanup"))
    ndjson = bool(opts.get("ndjson"))
    loud = int(verbosity) >= 1
    status = 0
    for src in files:
        outcome = repacker.repack_path(src, move=move)
        if ndjson:
            from ..core.jsonio import dumps

            sys.stdout.write(dumps(outcome.as_dict(), indent=None) + "\n")
        if outcome.error is not None:
            sys.stderr.write(f"dicom-repack: error: {outcome.error}\n")
            status = 1
        elif loud:
            sys.stdout.write(f"{outcome.src} -> {outcome.dst}\n")
    return status


def _opt(opts: dict[str, str | bool], key: str) -> str | None:
    value = opts.get(key)
    return None if value is None else str(value)
