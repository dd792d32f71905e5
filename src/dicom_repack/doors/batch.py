"""``dicom-repack batch``: repack whole folders (or a list of paths on stdin).

The command line, the progress bar and what is reported; the run itself is
doors/batch_engine.py's (the walk, one process or forked workers, the summary).
"""

from __future__ import annotations

import os
import sys

from ..core.errors import one_line
from ..core.outcome import Outcome
from .batch_engine import iter_paths, run

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator
    from typing import Any, NoReturn

    from rich.progress import Progress, TaskID

    from .options import Flag

__all__ = ["build_parser", "main"]

DOOR = "batch"


class _Counter:
    """The files under the inputs, counted by a second walk in a thread, ahead of the
    workers, so that the progress bar has a total (and an ETA) early.

    The walk is :func:`iter_paths` itself, streamed (its memory is the folders'
    depth, not the files'); it only counts, and stops when the batch ends first.
    Started only once the workers are forked (no thread before a fork).
    """

    def __init__(self, paths: list[str], exclude: list[str], done: Callable[[int], None]) -> None:
        self._paths, self._exclude, self._done = paths, exclude, done
        self._stopped = False  # a flag, not an Event: no threading import without a bar

    def start(self) -> None:
        import threading

        threading.Thread(target=self._count, name="count", daemon=True).start()

    def stop(self) -> None:
        self._stopped = True

    def _count(self) -> None:
        n = 0
        for _ in iter_paths(self._paths, exclude=self._exclude):
            if self._stopped:
                return
            n += 1
        if not self._stopped:
            self._done(n)


# -- command line ----------------------------------------------------------------------


def _flags() -> tuple[Flag, ...]:
    """Every option of the batch door, as declared once in doors/options.py."""
    from .options import BATCH, DESTINATION, FILING, INDEX, LAYOUT

    return DESTINATION + FILING + INDEX + BATCH + LAYOUT


def build_parser() -> argparse.ArgumentParser:
    """argparse's view of the batch door's options: for --help, usage errors and any
    command line :func:`~.options.parse_plain` leaves to it."""
    from .options import BATCH, DESTINATION, FILING, INDEX, LAYOUT, LAYOUT_HELP, add_arguments
    from .usage import OneLineParser

    parser = OneLineParser(
        prog="dicom-repack batch",
        description=(
            "Repack every DICOM file under the given folders (recursively), or the paths listed "
            "on stdin with '-', on all cores, into the tag-named tree under --datadir, and write "
            "the pypx records under --logdir. Files that are not DICOM are skipped and counted; "
            "any other failure is listed and makes the exit status 1. Sources are never modified; "
            "with --cleanup each is removed only after its copy is complete."
        ),
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="folders or files; '-' reads paths from stdin"
    )
    add_arguments(parser, DESTINATION + FILING + INDEX + BATCH, required=["datadir"])
    add_arguments(parser, LAYOUT, title="layout", description=LAYOUT_HELP)
    return parser


