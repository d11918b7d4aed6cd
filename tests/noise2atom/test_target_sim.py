"""Target-domain simulator: its statistics match its parameters."""
from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from noise2atom.target_sim import TargetPrior, simulate_clear, simulate_clear_truth


def test_defaults_reproduce_the_authors_statistics():
    b = simulate_clear_truth(300, 128, rng=0)
    counts = np.array([len(p) for p in b.positions])
    # 16 x 16 sites in a 128² crop, 11% occupied -> ~28 atoms; spread like the authors' 11-51
    assert counts.mean() == pytest.approx(0.11 * 256, rel=0.06)
    assert counts.min() >= 8 and counts.max() <= 55
    assert b.images.dtype == np.float32 and b.images.shape == (300, 128, 128)
    assert b.images.min() == 0.0 and b.images.max() <= 1.0
    assert (b.images == 0).mean() > 0.3  # background exactly 0, and plenty of it
    assert b.sigmas.min() >= 1.0 and b.sigmas.max() <= 3.16
    vals, freq = np.unique(np.concatenate(b.intensities), return_counts=True)
    assert vals.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert freq.min() / freq.max() > 0.85  # uniform over the four levels


def test_pitch_from_the_power_spectrum():
    for pitch in (8.0, 11.0):
        prior = TargetPrior(pitch_px=pitch, occupancy=0.6, sigma_px=(1.0, 1.0), jitter_px=0.0)
        imgs = simulate_clear(40, 128, prior, rng=1)
        ps = np.mean(np.abs(np.fft.rfft2(imgs - imgs.mean(axis=(1, 2), keepdims=True))) ** 2, axis=0)
        ps[:2, :2] = 0  # ignore the DC neighbourhood (blob envelope)
        row = ps[0, 4:]  # along x, rotation 0
        k = 4 + int(np.argmax(row))
        assert 128 / k == pytest.approx(pitch, rel=0.06)


def test_positions_on_the_lattice_with_continuous_jitter():
    exact = simulate_clear_truth(5, 96, TargetPrior(jitter_px=0.0), rng=2)
    for pos in exact.positions:
        phase = np.mod(pos, 8.0)
        spread = np.abs(((phase - phase[0] + 4) % 8) - 4)
        assert spread.max() < 1e-9  # one lattice, one phase per image
    jit = simulate_clear_truth(40, 96, TargetPrior(jitter_px=1.0), rng=2)
    offs = []
    for pos in jit.positions:
        d = pos - pos[0]
        offs.append(((d + 4) % 8) - 4)  # relative offsets, each the difference of two jitters
    offs = np.concatenate(offs)[1:]
    assert np.abs(offs).max() <= 2.0 + 1e-9
    assert abs(offs.mean()) < 0.1  # centred (the original's {-1, 0} was biased)
    assert len(np.unique(np.round(offs, 3))) > 200  # continuous, not a few integer values


def test_blob_width_is_a_std_and_peaks_are_the_intensity_levels():
    for sig in (1.0, 2.5):
        prior = TargetPrior(pitch_px=24, occupancy=0.5, sigma_px=(sig, sig), jitter_px=0.0)
        b = simulate_clear_truth(20, 96, prior, rng=3)
        widths, peaks, levels = [], [], []
        r = int(3 * sig)
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        for img, pos, amp in zip(b.images, b.positions, b.intensities):
            for (py, px), a in zip(pos, amp):
                cy, cx = int(round(py)), int(round(px))
                if r <= cy < 96 - r and r <= cx < 96 - r:
                    w = img[cy - r:cy + r + 1, cx - r:cx + r + 1].astype(float)
                    dy, dx = yy + cy - py, xx + cx - px
                    widths.append(np.sqrt((w * (dy**2 + dx**2)).sum() / w.sum() / 2))
                    peaks.append(img[cy, cx] / np.exp(-((cy - py) ** 2 + (cx - px) ** 2) / (2 * sig**2)))
                    levels.append(a / 4)
        # second moment of a blob truncated at 3 sigma is a few % below sigma
        assert np.median(widths) == pytest.approx(sig, rel=0.06)
        np.testing.assert_allclose(peaks, levels, rtol=1e-4)  # fixed scale: intensity 4 -> 1


def test_fixed_scale_not_min_max():
    dim = simulate_clear(4, 64, TargetPrior(intensities=(1, 1)), rng=4)
    assert 0.95 < dim.max() <= 1.0  # intensity 1 of range (1, 1) -> peak 1
    quarter = simulate_clear(4, 64, TargetPrior(intensities=(1, 4), occupancy=0.02, sigma_px=(2, 2)), rng=4)
    assert quarter.max() <= 1.0


def test_continuous_intensities_and_rotation():
    prior = TargetPrior(integer_intensities=False, rotation_deg=(10.0, 30.0), occupancy=0.3)
    b = simulate_clear_truth(30, 64, prior, rng=5)
    vals = np.concatenate(b.intensities)
    assert len(np.unique(vals)) > 100 and vals.min() >= 1 and vals.max() <= 4
    assert b.rotations_deg.min() >= 10 and b.rotations_deg.max() <= 30 and np.ptp(b.rotations_deg) > 5


def test_cluster_mode_is_compact_with_the_same_mean_count():
    lat = simulate_clear_truth(60, 128, TargetPrior(), rng=6)
    clu = simulate_clear_truth(60, 128, TargetPrior(mode="cluster", jitter_px=0.0), rng=6)

    def gyration(p):
        return np.sqrt(((p - p.mean(0)) ** 2).sum(1).mean())

    g_lat = np.median([gyration(p) for p in lat.positions])
    g_clu = np.median([gyration(p) for p in clu.positions if len(p) > 3])
    assert g_clu < 0.6 * g_lat
    n_lat = np.mean([len(p) for p in lat.positions])
    n_clu = np.mean([len(p) for p in clu.positions])
    assert n_clu == pytest.approx(n_lat, rel=0.25)
    # neighbours in the cluster sit one pitch apart
    nn = []
    for p in clu.positions:
        if len(p) > 3:
            d = np.hypot(*(p[:, None] - p[None]).transpose(2, 0, 1))
            np.fill_diagonal(d, np.inf)
            nn.append(np.median(d.min(1)))
    assert np.median(nn) == pytest.approx(8.0, rel=0.02)


def test_seeded_and_validated():
    np.testing.assert_array_equal(simulate_clear(3, 32, rng=7), simulate_clear(3, 32, rng=7))
    with pytest.raises(ValidationError, match="low <= high"):
        TargetPrior(sigma_px=(3.0, 1.0))
    with pytest.raises(ValidationError, match="extra"):
        TargetPrior(sigma=2.0)
    with pytest.raises(ValidationError):
        TargetPrior(occupancy=0.0)
    with pytest.raises(ValueError, match="positive integer"):
        simulate_clear(0)
    assert TargetPrior.model_validate_json(TargetPrior(pitch_px=11.3).model_dump_json()).pitch_px == 11.3
