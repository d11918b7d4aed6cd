"""The live path end to end over real loopback sockets, in process (a real engine, real ORT)."""
from __future__ import annotations

import numpy as np
import pytest
import zmq

from stream_testutils import PATIENCE, SHAPE, Collector, wait_for_subscriber, wait_until
from noise2atom.checkpoint import load_checkpoint
from noise2atom.metrics import ssim, to_unit
from noise2atom.scaling import estimate_scaling
from noise2atom.stem_sim import StemSimulator
from streamer.pipeline import Stream
from streamer.recorder import read_recording
from streamer.replay import Replay

ENGINE = "onnxruntime"


def _sim_frames(n: int, seed: int = 0, shape=SHAPE) -> list[np.ndarray]:
    sim = StemSimulator(shape=shape, seed=seed)
    return [sim.frame(t).noisy for t in range(n)]


def _offline_css(frames: list[np.ndarray], lo: float, hi: float, window: int):
    """Per-frame CSS and rolling mean, computed from scratch on the given frames."""
    u = [to_unit(f, lo, hi) for f in frames]
    css = [None] + [ssim(u[t], u[t - 1]) for t in range(1, len(u))]
    means = [None] + [float(np.mean(css[max(1, t - window + 1): t + 1])) for t in range(1, len(u))]
    return css, means


def _start_stream(ctx, model, source, **options):
    stream = Stream(source=source, model=model, engine=ENGINE, **options).start()
    col = Collector(ctx, stream.out_endpoint)
    wait_until(lambda: stream.subscriptions >= 1, PATIENCE, "the test subscriber to join")
    return stream, col


def test_end_to_end_200_frames_in_order_with_css_and_recording(zmq_ctx, lite_model, tmp_path):
    frames = _sim_frames(200)
    meta = StemSimulator(shape=SHAPE, seed=0).meta
    with Replay(frames=frames, fps=20, meta=meta, series="e2e", wait_subscribers=1,
                wait_timeout_s=PATIENCE) as replay:
        # A queue that holds the whole series: on a loaded machine the engine may fall behind
        # 20 fps, and this test is about order, CSS and recording, not the drop policy.
        stream, col = _start_stream(zmq_ctx, lite_model, replay.bind(), record=tmp_path / "rec",
                                    css_window=5, max_queue=256)
        try:
            replay.start()
            col.wait_for(lambda: any(m.type == "end" for m in col.messages), 4 * PATIENCE,
                         "the end message")
        finally:
            summary = stream.stop()
            col.stop()
        replay.join(5)
    assert not col.errors
    out = col.frames
    assert [m.seq for m in out] == list(range(200))
    types = [m.type for m in col.messages]
    assert types[0] == "start" and types[-1] == "end"
    # the raw CSS maps with the series' own scaling, estimated from its first frame
    norm = estimate_scaling(frames[0])
    assert norm != load_checkpoint(lite_model).config.normalisation
    for m, raw in zip(out, frames):
        h = m.header
        assert h["series"] == "e2e" and h["parts"] == ["denoised", "raw"]
        assert h["dtypes"] == ["float32", "uint16"] and h["shape"] == list(SHAPE)
        assert h["engine"].startswith("onnxruntime") and len(h["model"]) >= 8
        assert h["dropped"] == 0 and h["gaps"] == 0 and h["meta_mismatch"] == []
        assert set(h["timing"]) >= {"receive", "queue", "normalise", "denoise", "css",
                                    "acq_to_publish"}
        assert h["timing"]["acq_to_publish"] >= h["timing"]["denoise"] > 0
        np.testing.assert_array_equal(m.arrays["raw"], raw)
        d = m.arrays["denoised"]
        assert d.dtype == np.float32 and 0 <= d.min() and d.max() <= 1
    # The CSS in the headers is the CSS of the frames the subscriber actually received.
    den = [m.arrays["denoised"] for m in out]
    raw = [m.arrays["raw"] for m in out]
    css, css_mean = _offline_css(den, 0.0, 1.0, 5)
    css_raw, css_raw_mean = _offline_css(raw, norm.lo, norm.hi, 5)
    for i, m in enumerate(out):
        for key, expected in (("css", css), ("css_mean", css_mean), ("css_raw", css_raw),
                              ("css_raw_mean", css_raw_mean)):
            if expected[i] is None:
                assert m.header[key] is None
            else:
                assert m.header[key] == pytest.approx(expected[i], rel=1e-9, abs=1e-12), key
    assert summary["published"] == summary["frames_in"] == 200
    assert summary["dropped"] == summary["dropped_at_stop"] == summary["rejected"] == 0
    # The recording holds every raw frame bit-exact with its header, and every output.
    rec = read_recording(tmp_path / "rec")
    assert rec.truncated == {}
    raw_rec = rec.frames("raw")
    assert [m.seq for m in raw_rec] == list(range(200))
    for m, f in zip(raw_rec, frames):
        np.testing.assert_array_equal(m.frame, f)
        assert m.header["series"] == "e2e" and m.meta["pixel_size_nm"] == meta["pixel_size_nm"]
    den_rec = rec.frames("denoised")
    assert [m.seq for m in den_rec] == list(range(200))
    for m, o in zip(den_rec, out):
        np.testing.assert_array_equal(m.frame, o.arrays["denoised"])
        assert m.header["css"] == o.header["css"]


