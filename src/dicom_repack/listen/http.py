"""``listen --http [HOST:]PORT``: a live page, ``/metrics`` and ``/healthz``.

Off by default; bound to 127.0.0.1 unless a host is given. Served by the
standard library's threading HTTP server in a thread of the process that owns
the counters (the parent, with ``--workers N``), read-only:

- ``/``: one HTML page that updates itself (a few lines of JavaScript fetch
  ``/api/status`` every second): instances/s, active associations and their
  peers, series in progress and recently completed, failures with reasons;
- ``/api/status``: the same as JSON;
- ``/metrics``: Prometheus' text format (instances, bytes, failures by kind,
  associations by outcome, active associations, in-flight bytes);
- ``/healthz``: ``200 ok`` while serving, ``503`` once stopping.

The numbers come from the shared counters (:mod:`~.metrics`, summed over the
workers) and the association/byte table (:mod:`~.limits`); the lists from the
index when there is one (it holds every worker's rows), else from this
process's memory.

Bounds, because the port may face a browser or a crowd: at most
:data:`MAX_CONNECTIONS` connections are served at once (one thread each; more
are answered 503 at once and closed); each has :data:`REQUEST_TIMEOUT` seconds
to send its request, and as long again to take the response; a client that
goes away is closed quietly (never a traceback). And only requests naming this
server are answered: a Host header with a name other than ``localhost``, the
``--http`` host or this machine's host name gets 421, so that a web page whose
name is made to resolve to 127.0.0.1 (DNS rebinding) cannot read
``/api/status`` through a local browser. An IP address as Host is accepted
(such a page can only be the server's own), and so is no Host at all (not a
browser).
"""

from __future__ import annotations

import collections
import contextlib
import io
import ipaddress
import itertools
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .activity import Activity
from .limits import Limits
from .metrics import FAILURE_KINDS, SharedCounters

__all__ = ["MAX_CONNECTIONS", "REQUEST_TIMEOUT", "LiveServer", "LiveState", "host_allowed"]

LOG = logging.getLogger("dicom_repack.listen")

#: connections served at once (a thread each); more get 503 at once
MAX_CONNECTIONS = 16
#: seconds a client has to send its whole request, and again to take the response
REQUEST_TIMEOUT = 10.0

#: how far back the page looks for series (in progress and recently completed)
RECENT_S = 3600.0
#: instances/s is averaged over this window
RATE_WINDOW_S = 10.0
#: the rate graph: one point per RATE_WINDOW_S over this many seconds (kept in memory)
HISTORY_S = 600.0


#: how often /healthz asks a PostgreSQL index whether it is there (in a thread)
PROBE_S = 2.0


