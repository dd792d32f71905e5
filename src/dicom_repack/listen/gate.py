"""The gate: new connections wait here, threadless, until they have asked to associate.

A connection costs a thread only once it has sent a complete A-ASSOCIATE-RQ.
Before that it is a socket in one selector, a small buffer and a deadline (the
ARTIM timer of PS3.8 §9.1.5, our ``--acse-timeout``): idle sockets, half-sent
requests and stalled TLS handshakes cost a file descriptor each, never an
association slot or a thread, so they cannot keep a real sender out. If more
than ``max_pending`` connections wait at once, the oldest is closed: a flood
of idle sockets pushes out its own oldest members, while a real sender, which
sends its request as soon as it connects, passes through within milliseconds.

dcmtk's storescp (``-ta``, 30 s ARTIM by default) and pynetdicom (``acse_timeout``)
use the same timer, but hold a process or a thread per waiting connection.

Runs in the thread that calls :meth:`Gate.run`; hands each complete request to
``admit`` (which must not block) and polls ``tick`` on every turn.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .wire import reject_pdu

__all__ = ["FREE_REQUEST_BYTES", "MAX_ASSOCIATE_RQ", "Arrival", "Gate", "raise_fd_limit"]

LOG = logging.getLogger("dicom_repack.listen")

_HDR = struct.Struct(">BBL")
#: A real A-ASSOCIATE-RQ is a few KiB (128 presentation contexts, the most a
#: requestor may propose, each with a dozen transfer syntaxes, stay under 64 KiB);
#: a longer one is refused as soon as its header announces it.
MAX_ASSOCIATE_RQ = 256 << 10
#: Bytes of a request a waiting connection may hold outside the memory budget;
#: past this, the buffer is reserved from ``--memory-budget`` like a data set's.
FREE_REQUEST_BYTES = 16 << 10
#: Budget reserved at a time for a request that outgrows the free part.
_REQUEST_GRAIN = 64 << 10
#: Connections taken per wake-up of the listening socket (a burst is drained).
_ACCEPT_BURST = 64
#: How long a worker leaves new connections to a less loaded one before looking again.
_DEFER = 0.005
#: The selector's longest sleep (stop requests and ``tick`` are noticed this fast).
_TURN = 0.2


@dataclass(slots=True)
class Arrival:
    """A connection that sent a complete A-ASSOCIATE-RQ (handed to ``admit``)."""

    sock: socket.socket
    peer: str
    rq: bytes
    #: bytes received after the request (a pipelining peer); the reader starts with them
    rest: bytes


@dataclass(slots=True)
class _Waiting:
    sock: socket.socket
    peer: str
    deadline: float
    fd: int
    buf: bytearray = field(default_factory=bytearray)
    #: bytes of the memory budget this connection's buffer holds
    reserved: int = 0
    handshaking: bool = False
    gone: bool = False


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit; returns the limit now in force.

    Each waiting connection holds a descriptor; the soft limit is often 1024.
    """
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        return int(soft if soft != resource.RLIM_INFINITY else 1 << 20)
    except (ImportError, OSError, ValueError):
        return 1024


