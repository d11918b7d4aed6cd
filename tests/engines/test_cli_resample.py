"""n2a-denoise resamples each file so its atom columns' width suits the model (issue 12): real files
on disk, the bundled model through ONNX Runtime, the CLI's own entry point."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

import engines
from detector_styles import bundled_model, denoise_file, mean_correlation
from noise2atom.scaling import denoise_resampled, estimate_scaling, series_zoom, zoom_up_order
from noise2atom.stem_sim import StemSimulator

ENGINE = "onnxruntime"


def _narrow_lattice(n: int = 3):
    """(truth, uint16 counts): a crystal whose columns are 0.8 px wide, at 2 counts a column."""
    sim = StemSimulator(shape=(120, 100), scene="crystal", sigma_px=0.8, pitch_px=7.0, seed=3)
    clean = np.stack([sim.frame(t).clean for t in range(n)])
    return clean, np.random.default_rng(1).poisson(clean * 2.0 + 0.05).astype(np.uint16)


def _denoise(tmp_path, src, name: str, *extra: str, capsys):
    return denoise_file(tmp_path, src, name, *extra, capsys=capsys)


def test_files_are_resampled_by_default_and_not_with_no_resample(tmp_path, capsys):
    clean, counts = _narrow_lattice()
    src = tmp_path / "narrow.tif"
    tifffile.imwrite(src, counts, photometric="minisblack")
    noise = tmp_path / "noise.npy"
    np.save(noise, np.random.default_rng(0).poisson(2.0, (3, 120, 100)).astype(np.uint16))

    on, meta_on, report_on = _denoise(tmp_path, src, "on", capsys=capsys)
    norm = estimate_scaling(counts)
    pitches, zoom = series_zoom(norm.to_model(counts))
    assert zoom > 1.2 and meta_on["resample"] == pytest.approx(zoom, rel=1e-6)
    assert meta_on["resample_pitch_px"] == {"lattice": pytest.approx(pitches[0]),
                                            "denoised_at": pytest.approx(pitches[1])}
    assert f"resampled x{zoom:.3f}" in report_on
    assert on.shape == counts.shape
    # what the file holds is the model's output on the zoomed frames, zoomed back
    with engines.open_engine(bundled_model(), ENGINE) as engine:
        up_order = zoom_up_order(norm.to_model(counts[0]))  # a couple of counts: zoomed up linearly
        assert up_order == 1
        want = np.stack([norm.from_model(denoise_resampled(x, pitches[1], pitches[0],
                                                           lambda a: engine.infer(a[None])[0], up_order=up_order))
                         for x in norm.to_model(counts)])
    np.testing.assert_allclose(on, want, atol=1e-4)

    off, meta_off, report_off = _denoise(tmp_path, src, "off", "--no-resample", capsys=capsys)
    assert meta_off["resample"] is None and meta_off["resample_pitch_px"] is None
    assert "not resampled (--no-resample)" in report_off and "resampled x" not in report_off
    assert off.shape == counts.shape
    corr_on, corr_off, corr_raw = (mean_correlation(on, clean), mean_correlation(off, clean),
                                   mean_correlation(counts, clean))
    # Measured: raw 0.55; model aa3904eb5726 (tanh lite) as it is 0.62, resampled x1.63 0.72; the
    # lite-residual model of it. 24000 as it is 0.74, resampled 0.63 (zoomed up linearly: a couple of
    # counts). On this narrow lattice at 2 counts the new model does better unzoomed (at 10 counts
    # the two tie, at 50 the zoom wins, and on abTEM Au / SrTiO3 it wins at most doses:
    # models/README.md), so only "both denoise" is asserted, plus the exact pipeline above.
    assert corr_on > corr_raw + 0.05 and corr_off > corr_raw + 0.1, (corr_raw, corr_off, corr_on)

    _, meta_noise, report_noise = _denoise(tmp_path, noise, "noise", capsys=capsys)
    assert meta_noise["resample"] == 1.0 and meta_noise["resample_pitch_px"] is None
    assert "resample x1 (no lattice trusted" in report_noise
