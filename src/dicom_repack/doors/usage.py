"""How every door talks about its command line: one convention, declared once.

* A usage error (unknown flag, bad value, missing ``--datadir``) is ONE line on
  stderr, ``dicom-repack <door>: <message> (see --help)``, and exit status 2
  (:data:`~..core.errors.EXIT_USAGE`): an operator's log or a unit's journal keeps
  one line per refusal, not argparse's usage block.
* ``--version`` works alone in every door (nothing else required).
* ``--help`` shows each option's default (when it has one worth showing).
* Every option a door declares is recorded as it is declared
  (:attr:`OneLineParser.declared`): argparse has no public list of its options,
  and a config file or the environment (listen, watch) sets their defaults.

Imported only when a door builds its argparse parser (never on the per-instance
door's hot path): it imports argparse.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from .. import __version__
from ..core.errors import EXIT_USAGE

__all__ = [
    "DefaultsFormatter",
    "OneLineParser",
    "Option",
    "RawDefaultsFormatter",
    "usage_line",
]

_Group = TypeVar("_Group")


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
            or action.dest == "version"
        ):
            return action.help
        shown = "%(default)s" if not isinstance(default, list) else ",".join(map(str, default))
        head, env, tail = text.rpartition(" [env: ")  # listen/watch: the variable goes last
        if env:
            return f"{head} (default: {shown}){env}{tail}".strip()
        return f"{text} (default: {shown})".strip()


class RawDefaultsFormatter(DefaultsFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`DefaultsFormatter` that keeps the description and epilog as written."""


@dataclass(frozen=True)
class Option:
    """One declared option: argparse's Action and the ``action`` it was declared with
    (``"store"``, ``"store_true"``, ``"append"``, ...), which says how a value from a
    config file or the environment becomes its default."""

    action: argparse.Action
    kind: str

    @property
    def dest(self) -> str:
        return self.action.dest


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser with the project's conventions (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        #: every option (not positional) declared on the parser or its groups, by dest,
        #: in declaration order (``--help`` and ``--version`` included)
        self.declared: dict[str, Option] = {}
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--version",
            action="version",
            version=f"dicom-repack {__version__}",
            help="print the version and exit",
        )

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, usage_line(self.prog, message))

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        return self._declare(super().add_argument, args, kwargs)

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        return self._recording(super().add_argument_group(*args, **kwargs))

    def add_mutually_exclusive_group(self, *args: Any, **kwargs: Any) -> Any:
        return self._recording(super().add_mutually_exclusive_group(*args, **kwargs))

    def _declare(self, add: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> argparse.Action:
        action: argparse.Action = add(*args, **kwargs)
        if action.option_strings:
            kind = kwargs.get("action", "store")
            self.declared[action.dest] = Option(action, kind if isinstance(kind, str) else "")
        return action

    def _recording(self, group: _Group) -> _Group:
        """``group`` with its ``add_argument`` recording into :attr:`declared` too."""
        add = group.add_argument  # type: ignore[attr-defined]

        def add_argument(*args: Any, **kwargs: Any) -> argparse.Action:
            return self._declare(add, args, kwargs)

        setattr(group, "add_argument", add_argument)  # noqa: B010 (an instance's method)
        add_group = getattr(group, "add_mutually_exclusive_group", None)
        if add_group is not None:  # a group's own exclusive groups record too

            def add_mutually_exclusive_group(*args: Any, **kwargs: Any) -> Any:
                return self._recording(add_group(*args, **kwargs))

            setattr(group, "add_mutually_exclusive_group", add_mutually_exclusive_group)  # noqa: B010
        return group
