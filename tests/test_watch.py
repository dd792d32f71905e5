"""``dicom-repack watch``: a resident door beside a receiver that writes files.

Real processes on real filesystems: storescu -> storescp -od IN -> watch; kill -9
and restart; slow writers; bad files; new subfolders; both inotify and polling.
No timing thresholds: waits have deadlines only so that a hang fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers import (
    EXPECTED,
    dicom_repack_exe,
    read_tree_tsv,
    run_cli,
    series_groups,
    tree,
    write_set,
)
from test_listen_support import (
    Listener,
    assert_same_datasets,
    close_pipes,
    dcmtk,
    dcmtk_env,
    free_port,
    records,
    sop_uid,
    stop_process,
    wait_for,
)

#: the two ways a file is seen to arrive; every behaviour test runs in both
MODES = {"inotify": (), "poll": ("--poll", "0.2", "--settle", "0.5")}


@contextmanager
def watching(dirs: list[Path], data: Path, log: Path | None, *extra: str) -> Iterator[Listener]:
    """Start ``dicom-repack watch`` and stop it (SIGTERM) whatever happens."""
    argv = [dicom_repack_exe(), "watch", *map(str, dirs), "--datadir", str(data)]
    argv += ["--logdir", str(log)] if log is not None else []
    proc = subprocess.Popen(
        [*argv, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watcher: Listener | None = None
    try:
        assert proc.stderr is not None
        before: list[str] = []  # lines said before the start line (files left alone ...)
        while not before or "watching" not in before[-1]:
            line = proc.stderr.readline()
            if not line:
                proc.kill()
                out, err = proc.communicate(timeout=30)
                pytest.fail(f"watch did not start: {''.join(before)}{err}{out}")
            before.append(line)
        watcher = Listener(proc, 0)
        watcher.stderr_lines[:0] = before
        yield watcher
    finally:
        stop_process(proc)
        close_pipes(proc, watcher)


def filed(data: Path) -> list[Path]:
    """The instances in the data tree (no hidden temporary files expected)."""
    return sorted(p for p in data.rglob("*.dcm") if p.is_file())


def wait_filed(data: Path, n: int, proc: subprocess.Popen[str] | None = None) -> None:
    def done() -> bool:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"watch exited with {proc.returncode}")
        return len(filed(data)) >= n

    wait_for(done, what=f"{n} instances filed")


def ndjson(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def settled(path: Path) -> None:
    """Date ``path`` (or every file below it) 10 s back: a file found at start that has
    not changed for ``--settle`` counts as complete at once; a newer one waits."""
    then = time.time() - 10
    for p in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        os.utime(p, (then, then))


def drop(files: list[Path], folder: Path) -> None:
    """Copy files in as a receiver would: written, then closed."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, folder / f.name)


# -- storescu -> storescp -> watch -------------------------------------------------------


@contextmanager
def storescp(incoming: Path, *extra: str) -> Iterator[int]:
    """dcmtk's storescp writing into ``incoming`` (no -xcr), on a free loopback port."""
    exe, echo = dcmtk("storescp"), dcmtk("echoscu")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "-aet", "SCP", "-od", str(incoming), *extra, str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dcmtk_env(),
    )
    try:

        def answers() -> bool:
            run = subprocess.run(
                [echo, "-aec", "SCP", "127.0.0.1", str(port)], capture_output=True, check=False
            )
            return run.returncode == 0

        wait_for(answers, what="storescp to answer")
        yield port
    finally:
        stop_process(proc, timeout=30)


