"""Receivers side by side, each fed by dcmtk's storescu (TCP_NODELAY=1 on both sides).

Contestants (a fresh receiver per run; order rotated every repetition):

- ``storescp``            dcmtk storescp, plain receive (no repack)
- ``storescp-xcr-true``   storescp ``-xcr /bin/true -xs``: the floor any per-instance
                          repacker pays (a process start per instance)
- ``storescp-xcr-door``   storescp ``-xcr "dicom-repack --xcrdir #p --xcrfile #f ..." -xs``
- ``pynetdicom``          minimal pynetdicom SCP writing ``event.encoded_dataset()``
- ``pynetdicom-repack``   the same, filing through ``Repacker.repack_buffer`` with records
- ``listen``              ``dicom-repack listen`` with records (default ``--workers``: one per core)
- ``listen-1w``           the same with ``--workers 1`` (one process, one GIL)
- ``listen-noindex``, ``listen-1w-noindex``: the same with ``--no-index`` (what the
                          SQLite index costs the receiver)
- ``storescp-xcr-rx``     storescp ``-xcr "rx-repack ... --cleanup" -xs`` (with ``--rx-repack
                          PATH``): the Rust rewrite as the seed deploys it, one process per
                          instance; issue 11 wants listen's CPU per instance <= 1/3 of it

Measured per run: instances/s (storescu wall clock), receiver CPU per instance
(utime+stime of the receiver and its waited-for children, from /proc, between the
receiver being ready and storescu returning), the senders' own CPU per instance
(``wait4`` of each storescu: on a 2-core machine the sender takes its share of the
same cores), cores busy ((receiver + sender CPU) / wall), receiver peak RSS (VmHWM).
Then a concurrency run: 8 storescu at once against storescp plain and each listen
variant. Run trees are set aside with their files truncated to 0 bytes (blocks freed,
no inode freed: see dicom_repack/bench/scratch.py).

    python benchmarks/listen_bench.py --reps 5 --json /tmp/listen-bench.json

Corpora: SAG-anon (shared) and a small-file corpus made by ``dicom-repack corpus``
(5,460 instances of ~20 KB). Per-instance-process contestants get the first
``--xcr-limit`` instances of the small corpus (their rate does not depend on count).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import compile_package, dicom_files, report_creation_cost, stop_process, unpack_shared
from dicom_repack.bench.feed import find_dcmtk
from dicom_repack.bench.scratch import Scratch

EXE = str(Path(sys.executable).parent / "dicom-repack")
TICK = os.sysconf("SC_CLK_TCK")
PER_PROCESS = {"storescp-xcr-true", "storescp-xcr-door", "storescp-xcr-rx"}
#: the rx-repack binary (--rx-repack)
RX_REPACK: list[str] = []
#: ``--ab``: label ("A", "B") -> a version's src folder, for the ``listen@A``/``listen@B``
#: contestants (``listen`` with default workers, run with PYTHONPATH=that folder)
AB: dict[str, str] = {}
LISTEN_AB: list[str] = []
_AB_RUN = "from dicom_repack.cli import run; run()"
#: the contestants that also run with ``--concurrency`` senders at once
CONCURRENT = ("storescp", "listen-1w", "listen", "listen-1w-noindex", "listen-noindex")


@dataclass
class Run:
    contestant: str
    corpus: str
    instances: int
    seconds: float
    cpu_s: float
    peak_rss_mb: float
    streams: int = 1
    bytes: int = 0
    landed: int = 0
    load: float = 0.0
    sender_cpu_s: float = 0.0
    #: per receiver process (parent first, then workers): the most threads seen during
    #: the run; a listen process runs one thread per association plus its gate
    threads: tuple[int, ...] = ()

    @property
    def rate(self) -> float:
        return self.instances / self.seconds

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_s / self.instances

    @property
    def sender_cpu_ms(self) -> float:
        return 1000 * self.sender_cpu_s / self.instances

    @property
    def cores_busy(self) -> float:
        return (self.cpu_s + self.sender_cpu_s) / self.seconds


def dcmtk(tool: str) -> str:
    exe = find_dcmtk(tool)
    if exe is None:
        sys.exit(f"dcmtk's {tool} not found: apt-get install dcmtk")
    return exe


def env_nodelay() -> dict[str, str]:
    return dict(os.environ, TCP_NODELAY="1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def receiver_argv(name: str, port: int, out: Path) -> list[str]:
    data, log = out / "data", out / "log"
    data.mkdir(parents=True, exist_ok=True)
    scp = dcmtk("storescp")
    if name == "storescp":
        return [scp, "-od", str(data), str(port)]
    if name == "storescp-xcr-true":
        return [scp, "-od", str(data), "-xcr", "/bin/true", "-xs", str(port)]
    if name == "storescp-xcr-door":
        incoming = out / "incoming"
        incoming.mkdir()
        door = f"{EXE} --xcrdir #p --xcrfile #f --datadir {data} --logdir {log} --cleanup"
        return [scp, "-od", str(incoming), "-xcr", door, "-xs", str(port)]
    if name in ("pynetdicom", "pynetdicom-repack"):
        script = str(Path(__file__).resolve().parent / "listen_pynetdicom_scp.py")
        argv = [sys.executable, script, "--port", str(port), "--out", str(data)]
        return argv + (["--repack", "--logdir", str(log)] if name.endswith("repack") else [])
    if name == "storescp-xcr-rx":
        incoming = out / "incoming"
        incoming.mkdir()
        rx = f"{RX_REPACK[0]} --xcrdir #p --xcrfile #f --datadir {data} --logdir {log} --cleanup"
        return [scp, "-od", str(incoming), "-xcr", rx, "-xs", str(port)]
    if name in ("listen", "listen-1w", "listen-noindex", "listen-1w-noindex", *LISTEN_AB):
        workers = ["--workers", "1"] if name.startswith("listen-1w") else []
        index = ["--no-index"] if name.endswith("-noindex") else []
        exe = [sys.executable, "-c", _AB_RUN] if "@" in name else [EXE]
        return [*exe, "listen", "--bind", "127.0.0.1", "--port", str(port), *workers, *index,
                "--datadir", str(data), "--logdir", str(log)]  # fmt: skip
    raise ValueError(name)


def cpu_of(pid: int) -> float:
    """utime + stime + cutime + cstime of ``pid`` and of its live descendants, seconds.

    The descendants count: ``listen --workers N`` files in worker processes that are
    only waited for when it stops (storescp's -xcr children are waited for at once).
    """
    total = 0.0
    for proc in [pid, *_descendants(pid)]:
        try:
            with open(f"/proc/{proc}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile: its parent's cutime has it
            continue
        total += sum(int(x) for x in fields[11:15]) / TICK
    return total


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def peak_rss_mb(pid: int) -> float:
    """The largest VmHWM of ``pid`` and its live descendants (per process: per worker)."""
    peak = 0.0
    for proc in [pid, *_descendants(pid)]:
        try:
            with open(f"/proc/{proc}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return peak


class ThreadSampler:
    """The most threads each process had, sampled every 20 ms (how associations spread
    over listen's workers: each association is a thread of the worker that took it)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.most = [0] * len(pids)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.02):
            for i, pid in enumerate(self.pids):
                try:
                    self.most[i] = max(self.most[i], len(os.listdir(f"/proc/{pid}/task")))
                except OSError:
                    continue

    def stop(self) -> tuple[int, ...]:
        self._done.set()
        self._thread.join()
        return tuple(self.most)


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"receiver exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            time.sleep(0.2)  # let it log and forget the probe
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("receiver never listened")


def one_run(
    name: str, corpus: str, files: list[Path], work: Path, trash: Scratch, streams: int = 1
) -> Run:
    port = free_port()
    out = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    env = env_nodelay()
    if "@" in name:
        env["PYTHONPATH"] = AB[name.split("@", 1)[1]]
    proc = subprocess.Popen(
        receiver_argv(name, port, out),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=out,
    )
    try:
        wait_listening(port, proc)
        cpu0 = cpu_of(proc.pid)
        sampler = ThreadSampler([proc.pid, *_descendants(proc.pid)])
        t0 = time.perf_counter()
        parts = [files[i::streams] for i in range(streams)]
        logs = [out / f"storescu-{i}.log" for i in range(streams)]
        senders = []
        for part, log in zip(parts, logs, strict=True):
            with open(log, "wb") as err:
                senders.append(
                    subprocess.Popen(
                        [dcmtk("storescu"), "-aec", "ANY", "127.0.0.1", str(port), *map(str, part)],
                        env=env_nodelay(),
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                    )
                )
        sender_cpu = 0.0
        for s, log in zip(senders, logs, strict=True):
            _, status, usage = os.wait4(s.pid, 0)  # the sender's own CPU, as it exits
            s.returncode = os.waitstatus_to_exitcode(status)
            sender_cpu += usage.ru_utime + usage.ru_stime
            if s.returncode != 0:
                tail = log.read_bytes().decode(errors="replace")[-500:]
                raise RuntimeError(f"storescu failed against {name}: {tail}")
        seconds = time.perf_counter() - t0
        threads = sampler.stop()
        cpu = cpu_of(proc.pid) - cpu0
        rss = peak_rss_mb(proc.pid)
        landed = sum(1 for f in (out / "data").rglob("*") if f.is_file())
        if landed < len(files):
            print(f"  warning: {name}: only {landed} of {len(files)} files landed", flush=True)
    finally:
        stop_process(proc)
        trash.set_aside(out)
    size = sum(f.stat().st_size for f in files)
    return Run(
        name, corpus, len(files), seconds, cpu, rss, streams, size, landed, os.getloadavg()[0],
        sender_cpu, threads,
    )  # fmt: skip


def summarise(runs: list[Run]) -> list[dict[str, object]]:
    groups: dict[tuple[str, str, int], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.corpus, r.contestant, r.streams), []).append(r)
    rows = []
    for (corpus, name, streams), rs in groups.items():
        rows.append(
            {
                "corpus": corpus,
                "contestant": name,
                "streams": streams,
                "instances": rs[0].instances,
                "reps": len(rs),
                "instances_per_s": round(statistics.median(r.rate for r in rs), 1),
                "mb_per_s": round(statistics.median(r.bytes / 1e6 / r.seconds for r in rs), 1),
                "cpu_ms_per_instance": round(statistics.median(r.cpu_ms for r in rs), 3),
                "sender_cpu_ms_per_instance": round(
                    statistics.median(r.sender_cpu_ms for r in rs), 3
                ),
                "cores_busy": round(statistics.median(r.cores_busy for r in rs), 2),
                "peak_rss_mb": round(max(r.peak_rss_mb for r in rs), 1),
            }
        )
    return rows


def ratios(rows: list[dict[str, object]]) -> list[str]:
    out = []
    by = {(r["corpus"], r["contestant"], r["streams"]): r for r in rows}
    for corpus in sorted({str(r["corpus"]) for r in rows}):
        for name in ("listen", "listen-1w", "listen-noindex", "listen-1w-noindex", *LISTEN_AB):
            one, many = by.get((corpus, name, 1)), by.get((corpus, name, 8))
            if one and many:
                gain = float(many["instances_per_s"]) / float(one["instances_per_s"])  # type: ignore[arg-type]
                out.append(f"{corpus}: {name} 8 associations / 1: {gain:.2f}x instances/s")
        for streams in sorted({int(r["streams"]) for r in rows}):  # type: ignore[call-overload]
            a, b = by.get((corpus, "listen@A", streams)), by.get((corpus, "listen@B", streams))
            if a and b:
                speed = float(b["instances_per_s"]) / float(a["instances_per_s"])  # type: ignore[arg-type]
                cpu = float(b["cpu_ms_per_instance"]) / float(a["cpu_ms_per_instance"])  # type: ignore[arg-type]
                out.append(
                    f"{corpus}: listen B / A at {streams} streams: {speed:.2f}x instances/s, "
                    f"{cpu:.2f}x CPU per instance"
                )
        for name in ("listen", "listen-1w"):
            listen = by.get((corpus, name, 1))
            if not listen:
                continue
            for base in (
                "storescp",
                "storescp-xcr-true",
                "storescp-xcr-door",
                "storescp-xcr-rx",
                "pynetdicom-repack",
            ):
                b = by.get((corpus, base, 1))
                if not b:
                    continue
                speed = float(listen["instances_per_s"]) / float(b["instances_per_s"])  # type: ignore[arg-type]
                cpu = float(listen["cpu_ms_per_instance"]) / float(b["cpu_ms_per_instance"])  # type: ignore[arg-type]
                out.append(
                    f"{corpus}: {name} / {base}: {speed:.2f}x instances/s, "
                    f"{cpu:.2f}x CPU per instance"
                )
    return out


def table(rows: list[dict[str, object]]) -> str:
    head = (
        "| corpus | receiver | streams | instances | reps | instances/s | MB/s "
        "| CPU ms/instance | storescu CPU ms/instance | cores busy | peak RSS MB |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['corpus']} | {r['contestant']} | {r['streams']} | {r['instances']} | "
            f"{r['reps']} | {r['instances_per_s']} | {r['mb_per_s']} | "
            f"{r['cpu_ms_per_instance']} | {r['sender_cpu_ms_per_instance']} | "
            f"{r['cores_busy']} | {r['peak_rss_mb']} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    p.add_argument("--small-instances", type=int, default=5460)
    p.add_argument("--xcr-limit", type=int, default=1000)
    p.add_argument(
        "--contestants",
        default="storescp,storescp-xcr-true,storescp-xcr-door,pynetdicom,pynetdicom-repack,"
        "listen-1w,listen",
    )
    p.add_argument("--corpora", default="SAG-anon,small")
    p.add_argument("--concurrency", type=int, default=8, help="streams in the concurrency run")
    p.add_argument("--json", type=Path, help="write every run and the summary here")
    p.add_argument(
        "--ab",
        nargs=2,
        metavar=("A_SRC", "B_SRC"),
        help="add contestants listen@A and listen@B: listen (default workers) from two "
        "versions' src folders (git archive REV src | tar -x -C DIR; python -m compileall "
        "-q DIR/src), alternated with the rest at 1 and --concurrency streams",
    )
    p.add_argument(
        "--keep-trash",
        action="store_true",
        help="leave the (emptied) run trees in WORK/trash: deleting them puts the disk in its "
        "slow state for the next timed run, whoever runs it",
    )
    p.add_argument(
        "--rx-repack",
        help="a real rx-repack: adds the storescp-xcr-rx contestant (Rust, per instance)",
    )
    args = p.parse_args(argv)
    if args.ab:
        for label, src in zip(("A", "B"), args.ab, strict=True):
            AB[label] = str(Path(src).resolve())
            LISTEN_AB.append(f"listen@{label}")
        args.contestants += "," + ",".join(LISTEN_AB)
    if args.rx_repack:
        RX_REPACK[:] = [args.rx_repack]
        if "storescp-xcr-rx" not in args.contestants:
            args.contestants += ",storescp-xcr-rx"

    compile_package()
    work = args.work or Path(tempfile.mkdtemp(prefix="listen-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    corpora: dict[str, list[Path]] = {}
    for corpus in args.corpora.split(","):
        if corpus == "small":
            small = work / "small-corpus"
            if not small.exists():
                subprocess.run(
                    [EXE, "corpus", str(small), "--instances", str(args.small_instances), "-q"],
                    check=True,
                )
            corpora["small"] = dicom_files(small)
        else:
            corpora[corpus] = dicom_files(unpack_shared(corpus, work / "corpora"))
    names = args.contestants.split(",")
    trash = Scratch(work, empty_files=True)
    report_creation_cost(work, "before the runs")
    runs: list[Run] = []
    log: Callable[[Run], None] = lambda r: print(  # noqa: E731
        f"  {r.corpus:9} {r.contestant:18} x{r.streams} {r.rate:8.1f} inst/s "
        f"{r.cpu_ms:7.2f} ms CPU/inst (storescu {r.sender_cpu_ms:5.2f})  "
        f"{r.peak_rss_mb:6.1f} MB  load {r.load:.1f}  threads {'/'.join(map(str, r.threads))}",
        flush=True,
    )
    for rep in range(args.reps):
        print(f"repetition {rep + 1}/{args.reps}", flush=True)
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for corpus, files in corpora.items():
            for name in order:
                subset = files
                if corpus == "small" and name in PER_PROCESS:
                    subset = files[: args.xcr_limit]
                run = one_run(name, corpus, subset, work, trash)
                runs.append(run)
                log(run)
            if args.concurrency > 1:
                for name in order:
                    if name in CONCURRENT or name in LISTEN_AB:
                        run = one_run(name, corpus, files, work, trash, streams=args.concurrency)
                        runs.append(run)
                        log(run)
    report_creation_cost(work, "after the runs")
    if not args.keep_trash:
        trash.empty()
    rows = summarise(runs)
    print()
    print(table(rows))
    print()
    for line in ratios(rows):
        print(line)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"runs": [asdict(r) for r in runs], "summary": rows, "ratios": ratios(rows)},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
