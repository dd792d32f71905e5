"""A pynetdicom sender (SCU) that closes its sockets however an association ends.

Why: pynetdicom 3.0.4's ``AssociationSocket._shutdown_socket`` calls
``shutdown(SHUT_RDWR)`` and ``close()`` in one ``try``. When ``shutdown`` raises
(``ENOTCONN``: the connection was refused, or the peer reset it, e.g. a plain-TCP
client that a TLS server drops, or a receiver stopped mid-association) ``close()``
is skipped and the socket is left to the garbage collector: a ``ResourceWarning``
at some later, unrelated moment (an error under ``pytest -W error``) and a file
descriptor held until then. Every close path of pynetdicom (release, abort,
rejection, refused connection) goes through that method, so :class:`ClosingSocket`
overrides it, and :func:`storage_scu` makes an AE that creates its sockets through
pynetdicom's own factory hook, ``ApplicationEntity._create_socket``.
``tests/test_listen_support.py`` checks the fix against a refused connection, so
a pynetdicom that renames either hook is noticed.

How to call::

    ae = storage_scu("BENCHSCU")
    ae.add_requested_context(sop_class_uid, transfer_syntax_uid)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOM-REPACK")
    try:
        ...  # assoc.send_c_store(path) while assoc.is_established
    finally:
        finish(assoc)  # released (or aborted), its threads joined, its socket closed

Used by the bench's in-process sender (``bench/feed.py``) and by the tests' sender.
"""

from __future__ import annotations

import contextlib
import socket
from ssl import SSLContext

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.transport import AddressInformation, AssociationSocket

__all__ = ["ClosingSocket", "finish", "storage_scu"]


class ClosingSocket(AssociationSocket):
    """pynetdicom's association socket, closed even when ``shutdown`` fails."""

    def _shutdown_socket(self) -> None:
        sock = self.socket
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


class _ClosingAE(AE):
    def _create_socket(
        self,
        assoc: Association,
        address: AddressInformation,
        tls_args: tuple[SSLContext, str] | None,
    ) -> AssociationSocket:
        sock = ClosingSocket(assoc, address=address)
        sock.tls_args = tls_args
        return sock


def storage_scu(ae_title: str = "PYNETDICOM") -> AE:
    """A pynetdicom AE (``ae_title`` as its calling title) whose sockets always close."""
    return _ClosingAE(ae_title=ae_title)


def finish(assoc: Association, *, abort: bool = False, timeout: float = 30.0) -> None:
    """End ``assoc`` and wait for it: A-RELEASE (A-ABORT with ``abort``, or when the
    release leaves it open), then join the association's and its DUL's threads, so
    the socket is closed when this returns, not whenever the threads get to it."""
    if assoc.is_established and not abort:
        assoc.release()
    if assoc.is_established:
        assoc.abort()
    for thread in (assoc, assoc.dul):
        if thread.ident is not None:  # started (a rejected association never runs)
            thread.join(timeout)
