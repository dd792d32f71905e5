"""A spooled instance keeps its sender's name: index row, NDJSON line, errors (issue 19).

listen writes an instance larger than ``--spill-above`` to a spool file in the data
folder and files it from there; its index row must still say who sent it
(``dicom://AE@host:port/UID``, the calling AE title and the peer), as an instance
filed from memory does, so that ``status`` can call its series complete, and no line
names a ``.part`` file that no longer exists.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from helpers import dicom_files
from test_listen_support import listening, pynetdicom_send


def test_spooled_and_in_memory_instances_are_indexed_under_their_sender(
    mr: Path, tmp_path: Path
) -> None:
    files = dicom_files(mr)[:4]
    for spill in ("1", "64MiB"):
        data, log = tmp_path / f"data-{spill}", tmp_path / f"log-{spill}"
        lines = tmp_path / f"lines-{spill}.ndjson"
        extra = ("--logdir", str(log), "--spill-above", spill, f"--log-ndjson={lines}")
        with listening(data, *extra) as listener:
            assert pynetdicom_send(listener.port, files) == [0] * len(files)
            assert listener.stop() == 0
        with sqlite3.connect(log / "dicom-repack-index.sqlite") as conn:
            rows = conn.execute("SELECT source, calling_ae, peer FROM instances").fetchall()
        conn.close()
        assert len(rows) == len(files)
        for source, calling_ae, peer in rows:
            assert source.startswith("dicom://"), (spill, source)
            assert calling_ae and peer and ".part" not in source
        srcs = [json.loads(x)["src"] for x in lines.read_text().splitlines() if '"src"' in x]
        assert len(srcs) == len(files) and all(s.startswith("dicom://") for s in srcs), srcs
