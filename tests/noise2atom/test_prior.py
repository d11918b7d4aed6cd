"""Prior estimation from noisy frames: pitch, blob width and rotation of simulated series."""
from __future__ import annotations

import numpy as np
import pytest

from noise2atom.prior import PriorEstimateError, estimate_prior
from noise2atom.stem_sim import StemSimulator
from noise2atom.target_sim import TargetPrior


@pytest.mark.parametrize(
    ("pitch", "sigma", "rot", "dose"),
    [(8.0, 1.6, 10.0, 1.0), (11.3, 2.0, -20.0, 0.4), (11.3, 1.4, 0.0, 1.0), (8.0, 1.2, 30.0, 0.4)],
)
def test_recovers_pitch_width_rotation_from_noisy_crystal(pitch, sigma, rot, dose):
    sim = StemSimulator(shape=(160, 160), scene="crystal", pitch_px=pitch, sigma_px=sigma,
                        rotation_deg=rot, peak_counts=dose, seed=5)
    frames = np.stack([sim.frame(t).noisy for t in range(8)])
    est = estimate_prior(frames)
    assert est.pitch_px == pytest.approx(pitch, rel=0.10)
    assert est.sigma_px == pytest.approx(sigma, rel=0.30)
    assert abs(est.rotation_deg - rot) < 2.0
    assert est.reliable and est.n_orders >= 2


def test_nanoparticle_lattice_and_target_prior_kwargs():
    sim = StemSimulator(shape=(160, 160), scene="nanoparticle", pitch_px=9.0, sigma_px=1.5, seed=2)
    est = estimate_prior(np.stack([sim.frame(t).noisy for t in range(6)]))
    assert est.pitch_px == pytest.approx(9.0, rel=0.10)
    prior = TargetPrior(**est.target_prior_kwargs())
    assert prior.pitch_px == est.pitch_px
    assert prior.sigma_px[0] < est.sigma_px < prior.sigma_px[1]


def test_pure_noise_is_flagged_unreliable():
    noise = np.random.default_rng(0).poisson(1.0, (6, 96, 96))
    est = estimate_prior(noise)
    assert not est.reliable


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        (np.zeros((2, 16, 16)), r"at least 32 x 32 px \(got shape"),
        (np.zeros(100), r"\(got shape \(100,\)"),
        (np.zeros((2, 40, 40)), r"some contrast \(got constant frames\)"),
        (np.full((40, 40), np.nan), r"finite pixel values"),
    ],
)
def test_bad_input(frames, match):
    with pytest.raises(PriorEstimateError, match=match):
        estimate_prior(frames)
