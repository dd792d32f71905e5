"""Fixtures only; the helpers they use (and tests import) are in tests/helpers.py.

* ``generated`` / ``mr`` / ``mr_seed`` -- generated MR-like corpora (no download, any
  machine): what every test that is not about parity uses.
* ``corpora`` / ``sag`` -- the two shared corpora from ../shared/data, for parity
  tests only; they skip, loudly, where the tarballs are absent.
* ``pg_session`` / ``postgres_url`` / ``pg_server`` -- a real PostgreSQL server
  (tests/postgres.py: initdb + pg_ctl on a free 127.0.0.1 port), a fresh database per
  test, or a server of the test's own; skipped, saying how to get one, without them.
* ``_ctrl_c_reaches_children``, ``_children_report_leaks`` (automatic) -- see their
  docstrings.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import GENERATED_CORPORA, SHARED_CORPORA, dicom_files, unpack_shared, write_corpus
from postgres import PgServer


@pytest.fixture(scope="session", autouse=True)
def _ctrl_c_reaches_children() -> Iterator[None]:
    """Tests Ctrl-C (SIGINT) the programs they start and expect exit 130. A shell starts
    a background job (``pytest ... &``, ``nohup``, some CI runners) with SIGINT ignored,
    every child inherits that, and those programs then finish instead: the tests would
    fail for the way the suite was started. With a handler in this process, its children
    start with SIGINT at its default (exec resets caught signals), as from a terminal."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture(scope="session", autouse=True)
def _children_report_leaks() -> Iterator[None]:
    """The programs the tests start (``dicom-repack`` and its workers) run with
    ``PYTHONWARNINGS=error::ResourceWarning``: a file or socket of ours left to the
    garbage collector prints "Exception ignored ... ResourceWarning" on their stderr,
    which the tests' one-line and no-Traceback checks then see. pyproject's
    ``filterwarnings = ["error"]`` covers only this process."""
    before = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [before, "error::ResourceWarning"]))
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONWARNINGS"]
        else:
            os.environ["PYTHONWARNINGS"] = before


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every generated corpus of helpers.GENERATED_CORPORA, written once per session
    (read-only use: copy before modifying)."""
    base = tmp_path_factory.mktemp("generated")
    out: dict[str, Path] = {}
    for name in GENERATED_CORPORA:
        write_corpus(name, base / name)
        out[name] = base / name
    return out


@pytest.fixture()
def mr(generated: dict[str, Path]) -> Path:
    """The explicit-VR generated corpus: a 12-instance series, a 3-instance localizer,
    then a second patient's 5-instance series (file names sort in that order)."""
    return generated["mr-explicit"]


@pytest.fixture()
def mr_seed(mr: Path) -> Path:
    """One instance to copy and modify."""
    return dicom_files(mr)[0]


@pytest.fixture(scope="session")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both shared corpora unpacked (parity tests only; read-only use)."""
    base = tmp_path_factory.mktemp("corpora")
    return {name: unpack_shared(name, base) for name in SHARED_CORPORA}


@pytest.fixture()
def sag(corpora: dict[str, Path]) -> Path:
    """The shared SAG-anon corpus (parity tests only; others use ``mr``)."""
    return corpora["SAG-anon"]


@pytest.fixture(scope="session")
def pg_session() -> Iterator[PgServer]:
    """One real PostgreSQL server for the session (tests/postgres.py), or skip saying how
    to get one; each test takes a database of its own (``postgres_url``)."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[dev]')")
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture()
def postgres_url(pg_session: PgServer, request: pytest.FixtureRequest) -> str:
    """The URL of a new, empty database on the session's server."""
    name = "t" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:16]
    return pg_session.database(name)


@pytest.fixture()
def pg_server() -> Iterator[PgServer]:
    """A server of the test's own, started (one it may stop and start again)."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[dev]')")
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()
