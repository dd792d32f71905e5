"""Every command-line option of the doors, declared once.

Each flag below is the single declaration of one option: its names, where its
value goes (``dest``), whether it takes a value, and its help. Two parsers are
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
    from typing import Any, Final, Protocol, TypeAlias

    from ..core.layout import Layout
    from ..core.repack import Config

    class ArgumentTarget(Protocol):
        """An argparse parser or one of its groups (argparse names no public type for both)."""

        def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action: ...

        def add_argument_group(self, *args: Any, **kwargs: Any) -> Any: ...


__all__ = [
    "BATCH",
    "DESTINATION",
    "FILING",
    "INDEX",
    "INSTANCE",
    "JOBS",
    "LAYOUT",
    "LAYOUT_HELP",
    "VERBOSE",
    "WATCH",
    "add_arguments",
    "fast_tables",
    "host_from",
    "index_from",
    "layout_from",
    "long_name",
    "parse_plain",
]

#: a flag without a value (store_true)
BOOL = "bool"
#: a flag that takes one value
VALUE = "value"
#: a flag whose value is optional: bare means ``const`` (``--log-ndjson`` = stdout)
OPTIONAL = "optional"
#: a flag that takes one whole number (argparse's ``type=int``)
INT = "int"
#: a flag that may be given several times, each with a value (argparse's ``append``;
#: not for the per-instance door's parser)
APPEND = "append"


#: The fields of a flag's declaration, a tuple:
#: ``(names, dest, kind, help, metavar, choices, const)``. Names: the first long one is
#: the canonical. A tuple of constants rather than an object, because Python builds it
#: when compiling this module: loading every declaration costs the per-instance door
#: ~1 µs instead of the ~45 µs a class and its instances would.
NAMES: Final = 0
DEST: Final = 1
KIND: Final = 2
HELP: Final = 3
METAVAR: Final = 4
CHOICES: Final = 5
CONST: Final = 6

if TYPE_CHECKING:
    Flag: TypeAlias = tuple[
        tuple[str, ...], str, str, str, str | None, tuple[str, ...] | None, str | None
    ]


# -- the declarations --------------------------------------------------------------------
#    (names, dest, kind, help, metavar, choices, const)

DATADIR: Flag = (("-d", "--datadir"), "datadir", VALUE,
    "root of the packed tree (required)", None, None, None)  # fmt: skip
LOGDIR: Flag = (("-l", "--logdir"), "logdir", VALUE,
    "pypx log folder; records are written only when given", None, None, None)  # fmt: skip
PARENTS: Flag = (("--parents",), "parents", BOOL,
    "create missing parent folders of --datadir and --logdir (default: only the last folder "
    "is created, so that a mistyped path is refused rather than made)", None, None, None)  # fmt: skip
#: Where instances and records go: every door.
DESTINATION = (DATADIR, LOGDIR, PARENTS)

CLEANUP: Flag = (("--cleanup",), "cleanup", BOOL,
    "move instead of copy: the source is removed only once its copy and records are complete",
    None, None, None)  # fmt: skip
FSYNC: Flag = (("--fsync",), "fsync", BOOL,
    "fsync each file and record before reporting success (durable across a power cut; slower)",
    None, None, None)  # fmt: skip
LOG_NDJSON: Flag = (("--log-ndjson",), "log_ndjson", OPTIONAL,
    "one JSON line per instance (src, dst, size, PatientID, StudyInstanceUID, "
    "SeriesInstanceUID, SOPInstanceUID, missing, error, error_kind): on stdout, or appended "
    "to PATH with --log-ndjson=PATH",
    "PATH", None, "-")  # fmt: skip
#: How each instance is filed and reported: every door (listen takes FSYNC and LOG_NDJSON).
FILING = (CLEANUP, FSYNC, LOG_NDJSON)

INDEX_PATH: Flag = (("--index",), "index", VALUE,
    "the index of filed instances, read by `dicom-repack status`: an SQLite file (default: "
    "dicom-repack-index.sqlite in --logdir; none without --logdir), or a PostgreSQL server, "
    "postgresql://user@host/db (pip install 'dicom-repack[postgres]'; its rows wait in "
    "--logdir until written: docs/scale.md)",
    "PATH|URL", None, None)  # fmt: skip
NO_INDEX: Flag = (("--no-index",), "no_index", BOOL, "write no index", None, None, None)
HOST_ID: Flag = (("--host-id",), "host_id", VALUE,
    "who files, in every index row and --log-ndjson line, so that receivers sharing one "
    "data/log tree and index are told apart (default: this machine's host name)",
    "NAME", None, None)  # fmt: skip
#: The index (core/index.py) and the identity its rows carry: every door that files.
INDEX = (INDEX_PATH, NO_INDEX, HOST_ID)

LAYOUT_HELP = """\
  Where each instance goes. Default: rx-repack 1.0's tree; any px-repack template
  option selects px-repack's defaults for the others (unless --layout rx). Templates
  use px-repack's language: %Keyword, %_pad|W,C_Keyword, %_md5|N_Keyword,
  %_seahash|N_Keyword, %_strmsk|MASK_Keyword, %_nospc|C_Keyword."""
#: Where in the tree: every door (the names are px-repack's).
LAYOUT: tuple[Flag, ...] = (
    (("--layout",), "layout", VALUE,
        "rx (default): rx-repack 1.0's tree (series number padded to 5 digits, an empty "
        "element -> its keyword); px: px-repack 3.12.6's",
        None, ("rx", "px"), None),
    (("--rootDirTemplate",), "root_template", VALUE, "e.g. %%PatientID-%%PatientName",
        "T", None, None),
    (("--studyDirTemplate",), "study_template", VALUE, "", "T", None, None),
    (("--seriesDirTemplate",), "series_template", VALUE, "", "T", None, None),
    (("--imageTemplate", "--imageFileTemplate"), "image_template", VALUE, "", "T", None, None),
)  # fmt: skip

JOBS: Flag = (("-j", "--jobs"), "jobs", INT, "worker processes (default: all cores)",
    None, None, None)  # fmt: skip
VERBOSE: Flag = (("-v", "--verbose"), "verbose", BOOL,
    "let pydicom's warnings about damaged files through (default: one line per "
    "failed instance, nothing else)",
    None, None, None)  # fmt: skip

#: The batch door's own options.
BATCH: tuple[Flag, ...] = (
    JOBS,
    (("--dask",), "dask", VALUE,
        "run on a Dask distributed cluster: a scheduler address (tcp://host:8786), "
        "or local:N for N local worker processes (pip install 'dicom-repack[dask]'); "
        "see docs/scale.md",
        "ADDRESS", None, None),
    (("--summary-json",), "summary_json", VALUE, "also write the summary as JSON to FILE",
        "FILE", None, None),
    (("--strict",), "strict", BOOL, "count non-DICOM files as failures", None, None, None),
    (("--no-progress",), "no_progress", BOOL, "no progress bar even on a terminal",
        None, None, None),
    VERBOSE,
)  # fmt: skip

#: The watch door's own options (beside JOBS and VERBOSE).
WATCH: tuple[Flag, ...] = (
    (("--poll",), "poll", VALUE,
        "poll the folders every SECONDS instead of using inotify events (automatic on NFS, "
        "CIFS, FUSE, or when a watch cannot be added)",
        "SECONDS", None, None),
    (("--settle",), "settle", VALUE,
        "a file that appeared without a close event (polling, a hard link, a file found at "
        "start) counts as complete once its size and mtime have not changed for SECONDS "
        "(default 1)",
        "SECONDS", None, None),
    (("--ignore",), "ignore", APPEND,
        "also leave files matching GLOB alone (repeatable; always left: .*, *.part, *.tmp)",
        "GLOB", None, None),
    (("--retry-failed",), "retry_failed", BOOL,
        "at start, try again files that failed before even if unchanged (default: a failed "
        "file is tried again only once it changes)",
        None, None, None),
)  # fmt: skip

#: The per-instance door's own options (px-repack's names and short forms).
INSTANCE: tuple[Flag, ...] = (
    (("-p", "--xcrdir"), "xcrdir", VALUE, "folder holding the received file",
        "DIR", None, None),
    (("-f", "--xcrfile"), "xcrfile", VALUE, "the file's name in --xcrdir", "FILE", None, None),
    (("--xcrdirfile",), "xcrdirfile", VALUE,
        "the file as one path (instead of --xcrdir/--xcrfile)", "PATH", None, None),
    (("--parseAllFilesWithSubStr",), "substr", VALUE,
        "repack every file in --xcrdir whose name contains one of the comma-separated "
        'SUBSTRs ("," means every file)',
        "SUBSTR", None, None),
    (("-v", "--verbosity"), "verbosity", VALUE,
        "0 (default): quiet on success; 1: print the destination; 2: also let pydicom's "
        "warnings about a damaged file through",
        "N", None, None),
    (("--JSONargs",), "jsonargs", VALUE, "px-repack's JSON form of the options",
        "JSON", None, None),
    (("--debug",), "debug", BOOL, "accepted for px-repack compatibility; ignored",
        None, None, None),
    (("-x", "--desc", "-y", "--synopsis"), "help", BOOL,
        "px-repack's help flags: print this help", None, None, None),
    (("--version",), "version", BOOL, "print the version", None, None, None),
)  # fmt: skip


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
    table = {BOOL: bools, VALUE: values, INT: values, OPTIONAL: optional}
    for flag in flags:
        for name in flag[NAMES]:
            table[flag[KIND]][name] = flag[DEST]
    return bools, values, optional


def optional_const(flags: Iterable[Flag]) -> dict[str, str]:
    """dest -> the value a bare optional-value flag stands for (``--log-ndjson`` -> ``-``)."""
    return {f[DEST]: f[CONST] or "" for f in flags if f[KIND] == OPTIONAL}


def parse_plain(
    argv: list[str], flags: Iterable[Flag], *, positional: str, required: Iterable[str] = ()
) -> dict[str, object] | None:
    """``argv`` as argparse would parse it, when it is a plain command line; else None.

    The batch door's parser: argparse costs a batch ~8 ms of CPU before its first
    instance (importing it brings ``re``, ``enum``, ``gettext``, then ``locale`` and
    ``shutil`` when it builds a parser), a sixth of a small batch's cost. Plain means:
    every flag by one of its declared names (``--name value``, ``--name=value``,
    ``-j 2``), values that do not start with ``-``, and the positional words
    (``positional``: one or more, as ``nargs="+"``) in one run. Anything else -- ``-h``,
    an abbreviated, unknown or clustered flag, ``--``, a value that is not a whole
    number or not among its choices, a required flag or the positional words missing
    -- returns None, and the caller hands ``argv`` to argparse, for its result, its
    error message or its help. The result is ``vars()`` of argparse's namespace
    (tests/test_doors_options.py holds the two equal on generated command lines).
    """
    by_name: dict[str, Flag] = {}
    values: dict[str, object] = {}
    for flag in flags:
        values[flag[DEST]] = False if flag[KIND] == BOOL else None
        for name in flag[NAMES]:
            by_name[name] = flag
    words: list[str] = []
    closed = False  # an option came after the positional words: they may not resume
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "-" or not arg.startswith("-"):
            if closed:
                return None  # argparse: "unrecognized arguments"
            words.append(arg)
            continue
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        found = by_name.get(name)
        if found is None or (eq and not inline):
            return None
        closed = bool(words)
        kind = found[KIND]
        if kind == BOOL:
            if eq:
                return None
            values[found[DEST]] = True
            continue
        value: object
        if eq:
            value = inline
        elif i < len(argv) and not argv[i].startswith("-"):
            value = argv[i]
            i += 1
        elif kind == OPTIONAL and (i == len(argv) or argv[i] != "-"):
            value = found[CONST]
        else:
            return None
        if kind == INT:
            try:
                value = int(str(value))
            except ValueError:
                return None
        choices = found[CHOICES]
        if choices is not None and value not in choices:
            return None
        values[found[DEST]] = value
    if not words or any(values.get(dest) is None for dest in required):
        return None
    values[positional] = words
    return values


def long_name(flag: Flag) -> str:
    """The flag's canonical name: its first long one (``--datadir``)."""
    return next(n for n in flag[NAMES] if n.startswith("--"))


