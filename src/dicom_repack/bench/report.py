"""Results: medians and ratios, results.json/.csv, the terminal table, report.html.

Honesty rules the report follows (and states): all contestants ran on the same corpus,
on the same machine, in one bench run, alternated (ABC ABC, not AAA BBB); figures are
medians over repetitions; a run that lost or damaged an instance is *failed* and gets
no ratio; the seed experiment's figures are shown as published, in their own table,
never mixed with what was measured here; the extrapolation to 76 GB is labelled as a
linear extrapolation by bytes.

``report.html`` is self-contained: charts are inline base64 PNGs (matplotlib, Agg),
styles are inline, and nothing is fetched when it is viewed.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import statistics
from pathlib import Path
from typing import Any

__all__ = [
    "SEED_BYTES",
    "SEED_PUBLISHED",
    "print_table",
    "summarize",
    "write_csv",
    "write_html",
    "write_json",
]

#: The seed experiment's corpus size (76 GB of MR phantoms, decimal units).
SEED_BYTES = 76e9

#: The seed experiment's published figures, quoted as published (None: not published).
SEED_PUBLISHED: list[dict[str, Any]] = [
    {
        "contestant": "px-repack",
        "wall": "4.8 h",
        "wall_s": 4.8 * 3600,
        "energy": "1.74 kWh",
        "energy_kwh": 1.74,
        "co2": "0.6 kg",
        "co2_kg": 0.6,
    },
    {
        "contestant": "rx-repack",
        "wall": "9 min",
        "wall_s": 9 * 60,
        "energy": "4 Wh",
        "energy_kwh": 0.004,
        "co2": "not published",
        "co2_kg": None,
    },
]

#: The per-run figures, in the order of results.csv's columns.
RUN_FIELDS = [
    "contestant",
    "kind",
    "layout",
    "repetition",
    "order",
    "status",
    "correct",
    "interrupted",
    "exit_code",
    "wall_s",
    "cpu_s",
    "user_s",
    "sys_s",
    "driver_cpu_s",
    "peak_tree_rss_bytes",
    "max_process_rss_bytes",
    "instances",
    "bytes",
    "instances_per_s",
    "mb_per_s",
    "energy_kwh",
    "cpu_energy_kwh",
    "ram_energy_kwh",
    "co2_kg",
    "missing",
    "damaged",
    "records",
    "records_unparseable",
    "image_records_missing",
    "problems",
]

_METRICS = [
    "wall_s",
    "cpu_s",
    "peak_tree_rss_bytes",
    "max_process_rss_bytes",
    "instances_per_s",
    "mb_per_s",
    "energy_kwh",
    "co2_kg",
]


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize(
    runs: list[dict[str, Any]], contestants: list[dict[str, Any]], corpus_bytes: int
) -> dict[str, Any]:
    """Per contestant: medians over its finished runs, status, ratios against the baseline
    (px-repack when it ran correctly, else the slowest correct contestant), and the
    linear extrapolation to the seed's 76 GB."""
    rows: list[dict[str, Any]] = []
    for c in contestants:
        if not c.get("available"):
            continue
        mine = [r for r in runs if r["contestant"] == c["name"]]
        done = [r for r in mine if not r["interrupted"]]
        row: dict[str, Any] = {
            "contestant": c["name"],
            "kind": c["kind"],
            "runs": len(done),
            "runs_interrupted": len(mine) - len(done),
        }
        if not mine:
            row["status"] = "not run"
        elif any(r["status"] == "failed" for r in mine):
            row["status"] = "failed"
        elif not done:
            row["status"] = "incomplete"
        else:
            row["status"] = "ok" if len(done) == len(mine) else "incomplete"
        for m in _METRICS:
            row[m] = _median([r.get(m) for r in done])
        rows.append(row)

    correct = [r for r in rows if r["status"] in ("ok", "incomplete") and r["wall_s"] is not None]
    baseline = next((r for r in correct if r["contestant"] == "px-repack"), None)
    basis = "px-repack"
    if baseline is None and correct:
        baseline = max(correct, key=lambda r: r["wall_s"])
        basis = f"slowest contestant ({baseline['contestant']}); px-repack did not run"
    factor = SEED_BYTES / corpus_bytes if corpus_bytes else None
    for r in rows:
        ok = r in correct and baseline is not None
        for m, key in (
            ("wall_s", "speedup"),
            ("energy_kwh", "energy_ratio"),
            ("cpu_s", "cpu_ratio"),
        ):
            b, v = (baseline or {}).get(m), r.get(m)
            r[key] = (b / v) if ok and b and v else None
        r["extrapolated_76GB"] = (
            {
                "wall_s": r["wall_s"] * factor if r["wall_s"] is not None else None,
                "energy_kwh": r["energy_kwh"] * factor if r["energy_kwh"] is not None else None,
                "co2_kg": r["co2_kg"] * factor if r["co2_kg"] is not None else None,
                "cpu_s": r["cpu_s"] * factor if r["cpu_s"] is not None else None,
            }
            if factor and r["status"] != "not run"
            else None
        )
    return {
        "baseline": baseline["contestant"] if baseline else None,
        "baseline_basis": basis if baseline else "no correct contestant",
        "extrapolation_factor": factor,
        "contestants": rows,
    }


