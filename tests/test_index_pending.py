"""The per-instance door's pending index rows (core/index_rows.py, core/index.py): appended by writers,
folded into SQLite by readers and by the writer that fills the file, never lost,
never duplicated, and never bringing back a stale row.

The door itself is tested through the console script in test_index.py (512
concurrent processes, each appending; some of them fold). Here the protocol is
driven harder than storescp ever would: several processes appending as fast as
they can while several others fold in a loop.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest

from dicom_repack.core.index import Index
from dicom_repack.core.index_rows import COLUMNS, append_row, parse_pending, pending_path
from helpers import dicom_files, open_files, run_cli, sqlite_db

WRITERS, ROWS_EACH, FOLDERS = 6, 300, 2


def row(sop: str, when: float, path: str = "/data/x.dcm") -> tuple[object, ...]:
    values: dict[str, object] = dict.fromkeys(COLUMNS)
    values.update(
        sop_instance_uid=sop, series_instance_uid="1.2.3", study_instance_uid="1.2",
        patient_id="P\n'\"\\ é\udcff", path=path, size=1, filed_at=when,
    )  # fmt: skip
    return tuple(values.values())


def fold(index: Path | str) -> int:
    """Fold the pending rows into the index at ``index``, closing the connection."""
    with closing(Index(str(index))) as idx:
        return idx.fold()


def rows_in(index: Path) -> dict[str, tuple[object, ...]]:
    with sqlite_db(index) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        got = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM instances").fetchall()
    return {r[0]: tuple(r) for r in got}


@pytest.mark.slow
def test_writers_and_folders_at_once_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    index = tmp_path / "log" / "idx.sqlite"
    index.parent.mkdir()
    writer = textwrap.dedent(f"""
        import sys
        from dicom_repack.core.index_rows import append_row, COLUMNS
        w = int(sys.argv[1])
        for i in range({ROWS_EACH}):
            row = [None] * len(COLUMNS)
            row[:7] = [f"{{w}}.{{i}}", "1.2.3", "1.2", "P", "/d/x", 1, 1.0 + i]
            append_row({str(pending_path(str(index)))!r}, tuple(row))
    """)
    folder = textwrap.dedent(f"""
        import os
        from dicom_repack.core.index import Index
        stop = {str(tmp_path / "stop")!r}
        while not os.path.exists(stop):
            idx = Index({str(index)!r}, timeout=30.0)
            idx.fold()
            idx.close()
    """)
    folders = [subprocess.Popen([sys.executable, "-c", folder]) for _ in range(FOLDERS)]
    writers = [subprocess.Popen([sys.executable, "-c", writer, str(w)]) for w in range(WRITERS)]
    assert [w.wait(timeout=120) for w in writers] == [0] * WRITERS
    (tmp_path / "stop").touch()
    assert [f.wait(timeout=120) for f in folders] == [0] * FOLDERS
    fold(index)
    got = rows_in(index)
    assert set(got) == {f"{w}.{i}" for w in range(WRITERS) for i in range(ROWS_EACH)}
    assert sorted(p.name for p in index.parent.iterdir()) == [
        p for p in ("idx.sqlite", "idx.sqlite-shm", "idx.sqlite-wal")
        if (index.parent / p).exists()
    ]  # fmt: skip


def test_a_fold_keeps_the_newest_row_and_folding_again_changes_nothing(tmp_path: Path) -> None:
    index = tmp_path / "idx.sqlite"
    pending = pending_path(str(index))
    newer, older = row("1.9", 2000.0, "/data/new.dcm"), row("1.9", 1000.0, "/data/old.dcm")
    with closing(Index(str(index))) as made:
        made.run(lambda conn: None)  # the file exists, empty
    append_row(pending, newer)
    assert fold(index) == 1
    # newlines, quotes, non-ASCII kept; a file name's undecodable byte becomes U+FFFD
    stored = {**dict(zip(COLUMNS, newer, strict=True)), "patient_id": "P\n'\"\\ é\ufffd"}
    assert rows_in(index)["1.9"] == tuple(stored.values())
    # a late, older row (a slow writer, or the same file folded twice) changes nothing
    append_row(pending, older)
    append_row(pending, newer)
    assert fold(index) == 2
    assert rows_in(index) == {"1.9": tuple(stored.values())}
    assert not Path(pending).exists()


def test_a_torn_line_costs_only_itself(tmp_path: Path) -> None:
    pending = tmp_path / "idx.sqlite.pending"
    append_row(str(pending), row("1.1", 1.0))
    with open(pending, "ab") as fh:
        fh.write(b"('1.2', 'half a row, the writer kil")  # no newline: torn by a crash
    append_row(str(pending), row("1.3", 3.0))
    assert [r[0] for r in parse_pending(pending.read_bytes())] == ["1.1", "1.3"]
    assert fold(tmp_path / "idx.sqlite") == 2


def test_a_fold_interrupted_after_its_rename_is_finished_by_the_next(tmp_path: Path) -> None:
    index = tmp_path / "idx.sqlite"
    pending = pending_path(str(index))
    append_row(pending, row("1.1", 1.0))
    Path(pending).rename(pending + ".4242-1")  # a fold killed right after setting it aside
    append_row(pending, row("1.2", 2.0))
    assert fold(index) == 2
    assert set(rows_in(index)) == {"1.1", "1.2"}
    assert [p.name for p in tmp_path.iterdir() if ".pending" in p.name] == []


def test_a_source_name_that_is_not_utf8_is_indexed_not_a_traceback(
    tmp_path: Path, mr: Path
) -> None:
    """A file name's undecodable bytes reach the index as U+FFFD from every door.

    Batch (in-process for a few files, pooled for more) writes SQLite directly;
    SQLite's text cannot hold Python's surrogates, and the insert used to end the
    batch with a UnicodeEncodeError traceback before the source was committed.
    """

    files = dicom_files(mr)
    for name, count in (("few", 2), ("pooled", 8)):
        src = tmp_path / name / "in"
        src.mkdir(parents=True)
        for i, f in enumerate(files[:count]):
            (src / os.fsdecode(b"caf\xe9-%d.dcm" % i)).write_bytes(f.read_bytes())
        data, log = tmp_path / name / "data", tmp_path / name / "log"
        proc = run_cli("batch", str(src), "--datadir", str(data), "--logdir", str(log), "-j", "2")
        assert "Traceback" not in proc.stderr
        rows = rows_in(log / "dicom-repack-index.sqlite")
        assert len(rows) == count
        sources = {str(r[COLUMNS.index("source")]) for r in rows.values()}
        assert all("caf\ufffd-" in s for s in sources), sources

    one = tmp_path / "door"
    one.mkdir()
    name = os.fsdecode(b"\xff.dcm")
    (one / name).write_bytes(files[0].read_bytes())
    data, log = tmp_path / "door-data", tmp_path / "door-log"
    proc = run_cli(
        "--xcrdir", str(one), "--xcrfile", name, "--datadir", str(data), "--logdir", str(log)
    )
    assert "Traceback" not in proc.stderr
    index = Index(str(log / "dicom-repack-index.sqlite"))
    index.fold()
    index.close()
    rows = rows_in(log / "dicom-repack-index.sqlite")
    assert [str(r[COLUMNS.index("source")]).endswith("\ufffd.dcm") for r in rows.values()] == [True]


def test_the_per_instance_door_makes_the_folder_of_an_index_placed_elsewhere(
    tmp_path: Path, mr: Path
) -> None:
    """``--index PATH`` in a folder that does not exist yet: the door makes it, as
    SQLite's side does, instead of failing every instance."""
    f = dicom_files(mr)[0]
    index = tmp_path / "var" / "new" / "idx.sqlite"
    run_cli("--xcrdirfile", str(f), "-d", str(tmp_path / "d"), "-l", str(tmp_path / "l"),
            "--index", str(index))  # fmt: skip
    folder = Index(str(index))
    folder.fold()
    folder.close()
    assert len(rows_in(index)) == 1


