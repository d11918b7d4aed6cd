"""n2a-stream --learn end to end: real sockets, a real ONNX Runtime engine swapped between frames."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

from noise2atom.checkpoint import load_checkpoint, model_id
from noise2atom.stem_sim import StemSimulator
from stream_testutils import Collector, cli_env, wait_until
from streamer.learner import LearnConfig
from streamer.pipeline import Stream
from streamer.replay import Replay

SHAPE = (96, 96)


def _frames(n: int = 16) -> list[np.ndarray]:
    sim = StemSimulator(shape=SHAPE, scene="crystal", peak_counts=2.0, gain=5.0, offset_adu=300,
                        seed=5)
    return [sim.frame(t).noisy for t in range(n)]


def test_a_learned_model_is_swapped_in_without_losing_a_frame(zmq_ctx, lite_model, tmp_path):
    save = tmp_path / "adapted.safetensors"
    learn = LearnConfig(ring=12, min_frames=3, steps_per_round=10, lr=1e-3, patch=48, save=save)
    start_id = model_id(lite_model)
    # PUSH/PULL with backpressure: nothing may be dropped, so every seq must come out, in order.
    with Replay(frames=_frames(), fps=15, loop=True, count=100_000, series="learn",
                pattern="push", meta={"detector": "HAADF"}) as replay:
        stream = Stream(source=replay.bind(), model=lite_model, engine="onnxruntime",
                        pattern="pull", policy="block", max_queue=4, learn=learn).start()
        col = Collector(zmq_ctx, stream.out_endpoint)
        try:
            wait_until(lambda: stream.subscriptions >= 1, 30, "the test subscriber to join")
            replay.start()

            def models():
                return [m.header["model"] for m in col.frames]

            wait_until(lambda: any(m != start_id for m in models()) or stream.learner.error,
                       300, "a frame made by a learned model")
            n_swap = len(col.frames)
            wait_until(lambda: len(col.frames) >= n_swap + 10, 120, "ten more frames after the swap")
            stream.maybe_raise()
        finally:
            replay.close()
            summary = stream.stop()
            col.stop()
    frames = col.frames
    seqs = [m.seq for m in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a frame was lost or reordered"
    assert frames[0].header["model"] == start_id
    learned = [m for m in frames if m.header["model"] != start_id]
    assert learned and all(np.isfinite(m.arrays["denoised"]).all() for m in learned)
    # once swapped, later frames never go back to the start model (no rollback expected here)
    first = frames.index(learned[0])
    assert all(m.header["model"] != start_id for m in frames[first:])
    info = learned[-1].header["learn"]
    assert info["swaps"] >= 1 and info["iterations"] >= learn.steps_per_round
    assert summary["dropped"] == 0 and summary["learn"]["swaps"] >= 1
    assert summary["learn"]["errors"] == 0
    # --learn-save: the adapted weights, with the series' acquisition meta
    assert save.is_file() and model_id(save) != start_id
    assert load_checkpoint(save).config.data.meta == {"detector": "HAADF"}
    assert "learner:" in stream.summary_text(summary)


def test_learning_is_off_unless_asked_on_a_cpu(lite_model):
    from streamer.cli import _parser, build_config

    p = _parser()
    cfg = build_config(p.parse_args(["--port", "5555", "--model", str(lite_model)]), p)
    assert cfg.learn is None
    cfg = build_config(p.parse_args(["--port", "5555", "--model", str(lite_model), "--learn",
                                     "--learn-threads", "2"]), p)
    assert cfg.learn is not None and cfg.learn.threads == 2
    with pytest.raises(SystemExit):
        build_config(p.parse_args(["--port", "5555", "--learn-save", "x.safetensors"]), p)


@pytest.mark.slow
def test_n2a_stream_learn_save_on_sigterm(lite_model, tmp_path):
    """The CLI: --learn --learn-save PATH, stopped by SIGTERM, writes the adapted model."""
    save = tmp_path / "adapted.safetensors"
    with Replay(frames=_frames(), fps=15, loop=True, count=100_000, series="cli",
                pattern="push") as replay:
        endpoint = replay.bind()
        p = subprocess.Popen([sys.executable, "-m", "streamer.cli", "--source", endpoint,
                              "--pattern", "pull", "--policy", "block", "--out-port", "0",
                              "--model", str(lite_model), "--engine", "onnxruntime", "--learn",
                              "--learn-steps", "10", "--learn-save", str(save),
                              "--status-interval", "0.5"],
                             env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        replay.start()
        try:
            lines = []
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                line = p.stderr.readline()
                if not line:
                    break
                lines.append(line)
                if "swaps" in line and " 0 swaps" not in line and "learn" in line:
                    break
            p.terminate()
            _, err = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
    text = "".join(lines) + err
    assert p.returncode == 0, text[-3000:]
    assert "n2a-stream: learner:" in text
    assert save.is_file(), text[-3000:]
