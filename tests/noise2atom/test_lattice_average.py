"""noise2atom.lattice_average: the translations are the lattice's, a perfect crystal gets closer to its
truth, and what does not repeat (a vacancy, an amorphous frame) is left as it was."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from noise2atom.lattice_average import lattice_average, lattice_offsets
from noise2atom.stem_sim import StemSimulator


def _columns(shape=(128, 128), pitch=9.0, angle_deg=11.0, sigma=1.3, missing=()):
    """Gaussian columns on a rotated square lattice (peak 1); ``missing``: (i, j) cells left empty."""
    a = pitch * np.array([np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))])
    b = np.array([-a[1], a[0]])
    y, x = np.mgrid[:shape[0], :shape[1]].astype(np.float64)
    img = np.zeros(shape)
    n = int(max(shape) / pitch) + 3
    for i in range(-n, 2 * n):
        for j in range(-n, 2 * n):
            if (i, j) in missing:
                continue
            cx, cy = i * a + j * b
            if -5 < cx < shape[1] + 5 and -5 < cy < shape[0] + 5:
                img += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma ** 2))
    return img.astype(np.float32), a, b


def _pilot_and_raw(truth, *, pilot_error=0.06, noise=0.5, seed=0):
    """A stand-in for the network's output (the truth plus a smooth error of its own) and the raw frame."""
    rng = np.random.default_rng(seed)
    err = ndimage.gaussian_filter(rng.standard_normal(truth.shape), 1.5)
    pilot = truth + pilot_error * err / err.std()
    raw = truth + noise * rng.standard_normal(truth.shape)
    return pilot.astype(np.float32), raw.astype(np.float32)


def test_the_translations_are_the_lattice_vectors():
    truth, a, b = _columns()
    offsets = lattice_offsets(truth)
    assert len(offsets) == 16
    # the strongest four are (dy, dx) of +-a and +-b, found to a tenth of a pixel
    for v in (a, -a, b, -b):
        assert np.min(np.hypot(*(offsets[:4] - v[::-1]).T)) < 0.1, (v, offsets)
    # the rest are sums of them, e.g. a + b (the per-axis parabola is a little off on a diagonal peak)
    assert np.min(np.hypot(*(offsets - (a + b)[::-1]).T)) < 0.2


def test_a_hexagonal_crystal_repeats_at_its_own_spacing():
    sim = StemSimulator(shape=(128, 128), scene="film", lattice="hexagonal", pitch_px=10.0, sigma_px=1.5,
                        rotation_deg=7.0, surface_dynamics=False, seed=3)
    offsets = lattice_offsets(sim.frame(0).clean)
    lengths = np.hypot(*offsets.T)
    assert len(offsets) >= 6
    assert np.allclose(np.sort(lengths)[:6], 10.0, atol=0.3), lengths


@pytest.mark.parametrize("frame", [
    np.random.default_rng(1).standard_normal((96, 96)),  # white noise
    ndimage.gaussian_filter(np.random.default_rng(2).standard_normal((96, 96)), 2.0),  # amorphous-like
    np.ones((64, 64)),  # flat
])
def test_nothing_repeats_in_noise_or_a_flat_frame(frame):
    assert lattice_offsets(frame).shape == (0, 2)


def test_a_perfect_crystal_gets_closer_to_its_truth():
    truth, _, _ = _columns()
    pilot, raw = _pilot_and_raw(truth)
    out = lattice_average(pilot, raw, lattice_offsets(pilot))
    inner = np.s_[16:-16, 16:-16]
    before = np.mean((pilot - truth)[inner] ** 2)
    after = np.mean((out - truth)[inner] ** 2)
    assert out.dtype == np.float32 and out.shape == truth.shape
    assert after < 0.5 * before, (before, after)


def test_a_vacancy_is_not_filled():
    full, a, b = _columns()
    truth, _, _ = _columns(missing={(6, 2)})
    cx, cy = 6 * a + 2 * b
    site = (int(round(cy)), int(round(cx)))
    assert 20 < site[0] < 108 and 20 < site[1] < 108 and full[site] > 0.9 > 0.1 > truth[site]
    pilot, raw = _pilot_and_raw(truth)
    offsets = lattice_offsets(pilot)
    out = lattice_average(pilot, raw, offsets)
    # A plain mean over the same translations fills the empty column to most of a full one ...
    plain = np.mean([ndimage.shift(pilot, -o, order=1, mode="nearest") for o in offsets] + [pilot], axis=0)
    assert plain[site] > 0.6
    # ... the weighted, noise-limited average leaves it empty.
    assert abs(out[site] - pilot[site]) < 0.1 and out[site] < 0.15