# -- the line format: JSON, read with the C scanner; the old ascii() lines still read ---------

_NASTY = ["", "1.2.3", 'a"b,c', 'a\\",b', "é\u2028\U0001f600", "\x00\x1f\x7f", "\udcff", "', '"]


def _random_text(rng: random.Random) -> str:
    alphabet = "0123456789.,\"'\\ \n\t\x00\x7féß\u2028\U0001f600\udcfe["
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 24)))


def test_json_lines_read_back_as_the_library_reads_the_old_lines() -> None:
    """Fuzzed rows: the JSON line (``line_of``) reads back to what ``ast.literal_eval`` of
    the old ``ascii()`` line gives, after ``storable``, for every value a row can hold."""
    from ast import literal_eval

    from dicom_repack.core.index_rows import line_of, storable

    rng = random.Random(22)
    cases = [row(s, 1.5) for s in _NASTY]
    for _ in range(2000):
        values: list[object] = [_random_text(rng) for _ in COLUMNS]
        for i in rng.sample(range(len(COLUMNS)), 4):
            values[i] = rng.choice([None, rng.randrange(-(2**40), 2**40), rng.random() * 1e9])
        cases.append(tuple(values))
    for case in cases:
        expected = tuple(storable(v) for v in literal_eval(ascii(case)))
        new = parse_pending(line_of(case))
        old = parse_pending(f"\n{case!a}\n".encode("ascii"))
        assert new == [expected] and old == [expected], case


