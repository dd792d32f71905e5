"""``dicom-repack bench``: the seed's green benchmark as one command.

Order of events, and why:

1. The corpus: ``--corpus DIR`` or a generated one (pydicom's example files cloned
   with fresh UIDs), so the bench runs anywhere without a download.
2. The truth: every instance hashed and planned under each layout (untimed). This
   also reads the whole corpus once, so every contestant starts with a warm page
   cache (stated in the report; ``--drop-caches`` gives cold runs instead).
3. The runs: ``--repeat`` rounds; in each round every contestant runs once, in an
   order rotated from round to round (alternated, never AAA BBB), each into fresh
   folders, each measured as one process tree with CodeCarbon around it.
4. After each run, its output is verified; a contestant that loses or damages
   anything is failed, whatever its speed.
5. ``results.json``, ``results.csv``, CodeCarbon's ``emissions.csv``, ``report.html``
   and the terminal table. Ctrl-C stops the current run cleanly, and everything that
   finished is still written, marked incomplete.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from .contestants import (
    Contestant,
    RunContext,
    custom_contestant,
    default_contestants,
)

__all__ = ["BenchOptions", "main", "run_bench"]

#: the default corpus: synthetic MR phantom studies (see .phantom), ~100 MB
DEFAULT_INSTANCES = 480
#: px-repack costs ~0.5 s of CPU per instance: it runs on a sample (scaled, labelled)
DEFAULT_PX_SAMPLE = 40


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dicom-repack bench",
        description="Benchmark px-repack, rx-repack and dicom-repack's doors on one corpus: "
        "wall time, CPU, peak memory, energy and CO2 (CodeCarbon), and correctness of every "
        "output. Writes results.json, results.csv, emissions.csv and a self-contained report.html.",
    )
    g = p.add_argument_group("corpus")
    g.add_argument("--corpus", help="any folder tree of DICOM files (default: generate one)")
    size = g.add_mutually_exclusive_group()
    size.add_argument(
        "--instances",
        type=int,
        help=f"generated corpus: number of instances (default {DEFAULT_INSTANCES})",
    )
    size.add_argument("--size", help="generated corpus: total size, e.g. 200MB, 2GB")
    g.add_argument("--seed", type=int, default=0, help="generated corpus: UID seed (default 0)")
    g.add_argument(
        "--corpus-from", help="generated corpus: seed folder (default: pydicom's examples)"
    )

    g = p.add_argument_group("contestants")
    g.add_argument("--only", help="comma-separated contestants to run, in this order (see --list)")
    g.add_argument("--skip", help="comma-separated contestants not to run")
    g.add_argument(
        "--list",
        dest="list_only",
        action="store_true",
        help="list the contestants and whether they can run",
    )
    g.add_argument(
        "--px-repack",
        help="path of px-repack (default: PATH, then the bench's own install in "
        "~/.cache/dicom-repack/px-repack, set up when absent)",
    )
    g.add_argument(
        "--no-setup",
        action="store_true",
        help="do not install px-repack when it is absent (it is then skipped)",
    )
    g.add_argument(
        "--px-sample",
        type=int,
        default=DEFAULT_PX_SAMPLE,
        help="px-repack runs on an evenly spaced sample of this many instances, its costs "
        f"scaled to the corpus by instance count (default {DEFAULT_PX_SAMPLE}; 0: the whole "
        "corpus)",
    )
    g.add_argument("--rx-repack", help="path of rx-repack (default: PATH, then ~/.cargo/bin)")
    g.add_argument(
        "--per-instance",
        action="append",
        default=[],
        metavar="NAME[@px]=COMMAND",
        help="add a per-instance contestant; COMMAND may use {xcrdir} {xcrfile} {datadir} {logdir}",
    )

    g = p.add_argument_group("how")
    g.add_argument("--repeat", type=int, default=3, help="repetitions per contestant (default 3)")
    g.add_argument(
        "--concurrency",
        type=int,
        default=512,
        help="per-instance: processes at once (default 512, as the seed)",
    )
    g.add_argument("--jobs", type=int, help="batch: worker processes (default: all cores)")
    g.add_argument(
        "--drop-caches",
        action="store_true",
        help="cold cache: drop the page cache before each run (root)",
    )
    g.add_argument(
        "--country", default="USA", help="ISO 3166 alpha-3 code for CO2 intensity (default USA)"
    )
    g.add_argument("--no-energy", action="store_true", help="do not run CodeCarbon")
    g.add_argument(
        "--sample-interval", type=float, default=0.1, help="RSS sampling period, s (default 0.1)"
    )

    g = p.add_argument_group("where")
    g.add_argument("--out", help="results folder (default ./bench-results/<timestamp>)")
    g.add_argument(
        "--workdir", help="scratch folder for output trees (default: temp folder beside the corpus)"
    )
    g.add_argument(
        "--keep", action="store_true", help="keep the output trees (and a generated corpus)"
    )
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


class BenchOptions(argparse.Namespace):
    corpus: str | None
    instances: int | None
    size: str | None
    seed: int
    corpus_from: str | None
    only: str | None
    skip: str | None
    list_only: bool
    px_repack: str | None
    no_setup: bool
    px_sample: int
    rx_repack: str | None
    per_instance: list[str]
    repeat: int
    concurrency: int
    jobs: int | None
    drop_caches: bool
    country: str
    no_energy: bool
    sample_interval: float
    out: str | None
    workdir: str | None
    keep: bool
    quiet: bool


@dataclass(slots=True)
class Sample:
    """The instances a sampled contestant runs on, their list file and their truth."""

    files: list[Path]
    list_file: Path
    truth: Any

    @property
    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def select_contestants(opts: BenchOptions) -> list[Contestant]:
    """All known contestants plus custom ones, filtered by --only/--skip (unknown names refused)."""
    every: list[Contestant] = default_contestants(
        opts.px_repack, opts.rx_repack, opts.px_sample or None
    )
    every += [custom_contestant(spec) for spec in opts.per_instance]
    known = {c.name for c in every}
    for n in _names(opts.only) + _names(opts.skip):
        if n not in known:
            raise ValueError(f"unknown contestant {n!r} (known: {', '.join(sorted(known))})")
    only, skip = _names(opts.only), set(_names(opts.skip))
    if only:  # in the order given: the first round runs them in that order
        by_name = {c.name: c for c in every}
        return [by_name[n] for n in dict.fromkeys(only) if n not in skip]
    return [c for c in every if c.name not in skip]


def machine_description(workdir: Path) -> dict[str, Any]:
    """What the report says about the machine the figures come from."""
    import psutil

    cpu_model = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    fs = None
    best = ""
    real = os.path.realpath(workdir)
    with contextlib.suppress(Exception):
        for part in psutil.disk_partitions(all=True):
            if real.startswith(part.mountpoint) and len(part.mountpoint) > len(best):
                best, fs = part.mountpoint, f"{part.fstype} on {part.mountpoint} ({part.device})"
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "physical_cpus": psutil.cpu_count(logical=False),
        "memory_bytes": psutil.virtual_memory().total,
        "workdir_filesystem": fs,
        "python": sys.version.split()[0],
    }


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist in ("dicom-repack", "pydicom", "pynetdicom", "codecarbon", "psutil", "matplotlib"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def _drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w", encoding="ascii") as fh:
        fh.write("3\n")


def main(argv: list[str]) -> int:
    parser = build_parser()
    opts = parser.parse_args(argv, namespace=BenchOptions())
    if opts.repeat < 1 or opts.concurrency < 1 or opts.px_sample < 0:
        parser.error("--repeat and --concurrency must be at least 1, --px-sample at least 0")
    try:
        contestants = select_contestants(opts)
    except ValueError as exc:
        parser.error(str(exc))
    for flag, folder in (("--corpus", opts.corpus), ("--corpus-from", opts.corpus_from)):
        if folder and not os.path.isdir(folder):
            parser.error(f"{flag} {folder}: no such folder")
    if opts.list_only:
        for c in contestants:
            why = c.unavailable()
            print(
                f"{c.name:22} {'ready' if why is None else 'skip: ' + why}  ({c.label or c.description})"
            )
        return EXIT_OK
    if opts.size:
        from ..core.sizes import parse_size

        try:
            parse_size(opts.size)
        except ValueError as exc:
            parser.error(str(exc))
    if opts.drop_caches and not os.access("/proc/sys/vm/drop_caches", os.W_OK):
        parser.error("--drop-caches needs write access to /proc/sys/vm/drop_caches (root)")
    if not opts.no_energy:
        from .energy import codecarbon_available

        if not codecarbon_available():
            parser.error(
                "CodeCarbon is not installed: pip install 'dicom-repack[bench]' "
                "(or use --no-energy)"
            )
    if not opts.no_setup and not opts.px_repack:
        contestants = _set_up_px_repack(opts, contestants)
    return run_bench(opts, contestants, argv)


def _set_up_px_repack(opts: BenchOptions, contestants: list[Contestant]) -> list[Contestant]:
    """When px-repack is selected but absent, install it (once, into the cache folder)
    and select it again; otherwise leave the list as it is."""
    px = next((c for c in contestants if c.name == "px-repack"), None)
    if px is None or px.unavailable() is None:
        return contestants
    from ..doors.plumbing import say
    from .peers import setup_px_repack

    if setup_px_repack(lambda line: say("bench", line)) is None:
        return contestants
    try:
        return select_contestants(opts)
    except ValueError:  # pragma: no cover - the same names as before
        return contestants


def compile_bytecode() -> str:
    """Compile dicom-repack's own package to bytecode before anything is timed.

    An editable install under ``PYTHONDONTWRITEBYTECODE=1`` (as on many CI machines)
    never writes ``.pyc`` files, so each per-instance process would recompile the
    package at start (34-56 ms measured). ``compileall`` writes them once; a wheel
    install has them already and this is a no-op. Returns what was done."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("dicom_repack")
    if spec is None or not spec.submodule_search_locations:
        return "not found"
    folder = next(iter(spec.submodule_search_locations))
    ok = compileall.compile_dir(folder, quiet=1, workers=1)
    return f"compileall {folder}: {'ok' if ok else 'errors'}"


