"""n2a-stream resamples each series so its atom columns' width suits the model (issue 12): real
loopback sockets (PUSH -> n2a-stream PULL, its XPUB -> a SUB collector), the bundled model in ONNX
Runtime. The zoom is estimated once per series, fixed within it, and named in every output header."""
from __future__ import annotations


import numpy as np
import pytest

from detector_styles import bundled_model, mean_correlation
from stream_testutils import push_series_through_stream
from noise2atom.scaling import applied_zoom, estimate_scaling, resample_pitches
from noise2atom.stem_sim import StemSimulator
from streamer import protocol


def _lattice(sigma_px: float, pitch_px: float, shape=(120, 100), n: int = 4, peak: float = 2.0):
    """(clean truth, uint16 Poisson counts) of a drifting crystal whose columns are ``sigma_px`` wide."""
    sim = StemSimulator(shape=shape, scene="crystal", sigma_px=sigma_px, pitch_px=pitch_px, seed=3)
    clean = np.stack([sim.frame(t).clean for t in range(n)])
    return clean, np.random.default_rng(1).poisson(clean * peak + 0.05).astype(np.uint16)


def _expected_zoom(frames: np.ndarray) -> float:
    """What the stream should estimate: from the series' first frame, in model units."""
    first = frames[0]
    return applied_zoom(resample_pitches(estimate_scaling(first).to_model(first)))


def _run(zmq_ctx, series: dict[str, np.ndarray], **config):
    """Push each series through one stream; the outputs by series and the status line."""
    out, status, summary, _ = push_series_through_stream(zmq_ctx, bundled_model(), series, **config)
    assert summary["dropped"] == 0 and summary["rejected"] == 0
    return out, status


def test_each_series_gets_its_own_zoom_and_keeps_its_shape(zmq_ctx):
    narrow_truth, narrow = _lattice(0.8, 7.0)  # columns 0.8 px wide: zoomed up
    _, wide = _lattice(2.4, 12.0, shape=(96, 112))  # 2.4 px wide: zoomed down
    noise = np.random.default_rng(0).poisson(2.0, (3, 120, 100)).astype(np.uint16)  # no lattice
    series = {"narrow": narrow, "noise": noise, "wide": wide}
    out, status = _run(zmq_ctx, series)
    zooms = {}
    for name, frames in series.items():
        msgs = out[name]
        assert [m.seq for m in msgs] == list(range(len(frames)))
        zs = {m.header["resample"] for m in msgs}
        assert len(zs) == 1, f"{name}: the zoom changed within the series ({zs})"
        zooms[name] = zs.pop()
        assert zooms[name] == pytest.approx(_expected_zoom(frames), rel=1e-6), name
        for m, frame in zip(msgs, frames):
            assert m.arrays["denoised"].shape == frame.shape, name
            assert m.header["timing"]["resample"] >= 0
    # each new series estimated again: up, none, down
    assert zooms["narrow"] > 1.2 and zooms["noise"] == 1.0 and zooms["wide"] < 0.8, zooms
    assert "resampled x" in status  # the last series ("wide") was resampled

    # the same narrow lattice at its own sampling: no zoom in the header, and a worse result
    off, status_off = _run(zmq_ctx, {"narrow": narrow}, resample=False)
    assert all(m.header["resample"] is None for m in off["narrow"])
    assert "resampled" not in status_off
    den_on = np.stack([m.arrays["denoised"] for m in out["narrow"]])
    den_off = np.stack([m.arrays["denoised"] for m in off["narrow"]])
    corr_on, corr_off = mean_correlation(den_on, narrow_truth), mean_correlation(den_off, narrow_truth)
    corr_raw = mean_correlation(narrow, narrow_truth)
    # Measured: raw 0.55; model aa3904eb5726 (tanh lite) as it is 0.62, resampled x1.63 0.72; the
    # lite-residual model of it. 24000 as it is 0.74, resampled 0.63 (zoomed up linearly: a couple of
    # counts). On this narrow lattice at 2 counts the new model does better unzoomed (at 10 counts
    # the two tie, at 50 the zoom wins, and on abTEM Au / SrTiO3 it wins at most doses:
    # models/README.md), so only "both denoise" is asserted, plus the exact pipeline above.
    assert corr_on > corr_raw + 0.05 and corr_off > corr_raw + 0.1, (corr_raw, corr_off, corr_on)


def test_output_header_resample_field_is_validated():
    frame = np.zeros((4, 4), np.float32)
    for good in (None, 1.0, 0.62, 2):
        parts = protocol.encode_frame(frame, seq=0, series="s", t_acq_ns=1, resample=good)
        assert protocol.decode([bytes(p) for p in parts]).header["resample"] == good
    for bad in (0.0, -1.0, float("nan"), float("inf"), "x1.5", True):
        parts = protocol.encode_frame(frame, seq=0, series="s", t_acq_ns=1, resample=bad)
        with pytest.raises(protocol.ProtocolError, match=r"'resample' must be .*\(got "):
            protocol.decode([bytes(p) for p in parts])
