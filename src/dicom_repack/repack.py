"""One instance through the job: header -> layout -> place -> records -> Outcome.

Every door (per-instance, batch, listen, bench) calls :class:`Repacker`; none of
them re-implements a step. (Stub: being written.)
"""

from __future__ import annotations

from dataclasses import dataclass

from .outcome import Outcome


@dataclass(frozen=True, slots=True)
class Config:
    """Where to file instances and how to name them."""

    datadir: str
    logdir: str | None = None
    layout: object = None  # layout.Layout; None means the rx-repack 1.0 layout


class Repacker:
    """Files instances under ``config``; keeps small bounded caches between calls."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def repack_path(self, src: str, *, move: bool = False) -> Outcome:
        """File the Part 10 file at ``src`` (copied, or moved when ``move``). Never raises
        for a bad instance: the Outcome carries the error."""
        raise NotImplementedError

    def repack_buffer(self, data: bytes | memoryview, *, origin: str = "<network>") -> Outcome:
        """File a complete Part 10 file held in memory (preamble, 'DICM', file meta,
        dataset), e.g. as a receiver got it. Written once, straight to its final
        path (temporary file in the destination folder, then rename)."""
        raise NotImplementedError
