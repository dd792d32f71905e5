"""The shape of the code, checked: only public names cross a module boundary.

A private name (``_name``) is a module's own business: importing it from another
module ties the two together where nothing says so (issue 19). Checked on the
source's syntax tree, so a new import of a private name fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "dicom_repack"

#: C modules of the standard library imported by name on purpose (cheaper than their
#: public wrappers on the per-instance door's start: docs/benchmarks.md)
STDLIB_C = {"_thread", "_json", "_signal", "_struct", "_sqlite3"}


def imports_of_private_names() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(SRC.parent).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    name = alias.name
                    if name.startswith("_") and not name.startswith("__"):
                        found.append(f"{rel}:{node.lineno}: from {node.module} import {name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]
                    if top.startswith("_") and top not in STDLIB_C:
                        found.append(f"{rel}:{node.lineno}: import {alias.name}")
    return found


def test_no_module_imports_a_private_name_of_another() -> None:
    found = imports_of_private_names()
    assert found == [], "\n".join(found)


def uses_of_argparse_internals() -> list[str]:
    """``parser._actions``, ``argparse._SomeAction``, or an ``argparse.Namespace`` made by
    hand: argparse's internals, or a command line nobody typed (issue 19)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(SRC.parent).as_posix()
        made = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            argparse_name = isinstance(node.value, ast.Name) and node.value.id == "argparse"
            if node.attr == "_actions" or (argparse_name and node.attr.startswith("_")):
                found.append(f"{rel}:{node.lineno}: .{node.attr}")
            elif argparse_name and node.attr == "Namespace" and id(node) in made:
                found.append(f"{rel}:{node.lineno}: argparse.Namespace(...) (pass typed values)")
    return found


def test_no_module_uses_argparse_internals() -> None:
    found = uses_of_argparse_internals()
    assert found == [], "\n".join(found)
