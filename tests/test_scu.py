"""The pynetdicom sender of the bench and the tests closes its sockets (bench/scu.py).

pynetdicom 3.0.4 leaves a socket to the garbage collector when ``shutdown`` fails
(ENOTCONN after a refused connection or a reset); under ``pytest -W error`` that
is a failure in whichever later test the collector happens to run. Both ways in
are provoked here on 127.0.0.1; when :func:`finish` returns, no socket of ours may
be open (checked on /proc/self/fd, not by waiting for the collector, which a
reference held by a log record or a traceback can postpone past the test), and
none may have been dropped unclosed (a ResourceWarning).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import warnings
from collections.abc import Callable

import pytest

VERIFICATION = "1.2.840.10008.1.1"


def _refusing_port() -> tuple[int, Callable[[], None]]:
    """A port nobody listens on (bound, then closed again); nothing to stop."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])

    def stop() -> None:
        pass

    return port, stop


def _resetting_server() -> tuple[int, Callable[[], None]]:
    """A port whose server reads a little of the request and resets the connection
    (SO_LINGER 0), as a TLS receiver does to a plain-TCP client."""
    server = socket.create_server(("127.0.0.1", 0))
    port = int(server.getsockname()[1])

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(10)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def stop() -> None:
        thread.join(30)
        server.close()

    return port, stop


@pytest.mark.parametrize("peer", ["refused", "reset"])
def test_an_association_that_fails_leaves_no_socket_to_the_collector(peer: str) -> None:
    port, stop = _refusing_port() if peer == "refused" else _resetting_server()
    # imported here, not at collection: importing pynetdicom adds its UIDs to pydicom's
    # UID dictionary, which test_dump compares with the generated table
    from dicom_repack.bench.scu import finish, storage_scu

    before = _open_sockets()
    with warnings.catch_warnings(record=True) as caught:  # a socket dropped unclosed
        warnings.simplefilter("always", ResourceWarning)
        ae = storage_scu("LEAKCHECK")
        ae.acse_timeout = ae.network_timeout = 30
        ae.add_requested_context(VERIFICATION)
        assoc = ae.associate("127.0.0.1", port)
        try:
            assert not assoc.is_established
        finally:
            finish(assoc)
            stop()
    assert _open_sockets() <= before, "a socket of the failed association is still open"
    dropped = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not dropped, dropped


def _open_sockets() -> set[str]:
    """This process's open socket descriptors, as ``fd -> socket:[inode]`` strings."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the descriptor listdir itself used, closed meanwhile
            continue
        if target.startswith("socket:"):
            found.add(f"{fd} -> {target}")
    return found
