#!/usr/bin/env python3
"""The batch copy's I/O alone, in Python: what is left if parsing, layout and JSON cost nothing.

For each instance under SRC, on all cores (fork pool, chunks of 128 paths, as the batch
door): read it whole, write it to OUT/data/<its folder>/<name> and a 1.4 KB stand-in image
record to OUT/log/<its folder>-img/<name>.json, each through the library's
``place_bytes`` (O_TMPFILE + linkat, as the batch door) in the folder ``Tree.open`` walked
to (one ``openat`` per folder, no link followed, as the batch door). No header is parsed and no
layout or JSON is computed. ``benchmarks/batch.py --io-floor`` runs it beside ``cp -r``
and the batch door, to show how much of the batch door's time is this floor.

    .venv/bin/python benchmarks/io_floor.py SRC OUT
"""

from __future__ import annotations

import multiprocessing
import os
import sys

from dicom_repack.core.header import read_small_file
from dicom_repack.core.place import place_bytes
from dicom_repack.core.tree import Tree

RECORD = b"x" * 1400

#: the output's root folders, opened once per worker (as the batch door's Tree)
_trees: dict[str, Tree] = {}


def _place(data: bytes, root: str, folder: str, name: str) -> None:
    tree = _trees.get(root)
    if tree is None:
        tree = _trees[root] = Tree(root, "folder")
    with tree.open(folder, folder) as opened:
        place_bytes(data, opened, name)


def _one(job: tuple[str, str, str, str]) -> int:
    src, out, data_dir, log_dir = job
    data = read_small_file(src)
    assert data is not None, src
    name = os.path.basename(src)
    _place(data, f"{out}/data", data_dir, name)
    _place(RECORD, f"{out}/log", log_dir, name + ".json")
    return len(data)


def jobs(src_root: str, out: str) -> list[tuple[str, str, str, str]]:
    out = os.path.abspath(out)
    todo = []
    for folder, _, files in os.walk(src_root):
        rel = os.path.relpath(folder, src_root)
        for f in files:
            if f.endswith(".dcm"):
                todo.append(
                    (
                        f"{folder}/{f}",
                        out,
                        os.path.normpath(f"{out}/data/{rel}"),
                        f"{out}/log/{rel.replace('/', '_')}-img",
                    )
                )
    return todo


def main() -> int:
    src_root, out = sys.argv[1], sys.argv[2]
    todo = jobs(src_root, out)
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        total = sum(pool.imap_unordered(_one, todo, chunksize=128))
    print(f"{len(todo)} files, {total} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