class Gate:
    """Accepts connections and waits, in one selector, for their association requests.

    Counters bumped through ``count(name)``: ``connections`` for every accepted
    socket, ``dropped`` for each closed before it associated (ARTIM timeout,
    pushed out as the oldest, closed by the peer, or answered with an A-ABORT: a
    first PDU that is not a request, or too long), ``rejected`` for each answered with A-ASSOCIATE-RJ (its request outgrew the
    memory budget: ``reserve`` refused).

    Memory: each waiting connection holds at most :data:`MAX_ASSOCIATE_RQ` bytes,
    and what it holds past :data:`FREE_REQUEST_BYTES` is taken from the shared
    budget through ``reserve``/``release`` (so ``max_pending`` requests cannot
    take more than ``max_pending`` x 16 KiB outside ``--memory-budget``).
    """

    def __init__(
        self,
        listener: socket.socket,
        *,
        admit: Callable[[Arrival], None],
        count: Callable[[str], None],
        stopping: Callable[[], bool],
        tick: Callable[[], None] = lambda: None,
        may_accept: Callable[[], bool] = lambda: True,
        accept_burst: int = _ACCEPT_BURST,
        artim: float = 10.0,
        max_pending: int = 1024,
        ssl_context: ssl.SSLContext | None = None,
        reserve: Callable[[int], bool] = lambda n: True,
        release: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.listener = listener
        self.reserve = reserve
        self.release = release
        self.admit = admit
        self.count = count
        self.stopping = stopping
        self.tick = tick
        self.may_accept = may_accept
        self.accept_burst = accept_burst
        #: while another worker should take new connections: monotonic time to look again
        self._deferred_until = 0.0
        self.artim = artim
        self.max_pending = max(1, max_pending)
        self.ssl_context = ssl_context
        self._sel = selectors.DefaultSelector()
        #: fd -> waiting connection, oldest first (deadlines grow in insertion order)
        self._waiting: dict[int, _Waiting] = {}

    @property
    def pending(self) -> int:
        """Connections accepted that have not yet sent a complete request."""
        return len(self._waiting)

    def run(self) -> None:
        """Serve until ``stopping()``; then close the listener and every waiting connection."""
        self.listener.setblocking(False)
        self._sel.register(self.listener, selectors.EVENT_READ, None)
        try:
            while not self.stopping():
                now = time.monotonic()
                timeout = _TURN
                if self._waiting:
                    first = next(iter(self._waiting.values()))
                    timeout = max(0.0, min(_TURN, first.deadline - now))
                if self._deferred_until:
                    if now >= self._deferred_until:
                        self._deferred_until = 0.0
                        self._sel.register(self.listener, selectors.EVENT_READ, None)
                    else:
                        timeout = min(timeout, self._deferred_until - now)
                for key, _ in self._sel.select(timeout):
                    if key.data is None:
                        if self.may_accept():
                            self._accept()
                        else:  # let a less loaded worker take it; look again shortly
                            self._sel.unregister(self.listener)
                            self._deferred_until = time.monotonic() + _DEFER
                    else:
                        self._advance(key.data)
                self._expire()
                self.tick()
        finally:
            if not self._deferred_until:
                self._sel.unregister(self.listener)
            self.listener.close()
            for w in list(self._waiting.values()):
                self._drop(w, "shutdown")
            self._sel.close()

    # -- steps ------------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(self.accept_burst):
            try:
                conn, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: keep serving those we have
                LOG.warning("accept failed: %s", exc)
                if self._waiting:
                    self._drop(next(iter(self._waiting.values())), "descriptors exhausted")
                return
            self.count("connections")
            peer = f"{addr[0]}:{addr[1]}"
            if len(self._waiting) >= self.max_pending:
                self._drop(next(iter(self._waiting.values())), "oldest of too many waiting")
            sock: socket.socket = conn
            try:
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.ssl_context is not None:
                    sock = self.ssl_context.wrap_socket(
                        conn, server_side=True, do_handshake_on_connect=False
                    )
            except (OSError, ValueError) as exc:
                LOG.info("%s: connection dropped: %s", peer, exc)
                self.count("dropped")
                conn.close()
                continue
            w = _Waiting(sock, peer, time.monotonic() + self.artim, sock.fileno())
            w.handshaking = self.ssl_context is not None
            self._waiting[w.fd] = w
            self._sel.register(sock, selectors.EVENT_READ, w)

    def _advance(self, w: _Waiting) -> None:
        if w.gone:  # closed earlier in this turn (pushed out by a newer connection)
            return
        if w.handshaking:
            try:
                w.sock.do_handshake()  # type: ignore[attr-defined]
            except ssl.SSLWantReadError:
                self._sel.modify(w.sock, selectors.EVENT_READ, w)
                return
            except ssl.SSLWantWriteError:
                self._sel.modify(w.sock, selectors.EVENT_WRITE, w)
                return
            except (OSError, ValueError) as exc:
                self._drop(w, f"TLS handshake failed: {exc}")
                return
            w.handshaking = False
            self._sel.modify(w.sock, selectors.EVENT_READ, w)
        while True:  # drain: a TLS socket may hold decrypted bytes the selector cannot see
            try:
                chunk = w.sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                break
            except ssl.SSLWantWriteError:
                self._sel.modify(w.sock, selectors.EVENT_WRITE, w)
                return
            except (OSError, ValueError) as exc:
                self._drop(w, f"connection dropped: {exc}")
                return
            if not chunk:
                self._drop(w, "closed by the peer before associating")
                return
            w.buf += chunk
            if not self._check(w) or not self._hold(w):
                return
        self._check(w, complete=True)

    def _check(self, w: _Waiting, *, complete: bool = False) -> bool:
        """Validate what arrived; hand a complete request on. False once ``w`` is gone."""
        buf = w.buf
        if buf and buf[0] != 0x01:
            reason = 0x02 if 0x02 <= buf[0] <= 0x07 else 0x01  # unexpected / unrecognised PDU
            self._abort(w, reason, f"first PDU type 0x{buf[0]:02X} is not an A-ASSOCIATE-RQ")
            return False
        if len(buf) < 6:
            return True
        length = _HDR.unpack_from(buf, 0)[2]
        if length > MAX_ASSOCIATE_RQ:
            self._abort(w, 0x06, f"association request of {length} bytes")
            return False
        if len(buf) < 6 + length:
            return True
        if not complete:
            return True  # finish draining first: ``rest`` must hold all that was read
        del self._waiting[w.fd]
        w.gone = True
        self._sel.unregister(w.sock)
        self._unhold(w)  # from here the association's slot accounts for it
        self.admit(Arrival(w.sock, w.peer, bytes(buf[: 6 + length]), bytes(buf[6 + length :])))
        return False

    def _hold(self, w: _Waiting) -> bool:
        """Take budget for the part of ``w``'s buffer past the free bytes; reject the
        request when the budget is spent. False once ``w`` is gone."""
        excess = len(w.buf) - FREE_REQUEST_BYTES
        if excess <= w.reserved:
            return True
        need = excess - w.reserved
        step = max(need, _REQUEST_GRAIN)
        if self.reserve(step) or (step > need and self.reserve(step := need)):
            w.reserved += step
            return True
        LOG.info("%s: association rejected: memory budget spent (waiting requests)", w.peer)
        self.count("rejected")
        with contextlib.suppress(OSError, ValueError):  # transient, local limit exceeded
            w.sock.send(reject_pdu(0x02, 0x03, 0x02))
        self._close(w)
        return False

    def _unhold(self, w: _Waiting) -> None:
        if w.reserved:
            self.release(w.reserved)
            w.reserved = 0

    def _expire(self) -> None:
        now = time.monotonic()
        while self._waiting:
            first = next(iter(self._waiting.values()))
            if first.deadline > now:
                return
            self._drop(first, f"no association request within {self.artim:g} s")

    def _abort(self, w: _Waiting, reason: int, why: str) -> None:
        """Answer a connection that sent something else than a request with A-ABORT; it
        never associated, so it counts as dropped before associating, not as an aborted
        association (one stray byte is not an association)."""
        LOG.info("%s: protocol error, aborting: %s", w.peer, why)
        self.count("dropped")
        with contextlib.suppress(OSError, ValueError):
            w.sock.send(bytes((0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, reason)))
        self._close(w)

    def _drop(self, w: _Waiting, why: str) -> None:
        LOG.info("%s: %s", w.peer, why)
        self.count("dropped")
        self._close(w)

    def _close(self, w: _Waiting) -> None:
        w.gone = True
        self._unhold(w)
        self._waiting.pop(w.fd, None)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(w.sock)
        with contextlib.suppress(OSError):
            w.sock.close()
