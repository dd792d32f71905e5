"""``dicom-repack status``: what arrived, from the index: patients -> studies -> series.

Reads the SQLite index every door writes (core/index.py), never the data tree,
so it answers in milliseconds however large the tree is. Each series shows its
instances, bytes, first and last arrival and whether it is complete: DICOM has
no end-of-series message, so a series counts as complete once it has been quiet
for the series-idle period or the association that brought its last instance
has ended; where its instances announce how many there should be
(ImagesInAcquisition, NumberOfSlices), fewer than that is "incomplete".

    dicom-repack status --logdir /log                 # a table
    dicom-repack status --logdir /log --json          # for machines
    dicom-repack status --index /var/lib/x.sqlite --patient-id 1449c1d --date 20130308
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from ..core.index import DEFAULT_NAME, IndexFailure, connect_reader, default_path
from .usage import OneLineParser

if TYPE_CHECKING:
    import sqlite3

__all__ = ["build_parser", "collect", "main"]

#: the series-idle period status assumes when not told (listen's default with a hook)
DEFAULT_IDLE = 10.0

_SERIES_SQL = """
SELECT patient_id,
       max(patient_name)        AS patient_name,
       study_instance_uid,
       max(accession_number)    AS accession_number,
       max(study_date)          AS study_date,
       max(study_description)   AS study_description,
       series_instance_uid,
       max(series_number)       AS series_number,
       max(series_description)  AS series_description,
       max(modality)            AS modality,
       count(*)                 AS instances,
       sum(size)                AS bytes,
       min(filed_at)            AS first,
       max(filed_at)            AS last,
       peer,
       path,
       max(expected)            AS expected
FROM instances
{where}
GROUP BY patient_id, study_instance_uid, series_instance_uid
ORDER BY patient_id, study_instance_uid, CAST(series_number AS INTEGER), first
"""
# (SQLite gives the bare columns peer and path from the row holding max(filed_at).)


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _where(ns: argparse.Namespace) -> tuple[str, list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    if ns.patient_id:
        clauses.append("patient_id = ?")
        params.append(ns.patient_id)
    if ns.study_uid:
        clauses.append("study_instance_uid = ?")
        params.append(ns.study_uid)
    if ns.since is not None:
        clauses.append("filed_at >= ?")
        params.append(ns.since)
    # a filter on a study's own fields keeps whole studies (all their series)
    study: list[str] = []
    if ns.accession:
        study.append("accession_number = ?")
        params.append(ns.accession)
    if ns.date:
        low, dash, high = ns.date.partition("-")
        if not dash:
            high = low  # one day
        study.append("study_date BETWEEN ? AND ?")
        params += [low or "00000000", high or "99999999"]
    if study:
        clauses.append(
            "study_instance_uid IN (SELECT study_instance_uid FROM instances WHERE "
            + " AND ".join(study)
            + ")"
        )
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _ended(conn: Any, peers: set[str]) -> dict[str, list[tuple[float, float | None]]]:
    """peer -> [(started, ended)] of the receiver's associations from those peers."""
    out: dict[str, list[tuple[float, float | None]]] = {}
    peers.discard("")
    if not peers:
        return out
    marks = ",".join("?" * len(peers))
    for row in conn.execute(
        f"SELECT peer, started, ended FROM associations WHERE peer IN ({marks})", sorted(peers)
    ):
        out.setdefault(row[0], []).append((row[1], row[2]))
    return out


def _hosts(conn: Any, where: str, params: list[object]) -> dict[tuple[str, str], dict[str, int]]:
    """(study, series) -> {host: instances filed there}, cluster-wide: every receiver that
    shares this index (``--host-id``); "" for rows filed before hosts were recorded."""
    sql = (
        "SELECT study_instance_uid, series_instance_uid, host, count(*) FROM instances "
        f"{where} GROUP BY study_instance_uid, series_instance_uid, host ORDER BY host"
    )
    out: dict[tuple[str, str], dict[str, int]] = {}
    for study, series, host, n in conn.execute(sql, params):
        out.setdefault((study, series), {})[host or ""] = n
    return out


