"""Metrics: SSIM against skimage, CSS offline / rolling, PSNR, atom detection and scoring."""
from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from noise2atom.metrics import (
    RollingCSS,
    count_in_mask,
    css,
    detect_atoms,
    false_atoms_per_100nm2,
    psnr,
    score_atoms,
    ssim,
    to_unit,
)
from noise2atom.stem_sim import StemSimulator


def _sk(a, b):
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1.0)


@pytest.mark.parametrize("shape", [(11, 11), (32, 32), (40, 71), (97, 23)])
def test_ssim_matches_skimage(shape):
    rng = np.random.default_rng(sum(shape))
    a = rng.random(shape)
    b = np.clip(a + rng.normal(0, 0.2, shape), 0, 1)
    assert ssim(a, b) == pytest.approx(_sk(a, b), abs=1e-4)
    c = ndimage_smooth(rng.random(shape))
    assert ssim(a, c) == pytest.approx(_sk(a, c), abs=1e-4)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def ndimage_smooth(x):
    from scipy import ndimage
    return ndimage.gaussian_filter(x, 2.0)


def test_ssim_matches_skimage_on_simulated_frames():
    sim = StemSimulator(shape=(64, 80), scene="mixed", seed=3)
    f = sim.frame(0)
    noisy = to_unit(f.noisy)
    assert ssim(noisy, f.clean) == pytest.approx(_sk(noisy, f.clean.astype(np.float64)), abs=1e-4)
    assert ssim(f.clean, f.clean * 0.5, data_range=1.0) < 1.0


def test_ssim_rejects_bad_input():
    with pytest.raises(ValueError, match=r"same shape \(got"):
        ssim(np.zeros((16, 16)), np.zeros((16, 17)))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((8, 16)), np.zeros((8, 16)))
    with pytest.raises(ValueError, match="2-D image"):
        ssim(np.zeros((2, 16, 16)), np.zeros((2, 16, 16)))


def test_to_unit():
    x = np.array([[1.0, 3.0], [5.0, 9.0]])
    np.testing.assert_allclose(to_unit(x), [[0, 0.25], [0.5, 1.0]])
    np.testing.assert_allclose(to_unit(x, lo=3, hi=5), [[0, 0], [1, 1]])
    assert not to_unit(np.full((3, 3), 7.0)).any()


def test_css_uses_one_sequence_min_max():
    rng = np.random.default_rng(0)
    seq = rng.random((4, 24, 24)) * 100 + 50
    lo, hi = seq.min(), seq.max()
    expected = [_sk((seq[t] - lo) / (hi - lo), (seq[t - 1] - lo) / (hi - lo)) for t in range(1, 4)]
    np.testing.assert_allclose(css(seq), expected, atol=1e-4)
    with pytest.raises(ValueError, match="T >= 2"):
        css(seq[:1])


def test_rolling_css_equals_offline_with_same_limits():
    sim = StemSimulator(shape=(48, 48), scene="crystal", seed=9)
    frames = np.stack([sim.frame(t).noisy for t in range(6)]).astype(np.float64)
    lo, hi = np.percentile(frames, [1, 99.5])
    roll = RollingCSS(window=3, lo=lo, hi=hi)
    got = [roll.update(f) for f in frames]
    assert got[0] == (None, None)
    offline = [ssim(to_unit(frames[t], lo, hi), to_unit(frames[t - 1], lo, hi)) for t in range(1, 6)]
    np.testing.assert_allclose([g[0] for g in got[1:]], offline, rtol=0, atol=1e-12)
    means = [np.mean(offline[max(0, i - 2):i + 1]) for i in range(5)]
    np.testing.assert_allclose([g[1] for g in got[1:]], means, atol=1e-12)
    # with the sequence's own min-max as limits it equals the offline CSS definition
    roll2 = RollingCSS(window=10, lo=frames.min(), hi=frames.max())
    live = [roll2.update(f)[0] for f in frames][1:]
    np.testing.assert_allclose(live, css(frames), atol=1e-12)
    # a shape change restarts
    assert roll.update(np.zeros((20, 20))) == (None, None)


def test_rolling_css_rejects_bad_settings():
    with pytest.raises(ValueError, match="window must be a positive integer"):
        RollingCSS(window=0)
    with pytest.raises(ValueError, match="hi must be greater than lo"):
        RollingCSS(lo=1.0, hi=1.0)
    with pytest.raises(ValueError, match=r"at least 11x11 for CSS \(got \(8, 8\)\)"):
        RollingCSS().update(np.zeros((8, 8)))


def test_psnr():
    truth = np.zeros((8, 8))
    assert psnr(truth, truth) == math.inf
    assert psnr(truth + 0.01, truth) == pytest.approx(40.0)
    assert psnr(truth + 10, truth, data_range=100) == pytest.approx(20.0)


# ---------------------------------------------------------------- atom scoring (issue 6)
def _lattice_truth():
    r, c = np.mgrid[8:60:8, 8:60:8]
    return np.stack([r.ravel(), c.ravel()], 1).astype(float) + 0.3


def test_perfect_output_scores_f1_one_error_zero():
    truth = _lattice_truth()
    s = score_atoms(truth.copy(), truth, tol_px=2.0)
    assert (s.f1, s.precision, s.recall, s.rmse_px) == (1.0, 1.0, 1.0, 0.0)
    assert (s.n_true, s.n_found, s.n_false, s.n_missed) == (len(truth), len(truth), 0, 0)