class LiveState:
    """Gathers what the page and /metrics show; cheap enough to call every second."""

    def __init__(
        self,
        counters: SharedCounters,
        limits: Limits,
        activity: Activity,
        *,
        index: str | None,
        series_idle: float,
        active: Callable[[], list[Any]] | None = None,
        healthy: Callable[[], bool] = lambda: True,
        about: dict[str, object] | None = None,
        logdir: str | None = None,
    ) -> None:
        self.counters = counters
        self.limits = limits
        self.activity = activity
        self.index = index
        #: where a PostgreSQL index's pending rows wait (core/index_rows.py: local_path)
        self.logdir = logdir
        self._probe: Any = None  # a PostgreSQL index's connection for /healthz (index_pg)
        self._degraded: str | None = None  # its last answer, from a thread (index_degraded)
        self._probed_at = -PROBE_S
        self._probing = False
        self.series_idle = series_idle
        #: this process's open associations (one process only), else None: from the index
        self.active = active
        self.healthy = healthy
        #: what the page says the service is: door, port, AE title, data and log folders
        self.about = dict(about or {})
        self.started = time.time()
        self._samples: collections.deque[tuple[float, int, int]] = collections.deque(
            maxlen=int(HISTORY_S) + 2
        )  # one a second: ~600 small tuples, the graph's memory
        self._lock = threading.Lock()

    def sample(self) -> None:
        """Remember (time, stored, bytes) for the rate; called every second by the server."""
        t = self.counters.totals()
        with self._lock:
            self._samples.append((time.monotonic(), t["stored"], t["bytes"]))

    def _rate(self) -> tuple[float, float]:
        with self._lock:
            samples = list(self._samples)
        if len(samples) < 2:
            return 0.0, 0.0
        now = samples[-1][0]
        first = next((s for s in samples if now - s[0] <= RATE_WINDOW_S), samples[0])
        last = samples[-1]
        span = last[0] - first[0]
        if span <= 0:
            return 0.0, 0.0
        return (last[1] - first[1]) / span, (last[2] - first[2]) / span

    def _history(self) -> list[list[float]]:
        """``[seconds ago, instances/s]`` per RATE_WINDOW_S over the last HISTORY_S."""
        with self._lock:
            samples = list(self._samples)
        if len(samples) < 2:
            return []
        now = samples[-1][0]
        step = max(1, int(RATE_WINDOW_S))
        points = samples[::-1][::step][::-1]  # every step-th sample, ending with the last
        out = []
        for a, b in itertools.pairwise(points):
            span = b[0] - a[0]
            if span > 0:
                out.append([round(now - b[0], 1), round((b[1] - a[1]) / span, 2)])
        return out

    def _disk(self) -> list[dict[str, object]]:
        """Free bytes where the service writes (its data and log folders)."""
        import os

        out: list[dict[str, object]] = []
        for name in ("datadir", "logdir"):
            folder = self.about.get(name)
            if not folder:
                continue
            try:
                st = os.statvfs(str(folder))
            except OSError:
                continue
            out.append(
                {
                    "folder": name,
                    "path": folder,
                    "free_bytes": st.f_bavail * st.f_frsize,
                    "size_bytes": st.f_blocks * st.f_frsize,
                }
            )
        return out

    def document(self) -> dict[str, object]:
        """The /api/status JSON."""
        totals = self.counters.totals()
        associations, inflight = self.limits.totals()
        per_s, bytes_per_s = self._rate()
        doc: dict[str, object] = {
            "generated": time.time(),
            "started": self.started,
            "workers": self.limits.workers,
            "healthy": self.healthy(),
            "counters": {k: v for k, v in totals.items() if not k.startswith("failed:")},
            "failed_by_kind": {
                k.split(":", 1)[1]: v for k, v in totals.items() if k.startswith("failed:") and v
            },
            "instances_per_s": round(per_s, 2),
            "bytes_per_s": round(bytes_per_s, 1),
            "rate_window_s": RATE_WINDOW_S,
            "rate_history": self._history(),
            "about": self.about,
            "disk": self._disk(),
            "active_associations": associations,
            "inflight_bytes": inflight,
            "index": self.index,
            "host": self.about.get("host"),
        }
        doc.update(self._lists())
        return doc

    def _lists(self) -> dict[str, object]:
        active: list[dict[str, object]] = []
        if self.active is not None:
            active = [
                {"peer": a.peer, "calling_ae": a.calling_ae, "called_ae": a.called_ae,
                 "started": a.started, "instances": a.instances,
                 "bytes": a.received + a.receiving}
                for a in self.active() if a.calling_ae
            ]  # fmt: skip
        recent = self.activity.snapshot()
        out: dict[str, object] = {
            "associations": active,
            "recent_associations": recent["ended"],
            "failures": recent["failures"],
            "series_in_progress": [],
            "series_completed": [],
        }
        if self.index is None:
            return out
        from ..core.index import IndexFailure, connect_reader
        from ..core.index_rows import is_url
        from ..core.status_query import open_pg

        pg = is_url(self.index)
        try:
            conn = open_pg(self.index, self.logdir) if pg else connect_reader(self.index)
        except IndexFailure:
            return out  # nothing filed yet, or the server away (/healthz says so)

        def rows(sql: str, params: tuple[object, ...] = ()) -> list[dict[str, object]]:
            if pg:
                from ..core.index_pg import pg_sql

                sql = pg_sql(sql)
            cur = conn.execute(sql, params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

        try:
            since = time.time() - RECENT_S
            if self.active is None:
                # an open association's own row is written when it ends: count what it
                # filed so far from the instances it brought (same peer, since it started)
                out["associations"] = [
                    dict(r)
                    for r in rows(
                        "SELECT a.peer, a.calling_ae, a.called_ae, a.started, "
                        "(SELECT COUNT(*) FROM instances i WHERE i.peer = a.peer "
                        " AND i.filed_at >= a.started) AS instances, "
                        "(SELECT CAST(COALESCE(SUM(i.size), 0) AS BIGINT) FROM instances i "
                        " WHERE i.peer = a.peer "
                        " AND i.filed_at >= a.started) AS bytes "
                        "FROM associations a WHERE a.ended IS NULL AND a.started >= ? "
                        "ORDER BY a.started",
                        (self.started - 1,),
                    )
                ]
                out["recent_associations"] = rows(
                    "SELECT * FROM associations WHERE ended IS NOT NULL "
                    "ORDER BY ended DESC LIMIT 20"
                )
            out["failures"] = rows("SELECT * FROM failures ORDER BY at DESC LIMIT 20")
        except Exception:  # a reader must never break the page (a locked or new file)
            pass
        finally:
            conn.close()
        out.update(self._series(since))
        return out

    def _series(self, since: float) -> dict[str, object]:
        from ..core.index import IndexFailure
        from ..core.status_query import StatusFilters, query

        assert self.index is not None
        try:
            doc = query(self.index, StatusFilters(since=since, series_idle=self.series_idle))
        except IndexFailure:
            return {}
        rows: list[dict[str, object]] = []
        for p in doc["patients"]:
            for st in p["studies"]:
                for s in st["series"]:
                    rows.append(
                        {
                            "PatientID": p["PatientID"],
                            "StudyDescription": st["StudyDescription"],
                            **{k: v for k, v in s.items() if k != "complete"},
                        }
                    )
        rows.sort(key=lambda r: str(r["last"]), reverse=True)
        return {
            "series_in_progress": [r for r in rows if r["state"] == "receiving"],
            "series_completed": [r for r in rows if r["state"] != "receiving"][:20],
        }

    def metrics(self) -> str:
        """Prometheus' text exposition format."""
        t = self.counters.totals()
        associations, inflight = self.limits.totals()
        out: list[str] = []

        def metric(name: str, kind: str, help_text: str, values: dict[str, float]) -> None:
            out.append(f"# HELP dicom_repack_{name} {help_text}")
            out.append(f"# TYPE dicom_repack_{name} {kind}")
            for labels, value in values.items():
                text = str(value) if isinstance(value, int) else repr(float(value))
                out.append(f"dicom_repack_{name}{labels} {text}")

        metric("up", "gauge", "1 while the receiver serves.", {"": 1 if self.healthy() else 0})
        metric("start_time_seconds", "gauge", "Unix time the receiver started.",
               {"": self.started})  # fmt: skip
        metric("workers", "gauge", "Receiving processes.", {"": self.limits.workers})
        metric("instances_stored_total", "counter", "Instances filed and recorded.",
               {"": t["stored"]})  # fmt: skip
        metric("instances_failed_total", "counter", "Instances not filed, by error kind.",
               {f'{{kind="{k}"}}': t[f"failed:{k}"] for k in FAILURE_KINDS})  # fmt: skip
        metric("received_bytes_total", "counter", "Bytes of instances received.",
               {"": t["bytes"]})  # fmt: skip
        metric("spooled_total", "counter", "Instances spooled to disk while arriving.",
               {"": t["spooled"]})  # fmt: skip
        metric("echoes_total", "counter", "C-ECHO requests answered.", {"": t["echoes"]})
        metric("connections_total", "counter", "TCP connections accepted.",
               {"": t["connections"]})  # fmt: skip
        metric("connections_dropped_total", "counter",
               "Connections closed before associating.", {"": t["dropped"]})  # fmt: skip
        metric("associations_total", "counter", "Associations, by outcome.",
               {f'{{result="{k}"}}': t[n] for k, n in (
                   ("accepted", "associations"), ("rejected", "rejected"),
                   ("released", "released"), ("aborted", "aborted"), ("evicted", "evicted"))})  # fmt: skip
        metric("associations_active", "gauge", "Associations open now.", {"": associations})
        metric("inflight_bytes", "gauge",
               "Bytes of unfinished instances held in memory now.", {"": inflight})  # fmt: skip
        if self.index is not None:
            metric("index_pending_rows", "gauge",
                   "Index rows waiting in the pending file to be folded into the index.",
                   {"": self.index_waiting()})  # fmt: skip
        return "\n".join(out) + "\n"

    def index_waiting(self) -> int:
        """Rows waiting in this host's pending file of the index (``/metrics``)."""
        from ..core.index_files import pending_rows
        from ..core.index_rows import is_url, local_path, pending_path

        if self.index is None or (is_url(self.index) and not self.logdir):
            return 0
        return pending_rows(pending_path(local_path(self.index, self.logdir)))

    def index_degraded(self) -> str | None:
        """None, or why the index is degraded (``/healthz``).

        A PostgreSQL index is asked (``SELECT 1`` on one kept connection:
        core/index_pg.py ``health``) in a thread of its own, at most every
        :data:`PROBE_S`, and the last answer is returned at once: a probe may wait
        seconds for a server that does not answer, a readiness probe may not. It is
        degraded while the server cannot be reached or its schema is refused; the
        receiver files on meanwhile, its rows waiting in the pending file. An SQLite
        index is local: never degraded here.
        """
        from ..core.index_rows import is_url

        if self.index is None or not is_url(self.index):
            return None
        with self._lock:
            if not self._probing and time.monotonic() - self._probed_at >= PROBE_S:
                self._probing = True
                threading.Thread(target=self._probe_index, name="index-probe", daemon=True).start()
            return self._degraded

    def _probe_index(self) -> None:
        from ..core.index_pg import PgIndex, health
        from ..core.index_rows import local_path

        assert self.index is not None
        try:
            local = local_path(self.index, self.logdir) if self.logdir else None
            if self._probe is None:
                self._probe = PgIndex(self.index, local, follow_flusher=False)
            degraded = health(self.index, local, self._probe)[0]
        except Exception as exc:  # the probe must never take the page down
            degraded = str(exc)
        with self._lock:
            self._degraded = degraded
            self._probed_at = time.monotonic()
            self._probing = False

    def close(self) -> None:
        """Close the health probe's connection (a PostgreSQL index)."""
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.close()


class LiveServer:
    """The HTTP server thread; :meth:`start`, then :meth:`stop` at shutdown."""

    def __init__(self, host: str, port: int, state: LiveState) -> None:
        self.state = state
        names = {"localhost", _host_name(host), _host_name(socket.gethostname())}
        handler = type("Handler", (_Handler,), {"state": state, "names": frozenset(names)})
        self.httpd = _Server((host, port), handler)
        bound = self.httpd.server_address
        self.address: tuple[str, int] = (str(bound[0]), int(bound[1]))
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True),
            threading.Thread(target=self._sampler, name="http-sampler", daemon=True),
        ]

    @property
    def url(self) -> str:
        host, port = self.address
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    def start(self) -> LiveServer:
        self._started = True
        for t in self._threads:
            t.start()
        return self

    _started = False

    def _sampler(self) -> None:
        while not self._stop.wait(1.0):
            self.state.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._started:  # shutdown() waits for serve_forever, which never ran otherwise
            self.httpd.shutdown()
        self.httpd.server_close()
        self.state.close()


