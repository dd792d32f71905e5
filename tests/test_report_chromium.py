"""report.html renders its charts in a real browser, offline (Debian's chromium, headless).

The report carries a tiny inline script that sets ``data-charts-rendered`` on <body>
once every chart image has decoded (naturalWidth > 0); chromium's --dump-dom shows
whether it did. A screenshot is also taken and must not be blank. Network access is
not needed and is shut off as far as chromium's switches allow.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib")

from dicom_repack.bench import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
    ),
]


def _results() -> dict[str, Any]:
    """A small, plausible results document: three contestants, one of them failed."""
    runs = []
    for name, wall, ok in (
        ("dicom-repack", 6.0, True),
        ("batch-copy", 0.4, True),
        ("lossy", 0.2, False),
    ):
        for rep in (1, 2):
            runs.append(
                {
                    "contestant": name,
                    "kind": "per-instance",
                    "layout": "rx",
                    "repetition": rep,
                    "status": "ok" if ok else "failed",
                    "interrupted": False,
                    "wall_s": wall * (1 + rep / 20),
                    "cpu_s": wall * 1.5,
                    "peak_tree_rss_bytes": 200e6,
                    "max_process_rss_bytes": 60e6,
                    "instances_per_s": 200 / wall,
                    "mb_per_s": 4 / wall,
                    "energy_kwh": wall * 1e-5,
                    "co2_kg": wall * 4e-6,
                    "problems": [] if ok else ["1 instance(s) missing"],
                    "examples": [] if ok else ["missing: a/b/c.dcm"],
                }
            )
    labels = {"dicom-repack": "per instance", "batch-copy": "batch copy", "lossy": "lossy copy"}
    contestants = [
        {
            "name": n,
            "label": labels[n],
            "kind": "per-instance",
            "available": True,
            "skip_reason": None,
            "version": "0",
        }
        for n in ("dicom-repack", "batch-copy", "lossy")
    ] + [
        {
            "name": "px-repack",
            "kind": "per-instance",
            "available": False,
            "skip_reason": "not installed",
        }
    ]
    corpus: dict[str, Any] = {
        "path": "/x",
        "instances": 200,
        "bytes": 4_000_000,
        "mean_instance_bytes": 20_000,
    }
    return {
        "started": "now",
        "finished": "later",
        "command": ["dicom-repack", "bench"],
        "complete": True,
        "machine": {"cpu_model": "test"},
        "corpus": corpus,
        "settings": {"repeat": 2, "cache": "warm cache", "country": "USA", "country_name": "USA"},
        "versions": {"dicom-repack": "0"},
        "contestants": contestants,
        "energy_method": {
            "summary": "estimated",
            "rapl": "absent",
            "cpu": "cpu_load",
            "ram": "model",
        },
        "runs": runs,
        "summary": report.summarize(runs, contestants, corpus["bytes"]),
    }


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_charts_render_in_headless_chromium(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    report.write_html(page, _results())
    out = _chromium(
        "--virtual-time-budget=10000", "--dump-dom", page.as_uri(), profile=tmp_path / "p1"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    m = re.search(r'data-charts-rendered="(\d+)"', out.stdout)
    assert m, "the charts did not decode in chromium:\n" + out.stderr[-2000:]
    assert int(m.group(1)) == 5  # wall, CPU, energy, ratios, memory: each an image
    assert "FAILED" in out.stdout
    # the verdict table, as the browser built it: one row per contestant that ran
    verdict = re.search(r'<table id="verdict">(.*?)</table>', out.stdout, re.S)
    assert verdict, "no verdict table in the rendered page"
    rows = re.findall(r'<tr class="contestant">\s*<td>([^<]*)</td>', verdict.group(1))
    assert sorted(r.strip() for r in rows) == ["batch copy", "lossy copy", "per instance"]


def test_report_screenshot_is_not_blank(tmp_path: Path) -> None:
    from PIL import Image

    page = tmp_path / "report.html"
    report.write_html(page, _results())
    shot = tmp_path / "shot.png"
    out = _chromium(
        f"--screenshot={shot}", "--window-size=1100,2400", page.as_uri(), profile=tmp_path / "p2"
    )
    assert shot.exists(), out.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    colors: list[tuple[int, tuple[int, int, int]]] = img.getcolors(maxcolors=1 << 20) or []  # type: ignore[assignment]
    assert len(colors) > 50  # text and bars, not a white page
    # the bar colour (#2e86c1) is on the page: a chart was painted
    assert any(
        abs(r - 0x2E) < 8 and abs(g - 0x86) < 8 and abs(b - 0xC1) < 8 for _, (r, g, b) in colors
    )
