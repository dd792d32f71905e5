#!/usr/bin/env python3
"""The PostgreSQL index's parts, each timed alone (client CPU, ``time.process_time``).

What a filed instance costs the index's client, piece by piece, against a throwaway
server (tests/postgres.py, as benchmarks/index_backends.py starts it):

- **append**: a row appended to this host's pending file (``PendingIndex.add``);
- **fold**: one fold of those rows into PostgreSQL (the flusher's group commit), per row;
- **where**: "where was this SOP filed?" (``PgIndex.where``: the pending tail, then one
  round trip), for SOPs the index has and for SOPs it has not.

Untimed beside the others (one process, no alternation): a breakdown, not a race.

    .venv/bin/python benchmarks/pg_parts.py --rows 2000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from index_backends import throwaway_server


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2000)
    args = ap.parse_args()
    from dicom_repack.core.index import open_index
    from dicom_repack.core.index_rows import PendingIndex, local_path

    n = args.rows
    with throwaway_server() as url, tempfile.TemporaryDirectory() as folder:
        index = open_index(url, folder)
        try:
            index.run(lambda conn: None)  # connected and migrated
            writer = PendingIndex(local_path(url, folder), target=url)
            start = time.process_time()
            for i in range(n):
                values = {"SOPInstanceUID": f"2.25.{i}", "SeriesInstanceUID": "2.25.9",
                          "StudyInstanceUID": "2.25.7", "PatientID": "P"}  # fmt: skip
                writer.add(values, path=f"/d/{i}.dcm", size=1, source=f"/s/{i}")
            print(f"append: {(time.process_time() - start) / n * 1e6:.1f} us a row")
            writer.close()
            start = time.process_time()
            folded = index.fold()
            print(f"fold:   {(time.process_time() - start) / max(folded, 1) * 1e6:.1f} us a row")
            for label, prefix in (("found", "2.25."), ("missing", "9.9.")):
                start = time.process_time()
                for i in range(n):
                    index.where(f"{prefix}{i}")
                spent = (time.process_time() - start) / n * 1e6
                print(f"where ({label}): {spent:.1f} us")
        finally:
            index.close()
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
