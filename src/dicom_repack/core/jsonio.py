"""JSON for the pypx records, without importing ``json``.

``import json`` pulls in ``re`` and ``enum`` (~7 ms), more than the whole
per-instance budget. The C accelerator ``_json`` that ``json`` itself uses is
cheap to import, so records are encoded and parsed with it directly. The output
is byte-identical to ``json.dumps(obj, indent=4)`` (what pypx writes); a test
holds the two equal.
"""

from __future__ import annotations

import _json
import os
import sys

from .errors import DicomRepackError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["JSONError", "NdjsonLog", "dumps", "loads", "ndjson_line"]

_encode_str = _json.encode_basestring_ascii


class JSONError(DicomRepackError, ValueError):
    """The text is not valid JSON."""

    code = "JSONError"


def dumps(obj: object, indent: int | None = 4) -> str:
    """``json.dumps(obj, indent=indent)`` for dicts, lists, str, int, float, bool and None.

    ``indent=None`` gives json's one-line form (``", "`` and ``": "`` separators).
    """
    return _encode(obj, "\n", None if indent is None else " " * indent)


def ndjson_line(obj: object) -> str:
    """``obj`` as one NDJSON line, newline included: the one encoder of every door's
    ``--log-ndjson``. Compact (``,`` and ``:``), as rx-repack's serde_json writes it;
    equal to ``json.dumps(obj, separators=(",", ":")) + "\n"`` (a test holds them equal).
    """
    return _encode(obj, "", None, ",", ":") + "\n"


class NdjsonLog:
    """Where a door's ``--log-ndjson`` lines go: ``"-"`` is stdout, else a file appended to.

    Each line is one ``write`` of the whole line, under a lock (listen's threads),
    and flushed; a file is opened ``O_APPEND``, so lines from concurrent
    processes (storescp starting one per-instance door per file) never
    interleave. OSError from opening or writing propagates. Example::

        log = NdjsonLog(args.log_ndjson)  # "-" or a path
        log.write(outcome.as_dict())
        log.close()
    """

    def __init__(self, target: str) -> None:
        import _thread

        self.target = target
        self._lock = _thread.allocate_lock()
        self._fd = -1
        if target not in ("-", ""):
            self._fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def write(self, obj: object) -> None:
        line = ndjson_line(obj)
        with self._lock:
            if self._fd < 0:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                data = line.encode("utf-8")
                while data:
                    data = data[os.write(self._fd, data) :]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _encode(
    obj: object, newline: str, unit: str | None, comma: str = ", ", colon: str = ": "
) -> str:
    """Encode ``obj`` whose opening line is indented by ``newline`` (a newline + indent).

    ``unit=None``: on one line, items joined by ``comma``, keys by ``colon``.
    """
    if type(obj) is str:
        return _encode_str(obj)
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, str):
        return _encode_str(obj)
    if isinstance(obj, int):
        return int.__repr__(obj)
    if isinstance(obj, float):
        return _float(obj)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        if unit is None:
            return (
                "{"
                + comma.join(
                    f"{_encode_str(_key(k))}{colon}{_encode(v, '', None, comma, colon)}"
                    for k, v in obj.items()
                )
                + "}"
            )
        inner = newline + unit
        sep = "," + inner
        return (
            "{"
            + inner
            + sep.join(f"{_encode_str(_key(k))}: {_encode(v, inner, unit)}" for k, v in obj.items())
            + newline
            + "}"
        )
    if isinstance(obj, (list, tuple)):
        if not obj:
            return "[]"
        if unit is None:
            return "[" + comma.join(_encode(v, "", None, comma, colon) for v in obj) + "]"
        inner = newline + unit
        return (
            "[" + inner + ("," + inner).join(_encode(v, inner, unit) for v in obj) + newline + "]"
        )
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _key(key: object) -> str:
    if isinstance(key, str):
        return key
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        return _float(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value == float("inf"):
        return "Infinity"
    if value == -float("inf"):
        return "-Infinity"
    return float.__repr__(value)


class _Context:
    """The attributes ``_json.make_scanner`` reads from its ``json.JSONDecoder``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    def __init__(self) -> None:
        self.memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"-Infinity": -float("inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]


_scan = _json.make_scanner(_Context())  # type: ignore[arg-type]  # duck-typed JSONDecoder
_WS = " \t\n\r"


def loads(text: str) -> object:
    """Parse a JSON document (as ``json.loads``); raise JSONError if it is not one."""
    start = len(text) - len(text.lstrip(_WS))
    try:
        obj, end = _scan(text, start)
    except (StopIteration, ValueError, SystemError):
        # _json builds its error from json.decoder, and only when that module is
        # already imported: without it some errors surface as a bare SystemError.
        # Invalid records are rare, so json itself is imported here for the message.
        _raise_json_error(text)
    if text[end:].strip(_WS):
        raise JSONError(f"not JSON (extra data at character {end})")
    return obj


def _raise_json_error(text: str) -> NoReturn:
    import json

    try:
        json.loads(text)
    except ValueError as exc:
        raise JSONError(f"not JSON ({exc})") from None
    raise JSONError("not JSON")  # json accepted what the scanner refused: still refuse
