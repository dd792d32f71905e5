"""Running ``listen`` as a service: a config file, log lines, a log file SIGHUP reopens.

Where each option's value comes from, first match wins (docs/service.md):

1. the command line (``--port 104``);
2. the environment (``DICOM_REPACK_LISTEN_PORT=104``);
3. the config file (``--config FILE`` or ``DICOM_REPACK_LISTEN_CONFIG``), TOML
   with the options' long names as keys (``port = 104``, ``allow-calling =
   ["PACS1", "PACS2"]``, ``fsync = true``; ``-`` or ``_`` alike);
4. the built-in defaults.

Log lines carry a UTC timestamp and a level (``2026-11-26T08:50:01.123Z INFO
...``) and go to ``--log-file`` when given, else to stderr (journald adds its
own time stamps, but a file needs them). SIGHUP reopens the log file, so
logrotate can move it away; a moved file is also noticed on the next line.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import signal
import threading
import time

from ..core.errors import DicomRepackError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..doors.usage import OneLineParser, Option

__all__ = [
    "ConfigError",
    "add_series_arguments",
    "add_service_arguments",
    "apply_config_file",
    "apply_environment",
    "seconds",
    "setup_logging",
]

#: listen's config file variable (each door's is its prefix + CONFIG)
CONFIG_ENV = "DICOM_REPACK_LISTEN_CONFIG"
_TRUE = {"1", "true", "yes", "on"}


class ConfigError(DicomRepackError, ValueError):
    """The config file cannot be read or names an option that does not exist (one line)."""

    code = "ConfigError"


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--http`` and ``--log-file``: the service options of ``listen``."""
    group = parser.add_argument_group("service")
    group.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file of options (keys: the long option names); flags and env vars win",
    )
    group.add_argument(
        "--http",
        type=parse_address,
        metavar="[HOST:]PORT",
        help="serve a live page, /metrics (Prometheus) and /healthz here "
        "(default: off; HOST defaults to 127.0.0.1)",
    )
    group.add_argument(
        "--log-file",
        metavar="PATH",
        help="append log lines here instead of stderr (SIGHUP reopens it, for logrotate)",
    )


def seconds(text: str) -> float:
    """An argparse type: a finite, non-negative number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a duration in seconds")
    return value


def add_series_arguments(group: argparse.ArgumentParser) -> None:
    """``--series-idle``, ``--on-series-complete`` and ``--log-level``: the receiving
    doors' (listen, watch) series hook and log level, declared once."""
    group.add_argument(
        "--series-idle",
        type=seconds,
        default=0.0,
        help="s without a new instance after which a series counts as complete "
        "(default: off, or 10 with --on-series-complete)",
    )
    group.add_argument(
        "--on-series-complete",
        metavar="CMD",
        help="command run per complete series; {folder} {patient_id} {study_uid} {series_uid} "
        "{instances} are replaced (also in DICOM_REPACK_SERIES_* env vars). Without it, an "
        "event line is written (to --log-ndjson, else stdout)",
    )
    group.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error"),
        help="debug, info, warning (default), error",
    )


def parse_address(text: str) -> tuple[str, int]:
    """``--http``: ``8080`` -> (127.0.0.1, 8080); ``0.0.0.0:8080``; ``[::1]:8080``."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"--http wants [HOST:]PORT, not {text!r}")
    return host, int(port)


def _config_path(argv: list[str], env_prefix: str) -> str | None:
    """--config from the command line (parsed ahead), else from ``<env_prefix>CONFIG``."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return os.environ.get(env_prefix + "CONFIG") or None


def apply_environment(parser: OneLineParser, env_prefix: str) -> None:
    """Take each option's default from ``<env_prefix><DEST>`` when it is set, and name
    that variable in the option's help.

    A value the option's type refuses raises ValueError naming the variable.
    """
    for option in parser.declared.values():
        action = option.action
        if action.dest in ("help", "version"):
            continue
        name = env_prefix + action.dest.upper()
        action.help = f"{action.help or ''} [env: {name}]".strip()
        raw = os.environ.get(name)
        if raw is None:
            continue
        try:
            action.default = _convert(option, raw)
        except ValueError as exc:
            raise ValueError(f"{name}={raw!r}: {exc}") from None
        action.required = False