def run_bench(opts: BenchOptions, contestants: list[Contestant], argv: list[str]) -> int:
    """Run the bench; return 0 when every dicom-repack contestant that ran was correct and
    complete (a peer failing its own checks is said in the verdict, not counted), 1 when
    one failed, 130 when interrupted."""
    from rich.console import Console

    from ..core.sizes import parse_size
    from . import report
    from .corpus import CorpusSpec, describe_corpus, find_instances, generate_corpus
    from .verify import build_truth

    console = Console(stderr=True)
    started = _dt.datetime.now().astimezone()
    out = Path(opts.out or Path("bench-results") / started.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)

    # -- where scratch goes: beside the corpus, so batch-move's renames stay on one filesystem
    if opts.workdir:
        work_parent = Path(opts.workdir)
        work_parent.mkdir(parents=True, exist_ok=True)
    elif opts.corpus:
        work_parent = Path(opts.corpus).resolve().parent
        if not os.access(work_parent, os.W_OK):
            work_parent = Path(tempfile.gettempdir())
    else:
        work_parent = Path(tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="dicom-repack-bench-", dir=work_parent))

    interrupted = False
    meter: Any = None
    results: dict[str, Any] = {
        "tool": "dicom-repack bench",
        "started": started.isoformat(timespec="seconds"),
        "command": ["dicom-repack", "bench", *argv],
        "out": str(out),
        "complete": False,
        "runs": [],
    }
    try:
        # -- corpus
        if opts.corpus:
            corpus_root = Path(opts.corpus).resolve()
            with console.status(f"finding instances under {corpus_root}"):
                files = find_instances(corpus_root)
            if not files:
                console.print(f"[red]no DICOM Part 10 files under {corpus_root}[/]")
                return EXIT_USAGE
        else:
            corpus_root = work / "corpus"
            seeds = find_instances(opts.corpus_from) if opts.corpus_from else None
            spec = CorpusSpec(
                instances=None if opts.size else (opts.instances or DEFAULT_INSTANCES),
                size_bytes=parse_size(opts.size) if opts.size else None,
                seed=opts.seed,
            )
            with console.status("generating the corpus"):
                generate_corpus(corpus_root, spec, seeds)
                files = find_instances(corpus_root)
        corpus = describe_corpus(corpus_root, files)
        corpus["generated_by_bench"] = not opts.corpus
        list_file = work / "instances.txt"
        list_file.write_text("".join(f"{f}\n" for f in files), encoding="utf-8")

        # -- contestants
        entries: list[dict[str, Any]] = []
        runnable: list[Contestant] = []
        for c in contestants:
            why = c.unavailable()
            entries.append(
                {
                    "name": c.name,
                    "kind": c.kind,
                    "layout": c.layout,
                    "description": c.description,
                    "label": c.label or c.name,
                    "available": why is None,
                    "skip_reason": why,
                    "version": c.version() if why is None else None,
                }
            )
            if why is None:
                runnable.append(c)
        # -- truth (untimed; warms the page cache)
        with console.status(f"hashing and planning {len(files)} instances (untimed)"):
            truth = build_truth(files, {c.layout for c in runnable})
            samples: dict[str, Sample] = {}
            for c in runnable:
                if c.sample and c.sample < len(files):
                    k = c.sample
                    sub = [files[i * len(files) // k] for i in range(k)]
                    sample_list = work / f"instances-{c.name}.txt"
                    sample_list.write_text("".join(f"{f}\n" for f in sub), encoding="utf-8")
                    samples[c.name] = Sample(sub, sample_list, build_truth(sub, {c.layout}))
        for entry in entries:
            if entry["name"] in samples:
                sub = samples[entry["name"]].files
                entry["sample_instances"] = len(sub)
                entry["sample_bytes"] = sum(f.stat().st_size for f in sub)
        corpus["duplicate_destinations"] = truth.duplicates
        bytecode = compile_bytecode()

        from .energy import detect_rapl

        method: dict[str, Any] = {
            "summary": "not measured (--no-energy)",
            "rapl": detect_rapl()[0],
            "hint": None,
        }
        if not opts.no_energy:
            from .energy import EnergyMeter

            meter = EnergyMeter(out, country=opts.country)
            if method["rapl"] == "readable":
                with console.status("RAPL readable: measuring the idle baseline (10 s)"):
                    meter.calibrate(10.0)
        settings = {
            "repeat": opts.repeat,
            "concurrency": opts.concurrency,
            "jobs": opts.jobs or os.cpu_count(),
            "cache": "cold cache (page cache dropped before each run)"
            if opts.drop_caches
            else "warm cache (corpus read once before the first run; page cache not dropped)",
            "order": "alternated: every round runs each contestant once, order rotated per round",
            "country": opts.country,
            "country_name": opts.country,
            "workdir": str(work),
            "rss_sample_interval_s": opts.sample_interval,
            "bytecode": bytecode,
            "px_sample": opts.px_sample,
        }
        results.update(
            machine=machine_description(work),
            corpus=corpus,
            settings=settings,
            versions=_versions(),
            contestants=entries,
            energy_method=method,
        )
        results["summary"] = report.summarize([], entries, corpus["bytes"], corpus["instances"])

        from .scratch import creation_cost_us

        creation_us = round(creation_cost_us(work), 1)
        settings["file_creation_us_before"] = creation_us
        if creation_us > 100:
            console.print(
                f"[yellow]creating a file in {work} costs {creation_us:.0f} us"
                " of CPU (normal: ~20 us): files were deleted there in the last minutes, and"
                " contestants that create files will be slowed. Waiting ~6 minutes helps.[/]"
            )
        interrupted = _run_rounds(
            opts,
            runnable,
            files,
            corpus,
            corpus_root,
            list_file,
            work,
            truth,
            meter,
            results,
            console,
            samples,
        )
        settings["file_creation_us_after"] = round(creation_cost_us(work), 1)
        if meter is not None:
            results["energy_method"] = meter.method().as_dict()
            settings["country_name"] = meter.country_name
    except KeyboardInterrupt:
        interrupted = True
        console.print("[yellow]interrupted[/]")
        if meter is not None:  # a tracker may be running: stop its thread, keep its row
            with contextlib.suppress(Exception):
                meter.stop()
    finally:
        results["finished"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        results["complete"] = not interrupted
        if "corpus" in results:
            results["summary"] = report.summarize(
                results["runs"],
                results["contestants"],
                results["corpus"]["bytes"],
                results["corpus"]["instances"],
            )
            report.write_json(out / "results.json", results)
            report.write_csv(out / "results.csv", results)
            report.write_html(out / "report.html", results)
            (out / "summary.md").write_text(report.markdown_table(results), encoding="utf-8")
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
    if "summary" not in results:
        console.print("interrupted before the first run: nothing to report")
        return EXIT_INTERRUPTED if interrupted else EXIT_FAILED
    table_console = Console()
    if not table_console.is_terminal and "COLUMNS" not in os.environ:
        table_console = Console(width=132)  # logs and CI: do not squeeze the table to 80
    report.print_table(results, table_console)
    console.print(f"report: {out / 'report.html'}")
    console.print(
        f"results: {out / 'results.json'}, {out / 'results.csv'}"
        + (f", {out / 'emissions.csv'}" if (out / "emissions.csv").exists() else "")
    )
    if opts.keep:
        console.print(f"output trees kept in {work}")
    if interrupted:
        return EXIT_INTERRUPTED
    # a peer (px-repack, rx-repack) failing its own checks is reported, not our failure
    ours = [r for r in results["summary"]["contestants"] if r["contestant"] not in report.PEERS]
    return EXIT_FAILED if any(r["status"] == "failed" for r in ours) else EXIT_OK


def _run_rounds(
    opts: BenchOptions,
    runnable: list[Contestant],
    files: list[Path],
    corpus: dict[str, Any],
    corpus_root: Path,
    list_file: Path,
    work: Path,
    truth: Any,
    meter: Any,
    results: dict[str, Any],
    console: Any,
    samples: dict[str, Sample] | None = None,
) -> bool:
    """Every round runs every contestant once (order rotated); returns True if interrupted.
    A contestant in ``samples`` runs on its sample only, verified against the sample."""
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .busy import cpu_times, during
    from .measure import run_tree
    from .scratch import Scratch
    from .verify import verify_run

    n = len(runnable)
    # room for the next run's tree (or batch-move's staged copy, moved into its tree)
    scratch = Scratch(work, reserve_bytes=int(1.25 * corpus["bytes"]) + (1 << 30))
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=opts.quiet,
        refresh_per_second=4,
        transient=False,
    )
    with progress:
        overall = progress.add_task("bench", total=opts.repeat * n)
        for rep in range(opts.repeat):
            order = runnable[rep % n :] + runnable[: rep % n] if n else []
            for pos, c in enumerate(order):
                root = work / "runs" / f"{c.name}-{rep + 1}"
                root.mkdir(parents=True)
                sample = (samples or {}).get(c.name)
                c_files = sample.files if sample else files
                c_truth = sample.truth if sample else truth
                ctx = RunContext(
                    corpus=corpus_root,
                    files=c_files,
                    list_file=sample.list_file if sample else list_file,
                    root=root,
                    concurrency=opts.concurrency,
                    jobs=opts.jobs,
                )
                task = progress.add_task(
                    f"  {c.name} (run {rep + 1}/{opts.repeat}) preparing", total=None
                )
                try:
                    plan = c.plan(ctx)
                    if meter is not None:
                        meter.prepare(f"{c.name} run {rep + 1}")
                    if opts.drop_caches:
                        _drop_caches()
                except KeyboardInterrupt:
                    progress.remove_task(task)
                    return True
                progress.update(
                    task,
                    description=f"  {c.name} (run {rep + 1}/{opts.repeat})",
                    total=len(c_files) if plan.progress_dots else None,
                )

                def on_output(chunk: bytes, task: Any = task) -> None:
                    progress.advance(task, chunk.count(b"."))

                stdin_f = open(plan.stdin_path, "rb") if plan.stdin_path else None  # noqa: SIM115
                try:
                    if meter is not None:
                        meter.start()
                    machine_before = cpu_times()
                    m = run_tree(
                        plan.argv,
                        stderr_path=str(ctx.stderr),
                        on_output=on_output if plan.progress_dots else None,
                        stop_signal=plan.stop_signal,
                        sample_interval=opts.sample_interval,
                        env=plan.env,
                        stdin=stdin_f,
                    )
                    machine_after = cpu_times()
                    energy = meter.stop() if meter is not None else None
                finally:
                    if stdin_f is not None:
                        stdin_f.close()
                progress.update(
                    task, description=f"  {c.name} (run {rep + 1}/{opts.repeat}) verifying"
                )
                verdict = verify_run(c_truth, c.layout, ctx.datadir, ctx.logdir, c.compare)
                details: dict[str, Any] = {}
                with contextlib.suppress(OSError, ValueError):
                    details = json.loads(ctx.summary.read_text())
                run = _run_record(c, rep, pos, m, energy, verdict, details, corpus, ctx, sample)
                run["machine"] = during(machine_before, machine_after, m.cpu_s, m.wall_s)
                results["runs"].append(run)
                _checkpoint(results)
                progress.update(
                    task,
                    description=f"  {c.name} (run {rep + 1}/{opts.repeat}) {run['status']}"
                    f" in {m.wall_s:.1f} s",
                )
                if run["status"] == "ok":
                    progress.update(task, completed=len(c_files), total=len(c_files))
                progress.advance(overall)
                if not opts.keep:
                    scratch.set_aside(root)
                if m.interrupted:
                    return True
    results["settings"]["runs_deleted_between_runs"] = scratch.deleted_between_runs
    return False


def _checkpoint(results: dict[str, Any]) -> None:
    """Write results.json after every run, so that a bench killed from outside (the OOM
    killer, a lost terminal) still leaves every finished run's figures behind."""
    from . import report

    out = results.get("out")
    if not out:
        return
    with contextlib.suppress(OSError, KeyError, TypeError, ValueError):
        results["summary"] = report.summarize(
            results["runs"],
            results["contestants"],
            results["corpus"]["bytes"],
            results["corpus"]["instances"],
        )
        report.write_json(Path(out) / "results.json", results)


def _run_record(
    c: Contestant,
    rep: int,
    pos: int,
    m: Any,
    energy: Any,
    verdict: Any,
    details: dict[str, Any],
    corpus: dict[str, Any],
    ctx: RunContext,
    sample: Sample | None = None,
) -> dict[str, Any]:
    """One row of results: the measurement, energy, verdict, and the driver's summary.
    ``instances`` and ``bytes`` are what this run filed (its sample, if it had one)."""
    problems = list(verdict.problems)
    nonzero = int(details.get("nonzero_exits", 0) or 0) + int(details.get("spawn_errors", 0) or 0)
    if nonzero:
        problems.append(f"{nonzero} instance process(es) exited non-zero")
    left = details.get("left_in_incoming")
    if isinstance(left, int) and left:
        problems.append(f"{left} file(s) left in the receiver's incoming folder")
    failed_batch = details.get("failed")
    if isinstance(failed_batch, int) and failed_batch:
        problems.append(f"{failed_batch} instance(s) reported failed by the contestant")
    if m.exit_code != 0 and not m.interrupted:
        problems.append(f"exit status {m.exit_code}")
    status = "incomplete" if m.interrupted else "ok" if not problems else "failed"
    stderr_tail = ""
    with contextlib.suppress(OSError):
        data = ctx.stderr.read_bytes()
        stderr_tail = data[-2000:].decode("utf-8", "replace")
    wall = m.wall_s
    n = len(sample.files) if sample else corpus["instances"]
    nbytes = sample.bytes if sample else corpus["bytes"]
    return {
        "contestant": c.name,
        "label": c.label or c.name,
        "sampled": sample is not None,
        "kind": c.kind,
        "layout": c.layout,
        "repetition": rep + 1,
        "order": pos + 1,
        "status": status,
        "correct": verdict.ok,
        "interrupted": m.interrupted,
        "exit_code": m.exit_code,
        "wall_s": wall,
        "cpu_s": m.cpu_s,
        "user_s": m.user_s,
        "sys_s": m.sys_s,
        "driver_cpu_s": details.get("driver_cpu_s"),
        "peak_tree_rss_bytes": m.peak_tree_rss_bytes,
        "max_process_rss_bytes": m.max_process_rss_bytes,
        "rss_samples": m.rss_samples,
        "instances": n,
        "bytes": nbytes,
        "instances_per_s": n / wall if wall > 0 else None,
        "mb_per_s": nbytes / 1e6 / wall if wall > 0 else None,
        "energy_kwh": energy.energy_kwh if energy else None,
        "energy_source": energy.source if energy else None,
        "codecarbon_energy_kwh": energy.codecarbon_kwh if energy else None,
        "cpu_energy_kwh": energy.cpu_kwh if energy else None,
        "ram_energy_kwh": energy.ram_kwh if energy else None,
        "co2_kg": energy.co2_kg if energy else None,
        "energy_duration_s": energy.duration_s if energy else None,
        "missing": verdict.missing,
        "damaged": verdict.damaged,
        "records": verdict.records,
        "records_unparseable": verdict.records_unparseable,
        "image_records_missing": verdict.image_records_missing,
        "extra_files": verdict.extra_files,
        "problems": problems,
        "examples": verdict.examples,
        "driver": details,
        "stderr_tail": stderr_tail,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
