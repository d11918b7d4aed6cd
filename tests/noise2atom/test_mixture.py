"""The random-microscope training mixture, its per-series scaling, and the pitch resampling."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from noise2atom.checkpoint import load_checkpoint
from noise2atom.cli import main
from noise2atom.mixture import MixtureData, draw_settings, simulate_mixture_series
from noise2atom.scaling import SCALING_PERCENTILES, denoise_resampled, pitch_resample_factor
from noise2atom.stem_sim import StemSimulator


def test_settings_span_the_promised_ranges():
    rng = np.random.default_rng(1)
    draws = [draw_settings(rng) for _ in range(400)]
    peaks = np.array([d.peak_counts for d in draws])
    pitches = np.array([d.spacing_px for d in draws])  # the nearest columns' distance
    assert 0.05 <= peaks.min() < 0.1 and 1_000 < peaks.max() <= 2_000
    lows = np.array([d.brightness_lo for d in draws])
    assert 0.1 <= lows.min() < 0.2 and np.mean(lows == 0.9) > 0.25  # one element, or a spread of brightnesses
    assert 4 <= pitches.min() < 5 and 25 < pitches.max() <= 30
    blur = np.array([d.sigma_px for d in draws]) / pitches
    sharp = blur[np.array([d.sigma_px for d in draws]) > 0.6]  # above the 0.6 px floor
    assert sharp.min() < 0.07 and 0.2 < sharp.max() <= 0.25  # sharp columns too, as abTEM's zoomed
    assert {d.contrast for d in draws} == {"haadf", "abf"}
    assert {d.scene for d in draws} == {"crystal", "nanoparticle", "mixed", "film"}
    hexagonal = np.array([d.lattice == "hexagonal" for d in draws])
    assert 0.09 < hexagonal.mean() < 0.21  # HEXAGONAL_FRACTION
    assert {len(d.basis) for d in draws if d.lattice == "hexagonal"} == {1, 2}  # one column, or a honeycomb
    square = [d for d in draws if d.lattice == "square"]
    with_basis = np.array([len(d.basis) > 1 for d in square])
    assert 0.18 < with_basis.mean() < 0.32  # BASIS_FRACTION
    dims = [b for d in square for _, _, b in d.basis[1:]]
    assert 0.05 <= min(dims) < 0.1 and max(dims) <= 0.9
    assert min(d.offset for d in draws) < 0 < max(d.offset for d in draws)
    zooms = np.array([d.zoom for d in draws])
    assert 0.35 < np.mean(zooms == 1) < 0.65 and zooms.min() < 0.6 and zooms.max() > 1.8
    assert np.all(pitches / zooms >= 2.5)  # the recorded lattice stays resolvable


@pytest.mark.parametrize("zoom", [0.6, 1.7])
def test_a_zoomed_series_is_scaled_as_recorded_and_carries_the_correlated_noise_of_zooming(zoom):
    rng = np.random.default_rng(4)
    base = draw_settings(rng)
    settings = type(base)(**{**base.__dict__, "contrast": "haadf", "peak_counts": 5.0, "scene": "crystal",
                             "pitch_px": 10.0, "sigma_px": 1.5, "read_noise": 0.0, "line_noise": 0.0,
                             "scan_jitter_px": 0.0, "clip_at_zero": False, "zoom": zoom})
    s = simulate_mixture_series(rng, size=80, n_frames=2, settings=settings)
    assert s.noisy.shape == s.target.shape == s.clean.shape == (2, 80, 80)
    noise = (s.noisy - s.target)[0]
    r = np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]  # neighbours along a row
    assert r > 0.3  # white noise gives ~0; a zoom (either way) makes neighbours share counts
    assert np.corrcoef(s.target.ravel(), s.clean.ravel())[0, 1] > 0.95


@pytest.mark.parametrize("contrast", ["haadf", "abf"])
def test_each_series_is_scaled_by_its_own_frames_and_atoms_have_the_right_sign(contrast):
    rng = np.random.default_rng(2)
    base = draw_settings(rng)
    s = simulate_mixture_series(rng, size=96, n_frames=2, settings=type(base)(
        **{**base.__dict__, "contrast": contrast, "peak_counts": 20.0, "scene": "crystal",
           "pitch_px": 8.0, "sigma_px": 1.5, "clip_at_zero": False, "zoom": 1.0}))
    lo, hi = np.percentile(s.noisy, SCALING_PERCENTILES)
    assert lo == pytest.approx(-1, abs=1e-4) and hi == pytest.approx(1, abs=1e-4)
    r = np.corrcoef(s.target.ravel(), s.clean.ravel())[0, 1]
    assert (r > 0.95) if contrast == "haadf" else (r < -0.95)
    # the target is the noise-free expectation: the noisy frames scatter around it
    assert abs(float((s.noisy - s.target).mean())) < 0.05 * float(np.ptp(s.target))


def test_mixture_data_pairs_and_refresh():
    data = MixtureData(n_series=3, size=48, n_frames=2, seed=0)
    before = [b.settings.seed for b in data.bank]
    x, y = data.sample_pairs(5, 32, np.random.default_rng(0))
    assert x.shape == y.shape == (5, 1, 32, 32) and x.dtype == np.float32
    assert float(np.var(x - y)) > 0  # noisy input, noise-free target
    for _ in range(6):
        data.sample_pairs(1, 32, np.random.default_rng(0))
    assert [b.settings.seed for b in data.bank] != before  # the bank is refreshed as it trains


def test_supervised_mixture_training_writes_a_checkpoint(capsys, tmp_path):
    out = tmp_path / "mix.safetensors"
    rc = main(["--mixture", "--method", "supervised", "--mixture-series", "4", "--sim-size", "64",
               "--patch", "32", "--batch", "2", "--iterations", "3", "--quiet", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    ckpt = load_checkpoint(out)
    assert ckpt.config.method == "supervised" and ckpt.config.iteration == 3
    assert ckpt.config.data.meta["simulator"] == "noise2atom.mixture"


def test_supervised_needs_a_truth(capsys, tmp_path):
    p = tmp_path / "f.npy"
    np.save(p, np.random.default_rng(0).poisson(2, (2, 64, 64)).astype(np.uint16))
    rc = main([str(p), "--method", "supervised", "--iterations", "1", "--patch", "32",
               "--out", str(tmp_path / "m.safetensors")])
    err = capsys.readouterr().err
    assert rc == 2 and "needs training data with a truth" in err


def test_pitch_resample_only_above_the_models_range():
    coarse = StemSimulator(shape=(384, 384), scene="crystal", pitch_px=48, sigma_px=8, peak_counts=5,
                           rotation_deg=10, seed=3).frame(0).noisy
    fine = StemSimulator(shape=(256, 256), scene="crystal", pitch_px=8, sigma_px=1.6, peak_counts=5,
                         seed=3).frame(0).noisy
    assert pitch_resample_factor(coarse) == pytest.approx(12 / 48, rel=0.1)
    assert pitch_resample_factor(fine) == 1.0
    seen = []
    out = denoise_resampled(coarse.astype(np.float32), 12.0, 48.0, lambda im: seen.append(im.shape) or im)
    assert seen == [(96, 96)] and out.shape == coarse.shape
    assert np.corrcoef(out.ravel(), coarse.astype(np.float32).ravel())[0, 1] > 0.5


def test_a_series_with_a_basis_has_dim_columns_between_the_bright_ones():
    rng = np.random.default_rng(3)
    s = next(d for d in (draw_settings(rng) for _ in range(100)) if len(d.basis) == 4)
    s = dataclasses.replace(s, scene="film", peak_counts=2_000.0, background_counts=0.0, zoom=1.0,
                            brightness_lo=0.99, pitch_px=24.0, sigma_px=1.5, contrast="haadf")
    series = simulate_mixture_series(np.random.default_rng(0), size=96, n_frames=1, settings=s)
    assert s.spacing_px == pytest.approx(12.0)
    sim = StemSimulator(shape=(96, 96), scene="film", pitch_px=24.0, sigma_px=1.5, rotation_deg=s.rotation_deg,
                        drift_px_per_frame=0.3, site_brightness=(0.99, 1.0), basis=s.basis, seed=s.seed)
    assert np.array_equal(sim.frame(0).clean, series.clean[0])  # the simulator's own cell
    peaks = np.array([series.clean[0][int(round(r)), int(round(c))] for r, c in sim.frame(0).positions
                      if 3 <= r < 93 and 3 <= c < 93])
    edge, centre = s.basis[2][2], s.basis[1][2]
    assert np.sum(peaks < (edge + 0.05) * peaks.max()) > 0.4 * len(peaks)  # half the columns are the faint edges
    assert np.any(np.abs(peaks / peaks.max() - centre) < 0.1)


def test_a_honeycomb_series_is_the_simulators_own_with_columns_a_spacing_apart():
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(5)
    s = next(d for d in (draw_settings(rng) for _ in range(200)) if d.lattice == "hexagonal" and len(d.basis) == 2)
    s = dataclasses.replace(s, scene="film", peak_counts=2_000.0, background_counts=0.0, zoom=1.0,
                            pitch_px=14.0, sigma_px=1.0, contrast="haadf")
    series = simulate_mixture_series(np.random.default_rng(0), size=96, n_frames=1, settings=s)
    sim = StemSimulator(shape=(96, 96), scene="film", pitch_px=14.0, sigma_px=1.0, rotation_deg=s.rotation_deg,
                        drift_px_per_frame=0.3, site_brightness=(s.brightness_lo, 1.0), basis=s.basis,
                        lattice="hexagonal", seed=s.seed)
    assert np.array_equal(sim.frame(0).clean, series.clean[0])
    pos = sim.frame(0).positions
    nearest = cKDTree(pos).query(pos, k=2)[0][:, 1]
    assert np.median(nearest) == pytest.approx(s.spacing_px, rel=0.02)  # 14 / sqrt 3
