"""Pitch resampling in noise2atom.scaling: estimate the lattice pitch, denoise at another pitch, back."""
from __future__ import annotations

import numpy as np
import pytest

from noise2atom.scaling import (MODEL_PITCH_PX, ZOOM_RANGE, applied_zoom, denoise_resampled, estimate_pitch,
                                estimate_scaling, resample_factor, resample_pitches, series_zoom,
                                width_unknown_target)
from noise2atom.stem_sim import StemSimulator


def smooth_lattice(size: int, pitch: float, rotation_deg: float = 10.0) -> np.ndarray:
    """A band-limited square lattice (model units, -1..1): cosines of period ``pitch`` px."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    a = np.deg2rad(rotation_deg)
    u = (xx * np.cos(a) + yy * np.sin(a)) * 2 * np.pi / pitch
    v = (-xx * np.sin(a) + yy * np.cos(a)) * 2 * np.pi / pitch
    return (0.5 * (np.cos(u) + np.cos(v))).astype(np.float32)


def test_the_factor_is_one_when_the_pitches_match_and_the_frame_goes_through_untouched():
    assert resample_factor(12.0, 12.0) == 1.0
    assert resample_factor(48.0, 12.0) == pytest.approx(0.25)
    frame = smooth_lattice(64, 12.0)
    seen = []
    out = denoise_resampled(frame, 12.0, 12.0, lambda x: seen.append(x) or -x)
    assert len(seen) == 1 and np.array_equal(seen[0], frame)
    assert np.array_equal(out, -frame)


def test_no_lattice_means_no_resampling():
    # one frame of noise has spectral peaks 10-20x its ring median: none may pass for a lattice
    for seed in range(12):
        for shape in [(64, 64), (96, 96), (2, 96, 96), (200, 256)]:
            noise = np.random.default_rng(seed).poisson(0.5, shape).astype(np.float32)
            assert estimate_pitch(noise) is None, (seed, shape)
    noise = np.random.default_rng(0).normal(size=(96, 96)).astype(np.float32)
    seen = []
    denoise_resampled(noise, 8.0, None, lambda x: seen.append(x.shape) or x)
    assert seen == [(96, 96)]


@pytest.mark.parametrize("pitch, target", [(48.0, 12.0), (16.0, 10.0), (6.0, 10.0)])
def test_identity_denoiser_round_trip_returns_the_lattice(pitch, target):
    frame = smooth_lattice(192, pitch)
    seen = []
    out = denoise_resampled(frame, target, pitch, lambda x: seen.append(x) or x)
    (small,) = seen
    assert small.shape == tuple(round(192 * target / pitch) for _ in range(2))
    # the network saw the lattice at the target pitch
    assert estimate_pitch(small) == pytest.approx(target, rel=0.08)
    assert out.shape == frame.shape and out.dtype == np.float32
    inner = np.s_[8:-8, 8:-8]  # zoom's edge handling differs from the lattice's continuation
    # smoothing before zooming down costs a little contrast: exp(-2 pi^2 (0.5 / f)^2 / pitch^2) ~ 0.97
    err = np.abs(out[inner] - frame[inner])
    assert err.max() < 0.15 and err.mean() < 0.05, (err.max(), err.mean())


@pytest.mark.parametrize("target", [7.0, 9.5, 12.0, 15.0, 15.5, 16.0, 17.0])
def test_a_constant_frame_comes_back_constant_to_its_last_pixel(target):
    # 94 px at pitch 6.9 -> 15.5 px is 211 px, and 211 -> 94 px put zoom's last row just past the edge
    frame = np.full((94, 94), 0.25, np.float32)
    out = denoise_resampled(frame, target, 6.9, lambda x: x)
    np.testing.assert_allclose(out, 0.25, atol=1e-5)


def test_estimate_pitch_finds_the_simulated_lattice():
    frames = np.stack([StemSimulator(shape=(192, 192), scene="crystal", pitch_px=14, sigma_px=2.5, peak_counts=2,
                                     rotation_deg=7, seed=1).frame(t).noisy for t in range(2)])
    assert estimate_pitch(frames) == pytest.approx(14, rel=0.05)


def test_resample_pitches_bring_the_column_width_to_the_target():
    frames = np.stack([StemSimulator(shape=(192, 192), scene="crystal", pitch_px=14, sigma_px=2.5, peak_counts=2,
                                     rotation_deg=7, seed=1).frame(t).noisy for t in range(2)])
    pitch, target = resample_pitches(frames, target_sigma_px=1.25)
    assert pitch == pytest.approx(14, rel=0.05)
    assert target == pytest.approx(7, rel=0.15)  # sigma 2.5 -> 1.25: half the pitch
    noise = np.random.default_rng(0).poisson(0.5, (2, 96, 96)).astype(np.float32)
    assert resample_pitches(noise) is None


def test_a_lattice_whose_width_cannot_be_fitted_is_zoomed_by_its_pitch():
    # A honeycomb at a few counts: the lattice stands out, but the prior's square-lattice orders
    # give no width. The pitch alone brings it up to MODEL_PITCH_PX, by at most ZOOM_RANGE[1].
    frames = np.stack([StemSimulator(shape=(96, 96), scene="film", lattice="hexagonal", pitch_px=6,
                                     basis=((0, 0, 1), (1 / 3, 1 / 3, 1)), sigma_px=1.2, peak_counts=2,
                                     seed=1).frame(t).noisy for t in range(4)])
    x = estimate_scaling(frames).to_model(frames)
    pitch, target = resample_pitches(x)
    assert 4 < pitch < 7
    assert target == pytest.approx(min(MODEL_PITCH_PX, ZOOM_RANGE[1] * pitch))
    assert series_zoom(x)[1] == pytest.approx(target / pitch)
    assert width_unknown_target(MODEL_PITCH_PX) is None  # never a zoom down without a width


def test_bad_input_is_refused_with_what_was_got():
    with pytest.raises(ValueError, match=r"got pitch 0"):
        resample_factor(0.0, 12.0)
    with pytest.raises(ValueError, match=r"got shape \(2, 64, 64\)"):
        denoise_resampled(np.zeros((2, 64, 64), np.float32), 12.0, 24.0, lambda x: x)
    with pytest.raises(ValueError, match=r"at least 16 px"):
        denoise_resampled(np.zeros((40, 40), np.float32), 4.0, 40.0, lambda x: x)
    with pytest.raises(ValueError, match=r"changed the shape"):
        denoise_resampled(np.zeros((64, 64), np.float32), 6.0, 12.0, lambda x: x[:-1])


def _model_units(sigma_px: float, pitch_px: float, shape=(256, 256)) -> np.ndarray:
    f = StemSimulator(shape=shape, scene="crystal", sigma_px=sigma_px, pitch_px=pitch_px, peak_counts=20,
                      seed=3).frame(0).noisy
    return estimate_scaling(f).to_model(f)


def test_series_zoom_applies_only_zooms_inside_its_range():
    narrow = _model_units(0.8, 7.0)
    pitches, zoom = series_zoom(narrow)
    assert pitches is not None and ZOOM_RANGE[0] <= zoom <= ZOOM_RANGE[1] and zoom > 1.2
    assert zoom == pytest.approx(applied_zoom(resample_pitches(narrow)))
    wide = _model_units(5.0, 24.0)  # columns 5 px wide: a zoom of ~0.25, outside the range
    assert applied_zoom(resample_pitches(wide)) < ZOOM_RANGE[0]
    assert series_zoom(wide) == (None, 1.0)
    noise = np.random.default_rng(0).normal(size=(4, 96, 96)).astype(np.float32)
    assert series_zoom(noise) == (None, 1.0)
