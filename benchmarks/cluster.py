#!/usr/bin/env python3
"""Receivers and one PostgreSQL index (issue 21): a receiver's index cost, one receiver's
insert rate, and how long after a series' last instance the cluster's hook runs.

1. **listen's CPU per instance** with ``--no-index``, the SQLite index and
   ``--index postgresql://`` (group commit by the flusher thread): one receiver
   (``--workers 1``), dcmtk's storescu sending a generated corpus of small instances
   (pydicom's MR_small cloned: per-instance costs dominate); the receiver's own CPU
   (``/proc/<pid>/stat``, it and its children) from the first C-STORE until the last
   instance is filed; rounds alternate the three. The PostgreSQL server's own CPU is
   not counted (it is another service's), said so in the output.
2. **Rows per second one receiver inserts**: ``--rows`` rows appended to a pending file,
   then folded in one call (the flusher's path: one transaction per file), into
   PostgreSQL and into SQLite: rows / wall seconds of the fold.
3. **Last instance to hook, two receivers**: two ``listen`` (``--host-id rx-a``/``rx-b``)
   share a data and log folder and the PostgreSQL index; one series is split between
   them by two storescu at once; the hook (``--on-series-complete``) writes its time.
   Printed: hook time minus the end of the later storescu, and the same minus
   ``--series-idle`` (what is not the idle wait itself).

A throwaway server is started (tests/postgres.py: initdb + pg_ctl, as in
benchmarks/index_backends.py) unless ``--pg-url`` names one; each round gets a fresh
database.

    .venv/bin/python benchmarks/cluster.py --instances 1000 --rounds 3 --workdir /work/scratch
    .venv/bin/python benchmarks/cluster.py --smoke      # small and once: does it run?
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import dicom_files, stop_process  # noqa: E402
from index_backends import throwaway_server  # noqa: E402

EXE = str(Path(sys.executable).parent / "dicom-repack")
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its waited-for children (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICKS


def make_corpus(work: Path, n: int) -> Path:
    """``n`` small instances (pydicom's MR_small, fresh UIDs), in series folders."""
    import pydicom
    from pydicom.data import get_testdata_file

    seeds = work / "seeds"
    seeds.mkdir(exist_ok=True)
    src = get_testdata_file("MR_small.dcm")
    assert src is not None
    pydicom.dcmread(src).save_as(seeds / "mr.dcm")
    out = work / "corpus"
    subprocess.run(
        [EXE, "corpus", str(out), "--instances", str(n), "--from", str(seeds), "-q"], check=True
    )
    return out


def all_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.rglob("*.dcm"))


