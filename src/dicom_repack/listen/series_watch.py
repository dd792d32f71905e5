"""Series completion: "no new instance for N seconds" becomes one notification.

DICOM has no end-of-series message, so a receiver can only infer it from
silence (oxidicom does the same and publishes a task-queue message). When a
series has been idle for ``idle`` seconds, :class:`SeriesWatch` runs the
``--on-series-complete`` command with the series folder and UIDs, or, without a
command, writes one JSON event line.

**With an index** (the default with ``--logdir``), the decision is the shared
index's, not this process's: several receivers (``listen``/``watch`` processes,
each with its ``--host-id``) may file one series into one index, over several
associations. A series this process saw goes quiet locally; it then asks the
index (:meth:`.core.index.Index.series_now`): if any receiver filed an instance
of it less than ``idle`` seconds ago (max ``filed_at``, wall clock: the hosts'
clocks must agree, NTP), it waits again until that arrival is ``idle`` old.
Once quiet cluster-wide, the series is *complete* unless its instances announce
more than arrived (``expected``: NumberOfSeriesRelatedInstances,
ImagesInAcquisition, NumberOfSlices), then *incomplete*. Each receiver that saw
it then claims it in the index (``series_claims``, :data:`.core.series_claims.CLAIM`):
one INSERT wins, so the hook runs once for the whole cluster, with the count of
instances in the index and the hosts that filed them. An incomplete series gets
no hook: one ``series-incomplete`` event line and a warning, by the claimant.

Re-arrivals after a claim: instances filed later (a sender's new round) make the
series quiet again later; its claim is taken again only if the index now holds
more instances than the claim said (the claim's row is updated where instances
grew), so a grown series is notified again with its new count (an incomplete
one that completes gets its hook), while the same instances sent again change
nothing and notify nobody.

**Without an index** each process decides alone, from what it filed: a later
instance starts a new round and a second notification, which downstream tools
must tolerate anyway (senders resend).
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core.index import Index
    from ..core.index_pg import PgIndex
    from ..core.jsonio import NdjsonLog
    from ..core.repack import Config

__all__ = ["SeriesEvent", "SeriesWatch", "command_argv", "series_watch_for"]

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
    #: host identity -> instances it filed (from the index; else this host's own count)
    hosts: dict[str, int] = field(default_factory=dict)
    #: ``complete``, or ``incomplete`` (quiet with fewer instances than announced)
    state: str = "complete"
    #: the announced size, where the instances carry one
    expected: int | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "event": f"series-{self.state}",
            "folder": self.folder,
            "PatientID": self.patient_id,
            "StudyInstanceUID": self.study_uid,
            "SeriesInstanceUID": self.series_uid,
            "instances": self.instances,
            "hosts": self.hosts,
        }
        if self.expected is not None:
            out["expected"] = self.expected
        return out


def command_argv(template: str, event: SeriesEvent) -> list[str]:
    """The argv for ``--on-series-complete``: the template split like a shell would,
    with ``{folder}``, ``{patient_id}``, ``{study_uid}``, ``{series_uid}``,
    ``{instances}`` and ``{hosts}`` (the hosts that filed it, comma-separated)
    replaced in each word. Never passed through a shell, so a tag value cannot
    inject a command.
    """
    fields = {
        "folder": event.folder,
        "patient_id": event.patient_id,
        "study_uid": event.study_uid,
        "series_uid": event.series_uid,
        "instances": str(event.instances),
        "hosts": host_list(event.hosts),
    }
    argv = []
    for word in shlex.split(template):
        for key, value in fields.items():
            word = word.replace("{" + key + "}", value)
        argv.append(word)
    return argv


def host_list(hosts: dict[str, int]) -> str:
    """``a,b``: the hosts that filed a series, for ``{hosts}`` ("?" for rows without one)."""
    return ",".join(host or "?" for host in sorted(hosts))


class SeriesWatch:
    """Tracks series by their last instance; fires once each goes quiet.

    ``seen`` is called from the association threads for every filed instance; a
    single background thread does the firing, so a slow hook delays other
    notifications but never the receiving. With ``index`` (a path), quiet and
    complete are the shared index's to say and each series is claimed there
    before it is notified (see the module doc); ``host`` is this receiver's
    ``--host-id``, written into the claim.
    """

    def __init__(
        self,
        idle: float,
        command: str | None = None,
        emit: Callable[[dict[str, object]], None] | None = None,
        command_timeout: float = 600.0,
        *,
        index: str | None = None,
        host: str | None = None,
        logdir: str | None = None,
    ) -> None:
        self.idle = idle
        self.logdir = logdir
        self.command = command
        self.emit = emit
        self.command_timeout = command_timeout
        self.index = index
        self.host = host
        self.fired = 0
        self.hook_failures = 0
        #: series this process saw go quiet but another receiver claimed (or that were
        #: notified already with as many instances)
        self.left_to_others = 0
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
        """Stop the watcher; with ``flush``, notify every series still open (shutdown:
        this receiver will see no more of them; with an index, each is claimed with
        what the index holds now, and a receiver that files more later claims again)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if flush:
            with self._lock:
                due = list(self._series.values())
                self._series.clear()
            index = self._open_index()
            try:
                for ev in due:
                    self._decide(ev, index, final=True)
            finally:
                if index is not None:
                    index.close()

    def _open_index(self) -> Index | PgIndex | None:
        """An index connection for the calling thread (SQLite's are not shared); a
        PostgreSQL index's local files live in ``logdir``."""
        if self.index is None:
            return None
        from ..core.index import open_index

        return open_index(self.index, self.logdir, timeout=30.0)

    def _run(self) -> None:
        tick = min(1.0, max(0.05, self.idle / 4))
        index = self._open_index()
        try:
            while not self._stop.wait(tick):
                now = time.monotonic()
                with self._lock:
                    due = [k for k, ev in self._series.items() if now - ev.last_seen >= self.idle]
                    events = [self._series.pop(k) for k in due]
                for ev in events:
                    self._decide(ev, index)
        finally:
            if index is not None:
                index.close()

    def _decide(
        self, ev: SeriesEvent, index: Index | PgIndex | None, *, final: bool = False
    ) -> None:
        """``ev`` went quiet here: without an index, notify it; with one, ask the index
        whether it is quiet everywhere (else watch it again), then claim and notify."""
        if index is None:
            if self.host is not None:
                ev.hosts = {self.host: ev.instances}
            self._fire(ev)
            return
        from ..core.index import IndexFailure

        try:
            now = index.series_now(ev.study_uid, ev.series_uid)
            wall = time.time()
            if not final and now.last is not None and wall - now.last < self.idle:
                self._again(ev, wall - now.last)  # another receiver filed one lately
                return
            ev.instances, ev.hosts, ev.state = now.instances, now.hosts, now.state
            ev.expected = now.expected
            won = index.claim_series(
                ev.series_uid,
                host=self.host or "",
                instances=ev.instances,
                hosts=ev.hosts,
                state=ev.state,
            )
        except IndexFailure as exc:  # each receiver decides alone until the index is back
            LOG.error("series %s: the index cannot say if it is complete: %s", ev.series_uid, exc)
            self._fire(ev)
            return
        if not won:
            self.left_to_others += 1
            return
        if ev.state != "complete":
            LOG.warning(
                "series %s went quiet incomplete: %d of %s instances (hosts %s)",
                ev.series_uid,
                ev.instances,
                ev.expected,
                host_list(ev.hosts),
            )
            if self.emit is not None:
                self.emit(ev.as_dict())
            return
        self._fire(ev)

    def _again(self, ev: SeriesEvent, age: float) -> None:
        """Watch ``ev`` again, as if its last instance (filed elsewhere) arrived ``age``
        seconds ago; a newer local round of it, if any, is kept instead."""
        ev.last_seen = time.monotonic() - max(0.0, age)
        with self._lock:
            self._series.setdefault((ev.study_uid, ev.series_uid), ev)

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
            DICOM_REPACK_SERIES_HOSTS=host_list(ev.hosts),
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


def series_watch_for(
    series_idle: float, command: str | None, lines: NdjsonLog | None, config: Config
) -> SeriesWatch | None:
    """The series watch of a door that files as instances arrive (listen, watch), from
    its ``--series-idle`` and ``--on-series-complete`` and the job's ``config`` (the
    index, this host, the log folder): None when neither is given; an idle of 10 s when
    only a command is. Event lines go to ``lines`` (``--log-ndjson``), else stdout."""
    idle = series_idle or (10.0 if command else 0.0)
    if idle <= 0:
        return None
    from ..core.jsonio import NdjsonLog

    emit = lines if lines is not None else NdjsonLog("-")
    return SeriesWatch(
        idle, command, emit.write, index=config.index, host=config.host, logdir=config.logdir
    )