def test_slow_engine_drops_are_reported_exactly_and_raw_recording_is_complete(
        zmq_ctx, lite_model, tmp_path):
    n = 60
    frames = _sim_frames(n, seed=1)
    with Replay(frames=frames, fps=20, series="slow", wait_subscribers=1) as replay:
        stream, col = _start_stream(zmq_ctx, lite_model, replay.bind(), denoise_delay_ms=200,
                                    max_queue=2, record=tmp_path / "rec")
        try:
            replay.start()
            replay.join(PATIENCE)
            wait_until(lambda: stream.ended, PATIENCE, "the stream to finish the series")
            col.wait_for(lambda: any(m.type == "end" for m in col.messages), PATIENCE, "end")
        finally:
            summary = stream.stop()
            col.stop()
    got = [m.seq for m in col.frames]
    assert got == sorted(got) and len(set(got)) == len(got)
    missing = n - len(got)
    assert missing > 10, "the engine was meant to be too slow for the source"
    assert summary["dropped"] == missing and summary["gaps"] == 0
    assert summary["dropped_at_stop"] == 0
    assert col.frames[-1].header["dropped"] == missing
    # Each header's cumulative count is at least the frames missing before it.
    for m in col.frames:
        assert m.header["dropped"] >= m.seq - got.index(m.seq)
    rec = read_recording(tmp_path / "rec")
    raw = rec.frames("raw")
    assert [m.seq for m in raw] == list(range(n))
    for m, f in zip(raw, frames):
        np.testing.assert_array_equal(m.frame, f)
    assert [m.seq for m in rec.frames("denoised")] == got


def test_block_policy_over_push_pull_loses_nothing(zmq_ctx, lite_model):
    n = 40
    frames = _sim_frames(n, seed=2)
    with Replay(frames=frames, fps=0, series="block", pattern="push") as replay:
        stream, col = _start_stream(zmq_ctx, lite_model, replay.bind(), pattern="pull",
                                    policy="block", max_queue=2, denoise_delay_ms=40,
                                    rcvhwm=2, css=False)
        try:
            replay.start()
            replay.join(2 * PATIENCE)
            wait_until(lambda: stream.ended, PATIENCE, "the stream to finish the series")
        finally:
            summary = stream.stop()
            col.stop()
    assert summary["dropped"] == summary["dropped_at_stop"] == summary["gaps"] == 0, summary
    assert summary["frames_in"] == summary["published"] == n, summary
    assert [m.seq for m in col.frames] == list(range(n))
    assert all(m.header["dropped"] == 0 for m in col.frames)
    assert all(m.header["css"] is None and m.header["css_raw_mean"] is None for m in col.frames)


def test_publisher_restart_is_picked_up(zmq_ctx, lite_model):
    frames = _sim_frames(20, seed=3)
    # The first replay takes a free port itself (no window for another process to take it);
    # the queue holds a whole series, so a loaded machine cannot turn this into a drop test.
    replay = Replay(frames=frames, fps=40, series="first", wait_subscribers=1,
                    wait_timeout_s=PATIENCE)
    stream, col = _start_stream(zmq_ctx, lite_model, replay.bind(), max_queue=64)
    port = replay.port
    try:
        replay.start()
        replay.join(PATIENCE)
        col.wait_for(lambda: len(col.frames) >= 20, PATIENCE, "the first series")
        replay.close()  # the acquisition program goes away ...
        # ... and comes back on the same port with a new series; n2a-stream keeps running.
        again = _bind_retrying(lambda: Replay(frames=frames, fps=40, series="second", port=port,
                                              wait_subscribers=1, wait_timeout_s=PATIENCE))
        with again:
            again.start()
            again.join(PATIENCE)
            col.wait_for(lambda: len(col.frames) >= 40, PATIENCE, "the second series")
        stream.maybe_raise()
    finally:
        replay.close()
        summary = stream.stop()
        col.stop()
    series = [m.header["series"] for m in col.frames]
    assert series == ["first"] * 20 + ["second"] * 20
    assert [m.seq for m in col.frames] == list(range(20)) * 2
    assert summary["series"] == 2 and summary["gaps"] == 0 and summary["dropped"] == 0


def _bind_retrying(make, timeout: float = 10.0) -> Replay:
    """Bind a new replay on a port that a closed one held: ZeroMQ releases it a moment later."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        replay = make()
        try:
            replay.bind()
            return replay
        except OSError:
            replay.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_restart_with_same_series_name_and_shape_change_start_new_series(zmq_ctx, lite_model):
    from streamer.net import send_message
    from streamer.protocol import encode_frame, encode_start

    pub = zmq_ctx.make(zmq.XPUB)  # an XPUB sees n2a-stream's subscription arrive
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    stream, col = _start_stream(zmq_ctx, lite_model, f"tcp://127.0.0.1:{port}", max_queue=16)
    try:
        wait_for_subscriber(pub)
        send_message(pub, encode_start("s", meta={"pixel_size_nm": 0.05, "detector": "HAADF "
                                                                                     "(simulated)"}))
        plan = [((64, 64), 0), ((64, 64), 1), ((48, 80), 2), ((48, 80), 3), ((48, 80), 0)]
        rng = np.random.default_rng(0)
        for shape, seq in plan:
            f = rng.integers(0, 500, size=shape, dtype=np.uint16)
            send_message(pub, encode_frame(f, seq=seq, series="s", t_acq_ns=1))
        col.wait_for(lambda: len(col.frames) == 5, PATIENCE, "5 frames")
    finally:
        stream.stop()
        col.stop()
    names = [m.header["series"] for m in col.frames]
    assert names == ["s", "s", "s#2", "s#2", "s#3"]
    assert [m.arrays["denoised"].shape for m in col.frames] == [(64, 64)] * 2 + [(48, 80)] * 3
    # The series' settings differ from the model's training frames: flagged, still denoised.
    assert col.frames[0].header["meta_mismatch"] == ["pixel_size_nm"]
    starts = [m for m in col.messages if m.type == "start"]
    assert [m.series for m in starts] == ["s", "s#2", "s#3"]

