"""``dicom-repack listen``: a DICOM Storage SCP that repacks in process.

storescp + one repack process per instance pays a process start per instance,
whatever language the repacker is in. This door receives in process instead
(like oxidicom): each C-STORE's data set is written once, straight to its final
path under the layout, and its pypx records written, *before* the success
response goes back, so a success always means "filed"; any failure answers a
failure status and leaves nothing behind, so the sender can retry.

Every option can also come from the environment (``DICOM_REPACK_LISTEN_<OPTION>``,
e.g. ``DICOM_REPACK_LISTEN_MAX_ASSOCIATIONS=8``), as oxidicom is configured in
containers; a flag on the command line wins. See docs/listen.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import threading
import time

from ..core.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, TemplateError
from ..core.index_rows import shown
from ..doors import options
from ..doors.fork_pool import usable_cores
from ..doors.plumbing import (
    Refused,
    check_destinations,
    check_index,
    fail,
    line,
    open_ndjson,
    say,
)
from ..doors.usage import OneLineParser
from .activity import Activity
from .assoc import Policy
from .filer import Filer
from .limits import Limits
from .metrics import SharedCounters
from .scp import ServerConfig, StorageServer, listening_socket
from .series_watch import SeriesWatch, series_watch_for
from .service import (
    add_series_arguments,
    add_service_arguments,
    apply_config_file,
    apply_environment,
    seconds,
    setup_logging,
)
from .sink import Spool
from .workers import Relay, serve_workers

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType

    from .http import LiveServer

__all__ = ["ENV_PREFIX", "build_parser", "main"]

DOOR = "listen"
ENV_PREFIX = "DICOM_REPACK_LISTEN_"
#: After --shutdown-grace, how long the rest of a shutdown may take before the process
#: is ended regardless (the hard bound: see :func:`_exit_after`).
EXIT_SLACK = 5.0
LOG = logging.getLogger("dicom_repack.listen")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535)")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must not be negative")
    return value


def _size(text: str) -> int:
    from ..core.sizes import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> OneLineParser:
    """The listen options, each with its DICOM_REPACK_LISTEN_* variable as default.

    Raises ValueError naming the variable when one cannot be read.
    """
    p = OneLineParser(
        prog="dicom-repack listen",
        description="DICOM Storage SCP (C-ECHO, C-STORE) that files each instance in process. "
        f"Every option may also be set as an environment variable {ENV_PREFIX}<OPTION> "
        "(upper case, '-' as '_'); flags win.",
    )
    net = p.add_argument_group("network")
    net.add_argument(
        "port_word",
        nargs="?",
        type=_port,
        metavar="PORT",
        help="TCP port, as storescp takes it (the same as --port)",
    )
    net.add_argument("--port", type=_port, default=11112, help="TCP port (0: pick a free one)")
    net.add_argument("--bind", default="0.0.0.0", help="address to listen on (default: all)")
    net.add_argument("--aet", "-aet", default="DICOM-REPACK", help="our AE title")
    net.add_argument(
        "--require-called-aet",
        action="store_true",
        help="refuse associations whose called AE title is not --aet",
    )
    net.add_argument(
        "--allow-calling",
        action="append",
        metavar="AE[,AE...]",
        help="only these calling AE titles may associate (repeatable; default: any)",
    )
    net.add_argument(
        "--promiscuous",
        action="store_true",
        help="accept any abstract syntax for storage, not only the known storage SOP classes",
    )
    net.add_argument(
        "--workers",
        type=_natural,
        default=0,
        help="processes serving the port (default 0: one per core this process may use)",
    )
    net.add_argument(
        "--max-associations", type=_count, default=16, help="concurrent associations (all workers)"
    )
    net.add_argument(
        "--max-pending",
        type=_count,
        default=1024,
        help="connections that have not yet asked to associate, per worker; past it the "
        "oldest is closed (also capped by the open-files limit)",
    )
    net.add_argument(
        "--max-pdu",
        type=_natural,
        default=131072,
        help="maximum PDU length we announce (0: unlimited)",
    )
    net.add_argument(
        "--acse-timeout",
        type=seconds,
        default=10.0,
        help="s a new connection has to finish TLS and send its association request "
        "(the ARTIM timer)",
    )
    net.add_argument(
        "--dimse-timeout",
        type=seconds,
        default=60.0,
        help="s a message may stall between two of its PDUs",
    )
    net.add_argument(
        "--message-timeout",
        type=seconds,
        default=60.0,
        help="s a whole message (a C-STORE's command and data set) may take (default 60), "
        "plus the time its size needs at --min-rate; past it the association is aborted, "
        "however steadily its PDUs trickle in",
    )
    net.add_argument(
        "--min-rate",
        type=_size,
        default=64 << 10,
        help="bytes per s a message earns extra time at (default 64KiB): a sender at least "
        "this fast is never cut by --message-timeout (0: no extra time for size)",
    )
    net.add_argument(
        "--network-timeout",
        type=seconds,
        default=120.0,
        help="s an association may stay idle between messages",
    )
    net.add_argument(
        "--idle-evict",
        type=seconds,
        default=5.0,
        help="when every association slot is taken, an association idle between messages "
        "for this many s is closed to admit a new one",
    )
    net.add_argument(
        "--shutdown-grace",
        type=seconds,
        default=30.0,
        help="on SIGTERM/SIGINT, s to finish the instances being received",
    )
    net.add_argument(
        "--max-instance-size",
        type=_size,
        default=1 << 30,
        help="largest instance accepted, in bytes (e.g. 2GiB)",
    )
    net.add_argument(
        "--memory-budget",
        type=_size,
        default=256 << 20,
        help="bytes of unfinished instances held in memory, all associations and workers "
        "together (e.g. 256MiB); past it instances are spooled to a file in the data folder",
    )
    net.add_argument(
        "--spill-above",
        type=_size,
        default=64 << 20,
        help="an instance larger than this is spooled to a file in the data folder, "
        "whatever the budget",
    )
    tls = p.add_argument_group("TLS")
    tls.add_argument("--tls-cert", help="PEM certificate chain: turns TLS on")
    tls.add_argument("--tls-key", help="PEM private key (default: in --tls-cert)")
    tls.add_argument("--tls-ca", help="PEM CA bundle: clients must present a certificate it signed")
    out = p.add_argument_group("output")
    # shared with every door, declared once in doors/options.py; --ndjson PATH is the old
    # spelling of --log-ndjson[=PATH], kept as an alias
    options.add_arguments(out, options.DESTINATION, required=["datadir"])
    options.add_arguments(
        out,
        (options.FSYNC, options.LOG_NDJSON, *options.INDEX),
        aliases={"log_ndjson": ("--ndjson",)},
    )
    add_series_arguments(out)
    options.add_arguments(p, options.LAYOUT, title="layout", description=options.LAYOUT_HELP)
    add_service_arguments(p)
    apply_environment(p, ENV_PREFIX)
    return p


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.tls_cert, args.tls_key)
    if args.tls_ca:
        ctx.load_verify_locations(args.tls_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _allowed(values: list[str] | None) -> frozenset[str]:
    return frozenset(ae.strip() for v in values or () for ae in v.split(",") if ae.strip())


def main(argv: list[str]) -> int:
    try:
        parser = build_parser()
        apply_config_file(parser, argv, ENV_PREFIX)  # flags > env > config file > defaults
    except ValueError as exc:  # a DICOM_REPACK_LISTEN_* variable or config key that cannot be read
        return fail(DOOR, str(exc), EXIT_USAGE)
    args = parser.parse_args(argv)
    if args.port_word is not None:
        if "--port" in argv or any(a.startswith("--port=") for a in argv):
            parser.error("the port is given twice (PORT and --port)")
        args.port = args.port_word
    try:
        setup_logging(args.log_level, args.log_file)
    except OSError as exc:
        return fail(DOOR, f"--log-file {args.log_file}: {exc}", EXIT_USAGE)
    try:
        return _run(args)
    except Refused as exc:
        return fail(DOOR, str(exc), exc.status)


def _run(args: argparse.Namespace) -> int:
    try:
        layout = options.layout_from(vars(args))
        ctx = _ssl_context(args)
    except (TemplateError, OSError, ssl.SSLError) as exc:
        raise Refused(str(exc), EXIT_USAGE) from None
    # refused at start, what would fail every C-STORE: an unusable data or log folder
    check_destinations(args.datadir, args.logdir, parents=args.parents)
    Spool(args.datadir).sweep()
    workers = args.workers or usable_cores()

    lines = open_ndjson(args.log_ndjson or None)

    config = _server_config(args, ctx)
    repack_config = options.config_from(vars(args), layout)
    watch = series_watch_for(args.series_idle, args.on_series_complete, lines, repack_config)
    # associations and failures: log lines and index rows (opened lazily, after any fork);
    # counters in shared memory, so that the live page adds up every worker's
    warning = check_index(repack_config.index, args.logdir)  # Refused: one line, exit 1
    if warning:
        LOG.warning("%s", warning)
    activity = Activity(repack_config.index, durable=args.fsync, logdir=args.logdir)
    shared = SharedCounters(workers)
    live: LiveServer | None = None
    try:
        sock = listening_socket(args.bind, args.port)
    except OSError as exc:
        return fail(DOOR, f"cannot listen on {args.bind}:{args.port}: {exc}")
    limits = Limits(config.max_associations, config.memory_budget, workers)
    serving: list[StorageServer] = []  # the one server, when it runs in this process
    stopping = threading.Event()  # SIGTERM came: the page's /healthz says so
    try:
        about = {
            "door": "listen",
            "host": repack_config.host,
            "port": sock.getsockname()[1],
            "ae_title": args.aet,
            "workers": workers,
            "datadir": os.path.abspath(args.datadir),
            "logdir": os.path.abspath(args.logdir) if args.logdir else "",
            "index": shown(repack_config.index) if repack_config.index else "",
        }
        live = _live(
            args, shared, limits, activity, repack_config.index, serving, workers, stopping, about
        )
    except OSError as exc:  # a busy --http port: refused as a busy DICOM port is
        sock.close()
        http_host, http_port = args.http
        return fail(DOOR, f"cannot serve --http on {http_host}:{http_port}: {exc}")
    host, port = sock.getsockname()[:2]
    started_line = (
        f"listening on {host}:{port} as {args.aet}{' (TLS)' if ctx else ''}"
        f"{f' ({workers} workers)' if workers > 1 else ''}"
    )
    started = time.monotonic()
    if workers == 1:
        filer = Filer(repack_config, lines, watch, activity)
        server = StorageServer(config, filer, limits.share(0))
        _observe(server, activity, shared, 0)
        server.adopt(sock)
        serving.append(server)

        watchdog: threading.Timer | None = None

        def on_signal(signum: int, _frame: object) -> None:
            nonlocal watchdog
            server.stop()
            if watchdog is None:
                watchdog = _exit_after(config.shutdown_grace + EXIT_SLACK)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        say(DOOR, started_line)
        _start_live(live, stopping)
        if watch is not None:
            watch.start()
        server.serve_forever()
        filer.close()
        if watchdog is not None and not server.stuck:
            watchdog.cancel()  # every association ended: the rest of shutdown cannot hang on one
        counters, lost = server.counters.snapshot(), 0
    else:

        def make_server(index: int, relay: Relay) -> StorageServer:
            if live is not None:  # the page is the parent's: a worker does not hold its port
                live.httpd.socket.close()
            # filed instances go up the pipe only when the parent watches series
            seen = relay if watch is not None else None
            server = StorageServer(
                config, Filer(repack_config, lines, seen, activity), limits.share(index)
            )
            _observe(server, activity, shared, index)
            server.adopt(sock)
            return server

        def on_started() -> None:
            say(DOOR, started_line)
            _start_live(live, stopping)
            if watch is not None:
                watch.start()

        def on_lost(_pid: int) -> None:
            Spool(args.datadir).sweep()  # the dead worker's unfinished instances

        watchdog_workers: threading.Timer | None = None

        def on_stopping() -> None:
            nonlocal watchdog_workers
            # the parent's bound: past the workers' (killed at grace + slack), one more slack
            watchdog_workers = _exit_after(config.shutdown_grace + 2 * EXIT_SLACK)

        counters, lost, stuck = serve_workers(
            workers,
            limits,
            make_server,
            watch,
            on_started,
            on_lost=on_lost,
            kill_after=config.shutdown_grace + EXIT_SLACK,
            on_stopping=on_stopping,
        )
        if watchdog_workers is not None and not stuck:
            watchdog_workers.cancel()  # every association ended: the rest cannot hang on one
    sock.close()  # the parent's copy (each worker closed its own; a no-op with one worker)
    if live is not None:
        live.stop()
    if watch is not None:
        watch.close(flush=True)
    summary = _summary(counters, watch, time.monotonic() - started)
    if workers > 1:
        summary["workers"] = workers
        summary["workers_lost"] = lost
        summary["line"] = f"{summary['line']}; {workers} workers ({lost} lost)"
    say(DOOR, str(summary["line"]))
    if lines is not None:
        lines.write({"event": "summary", **{k: v for k, v in summary.items() if k != "line"}})
        lines.close()
    return EXIT_FAILED if lost else EXIT_OK


def _exit_after(seconds: float) -> threading.Timer:
    """Arm the hard bound of a shutdown: unless cancelled, end the process (status 1)
    ``seconds`` from now, with one line on stderr. For an association stuck in a
    handler (a write to a pipe nobody reads): it cannot be interrupted, and it may
    hold a lock the rest of the shutdown needs."""

    def fire() -> None:
        text = line(
            DOOR,
            f"the shutdown grace ran out ({seconds:g} s after the "
            "signal, an association stuck in a handler); exiting without it",
        )
        # the line from a thread of its own: stderr itself may be a pipe nobody reads
        writer = threading.Thread(target=os.write, args=(2, text.encode()), daemon=True)
        writer.start()
        writer.join(timeout=1.0)
        os._exit(EXIT_FAILED)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def _observe(
    server: StorageServer, activity: Activity, counters: SharedCounters, index: int
) -> None:
    """Count into the shared table and report associations (log line, index rows)."""
    server.counters = activity.counters = counters.view(index)
    server.on_association_start = activity.association_started
    server.on_association_end = activity.association_ended


def _live(
    args: argparse.Namespace,
    counters: SharedCounters,
    limits: Limits,
    activity: Activity,
    index: str | None,
    serving: list[StorageServer],
    workers: int,
    stopping: threading.Event,
    about: dict[str, object],
) -> LiveServer | None:
    """``--http``'s server, bound but not started (see :func:`_start_live`), or None.

    Bound before anything is served, so that a busy port is refused at start
    (OSError) rather than leaving a receiver without its page. ``serving`` holds
    the server once it exists (one worker: the page lists its associations);
    ``stopping`` is set on SIGTERM (``/healthz`` then says so).
    """
    if not args.http:
        return None
    from .http import LiveServer, LiveState

    state = LiveState(
        counters,
        limits,
        activity,
        index=index,
        series_idle=args.series_idle or 10.0,
        active=(lambda: [a for s in serving for a in s.active.values()]) if workers == 1 else None,
        healthy=lambda: not stopping.is_set(),
        about=about,
        logdir=args.logdir,
    )
    host, port = args.http
    return LiveServer(host, port, state)


def _start_live(live: LiveServer | None, stopping: threading.Event) -> None:
    """Serve the page (in the process that sees every worker's counters), once the
    door's own signal handlers are in place: SIGTERM sets ``stopping``, then theirs runs."""
    if live is None:
        return

    def on_term(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        if callable(previous):
            previous(signum, frame)

    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, on_term)
    if live is not None:
        live.start()
        say(DOOR, f"live page on {live.url}")


def _server_config(args: argparse.Namespace, ctx: ssl.SSLContext | None) -> ServerConfig:
    return ServerConfig(
        host=args.bind,
        port=args.port,
        policy=Policy(
            ae_title=args.aet,
            allowed_calling=_allowed(args.allow_calling),
            require_called=args.require_called_aet,
            promiscuous=args.promiscuous,
            max_pdu=args.max_pdu,
        ),
        max_associations=args.max_associations,
        max_pending=args.max_pending,
        acse_timeout=args.acse_timeout,
        dimse_timeout=args.dimse_timeout,
        message_timeout=args.message_timeout,
        min_rate=args.min_rate,
        network_timeout=args.network_timeout,
        idle_evict=args.idle_evict,
        shutdown_grace=args.shutdown_grace,
        max_instance_bytes=args.max_instance_size,
        memory_budget=args.memory_budget,
        spill_above=args.spill_above,
        datadir=args.datadir,
        ssl_context=ctx,
    )


def _summary(c: dict[str, int], watch: SeriesWatch | None, elapsed: float) -> dict[str, object]:
    rate = c["stored"] / elapsed if elapsed > 0 else 0.0
    out: dict[str, object] = {**c, "elapsed_s": round(elapsed, 3)}
    if watch is not None:
        out["series_complete"] = watch.fired
        out["series_hook_failures"] = watch.hook_failures
    out["line"] = (
        f"{c['stored']} instances filed ({c['bytes'] / 1e6:.1f} MB), {c['failed']} failed, "
        f"{c['echoes']} echoes; {c['associations']} associations ({c['rejected']} rejected, "
        f"{c['aborted']} aborted, {c['released']} released, {c['evicted']} evicted); "
        f"{c['connections']} connections ({c['dropped']} dropped before associating); "
        f"{c['spooled']} spooled to disk; in {elapsed:.1f} s "
        f"({rate:.1f} instances/s while up)"
    )
    return out
