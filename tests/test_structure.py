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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports, wherever the import stands (a lazy
    import inside a function is a dependency too), but for ``if TYPE_CHECKING:`` blocks."""
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {
            id(sub)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and _is_type_checking(node.test)
            for stmt in node.body
            for sub in ast.walk(stmt)
        }
        edges: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
            for target in targets:
                if target in files and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


#: cycles known and not yet broken, each with its reason; nothing else may join them
#: none: the pending file's PendingIndex reaches the index its rows fold into through an
#: opener its caller gives (core/repack.py), and the fold's protocol lives beside the
#: pending file (core/index_files.py: fold_files), used by both backends (issue 21)
KNOWN_CYCLES: list[list[str]] = []


def test_no_import_cycle_among_the_modules() -> None:
    """Each module can be understood (and imported) after the ones it uses: no two
    modules import each other, directly or around a loop, even lazily."""
    assert import_cycles(import_graph()) == KNOWN_CYCLES


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


#: the doors: what a user runs (the bench's own drivers print their progress as they like)
DOORS = ("doors", "listen", "watch")


def _door_modules() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.split("/")[0] in DOORS or rel in ("cli.py", "bench/cli.py", "bench/corpus.py"):
            out.append((rel, ast.parse(path.read_text(encoding="utf-8"))))
    return out


def _is_stderr(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "stderr"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def test_the_doors_say_their_lines_through_one_module() -> None:
    """``dicom-repack <door>: `` is written once (doors/plumbing.py): no door writes a
    line of its own to stderr (a progress bar's console is not a line)."""
    found = []
    for rel, tree in _door_modules():
        if rel == "doors/plumbing.py":
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "write" and _is_stderr(func.value):
                found.append(f"{rel}:{node.lineno}: sys.stderr.write")
            to_stderr = any(k.arg == "file" and _is_stderr(k.value) for k in node.keywords)
            if isinstance(func, ast.Name) and func.id == "print" and to_stderr:
                found.append(f"{rel}:{node.lineno}: print(..., file=sys.stderr)")
    assert found == [], "\n".join(found)


def _int_literals(node: ast.expr | None) -> list[int]:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _int_literals(node.body) + _int_literals(node.orelse)
    return []


def test_exit_statuses_are_named() -> None:
    """A door's ``main`` returns, and a process exits with, core/errors.py's ``EXIT_*``,
    never a bare number: what 1 or 2 means is said once (README, "Exit status and errors")."""
    found = []
    for rel, tree in _door_modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in ("main", "_run", "_serve"):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Return) and _int_literals(sub.value):
                        found.append(f"{rel}:{sub.lineno}: return {_int_literals(sub.value)}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("exit", "_exit")
                and node.args
                and _int_literals(node.args[0])
            ):
                found.append(
                    f"{rel}:{node.lineno}: {node.func.attr}({_int_literals(node.args[0])})"
                )
    assert found == [], "\n".join(found)


def test_no_module_imports_another_packages_private_module() -> None:
    """``core/_pydicom.py`` is core's business: the doors ask core/header.py."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.level > 1
                and any(part.startswith("_") for part in node.module.split("."))
            ):
                found.append(f"{rel}:{node.lineno}: from {'.' * node.level}{node.module}")
    assert found == [], "\n".join(found)
