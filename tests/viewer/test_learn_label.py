"""The viewer shows what n2a-stream's learner does: a real stream with --learn feeds a real viewer."""
from __future__ import annotations

import time

import pytest
import zmq

from noise2atom.stem_sim import StemSimulator
from streamer import net, protocol
from streamer.learner import LearnConfig
from streamer.pipeline import Stream
from viewer.receiver import FrameReceiver
from viewer.window import ViewerWindow

pytestmark = pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")


def test_learn_state_shows_in_the_status_bar_only_when_learning(qtbot, tmp_path):
    from noise2atom.checkpoint import default_model_path

    if not default_model_path().is_file():
        pytest.skip(f"the bundled model is missing (expected {default_model_path()})")
    sim = StemSimulator(shape=(64, 64), seed=1)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    port = push.bind_to_random_port("tcp://127.0.0.1")
    stream = Stream(source=f"tcp://127.0.0.1:{port}", engine="onnxruntime", pattern="pull",
                    policy="block", learn=LearnConfig(min_frames=1000)).start()  # never swaps
    try:
        with FrameReceiver(address=stream.out_endpoint, poll_ms=20) as rx:
            window = ViewerWindow(source=rx, refresh_ms=5, silence_timeout_s=30.0,
                                  snapshot_dir=tmp_path / "snaps")
            qtbot.addWidget(window)
            window.show()
            label = window.status_labels["learn"]
            assert not label.isVisible()
            qtbot.waitUntil(lambda: stream.subscriptions >= 1, timeout=30_000)
            for seq in range(3):
                net.send_message(push, protocol.encode_frame(
                    sim.frame(seq).noisy, seq=seq, series="s", t_acq_ns=time.time_ns()))
            qtbot.waitUntil(lambda: window.current is not None and window.current.seq == 2,
                            timeout=60_000)
            qtbot.waitUntil(lambda: label.isVisible(), timeout=10_000)
            assert label.text().startswith("learn collecting: 0 swaps")
            window.close()
    finally:
        stream.stop()
        push.close(0)
        ctx.term()
