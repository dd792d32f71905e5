"""``dicom-repack status``: what arrived, from the index: patients -> studies -> series.

Reads the SQLite index every door writes (core/index.py), never the data tree,
so it answers in milliseconds however large the tree is. Each series shows its
instances, bytes, first and last arrival and whether it is complete. The query
and the rule of a series' state are core/status_query.py's (the live page asks
it too); this module is the command line and the table.

    dicom-repack status --logdir /log                 # a table
    dicom-repack status --logdir /log --json          # for machines
    dicom-repack status --index /var/lib/x.sqlite --patient-id 1449c1d --date 20130308
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..core.errors import EXIT_OK
from ..core.index import DEFAULT_NAME, IndexFailure, default_path
from ..core.status_query import DEFAULT_IDLE, StatusDoc, StatusFilters, as_json, query
from .plumbing import fail
from .usage import OneLineParser

__all__ = ["build_parser", "filters_of", "main"]


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


#: columns the full table needs to show every cell uncut (below: one block per series)
WIDE = 120


def _console() -> Any:
    """A rich Console at the terminal's width (``COLUMNS`` when set); a pipe gets 160."""
    import os

    from rich.console import Console

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=160)
    return console


def _rows(doc: StatusDoc) -> list[dict[str, str]]:
    """One dict per series, each cell as shown (the same words in both views)."""
    rows = []
    for p in doc["patients"]:
        for s in p["studies"]:
            study = " ".join(x for x in (s["StudyDate"], s["AccessionNumber"]) if x)
            for x in s["series"]:
                count = str(x["instances"])
                if x["expected"]:
                    count += f"/{x['expected']}"
                series = " ".join(
                    str(v) for v in (x["SeriesNumber"], x["Modality"], x["SeriesDescription"]) if v
                )
                rows.append(
                    {
                        "Patient": p["PatientID"],
                        "Study": study,
                        "Series": series or x["SeriesInstanceUID"],
                        "Instances": count,
                        "Bytes": _size(x["bytes"]),
                        "First": _short(x["first"]),
                        "Last": _short(x["last"]),
                        "State": x["state"],
                        "Hosts": _host_counts(x["hosts"]),
                    }
                )
    return rows


def _host_counts(hosts: dict[str, int]) -> str:
    """``a:12 b:13``: the compact per-host cell ("?" for rows without a host)."""
    return " ".join(f"{host or '?'}:{n}" for host, n in hosts.items())


def _several_hosts(doc: StatusDoc) -> bool:
    """Whether the shown series were filed by more than one host: only then has the
    table a Hosts column (one receiver's status reads as it always did)."""
    seen = {
        h for p in doc["patients"] for s in p["studies"] for x in s["series"] for h in x["hosts"]
    }
    return len(seen) > 1


_STYLE = {"complete": "green", "receiving": "yellow"}


def _table(doc: StatusDoc, *, wide: bool = False) -> None:
    """The table when it fits (or ``--wide``); else one block per series, so that at 80
    columns every header and every value is shown whole, never cut."""
    from rich.table import Table
    from rich.text import Text

    t = doc["totals"]
    title = (
        f"{t['patients']} patients, {t['studies']} studies, {t['series']} series, "
        f"{t['instances']} instances, {_size(t['bytes'])}"
    )
    caption = (
        f"index {doc['index']}; complete = quiet {doc['series_idle_s']:g} s or association ended"
    )
    console = _console()
    rows = _rows(doc)
    hosts = _several_hosts(doc)
    if not hosts:
        for row in rows:
            del row["Hosts"]
    if wide or console.width >= WIDE:
        table = Table(title=title, caption=caption)
        cols = ("Patient", "Study", "Series", "Instances", "Bytes", "First", "Last", "State")
        for col in cols + (("Hosts",) if hosts else ()):
            right = col in ("Instances", "Bytes")
            table.add_column(col, justify="right" if right else "left", no_wrap=col != "Series")
        for i, row in enumerate(rows):
            first = i == 0 or (row["Patient"], row["Study"]) != (
                rows[i - 1]["Patient"],
                rows[i - 1]["Study"],
            )
            cells = [Text(v) for v in row.values()]
            cells[7].stylize(_STYLE.get(row["State"], "red"))
            if not first:
                cells[0] = cells[1] = Text("")
            table.add_row(*cells)
        if wide:  # as wide as the table needs: the terminal wraps, nothing is cut
            from rich.console import Console

            need = Console(width=10_000).measure(table).maximum
            console = Console(width=max(console.width, need))
        console.print(table)
        return
    console.print(Text(title, style="italic"), soft_wrap=True)
    last: tuple[str, str] | None = None
    for row in rows:
        if (row["Patient"], row["Study"]) != last:
            last = (row["Patient"], row["Study"])
            head = Text.assemble(("Patient ", "bold"), row["Patient"])
            if row["Study"]:
                head.append_text(Text.assemble(("  Study ", "bold"), row["Study"]))
            console.print(head, soft_wrap=True)
        console.print(Text.assemble("  ", ("Series ", "bold"), row["Series"]), soft_wrap=True)
        line = Text("    ")
        for col in ("Instances", "Bytes", "State"):
            value = Text(row[col], style=_STYLE.get(row[col], "red") if col == "State" else "")
            line.append_text(Text.assemble((f"{col} ", "bold"), value, "  "))
        line.rstrip()
        console.print(line, soft_wrap=True)
        if hosts:
            console.print(Text.assemble("    ", ("Hosts ", "bold"), row["Hosts"]), soft_wrap=True)
        console.print(
            Text.assemble(
                "    ", ("First ", "bold"), row["First"], "  ", ("Last ", "bold"), row["Last"]
            ),
            soft_wrap=True,
        )
    idle = doc["series_idle_s"]
    console.print(Text(f"complete = quiet {idle:g} s or association ended", style="dim"))
    console.print(Text(f"index {doc['index']}", style="dim"), soft_wrap=True)  # whole, to copy


