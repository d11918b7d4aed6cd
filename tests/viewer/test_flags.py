"""The viewer shows the fidelity guard's flags in red: a real n2a-stream (a model that blanks every
frame, run by ONNX Runtime) feeds a real viewer window over loopback, offscreen."""
from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from detector_styles import clean_series, detector_styles, zero_checkpoint
from noise2atom.checkpoint import default_model_path
from streamer import net, protocol
from streamer.pipeline import Stream
from viewer.receiver import FrameReceiver
from viewer.window import WARN_STYLE, ViewerWindow

pytestmark = pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")


def test_flat_output_flag_shows_in_red_in_the_status_bar(qtbot, tmp_path):
    if not default_model_path().is_file():
        pytest.skip(f"the bundled model is missing (expected {default_model_path()})")
    model = zero_checkpoint(tmp_path / "zero.safetensors")
    frames = detector_styles(clean_series(n=3))["uint16_counts"]
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    port = push.bind_to_random_port("tcp://127.0.0.1")
    stream = Stream(source=f"tcp://127.0.0.1:{port}", model=model, engine="onnxruntime",
                    pattern="pull", policy="block").start()
    try:
        with FrameReceiver(address=stream.out_endpoint, poll_ms=20) as rx:
            window = ViewerWindow(source=rx, refresh_ms=5, silence_timeout_s=30.0,
                                  snapshot_dir=tmp_path / "snaps")
            qtbot.addWidget(window)
            window.show()
            flags = window.status_labels["flags"]
            assert not flags.isVisible()
            qtbot.waitUntil(lambda: stream.subscriptions >= 1, timeout=10_000)
            for seq, frame in enumerate(frames):
                net.send_message(push, protocol.encode_frame(frame, seq=seq, series="blank",
                                                                  t_acq_ns=time.time_ns()))
            qtbot.waitUntil(lambda: window.current is not None and window.current.seq == 2, timeout=60_000)
            assert np.ptp(window.denoised_panel.image) == 0  # the engine blanked it
            qtbot.waitUntil(lambda: flags.isVisible(), timeout=10_000)
            assert "flat_output" in flags.text()
            assert flags.styleSheet() == WARN_STYLE and "#c0392b" in WARN_STYLE  # red
            window.close()
    finally:
        stream.stop()
        push.close(0)
        ctx.term()
