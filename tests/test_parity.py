"""Parity with what the real px-repack 3.12.6 wrote, and with rx-repack 1.0's tree.

The expected trees and records are in ../shared/data/expected/<corpus>/.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import EXPECTED as EXPECTED_DATA
from helpers import SHARED_CORPORA as CORPORA
from helpers import SHARED_EXPECTED as EXPECTED
from helpers import (
    dicom_files,
    read_expected_records,
    read_records,
    read_tree_tsv,
    run_cli,
    series_groups,
    sha256,
    tree,
    write_set,
)


def first_in_dump(corpus: str) -> str:
    """The SOPInstanceUID whose header px-repack dumped into the series record.

    That record is written by a series' first instance (first writer wins, as in
    px-repack), and px-repack's order was its folder listing's; the test files
    that instance first so the dumps are comparable.
    """
    for f in (EXPECTED / corpus / "log" / "studyData").glob("*-series/*.json"):
        (entry,) = json.loads(f.read_text()).values()
        return str(entry["DICOM"]["SOPInstanceUID"]["value"])
    raise AssertionError("no series record in expected output")


def repack_corpus(src: Path, out: Path, corpus: str, *extra: str) -> tuple[Path, Path]:
    data, log = out / "data", out / "log"
    files = dicom_files(src)
    first = first_in_dump(corpus)
    lead = next(f for f in files if first in f.name or _sop(f) == first)
    # --no-index: the log folder is compared file for file with px-repack's
    extra = ("--no-index", *extra)
    run_cli("--xcrdirfile", str(lead), "--datadir", str(data), "--logdir", str(log), *extra)
    run_cli(
        "batch", str(src), "--datadir", str(data), "--logdir", str(log), "--no-progress", *extra
    )
    return data, log


def _sop(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def normalise_expected(obj: object, datadir: str) -> object:
    text = json.dumps(obj).replace("{datadir}", datadir)
    return json.loads(text)


def cut_image_obj(record: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """Keep only size and FSlocation of each imageObj stat entry (as the expected files do)."""
    for entry in record.values():
        images = entry.get("imageObj")
        if isinstance(images, dict):
            for name, stat in images.items():
                images[name] = {"size": stat["size"], "FSlocation": stat["FSlocation"]}
    return record


@pytest.mark.parametrize("corpus", list(CORPORA))
def test_px_layout_tree_and_records_equal_px_repack(
    corpora: dict[str, Path], tmp_path: Path, corpus: str
) -> None:
    data, log = repack_corpus(corpora[corpus], tmp_path, corpus, "--layout", "px")
    assert tree(data) == read_tree_tsv(EXPECTED / corpus / "data-tree.tsv")

    expected_log = EXPECTED / corpus / "log"
    want = sorted(p.relative_to(expected_log).as_posix() for p in expected_log.rglob("*.json"))
    got = sorted(p.relative_to(log).as_posix() for p in log.rglob("*") if p.is_file())
    assert got == want, "the log folder holds other files than px-repack's"
    datadir = str(data.resolve())
    for rel in want:
        expected = normalise_expected(json.loads((expected_log / rel).read_text()), datadir)
        actual = json.loads((log / rel).read_text())
        if "-img/" in rel:
            actual = cut_image_obj(actual)
        assert actual == expected, rel


@pytest.mark.parametrize("corpus", list(CORPORA))
def test_default_layout_is_rx_repack_tree(
    corpora: dict[str, Path], tmp_path: Path, corpus: str
) -> None:
    data = tmp_path / "data"
    run_cli("batch", str(corpora[corpus]), "--datadir", str(data), "--no-progress")
    assert tree(data) == read_tree_tsv(EXPECTED / corpus / "rx-layout-tree.tsv")
    assert not (tmp_path / "log").exists(), "no --logdir, no records"


@pytest.mark.parametrize("corpus", list(CORPORA))
def test_per_instance_door_builds_the_same_tree(
    corpora: dict[str, Path], tmp_path: Path, corpus: str
) -> None:
    """storescp -xcr style: one process per instance, into the rx tree, moving the sources."""
    import shutil

    incoming = tmp_path / "incoming"
    shutil.copytree(corpora[corpus], incoming)
    data, log = tmp_path / "data", tmp_path / "log"
    files = dicom_files(incoming)[:12]
    for f in files:
        run_cli(
            "--xcrdir",
            str(incoming),
            "--xcrfile",
            f.name,
            "--datadir",
            str(data),
            "--logdir",
            str(log),
            "--cleanup",
        )
        assert not f.exists(), "--cleanup moves the source"
    want = {k: v for k, v in read_tree_tsv(EXPECTED / corpus / "rx-layout-tree.tsv").items()}
    got = tree(data)
    assert len(got) == len(files)
    for rel, facts in got.items():
        assert want[rel] == facts


# -- px-repack on a generated set: hex letters in nested tags, the stat record -------------

PX = EXPECTED_DATA / "px-repack" / "mr-explicit"


def repack_generated_px(tmp_path: Path) -> tuple[Path, Path]:
    """mr-explicit (code sequences holding (0008,010B), a request item holding the private
    (2001,10C1)) filed with --layout px as px-repack was run: each series' first instance
    first, so the header dumps come from the same instances."""
    src = tmp_path / "in"
    files = write_set("mr-explicit", src)
    got = {f.name: (f.stat().st_size, sha256(f)) for f in files}
    assert got == read_tree_tsv(PX / "inputs.tsv"), (
        "mr-explicit is no longer what px-repack was run on: "
        "re-run `python tests/expected/make_expected.py px mr-explicit`"
    )
    data, log = tmp_path / "data", tmp_path / "log"
    px = ("--layout", "px", "--no-index")  # the log folder is compared file for file
    for group in series_groups(files).values():
        run_cli("--xcrdirfile", str(group[0]), "--datadir", str(data), "--logdir", str(log), *px)
    run_cli("batch", str(src), "--datadir", str(data), "--logdir", str(log), "--no-progress", *px)
    return data, log


def cut_stat(records: dict[str, object], keep: tuple[str, ...]) -> dict[str, object]:
    for record in records.values():
        for entry in record.values() if isinstance(record, dict) else ():
            images = entry.get("imageObj") if isinstance(entry, dict) else None
            if isinstance(images, dict):
                for name, stat in images.items():
                    images[name] = {k: stat[k] for k in keep}
    return records


def test_px_layout_equals_px_repack_on_nested_hex_tags(tmp_path: Path) -> None:
    data, log = repack_generated_px(tmp_path)
    assert tree(data) == read_tree_tsv(PX / "data-tree.tsv")
    ours = read_records(log, data.resolve())
    want = read_expected_records(PX / "log")
    assert sorted(ours) == sorted(want)
    dumps = [rel for rel in want if "-series/" in rel]
    assert any("(0008, 010b)" in json.dumps(want[rel]) for rel in dumps)
    assert any("(2001, 10c1)" in json.dumps(want[rel]) for rel in dumps)
    keep = ("size", "FSlocation")
    assert cut_stat(ours, keep) == cut_stat(want, keep)


def test_px_layout_stat_record_equals_px_repack(tmp_path: Path) -> None:
    """The imageObj stat entry describes the placed file (px-repack: nlink 1, its size)."""
    data, log = repack_generated_px(tmp_path)
    keep = ("size", "nlink", "FSlocation")
    ours = cut_stat(read_records(log / "seriesData", data.resolve()), keep)
    want = cut_stat(read_expected_records(PX / "log" / "seriesData"), keep)
    assert ours == want
