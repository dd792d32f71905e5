"""A real PostgreSQL server for the tests: ``initdb`` + ``pg_ctl`` in a temporary folder.

The server listens on a free 127.0.0.1 port (and a Unix socket in its own
folder), trusts local connections and is stopped and removed at the end. The
binaries are found as ``initdb`` on PATH (``/usr/local/bin``), through
``pg_config --bindir``, or under ``/usr/lib/postgresql/*/bin`` (Debian's
``postgresql`` package); without them the tests that need a server are skipped
with one line saying how to get them (CI sets ``DICOM_REPACK_REQUIRE_POSTGRES``:
there they fail instead). ``initdb`` refuses to run as root, so as
root the server runs as ``nobody`` (``runuser``), in a folder given to it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from test_listen_support import free_port

#: what a skipped test says
MISSING = (
    "PostgreSQL's server binaries (initdb, pg_ctl) are not installed (apt-get install postgresql)"
)


def bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        folder = Path(out.stdout.strip())
        if out.returncode == 0 and (folder / "initdb").exists():
            return folder
    for name in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(name, "initdb")):
            return Path(name)
    return None


class PgServer:
    """One server: :meth:`start`, :meth:`stop` (and start again), :meth:`remove`."""

    def __init__(self) -> None:
        folder = bindir()
        if folder is None and os.environ.get("DICOM_REPACK_REQUIRE_POSTGRES"):
            pytest.fail(MISSING + "; CI requires them (DICOM_REPACK_REQUIRE_POSTGRES)")
        if folder is None:
            pytest.skip(MISSING)
        self.bin = folder
        self.root = Path(tempfile.mkdtemp(prefix="dicom-repack-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: the server runs as nobody
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
            self._as = ["runuser", "-u", "nobody", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self._as, str(self.bin / tool), *args], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w",
            "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        if self.running():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def database(self, name: str) -> str:
        """A new, empty database on this server; its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def query(self, url: str, sql: str) -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            return list(conn.execute(sql).fetchall())

    def execute(self, url: str, sql: str) -> None:
        """One statement that returns no rows."""
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql)
