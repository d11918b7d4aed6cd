"""The shape of the engines package: no import cycles, the import rule, and its doctests run."""
from __future__ import annotations

import ast
import doctest
import importlib
from pathlib import Path

import pytest

ENGINES = Path(__file__).resolve().parents[2] / "engines"
#: What the library modules of engines may import from noise2atom (docs/architecture.md).
LIBRARY_MAY_IMPORT = {"noise2atom.models", "noise2atom.checkpoint", "noise2atom.files"}
#: The command lines (engines/cli/) may import these as well.
CLI_MAY_IMPORT = LIBRARY_MAY_IMPORT | {"noise2atom.io", "noise2atom.metrics", "noise2atom.guard",
                                       "noise2atom.scaling", "noise2atom.finetune", "noise2atom.ensemble",
                                       "noise2atom.lattice_average"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ENGINES.rglob("*.py")):
        parts = path.relative_to(ENGINES.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports when it runs (at the top or inside functions), absolute names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                   for stmt in block.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: not imported when the program runs
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: {m for m in _imports(name, path) if m in mods and m != name} for name, path in mods.items()}


def test_no_module_of_engines_is_in_an_import_cycle():
    mods = _modules()
    # A package importing its own submodules to re-export them is not a cycle of its modules.
    edges = {m: {d for d in deps if not (mods[m].name == "__init__.py" and d.startswith(m + "."))}
             for m, deps in _graph().items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(edges[m]):
            if state.get(d) == 1:
                pytest.fail(f"import cycle: {' -> '.join(stack[stack.index(d):] + [d])}")
            if d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_the_import_rule_library_modules_use_only_the_model_side_of_noise2atom():
    for name, path in _modules().items():
        allowed = CLI_MAY_IMPORT if name.startswith("engines.cli") else LIBRARY_MAY_IMPORT
        used = {m for m in _imports(name, path) if m.startswith("noise2atom.")}
        used = {m for m in used if m.count(".") == 1 or m.rpartition(".")[0] not in used}
        modules = {".".join(m.split(".")[:2]) for m in used}
        assert modules <= allowed, f"{name} imports {sorted(modules - allowed)} (allowed: {sorted(allowed)})"
        assert not {m for m in _imports(name, path) if m.split(".")[0] in ("streamer", "viewer", "bench")}, name


def test_no_function_in_engines_is_longer_than_50_lines():
    """Long functions are split into named steps (issue 11 item 7)."""
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 50:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, long


@pytest.mark.parametrize("name", ["engines", "engines.base", "engines.config", "engines.select"])
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
