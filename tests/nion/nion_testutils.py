"""Nion plug-in test helpers: the bundled model; run Swift's UI-thread work until a condition."""
from __future__ import annotations

import time
from pathlib import Path

from stream_testutils import PATIENCE

REPO = Path(__file__).resolve().parents[2]
BUNDLED_MODEL = REPO / "models" / "default.safetensors"


def pump_until(document_controller, predicate, what: str, timeout: float = PATIENCE,
               detail=None) -> None:
    """Run Swift's UI-thread work (``periodic``) until ``predicate()``; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        document_controller.periodic()
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                         + (f" ({detail()})" if detail else ""))
