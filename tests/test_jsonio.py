"""The records' JSON encoder/decoder must be indistinguishable from the json module's."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicom_repack.core import jsonio

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
documents = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=30,
)


@pytest.mark.slow
@given(documents)
@settings(max_examples=400)
def test_dumps_is_json_dumps_indent_4_and_one_line(doc: object) -> None:
    assert jsonio.dumps(doc) == json.dumps(doc, indent=4)
    assert jsonio.dumps(doc, indent=None) == json.dumps(doc)
    assert jsonio.loads(jsonio.dumps(doc)) == json.loads(json.dumps(doc))


@given(documents)
@settings(max_examples=200)
def test_ndjson_line_is_compact_json_dumps(doc: object) -> None:
    """The one NDJSON encoder of every door's --log-ndjson (rx-repack's compact form)."""
    assert jsonio.ndjson_line(doc) == json.dumps(doc, separators=(",", ":")) + "\n"


@pytest.mark.parametrize("text", ["", "{", '{"a": ', "[1, 2", '{"a": 1} x', "nul", "{'a': 1}"])
def test_loads_refuses_broken_json(text: str) -> None:
    with pytest.raises(jsonio.JSONError):
        jsonio.loads(text)


def test_loads_refuses_broken_json_where_json_was_never_imported() -> None:
    """The per-instance door never imports json; _json then fails some errors as SystemError."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from dicom_repack.core import jsonio\n"
        "assert 'json.decoder' not in sys.modules\n"
        "for text in ['{not json', '{\"a\": \"\\x01\"}', '[1,', '']:\n"
        "    try:\n"
        "        jsonio.loads(text)\n"
        "    except jsonio.JSONError as exc:\n"
        "        print(exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 4 and all(line.startswith("not JSON (") for line in lines), lines
    assert "Expecting property name" in lines[0]
