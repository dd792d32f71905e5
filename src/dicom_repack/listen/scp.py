"""A Storage SCP: sockets, threads, limits, the data phase of each association.

One thread per connection, blocking reads with timeouts, no polling loop: an
association costs nothing while idle and a few microseconds per PDU while busy.
pynetdicom negotiates (see :mod:`dicom_repack.listen.assoc`); this module then
reads P-DATA-TF PDUs itself (:mod:`dicom_repack.listen.wire`), appends the data
set fragments behind a file meta header it built, and hands the complete Part 10
bytes to ``on_store`` *before* answering the C-STORE: the response a sender sees
means the instance is filed.

Why this shape and not pynetdicom's ``AE.start_server``: see docs/listen.md
(its two polling threads per association and per-PDU object decoding cost more
CPU than the whole repack).
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .assoc import Negotiated, Policy, Rejected, negotiate
from .wire import (
    C_ECHO_RQ,
    C_STORE_RQ,
    PDU_ABORT,
    PDU_ASSOCIATE_RQ,
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

__all__ = ["Counters", "ServerConfig", "StorageServer", "StoreHandler", "StoreInfo"]

LOG = logging.getLogger("dicom_repack.listen")

_HDR = struct.Struct(">BBL")
_PDV = struct.Struct(">LBB")

#: An A-ASSOCIATE-RQ with every storage SOP class proposed in several contexts
#: stays well under this; anything longer is not a real request.
_MAX_ASSOCIATE_RQ = 1 << 20
#: When we announce "unlimited" (max PDU 0), still refuse absurd lengths.
_MAX_PDU_UNLIMITED = 1 << 26
#: How often an idle association wakes to notice a shutdown.
_WAKE = 0.5

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
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 120.0
    shutdown_grace: float = 30.0
    max_instance_bytes: int = 1 << 30
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


#: Files one received instance: Part 10 bytes in, (DIMSE status, error comment) out.
StoreHandler = Callable[[bytearray, StoreInfo], tuple[int, str]]


class Counters:
    """What the server did, for the summary at shutdown; safe to bump from any thread."""

    NAMES = (
        "connections",
        "associations",
        "rejected",
        "aborted",
        "released",
        "echoes",
        "stored",
        "failed",
        "bytes",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self.NAMES, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class _Closed(Exception):
    """The peer closed the connection."""


class _Protocol(Exception):
    """The peer broke the protocol; ``reason`` goes in our A-ABORT (PS3.8 §9.3.8)."""

    def __init__(self, why: str, reason: int = 0x00) -> None:
        super().__init__(why)
        self.reason = reason


class _Interrupted(Exception):
    """Shutdown: this association stops at a message boundary (or the grace ran out)."""


class _Reader:
    """Whole PDUs from a socket, with timeouts that still notice a shutdown.

    Reads in large chunks (several PDUs per system call when they are queued)
    and keeps an offset instead of shifting the buffer after each PDU.
    """

    __slots__ = ("buf", "interrupt", "pos", "sock")

    def __init__(self, sock: socket.socket, interrupt: Callable[[bool], bool]) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.pos = 0
        #: called with "at a message boundary?" when a read waits; True stops the association
        self.interrupt = interrupt

    def pending(self) -> bool:
        """Bytes of a next PDU already received."""
        return len(self.buf) > self.pos

    def _fill(self, need: int, timeout: float, boundary: bool) -> None:
        deadline = time.monotonic() + timeout
        while len(self.buf) - self.pos < need:
            if self.pos:
                del self.buf[: self.pos]
                self.pos = 0
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no data for {timeout:g} s")
            self.sock.settimeout(min(_WAKE, remaining))
            try:
                chunk = self.sock.recv(max(need - len(self.buf), 262144))
            except TimeoutError:
                if self.interrupt(boundary and not self.buf):
                    raise _Interrupted() from None
                continue
            if not chunk:
                raise _Closed()
            self.buf += chunk

    def pdu(self, limit: int, timeout: float, boundary: bool) -> tuple[int, bytes]:
        """The next PDU's type and body (its variable field)."""
        self._fill(6, timeout, boundary)
        pdu_type, _, length = _HDR.unpack_from(self.buf, self.pos)
        if pdu_type not in (1, 2, 3, 4, 5, 6, 7):
            raise _Protocol(f"unrecognised PDU type 0x{pdu_type:02X}", 0x01)
        if length > limit:
            raise _Protocol(f"PDU of {length} bytes exceeds the limit of {limit}", 0x06)
        self._fill(6 + length, timeout, False)
        start = self.pos + 6
        body = bytes(self.buf[start : start + length])
        self.pos = start + length
        return pdu_type, body


