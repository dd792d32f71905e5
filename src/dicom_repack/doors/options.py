"""Every command-line option of the doors, declared once.

Each :class:`Flag` below is the single declaration of one option: its names, where
its value goes (``dest``), whether it takes a value, and its help. Two parsers are
built from these declarations:

* :func:`fast_tables` -> the per-instance door's hand-written parser
  (``doors/instance.py``), which runs once per received file and cannot afford
  argparse's import (``re``, ``enum``: ~10 ms);
* :func:`add_arguments` -> argparse, for ``--help`` of every door and for the
  ``batch`` and ``listen`` sub-commands, which share the destination, filing and
  layout options with the per-instance door.

So a flag added here appears in every door that takes its group, with one help
text. This module imports nothing at load time (it is on the per-instance hot
path); argparse is only ever passed in by a caller that already chose to pay.

Example (a door with the shared options)::

    import argparse
    from dicom_repack.doors import options

    parser = argparse.ArgumentParser(prog="dicom-repack batch")
    options.add_arguments(parser, options.DESTINATION + options.FILING)
    options.add_arguments(parser, options.LAYOUT, title="layout", description=options.LAYOUT_HELP)
    ns = parser.parse_args()
    layout = options.layout_from(vars(ns))
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable, Mapping

    from ..core.layout import Layout

__all__ = [
    "DESTINATION",
    "FILING",
    "INSTANCE",
    "LAYOUT",
    "LAYOUT_HELP",
    "Flag",
    "add_arguments",
    "fast_tables",
    "layout_from",
]

#: a flag without a value (store_true)
BOOL = "bool"
#: a flag that takes one value
VALUE = "value"
#: a flag whose value is optional: bare means ``const`` (``--log-ndjson`` = stdout)
OPTIONAL = "optional"


class Flag:
    """One option: ``names`` (the first long one is canonical), ``dest``, ``kind``, help."""

    __slots__ = ("choices", "const", "dest", "help", "kind", "metavar", "names")

    def __init__(
        self,
        names: tuple[str, ...],
        dest: str,
        kind: str = VALUE,
        help: str = "",
        *,
        metavar: str | None = None,
        choices: tuple[str, ...] | None = None,
        const: str | None = None,
    ) -> None:
        self.names = names
        self.dest = dest
        self.kind = kind
        self.help = help
        self.metavar = metavar
        self.choices = choices
        self.const = const


# -- the declarations --------------------------------------------------------------------

DATADIR = Flag(("-d", "--datadir"), "datadir", help="root of the packed tree (required)")
LOGDIR = Flag(
    ("-l", "--logdir"), "logdir", help="pypx log folder; records are written only when given"
)
#: Where instances and records go: every door.
DESTINATION = (DATADIR, LOGDIR)

CLEANUP = Flag(
    ("--cleanup",),
    "cleanup",
    BOOL,
    "move instead of copy: the source is removed only once its copy and records are complete",
)
FSYNC = Flag(
    ("--fsync",),
    "fsync",
    BOOL,
    "fsync each file and record before reporting success (durable across a power cut; slower)",
)
LOG_NDJSON = Flag(
    ("--log-ndjson",),
    "log_ndjson",
    OPTIONAL,
    "one JSON line per instance (src, dst, size, PatientID, StudyInstanceUID, "
    "SeriesInstanceUID, SOPInstanceUID, missing, error, error_kind): on stdout, or appended "
    "to PATH with --log-ndjson=PATH",
    metavar="PATH",
    const="-",
)
#: How each instance is filed and reported: every door (listen takes FSYNC and LOG_NDJSON).
FILING = (CLEANUP, FSYNC, LOG_NDJSON)

LAYOUT_HELP = """\
  Where each instance goes. Default: rx-repack 1.0's tree; any px-repack template
  option selects px-repack's defaults for the others (unless --layout rx). Templates
  use px-repack's language: %Keyword, %_pad|W,C_Keyword, %_md5|N_Keyword,
  %_seahash|N_Keyword, %_strmsk|MASK_Keyword, %_nospc|C_Keyword."""
#: Where in the tree: every door (the names are px-repack's).
LAYOUT = (
    Flag(
        ("--layout",),
        "layout",
        help="rx (default): rx-repack 1.0's tree (series number padded to 5 digits, an empty "
        "element -> its keyword); px: px-repack 3.12.6's",
        choices=("rx", "px"),
    ),
    Flag(
        ("--rootDirTemplate",), "root_template", metavar="T", help="e.g. %%PatientID-%%PatientName"
    ),
    Flag(("--studyDirTemplate",), "study_template", metavar="T"),
    Flag(("--seriesDirTemplate",), "series_template", metavar="T"),
    Flag(("--imageTemplate", "--imageFileTemplate"), "image_template", metavar="T"),
)

#: The per-instance door's own options (px-repack's names and short forms).
INSTANCE = (
    Flag(("-p", "--xcrdir"), "xcrdir", metavar="DIR", help="folder holding the received file"),
    Flag(("-f", "--xcrfile"), "xcrfile", metavar="FILE", help="the file's name in --xcrdir"),
    Flag(
        ("--xcrdirfile",),
        "xcrdirfile",
        metavar="PATH",
        help="the file as one path (instead of --xcrdir/--xcrfile)",
    ),
    Flag(
        ("--parseAllFilesWithSubStr",),
        "substr",
        metavar="SUBSTR",
        help="repack every file in --xcrdir whose name contains one of the comma-separated "
        'SUBSTRs ("," means every file)',
    ),
    Flag(
        ("-v", "--verbosity"),
        "verbosity",
        metavar="N",
        help="0 (default): quiet on success; 1: print the destination; 2: also let pydicom's "
        "warnings about a damaged file through",
    ),
    Flag(("--JSONargs",), "jsonargs", metavar="JSON", help="px-repack's JSON form of the options"),
    Flag(("--debug",), "debug", BOOL, "accepted for px-repack compatibility; ignored"),
    Flag(
        ("-x", "--desc", "-y", "--synopsis"),
        "help",
        BOOL,
        "px-repack's help flags: print this help",
    ),
    Flag(("--version",), "version", BOOL, "print the version"),
)


# -- parser 1: the per-instance door's hand-written one ------------------------------------


def fast_tables(
    flags: Iterable[Flag],
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """``(bool flags, value flags, optional-value flags)``: option name -> dest.

    What ``doors/instance.py``'s parser looks names up in; built once per process
    from the same declarations argparse gets. ``-h``/``--help`` are added here, as
    argparse adds them itself.
    """
    bools: dict[str, str] = {"-h": "help", "--help": "help"}
    values: dict[str, str] = {}
    optional: dict[str, str] = {}
    table = {BOOL: bools, VALUE: values, OPTIONAL: optional}
    for flag in flags:
        for name in flag.names:
            table[flag.kind][name] = flag.dest
    return bools, values, optional


def optional_const(flags: Iterable[Flag]) -> dict[str, str]:
    """dest -> the value a bare optional-value flag stands for (``--log-ndjson`` -> ``-``)."""
    return {f.dest: f.const or "" for f in flags if f.kind == OPTIONAL}


# -- parser 2: argparse ------------------------------------------------------------------


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    flags: Iterable[Flag],
    *,
    title: str | None = None,
    description: str | None = None,
    required: Iterable[str] = (),
    aliases: Mapping[str, tuple[str, ...]] | None = None,
) -> None:
    """Add ``flags`` to an argparse parser or group (optionally as a new titled group).

    ``required`` names dests argparse must insist on (``datadir`` for batch);
    ``aliases`` adds extra option names to a dest (listen's old ``--ndjson``).
    """
    target = parser.add_argument_group(title, description) if title else parser
    must = set(required)
    for flag in flags:
        names = flag.names + tuple((aliases or {}).get(flag.dest, ()))
        kw: dict[str, object] = {"dest": flag.dest, "help": flag.help or None}
        if flag.kind == BOOL:
            kw["action"] = "store_true"
        else:
            if flag.metavar:
                kw["metavar"] = flag.metavar
            if flag.choices:
                kw["choices"] = flag.choices
            if flag.kind == OPTIONAL:
                kw["nargs"] = "?"
                kw["const"] = flag.const
            if flag.dest in must:
                kw["required"] = True
        target.add_argument(*names, **kw)  # type: ignore[arg-type]  # kw's values vary


def layout_from(values: Mapping[str, object]) -> Layout:
    """The Layout that the LAYOUT options ask for (TemplateError if they are wrong).

    ``values`` maps dests to what was given (``vars(namespace)`` or the fast
    parser's dict); absent or None means "not given".
    """
    from ..core.layout import Layout

    def get(dest: str) -> str | None:
        value = values.get(dest)
        return None if value is None else str(value)

    return Layout.from_options(
        get("layout"),
        get("root_template"),
        get("study_template"),
        get("series_template"),
        get("image_template"),
    )
