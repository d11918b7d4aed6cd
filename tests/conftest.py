"""Shared test setup: headless Qt, the `gpu` marker's skip, hypothesis without timing checks, and a
free-port helper."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

# Qt must be told before any Qt import: CI and our machines have no display.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Two cores: keep torch from oversubscribing them while pytest runs.
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest

# --import-mode=importlib puts no test folder on sys.path; shared helpers (detector_styles) live in
# tests/. The repository root goes first: its packages (engines, bench, ...) must win over the test
# folders of the same names (tests/engines, tests/bench), which would otherwise be imported as empty
# namespace packages when pytest runs as a script (make test) rather than as `python -m pytest`.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]
try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is in the test extra; without it its tests fail on import anyway
    pass
else:
    # Hypothesis's per-example deadline (200 ms) and its "data too slow" health check measure the
    # machine, not the code: on a loaded 2-core CI machine they fail at random. Off for all tests;
    # print_blob lets a real failure be replayed exactly.
    settings.register_profile("n2a", deadline=None, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("n2a")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (none found)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # not `in item.keywords`: a folder named gpu matches that
            item.add_marker(skip_gpu)


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