class StorageServer:
    """Accepts associations and files each received instance through ``on_store``.

    Life cycle: :meth:`bind` (port 0 picks a free port), :meth:`serve_forever`
    in one thread, :meth:`stop` from any thread or a signal handler. After
    ``stop`` no association is accepted; those in flight finish the message
    they are receiving (for at most ``shutdown_grace`` seconds) and are then
    aborted at a message boundary; ``serve_forever`` returns when all are gone.
    """

    def __init__(self, config: ServerConfig, on_store: StoreHandler) -> None:
        self.config = config
        self.on_store = on_store
        self.counters = Counters()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._stop_deadline = float("inf")
        self._threads: set[threading.Thread] = set()
        self._threads_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(config.max_associations)

    # -- life cycle -------------------------------------------------------------

    def bind(self) -> tuple[str, int]:
        """Open the listening socket; returns the bound (host, port)."""
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.create_server(
            (self.config.host, self.config.port), family=family, backlog=128
        )
        sock.setblocking(False)
        self._listener = sock
        host, port = sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Refuse new associations and let those in flight finish (signal-safe: sets flags only)."""
        if not self._stopping.is_set():
            self._stop_deadline = time.monotonic() + self.config.shutdown_grace
            self._stopping.set()

    def serve_forever(self) -> None:
        """Accept connections until :meth:`stop`; then wait for the associations in flight."""
        if self._listener is None:
            self.bind()
        listener = self._listener
        assert listener is not None
        cap = self.config.max_associations * 2 + 4
        with selectors.DefaultSelector() as sel:
            sel.register(listener, selectors.EVENT_READ)
            while not self._stopping.is_set():
                if not sel.select(timeout=0.2):
                    continue
                try:
                    conn, addr = listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    LOG.warning("accept failed: %s", exc)
                    time.sleep(0.05)
                    continue
                self.counters.add("connections")
                with self._threads_lock:
                    crowded = len(self._threads) >= cap
                if crowded:
                    # Even a polite A-ASSOCIATE-RJ needs a thread to read the request;
                    # past this many connections, closing is the only bounded answer.
                    self.counters.add("rejected")
                    conn.close()
                    continue
                thread = threading.Thread(
                    target=self._connection, args=(conn, addr), name=f"assoc-{addr}", daemon=True
                )
                with self._threads_lock:
                    self._threads.add(thread)
                thread.start()
        listener.close()
        self._join()

    def _join(self) -> None:
        deadline = self._stop_deadline + self.config.dimse_timeout
        while True:
            with self._threads_lock:
                threads = list(self._threads)
            if not threads:
                return
            for thread in threads:
                thread.join(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            if time.monotonic() > deadline:
                LOG.warning("%d association(s) still open at exit", len(self._threads))
                return

    def _interrupt(self, at_boundary: bool) -> bool:
        if not self._stopping.is_set():
            return False
        return at_boundary or time.monotonic() > self._stop_deadline

    # -- one connection ---------------------------------------------------------

    def _connection(self, conn: socket.socket, addr: tuple[object, ...]) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        sock: socket.socket = conn
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.setblocking(True)
            if self.config.ssl_context is not None:
                conn.settimeout(self.config.acse_timeout)
                sock = self.config.ssl_context.wrap_socket(conn, server_side=True)
            self._association(sock, peer)
        except _Interrupted:
            self.counters.add("aborted")
            self._send_quietly(sock, abort_pdu(0x00, 0x00))
        except _Protocol as exc:
            LOG.info("%s: protocol error, aborting: %s", peer, exc)
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
            with self._threads_lock:
                self._threads.discard(threading.current_thread())

    @staticmethod
    def _send_quietly(sock: socket.socket, data: bytes) -> None:
        with contextlib.suppress(OSError, ValueError):
            sock.settimeout(1.0)
            sock.sendall(data)

    def _association(self, sock: socket.socket, peer: str) -> None:
        cfg = self.config
        reader = _Reader(sock, self._interrupt)
        pdu_type, body = reader.pdu(_MAX_ASSOCIATE_RQ, cfg.acse_timeout, True)
        if pdu_type != PDU_ASSOCIATE_RQ:
            raise _Protocol(f"expected A-ASSOCIATE-RQ, got PDU type 0x{pdu_type:02X}", 0x02)
        if self._stopping.is_set():
            self.counters.add("rejected")
            sock.sendall(reject_pdu(0x02, 0x03, 0x02))
            return
        try:
            ac, negotiated = negotiate(_HDR.pack(pdu_type, 0, len(body)) + body, cfg.policy)
        except Rejected as exc:
            LOG.info("%s: association rejected: %s", peer, exc)
            self.counters.add("rejected")
            sock.sendall(reject_pdu(exc.result, exc.source, exc.reason))
            return
        except Exception as exc:  # pynetdicom raises assorted errors on a malformed RQ
            raise _Protocol(f"undecodable A-ASSOCIATE-RQ ({exc})", 0x06) from None
        if not self._slots.acquire(blocking=False):
            LOG.info("%s: association rejected: %d already open", peer, cfg.max_associations)
            self.counters.add("rejected")
            sock.sendall(reject_pdu(0x02, 0x03, 0x02))  # transient, local limit exceeded
            return
        try:
            self.counters.add("associations")
            sock.sendall(ac)
            self._data_phase(sock, reader, negotiated, peer)
        finally:
            self._slots.release()

    def _data_phase(self, sock: socket.socket, reader: _Reader, neg: Negotiated, peer: str) -> None:
        """P-DATA until A-RELEASE-RQ (answered) or A-ABORT; raises on protocol errors."""
        cfg = self.config
        limit = cfg.policy.max_pdu or _MAX_PDU_UNLIMITED
        cmd_buf = bytearray()
        store: Command | None = None
        store_cx = 0
        data: bytearray | None = None
        while True:
            idle = store is None and not cmd_buf
            if idle and self._stopping.is_set():
                raise _Interrupted()  # shutdown: stop between messages, never inside one
            timeout = cfg.network_timeout if idle else cfg.dimse_timeout
            pdu_type, body = reader.pdu(limit, timeout, idle)
            if pdu_type == PDU_RELEASE_RQ:
                if not idle:
                    raise _Protocol("A-RELEASE-RQ in the middle of a message", 0x02)
                self.counters.add("released")
                sock.sendall(release_rp_pdu())
                return
            if pdu_type == PDU_ABORT:
                self.counters.add("aborted")
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
                            data = bytearray(
                                file_header(
                                    cmd.sop_class_uid or abstract,
                                    cmd.sop_instance_uid,
                                    ts,
                                    neg.calling_ae,
                                )
                            )
                        else:
                            raise _Protocol(f"unsupported DIMSE command 0x{cmd.field:04X}", 0x02)
                else:  # data set fragment
                    if store is None or data is None or cx != store_cx:
                        raise _Protocol("data set fragment without a C-STORE-RQ", 0x02)
                    data += fragment
                    if len(data) > cfg.max_instance_bytes:
                        raise _Protocol(f"instance larger than {cfg.max_instance_bytes} bytes")
                    if mch & 0x02:
                        self._store(sock, store, store_cx, data, neg, peer)
                        store, data = None, None

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
        data: bytearray,
        neg: Negotiated,
        peer: str,
    ) -> None:
        """File one instance, then answer: the response follows the rename and the records."""
        abstract, ts = neg.contexts[cx]
        info = StoreInfo(
            neg.calling_ae, neg.called_ae, peer, cmd.sop_class_uid or abstract,
            cmd.sop_instance_uid, ts,
        )  # fmt: skip
        self.counters.add("bytes", len(data))
        try:
            status, comment = self.on_store(data, info)
        except Exception as exc:  # the handler must not raise; if it does, the sender retries
            LOG.exception("%s: store handler failed", peer)
            status, comment = STATUS_OUT_OF_RESOURCES, f"{exc.__class__.__name__}: {exc}"
        self.counters.add("stored" if status == STATUS_SUCCESS else "failed")
        sock.sendall(pdata_pdu(cx, store_response(cmd, status, comment)))
