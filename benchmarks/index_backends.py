#!/usr/bin/env python3
"""What the index costs per instance in batch: SQLite, PostgreSQL, and no index (issue 21).

Generates a corpus (``dicom-repack corpus``), then files it, alternating, with
``dicom-repack batch --jobs 1`` (in process: SQLite's direct inserts, PostgreSQL's
group commit by the flusher thread) three ways, each repetition into fresh folders
(and, for PostgreSQL, a fresh database), set aside until the last run:

- ``--no-index``                       the floor;
- the default SQLite index             ``dicom-repack-index.sqlite`` in the log folder;
- ``--index postgresql://...``         a server given by ``--pg-url``, else a throwaway one
                                       started here (tests/postgres.py: initdb + pg_ctl);
- with ``--no-lookup``, PostgreSQL again with the job's "where was this SOP filed" answered
  "nowhere" without a round trip (an experiment: what the rest of the index costs).

Prints, per backend, the median wall and CPU-seconds of the batch process (wait4
rusage: the client's CPU only; the PostgreSQL server's own CPU is not counted, say
so when quoting) and CPU per instance, with the difference to ``--no-index`` in ms
per instance (the issue's goal: PostgreSQL <= +0.1 ms per instance in batch).

    .venv/bin/python benchmarks/index_backends.py --instances 5000 --repeat 3 --workdir /work/scratch
    .venv/bin/python benchmarks/index_backends.py --smoke      # untimed check that it runs
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import add_keep, compile_package, dicom_files, keep_or_remove  # noqa: E402

EXE = str(Path(sys.executable).parent / "dicom-repack")


def _children_cpu() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime, ru.ru_stime


#: ``--no-lookup``'s contestant: the console script's ``run``, with the PostgreSQL index's
#: "where was this SOP filed" answering "nowhere" without asking the server (an
#: experiment: what the index costs without that round trip; never a way to run)
NO_LOOKUP = (
    "from dicom_repack.core import index_pg; "
    "index_pg.PgIndex._folded = lambda self, sop: None; "
    "from dicom_repack.cli import run; run()"
)


def run_batch(
    corpus: Path, out: Path, index: list[str], *, no_lookup: bool = False
) -> tuple[float, float, float]:
    """(wall, user CPU-seconds, system CPU-seconds) of one ``batch --jobs 1`` over
    ``corpus`` into ``out``."""
    start = [sys.executable, "-c", NO_LOOKUP] if no_lookup else [EXE]
    argv = [*start, "batch", str(corpus), "-d", str(out / "data"), "-l", str(out / "log")]
    argv += ["--jobs", "1", "--no-progress", "--parents", *index]
    user, system = _children_cpu()
    wall = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - wall
    user_after, system_after = _children_cpu()
    if done.returncode != 0:
        raise SystemExit(f"batch failed ({done.returncode}): {done.stderr.strip()}")
    return wall, user_after - user, system_after - system


@contextmanager
def throwaway_server() -> Iterator[str]:
    """A PostgreSQL server for the run (tests/postgres.py), stopped and removed after;
    its URL."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import pytest

    from postgres import PgServer

    try:
        server = PgServer()
    except pytest.skip.Exception as exc:
        raise SystemExit(f"no PostgreSQL server: {exc.msg}; or give --pg-url") from None
    try:
        server.start()
        yield server.url
    finally:
        server.remove()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pg-url", help="an existing server's database (default: a throwaway one)")
    ap.add_argument("--workdir", help="where corpus and outputs go (default: the temporary folder;"
                    " never tmpfs: it is RAM)")  # fmt: skip
    ap.add_argument("--no-lookup", action="store_true",
                    help="a fourth contestant: PostgreSQL with the job's lookup of where a SOP "
                         "was filed answered 'nowhere' (what the rest of the index costs)")  # fmt: skip
    add_keep(ap)
    ap.add_argument("--smoke", action="store_true", help="20 instances, once: does it run?")
    args = ap.parse_args()
    if args.smoke:
        args.instances, args.repeat = 20, 1
    compile_package()
    work = Path(tempfile.mkdtemp(prefix="index-backends-", dir=args.workdir))
    try:
        corpus = work / "corpus"
        subprocess.run([EXE, "corpus", str(corpus), "--instances", str(args.instances), "-q"],
                       check=True)  # fmt: skip
        n = len(dicom_files(corpus))
        with _server(args.pg_url) as database:
            results: dict[str, list[tuple[float, float, float]]] = {}
            for rep in range(args.repeat):
                names = ["no index", "SQLite", "PostgreSQL"]
                names += ["PG no lookup"] if args.no_lookup else []
                for name in names:
                    out = work / f"{rep}-{name.replace(' ', '-')}"
                    index = {"no index": ["--no-index"], "SQLite": []}.get(name)
                    if index is None:
                        index = ["--index", database(f"bench{rep}{name[:2].strip()}")]
                    done = run_batch(corpus, out, index, no_lookup=name == "PG no lookup")
                    results.setdefault(name, []).append(done)
                    # set aside, not deleted: ext4 creates files 10-30x slower for minutes
                    # after a large deletion (the work folder goes after the last run)
        floor = statistics.median(u + s for _, u, s in results["no index"]) / n
        print(f"batch --jobs 1, {n} instances, median of {args.repeat} (client CPU only)")
        print(f"{'index':<12} {'wall s':>8} {'user s':>8} {'sys s':>8} {'CPU ms/inst':>12} "
              f"{'vs none':>10}")  # fmt: skip
        for name, runs in results.items():
            wall = statistics.median(w for w, _, _ in runs)
            cpu = statistics.median(u + s for _, u, s in runs)
            user = statistics.median(u for _, u, _ in runs)
            system = statistics.median(s for _, _, s in runs)
            per = cpu / n
            print(f"{name:<12} {wall:8.2f} {user:8.2f} {system:8.2f} {per * 1e3:12.3f} "
                  f"{(per - floor) * 1e3:+9.3f}ms")  # fmt: skip
    finally:
        keep_or_remove(work, args.keep)
    return 0


@contextmanager
def _server(url: str | None) -> Iterator[Callable[[str], str]]:
    """A function: database name -> URL of a fresh database on the server used."""
    import psycopg

    def fresh(base: str) -> Callable[[str], str]:
        def make(name: str) -> str:
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
                conn.execute(f'CREATE DATABASE "{name}"')
            return base.rsplit("/", 1)[0] + "/" + name

        return make

    if url:
        yield fresh(url)
        return
    with throwaway_server() as url_of_server:
        yield fresh(url_of_server)


if __name__ == "__main__":
    sys.exit(main())
