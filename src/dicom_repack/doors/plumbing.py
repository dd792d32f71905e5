"""What every door does around the job, written once: its lines, its exit statuses,
its NDJSON log, its check of the destination, pydicom's warnings.

* Every line a door prints for a person starts ``dicom-repack <door>: `` (the
  per-instance door, which has no door word: ``dicom-repack: ``) and is one line:
  control characters escaped (core/errors.py ``one_line``), so a file name or a tag
  value cannot forge a line of its own. A usage error adds `` (see --help)``
  (doors/usage.py, the argparse side).
* A door returns one of core/errors.py's ``EXIT_*`` statuses, never a bare number
  (README, "Exit status and errors").
* A door that cannot start raises :class:`Refused` with the line and status; its
  ``main`` says it with :func:`fail`.

Light on purpose (it imports nothing core/errors.py does not): the per-instance
door imports it only on the path that reports a failure.
"""

from __future__ import annotations

import sys

from ..core.errors import EXIT_FAILED, one_line

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core.jsonio import NdjsonLog

__all__ = [
    "PROGRAM",
    "Refused",
    "check_destinations",
    "check_index",
    "fail",
    "line",
    "open_ndjson",
    "prog",
    "say",
    "show_pydicom_warnings",
]

PROGRAM = "dicom-repack"


def prog(door: str) -> str:
    """``dicom-repack batch``; ``dicom-repack`` for the per-instance door (``""``)."""
    return f"{PROGRAM} {door}" if door else PROGRAM


def line(door: str, message: str) -> str:
    """The one line ``door`` prints for ``message`` (newline included)."""
    return f"{prog(door)}: {one_line(message)}\n"


def say(door: str, message: str) -> None:
    """``message`` as the door's one line on stderr."""
    sys.stderr.write(line(door, message))
    sys.stderr.flush()


def fail(door: str, message: str, status: int = EXIT_FAILED) -> int:
    """Say ``message`` and return ``status`` (the door's exit status)."""
    say(door, message)
    return status


class Refused(Exception):
    """The door cannot start (or go on): one line, and the exit status to leave with
    (``EXIT_FAILED`` when the machine says no: a folder, a port; ``EXIT_USAGE`` when the
    command line or configuration is wrong)."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


def check_destinations(datadir: str | None, logdir: str | None, *, parents: bool) -> None:
    """Refuse at start what would fail every instance: a data or log folder that cannot
    be created or written (core/destination.py). Raises :class:`Refused`."""
    from ..core.destination import DestinationError, check_writable

    for folder, flag in ((datadir, "--datadir"), (logdir, "--logdir")):
        if folder:
            try:
                check_writable(folder, flag, parents=parents)
            except DestinationError as exc:
                raise Refused(f"{exc}; nothing was done") from None


def check_index(index: str | None, logdir: str | None) -> str | None:
    """The ``--index`` checked at a resident door's start (core/index.py: ``check_index``):
    Refused (one line, exit 1) when it can never work (a link or FIFO at one of its
    files; for PostgreSQL no log folder, no psycopg, a newer schema); the warning to
    show when the server is away now (the door files on, its rows waiting); else None."""
    if not index:
        return None
    from ..core.index import IndexFailure
    from ..core.index import check_index as check

    try:
        return check(index, logdir)
    except IndexFailure as exc:
        raise Refused(f"{exc}; nothing was done") from None


def open_ndjson(target: str | None) -> NdjsonLog | None:
    """``--log-ndjson``'s log (``-``: stdout), or None when not asked for. Raises
    :class:`Refused` naming the file when it cannot be opened."""
    if target is None:
        return None
    from ..core.jsonio import NdjsonLog

    try:
        return NdjsonLog(target)
    except OSError as exc:
        raise Refused(f"--log-ndjson {target}: {exc.strerror or exc}") from None


def show_pydicom_warnings(show: bool) -> None:
    """Let pydicom's own warnings about a damaged file through (a door's ``-v``), or
    not (the default: the door's one line says why the instance was not filed)."""
    from ..core.header import show_pydicom_warnings as show_warnings

    show_warnings(show)
