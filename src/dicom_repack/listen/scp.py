"""A Storage SCP: the gate, association threads, limits, the data phase.

New connections wait in the :mod:`~.gate` (one selector, no thread each) until
they have sent a complete A-ASSOCIATE-RQ; only then does a connection take an
association slot and a thread. Each association thread does blocking reads
with timeouts, no polling loop: an association costs nothing while idle and a
few microseconds per PDU while busy. pynetdicom negotiates (see
:mod:`~.assoc`); this module then reads P-DATA-TF PDUs itself (:mod:`~.wire`),
collects the data set behind a file meta header it built (:mod:`~.sink`: in
memory within the shared budget, else in a spool file) and hands it to
``on_store`` *before* answering the C-STORE: the response a sender sees means
the instance is filed.

What is in flight is kept in :attr:`StorageServer.active` (one
:class:`Association` per open association: peer, AE titles, instances, bytes,
bytes of the message being received) and :attr:`StorageServer.counters`
(totals); the summary line, and any status page, read those.

Why this shape and not pynetdicom's ``AE.start_server``: see docs/listen.md
(its two polling threads per association and per-PDU object decoding cost more
CPU than the whole repack).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .assoc import Negotiated, Policy, Rejected, negotiate
from .counters import Counters
from .gate import Arrival, Gate, raise_fd_limit
from .limits import Limits, Share
from .sink import Incoming, Spool
from .wire import (
    C_ECHO_RQ,
    C_STORE_RQ,
    PDU_ABORT,
    PDU_P_DATA_TF,
    PDU_RELEASE_RQ,
    Command,
    abort_pdu,
    decode_command,
    echo_response,
    file_header,
    pdata_pdu,
    reject_pdu,
    release_rp_pdu,
    store_response,
)

__all__ = [
    "Association",
    "Counters",
    "ServerConfig",
    "StorageServer",
    "StoreHandler",
    "StoreInfo",
    "listening_socket",
]

LOG = logging.getLogger("dicom_repack.listen")

_HDR = struct.Struct(">BBL")
_PDV = struct.Struct(">LBB")

#: When we announce "unlimited" (max PDU 0), still refuse absurd lengths.
_MAX_PDU_UNLIMITED = 1 << 26
#: How often an idle association wakes to notice a shutdown or an eviction.
_WAKE = 0.5
#: How long a request waits for the slot of an idle association being evicted.
_EVICT_WAIT = 4 * _WAKE
#: Past the shutdown grace, how long associations get to notice it and end.
_JOIN_SLACK = 2 * _WAKE

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Network limits and hygiene (see ``dicom-repack listen --help`` for each)."""

    host: str = "0.0.0.0"
    port: int = 11112
    policy: Policy = field(default_factory=Policy)
    max_associations: int = 16
    max_pending: int = 1024
    acse_timeout: float = 10.0
    dimse_timeout: float = 60.0
    #: a whole message (command and data set) may take this long, plus its size at min_rate
    message_timeout: float = 60.0
    #: bytes per second a message's time allowance grows by (0: no allowance for size)
    min_rate: int = 64 << 10
    network_timeout: float = 120.0
    idle_evict: float = 5.0
    shutdown_grace: float = 30.0
    max_instance_bytes: int = 1 << 30
    memory_budget: int = 256 << 20
    spill_above: int = 64 << 20
    #: the data folder: instances that do not stay in memory are spooled inside it
    datadir: str = "."
    ssl_context: ssl.SSLContext | None = None


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """Who sent an instance and how (for the outcome log and the file meta)."""

    calling_ae: str
    called_ae: str
    peer: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str


#: Files one received instance (its bytes in memory or in a spool file):
#: (DIMSE status, error comment) out.
StoreHandler = Callable[[Incoming, StoreInfo], tuple[int, str]]