def test_a_pending_file_with_old_and_new_lines_folds_whole(tmp_path: Path) -> None:
    """A pending file left by the previous version (``ascii()`` lines) and appended to by
    this one folds every row; the newest row of a SOP wins whichever form it has."""
    index = tmp_path / "idx.sqlite"
    pending = pending_path(str(index))
    with open(pending, "wb") as fh:
        fh.write(f"\n{row('1.1', 1.0)!a}\n\n{row('1.2', 1.0)!a}\n".encode("ascii"))
    append_row(pending, row("1.2", 2.0, path="/data/new.dcm"))
    append_row(pending, row("1.3", 3.0))
    assert fold(index) == 4
    got = rows_in(index)
    assert set(got) == {"1.1", "1.2", "1.3"} and got["1.2"][4] == "/data/new.dcm"


def test_the_tail_finds_the_newest_row_of_each_sop_look_after_look(tmp_path: Path) -> None:
    """PendingTail: the first look searches, the next ones key lines as they arrive; both
    give the newest row, for UIDs with quotes, commas and backslashes, across a torn
    line completed later, an old-form line, and a fold that moves the file away."""
    from dicom_repack.core.pending_tail import PendingTail

    pending = str(tmp_path / "idx.sqlite.pending")
    tail = PendingTail(pending)
    try:
        assert tail.last("1.1") is None  # no file yet
        append_row(pending, row('a"b,c', 1.0, path="/1"))
        assert tail.last('a"b,c')[4] == "/1"  # type: ignore[index]  # the first look: a search
        with open(pending, "ab") as fh:
            fh.write(f"\n{row('old', 1.0, path='/old')!a}\n".encode("ascii"))
        for i, sop in enumerate(_NASTY * 3):
            append_row(pending, row(sop, 2.0 + i, path=f"/{i}"))
        newest = {sop: f"/{i}" for i, sop in enumerate(_NASTY * 3)}
        for sop, path in newest.items():
            found = tail.last(sop)
            assert found is not None and found[4] == path, sop
        assert tail.last("old")[4] == "/old"  # type: ignore[index]
        assert tail.last("1.9") is None
        line = append_line(row("1.9", 9.0, "/9"))
        with open(pending, "ab") as fh:
            fh.write(line[:20])  # half a line: its writer is still writing
        assert tail.last("1.9") is None
        with open(pending, "ab") as fh:
            fh.write(line[20:])
        assert tail.last("1.9")[4] == "/9"  # type: ignore[index]
        os.rename(pending, pending + ".aside")  # a fold took the file
        append_row(pending, row("1.9", 10.0, path="/10"))
        assert tail.last("1.9")[4] == "/10"  # type: ignore[index]
        assert tail.last("old") is None  # folded: the SQLite index answers for it
    finally:
        tail.close()


