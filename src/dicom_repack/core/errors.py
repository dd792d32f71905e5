"""The errors the job can end with, each naming the file it is about.

Every door turns these into a one-line message and a non-zero exit (or a DIMSE
failure status); nothing else should escape the job. Every error dicom-repack
raises on purpose derives from :class:`DicomRepackError` and carries a stable
``code``: the NDJSON ``error_kind``, the ``kind`` label of ``/metrics`` and
:attr:`.outcome.Outcome.kind` are that code, never a class name, so renaming a
class changes nothing a user reads (the codes are a contract: docs/api.md).
Doors decide what to do from an error's attributes, never from its class name:

``skippable``
    the input is not an instance at all (not DICOM): a batch counts it and moves on;
``retryable``
    the failure is the destination's (disk full, permissions): the same instance
    may well be filed if sent again later (a receiver answers "out of resources").
"""

from __future__ import annotations


def one_line(text: str) -> str:
    r"""``text`` as part of one printed or logged line: every control character escaped.

    A newline (or CR, ESC, ...) in a file name or a tag value would otherwise
    start a line of its own in stderr, a log file or the journal, one that looks
    like the tool wrote it (``dicom-repack: ... filed``). Every door's error lines,
    the batch's summary and listen's log lines go through here. ``\n``, ``\r``
    and ``\t`` are shown so, other non-printable characters as ``\xNN`` /
    ``\uNNNN``; a file name's undecodable byte (a surrogate) as ``\xNN``, the byte.
    Text that needs nothing (nearly all) costs one ``isprintable`` call.
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
            continue
        code = ord(ch)
        if ch in _NAMED:
            out.append(_NAMED[ch])
        elif 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for an undecodable byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


class DicomRepackError(Exception):
    """Base of every error dicom-repack raises on purpose (catch this for "any of ours")."""

    #: a stable name for this kind of error (see the module doc)
    code = "DicomRepackError"


class RepackError(DicomRepackError):
    """Base of every error that means "this instance was not filed"."""

    code = "RepackError"

    #: not an instance at all: a batch skips and counts it rather than failing
    skippable = False
    #: the destination's fault (disk, permissions): retrying later may work
    retryable = False
    #: (skippable) a FIFO, socket, device or folder: never read
    not_regular = False

    def __init__(self, path: str, reason: str, *, errno: int | None = None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        #: the OSError's errno behind it, if any: tells a failing destination
        #: (read-only, full) apart (core/destination.py: is_destination_errno)
        self.errno = errno


class SourceError(RepackError):
    """The input could not be read at all (vanished, no permission, I/O error)."""

    code = "SourceError"


class NotDicomError(RepackError):
    """The input is not a DICOM Part 10 file (empty, no 'DICM' after the preamble)."""

    code = "NotDicomError"
    skippable = True


class NotRegularFileError(NotDicomError):
    """The input is a FIFO, socket, device or folder: never read, skipped like non-DICOM."""

    code = "NotRegularFileError"
    not_regular = True


class TruncatedError(RepackError):
    """The input starts as DICOM but ends before its last element does."""

    code = "TruncatedError"


class MissingElementError(RepackError):
    """An element the layout or the records cannot do without is absent or empty."""

    code = "MissingElementError"


class PlacementError(RepackError):
    """The file could not be put at its destination (disk full, permissions, ...)."""

    code = "PlacementError"
    retryable = True


class UnsafePathError(PlacementError):
    """A folder inside the data or log folder is a symbolic link (or not a folder).

    Writing through it could leave the data or log folder, so nothing is written
    there until an operator removes it; retrying does not help.
    """

    code = "UnsafePathError"
    retryable = False


class RecordError(RepackError):
    """The file was placed but a pypx record could not be written."""

    code = "RecordError"
    retryable = True


class TemplateError(DicomRepackError, ValueError):
    """A layout template names an unknown keyword or function (refused at start)."""

    code = "TemplateError"


#: the code of an instance whose worker process died while it was in hand (batch, watch):
#: not known to be filed (no exception: the outcome is made by the parent)
WORKER_LOST = "WorkerLost"


# -- what a door's exit status says (every door returns one of these) ----------------------

#: everything asked for was filed (skipped non-DICOM inputs included, unless --strict)
EXIT_OK = 0
#: at least one instance was not filed (each named in one line on stderr), or the
#: destination failed or cannot be written (refused at start, or the batch stopped early)
EXIT_FAILED = 1
#: the command line is wrong (unknown flag, bad template, missing --datadir): nothing done
EXIT_USAGE = 2
#: interrupted (Ctrl-C): files already filed stay filed, nothing is half-written
EXIT_INTERRUPTED = 130