def _claims(conn: Any) -> dict[str, tuple[int, str]]:
    """series uid -> (instances, state) of the series the receivers have decided and
    notified (``series_claims``, listen/series_watch.py); {} for an index without it."""
    try:
        rows = conn.execute("SELECT series_instance_uid, instances, state FROM series_claims")
        return {uid: (n, state) for uid, n, state in rows if state}
    except Exception:  # sqlite3.Error: an index no receiver with series watching wrote
        return {}


def _state(series: dict[str, Any], now: float, idle: float, assoc_ended: bool) -> str:
    quiet = now - series["_last"] >= idle
    expected = series["expected"]
    if expected and series["instances"] >= expected:
        return "complete"
    if quiet or assoc_ended:
        return "incomplete" if expected else "complete"
    return "receiving"


def collect(index: str, ns: argparse.Namespace, *, now: float | None = None) -> dict[str, object]:
    """The status document (what ``--json`` prints) for the index at ``index``."""
    now = time.time() if now is None else now
    conn = connect_reader(index) if _can_write(index) else read_only(index)
    try:
        where, params = _where(ns)
        rows = conn.execute(_SERIES_SQL.format(where=where), params).fetchall()
        assocs = _ended(conn, {r["peer"] or "" for r in rows})
        hosts = _hosts(conn, where, params)
        claims = _claims(conn)
    finally:
        conn.close()
    patients: dict[str, dict[str, Any]] = {}
    totals = {"patients": 0, "studies": 0, "series": 0, "instances": 0, "bytes": 0}
    for r in rows:
        p = patients.get(r["patient_id"])
        if p is None:
            p = patients[r["patient_id"]] = {
                "PatientID": r["patient_id"],
                "PatientName": r["patient_name"],
                "instances": 0,
                "bytes": 0,
                "studies": {},
            }
        s = p["studies"].get(r["study_instance_uid"])
        if s is None:
            s = p["studies"][r["study_instance_uid"]] = {
                "StudyInstanceUID": r["study_instance_uid"],
                "AccessionNumber": r["accession_number"],
                "StudyDate": r["study_date"],
                "StudyDescription": r["study_description"],
                "instances": 0,
                "bytes": 0,
                "_first": r["first"],
                "_last": r["last"],
                "series": [],
            }
        ended = any(
            started <= r["last"] and end is not None and end >= r["last"]
            for started, end in assocs.get(r["peer"] or "", ())
        )
        series: dict[str, Any] = {
            "SeriesInstanceUID": r["series_instance_uid"],
            "SeriesNumber": r["series_number"],
            "SeriesDescription": r["series_description"],
            "Modality": r["modality"],
            "instances": r["instances"],
            "bytes": r["bytes"],
            "expected": r["expected"],
            "first": _iso(r["first"]),
            "last": _iso(r["last"]),
            "folder": (r["path"] or "").rsplit("/", 1)[0],
            "hosts": hosts.get((r["study_instance_uid"], r["series_instance_uid"]), {}),
            "_last": r["last"],
        }
        series["state"] = _state(series, now, ns.series_idle, ended)
        claimed = claims.get(r["series_instance_uid"])
        if claimed is not None and claimed[0] == r["instances"]:
            series["state"] = claimed[1]  # the receivers decided it (quiet everywhere)
        series["complete"] = series["state"] == "complete"
        del series["_last"]
        s["series"].append(series)
        for node in (p, s):
            node["instances"] += r["instances"]
            node["bytes"] += r["bytes"]
        s["_first"] = min(s["_first"], r["first"])
        s["_last"] = max(s["_last"], r["last"])
        totals["series"] += 1
        totals["instances"] += r["instances"]
        totals["bytes"] += r["bytes"]
    out_patients = []
    for p in patients.values():
        studies = []
        for s in p["studies"].values():
            s["first"], s["last"] = _iso(s.pop("_first")), _iso(s.pop("_last"))
            s["complete"] = all(x["complete"] for x in s["series"])
            studies.append(s)
        p["studies"] = studies
        totals["studies"] += len(studies)
        out_patients.append(p)
    totals["patients"] = len(out_patients)
    return {
        "index": index,
        "generated": _iso(now),
        "series_idle_s": ns.series_idle,
        "totals": totals,
        "patients": out_patients,
    }


