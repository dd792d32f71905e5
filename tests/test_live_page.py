"""`listen --http`: the live page (in headless Chromium), /metrics and /healthz agree
with what a real sender (dcmtk's storescu) stored, across the receiver's workers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from helpers import sqlite_db
from test_index import INDEX, make_corpus
from test_listen_support import dcmtk, dcmtk_env, free_port, listening, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def page_dom(url: str, tmp_path: Path) -> str:
    """The page after its script has fetched /api/status (headless, no network beyond it)."""
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", "--disable-background-networking",
         f"--user-data-dir={tmp_path / 'chromium-profile'}",
         "--virtual-time-budget=4000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def shown(dom: str, element_id: str) -> str:
    m = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert m, f"no #{element_id} in the page"
    return m.group(1)


def metric(text: str, name: str) -> float:
    m = re.search(rf"^dicom_repack_{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


@pytest.mark.slow
@pytest.mark.dcmtk
@pytest.mark.chromium
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_page_and_metrics_match_what_storescu_stored(tmp_path: Path) -> None:
    files = sorted(make_corpus(tmp_path / "in", 40, patients=2, studies=1, series=2).rglob("*.dcm"))
    data, log = tmp_path / "data", tmp_path / "log"
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    with listening(data, "--logdir", str(log), "--http", f"127.0.0.1:{port}",
                   "--workers", "2") as li:  # fmt: skip
        wait_for(lambda: get(base + "healthz") == (200, "ok\n"), what="/healthz")
        sender = subprocess.Popen(
            [dcmtk("storescu"), "-aet", "MODALITY1", "-aec", "DICOM-REPACK", "127.0.0.1",
             str(li.port), *map(str, files)],
            env=dcmtk_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            during = page_dom(base, tmp_path)  # opened while storescu stores
        finally:
            _, err = sender.communicate(timeout=300)
        assert sender.returncode == 0, err
        assert 0 <= int(shown(during, "stored")) <= len(files)

        def status() -> dict[str, Any]:
            return dict(json.loads(get(base + "api/status")[1]))

        wait_for(
            lambda: status()["counters"]["stored"] == len(files), what="every instance counted"
        )
        filed = sorted(data.rglob("*.dcm"))
        on_disk = sum(p.stat().st_size for p in filed)
        assert len(filed) == len(files)

        dom = page_dom(base, tmp_path)
        assert shown(dom, "stored") == str(len(files))
        assert shown(dom, "failed") == "0"
        assert re.search(rf'data-bytes="{on_disk}"', dom), "the page's byte count"
        assert re.search(rf'data-stored="{len(files)}"', dom)
        doc = status()
        completed = doc["series_completed"] + doc["series_in_progress"]
        assert sum(s["instances"] for s in completed) == len(files)
        assert len(completed) == 4
        assert doc["recent_associations"][0]["calling_ae"] == "MODALITY1"

        metrics = get(base + "metrics")[1]
        assert metric(metrics, "instances_stored_total") == len(files)
        assert metric(metrics, "received_bytes_total") == on_disk
        assert metric(metrics, 'associations_total{result="released"}') == 1
        assert metric(metrics, "workers") == 2
        assert metric(metrics, "associations_active") == 0
        assert li.stop() == 0
    assert get(base + "healthz")[0] == 0, "the HTTP server stopped with the listener"
    with sqlite_db(log / INDEX) as conn:
        assert conn.execute("SELECT count(*) FROM instances").fetchone()[0] == len(files)


def test_http_is_off_by_default_and_loopback_when_given_a_port(tmp_path: Path) -> None:
    port = free_port()
    with listening(tmp_path / "data") as li:
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 0
        assert li.stop() == 0
    with listening(tmp_path / "data", "--http", str(port), "--workers", "1") as li:
        wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200, what="/healthz")
        assert get(f"http://127.0.0.1:{port}/nowhere")[0] == 404
        metrics = get(f"http://127.0.0.1:{port}/metrics")[1]
        assert metric(metrics, "instances_stored_total") == 0
        assert "# TYPE dicom_repack_instances_failed_total counter" in metrics
        assert li.stop() == 0
