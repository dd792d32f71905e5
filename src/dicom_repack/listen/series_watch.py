"""Series completion: "no new instance for N seconds" becomes one notification.

DICOM has no end-of-series message, so a receiver can only infer it from
silence (oxidicom does the same and publishes a task-queue message). When a
series has been idle for ``idle`` seconds, :class:`SeriesWatch` runs the
``--on-series-complete`` command with the series folder and UIDs, or, without a
command, writes one JSON event line. An instance arriving later for the same
series starts a new round (and a second notification), which downstream tools
must tolerate anyway: senders resend.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SeriesEvent", "SeriesWatch", "command_argv"]

LOG = logging.getLogger("dicom_repack.listen")


@dataclass(slots=True)
class SeriesEvent:
    """One series that went quiet: where it is and what it is."""

    folder: str
    patient_id: str
    study_uid: str
    series_uid: str
    instances: int
    first_seen: float
    last_seen: float

    def as_dict(self) -> dict[str, object]:
        return {
            "event": "series-complete",
            "folder": self.folder,
            "PatientID": self.patient_id,
            "StudyInstanceUID": self.study_uid,
            "SeriesInstanceUID": self.series_uid,
            "instances": self.instances,
        }


def command_argv(template: str, event: SeriesEvent) -> list[str]:
    """The argv for ``--on-series-complete``: the template split like a shell would,
    with ``{folder}``, ``{patient_id}``, ``{study_uid}``, ``{series_uid}`` and
    ``{instances}`` replaced in each word. Never passed through a shell, so a
    tag value cannot inject a command.
    """
    fields = {
        "folder": event.folder,
        "patient_id": event.patient_id,
        "study_uid": event.study_uid,
        "series_uid": event.series_uid,
        "instances": str(event.instances),
    }
    argv = []
    for word in shlex.split(template):
        for key, value in fields.items():
            word = word.replace("{" + key + "}", value)
        argv.append(word)
    return argv


class SeriesWatch:
    """Tracks series by their last instance; fires once each goes quiet.

    ``seen`` is called from the association threads for every filed instance; a
    single background thread does the firing, so a slow hook delays other
    notifications but never the receiving.
    """

    def __init__(
        self,
        idle: float,
        command: str | None = None,
        emit: Callable[[dict[str, object]], None] | None = None,
        command_timeout: float = 600.0,
    ) -> None:
        self.idle = idle
        self.command = command
        self.emit = emit
        self.command_timeout = command_timeout
        self.fired = 0
        self.hook_failures = 0
        self._series: dict[tuple[str, str], SeriesEvent] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="series-watch", daemon=True)

    def start(self) -> SeriesWatch:
        self._thread.start()
        return self

    def seen(self, folder: str, patient_id: str, study_uid: str, series_uid: str) -> None:
        """Note one filed instance of a series (folder = where its file was placed)."""
        now = time.monotonic()
        key = (study_uid, series_uid)
        with self._lock:
            ev = self._series.get(key)
            if ev is None:
                self._series[key] = SeriesEvent(
                    folder, patient_id, study_uid, series_uid, 1, now, now
                )
            else:
                ev.instances += 1
                ev.last_seen = now
                ev.folder = folder

    def pending(self) -> int:
        with self._lock:
            return len(self._series)

    def close(self, flush: bool = True) -> None:
        """Stop the watcher; with ``flush``, notify every series still open (shutdown)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if flush:
            with self._lock:
                due = list(self._series.values())
                self._series.clear()
            for ev in due:
                self._fire(ev)

    def _run(self) -> None:
        tick = min(1.0, max(0.05, self.idle / 4))
        while not self._stop.wait(tick):
            now = time.monotonic()
            with self._lock:
                due = [k for k, ev in self._series.items() if now - ev.last_seen >= self.idle]
                events = [self._series.pop(k) for k in due]
            for ev in events:
                self._fire(ev)

    def _fire(self, ev: SeriesEvent) -> None:
        self.fired += 1
        if not self.command:
            if self.emit is not None:
                self.emit(ev.as_dict())
            return
        argv = command_argv(self.command, ev)
        env = dict(
            os.environ,
            DICOM_REPACK_SERIES_DIR=ev.folder,
            DICOM_REPACK_PATIENT_ID=ev.patient_id,
            DICOM_REPACK_STUDY_UID=ev.study_uid,
            DICOM_REPACK_SERIES_UID=ev.series_uid,
            DICOM_REPACK_SERIES_INSTANCES=str(ev.instances),
        )
        try:
            done = subprocess.run(
                argv, env=env, timeout=self.command_timeout, check=False, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.SubprocessError) as exc:
            self.hook_failures += 1
            LOG.error("--on-series-complete %s failed: %s", shlex.join(argv), exc)
            return
        if done.returncode != 0:
            self.hook_failures += 1
            LOG.error("--on-series-complete %s exited %d", shlex.join(argv), done.returncode)
        if self.emit is not None:
            self.emit({**ev.as_dict(), "command": argv, "returncode": done.returncode})