def test_one_removed_one_added_scores_by_hand():
    truth = _lattice_truth()
    n = len(truth)  # 49
    found = np.concatenate([truth[1:], [[2.0, 62.0]]])  # drop atom 0, invent one far from all
    found[5] += [0.6, -0.8]  # one slightly displaced atom (distance 1.0)
    s = score_atoms(found, truth, tol_px=2.0)
    tp = n - 1
    assert s.precision == pytest.approx(tp / n)  # 48 of 49 found are real
    assert s.recall == pytest.approx(tp / n)  # 48 of 49 real are found
    assert s.f1 == pytest.approx(2 * tp / (2 * n))
    assert s.rmse_px == pytest.approx(math.sqrt(1.0 / tp))
    assert (s.n_false, s.n_missed, s.n_found, s.n_true) == (1, 1, n, n)


def test_matching_is_one_to_one_and_optimal():
    truth = np.array([[10.0, 10.0], [10.0, 12.0]])
    # greedy nearest-first would pair found[0] with truth[1] (0.4) and leave found[1] unmatched
    found = np.array([[10.0, 11.6], [10.0, 8.6]])
    s = score_atoms(found, truth, tol_px=1.5)
    assert s.n_false == 0 and s.n_missed == 0 and s.f1 == 1.0
    two_on_one = score_atoms(np.array([[10.0, 10.0], [10.0, 10.2]]), truth[:1], tol_px=1.0)
    assert (two_on_one.n_false, two_on_one.precision, two_on_one.recall) == (1, 0.5, 1.0)
    assert score_atoms(found, truth, tol_px=0.1).f1 == 0.0


def test_blank_output_high_css_low_f1():
    sim = StemSimulator(shape=(64, 64), scene="crystal", seed=2, drift_px_per_frame=0.0)
    s = sim.series(4)
    blank = np.zeros_like(s.clean)
    assert css(blank).mean() > 0.99
    found = detect_atoms(blank[0], sigma_px=sim.sigma_px)
    score = score_atoms(found, s.positions[0], tol_px=2.0)
    assert score.f1 == 0.0 and score.n_missed == len(s.positions[0])
    # while the truth itself scores F1 ~ 1 through the same detector
    found = detect_atoms(s.clean[0], sigma_px=sim.sigma_px)
    good = score_atoms(found, s.positions[0], tol_px=2.0, shape=(64, 64), border_px=2.0)
    assert good.f1 > 0.97 and good.rmse_px < 0.3
    # without the border rule, tails of atoms centred just outside the frame count as false
    assert score_atoms(found, s.positions[0], tol_px=2.0).n_false >= good.n_false


def test_detect_atoms_subpixel_on_clean_and_few_false_in_vacuum():
    sim = StemSimulator(shape=(128, 128), scene="nanoparticle", seed=7, drift_px_per_frame=0.0)
    f = sim.frame(0)
    found = detect_atoms(f.clean, sigma_px=sim.sigma_px)
    sc = score_atoms(found, f.positions, tol_px=2.0, shape=f.clean.shape, border_px=2.0)
    assert sc.f1 > 0.95 and sc.rmse_px < 0.3
    assert count_in_mask(found, f.vacuum_mask) == 0
    raw = detect_atoms(f.noisy.astype(float), sigma_px=sim.sigma_px)
    assert score_atoms(raw, f.positions, tol_px=2.0, shape=f.clean.shape, border_px=2.0).f1 < sc.f1


def test_detect_atoms_threshold_and_plateau():
    img = np.zeros((20, 20))
    img[5, 5] = 1.0
    img[14, 14] = 0.3
    img[10, 2:4] = 0.8  # a 2-px plateau: one atom at its centre
    pts = detect_atoms(img, sigma_px=1.0, smooth_px=0, threshold=0.5)
    np.testing.assert_allclose(sorted(map(tuple, pts)), [(5, 5), (10, 2.5)], atol=1e-9)
    assert len(detect_atoms(img, sigma_px=1.0, smooth_px=0, threshold=0.1)) == 3
    with pytest.raises(ValueError, match="finite"):
        detect_atoms(np.full((8, 8), np.nan))


def test_border_rule_counts_only_the_interior():
    truth = np.array([[1.0, 10.0], [10.0, 10.0], [18.5, 5.0]])
    found = np.array([[1.3, 10.0], [10.0, 10.2], [0.5, 3.0], [12.0, 18.8]])
    s = score_atoms(found, truth, tol_px=1.0, shape=(20, 20), border_px=2.0)
    # interior: truth[1] matched by found[1]; found[2], found[3], truth[0], truth[2] in the border
    assert (s.n_true, s.n_found, s.n_false, s.n_missed, s.f1) == (1, 1, 0, 0, 1.0)
    assert s.rmse_px == pytest.approx(0.2)
    whole = score_atoms(found, truth, tol_px=1.0)
    assert (whole.n_true, whole.n_found, whole.n_false, whole.n_missed) == (3, 4, 2, 1)


def test_counts_in_mask_and_per_area():
    mask = np.zeros((10, 10), bool)
    mask[:5] = True  # 50 px
    found = np.array([[1.2, 1.0], [4.4, 9.0], [4.6, 9.0], [20.0, 1.0], [-3, 2]])
    assert count_in_mask(found, mask) == 2
    # 2 atoms in 50 px of 0.1 nm -> 0.5 nm² -> 400 per 100 nm²
    assert false_atoms_per_100nm2(found, mask, 0.1) == pytest.approx(400.0)
    with pytest.raises(ValueError, match="no vacuum pixels"):
        false_atoms_per_100nm2(found, np.zeros((10, 10), bool), 0.1)
    with pytest.raises(ValueError, match=r"shape \(K, 2\)"):
        score_atoms(np.zeros((3, 3)), found, tol_px=1.0)
