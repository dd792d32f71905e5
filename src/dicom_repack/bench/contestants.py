"""The contestants: what is run, how it is launched, and whether it can run here.

Every contestant boils down to one command whose process tree is measured (see
:mod:`.measure`), plus untimed preparation (e.g. staging a copy to move from). Adding
one is a small class: say which layout its output follows (``"px"`` for px-repack's
tree, ``"rx"`` otherwise), why it cannot run here (or None), and the command.

- Per-instance contestants run exactly as in the seed experiment: one subprocess per
  instance, ``--xcrdir DIR --xcrfile FILE --datadir D --logdir L``, at most
  ``concurrency`` at once, driven by :mod:`.dispatch` (our storescp stand-in).
- Batch contestants get the same instance list on stdin (``batch -``), so they see
  exactly the files the per-instance ones see (no README or manifest to skip).
- The receiver contestant starts ``dicom-repack listen`` and feeds it with a sender;
  the sender's work is in the measured tree too (see :mod:`.feed`).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "BatchContestant",
    "Contestant",
    "ListenContestant",
    "PerInstanceContestant",
    "RunContext",
    "RunPlan",
    "StorescpContestant",
    "StorescpWatchContestant",
    "default_contestants",
    "dicom_repack_program",
]


@dataclass(slots=True)
class RunContext:
    """Everything one run of one contestant may use. ``root`` is fresh for every run."""

    corpus: Path
    files: list[Path]
    list_file: Path
    root: Path
    concurrency: int
    jobs: int | None = None

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logdir(self) -> Path:
        return self.root / "log"

    @property
    def stage(self) -> Path:
        return self.root / "stage"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def stderr(self) -> Path:
        return self.root / "stderr.log"


@dataclass(slots=True)
class RunPlan:
    """The timed command: argv, where its stdin comes from, how to stop it cleanly, and
    whether its stdout reports progress (one ``.`` per finished instance)."""

    argv: list[str]
    stdin_path: Path | None = None
    stop_signal: int = signal.SIGTERM
    progress_dots: bool = False
    env: dict[str, str] | None = None


@dataclass
class Contestant:
    """Base class: a named way of filing the corpus."""

    name: str
    kind: str  # "per-instance", "batch", "receiver" or "pipeline"
    layout: str = "rx"
    description: str = ""
    #: "file": outputs must equal inputs byte for byte; "dataset": the data set must
    #: (a receiver writes its own file meta header)
    compare: str = "file"
    #: what the report calls it: what it is, e.g. "px-repack, one process per instance"
    label: str = ""
    #: run on an evenly spaced sample of this many instances (its costs are then scaled
    #: to the whole corpus by instance count, and labelled so); None: the whole corpus
    sample: int | None = None

    def unavailable(self) -> str | None:
        """Why this contestant cannot run here, or None when it can."""
        return None

    def version(self) -> str | None:
        return None

    def plan(self, ctx: RunContext) -> RunPlan:  # pragma: no cover - abstract
        raise NotImplementedError


def dicom_repack_program() -> str:
    """The ``dicom-repack`` console script of this installation (next to the interpreter),
    so the bench measures the code it was started from, not another one on PATH."""
    beside = Path(sys.executable).parent / "dicom-repack"
    if beside.exists():
        return str(beside)
    found = shutil.which("dicom-repack")
    if found:
        return found
    raise FileNotFoundError("the dicom-repack console script is not installed")


def _first_line(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0][:200] if text else None


@dataclass
class PerInstanceContestant(Contestant):
    """One subprocess per instance, like ``storescp -xcr "<program> --xcrdir #p --xcrfile #f ..."``.

    ``template`` is the per-instance argv; ``{xcrdir}``, ``{xcrfile}``, ``{datadir}``
    and ``{logdir}`` are filled in. ``program`` is None when it is not installed."""

    template: list[str] = field(default_factory=list)
    program: str | None = None
    missing_reason: str = ""
    version_argv: list[str] | None = None

    def unavailable(self) -> str | None:
        if self.program is None or not self.template:
            return self.missing_reason or "not installed"
        return None

    def version(self) -> str | None:
        return _first_line(self.version_argv) if self.version_argv else None

    def plan(self, ctx: RunContext) -> RunPlan:
        argv = [
            a.replace("{datadir}", str(ctx.datadir)).replace("{logdir}", str(ctx.logdir))
            for a in self.template
        ]
        driver = [
            sys.executable,
            "-m",
            "dicom_repack.bench.dispatch",
            "--list",
            str(ctx.list_file),
            "--concurrency",
            str(ctx.concurrency),
            "--summary",
            str(ctx.summary),
            "--stderr",
            str(ctx.stderr),
            "--",
            *argv,
        ]
        return RunPlan(argv=driver, progress_dots=True)


@dataclass
class BatchContestant(Contestant):
    """``dicom-repack batch - --datadir D --logdir L`` fed the instance list on stdin;
    with ``move``, from a staged copy of the corpus (copied before the clock starts,
    on the work folder's filesystem, so each move is a rename) with ``--cleanup``."""

    move: bool = False

    def version(self) -> str | None:
        from dicom_repack import __version__

        return __version__

    def plan(self, ctx: RunContext) -> RunPlan:
        list_file = ctx.list_file
        if self.move:
            list_file = ctx.root / "stage-list.txt"
            staged: list[str] = []
            for src in ctx.files:
                rel = src.relative_to(ctx.corpus)
                dst = ctx.stage / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                staged.append(str(dst))
            list_file.write_text("".join(s + "\n" for s in staged), encoding="utf-8")
            # The staged copy's writeback belongs to the setup, not to the timed move run:
            # unsynced, 10 GB of dirty pages were flushed inside it (its wall 40.8 s against
            # copy's 24.3 s with less CPU, docs/benchmarks.md, section 5).
            os.sync()
        argv = [
            dicom_repack_program(),
            "batch",
            "-",
            "--datadir",
            str(ctx.datadir),
            "--logdir",
            str(ctx.logdir),
            "--summary-json",
            str(ctx.summary),
            "--no-progress",
        ]
        if self.move:
            argv.append("--cleanup")
        if ctx.jobs:
            argv += ["--jobs", str(ctx.jobs)]
        return RunPlan(argv=argv, stdin_path=list_file, stop_signal=signal.SIGINT)


@dataclass
class ListenContestant(Contestant):
    """``dicom-repack listen`` fed by a sender: the receiver door, as a PACS would use it.

    The timed tree is :mod:`.feed`, which starts the receiver, waits for its port,
    sends every instance (dcmtk's ``storescu`` when on PATH, else pynetdicom in
    process) and stops the receiver once the last C-STORE is answered (an answer
    means the instance is filed)."""

    sender: str = "auto"  # "auto", "storescu" or "pynetdicom"

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("dicom_repack.listen") is None:
            return "the receiver (dicom_repack.listen) is not in this installation yet"
        return None

    def version(self) -> str | None:
        from dicom_repack import __version__

        return __version__

    def plan(self, ctx: RunContext) -> RunPlan:
        argv = [
            sys.executable,
            "-m",
            "dicom_repack.bench.feed",
            "--list",
            str(ctx.list_file),
            "--datadir",
            str(ctx.datadir),
            "--logdir",
            str(ctx.logdir),
            "--summary",
            str(ctx.summary),
            "--sender",
            self.sender,
            "--program",
            dicom_repack_program(),
        ]
        env = dict(os.environ)
        env["TCP_NODELAY"] = "1"  # dcmtk reads it on both sides; harmless elsewhere
        return RunPlan(argv=argv, progress_dots=True, stop_signal=signal.SIGTERM, env=env)


def _dcmtk_missing() -> str | None:
    """Why a storescp pipeline cannot run here (dcmtk's tools absent), or None."""
    from .feed import find_dcmtk

    if find_dcmtk("storescp") is None or find_dcmtk("storescu") is None:
        return "dcmtk's storescp/storescu not found (apt-get install dcmtk)"
    return None


def _storescp_version() -> str:
    from .feed import find_dcmtk

    scp = find_dcmtk("storescp")
    return (_first_line([scp, "--version"]) if scp else None) or "dcmtk storescp"


@dataclass
class StorescpContestant(Contestant):
    """The receiving pipeline as the seed's users run it: dcmtk ``storescp -xcr
    "<program> --xcrdir #p --xcrfile #f ... --cleanup"``, fed by dcmtk ``storescu``
    (``TCP_NODELAY=1`` on both sides). storescp writes each instance to its incoming
    folder, then starts the program on it (``/bin/sh -c``) without waiting; the
    program files it and removes the received copy. The timed tree is :mod:`.feed`,
    which waits for every program storescp started."""

    program: str | None = None
    missing_reason: str = ""
    extra_args: list[str] = field(default_factory=list)

    def unavailable(self) -> str | None:
        if self.program is None:
            return self.missing_reason or "not installed"
        return _dcmtk_missing()

    def version(self) -> str | None:
        return f"{_storescp_version()}; -xcr {self.program}"

    def plan(self, ctx: RunContext) -> RunPlan:
        assert self.program is not None
        incoming = ctx.root / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        xcr = " ".join(
            shlex.quote(a)
            for a in [
                self.program,
                *self.extra_args,
                "--datadir",
                str(ctx.datadir),
                "--logdir",
                str(ctx.logdir),
                "--verbosity",
                "0",
                "--cleanup",
            ]
        )
        xcr = f"{xcr} --xcrdir #p --xcrfile #f"
        argv = [
            sys.executable,
            "-m",
            "dicom_repack.bench.feed",
            "--list",
            str(ctx.list_file),
            "--datadir",
            str(ctx.datadir),
            "--logdir",
            str(ctx.logdir),
            "--summary",
            str(ctx.summary),
            "--receiver",
            "storescp",
            "--incoming",
            str(incoming),
            "--xcr",
            xcr,
            "--concurrency",
            str(ctx.concurrency),
        ]
        env = dict(os.environ)
        env["TCP_NODELAY"] = "1"
        return RunPlan(argv=argv, progress_dots=True, stop_signal=signal.SIGTERM, env=env)


@dataclass
class StorescpWatchContestant(Contestant):
    """storescp keeps its job, without ``-xcr``: ``storescp -od IN`` writes each instance
    and ``dicom-repack watch IN --cleanup`` (resident, started once) files it as soon as
    storescp closes it; fed by dcmtk ``storescu``. The timed tree is :mod:`.feed`: it
    starts the watcher, then storescp, sends everything and waits until IN is empty."""

    def unavailable(self) -> str | None:
        return _dcmtk_missing()

    def version(self) -> str | None:
        from dicom_repack import __version__

        return f"{_storescp_version()}; dicom-repack watch {__version__}"

    def plan(self, ctx: RunContext) -> RunPlan:
        incoming = ctx.root / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "dicom_repack.bench.feed",
            "--list", str(ctx.list_file),
            "--datadir", str(ctx.datadir),
            "--logdir", str(ctx.logdir),
            "--summary", str(ctx.summary),
            "--receiver", "storescp-watch",
            "--incoming", str(incoming),
            "--program", dicom_repack_program(),
        ]  # fmt: skip
        env = dict(os.environ)
        env["TCP_NODELAY"] = "1"
        return RunPlan(argv=argv, progress_dots=True, stop_signal=signal.SIGTERM, env=env)


