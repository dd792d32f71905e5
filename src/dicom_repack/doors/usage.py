"""How every door talks about its command line: one convention, declared once.

* A usage error (unknown flag, bad value, missing ``--datadir``) is ONE line on
  stderr, ``dicom-repack <door>: <message> (see --help)``, and exit status 2
  (:data:`~..core.errors.EXIT_USAGE`): an operator's log or a unit's journal keeps
  one line per refusal, not argparse's usage block.
* ``--version`` works alone in every door (nothing else required).
* ``--help`` shows each option's default (when it has one worth showing).

Imported only when a door builds its argparse parser (never on the per-instance
door's hot path): it imports argparse.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from .. import __version__
from ..core.errors import EXIT_USAGE

__all__ = ["DefaultsFormatter", "OneLineParser", "RawDefaultsFormatter", "usage_line"]


def usage_line(prog: str, message: str) -> str:
    """The one line a usage error prints (newline included, control characters escaped)."""
    from ..core.errors import one_line

    return f"{prog}: {one_line(message)} (see --help)\n"


class DefaultsFormatter(argparse.HelpFormatter):
    """argparse's help with ``(default: X)`` after each option that has a default.

    Unlike argparse's ArgumentDefaultsHelpFormatter, it says nothing for a flag
    (default False) or an option without a default (None), nor when the help
    already names its default in words.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            default is None
            or default is False
            or default is argparse.SUPPRESS
            or not action.option_strings
            or "default" in text
            or isinstance(action, argparse._VersionAction)
        ):
            return action.help
        shown = "%(default)s" if not isinstance(default, list) else ",".join(map(str, default))
        head, env, tail = text.rpartition(" [env: ")  # listen/watch: the variable goes last
        if env:
            return f"{head} (default: {shown}){env}{tail}".strip()
        return f"{text} (default: {shown})".strip()


class RawDefaultsFormatter(DefaultsFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`DefaultsFormatter` that keeps the description and epilog as written."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser with the project's conventions (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--version",
            action="version",
            version=f"dicom-repack {__version__}",
            help="print the version and exit",
        )

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, usage_line(self.prog, message))