@contextmanager
def listen(
    port: int, data: Path, log: Path, *args: str, stderr_to: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A ``dicom-repack listen`` on 127.0.0.1:``port``, ready; stopped (SIGTERM) after."""
    argv = [EXE, "listen", str(port), "--bind", "127.0.0.1", "-d", str(data), "-l", str(log)]
    with open(stderr_to, "wb") as err:
        proc = subprocess.Popen(
            [*argv, "--workers", "1", *args], stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        deadline = time.monotonic() + 60
        while b"listening on" not in stderr_to.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"listen did not start: {stderr_to.read_text()[-500:]}")
            time.sleep(0.05)
        yield proc
    finally:
        stop_process(proc)


def storescu(port: int, files: list[Path]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["storescu", "-aec", "DICOM-REPACK", "127.0.0.1", str(port), *map(str, files)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def filed_lines(ndjson: Path) -> int:
    try:
        return ndjson.read_bytes().count(b'"error":null')
    except FileNotFoundError:
        return 0


def fresh_db(base_url: str) -> str:
    """A new database on the server of ``base_url``; its URL."""
    import psycopg

    name = "c" + uuid.uuid4().hex[:12]
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return base_url.rsplit("/", 1)[0] + "/" + name


def listen_cpu(files: list[Path], work: Path, index: list[str]) -> float:
    """The receiver's CPU seconds per instance for ``files`` sent by one storescu."""
    out = Path(tempfile.mkdtemp(prefix="listen-", dir=work))
    data, log, lines = out / "data", out / "log", out / "lines.ndjson"
    data.mkdir()
    log.mkdir()
    port = free_port()
    with listen(port, data, log, *index, "--log-ndjson", str(lines), stderr_to=out / "err") as p:
        before = _cpu(p.pid)
        sender = storescu(port, files)
        if sender.wait(timeout=600) != 0:
            raise SystemExit("storescu failed")
        deadline = time.monotonic() + 120
        while filed_lines(lines) < len(files):
            if time.monotonic() > deadline:
                raise SystemExit(f"only {filed_lines(lines)} of {len(files)} filed")
            time.sleep(0.01)
        cpu = _cpu(p.pid) - before
    return cpu / len(files)


def insert_rate(url: str, work: Path, rows: int) -> dict[str, float]:
    """Rows per second of one fold of ``rows`` pending rows, into PostgreSQL and SQLite
    (tables made before the clock; the fold's own work: read, parse, one transaction)."""
    from dicom_repack.core.index import Index, open_index, setup
    from dicom_repack.core.index_rows import PendingIndex, local_path

    out: dict[str, float] = {}
    for name in ("postgresql", "sqlite"):
        folder = Path(tempfile.mkdtemp(prefix=f"rows-{name}-", dir=work))
        index = url if name == "postgresql" else str(folder / "index.sqlite")
        target = open_index(index, str(folder))
        try:
            if isinstance(target, Index):
                target.run(setup)
            else:
                target.run(lambda conn: None)  # connected, schema migrated
            writer = PendingIndex(local_path(index, str(folder)), target=index)
            for i in range(rows):
                values = {"SOPInstanceUID": f"2.25.{i}", "SeriesInstanceUID": f"2.25.9{i // 100}",
                          "StudyInstanceUID": "2.25.77", "PatientID": f"P{i // 1000}"}  # fmt: skip
                writer.add(values, path=f"/data/x/{i}.dcm", size=1000, source=f"/in/{i}.dcm")
            writer.close()
            start = time.perf_counter()
            folded = target.fold()
            elapsed = time.perf_counter() - start
        finally:
            target.close()
        if folded != rows:
            raise SystemExit(f"{name}: folded {folded} of {rows} rows")
        out[name] = folded / elapsed
    return out


def hook_latency(url: str, series: list[Path], work: Path, idle: float) -> float:
    """Seconds from the later storescu's end to the cluster's one hook."""
    out = Path(tempfile.mkdtemp(prefix="hook-", dir=work))
    data, log, hook = out / "data", out / "log", out / "hook.txt"
    data.mkdir()
    log.mkdir()
    script = "import sys, time; open(sys.argv[1], 'a').write(repr(time.time()) + '\\n')"
    common = ("--index", url, "--series-idle", str(idle),
              "--on-series-complete", f'{sys.executable} -c "{script}" {hook}')  # fmt: skip
    pa, pb = free_port(), free_port()
    with (
        listen(pa, data, log, *common, "--host-id", "rx-a", stderr_to=out / "a.err"),
        listen(pb, data, log, *common, "--host-id", "rx-b", stderr_to=out / "b.err"),
    ):
        senders = [storescu(pa, series[0::2]), storescu(pb, series[1::2])]
        for s in senders:
            if s.wait(timeout=600) != 0:
                raise SystemExit("storescu failed")
        last = time.time()
        deadline = time.monotonic() + idle + 120
        while not hook.exists():
            if time.monotonic() > deadline:
                raise SystemExit("the hook never ran")
            time.sleep(0.01)
        time.sleep(idle + 1)  # a second hook, if any, would come by now
    times = [float(x) for x in hook.read_text().split()]
    if len(times) != 1:
        raise SystemExit(f"the hook ran {len(times)} times, not once")
    return times[0] - last


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--series-idle", type=float, default=2.0)
    ap.add_argument("--pg-url", help="an existing server's database (default: a throwaway one)")
    ap.add_argument("--workdir", type=Path, default=None, help="not tmpfs")
    ap.add_argument("--smoke", action="store_true", help="small and once: does it run?")
    args = ap.parse_args()
    if args.smoke:
        args.instances, args.rounds, args.rows, args.series_idle = 40, 1, 500, 1.0
    if shutil.which("storescu") is None:
        raise SystemExit("needs dcmtk's storescu (apt-get install dcmtk)")
    work = Path(tempfile.mkdtemp(prefix="cluster-", dir=args.workdir))
    print(f"work folder {work} (set aside; delete it after the last timed run)")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    corpus = make_corpus(work, args.instances)
    files = all_files(corpus)
    series_dirs = sorted({f.parent for f in files}, key=lambda d: -len(dicom_files(d)))
    series = dicom_files(series_dirs[0])
    with _server(args.pg_url) as base:
        cpu: dict[str, list[float]] = {"no index": [], "SQLite": [], "PostgreSQL": []}
        for r in range(args.rounds):
            order = list(cpu)
            order = order[r % 3 :] + order[: r % 3]
            for name in order:
                index = {"no index": ["--no-index"], "SQLite": [],
                         "PostgreSQL": ["--index", fresh_db(base)]}[name]  # fmt: skip
                cpu[name].append(listen_cpu(files, work, index))
                print(f"round {r} {name}: {cpu[name][-1] * 1000:.3f} ms CPU/instance", flush=True)
        floor = statistics.median(cpu["no index"])
        print(f"\nlisten, {len(files)} instances from storescu, {args.rounds} rounds "
              "(the receiver's CPU; PostgreSQL's server not counted):")  # fmt: skip
        for name, values in cpu.items():
            med = statistics.median(values)
            print(f"  {name:<11} {med * 1000:7.3f} ms/instance "
                  f"({min(values) * 1000:.3f}-{max(values) * 1000:.3f}), "
                  f"{(med - floor) * 1000:+.3f} ms vs no index")  # fmt: skip
        rates = insert_rate(fresh_db(base), work, args.rows)
        print(
            f"\nrows/s one fold inserts ({args.rows} rows, one transaction): "
            + ", ".join(f"{k} {v:,.0f}" for k, v in rates.items())
        )
        lat = [hook_latency(fresh_db(base), series, work, args.series_idle)
               for _ in range(args.rounds)]  # fmt: skip
        print(f"\nlast instance -> hook, two receivers, {len(series)}-instance series, "
              f"--series-idle {args.series_idle:g}: median {statistics.median(lat):.2f} s "
              f"({min(lat):.2f}-{max(lat):.2f}); beyond the idle wait "
              f"{statistics.median(lat) - args.series_idle:.2f} s")  # fmt: skip
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


@contextmanager
def _server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with throwaway_server() as base:
        yield base


if __name__ == "__main__":
    raise SystemExit(main())