def apply_config_file(parser: OneLineParser, argv: list[str], env_prefix: str) -> str | None:
    """Make the config file's values the defaults of ``parser``'s options.

    An option whose ``<env_prefix><DEST>`` variable is set keeps the
    environment's value (the environment wins over the file). Returns the file
    read, or None. Raises ConfigError naming the file and key.
    """
    path = _config_path(argv, env_prefix)
    if not path:
        return None
    import tomllib

    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not TOML: {exc}") from None
    door = env_prefix.rstrip("_").rsplit("_", 1)[-1].lower()  # "listen", "watch"
    if isinstance(table.get(door), dict):  # a [listen] / [watch] table is accepted too
        table = {**{k: v for k, v in table.items() if k != door}, **table[door]}
    for key, value in table.items():
        dest = key.replace("-", "_")
        option = parser.declared.get(dest)
        if option is None or dest in ("help", "version", "config"):
            raise ConfigError(f"--config {path}: unknown option {key!r}")
        if os.environ.get(env_prefix + dest.upper()) is not None:
            continue
        try:
            option.action.default = _convert(option, value)
        except ValueError as exc:
            raise ConfigError(f"--config {path}: {key} = {value!r}: {exc}") from None
        option.action.required = False
    return path


def _convert(option: Option, value: object) -> object:
    """A value from a config file or the environment (always text), as the option's
    default: a flag takes true/false, an appending option a list, any other one value
    of its type and choices. ValueError says why not."""
    action = option.action
    if option.kind == "store_true":
        if isinstance(value, str):
            return value.strip().lower() in _TRUE
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if option.kind == "append":
        items = value if isinstance(value, list) else [value]
        return [str(v) for v in items]
    if isinstance(value, (dict, list)):
        raise ValueError("expected a single value")
    try:
        out = action.type(str(value)) if callable(action.type) else str(value)
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise ValueError(str(exc)) from None
    if action.choices is not None and out not in action.choices:
        raise ValueError(f"not one of {', '.join(map(str, action.choices))}")
    return out


class _UTCFormatter(logging.Formatter):
    """``2026-11-26T08:50:01.123Z INFO dicom-repack listen: message``."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The line, its control characters escaped (core/errors.py ``one_line``): a
        file name or UID with a newline in it cannot forge a line of its own. (A
        traceback, appended after this, keeps its lines.)"""
        from ..core.errors import one_line

        return one_line(super().formatMessage(record))


FORMAT = "%(asctime)s %(levelname)s dicom-repack {door}: %(message)s"


def setup_logging(level: str, log_file: str | None, door: str = "listen") -> logging.Handler:
    """Configure the root logger: timestamped lines to ``log_file`` or stderr.

    With a file, SIGHUP reopens it (a WatchedFileHandler also notices a file
    moved away by logrotate on its next line). Raises OSError if the file
    cannot be opened.
    """
    handler: logging.Handler
    if log_file:
        handler = logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")
        _reopen_on_sighup(handler)
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(_UTCFormatter(FORMAT.replace("{door}", door)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, str(level).upper(), logging.WARNING))
    return handler


def _reopen_on_sighup(handler: logging.handlers.WatchedFileHandler) -> None:
    def reopen() -> None:
        handler.acquire()
        try:
            if handler.stream is not None:
                handler.stream.close()
            handler.stream = handler._open()
            handler._statstream()
        finally:
            handler.release()
        logging.getLogger("dicom_repack.listen").info("log file reopened (SIGHUP)")

    def on_hup(_signum: int, _frame: object) -> None:
        # not in the handler itself: the main thread may hold the handler's lock
        threading.Thread(target=reopen, name="log-reopen", daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, on_hup)