def _host_name(host: str) -> str:
    """A Host header's (or an address's) host part, lower case: no port, no brackets,
    no final dot."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host.rstrip(".")


def host_allowed(header: str | None, names: frozenset[str]) -> bool:
    """True for a request this server should answer: no Host header, an IP address,
    or one of ``names`` (anything else may be a DNS-rebinding page: see the module)."""
    if header is None:
        return True
    host = _host_name(header)
    if host in names:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 5\r\nRetry-After: 1\r\nConnection: close\r\n\r\nbusy\n"
)


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on connections and no tracebacks."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):  # over the cap: 503 without a thread
                request.setblocking(False)
                request.send(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # the thread did not start: its slot is free again
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away or was too slow is not worth a line; anything else
        gets one line (never socketserver's traceback on stderr)."""
        exc = sys.exception()
        if isinstance(exc, OSError) or exc is None:
            return
        LOG.warning("--http: %s: %s: %s", client_address[0], exc.__class__.__name__, exc)


class _UntilDeadline(io.RawIOBase):
    """A socket's reads, refused past a deadline (the request's whole time, not each read's)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"request not complete within {REQUEST_TIMEOUT:g} s")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class _Handler(BaseHTTPRequestHandler):
    state: LiveState
    #: the host names this server answers to (besides IP addresses)
    names: frozenset[str]
    server_version = "dicom-repack"
    timeout = REQUEST_TIMEOUT

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the makefile of StreamRequestHandler, replaced by one with a deadline
        raw = _UntilDeadline(self.connection, time.monotonic() + REQUEST_TIMEOUT)
        self.rfile = io.BufferedReader(raw)

    #: answering HEAD: the same status and headers as GET, no body
    head = False

    def do_HEAD(self) -> None:
        self.head = True
        self.do_GET()

    def do_GET(self) -> None:
        if not host_allowed(self.headers.get("Host"), self.names):
            self._send(421, "text/plain", b"misdirected request: not a name of this server\n")
            return
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(200, "text/html; charset=utf-8", PAGE.encode())
        elif path == "/api/status":
            body = json.dumps(self.state.document(), default=str).encode()
            self._send(200, "application/json", body)
        elif path == "/metrics":
            self._send(200, "text/plain; version=0.0.4; charset=utf-8",
                       self.state.metrics().encode())  # fmt: skip
        elif path == "/healthz":
            ok = self.state.healthy()
            degraded = self.state.index_degraded() if ok else None
            if degraded is not None:  # still ready: filing goes on, rows wait (docs/scale.md)
                from ..core.errors import one_line

                body = f"degraded: {one_line(degraded)}\n".encode()
            else:
                body = b"ok\n" if ok else b"stopping\n"
            self._send(200 if ok else 503, "text/plain", body)
        else:
            self._send(404, "text/plain", b"not found\n")

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.connection.settimeout(REQUEST_TIMEOUT)  # for the whole response (sendall)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not self.head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # requests are not worth a log line each


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>dicom-repack listen</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em} h2{font-size:1.05em;margin-top:1.5em}
.cards{display:flex;gap:1em;flex-wrap:wrap}
.card{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;min-width:8em}
.card b{display:block;font-size:1.6em}
table{border-collapse:collapse;margin-top:.3em} td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}
.bad{color:#b00} .muted{color:#888}
</style></head>
<body>
<h1>dicom-repack listen <span id="health" class="muted"></span></h1>
<div class="cards">
 <div class="card">instances filed<b id="stored">-</b></div>
 <div class="card">failed<b id="failed">-</b></div>
 <div class="card">instances/s <span class="muted" id="window"></span><b id="rate">-</b></div>
 <div class="card">received<b id="bytes">-</b></div>
 <div class="card">associations open<b id="active">-</b></div>
 <div class="card">in flight<b id="inflight">-</b></div>
</div>
<h2>Instances/s, last <span id="span">10</span> minutes</h2>
<svg id="graph" width="600" height="80" viewBox="0 0 600 80" role="img" style="border:1px solid #ddd"
 aria-label="instances per second"><polyline id="line" fill="none" stroke="#2a6" stroke-width="2"
 points=""/><text id="peak" x="4" y="12" font-size="11" fill="#888"></text></svg>
<h2>Service</h2><table id="about"></table>
<h2>Active associations</h2><table id="assocs"></table>
<h2>Series in progress</h2><table id="progress"></table>
<h2>Recently completed series</h2><table id="completed"></table>
<h2>Failures</h2><table id="failures"></table>
<p class="muted" id="updated"></p>
<script>
const $ = id => document.getElementById(id);
const mb = n => (n / 1e6).toFixed(1) + " MB";
const t = s => s ? new Date(typeof s === "number" ? s * 1000 : s).toISOString().slice(11, 19) : "";
function rows(id, head, items, cells) {
  const el = $(id);
  el.replaceChildren();
  const tr = el.insertRow();
  head.forEach(h => { const th = document.createElement("th"); th.textContent = h; tr.appendChild(th); });
  items.forEach(it => { const r = el.insertRow(); cells(it).forEach(c => { r.insertCell().textContent = c; }); });
  el.dataset.rows = items.length;
}
let updates = 0;
async function refresh() {
  try {
    const d = await (await fetch("/api/status", {cache: "no-store"})).json();
    const c = d.counters;
    $("stored").textContent = c.stored;
    $("failed").textContent = c.failed;
    $("rate").textContent = d.instances_per_s;
    $("bytes").textContent = mb(c.bytes);
    $("bytes").dataset.bytes = c.bytes;
    $("active").textContent = d.active_associations;
    $("inflight").textContent = mb(d.inflight_bytes);
    $("health").textContent = d.healthy ? "serving" : "stopping";
    $("window").textContent = "(last " + d.rate_window_s + " s)";
    const h = d.rate_history || [], top = Math.max(1, ...h.map(p => p[1]));
    const span = 600;
    $("line").setAttribute("points", h.map(p =>
      ((span - p[0]) / span * 600).toFixed(1) + "," + (78 - p[1] / top * 64).toFixed(1)).join(" "));
    $("graph").dataset.points = h.length;
    $("peak").textContent = "peak " + top.toFixed(1) + "/s";
    const a = d.about || {};
    const about = Object.entries(a).map(([k, v]) => [k, String(v)]);
    (d.disk || []).forEach(x => about.push(["free in " + x.folder, (x.free_bytes / 1e9).toFixed(1) +
      " GB of " + (x.size_bytes / 1e9).toFixed(1) + " GB"]));
    rows("about", ["", ""], about, r => r);
    rows("assocs", ["peer", "calling AE", "called AE", "since", "instances", "bytes"], d.associations,
         a => [a.peer, a.calling_ae, a.called_ae, t(a.started), a.instances, mb(a.bytes || 0)]);
    const series = s => [s.PatientID, s.SeriesNumber + " " + (s.SeriesDescription || ""), s.Modality || "",
         s.instances + (s.expected ? "/" + s.expected : ""), mb(s.bytes), t(s.last), s.state,
         Object.entries(s.hosts || {}).map(([h, n]) => (h || "?") + ":" + n).join(" ")];
    const head = ["patient", "series", "modality", "instances", "bytes", "last", "state", "hosts"];
    rows("progress", head, d.series_in_progress, series);
    rows("completed", head, d.series_completed, series);
    rows("failures", ["at", "kind", "reason"], d.failures, f => [t(f.at), f.kind, f.reason]);
    document.body.dataset.stored = c.stored;
    document.body.dataset.updates = ++updates;
    $("updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC" +
      (d.index ? "" : " (no index: series lists need one)");
  } catch (e) {
    $("health").textContent = "unreachable";
  }
}
refresh();
setInterval(refresh, 1000);
</script>
</body></html>
"""