def _short(iso: str | None) -> str:
    """``2026-11-26T08:25:30Z`` -> ``11-26 08:25:30`` (UTC, as in --json)."""
    return (iso or "")[5:19].replace("T", " ")


def _since(text: str) -> float:
    """``--since``: seconds ago (``90s``, ``15m``, ``2h``, ``3d``) or a date/time (UTC)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * units[text[-1]]
    import calendar

    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return float(calendar.timegm(time.strptime(text.rstrip("Z"), fmt)))
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"not a time: {text!r} (try 2h, 3d or 2026-11-26T08:00)")


def _date(text: str) -> str:
    low, _, high = text.partition("-")
    if not all(len(x) in (0, 8) and (not x or x.isdigit()) for x in (low, high)) or not (
        low or high
    ):
        raise argparse.ArgumentTypeError(
            f"not a DICOM date or range: {text!r} (YYYYMMDD[-YYYYMMDD])"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="dicom-repack status",
        description="What arrived: patients, studies and series from the index, with instance "
        "counts, bytes, first/last arrival and completeness.",
    )
    p.add_argument(
        "-l",
        "--logdir",
        help=f"pypx log folder holding {DEFAULT_NAME} (with a PostgreSQL --index: holding "
        "its pending rows, folded in first)",
    )
    p.add_argument(
        "--index",
        metavar="PATH|URL",
        help="the index file itself, or a PostgreSQL index: postgresql://user@host/db",
    )
    p.add_argument("--patient-id", metavar="ID", help="only this PatientID")
    p.add_argument("--study-uid", metavar="UID", help="only this StudyInstanceUID")
    p.add_argument("--accession", metavar="N", help="only studies with this AccessionNumber")
    p.add_argument(
        "--date", type=_date, metavar="YYYYMMDD[-YYYYMMDD]", help="only studies of this StudyDate"
    )
    p.add_argument(
        "--since", type=_since, metavar="WHEN", help="only instances filed since (2h, 3d, ISO UTC)"
    )
    p.add_argument(
        "--series-idle",
        type=float,
        default=DEFAULT_IDLE,
        metavar="S",
        help=f"a series quiet this long counts as complete (default {DEFAULT_IDLE:g})",
    )
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument(
        "--wide",
        action="store_true",
        help="the full table whatever the terminal's width (default: the table when the "
        f"terminal has {WIDE} columns, else one block per series)",
    )
    return p


def filters_of(ns: argparse.Namespace) -> StatusFilters:
    """The command line's filters, typed (the query itself: core/status_query.py)."""
    return StatusFilters(
        patient_id=ns.patient_id,
        study_uid=ns.study_uid,
        accession=ns.accession,
        date=ns.date,
        since=ns.since,
        series_idle=ns.series_idle,
    )


def main(argv: list[str]) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not ns.index and not ns.logdir:
        parser.error("which index? give --logdir or --index")
    index = ns.index or default_path(ns.logdir)
    try:
        doc = query(index, filters_of(ns), logdir=ns.logdir)
    except IndexFailure as exc:
        return fail("status", str(exc))
    if ns.json:
        sys.stdout.write(as_json(doc))
    else:
        _table(doc, wide=ns.wide)
    return EXIT_OK
