"""What a receiving door did, counted: connections, associations, instances, bytes.

Its own module so that a door counting without the network (``watch``) does not
import the association machinery (``scp``: pynetdicom and pydicom, ~0.3 s).
"""

from __future__ import annotations

import threading

__all__ = ["Counters"]


class Counters:
    """What the server did, for the summary at shutdown; safe to bump from any thread."""

    NAMES = (
        "connections",
        "dropped",
        "associations",
        "rejected",
        "evicted",
        "aborted",
        "released",
        "echoes",
        "stored",
        "failed",
        "spooled",
        "bytes",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self.NAMES, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)
