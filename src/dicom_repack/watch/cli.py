"""``dicom-repack watch DIR...``: keep your receiver, drop the program per instance.

storescp (``storescp -od /incoming 11112``), dcm4che, Conquest, an SFTP drop or a
scanner's export writes files into a folder; this door files each one as it
becomes complete, with the batch door's options and rules, resident: one start
for the whole service instead of one per instance. The engine is
:class:`~.engine.Watcher`; this module parses, reports and runs it as a service
(``--config`` TOML, ``--log-file`` reopened on SIGHUP, ``--http`` live page, the
series-complete hook: the same as ``listen``'s, reused from ``listen``).

Exit status: 0 after SIGTERM/SIGINT (each instance in hand finished), 1 when a
worker died or the destination failed (a service manager restarts it; what
was not filed is filed at the next start), 2 for a usage or configuration error.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading

from ..core.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, TemplateError
from ..core.index_rows import shown
from ..core.jsonio import NdjsonLog
from ..core.outcome import Outcome
from ..core.repack import Config
from ..doors import options
from ..doors.fork_pool import usable_cores
from ..doors.plumbing import (
    Refused,
    check_destinations,
    check_index,
    fail,
    open_ndjson,
    say,
    show_pydicom_warnings,
)
from ..doors.usage import OneLineParser
from ..listen.service import (
    ConfigError,
    add_series_arguments,
    add_service_arguments,
    apply_config_file,
    seconds,
    setup_logging,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..listen.http import LiveServer

__all__ = ["ENV_PREFIX", "build_parser", "main"]

DOOR = "watch"
ENV_PREFIX = "DICOM_REPACK_WATCH_"
LOG = logging.getLogger("dicom_repack.watch")


def build_parser() -> OneLineParser:
    """The watch door's options: batch's destination, filing, index, layout and jobs
    (declared once in doors/options.py), its own, and listen's service options."""
    p = OneLineParser(
        prog="dicom-repack watch",
        description=(
            "Watch the folders a receiver writes into (storescp -od DIR, an SFTP drop, a "
            "scanner's export) and file each DICOM file as soon as it is complete, into the "
            "tag-named tree under --datadir with pypx records under --logdir: the batch door, "
            "resident. Files already there are filed first. Not DICOM, truncated or vanished "
            "files get one line and are left in place. The fast way to keep storescp: no "
            "program started per instance (see README, 'Keep your receiver')."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="DIR", help="folders to watch (recursively)")
    options.add_arguments(
        p, options.DESTINATION + options.FILING + options.INDEX, required=["datadir"]
    )
    options.add_arguments(p, (options.JOBS, options.VERBOSE))
    options.add_arguments(
        p,
        options.WATCH,
        title="watching",
        description="  When a file counts as arrived (inotify by default).",
    )
    add_series_arguments(p.add_argument_group("series"))
    add_service_arguments(p)
    options.add_arguments(p, options.LAYOUT, title="layout", description=options.LAYOUT_HELP)
    return p


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        apply_config_file(parser, argv, ENV_PREFIX)  # flags > config file > defaults
    except ConfigError as exc:
        return fail(DOOR, str(exc), EXIT_USAGE)
    args = parser.parse_args(argv)
    try:
        poll = None if args.poll is None else seconds(args.poll)
        settle = 1.0 if args.settle is None else seconds(args.settle)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if poll is not None and poll <= 0:
        parser.error("--poll must be more than 0 seconds")
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be at least 1")
    for path in args.paths:
        if not os.path.isdir(path):
            parser.error(f"not a folder: {path}")
    try:
        layout = options.layout_from(vars(args))
    except TemplateError as exc:
        parser.error(str(exc))
    try:
        setup_logging(args.log_level, args.log_file, door="watch")
    except OSError as exc:
        return fail(DOOR, f"--log-file {args.log_file}: {exc}", EXIT_USAGE)
    try:
        check_destinations(args.datadir, args.logdir, parents=args.parents)
    except Refused as exc:
        return fail(DOOR, str(exc), exc.status)
    if args.verbose:
        show_pydicom_warnings(True)
    config = options.config_from(vars(args), layout)
    try:
        warning = check_index(config.index, config.logdir)
        lines = open_ndjson(args.log_ndjson)
    except Refused as exc:
        return fail(DOOR, str(exc), exc.status)
    if warning:
        say(DOOR, warning)
    try:
        return _serve(args, config, poll, settle, lines)
    finally:
        if lines is not None:
            lines.close()


def _serve(
    args: argparse.Namespace,
    config: Config,
    poll: float | None,
    settle: float,
    lines: NdjsonLog | None,
) -> int:
    """Run the watcher until SIGTERM/SIGINT, reporting as the operator expects."""
    from ..listen.activity import Activity
    from ..listen.metrics import SharedCounters
    from .engine import Watcher

    table = SharedCounters(1)  # the page sums it (one row: one process files here)
    counters = table.view(0)
    activity = Activity(None)  # the engine writes failure rows; this keeps the page's list
    activity.counters = counters
    from ..listen.series_watch import series_watch_for

    series = series_watch_for(args.series_idle, args.on_series_complete, lines, config)
    stopped_early: list[str] = []

    def report(outcome: Outcome) -> None:
        if lines is not None:
            lines.write(outcome.as_dict())
        if outcome.error is None:
            counters.add("stored")
            counters.add("bytes", outcome.size)
            if series is not None and outcome.dst:
                series.seen(
                    os.path.dirname(outcome.dst),
                    outcome.patient_id or "",
                    outcome.study_uid or "",
                    outcome.series_uid or "",
                )
            return
        counters.add("failed")
        activity.failure(outcome.src, outcome.kind, outcome.error, "", "")
        if outcome.destination_failed and not stopped_early:
            stopped_early.append(outcome.error)
            LOG.error("the destination failed (%s); stopping, files not filed stay", outcome.error)
            watcher.stop()
            return
        if outcome.skipped:
            why = "not a regular file" if outcome.not_regular else "not DICOM"
            LOG.warning("left in place (%s): %s", why, outcome.src)
        else:
            LOG.warning("%s", outcome.error)

    jobs = args.jobs if args.jobs is not None else usable_cores()
    watcher = Watcher(
        args.paths,
        config,
        move=args.cleanup,
        jobs=jobs,
        poll=poll,
        settle=settle,
        ignore=args.ignore or (),
        retry_failed=args.retry_failed,
        report=report,
        say=LOG.warning,
    )
    live: list[LiveServer] = []
    healthy = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        healthy.clear()
        watcher.stop()

    def on_started() -> None:
        """After the fork: threads may start now (the page, the series hook)."""
        how = watcher.arrivals.polling_because
        mode = f"polling every {watcher.arrivals.poll:g} s" if how else "inotify"
        say(
            DOOR,
            f"watching {', '.join(watcher.arrivals.roots)} ({mode}"
            f"{f', {jobs} workers' if jobs > 1 else ''}) -> {config.datadir}"
            f"{f', records in {config.logdir}' if config.logdir else ''}"
            f"{' (move)' if args.cleanup else ''}",
        )
        healthy.set()
        if series is not None:
            series.start()
        for page in live:
            page.start()
            say(DOOR, f"live page on {page.url}")

    if args.http:  # bound now: a busy port is refused before anything is watched
        try:
            live.append(_live(args, config, activity, table, healthy))
        except OSError as exc:
            watcher.close()
            host, port = args.http
            return fail(DOOR, f"cannot serve --http on {host}:{port}: {exc}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        summary = watcher.run(on_started)
    finally:
        for page in live:
            page.stop()
        if series is not None:
            series.close(flush=True)
        watcher.close()
    line = summary.line()
    LOG.info("%s", line)
    say(DOOR, line)
    if lines is not None:
        lines.write({"event": "summary", **summary.as_dict()})
    return EXIT_FAILED if summary.stopped or stopped_early else EXIT_OK


def _live(
    args: argparse.Namespace,
    config: Config,
    activity: object,
    counters: object,
    healthy: threading.Event,
) -> LiveServer:
    """``--http``: listen's page, /api/status, /metrics and /healthz, on this door's counters;
    bound, not yet started (OSError when the port is busy)."""
    from ..listen.activity import Activity
    from ..listen.http import LiveServer, LiveState
    from ..listen.limits import Limits
    from ..listen.metrics import SharedCounters

    assert isinstance(activity, Activity) and isinstance(counters, SharedCounters)
    state = LiveState(
        counters,
        Limits(0, 0, 1),
        activity,
        index=config.index,
        series_idle=args.series_idle or 10.0,
        active=list,
        healthy=healthy.is_set,
        about={
            "door": "watch",
            "host": config.host,
            "watching": ", ".join(os.path.abspath(p) for p in args.paths),
            "datadir": os.path.abspath(config.datadir),
            "logdir": os.path.abspath(config.logdir) if config.logdir else "",
            "index": shown(config.index) if config.index else "",
        },
        logdir=config.logdir,
    )
    host, port = args.http
    return LiveServer(host, port, state)
