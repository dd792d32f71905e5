"""The status query in core (core/status_query.py): typed filters in, a typed document
out, one rule for a series' state; `status --json` and the live page print what it says."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from dicom_repack.core.status_query import (
    Params,
    StatusFilters,
    as_json,
    query,
    state_of,
    where,
)
from helpers import run_cli
from test_index import INDEX, make_corpus


def _filed(tmp_path: Path) -> Path:
    src = make_corpus(tmp_path / "in", 12, patients=2, studies=1, series=2)
    data, log = tmp_path / "data", tmp_path / "log"
    run_cli("batch", str(src), "-d", str(data), "-l", str(log), "--no-progress")
    return log


def test_status_json_is_the_core_querys_document(tmp_path: Path) -> None:
    log = _filed(tmp_path)
    printed = run_cli("status", "-l", str(log), "--json", "--series-idle", "0").stdout
    doc = query(str(log / INDEX), StatusFilters(series_idle=0))
    cli = json.loads(printed)
    assert cli.pop("generated") and doc.pop("generated")  # type: ignore[misc]
    assert cli == json.loads(as_json(doc))
    assert as_json(doc).endswith("}\n") and printed.endswith("}\n")
    # the keys in the order status --json has always printed them
    study = cli["patients"][0]["studies"][0]
    assert list(cli) == ["index", "series_idle_s", "totals", "patients"]
    assert list(study) == [
        "StudyInstanceUID", "AccessionNumber", "StudyDate", "StudyDescription",
        "instances", "bytes", "series", "first", "last", "complete",
    ]  # fmt: skip
    assert list(study["series"][0])[-3:] == ["folder", "state", "complete"]


def test_query_on_a_connection_equals_the_query_on_its_path(tmp_path: Path) -> None:
    log = _filed(tmp_path)
    index = str(log / INDEX)
    filters = StatusFilters(patient_id=None, date="19000101-", series_idle=0)
    by_path = query(index, filters, now=2e9)
    conn = sqlite3.connect(index)  # no row factory: rows are read by column name
    try:
        by_conn = query(conn, filters, now=2e9, name=index)
    finally:
        conn.close()
    assert by_conn == by_path
    assert by_path["totals"]["instances"] == 12
    one = by_path["patients"][0]["PatientID"]
    assert query(index, StatusFilters(patient_id=one), now=2e9)["totals"]["instances"] == 6


def test_every_placeholder_is_made_by_one_helper() -> None:
    """A driver with another parameter style changes one word, not the statement."""
    filters = StatusFilters(
        patient_id="P", study_uid="S", accession="A", date="20000101-20001231", since=1.0
    )
    qmark, fmt = Params("?"), Params("%s")
    text = where(filters, fmt)
    assert "?" not in text and text.count("%s") == len(fmt.values) == 6
    assert where(filters, qmark) == text.replace("%s", "?") and qmark.values == fmt.values


def test_a_series_state() -> None:
    now = 1000.0
    assert state_of(5, 5, last=now, now=now, idle=10, ended=False) == "complete"
    assert state_of(5, 8, last=now, now=now, idle=10, ended=False) == "receiving"
    assert state_of(5, 8, last=now - 10, now=now, idle=10, ended=False) == "incomplete"
    assert state_of(5, 8, last=now, now=now, idle=10, ended=True) == "incomplete"
    assert state_of(5, None, last=now, now=now, idle=10, ended=False) == "receiving"
    assert state_of(5, None, last=now - 10, now=now, idle=10, ended=False) == "complete"
    assert state_of(5, None, last=now, now=now, idle=10, ended=True) == "complete"
