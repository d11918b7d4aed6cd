"""Every `make bench-*` target runs a `python -m bench...` entry point that imports and parses its
options, and every bench module says in its docstring what it measures and where its results go."""
from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import bench

ROOT = Path(__file__).resolve().parents[2]


def _make_targets() -> dict[str, list[str]]:
    """bench-* and gpu-check* targets of the Makefile -> the modules their recipes run with -m."""
    targets: dict[str, list[str]] = {}
    current = None
    for line in (ROOT / "Makefile").read_text().splitlines():
        m = re.match(r"^((?:bench|gpu-check)[\w-]*):", line)
        if m:
            current = targets.setdefault(m.group(1), [])
        elif line.startswith("\t") and current is not None:
            current += re.findall(r"-m (bench[\w.]*)", line)
        elif not line.strip():
            current = None
    return targets


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(bench.__path__, "bench."))


def test_every_bench_target_runs_a_bench_module():
    targets = _make_targets()
    for name in ("bench-engines", "bench-latency", "bench-quality", "bench-viewer", "gpu-check", "gpu-check-plan"):
        assert targets.get(name), f"make {name}: expected a recipe running python -m bench... (got {targets.get(name)})"
    for name, modules in targets.items():
        assert modules, f"make {name} runs no bench module"
        for module in modules:
            assert importlib.util.find_spec(module) is not None, f"make {name}: no module {module}"


@pytest.mark.parametrize("module", sorted({m for ms in _make_targets().values() for m in ms} | {
    "bench.viewer_screenshot", "bench.quality.simulated", "bench.quality.external",
    "bench.quality.training_curve", "bench.quality.default_model", "bench.quality.abtem_fields",
    "bench.quality.pitch_resampling", "bench.quality.lattice_average"}))
def test_entry_point_imports_and_parses_its_options(module, capsys):
    main = importlib.import_module(module if module != "bench.quality" else "bench.quality.__main__").main
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith(f"usage: python -m {module} "), usage[:120]


@pytest.mark.parametrize("module", _modules())
def test_every_module_has_a_docstring(module):
    doc = importlib.import_module(module).__doc__ or ""
    assert len(doc.strip()) > 40, f"{module}: expected a docstring saying what it measures (got {doc!r})"