class Association:
    """One open association, as the server reports it (read without locks: plain fields)."""

    __slots__ = (
        "called_ae",
        "calling_ae",
        "evict",
        "idle_since",
        "instances",
        "peer",
        "received",
        "receiving",
        "result",
        "started",
    )

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.calling_ae = ""
        self.called_ae = ""
        self.started = time.time()
        #: instances filed (or refused) on this association
        self.instances = 0
        #: bytes of instances completed on this association
        self.received = 0
        #: bytes of the instance being received now (0 between messages)
        self.receiving = 0
        #: monotonic time since which it waits between messages; None inside one
        self.idle_since: float | None = time.monotonic()
        #: set by the server to take this association's slot for a new one
        self.evict = False
        #: how it ended: released, aborted by peer, evicted, interrupted, protocol error, dropped
        self.result = "dropped"


class _Closed(Exception):
    """The peer closed the connection."""


class _Protocol(Exception):
    """The peer broke the protocol; ``reason`` goes in our A-ABORT (PS3.8 §9.3.8)."""

    def __init__(self, why: str, reason: int = 0x00) -> None:
        super().__init__(why)
        self.reason = reason


class _Interrupted(Exception):
    """Shutdown or eviction: this association stops at a message boundary."""


class _Reader:
    """Whole PDUs from a socket, with timeouts that still notice a shutdown.

    Reads in large chunks (several PDUs per system call when they are queued)
    and keeps an offset instead of shifting the buffer after each PDU.
    :attr:`started` is when the header of a message's first PDU arrived (None
    between messages): the caller bounds the whole message from it.
    """

    __slots__ = ("buf", "interrupt", "message_timeout", "pos", "sock", "started")

    def __init__(
        self,
        sock: socket.socket,
        interrupt: Callable[[bool], bool],
        initial: bytes = b"",
        message_timeout: float = float("inf"),
    ) -> None:
        self.sock = sock
        self.buf = bytearray(initial)
        self.pos = 0
        #: called with "at a message boundary?" when a read waits; True stops the association
        self.interrupt = interrupt
        #: the longest a message's first PDU may take once its header is in
        self.message_timeout = message_timeout
        self.started: float | None = None

    def _fill(self, need: int, timeout: float, boundary: bool, deadline: float) -> None:
        """Wait for ``need`` bytes: at most ``timeout`` s for this PDU part, and never
        past ``deadline`` (monotonic; the bound of the message in progress)."""
        quiet_until = time.monotonic() + timeout
        while len(self.buf) - self.pos < need:
            if self.pos:
                del self.buf[: self.pos]
                self.pos = 0
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError("message not complete in time (--message-timeout, --min-rate)")
            if now >= quiet_until:
                raise TimeoutError(f"no data for {timeout:g} s")
            self.sock.settimeout(min(_WAKE, quiet_until - now, deadline - now))
            try:
                chunk = self.sock.recv(max(need - len(self.buf), 262144))
            except TimeoutError:
                if self.interrupt(boundary and not self.buf):
                    raise _Interrupted() from None
                continue
            if not chunk:
                raise _Closed()
            self.buf += chunk

    def pdu(
        self, limit: int, timeout: float, boundary: bool, deadline: float = float("inf")
    ) -> tuple[int, bytes]:
        """The next PDU's type and body (its variable field).

        ``timeout``: the longest wait for its header, and again for its body;
        ``deadline``: when the message in progress must be complete (none between
        messages: the first PDU of a message then starts its clock, :attr:`started`).
        """
        self._fill(6, timeout, boundary, deadline)
        if boundary:
            self.started = time.monotonic()
            deadline = self.started + self.message_timeout
        pdu_type, _, length = _HDR.unpack_from(self.buf, self.pos)
        if pdu_type not in (1, 2, 3, 4, 5, 6, 7):
            raise _Protocol(f"unrecognised PDU type 0x{pdu_type:02X}", 0x01)
        if length > limit:
            raise _Protocol(f"PDU of {length} bytes exceeds the limit of {limit}", 0x06)
        self._fill(6 + length, timeout, False, deadline)
        start = self.pos + 6
        body = bytes(self.buf[start : start + length])
        self.pos = start + length
        return pdu_type, body