class _Options:
    """The parsed options as attributes (what argparse's Namespace offers)."""

    def __init__(self, values: dict[str, object]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:  # pragma: no cover - every dest is set
        raise AttributeError(name)


def _usage_error(message: str) -> NoReturn:
    """``message`` as one line on stderr, exit 2 (doors/usage.py; argparse is imported now)."""
    build_parser().error(message)


def main(argv: list[str]) -> int:
    from ..core.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, TemplateError
    from ..core.jsonio import NdjsonLog, dumps
    from .options import config_from, layout_from, parse_plain
    from .plumbing import Refused, check_destinations, check_index, fail, open_ndjson, say

    values = parse_plain(argv, _flags(), positional="paths", required=("datadir",))
    if values is None:  # not a plain command line: argparse decides (its errors, --help)
        values = vars(build_parser().parse_args(argv))
    ns = _Options(values)
    if ns.jobs is not None and ns.jobs < 1:
        _usage_error("--jobs must be at least 1")
    if ns.dask is not None:
        from .dask_batch import DaskUnavailable, parse_address, require_distributed

        if ns.jobs is not None:
            _usage_error("--jobs and --dask exclude each other (local:N sets the workers)")
        problem = parse_address(ns.dask)
        if problem:
            _usage_error(problem)
        try:
            require_distributed()
        except DaskUnavailable as exc:
            return fail(DOOR, str(exc), EXIT_USAGE)
    try:
        layout = layout_from(values)
    except TemplateError as exc:
        _usage_error(str(exc))
    for p in ns.paths:
        if p != "-" and not os.path.exists(p):
            _usage_error(f"no such file or folder: {p}")
    try:
        check_destinations(ns.datadir, ns.logdir, parents=ns.parents)
    except Refused as exc:
        return fail(DOOR, str(exc), exc.status)
    if ns.verbose:
        from .plumbing import show_pydicom_warnings

        show_pydicom_warnings(True)
    config = config_from(values, layout)
    try:  # a PostgreSQL index: refused now if it can never work (core/index_pg.py)
        warning = check_index(config.index, config.logdir)
    except Refused as exc:
        return fail(DOOR, str(exc), exc.status)
    if warning:
        say(DOOR, warning)
    exclude = [ns.datadir] + ([ns.logdir] if ns.logdir else [])
    ndjson: NdjsonLog | None = None
    try:
        ndjson = open_ndjson(ns.log_ndjson)
    except Refused as exc:
        return fail(DOOR, str(exc), exc.status)
    # the summary line leaves stdout to the NDJSON lines when they go there
    summary_stream = sys.stderr if ns.log_ndjson == "-" else sys.stdout
    progress: Progress | None = None
    task: TaskID | None = None

    def start_progress() -> None:
        """The progress bar (its refresh thread starts only once the workers are forked)."""
        nonlocal progress, task
        if ns.no_progress or not sys.stderr.isatty():
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        progress = Progress(
            TextColumn("repacking"),
            BarColumn(bar_width=None),
            TextColumn("{task.completed} of {task.fields[of]} files"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=True,
            console=Console(stderr=True),  # stdout is for the summary (or NDJSON lines)
        )
        task = progress.add_task("repack", total=None, of="?")
        progress.start()
        if "-" not in ns.paths:  # stdin cannot be read twice: its total comes at its end
            counting.start()

    def know_total(n: int) -> None:
        """The number of files, once known: the bar gets a total and an ETA."""
        if progress is not None and task is not None:
            progress.update(task, total=n, of=n)

    counting = _Counter(ns.paths, exclude, know_total)
    walked = [0]  # paths handed to the workers so far

    def walk() -> Iterator[str]:
        """The streamed walk the workers take; at its end the total is known for sure."""
        for path in iter_paths(ns.paths, exclude=exclude):
            walked[0] += 1
            yield path
        counting.stop()
        know_total(walked[0])

    skipped_names: list[tuple[str, str]] = []
    stopped: list[str] = []

    def destination_failed(outcome: Outcome) -> bool:
        """Stop at the first failure of the destination itself (read-only, full, I/O)."""
        if not outcome.destination_failed:
            return False
        stopped.append(str(outcome.error))
        say(
            DOOR,
            f"the destination failed ({outcome.error}); stopping, "
            "inputs not yet filed are untouched",
        )
        return True

    def report(outcome: Outcome) -> None:
        if ndjson is not None:
            ndjson.write(outcome.as_dict())
        if outcome.error is not None:
            if outcome.skipped and not ns.strict:
                if len(skipped_names) < 20:
                    why = "not a regular file" if outcome.not_regular else "not DICOM"
                    skipped_names.append((why, outcome.src))
            elif not (stopped and outcome.destination_failed):  # the stop line said it
                say(DOOR, outcome.error)
        if progress is not None and task is not None:
            progress.update(task, advance=1)

    try:
        if ns.dask is not None:
            from .dask_batch import DaskJobError
            from .dask_batch import run as run_on_dask

            start_progress()
            if not ns.dask.startswith("local:"):
                from .dask_batch import CONNECT_TIMEOUT

                say(DOOR, f"waiting up to {CONNECT_TIMEOUT} s for the Dask scheduler at {ns.dask}")
            try:
                summary = run_on_dask(
                    walk(),
                    # each worker names its own host, unless --host-id names one for all
                    config.replace(host=values.get("host_id") or None),
                    address=ns.dask,
                    move=ns.cleanup,
                    on_outcome=report,
                    stop_when=destination_failed,
                )
            except (DaskJobError, OSError) as exc:
                return fail(DOOR, str(exc))
        else:
            summary = run(
                walk(),
                config,
                move=ns.cleanup,
                jobs=ns.jobs,
                on_outcome=report,
                stop_when=destination_failed,
                on_started=start_progress,
            )
    except KeyboardInterrupt:
        return fail(
            DOOR,
            "interrupted; files already filed stay filed, nothing is half-written",
            EXIT_INTERRUPTED,
        )
    finally:
        counting.stop()
        if progress is not None:
            progress.stop()
        if ndjson is not None:
            ndjson.close()
    if ns.strict:  # each skipped file is a failure (already named), counted once
        summary.failed += summary.skipped
        summary.skipped = summary.not_regular = 0
    if walked[0] == 0 and not stopped:
        where = ", ".join(one_line(p) if p != "-" else "stdin" for p in ns.paths)
        say(DOOR, f"no files found under {where}")
    for why, name in skipped_names:
        say(DOOR, f"skipped ({why}): {name}")
    if summary.skipped > len(skipped_names):
        # every outcome, skipped ones too, is a line of --log-ndjson: say where they all are
        where = (
            "every skipped file is named in the --log-ndjson lines"
            + ("" if ns.log_ndjson == "-" else f" ({one_line(ns.log_ndjson)})")
            if ndjson is not None
            else "--log-ndjson names every skipped file"
        )
        say(DOOR, f"... and {summary.skipped - len(skipped_names)} more skipped files; {where}")
    summary_stream.write(one_line(summary.line()) + "\n")
    if ns.summary_json:
        with open(ns.summary_json, "w", encoding="utf-8") as fh:
            fh.write(dumps(summary.as_dict()) + "\n")
    return EXIT_FAILED if summary.failed or stopped else EXIT_OK