def write_json(path: Path, results: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_csv(path: Path, results: dict[str, Any]) -> None:
    """One row per contestant and repetition; machine, corpus and versions on every row,
    so the file stands alone in a spreadsheet."""
    machine = results.get("machine", {})
    corpus = results.get("corpus", {})
    extra = {
        "machine_cpu": machine.get("cpu_model"),
        "machine_cores": machine.get("logical_cpus"),
        "machine_memory_bytes": machine.get("memory_bytes"),
        "machine_os": machine.get("platform"),
        "filesystem": machine.get("workdir_filesystem"),
        "corpus_path": corpus.get("path"),
        "corpus_instances": corpus.get("instances"),
        "corpus_bytes": corpus.get("bytes"),
        "concurrency": results.get("settings", {}).get("concurrency"),
        "cache": results.get("settings", {}).get("cache"),
        "energy_method": results.get("energy_method", {}).get("summary"),
        "country": results.get("settings", {}).get("country"),
        "dicom_repack_version": results.get("versions", {}).get("dicom-repack"),
        "contestant_version": None,
        "complete": results.get("complete"),
    }
    versions = {c["name"]: c.get("version") for c in results.get("contestants", [])}
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*RUN_FIELDS, *extra])
        writer.writeheader()
        for run in results.get("runs", []):
            row = {k: run.get(k) for k in RUN_FIELDS}
            row["problems"] = "; ".join(run.get("problems") or [])
            writer.writerow({**row, **extra, "contestant_version": versions.get(run["contestant"])})


# -- formatting -----------------------------------------------------------------------


def fmt_duration(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.2f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "—"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= scale:
            return f"{b / scale:.1f} {unit}"
    return f"{b:.0f} B"


def fmt_energy(kwh: float | None) -> str:
    if kwh is None:
        return "—"
    if kwh >= 1:
        return f"{kwh:.2f} kWh"
    if kwh >= 1e-3:
        return f"{kwh * 1e3:.2f} Wh"
    return f"{kwh * 1e6:.1f} mWh"


def fmt_mass(kg: float | None) -> str:
    if kg is None:
        return "—"
    if kg >= 1:
        return f"{kg:.2f} kg"
    if kg >= 1e-3:
        return f"{kg * 1e3:.2f} g"
    return f"{kg * 1e6:.1f} mg"


def fmt_ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}×" if x < 100 else f"{x:.0f}×"