def append_line(r: tuple[object, ...]) -> bytes:
    from dicom_repack.core.index_rows import line_of

    return line_of(r)


def test_a_pending_index_answers_the_same_at_its_first_look_and_after(tmp_path: Path) -> None:
    """PendingIndex.where: the first look reads the file once (last_pending, what the
    per-instance door does), the next ones through the PendingTail its caller gives (or
    again once each, without one); all give the newest row, and a FIFO planted at the
    pending file's name is never waited on."""
    from dicom_repack.core.index_rows import PendingIndex
    from dicom_repack.core.pending_tail import PendingTail

    index = str(tmp_path / "idx.sqlite")
    pending = pending_path(index)
    for tail in (PendingTail, None):
        for first in ("1.1", "1.2"):  # the first look finds a row; the first look finds none
            idx = PendingIndex(index, tail=tail)
            try:
                append_row(pending, row("1.1", 1.0, path="/old"))
                append_row(pending, row("1.1", 2.0, path="/new"))
                found = idx.where(first)
                assert (found or {}).get("path") == ("/new" if first == "1.1" else None)
                assert idx.where("1.1") == {
                    "path": "/new",
                    "PatientID": "P\n'\"\\ é\ufffd",
                    "StudyInstanceUID": "1.2",
                    "SeriesInstanceUID": "1.2.3",
                    "file": "new",
                }
                append_row(pending, row("1.1", 3.0, path="/newer"))
                assert (idx.where("1.1") or {}).get("path") == "/newer"
            finally:
                idx.close()
                os.unlink(pending)
        os.mkfifo(pending)  # nobody writes it: an open for reading without O_NONBLOCK hangs
        idx = PendingIndex(index, tail=tail)
        try:
            assert idx.where("1.1") is None
            assert idx.where("1.1") is None
        finally:
            idx.close()
            os.unlink(pending)


def _fat_row(i: int) -> tuple[object, ...]:
    """A row as long as a real one (~600 bytes as a line): long path and source."""
    sop = f"1.2.826.0.1.3680043.8.498.{i:012d}"
    r = list(row(sop, float(i), path=f"/data/{'p' * 200}/{sop}.dcm"))
    r[COLUMNS.index("source")] = f"/incoming/{'s' * 200}/{i}.dcm"
    return tuple(r)


def _write_pending(pending: str, n: int) -> int:
    with open(pending, "wb") as fh:
        for i in range(n):
            fh.write(append_line(_fat_row(i)))
        return fh.tell()