def storescu(port: int, files: list[Path]) -> None:
    run = subprocess.run(
        [dcmtk("storescu"), "-aec", "SCP", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        env=dcmtk_env(),
        check=False,
    )
    assert run.returncode == 0, run.stderr


def first_then_rest(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """The first instance of each series, then the others: the series header dump then
    comes from the same instance whichever door files them (as test_rx_parity does)."""
    firsts = [group[0] for group in series_groups(files).values()]
    return firsts, [f for f in files if f not in firsts]


@pytest.mark.dcmtk
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("corpus", ["mr-explicit", "mr-implicit"])
def test_storescp_then_watch_files_rx_repacks_tree_and_batchs_records(
    tmp_path: Path, corpus: str, mode: str
) -> None:
    files = write_set(corpus, tmp_path / "src")
    firsts, rest = first_then_rest(files)
    incoming, data, log = tmp_path / "incoming", tmp_path / "data", tmp_path / "log"
    incoming.mkdir()
    with (
        watching([incoming], data, log, "--cleanup", *MODES[mode]) as w,
        storescp(incoming, "--sort-on-study-uid", "st") as port,
    ):
        storescu(port, firsts)
        wait_filed(data, len(firsts), w.proc)
        storescu(port, rest)
        wait_filed(data, len(files), w.proc)
        wait_for(lambda: not [p for p in incoming.rglob("*") if p.is_file()], what="IN empty")
        assert w.stop() == 0
    assert "Traceback" not in w.stderr
    # storescp rewrites each file's meta header: the paths are rx-repack's, the data sets
    # the sender's, byte for byte
    assert set(tree(data)) == set(read_tree_tsv(EXPECTED / "rx-repack" / corpus / "data-tree.tsv"))
    assert_same_datasets(files, data)
    # the batch door on the same files, in the same order: the same records
    bdata, blog = tmp_path / "bdata", tmp_path / "blog"
    for group in (firsts, rest):
        listing = tmp_path / "list.txt"
        listing.write_text("".join(f"{f}\n" for f in group))
        run_cli("batch", "-", "--datadir", str(bdata), "--logdir", str(blog), "-j", "1",
                input=listing.read_text())  # fmt: skip
    assert records(log, data) == records(blog, bdata)


# -- restarts, bad files, slow writers -----------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_kill_9_then_restart_files_every_instance_exactly_once(
    tmp_path: Path, mode: str, mr: Path
) -> None:
    files = sorted(mr.glob("*.dcm"))
    incoming, data, log = tmp_path / "in", tmp_path / "data", tmp_path / "log"
    incoming.mkdir()
    third = len(files) // 3
    with watching([incoming], data, log, "--cleanup", *MODES[mode]) as w:
        drop(files[:third], incoming / "a")
        wait_filed(data, 1, w.proc)
        w.proc.kill()  # kill -9 mid-run
        w.proc.wait()
    drop(files[third : 2 * third], incoming / "b")  # arrive while it is down
    with watching([incoming], data, log, "--cleanup", *MODES[mode]) as w:
        drop(files[2 * third :], incoming / "c")
        wait_filed(data, len(files), w.proc)
        wait_for(lambda: not [p for p in incoming.rglob("*") if p.is_file()], what="IN empty")
        assert w.stop() == 0
    uids = [sop_uid(p) for p in filed(data)]
    assert sorted(uids) == sorted(sop_uid(f) for f in files)  # each exactly once
    assert not [p for p in data.rglob(".*")], "a temporary file was left"
    rows = run_cli("status", "-l", str(log), "--json").stdout
    assert sum(s["instances"] for s in _series(json.loads(rows))) == len(files)


def _series(doc: object) -> list[dict[str, int]]:
    """Every series of ``status --json``, flattened."""
    out: list[dict[str, int]] = []
    for patient in doc["patients"]:  # type: ignore[index]
        for study in patient["studies"]:
            out.extend(study["series"])
    return out


@pytest.mark.parametrize("mode", list(MODES))
def test_bad_files_get_one_line_each_and_stay(tmp_path: Path, mode: str, mr: Path) -> None:
    files = sorted(mr.glob("*.dcm"))[:4]
    incoming, data, log = tmp_path / "in", tmp_path / "data", tmp_path / "log"
    incoming.mkdir()
    with watching([incoming], data, log, "--cleanup", *MODES[mode]) as w:
        whole = files[0].read_bytes()
        (incoming / "truncated.dcm").write_bytes(whole[: len(whole) // 2])
        (incoming / "notes.txt").write_text("not DICOM\n")
        os.mkfifo(incoming / "pipe.dcm")
        for i in range(20):  # removed before they are read, or filed: either is fine
            (incoming / f"gone{i}").write_bytes(whole)
            (incoming / f"gone{i}").unlink()
        drop(files, incoming)
        wait_filed(data, len(files), w.proc)
        wait_for(
            lambda: all(n in w.stderr for n in ("truncated.dcm", "notes.txt", "pipe.dcm")),
            what="a line for each bad file",
        )
        assert w.proc.poll() is None, "the watcher stopped"
        assert w.stop() == 0
    for name in ("truncated.dcm", "notes.txt", "pipe.dcm"):
        assert (incoming / name).exists(), f"{name} was not left in place"
        assert sum(name in line for line in w.stderr_lines) == 1, w.stderr
    assert "Traceback" not in w.stderr
    assert len(filed(data)) == len(files)


@pytest.mark.parametrize("mode", list(MODES))
def test_a_file_written_slowly_is_filed_once_complete(tmp_path: Path, mode: str, mr: Path) -> None:
    src = sorted(mr.glob("*.dcm"))[0]
    whole = src.read_bytes()
    incoming, data, log = tmp_path / "in", tmp_path / "data", tmp_path / "log"
    incoming.mkdir()
    lines = tmp_path / "lines.ndjson"
    with watching([incoming], data, log, f"--log-ndjson={lines}", *MODES[mode]) as w:
        step = len(whole) // 5 + 1
        with open(incoming / "slow.dcm", "wb") as fh:
            for i in range(0, len(whole), step):
                fh.write(whole[i : i + step])
                fh.flush()
                time.sleep(0.15)  # a writer's pace, not a threshold
        wait_filed(data, 1, w.proc)
        assert w.stop() == 0
    [placed] = filed(data)
    assert placed.read_bytes() == whole
    got = [d for d in ndjson(lines) if "event" not in d]
    assert [d["error"] for d in got] == [None], got  # once, complete, no failed try


@pytest.mark.parametrize("mode", list(MODES))
def test_a_subfolder_made_after_start_is_watched(tmp_path: Path, mode: str, mr: Path) -> None:
    files = sorted(mr.glob("*.dcm"))[:6]
    incoming, data, log = tmp_path / "in", tmp_path / "data", tmp_path / "log"
    incoming.mkdir()
    with watching([incoming], data, log, "--cleanup", *MODES[mode]) as w:
        drop(files[:3], incoming / "study" / "series")  # made and filled at once
        (incoming / "later").mkdir()
        time.sleep(0.3)
        drop(files[3:], incoming / "later")
        wait_filed(data, len(files), w.proc)
        assert w.stop() == 0


@pytest.mark.parametrize("mode", list(MODES))
def test_temporary_names_wait_for_their_final_name(tmp_path: Path, mode: str, mr: Path) -> None:
    files = sorted(mr.glob("*.dcm"))[:3]
    incoming, data, log = tmp_path / "in", tmp_path / "data", tmp_path / "log"
    incoming.mkdir()
    with watching([incoming], data, log, "--cleanup", "--ignore", "*.partial",
                  *MODES[mode]) as w:  # fmt: skip
        temps = [".x.dcm.Ab12Cd", "y.dcm.part", "z.tmp", "w.dcm.partial"]
        for name, f in zip(temps, files + files[:1], strict=True):
            shutil.copyfile(f, incoming / name)
        shutil.copyfile(files[0], incoming / "marker.dcm")
        wait_filed(data, 1, w.proc)  # marker: the watcher saw the folder after the temps
        time.sleep(1.0)
        assert len(filed(data)) == 1, "a temporary name was filed"
        os.rename(incoming / temps[1], incoming / "y.dcm")
        os.rename(incoming / temps[0], incoming / "x.dcm")
        wait_filed(data, 2, w.proc)
        wait_for(lambda: not (incoming / "y.dcm").exists() and not (incoming / "x.dcm").exists(),
                 what="renamed files filed")  # fmt: skip
        assert w.stop() == 0
    assert sorted(p.name for p in incoming.iterdir()) == ["w.dcm.partial", "z.tmp"]


def test_copy_mode_restart_files_nothing_again_and_failures_wait_for_a_change(
    tmp_path: Path, mr: Path
) -> None:
    files, markers = sorted(mr.glob("*.dcm"))[:5], sorted(mr.glob("*.dcm"))[5:9]
    incoming, data, log = tmp_path / "in", tmp_path / "data", tmp_path / "log"
    drop(files, incoming)
    (incoming / "bad.dcm").write_text("not DICOM\n")
    settled(incoming)  # they arrived a while ago: filed at once, before the marker
    lines = [tmp_path / f"run{i}.ndjson" for i in range(4)]

    def run(i: int, *extra: str) -> None:
        with watching([incoming], data, log, f"--log-ndjson={lines[i]}", "-j", "1", *extra) as w:
            marker = incoming / f"marker{i}.dcm"
            shutil.copyfile(markers[i], marker)  # filed after the start's scan (-j 1: in order)
            wait_for(lambda: any(d.get("src") == str(marker) for d in ndjson(lines[i])),
                     what="the marker filed")  # fmt: skip
            assert w.stop() == 0

    run(0)
    first = [d for d in ndjson(lines[0]) if "event" not in d]
    assert len(first) == len(files) + 2  # every file, the bad one, the marker
    run(1)
    again = [d["src"] for d in ndjson(lines[1]) if "event" not in d]
    assert again == [str(incoming / "marker1.dcm")], again  # nothing filed twice
    run(2, "--retry-failed")
    retried = [str(d["src"]) for d in ndjson(lines[2]) if "event" not in d]
    assert sorted(retried) == sorted([str(incoming / "bad.dcm"), str(incoming / "marker2.dcm")])
    (incoming / "bad.dcm").write_text("still not DICOM, but changed\n")
    settled(incoming / "bad.dcm")
    run(3)
    changed = [str(d["src"]) for d in ndjson(lines[3]) if "event" not in d]
    assert sorted(changed) == sorted([str(incoming / "bad.dcm"), str(incoming / "marker3.dcm")])
    assert sorted(p.name for p in incoming.iterdir()) == sorted(
        [f.name for f in files] + ["bad.dcm"] + [f"marker{i}.dcm" for i in range(4)]
    )


# -- the service -----------------------------------------------------------------------------


def test_service_config_file_log_file_sighup_and_page(tmp_path: Path, mr: Path) -> None:
    files = sorted(mr.glob("*.dcm"))[:3]
    incoming, data, log = tmp_path / "in", tmp_path / "data", tmp_path / "log"
    incoming.mkdir()
    logfile = tmp_path / "watch.log"
    config = tmp_path / "watch.toml"
    config.write_text(f'cleanup = true\nlog-file = "{logfile}"\nhttp = "127.0.0.1:0"\n')
    with watching([incoming], data, log, "--config", str(config)) as w:
        wait_for(lambda: "live page on" in w.stderr, what="the live page")
        url = w.stderr.split("live page on ")[1].split()[0]
        drop(files, incoming)
        wait_filed(data, len(files), w.proc)
        with urllib.request.urlopen(url + "healthz", timeout=30) as rsp:
            assert rsp.status == 200

        def metrics() -> str:
            with urllib.request.urlopen(url + "metrics", timeout=30) as rsp:
                return str(rsp.read().decode())

        # a file is on disk a moment before its outcome reaches the counters: wait for them
        wanted = f"dicom_repack_instances_stored_total {len(files)}"
        wait_for(lambda: wanted in metrics(), what="the page's count")
        os.rename(logfile, tmp_path / "watch.log.1")
        w.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        (incoming / "bad.dcm").write_text("not DICOM\n")
        wait_for(lambda: logfile.exists() and "bad.dcm" in logfile.read_text(),
                 what="the line in the reopened log file")  # fmt: skip
        assert w.stop() == 0
    assert [p.name for p in incoming.iterdir()] == ["bad.dcm"], "bad.dcm stays"


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    missing = run_cli("watch", str(tmp_path / "nope"), "--datadir", str(tmp_path / "d"),
                      check=False)  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "not a folder" in missing.stderr
    bad = run_cli("watch", str(tmp_path), "--datadir", str(tmp_path / "d"), "--poll", "x",
                  check=False)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    helped = run_cli("watch", "--help")
    for flag in ("--cleanup", "--poll", "--settle", "--ignore", "--retry-failed", "--jobs",
                 "--http", "--config", "--on-series-complete", "--layout", "--index"):  # fmt: skip
        assert flag in helped.stdout


def test_the_series_hook_runs_once_per_series(tmp_path: Path, mr: Path) -> None:
    """listen's --on-series-complete, reused: one event per series once it goes quiet."""
    files = sorted(mr.glob("*.dcm"))
    series = series_groups(files)
    incoming, data, log = tmp_path / "in", tmp_path / "data", tmp_path / "log"
    incoming.mkdir()
    events = tmp_path / "events.txt"
    hook = f"sh -c 'echo {{series_uid}} {{instances}} >> {events}'"
    with watching([incoming], data, log, "--cleanup", "--series-idle", "0.5",
                  "--on-series-complete", hook) as w:  # fmt: skip
        drop(files, incoming)
        wait_filed(data, len(files), w.proc)
        wait_for(lambda: events.exists() and len(events.read_text().splitlines()) >= len(series),
                 what="one event per series")  # fmt: skip
        assert w.stop() == 0
    got = dict(line.split() for line in events.read_text().splitlines())
    assert got == {uid: str(len(group)) for uid, group in series.items()}


def test_sigterm_mid_burst_exits_0_and_a_restart_files_the_rest(tmp_path: Path, mr: Path) -> None:
    files = sorted(mr.glob("*.dcm"))
    incoming, data, log = tmp_path / "in", tmp_path / "data", tmp_path / "log"
    drop(files, incoming)
    settled(incoming)
    with watching([incoming], data, log, "--cleanup") as w:
        wait_filed(data, 1, w.proc)
        assert w.stop() == 0  # the instances in hand finished, the rest untouched
    left = sorted(p.name for p in incoming.iterdir())
    done = {sop_uid(p) for p in filed(data)}
    assert len(left) + len(done) == len(files)  # each filed or still waiting, never both
    assert not {sop_uid(incoming / name) for name in left} & done
    with watching([incoming], data, log, "--cleanup") as w:
        wait_filed(data, len(files), w.proc)
        assert w.stop() == 0
    assert not list(incoming.iterdir())


def test_a_burst_is_taken_a_share_at_a_time_each_file_once(tmp_path: Path) -> None:
    """``Arrivals.take(most)``: a burst comes out at most ``most`` files a take (the
    watcher hands the first out before it looks at the last), what is left says so
    (``ready``), and every file comes out exactly once, the events' and the scan's."""
    from dicom_repack.watch.arrivals import Arrivals

    incoming = tmp_path / "in"
    incoming.mkdir()
    (incoming / "before.dcm").write_bytes(b"x")  # there at start: the scan's
    os.utime(incoming / "before.dcm", (1, 1))  # settled long ago
    arrivals = Arrivals([str(incoming)], settle=0.0)
    try:
        arrivals.start()
        staged = tmp_path / "staged"
        staged.mkdir()
        for i in range(25):
            (staged / f"{i:02d}.dcm").write_bytes(b"x")
            os.rename(staged / f"{i:02d}.dcm", incoming / f"{i:02d}.dcm")  # IN_MOVED_TO
        seen: list[str] = []
        shares = []
        while len(seen) < 26:
            got = arrivals.take(10)
            assert len(got) <= 10
            shares.append(len(got))
            seen += got
            if len(seen) < 26:
                assert arrivals.ready() or arrivals.wake_after() is not None
        assert sorted(os.path.basename(p) for p in seen) == sorted(
            ["before.dcm", *(f"{i:02d}.dcm" for i in range(25))]
        )
        assert max(shares) == 10 and arrivals.ready() == 0 and arrivals.take(10) == []
    finally:
        arrivals.close()


def test_a_rescan_after_an_overflow_is_given_out_a_share_at_a_time(tmp_path: Path) -> None:
    """After the kernel's queue overflowed (events lost: the rescan finds the files), the
    scan runs a share per take (``take(most)``), not the whole folder at once: every file
    comes out exactly once, at most ``most`` a take, and ``ready`` says more is coming."""
    from dicom_repack.watch.arrivals import Arrivals

    incoming = tmp_path / "in"
    incoming.mkdir()
    arrivals = Arrivals([str(incoming)], settle=0.0)
    try:
        arrivals.start()
        for i in range(35):
            (incoming / f"{i:02d}.dcm").write_bytes(b"x")
        fd = arrivals.fileno()
        assert fd is not None
        os.read(fd, 1 << 20)  # the events lost, as in an overflow ...
        arrivals._rescan_due = True  # ... which _read_events notes so (IN_Q_OVERFLOW)
        seen = arrivals.take(10)
        assert len(seen) == 10
        assert arrivals.ready() == 1  # the rest not looked at yet: the scan goes on next take
        for _ in range(10):
            got = arrivals.take(10)
            assert len(got) <= 10
            seen += got
            if not arrivals.ready():
                break
        assert sorted(os.path.basename(p) for p in seen) == [f"{i:02d}.dcm" for i in range(35)]
        assert arrivals.take(10) == [] and arrivals.ready() == 0
    finally:
        arrivals.close()