# -- parser 2: argparse ------------------------------------------------------------------


def add_arguments(
    parser: ArgumentTarget,
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
        names, dest, kind, help_text, metavar, choices, const = flag
        names += tuple((aliases or {}).get(dest, ()))
        kw: dict[str, object] = {"dest": dest, "help": help_text or None}
        if kind == BOOL:
            kw["action"] = "store_true"
        elif kind == APPEND:
            kw["action"] = "append"
            kw["metavar"] = metavar
        else:
            if kind == INT:
                kw["type"] = int
            if metavar:
                kw["metavar"] = metavar
            if choices:
                kw["choices"] = choices
            if kind == OPTIONAL:
                kw["nargs"] = "?"
                kw["const"] = const
            if dest in must:
                kw["required"] = True
        target.add_argument(*names, **kw)


def index_from(values: Mapping[str, object]) -> str | bool:
    """What :class:`~..core.repack.Config` takes as ``index`` from the INDEX options:
    a path, True (the default place, in the log folder) or False (none)."""
    if values.get("no_index"):
        return False
    path = values.get("index")
    return str(path) if path else True


def host_from(values: Mapping[str, object]) -> str:
    """The filing host's identity (``--host-id``): the value given, else the host name.

    The host name as ``socket.gethostname()`` gives it, read with ``os.uname()``
    (the same kernel field, without importing ``socket`` into the per-instance door).
    """
    given = values.get("host_id")
    if given:
        return str(given)
    import os

    return os.uname().nodename


def config_from(values: Mapping[str, object], layout: Layout, **more: object) -> Config:
    """The job's :class:`~..core.repack.Config` from a door's DESTINATION, FILING and
    INDEX options (``values``: dest -> what was given) and its ``layout``: the one place
    a door's flags become a Config (``more``: the door's own, e.g. ``index_mode``)."""
    from ..core.repack import Config

    logdir = values.get("logdir")
    return Config(
        str(values["datadir"]),
        None if logdir is None else str(logdir),
        layout,
        fsync=bool(values.get("fsync")),
        index=index_from(values),
        host=host_from(values),
        **more,  # type: ignore[arg-type]  # Config checks its keywords
    )


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