def default_contestants(
    px_repack: str | None = None,
    rx_repack: str | None = None,
    px_sample: int | None = None,
) -> list[Contestant]:
    """Every contestant the bench knows, available or not (the report lists the skipped
    ones with their reason). Where px-repack and rx-repack are looked for:
    :mod:`.peers`. ``px_sample``: px-repack runs on a sample of that many instances."""
    from .peers import find_px_repack, find_rx_repack, px_setup_command, rx_version

    px = find_px_repack(px_repack)
    rx = find_rx_repack(rx_repack)
    ours = dicom_repack_program()
    xcr = ["--xcrdir", "{xcrdir}", "--xcrfile", "{xcrfile}"]
    out_args = ["--datadir", "{datadir}", "--logdir", "{logdir}", "--verbosity", "0"]
    px_version = None
    if px is not None:
        py = Path(px).parent / "python"
        if py.exists():
            px_version = [
                str(py),
                "-c",
                "import importlib.metadata as m; print('pypx', m.version('pypx'))",
            ]
    return [
        PerInstanceContestant(
            name="px-repack",
            kind="per-instance",
            layout="px",
            label="px-repack, one process per instance",
            description="px-repack (pypx, Python), one process per instance, as storescp -xcr "
            "starts it",
            template=[px, *xcr, *out_args] if px else [],
            program=px,
            missing_reason="px-repack not found (PATH, the bench's cache folder, --px-repack) "
            f"and not set up (--no-setup, or offline); to set it up: {px_setup_command()}",
            version_argv=px_version,
            sample=px_sample,
        ),
        PerInstanceContestant(
            name="rx-repack",
            kind="per-instance",
            layout="rx",
            label="rx-repack, one process per instance",
            description="rx-repack (Rust), one process per instance, as storescp -xcr starts it",
            template=[rx, *xcr, *out_args] if rx else [],
            program=rx,
            missing_reason="rx-repack not found on PATH, in ~/.cargo/bin or by --rx-repack "
            "(docs/bench.md: how to build it)",
            version_argv=["echo", rx_version(rx)] if rx else None,
        ),
        PerInstanceContestant(
            name="dicom-repack",
            kind="per-instance",
            layout="rx",
            label="dicom-repack, one process per instance",
            description="dicom-repack's per-instance door, one process per instance, as "
            "storescp -xcr starts it",
            template=[ours, *xcr, *out_args],
            program=ours,
            version_argv=[
                sys.executable,
                "-c",
                "import dicom_repack; print(dicom_repack.__version__)",
            ],
        ),
        BatchContestant(
            name="batch-copy",
            kind="batch",
            label="dicom-repack batch, copy",
            description="dicom-repack batch (one process tree, a worker per core), copying",
        ),
        BatchContestant(
            name="batch-move",
            kind="batch",
            move=True,
            label="dicom-repack batch, move",
            description="dicom-repack batch --cleanup (moves from a staged copy)",
        ),
        ListenContestant(
            name="listen",
            kind="receiver",
            compare="dataset",
            label="storescu + dicom-repack listen",
            description="dicom-repack listen (a Storage SCP filing in process), fed by dcmtk "
            "storescu",
        ),
        StorescpContestant(
            name="storescp-rx-repack",
            kind="pipeline",
            compare="dataset",
            label="storescu + storescp + rx-repack",
            description='dcmtk storescp -xcr "rx-repack --xcrdir #p --xcrfile #f ... --cleanup", '
            "fed by dcmtk storescu",
            program=rx,
            missing_reason="rx-repack not found on PATH, in ~/.cargo/bin or by --rx-repack",
        ),
        StorescpContestant(
            name="storescp-dicom-repack",
            kind="pipeline",
            compare="dataset",
            label="storescu + storescp + dicom-repack",
            description='dcmtk storescp -xcr "dicom-repack --xcrdir #p --xcrfile #f ... '
            '--cleanup", fed by dcmtk storescu',
            program=ours,
        ),
        StorescpWatchContestant(
            name="storescp-watch",
            kind="pipeline",
            compare="dataset",
            label="storescu + storescp + dicom-repack watch",
            description="dcmtk storescp -od IN (no -xcr) beside dicom-repack watch IN "
            "--cleanup (resident), fed by dcmtk storescu",
        ),
    ]


def custom_contestant(spec: str) -> PerInstanceContestant:
    """``NAME=COMMAND`` (or ``NAME@px=COMMAND`` for px-repack's tree): any per-instance
    program, with ``{xcrdir} {xcrfile} {datadir} {logdir}`` in COMMAND."""
    name, sep, command = spec.partition("=")
    if not sep or not name or not command.strip():
        raise ValueError(f"--per-instance wants NAME=COMMAND, not {spec!r}")
    layout = "rx"
    if "@" in name:
        name, _, layout = name.partition("@")
        if layout not in ("rx", "px"):
            raise ValueError(f"--per-instance {spec!r}: layout must be rx or px")
    template = shlex.split(command)
    program = shutil.which(template[0]) or (template[0] if Path(template[0]).exists() else None)
    return PerInstanceContestant(
        name=name,
        kind="per-instance",
        layout=layout,
        label=f"{name}, one process per instance",
        description=f"custom per-instance command: {command}",
        template=template,
        program=program,
        missing_reason=f"{template[0]} not found",
    )