def _fold_peak_kib(tmp_path: Path, n: int) -> int:
    """The peak resident set (KiB) of ``dicom-repack index --fold`` folding ``n`` rows."""
    folder = tmp_path / f"fold-{n}"
    folder.mkdir()
    index = folder / "idx.sqlite"
    _write_pending(pending_path(str(index)), n)
    exe = str(Path(sys.executable).parent / "dicom-repack")
    probe = textwrap.dedent(
        """
        import resource, subprocess, sys
        proc = subprocess.run(sys.argv[1:])
        print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, exe, "index", "--fold", "--index", str(index)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    code, peak = out.stdout.splitlines()[-1].split()  # after what the fold says
    assert code == "0", out.stderr
    assert len(rows_in(index)) == n
    assert not os.path.exists(pending_path(str(index)))
    return int(peak)


def test_a_folds_memory_does_not_grow_with_the_pending_file(tmp_path: Path) -> None:
    """A fold streams its file in bounded pieces (one transaction still): folding ~30 MB
    of pending rows takes no more memory than folding ~0.3 MB, give or take a few MB
    (a watch worker or a receiver folds what waited; issue 18's RSS bound)."""
    small = _fold_peak_kib(tmp_path, 500)
    big = _fold_peak_kib(tmp_path, 50_000)
    assert big - small < 8 << 10, (small, big)


def test_the_tail_keeps_no_copy_of_the_pending_lines(tmp_path: Path) -> None:
    """PendingTail keys each line by where it is in the file, not by a copy of it: a
    process that looks up every SOP while ~6 MB of rows wait holds far less than that
    (memory independent of how long rows wait before a fold); every row is still found,
    before and after a fold moves the file aside."""
    import tracemalloc

    from dicom_repack.core.pending_tail import PendingTail

    pending = str(tmp_path / "idx.sqlite.pending")
    append_row(pending, _fat_row(0))
    tail = PendingTail(pending)
    try:
        assert tail.last(str(_fat_row(0)[0])) is not None  # the first look: a search
        size = _write_pending(pending, 10_000)
        tracemalloc.start()
        try:
            for i in range(0, 10_000, 7):
                found = tail.last(str(_fat_row(i)[0]))
                assert found is not None and found[5] == 1
            held, _peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert held < size // 4, (held, size)
        os.rename(pending, pending + ".1-2")  # a fold, mid-way: its rows are still known
        append_row(pending, _fat_row(10_001))
        assert tail.last(str(_fat_row(5)[0])) is None
        assert (tail.previous(str(_fat_row(5)[0])) or ())[0] == _fat_row(5)[0]
        assert (tail.last(str(_fat_row(10_001)[0])) or ())[0] == _fat_row(10_001)[0]
        os.unlink(pending + ".1-2")  # the fold committed: the next look lets the file go
        assert tail.last(str(_fat_row(5)[0])) is None and tail.previous(str(_fat_row(5)[0])) is None
        assert open_files("self", str(tmp_path)) == [pending]
    finally:
        tail.close()
    assert open_files("self", str(tmp_path)) == []


def _uids(i: int) -> dict[str, str]:
    keys = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "PatientID")
    return {k: str(v) for k, v in zip(keys, _fat_row(i)[:4], strict=True)}


def test_a_resident_doors_rows_wait_until_its_own_fold_size(tmp_path: Path) -> None:
    """``Config(fold_at=...)`` (watch's workers: RESIDENT_FOLD_AT): an add folds when its
    line takes the pending file past that size, not past FOLD_AT (fewer, larger
    transactions); every row is in the index once it does, none lost or doubled."""
    from dicom_repack.core.index_rows import FOLD_AT
    from dicom_repack.core.repack import Config, Repacker

    index = tmp_path / "idx.sqlite"
    config = Config(str(tmp_path / "data"), index=str(index), index_mode="pending")
    roomy = config.replace(fold_at=4 * FOLD_AT)
    assert roomy.fold_at == 4 * FOLD_AT and roomy.replace(host="h").fold_at == 4 * FOLD_AT
    with Repacker(roomy) as repacker:
        pending = repacker.index
        assert pending is not None and hasattr(pending, "add")
        n = 0
        while not os.path.exists(pending_path(str(index))) or (
            os.path.getsize(pending_path(str(index))) < 2 * FOLD_AT
        ):
            pending.add(_uids(n), path=f"/data/{n}.dcm", size=1, source=None)
            n += 1
        assert not os.path.exists(index)  # past FOLD_AT, not folded: still waiting
        while os.path.exists(pending_path(str(index))):
            pending.add(_uids(n), path=f"/data/{n}.dcm", size=1, source=None)
            n += 1
    assert len(rows_in(index)) == n  # folded past 4 x FOLD_AT, in one go: every row