def test_noise_free_input_is_returned_unchanged():
    truth, _, _ = _columns(shape=(64, 64))
    out = lattice_average(truth, truth, lattice_offsets(truth))
    np.testing.assert_array_equal(out, truth)
    np.testing.assert_array_equal(lattice_average(truth, truth + 1, np.zeros((0, 2))), truth)


def test_bad_input_says_what_was_expected():
    f = np.zeros((32, 32), np.float32)
    with pytest.raises(ValueError, match=r"same shape .*\(32, 32\) and \(32, 31\)"):
        lattice_average(f, f[:, :31], np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"\(K, 2\).*got shape \(3,\)"):
        lattice_average(f, f, np.zeros(3))
    with pytest.raises(ValueError, match=r"one \(H, W\) frame.*got shape \(2, 32, 32\)"):
        lattice_offsets(np.zeros((2, 32, 32)))
    bad = f.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        lattice_average(f, bad, np.zeros((0, 2)))


@pytest.mark.parametrize("shape, size", [((40, 37), 5), ((9, 64), 15), ((33, 33), 3)])
def test_the_box_mean_is_scipys_uniform_filter(shape, size):
    from noise2atom.lattice_average import _box_mean

    a = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    np.testing.assert_allclose(_box_mean(a, size), ndimage.uniform_filter(a, size, mode="nearest"), atol=1e-5)


# --- the second pass: the raw frame averaged over the lattice, denoised again --------------------

def _smoothing(calls=None):
    """A denoiser to hand the step (any callable in the step's units: here a Gaussian filter),
    recording what it was given."""
    def denoise(a):
        if calls is not None:
            calls.append(np.array(a))
        return ndimage.gaussian_filter(np.asarray(a, np.float32), 1.2)
    return denoise


def test_the_second_pass_denoises_a_raw_frame_with_a_fraction_of_the_noise():
    truth, _, _ = _columns()
    raw = truth + 0.5 * np.random.default_rng(4).standard_normal(truth.shape).astype(np.float32)
    first = _smoothing()(raw)
    offsets = lattice_offsets(first)
    calls = []
    two = lattice_average(first, raw, offsets, denoise=_smoothing(calls))
    one = lattice_average(first, raw, offsets)
    inner = np.s_[16:-16, 16:-16]
    assert len(calls) == 1  # one more call of the network
    # what it was given: the raw frame averaged over the lattice, far less noisy than the raw one
    assert np.std((calls[0] - truth)[inner]) < 0.5 * np.std((raw - truth)[inner])
    err = {k: np.mean((v - truth)[inner] ** 2) for k, v in {"first": first, "one": one, "two": two}.items()}
    # A Gaussian blurs the columns as much the second time, so only the noise part of its error
    # goes; the bundled model's gain is in tests/engines/test_cli_lattice_average.py.
    assert err["two"] < err["one"] < 0.7 * err["first"], err


def test_the_second_pass_does_not_fill_a_vacancy_either():
    truth, a, b = _columns(missing={(6, 2)})
    cx, cy = 6 * a + 2 * b
    site = (int(round(cy)), int(round(cx)))
    pilot, raw = _pilot_and_raw(truth, noise=0.3)
    out = lattice_average(pilot, raw, lattice_offsets(pilot), denoise=_smoothing())
    assert truth[site] < 0.1 and out[site] < 0.15, out[site]


def test_without_a_lattice_the_network_is_not_called_again():
    calls = []
    frame = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    out = lattice_average(frame, frame + 1, np.zeros((0, 2)), denoise=_smoothing(calls))
    assert calls == [] and np.array_equal(out, frame)


def test_a_second_pass_of_the_wrong_shape_says_so():
    truth, _, _ = _columns(shape=(64, 64))
    pilot, raw = _pilot_and_raw(truth)
    with pytest.raises(ValueError, match=r"denoise must return its input's shape \(64, 64\) \(got \(32, 64\)\)"):
        lattice_average(pilot, raw, lattice_offsets(pilot), denoise=lambda a: a[:32])


@pytest.mark.parametrize("strip_rows", [1, 7, 50])
def test_the_strips_it_works_on_do_not_show(monkeypatch, strip_rows):
    """The averages run on strips of rows, on threads: any strip height gives the one-strip result."""
    import noise2atom.lattice_average as lattice

    truth, _, _ = _columns(shape=(120, 96))
    pilot, raw = _pilot_and_raw(truth)
    offsets = lattice_offsets(pilot)
    whole = lattice_average(pilot, raw, offsets, denoise=_smoothing())
    monkeypatch.setattr(lattice, "STRIP_ROWS", strip_rows)
    np.testing.assert_array_equal(lattice_average(pilot, raw, offsets, denoise=_smoothing()), whole)
