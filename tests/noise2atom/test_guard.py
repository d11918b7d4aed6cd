"""The fidelity guard and the sampled live CSS on simulated frames with known truth."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from noise2atom.checkpoint import Normalisation
from noise2atom.guard import FidelityGuard, TrainingRange, counts_span
from noise2atom.metrics import RollingCSS, WindowGrid, ssim, to_unit
from noise2atom.scaling import estimate_scaling
from noise2atom.stem_sim import StemSimulator


def _frame(peak: float, shape=(256, 256), scene="crystal", seed=0):
    return StemSimulator(shape=shape, scene=scene, peak_counts=peak, seed=seed).frame(0)


@pytest.mark.parametrize("peak", [0.4, 2.0, 10.0])
def test_good_outputs_pass_and_broken_ones_are_flagged(peak):
    f = _frame(peak)
    s = estimate_scaling(f.noisy)
    guard = FidelityGuard(s, dtype=f.noisy.dtype)
    gauss = np.clip((ndimage.gaussian_filter(f.noisy.astype(float), 1.5) - s.lo) / (s.hi - s.lo), 0, 1)
    assert guard.check(f.noisy, f.clean) == []  # the truth itself (another contrast scale)
    assert guard.check(f.noisy, gauss.astype(np.float32)) == []  # a plain smoothing
    assert "flat_output" in guard.check(f.noisy, np.full(f.clean.shape, 0.4, np.float32))
    grey = (0.4 + 0.001 * np.random.default_rng(0).random(f.clean.shape)).astype(np.float32)
    assert "flat_output" in guard.check(f.noisy, grey)  # near-constant, a faint texture
    if peak >= 2:  # enough signal in one frame to see atoms removed from half of it
        half = np.where(np.arange(256)[None, :] < 128, f.clean, 0.1).astype(np.float32)
        assert guard.check(f.noisy, half) == ["structure_in_residual"]


def test_pure_noise_has_no_structure_and_a_flat_output_is_still_flagged():
    raw = np.random.default_rng(0).poisson(1.0, (256, 256)).astype(np.uint16) + 100
    guard = FidelityGuard(estimate_scaling(raw), dtype=raw.dtype)
    assert guard.check(raw, np.full(raw.shape, 0.5, np.float32)) == ["flat_output"]
    assert guard.report.raw_structure < 0.3 * guard.report.noise_var


def test_clipping_and_saturation():
    f = _frame(2.0)
    s = estimate_scaling(f.noisy)
    guard = FidelityGuard(s, dtype=np.uint16)
    sat = f.noisy.copy()
    sat[:, :8] = 65535  # 3 % at the ceiling
    assert "input_clipped" in guard.check(sat, f.clean)
    bright = f.noisy + np.uint16(200)  # the series got brighter than its first frame's scaling
    assert "input_clipped" in guard.check(bright, f.clean)
    assert "input_clipped" not in guard.check(f.noisy, f.clean)
    fl = (f.noisy / f.noisy.max()).astype(np.float32)
    fl[:, :8] = fl.max()  # float data: a plateau at the top
    fs = FidelityGuard(estimate_scaling(fl), dtype=np.float32)
    assert "input_clipped" in fs.check(fl, f.clean)


def test_dose_far_from_training_is_out_of_range():
    ref = TrainingRange(normalisation=Normalisation(lo=94, hi=181), counts_span=4.35)  # the bundled model's
    for peak, expected in ((1.0, []), (2.0, []), (500.0, ["out_of_training_range"])):
        f = _frame(peak)
        s = estimate_scaling(f.noisy)
        assert FidelityGuard(s, dtype=np.uint16, reference=ref).check(f.noisy, f.clean) == expected, peak
    # the counts a scaling spans do not depend on offset or gain
    counts = np.random.default_rng(1).poisson(_frame(2.0).clean * 2.0 + 0.05)
    spans = [counts_span(x, estimate_scaling(x)) for x in (counts, 15_000 + 8 * counts, -2_000 + 50 * counts)]
    assert spans[0] == pytest.approx(spans[1], rel=0.05) == pytest.approx(spans[2], rel=0.05)
    # noise-free data reads as a very high dose (what is left is the atoms' own curvature)
    assert counts_span(_frame(2.0).clean, Normalisation(lo=0, hi=1)) > 8 * 4.35


def test_sampled_css_estimates_the_full_ssim_mean():
    sim = StemSimulator(shape=(512, 512), scene="mixed", peak_counts=1.0, seed=1)
    a, b = sim.frame(0), sim.frame(1)
    lo, hi = np.percentile(a.noisy, [0.1, 99.9])
    assert not WindowGrid((512, 512)).exact
    for x, y, l, h in ((a.noisy, b.noisy, lo, hi), (a.clean, b.clean, 0.0, 1.0)):
        full = ssim(to_unit(x, l, h), to_unit(y, l, h))
        roll = RollingCSS(lo=l, hi=h)
        roll.update(y)
        sampled = roll.update(x)[0]
        assert sampled == pytest.approx(full, abs=0.005)
        exact = RollingCSS(lo=l, hi=h, sampled=False)
        exact.update(y)
        assert exact.update(x)[0] == pytest.approx(full, abs=1e-9)
    # raw CSS low, denoised-like CSS high: the sample keeps the contrast that matters
    assert sampled > 0.9


def test_window_grid_is_stratified_and_fixed_per_shape():
    g1, g2 = WindowGrid((512, 700)), WindowGrid((512, 700))
    np.testing.assert_array_equal(g1.rows, g2.rows)
    assert len(g1.rows) == 32 and len(g1.cols) == 128
    # one centre per stripe: rows increase, stay inside the 5 px border, cover the frame
    assert np.all(np.diff(g1.rows) > 0) and g1.rows[0] >= 5 and g1.rows[-1] <= 512 - 6
    assert g1.rows[0] < 5 + 502 / 32 and g1.rows[-1] >= 512 - 6 - 502 / 32
    # not one stride: the offsets within the stripes vary (no aliasing with a lattice)
    assert len(set(np.diff(g1.rows))) > 3


def test_a_mixture_model_is_out_of_range_beyond_its_training_doses():
    from types import SimpleNamespace

    config = SimpleNamespace(normalisation=Normalisation(lo=-1, hi=1),
                             meta={"peak_counts": [0.05, 50.0], "simulator": "noise2atom.mixture"})
    ref = TrainingRange.from_config(config)
    assert ref.counts_range == (0.05, 50.0) and ref.counts_span is None
    for peak, expected in ((0.4, []), (10.0, []), (2000.0, ["out_of_training_range"])):
        f = _frame(peak)
        s = estimate_scaling(f.noisy)
        assert FidelityGuard(s, dtype=np.uint16, reference=ref).check(f.noisy, f.clean) == expected, peak


def test_a_frame_too_small_for_any_window_is_flagged_not_passed():
    f = np.random.default_rng(0).poisson(2.0, (8, 8)).astype(np.uint16)
    guard = FidelityGuard(estimate_scaling(f), dtype=np.uint16)
    assert guard.check(f, np.full((8, 8), 0.5, np.float32)) == ["too_small_to_check"]