def listening_socket(host: str, port: int) -> socket.socket:
    """The TCP socket every worker accepts on (IPv6 when ``host`` has a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=1024)


class StorageServer:
    """Accepts associations and files each received instance through ``on_store``.

    Life cycle: :meth:`bind` (port 0 picks a free port) or :meth:`adopt` (a
    socket a parent bound), :meth:`serve_forever` in one thread, :meth:`stop`
    from any thread or a signal handler. After ``stop`` no association is
    accepted; those in flight finish the message they are receiving (for at
    most ``shutdown_grace`` seconds) and are then aborted at a message
    boundary; ``serve_forever`` returns when all are gone, or about
    ``shutdown_grace`` seconds after ``stop`` with :attr:`stuck` set to those
    that could not be stopped (a handler blocked in a write).

    ``share`` is this process's view of the limits shared by every worker
    (default: limits of its own, from ``config``).
    """

    def __init__(
        self, config: ServerConfig, on_store: StoreHandler, share: Share | None = None
    ) -> None:
        self.config = config
        self.on_store = on_store
        self.counters = Counters()
        #: called with each accepted association when it starts and when it ends
        #: (listen/activity.py: the log line, the index rows)
        self.on_association_start: Callable[[Association], None] | None = None
        self.on_association_end: Callable[[Association], None] | None = None
        if share is None:
            share = Limits(config.max_associations, config.memory_budget).share(0)
        self.share = share
        self.spool = Spool(config.datadir)
        #: open associations, by thread ident (read by the summary and status pages)
        self.active: dict[int, Association] = {}
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._stop_deadline = float("inf")
        #: associations still running when serve_forever returned (stuck in a handler)
        self.stuck = 0
        self._threads: set[threading.Thread] = set()
        self._threads_lock = threading.Lock()
        #: requests waiting for the slot of an idle association being evicted
        self._queued: deque[tuple[float, Arrival]] = deque()
        self._gate: Gate | None = None

    # -- life cycle -------------------------------------------------------------

    def bind(self) -> tuple[str, int]:
        """Open the listening socket; returns the bound (host, port)."""
        return self.adopt(listening_socket(self.config.host, self.config.port))

    def adopt(self, sock: socket.socket) -> tuple[str, int]:
        """Serve on a listening socket opened elsewhere (a parent sharing it among workers)."""
        sock.setblocking(False)
        self._listener = sock
        host, port = sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def pending(self) -> int:
        """Connections that have not yet sent their association request."""
        return self._gate.pending if self._gate is not None else 0

    def stop(self) -> None:
        """Refuse new associations and let those in flight finish (signal-safe: sets flags only)."""
        if not self._stopping.is_set():
            self._stop_deadline = time.monotonic() + self.config.shutdown_grace
            self._stopping.set()

    def serve_forever(self) -> None:
        """Accept connections until :meth:`stop`; then wait for the associations in flight."""
        if self._listener is None:
            self.bind()
        assert self._listener is not None
        cfg = self.config
        fd_limit = raise_fd_limit()
        # keep descriptors for the associations, their spool files and the records
        max_pending = max(1, min(cfg.max_pending, fd_limit - 4 * cfg.max_associations - 64))
        self._gate = Gate(
            self._listener,
            admit=self._admit,
            count=self.counters.add,
            stopping=self._stopping.is_set,
            tick=self._tick,
            may_accept=self.share.may_accept,
            accept_burst=1 if self.share.limits.workers > 1 else 64,
            artim=cfg.acse_timeout,
            max_pending=max_pending,
            ssl_context=cfg.ssl_context,
            reserve=self.share.reserve,
            release=self.share.release,
        )
        self._gate.run()
        while self._queued:
            self._refuse(self._queued.popleft()[1], "shutting down")
        self._join()

    def _join(self) -> None:
        """Wait for the associations in flight, never past the grace (plus a turn of
        their read loop): one stuck in a handler (a blocked write) is left behind,
        counted in :attr:`stuck`, so that shutdown keeps its bound."""
        deadline = self._stop_deadline + _JOIN_SLACK
        while True:
            with self._threads_lock:
                threads = list(self._threads)
            if not threads:
                return
            for thread in threads:
                thread.join(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            if time.monotonic() > deadline:
                with self._threads_lock:
                    self.stuck = len(self._threads)
                if self.stuck:
                    LOG.warning(
                        "%d association(s) still busy when the shutdown grace ran out; left behind",
                        self.stuck,
                    )
                return

    # -- admission (runs in the gate's thread: never blocks) ------------------------

    def _admit(self, arrival: Arrival) -> None:
        if self._stopping.is_set():
            self._refuse(arrival, "shutting down")
        elif self.share.take_slot():
            self._start(arrival)
        elif self._evict_idle() or self.share.request_eviction(
            time.monotonic() - self.config.idle_evict
        ):
            self._queued.append((time.monotonic() + _EVICT_WAIT, arrival))
        else:
            self._refuse(arrival, f"{self.config.max_associations} associations already open")

    def _tick(self) -> None:
        """Every turn of the gate: publish our waiting connections, retry queued requests."""
        if self._gate is not None:
            self.share.publish_waiting(self._gate.pending)
        if self.share.limits.workers > 1:
            for _ in range(self.share.eviction_requests()):
                self._evict_idle()
            self.share.publish_idle(self._oldest_idle())
        now = time.monotonic()
        while self._queued:
            deadline, arrival = self._queued[0]
            if self.share.take_slot():
                self._queued.popleft()
                self._start(arrival)
            elif now > deadline:
                self._queued.popleft()
                self._refuse(arrival, "no association slot freed in time")
            else:
                return

    def _oldest_idle(self) -> float | None:
        """Since when the longest-idle association not yet asked to leave has been idle."""
        times = [
            a.idle_since
            for a in list(self.active.values())
            if not a.evict and a.idle_since is not None
        ]
        return min(times) if times else None

    def _evict_idle(self) -> bool:
        """Ask the longest-idle association (idle for ``idle_evict`` s or more) to close."""
        limit = time.monotonic() - self.config.idle_evict
        candidates = [
            a
            for a in list(self.active.values())
            if not a.evict and a.idle_since is not None and a.idle_since <= limit
        ]
        if not candidates:
            return False
        victim = min(candidates, key=lambda a: a.idle_since or 0.0)
        LOG.info("%s: idle association evicted to make room", victim.peer)
        victim.evict = True
        return True

    def _refuse(self, arrival: Arrival, why: str) -> None:
        LOG.info("%s: association rejected: %s", arrival.peer, why)
        self.counters.add("rejected")
        with contextlib.suppress(OSError, ValueError):
            arrival.sock.send(reject_pdu(0x02, 0x03, 0x02))  # transient, local limit exceeded
        with contextlib.suppress(OSError):
            arrival.sock.close()

    def _start(self, arrival: Arrival) -> None:
        thread = threading.Thread(
            target=self._connection, args=(arrival,), name=f"assoc-{arrival.peer}", daemon=True
        )
        with self._threads_lock:
            self._threads.add(thread)
        try:
            thread.start()
        except RuntimeError:  # cannot start a thread: refuse, keep serving
            with self._threads_lock:
                self._threads.discard(thread)
            self.share.give_slot()
            self._refuse(arrival, "cannot start a thread")

    # -- one association ----------------------------------------------------------

    def _connection(self, arrival: Arrival) -> None:
        """Owns the slot taken at admission; gives it back however the association ends."""
        sock, peer = arrival.sock, arrival.peer
        me = Association(peer)
        ident = threading.get_ident()
        self.active[ident] = me
        try:
            sock.setblocking(True)
            self._association(sock, arrival, me)
        except _Interrupted:
            me.result = "evicted" if me.evict and not self.stopping else "interrupted"
            self.counters.add("evicted" if me.evict and not self.stopping else "aborted")
            self._send_quietly(sock, abort_pdu(0x00, 0x00))
        except _Protocol as exc:
            LOG.info("%s: protocol error, aborting: %s", peer, exc)
            me.result = f"protocol error: {exc}"
            self.counters.add("aborted")
            self._send_quietly(sock, abort_pdu(0x02, exc.reason))
        except _Closed:
            self.counters.add("aborted")
        except (OSError, ssl.SSLError, ValueError) as exc:  # timeouts are OSError
            LOG.info("%s: connection dropped: %s", peer, exc)
            self.counters.add("aborted")
            self._send_quietly(sock, abort_pdu(0x02, 0x00))
        except Exception:  # never let one peer take the server down
            LOG.exception("%s: unexpected error", peer)
            self.counters.add("aborted")
            self._send_quietly(sock, abort_pdu(0x02, 0x00))
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            self.active.pop(ident, None)
            if me.calling_ae and self.on_association_end is not None:
                self.on_association_end(me)
            self.share.give_slot()
            with self._threads_lock:
                self._threads.discard(threading.current_thread())

    @staticmethod
    def _send_quietly(sock: socket.socket, data: bytes) -> None:
        with contextlib.suppress(OSError, ValueError):
            sock.settimeout(1.0)
            sock.sendall(data)

    def _association(self, sock: socket.socket, arrival: Arrival, me: Association) -> None:
        cfg = self.config
        try:
            ac, negotiated = negotiate(arrival.rq, cfg.policy)
        except Rejected as exc:
            LOG.info("%s: association rejected: %s", arrival.peer, exc)
            self.counters.add("rejected")
            sock.sendall(reject_pdu(exc.result, exc.source, exc.reason))
            return
        except Exception as exc:  # pynetdicom raises assorted errors on a malformed RQ
            raise _Protocol(f"undecodable A-ASSOCIATE-RQ ({exc})", 0x06) from None
        me.calling_ae, me.called_ae = negotiated.calling_ae, negotiated.called_ae
        self.counters.add("associations")
        if self.on_association_start is not None:
            self.on_association_start(me)
        sock.sendall(ac)

        def interrupt(at_boundary: bool) -> bool:
            if me.evict and at_boundary:
                return True
            if not self._stopping.is_set():
                return False
            return at_boundary or time.monotonic() > self._stop_deadline

        reader = _Reader(sock, interrupt, arrival.rest, cfg.message_timeout)
        self._data_phase(sock, reader, negotiated, me)

    def _data_phase(
        self, sock: socket.socket, reader: _Reader, neg: Negotiated, me: Association
    ) -> None:
        """P-DATA until A-RELEASE-RQ (answered) or A-ABORT; raises on protocol errors."""
        cfg = self.config
        limit = cfg.policy.max_pdu or _MAX_PDU_UNLIMITED
        cmd_buf = bytearray()
        store: Command | None = None
        store_cx = 0
        incoming: Incoming | None = None
        message_bytes = 0  # of the message in progress: each earns time at --min-rate
        try:
            while True:
                idle = store is None and not cmd_buf
                if idle:
                    if me.idle_since is None:
                        me.idle_since = time.monotonic()
                    if self._stopping.is_set() or me.evict:
                        raise _Interrupted()  # stop between messages, never inside one
                else:
                    me.idle_since = None
                if idle:
                    reader.started, message_bytes = None, 0
                    pdu_type, body = reader.pdu(limit, cfg.network_timeout, True)
                else:
                    pdu_type, body = reader.pdu(
                        limit, cfg.dimse_timeout, False, self._deadline(reader, message_bytes)
                    )
                message_bytes += len(body)
                me.idle_since = None
                if pdu_type == PDU_RELEASE_RQ:
                    if not idle:
                        raise _Protocol("A-RELEASE-RQ in the middle of a message", 0x02)
                    self.counters.add("released")
                    me.result = "released"
                    sock.sendall(release_rp_pdu())
                    return
                if pdu_type == PDU_ABORT:
                    self.counters.add("aborted")
                    me.result = "aborted by peer"
                    return
                if pdu_type != PDU_P_DATA_TF:
                    raise _Protocol(f"unexpected PDU type 0x{pdu_type:02X}", 0x02)
                view = memoryview(body)
                pos, end = 0, len(body)
                while pos < end:
                    if pos + 6 > end:
                        raise _Protocol("PDV header runs past its PDU", 0x06)
                    item_len, cx, mch = _PDV.unpack_from(body, pos)
                    if item_len < 2 or pos + 4 + item_len > end:
                        raise _Protocol("PDV length runs past its PDU", 0x06)
                    fragment = view[pos + 6 : pos + 4 + item_len]
                    pos += 4 + item_len
                    if cx not in neg.contexts:
                        raise _Protocol(f"PDV on presentation context {cx}, not accepted", 0x06)
                    if mch & 0x01:  # command fragment
                        if store is not None:
                            raise _Protocol("command while a data set is expected", 0x02)
                        cmd_buf += fragment
                        if mch & 0x02:
                            cmd = self._command(cmd_buf)
                            cmd_buf.clear()
                            if cmd.field == C_ECHO_RQ:
                                self.counters.add("echoes")
                                sock.sendall(pdata_pdu(cx, echo_response(cmd)))
                            elif cmd.field == C_STORE_RQ and cmd.has_dataset:
                                store, store_cx = cmd, cx
                                abstract, ts = neg.contexts[cx]
                                header = file_header(
                                    cmd.sop_class_uid or abstract,
                                    cmd.sop_instance_uid,
                                    ts,
                                    neg.calling_ae,
                                )
                                incoming = Incoming(header, self.share, self.spool, cfg.spill_above)
                            else:
                                raise _Protocol(
                                    f"unsupported DIMSE command 0x{cmd.field:04X}", 0x02
                                )
                    else:  # data set fragment
                        if store is None or incoming is None or cx != store_cx:
                            raise _Protocol("data set fragment without a C-STORE-RQ", 0x02)
                        incoming.add(fragment)
                        me.receiving = incoming.size
                        if incoming.size > cfg.max_instance_bytes:
                            raise _Protocol(f"instance larger than {cfg.max_instance_bytes} bytes")
                        if mch & 0x02:
                            try:
                                self._store(sock, store, store_cx, incoming, neg, me)
                            finally:
                                incoming.close()
                            store, incoming = None, None
        finally:
            me.receiving = 0
            if incoming is not None:
                incoming.close()

    def _deadline(self, reader: _Reader, received: int) -> float:
        """When the message in progress must be complete: ``--message-timeout`` s after
        its first PDU, plus the time its bytes so far need at ``--min-rate``. A sender
        at least that fast is never cut; one trickling a few bytes at a time (each PDU
        inside ``--dimse-timeout``) loses its association instead of holding it."""
        cfg = self.config
        started = reader.started if reader.started is not None else time.monotonic()
        allowance = received / cfg.min_rate if cfg.min_rate > 0 else 0.0
        return started + cfg.message_timeout + allowance

    @staticmethod
    def _command(buf: bytearray) -> Command:
        try:
            return decode_command(buf)
        except ValueError as exc:
            raise _Protocol(f"bad command set: {exc}", 0x06) from None

    def _store(
        self,
        sock: socket.socket,
        cmd: Command,
        cx: int,
        incoming: Incoming,
        neg: Negotiated,
        me: Association,
    ) -> None:
        """File one instance, then answer: the response follows the rename and the records."""
        abstract, ts = neg.contexts[cx]
        info = StoreInfo(
            neg.calling_ae, neg.called_ae, me.peer, cmd.sop_class_uid or abstract,
            cmd.sop_instance_uid, ts,
        )  # fmt: skip
        incoming.finish()
        self.counters.add("bytes", incoming.size)
        if incoming.path is not None:
            self.counters.add("spooled")
        if incoming.error is not None:
            LOG.warning("%s: %s", me.peer, incoming.error)
            status, comment = STATUS_OUT_OF_RESOURCES, incoming.error
        else:
            try:
                status, comment = self.on_store(incoming, info)
            except Exception as exc:  # the handler must not raise; if it does, the sender retries
                LOG.exception("%s: store handler failed", me.peer)
                status, comment = STATUS_OUT_OF_RESOURCES, f"{exc.__class__.__name__}: {exc}"
        self.counters.add("stored" if status == STATUS_SUCCESS else "failed")
        me.instances += 1
        me.received += incoming.size
        me.receiving = 0
        sock.sendall(pdata_pdu(cx, store_response(cmd, status, comment)))
