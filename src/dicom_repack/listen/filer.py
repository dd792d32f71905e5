"""The receiver's store handler: one received instance through the core job, and the
DIMSE status its outcome answers.

The network side (listen/scp.py) hands each complete C-STORE data set here, held in
memory or spooled to a file in the data folder (listen/sink.py); the job
(core/repack.py) files it before the answer goes back, so a success always means
"filed". The command line that builds it lives in listen/cli.py.
"""

from __future__ import annotations

import logging
import os
import threading

from ..core.outcome import Outcome
from ..core.repack import Config, Repacker
from ..core.source import PathSource
from .scp import STATUS_CANNOT_UNDERSTAND, STATUS_OUT_OF_RESOURCES, STATUS_SUCCESS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core.jsonio import NdjsonLog
    from .activity import Activity
    from .scp import StoreInfo
    from .series_watch import SeriesWatch
    from .sink import Incoming
    from .workers import Relay

__all__ = ["Filer", "status_for"]

LOG = logging.getLogger("dicom_repack.listen")


class Filer:
    """The store handler: one received instance through the core job.

    One :class:`~.repack.Repacker` per association thread, so its caches need no
    lock; the record writer's own locking keeps concurrent series consistent.
    """

    def __init__(
        self,
        config: Config,
        ndjson: NdjsonLog | None = None,
        watch: SeriesWatch | Relay | None = None,
        activity: Activity | None = None,
    ) -> None:
        self.config = config
        self.ndjson = ndjson
        self.watch = watch
        self.activity = activity
        self._local = threading.local()

    def _forget_repacker(self) -> None:
        """Close this thread's Repacker (at its association's end: listen/activity.py)."""
        repacker: Repacker | None = getattr(self._local, "repacker", None)
        self._local.repacker = None
        if repacker is not None:
            repacker.close()

    def __call__(self, incoming: Incoming, info: StoreInfo) -> tuple[int, str]:
        repacker: Repacker | None = getattr(self._local, "repacker", None)
        if repacker is None:
            repacker = self._local.repacker = Repacker(self.config)
            if self.activity is not None:  # its index connection closed when the association ends
                self.activity.close_when_association_ends(self._forget_repacker)
        origin = f"dicom://{info.calling_ae}@{info.peer}/{info.sop_instance_uid}"
        if incoming.buffer is not None:
            outcome = repacker.repack_buffer(memoryview(incoming.buffer), origin=origin)  # no copy
        else:
            # spooled inside the data folder: filed by a hard link from the open spool
            # file, never copied again, and its name removed inside the spool folder
            path = incoming.path
            assert path is not None
            source = PathSource(
                path,
                move=True,
                opened=incoming.take(),
                remove=lambda: incoming.spool.remove(path),
                origin=origin,  # its row, NDJSON line and errors name the sender, not the spool
            )
            outcome = repacker.repack(source)
        if self.ndjson is not None:
            self.ndjson.write(
                {
                    **outcome.as_dict(),
                    "CallingAETitle": info.calling_ae,
                    "TransferSyntaxUID": info.transfer_syntax,
                }
            )
        if outcome.error is None:
            if self.watch is not None and outcome.dst:
                self.watch.seen(
                    os.path.dirname(outcome.dst),
                    outcome.patient_id or "",
                    outcome.study_uid or "",
                    outcome.series_uid or "",
                )
            return STATUS_SUCCESS, ""
        LOG.warning("%s", outcome.error)
        if self.activity is not None:
            self.activity.failure(origin, outcome.kind, outcome.error, info.calling_ae, info.peer)
        return status_for(outcome), outcome.error


def status_for(outcome: Outcome) -> int:
    """A failure the sender can fix by retrying later (disk, permissions) is "out of
    resources" (0xA700); one about the instance itself is "cannot understand" (0xC000)."""
    return STATUS_OUT_OF_RESOURCES if outcome.retryable else STATUS_CANNOT_UNDERSTAND
