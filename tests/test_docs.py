"""The documentation stays true to the code: README's code map names every module, every
relative link in README.md and docs/*.md leads to a file (and heading), and the API page's examples and
templates are the ones the code has.

The next engineer finds a module through README's table ("The code, src/dicom_repack/"):
a module missing from it is a module nobody is told about.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import REPO

SRC = REPO / "src" / "dicom_repack"
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))

#: a Markdown link or image: [text](target) (the target up to a space or ")")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def code_map() -> dict[str, set[str]]:
    """README's code map: folder (``core/``, or ``""`` for the package itself) -> the
    module file names its row names in backquotes."""
    text = README.read_text(encoding="utf-8")
    start = text.index("| folder | what lives there |")
    rows: dict[str, set[str]] = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        first, rest = line.strip("|").split("|", 1)
        names = set(re.findall(r"`([A-Za-z0-9_]+\.py)`", rest))
        folder = first.strip().strip("`")
        if folder.endswith("/"):
            rows.setdefault(folder, set()).update(names)
        else:  # a row of top-level modules: they are named in its first cell
            rows.setdefault("", set()).update(re.findall(r"`([A-Za-z0-9_]+\.py)`", first))
    return rows


def test_every_module_is_in_the_readme_code_map() -> None:
    rows = code_map()
    missing = []
    for module in sorted(SRC.rglob("*.py")):
        rel = module.relative_to(SRC)
        if rel.name == "__init__.py":
            continue  # a folder's is its row; the package's is the public API (docs/api.md)
        folder = "" if len(rel.parts) == 1 else "/".join(rel.parts[:-1]) + "/"
        if rel.name not in rows.get(folder, set()):
            missing.append(str(rel))
    assert missing == [], f"modules missing from README's code map table: {missing}"


def test_the_code_map_names_no_module_that_does_not_exist() -> None:
    stale = [
        f"{folder}{name}"
        for folder, names in code_map().items()
        for name in names
        if not (SRC / folder / name).is_file()
    ]
    assert stale == [], f"README's code map names modules that do not exist: {stale}"


def _without_code(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold no links or headings


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives ``page``'s headings: lower case, punctuation dropped,
    each space a hyphen."""
    headings = re.findall(r"^#+\s+(.*?)\s*$", _without_code(page.read_text("utf-8")), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_leads_to_a_file_and_heading(page: Path) -> None:
    broken = []
    for target in LINK.findall(_without_code(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue  # a URL (http:, mailto:)
        path, _, anchor = target.partition("#")
        linked = page.parent / path if path else page
        if not linked.exists():
            broken.append(target)
            continue
        if anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    assert broken == [], f"{page.name}: links to no file or heading: {broken}"


def test_the_api_page_gives_the_layouts_own_templates() -> None:
    """docs/api.md spells out ``Layout.rx()``'s templates: they are the code's, and a
    user who copies them into ``--*Template`` options gets a layout, not a refusal."""
    from dicom_repack import Layout
    from dicom_repack.core.layout import RX_TEMPLATES

    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    item = text[text.index("- `Layout.rx()`") : text.index("- `Layout.px()`")]
    spelled = re.search(r"`(%[^`]+)`", item)
    assert spelled is not None, item
    templates = tuple(re.split(r"\s+/\s+", spelled.group(1).strip()))
    assert templates == RX_TEMPLATES
    root, study, series, image = templates
    layout = Layout.from_options("rx", root=root, study=study, series=series, image=image)
    assert layout.keywords
