"""The viewer shows the fidelity guard's flags in red: a real n2a-stream (a model that blanks every
frame, run by ONNX Runtime) feeds a real viewer window over loopback, offscreen."""
from __future__ import annotations

import numpy as np
import pytest

from detector_styles import clean_series, detector_styles, zero_checkpoint
from noise2atom.checkpoint import default_model_path
from viewer.window import WARN_STYLE

pytestmark = pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")


def test_flat_output_flag_shows_in_red_in_the_status_bar(qtbot, tmp_path, live_window):
    if not default_model_path().is_file():
        pytest.skip(f"the bundled model is missing (expected {default_model_path()})")
    model = zero_checkpoint(tmp_path / "zero.safetensors")
    frames = detector_styles(clean_series(n=3))["uint16_counts"]
    with live_window(model=model) as (window, send):
        flags = window.status_labels["flags"]
        assert not flags.isVisible()
        send(frames, "blank")
        assert np.ptp(window.denoised_panel.image) == 0  # the engine blanked it
        qtbot.waitUntil(lambda: flags.isVisible(), timeout=10_000)
        assert "flat_output" in flags.text()
        assert flags.styleSheet() == WARN_STYLE and "#c0392b" in WARN_STYLE  # red