def print_table(results: dict[str, Any], console: Any = None) -> None:
    """The terminal summary (rich): medians per contestant and ratios against the baseline."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    summary = results["summary"]
    table = Table(
        title=f"dicom-repack bench: medians of {results['settings']['repeat']} run(s); "
        f"speed and energy as ratios to {summary['baseline'] or '—'} (higher is better)",
        caption=_caption(results),
    )
    for col, just in (
        ("contestant", "left"),
        ("status", "left"),
        ("wall", "right"),
        ("speed", "right"),
        ("CPU", "right"),
        ("peak RSS", "right"),
        ("inst/s", "right"),
        ("energy", "right"),
        ("energy", "right"),
        ("CO2", "right"),
    ):
        table.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    for r in summary["contestants"]:
        status = {"ok": "[green]ok[/]", "failed": "[bold red]FAILED[/]"}.get(
            r["status"], f"[yellow]{r['status']}[/]"
        )
        table.add_row(
            r["contestant"],
            status,
            fmt_duration(r["wall_s"]),
            fmt_ratio(r["speedup"]),
            fmt_duration(r["cpu_s"]),
            fmt_bytes(r["peak_tree_rss_bytes"]),
            f"{r['instances_per_s']:.0f}" if r["instances_per_s"] else "—",
            fmt_energy(r["energy_kwh"]),
            fmt_ratio(r["energy_ratio"]),
            fmt_mass(r["co2_kg"]),
        )
    console.print(table)
    for c in results["contestants"]:
        if not c["available"]:
            console.print(f"[dim]skipped {c['name']}: {c['skip_reason']}[/]")
    for run in results["runs"]:
        if run["status"] == "failed":
            console.print(
                f"[red]{run['contestant']} (run {run['repetition']}) FAILED: "
                f"{'; '.join(run['problems'])}[/]"
            )
    method = results.get("energy_method") or {}
    if method.get("hint"):
        console.print(f"[yellow]energy: {method['hint']}[/]")
    if not results.get("complete"):
        console.print("[yellow]INCOMPLETE: interrupted; figures are from the runs that finished[/]")


def _caption(results: dict[str, Any]) -> str:
    corpus = results["corpus"]
    method = results.get("energy_method") or {}
    return (
        f"corpus: {corpus['instances']} instances, {fmt_bytes(corpus['bytes'])}; "
        f"{results['settings']['cache']}; energy {method.get('summary', 'not measured')}"
    )


# -- HTML -------------------------------------------------------------------------------


def _charts(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(title, base64 PNG) per figure: bars are medians, dots the single repetitions,
    failed contestants drawn hatched in red with FAILED over the bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["summary"]["contestants"] if r["status"] != "not run"]
    runs = results["runs"]
    specs = [
        ("Wall time (s)", "wall_s", 1.0),
        ("Energy (Wh)", "energy_kwh", 1e3),
        ("CO2 (g)", "co2_kg", 1e3),
        ("CPU time, whole process tree (s)", "cpu_s", 1.0),
        ("Peak memory, sum of RSS of the tree (MB)", "peak_tree_rss_bytes", 1e-6),
    ]
    out: list[tuple[str, str]] = []
    names = [r["contestant"] for r in rows]
    for title, key, scale in specs:
        fig, ax = plt.subplots(figsize=(7.5, 3.2), dpi=100)
        values = [(r[key] or 0) * scale for r in rows]
        colors = ["#c0392b" if r["status"] == "failed" else "#2e86c1" for r in rows]
        bars = ax.bar(names, values, color=colors)
        for bar, r in zip(bars, rows, strict=True):
            if r["status"] == "failed":
                bar.set_hatch("//")
                ax.annotate(
                    "FAILED",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    color="#c0392b",
                    fontsize=8,
                    fontweight="bold",
                )
        for i, name in enumerate(names):
            pts = [
                run[key] * scale
                for run in runs
                if run["contestant"] == name and run.get(key) is not None
            ]
            ax.scatter([i] * len(pts), pts, color="black", s=10, zorder=3)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8, rotation=15)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        out.append((title, base64.b64encode(buf.getvalue()).decode("ascii")))
    return out


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1000px;
margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:right;font-size:0.9em;white-space:nowrap}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.failed{color:#c0392b;font-weight:bold}.ok{color:#1e8449}.note{color:#555;font-size:0.9em}
.charts img{display:block;max-width:100%;margin:0.5em 0}.published{background:#fbf7e9}
code{background:#f3f3f3;padding:1px 4px}
"""

