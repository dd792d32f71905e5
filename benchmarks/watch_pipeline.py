"""The seed's deployment, receiver side: ``storescp -xcr rx-repack`` against ``storescp -od
IN`` beside a resident ``dicom-repack watch IN --cleanup``, in alternated rounds.

dcmtk's storescu sends the corpus (its CPU is not counted: the sender is the
modality's). Counted is the receiver side, from the first C-STORE until every
instance is filed (IN empty, no -xcr program left):

- ``storescp-rx``: storescp + the ``sh`` and rx-repack it starts per instance;
- ``storescp-watch``: storescp + the watcher and its workers (started before the
  clock, as a resident service is; their start-up is not counted, nor storescp's);
- ``storescp-alone``: storescp writing the files, nothing filing them (the floor).

CPU comes from ``/proc/<pid>/stat`` (utime + stime + the waited-for children's
cutime + cstime) of the long-lived receiver processes and their live descendants,
before and after, plus ``wait4`` of any program orphaned to this process (a child
subreaper). Printed per contestant: CPU per instance (median, min-max over rounds),
wall for the corpus, and the ratio to ``storescp-rx``; for the watcher, the latency
from storescp closing a file (the filed file's mtime: a move on one filesystem
keeps the inode) to its image record being written (the record's mtime), p50/p99.

    python benchmarks/watch_pipeline.py --corpus default --rounds 5 \\
        --rx-repack /opt/peers/pypx-listener/target/release/rx-repack --workdir /work/scratch

Outputs are set aside under the work folder (never deleted between timed runs);
delete the folder after the last run.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import compile_package, dicom_files, report_creation_cost, unpack_shared
from dicom_repack.bench.feed import find_dcmtk

TICK = os.sysconf("SC_CLK_TCK")
AET = "BENCH"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_cpu(pid: int) -> float:
    """utime + stime + cutime + cstime of ``pid``, in seconds (0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / TICK


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        for k in map(int, kids):
            out.append(k)
            stack.append(k)
    return out


def _tree_cpu(roots: list[int]) -> float:
    pids = list(roots)
    for r in roots:
        pids += _descendants(r)
    return sum(_proc_cpu(p) for p in pids)


def _files_under(folder: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(folder))


def _set_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _echo(port: int) -> bool:
    echo = find_dcmtk("echoscu")
    assert echo
    run = subprocess.run(
        [echo, "-aec", AET, "-to", "5", "127.0.0.1", str(port)], capture_output=True, check=False
    )
    return run.returncode == 0


def _wait(predicate: object, what: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.005)


def _send(port: int, files: list[Path]) -> None:
    scu = find_dcmtk("storescu")
    assert scu
    env = dict(os.environ, TCP_NODELAY="1")
    for i in range(0, len(files), 500):
        part = [str(f) for f in files[i : i + 500]]
        run = subprocess.run(
            [scu, "-aec", AET, "-aet", "SCU", "127.0.0.1", str(port), *part],
            capture_output=True,
            env=env,
            check=False,
        )
        if run.returncode != 0:
            raise SystemExit(f"storescu failed: {run.stderr.decode()[-300:]}")


def _reap_orphans(exclude: set[int]) -> float:
    """wait4 every child left (programs storescp orphaned); their CPU."""
    cpu = 0.0
    while True:
        try:
            pid, _status, ru = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return cpu
        if pid == 0:
            return cpu
        if pid not in exclude:
            cpu += ru.ru_utime + ru.ru_stime


def one_run(
    kind: str, files: list[Path], root: Path, rx: str | None, jobs: int | None
) -> dict[str, float]:
    """One contestant once: receiver-side CPU (s), wall (s), latencies (s)."""
    root.mkdir(parents=True)
    incoming, data, log = root / "in", root / "data", root / "log"
    incoming.mkdir()
    scp = find_dcmtk("storescp")
    assert scp
    port = _free_port()
    env = dict(os.environ, TCP_NODELAY="1")
    argv = [scp, "-aet", AET, "-od", str(incoming)]
    watcher: subprocess.Popen[bytes] | None = None
    if kind == "storescp-rx":
        assert rx
        xcr = " ".join(shlex.quote(a) for a in [rx, "--datadir", str(data), "--logdir", str(log)])
        argv += ["-xcr", f"{xcr} --xcrdir #p --xcrfile #f --cleanup"]
    elif kind == "storescp-watch":
        ours = str(Path(sys.executable).parent / "dicom-repack")
        cmd = [ours, "watch", str(incoming), "--datadir", str(data), "--logdir", str(log),
               "--cleanup"] + (["--jobs", str(jobs)] if jobs else [])  # fmt: skip
        errlog = open(root / "watch-stderr.log", "wb")  # noqa: SIM115 - closed below
        watcher = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errlog)
        _wait(lambda: b"watching" in (root / "watch-stderr.log").read_bytes(), "the watcher")
    receiver = subprocess.Popen(
        [*argv, str(port)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env
    )
    _wait(lambda: _echo(port), "storescp")
    time.sleep(0.2)  # let the echo's association and any start-up work settle
    roots = [receiver.pid] + ([watcher.pid] if watcher else [])
    cpu0 = _tree_cpu(roots)
    t0 = time.perf_counter()
    _send(port, files)
    _echo(port)  # storescp wrote the last instance (and started its program)
    if kind != "storescp-alone":
        _wait(lambda: _files_under(incoming) == 0, "IN to empty")
    if kind == "storescp-rx":
        _wait(lambda: not _descendants(receiver.pid), "the -xcr programs")
    wall = time.perf_counter() - t0
    cpu1 = _tree_cpu(roots)
    receiver.send_signal(signal.SIGTERM)
    receiver.wait()
    orphans = _reap_orphans({receiver.pid} | ({watcher.pid} if watcher else set()))
    if watcher is not None:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait()
        errlog.close()
    out = {"cpu": cpu1 - cpu0 + orphans, "wall": wall}
    if kind == "storescp-watch":
        out["latencies"] = _latencies(data, log)  # type: ignore[assignment]
    filed = len(dicom_files(data)) if kind != "storescp-alone" else _files_under(incoming)
    if filed != len(files):
        raise SystemExit(f"{kind}: {filed} of {len(files)} filed under {root}")
    return out


def _latencies(data: Path, log: Path) -> list[float]:
    """Per instance: image record's mtime - the filed file's mtime (storescp's close)."""
    placed = {p.name: p.stat().st_mtime for p in data.rglob("*.dcm")}
    out = []
    for rec in log.glob("seriesData/*-img/*.json"):
        name = rec.name[: -len(".json")]
        if name in placed:
            out.append(rec.stat().st_mtime - placed[name])
    return out


def corpus_files(name: str, work: Path) -> list[Path]:
    if name == "default":
        from dicom_repack.bench.corpus import CorpusSpec, generate_corpus

        root = work / "corpus-default"
        generate_corpus(root, CorpusSpec(instances=480, size_bytes=None, seed=0), None)
        return dicom_files(root)
    if name in ("SAG-anon", "example-dicom-structural"):
        return dicom_files(unpack_shared(name, work / f"corpus-{name}"))
    return dicom_files(Path(name))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="default", help="default, SAG-anon, or a folder")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rx-repack", help="the real rx-repack (else storescp-rx is skipped)")
    ap.add_argument("--jobs", type=int, help="the watcher's workers (default: all cores)")
    ap.add_argument("--only", default="storescp-rx,storescp-watch,storescp-alone")
    ap.add_argument("--workdir", help="where corpora and outputs go (not tmpfs)")
    args = ap.parse_args()
    compile_package()
    _set_subreaper()
    if not (find_dcmtk("storescp") and find_dcmtk("storescu") and find_dcmtk("echoscu")):
        raise SystemExit(
            "dcmtk's storescp, storescu and echoscu are needed (apt-get install dcmtk)"
        )
    kinds = [k for k in args.only.split(",") if k != "storescp-rx" or args.rx_repack]
    work = Path(tempfile.mkdtemp(prefix="watch-pipeline-", dir=args.workdir))
    files = corpus_files(args.corpus, work)
    print(f"corpus {args.corpus}: {len(files)} instances; outputs under {work} (set aside)")
    report_creation_cost(work, "before")
    results: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    loads = [os.getloadavg()[0]]
    for r in range(args.rounds):
        order = kinds if r % 2 == 0 else list(reversed(kinds))
        for kind in order:
            results[kind].append(
                one_run(kind, files, work / f"r{r}-{kind}", args.rx_repack, args.jobs)
            )
            loads.append(os.getloadavg()[0])
    report_creation_cost(work, "after")
    n = len(files)
    print(f"load average (1 min) during the runs: {min(loads):.2f}-{max(loads):.2f}")
    base = (
        statistics.median(x["cpu"] for x in results["storescp-rx"])
        if "storescp-rx" in results
        else None
    )
    base_wall = statistics.median(x["wall"] for x in results["storescp-rx"]) if base else None
    print(
        f"{'contestant':16} {'ms CPU/inst':>12} {'(min-max)':>14} {'wall s':>8} {'x rx CPU':>9} {'x rx wall':>10}"
    )
    for kind, runs in results.items():
        per = sorted(x["cpu"] / n * 1000 for x in runs)
        walls = sorted(x["wall"] for x in runs)
        med, wmed = statistics.median(per), statistics.median(walls)
        ratio = f"{med / (base / n * 1000):9.2f}" if base else f"{'-':>9}"
        wratio = f"{wmed / base_wall:10.2f}" if base_wall else f"{'-':>10}"
        print(
            f"{kind:16} {med:12.3f} {f'{per[0]:.3f}-{per[-1]:.3f}':>14} {wmed:8.2f} {ratio} {wratio}"
        )
    if "storescp-watch" in results:
        lat = sorted(v for x in results["storescp-watch"] for v in x["latencies"])  # type: ignore[attr-defined]
        if lat:
            p50 = lat[len(lat) // 2]
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            print(f"watch latency, storescp's close -> image record written: p50 {p50 * 1000:.1f} ms, "
                  f"p99 {p99 * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms ({len(lat)} instances)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