def _can_write(index: str) -> bool:
    """Whether status may fold the pending rows into the index (its folder and, if it is
    there, the index itself writable): a read changes nothing it may not change."""
    folder = os.path.dirname(index) or "."
    return os.access(folder, os.W_OK) and (not os.path.lexists(index) or os.access(index, os.W_OK))


def read_only(index: str) -> sqlite3.Connection:
    """The index and its pending rows, read without writing anything: a copy in memory.

    For a log folder status may not write (a read-only mount, another user's): the
    index is opened read-only (``immutable`` where SQLite cannot make its ``-shm``
    there) and copied into memory, and the pending rows the per-instance door left
    (core/index_rows.py) are folded into the copy, as a fold would into the index.
    Links and FIFOs in the index's place are refused as everywhere (``check_files``).
    """
    import sqlite3

    from ..core.index import UPSERT, check_files, setup  # the fold's own statement
    from ..core.index_rows import IndexRefused, parse_pending, pending_path
    from ..core.tree import NotRegularError, open_file

    check_files(index)
    if not os.path.lexists(index):
        raise IndexFailure(f"no index at {index} (nothing filed yet, or --no-index)")
    memory = sqlite3.connect(":memory:")
    try:
        for uri in (f"file:{index}?mode=ro", f"file:{index}?mode=ro&immutable=1"):
            try:
                disk = sqlite3.connect(uri, uri=True, timeout=10.0)
            except sqlite3.Error:
                continue
            try:
                disk.execute("SELECT 1 FROM instances LIMIT 1")
                disk.backup(memory)
                break
            except sqlite3.Error:
                continue
            finally:
                disk.close()
        else:
            raise IndexFailure(f"cannot read the index {index} (read-only)")
        setup(memory)  # an older index's copy gains the columns read below
        pending = pending_path(index)
        folder, base = os.path.split(pending)
        names = sorted(n for n in os.listdir(folder or ".") if n.startswith(base + "."))
        for name in [os.path.basename(pending), *names]:
            try:
                fd, _ = open_file(f"{folder}/{name}", os.O_RDONLY)
            except FileNotFoundError:
                continue
            except NotRegularError as exc:
                raise IndexRefused(f"cannot read the index's pending rows: {exc}") from None
            try:
                data = b""
                while chunk := os.read(fd, 1 << 20):
                    data += chunk
            finally:
                os.close(fd)
            memory.executemany(UPSERT, parse_pending(data))
        memory.row_factory = sqlite3.Row
        return memory
    except OSError as exc:
        memory.close()
        raise IndexFailure(f"cannot read the index {index}: {exc.strerror or exc}") from None
    except BaseException:
        memory.close()
        raise


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


def _rows(doc: dict[str, Any]) -> list[dict[str, str]]:
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


def _several_hosts(doc: dict[str, Any]) -> bool:
    """Whether the shown series were filed by more than one host: only then has the
    table a Hosts column (one receiver's status reads as it always did)."""
    seen = {
        h for p in doc["patients"] for s in p["studies"] for x in s["series"] for h in x["hosts"]
    }
    return len(seen) > 1


_STYLE = {"complete": "green", "receiving": "yellow"}


def _table(doc: dict[str, Any], *, wide: bool = False) -> None:
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
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-l", "--logdir", help=f"pypx log folder holding {DEFAULT_NAME}")
    where.add_argument("--index", metavar="PATH", help="the index file itself")
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


def main(argv: list[str]) -> int:
    ns = build_parser().parse_args(argv)
    index = ns.index or default_path(ns.logdir)
    try:
        doc = collect(index, ns)
    except IndexFailure as exc:
        from ..core.errors import one_line

        sys.stderr.write(f"dicom-repack status: {one_line(str(exc))}\n")
        return 1
    if ns.json:
        import json

        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        _table(doc, wide=ns.wide)
    return 0