_SCRIPT = """
(function(){
  function check(){
    var imgs=document.querySelectorAll('.charts img'), ok=imgs.length>0;
    for(var i=0;i<imgs.length;i++){ if(!(imgs[i].complete && imgs[i].naturalWidth>0)) ok=false; }
    if(ok){ document.body.setAttribute('data-charts-rendered', String(imgs.length)); }
  }
  if(document.readyState==='complete'){check();} else {window.addEventListener('load', check);}
})();
"""


def _esc(x: object) -> str:
    return html.escape("" if x is None else str(x))


def write_html(path: Path, results: dict[str, Any]) -> None:
    """The self-contained report (charts inline; viewable offline, nothing fetched)."""
    s = results["summary"]
    corpus = results["corpus"]
    machine = results["machine"]
    method = results.get("energy_method") or {}
    parts: list[str] = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>dicom-repack bench report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>dicom-repack bench</h1>",
    ]
    if not results.get("complete"):
        parts.append(
            "<p class='failed'>INCOMPLETE: the bench was interrupted; the figures are from "
            "the runs that finished.</p>"
        )
    parts.append(
        f"<p class='note'>Started {_esc(results['started'])}, "
        f"finished {_esc(results.get('finished'))}. "
        f"Command: <code>{_esc(' '.join(results['command']))}</code></p>"
    )
    parts.append("<h2>Results (measured here)</h2>")
    parts.append(
        f"<p class='note'>Medians of {results['settings']['repeat']} repetition(s); ratios against "
        f"<b>{_esc(s['baseline_basis'])}</b> (higher is better). A failed contestant lost or "
        "damaged an instance or a record and gets no ratio, whatever its speed.</p>"
    )
    head = (
        "<tr><th>contestant</th><th>status</th><th>wall</th><th>speed vs base</th><th>CPU</th>"
        "<th>peak RSS (tree)</th><th>largest process</th><th>inst/s</th><th>MB/s</th>"
        "<th>energy</th><th>energy vs base</th><th>CO2</th></tr>"
    )
    parts.append(f"<table id='results'>{head}")
    for r in s["contestants"]:
        cls = "failed" if r["status"] == "failed" else "ok" if r["status"] == "ok" else ""
        parts.append(
            f"<tr><td>{_esc(r['contestant'])}</td><td class='{cls}'>{_esc(r['status'])}</td>"
            f"<td>{fmt_duration(r['wall_s'])}</td><td>{fmt_ratio(r['speedup'])}</td>"
            f"<td>{fmt_duration(r['cpu_s'])}</td><td>{fmt_bytes(r['peak_tree_rss_bytes'])}</td>"
            f"<td>{fmt_bytes(r['max_process_rss_bytes'])}</td>"
            f"<td>{(r['instances_per_s'] or 0):.0f}</td><td>{(r['mb_per_s'] or 0):.1f}</td>"
            f"<td>{fmt_energy(r['energy_kwh'])}</td><td>{fmt_ratio(r['energy_ratio'])}</td>"
            f"<td>{fmt_mass(r['co2_kg'])}</td></tr>"
        )
    parts.append("</table>")
    failed_runs = [r for r in results["runs"] if r["status"] == "failed"]
    if failed_runs:
        parts.append("<h3>Failures</h3><ul>")
        for r in failed_runs:
            parts.append(
                f"<li class='failed'>{_esc(r['contestant'])} run {r['repetition']}: "
                f"{_esc('; '.join(r['problems']))}<br><span class='note'>"
                f"{_esc('; '.join(r.get('examples') or []))}</span></li>"
            )
        parts.append("</ul>")
    skipped = [c for c in results["contestants"] if not c["available"]]
    if skipped:
        parts.append(
            "<p class='note'>Not run: "
            + "; ".join(f"<b>{_esc(c['name'])}</b> ({_esc(c['skip_reason'])})" for c in skipped)
            + "</p>"
        )

    parts.append("<h2>Charts</h2><div class='charts'>")
    for title, png in _charts(results):
        parts.append(
            f"<img alt='{_esc(title)}' title='{_esc(title)}' src='data:image/png;base64,{png}'>"
        )
    parts.append("</div>")

    parts.append("<h2>Energy measurement</h2>")
    parts.append(
        f"<p>{_esc(method.get('summary', 'not measured'))}. RAPL on this machine: "
        f"<b>{_esc(method.get('rapl', 'unknown'))}</b>. CodeCarbon CPU method: "
        f"<code>{_esc(method.get('cpu'))}</code>, RAM: <code>{_esc(method.get('ram'))}</code>; "
        f"CO2 with the grid intensity of {_esc(results['settings'].get('country_name'))} "
        f"({_esc(results['settings'].get('country'))}). CodeCarbon measures the whole machine "
        "while a run lasts.</p>"
    )
    if method.get("hint"):
        parts.append(f"<p class='failed'>{_esc(method['hint'])}</p>")

    parts.append("<h2>Extrapolation to the seed's 76 GB (linear by bytes)</h2>")
    factor = s.get("extrapolation_factor")
    parts.append(
        f"<p class='note'>Each median scaled by 76 GB / corpus size (× {factor:,.0f}). A linear "
        "extrapolation, not a measurement: per-instance costs scale with the number of instances, "
        f"so a corpus whose instances are smaller than the phantoms' (this one averages "
        f"{fmt_bytes(corpus.get('mean_instance_bytes'))}) overstates them.</p>"
        if factor
        else "<p>no corpus size</p>"
    )
    parts.append(
        "<table id='extrapolation'><tr><th>contestant (measured here, extrapolated)</th>"
        "<th>wall</th><th>CPU</th><th>energy</th><th>CO2</th></tr>"
    )
    for r in s["contestants"]:
        x = r.get("extrapolated_76GB")
        if not x:
            continue
        flag = " (FAILED)" if r["status"] == "failed" else ""
        parts.append(
            f"<tr><td>{_esc(r['contestant'])}{flag}</td><td>{fmt_duration(x['wall_s'])}</td>"
            f"<td>{fmt_duration(x['cpu_s'])}</td><td>{fmt_energy(x['energy_kwh'])}</td>"
            f"<td>{fmt_mass(x['co2_kg'])}</td></tr>"
        )
    parts.append("</table>")
    parts.append("<h3>The seed experiment, as published (not measured here)</h3>")
    parts.append(
        "<table id='published' class='published'><tr><th>contestant</th><th>wall</th>"
        "<th>energy</th><th>CO2</th></tr>"
    )
    for p in SEED_PUBLISHED:
        parts.append(
            f"<tr><td>{_esc(p['contestant'])}</td><td>{_esc(p['wall'])}</td>"
            f"<td>{_esc(p['energy'])}</td><td>{_esc(p['co2'])}</td></tr>"
        )
    parts.append(
        "</table><p class='note'>76 GB of MR phantoms, one subprocess per received "
        "instance, at most 512 at once, CodeCarbon; its own machine and grid.</p>"
    )

    parts.append("<h2>Corpus</h2><table>")
    for k in ("path", "instances", "bytes", "mean_instance_bytes"):
        parts.append(f"<tr><td>{k}</td><td>{_esc(corpus.get(k))}</td></tr>")
    gen = corpus.get("generated")
    if gen:
        parts.append(
            f"<tr><td>generated</td><td>{_esc(gen.get('patients'))} patients, "
            f"{_esc(gen.get('studies'))} "
            f"studies, {_esc(gen.get('series'))} series, seed {_esc(gen.get('seed'))}</td></tr>"
        )
    parts.append("</table>")
    parts.append("<h2>Machine and settings</h2><table>")
    for k, v in {**machine, **results["settings"]}.items():
        parts.append(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>")
    parts.append("</table><h2>Versions</h2><table>")
    for k, v in results.get("versions", {}).items():
        parts.append(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>")
    for c in results["contestants"]:
        if c["available"]:
            parts.append(f"<tr><td>{_esc(c['name'])}</td><td>{_esc(c.get('version'))}</td></tr>")
    parts.append("</table>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
