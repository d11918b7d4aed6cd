"""The cached sparse zooms give what scipy.ndimage gives, inside denoise_resampled too."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, zoom

from noise2atom.resample import FrameZoom
from noise2atom.scaling import denoise_resampled


def _reference(f: np.ndarray, factor: float, denoise, up_order: int = 3) -> np.ndarray:
    """denoise_resampled written out with scipy.ndimage on whole frames."""
    size = tuple(max(1, int(round(n * factor))) for n in f.shape)
    zf = (size[0] / f.shape[0], size[1] / f.shape[1])
    src = gaussian_filter(f, 0.5 / factor) if factor < 1 else f
    out = denoise(zoom(src, zf, order=1 if factor < 1 else up_order, mode="nearest"))
    if factor > 1:
        out = gaussian_filter(out, 0.5 * (factor - 1))
    back = (f.shape[0] / out.shape[0], f.shape[1] / out.shape[1])
    return zoom(out, back, order=1 if factor < 1 else 3, mode="nearest")


@pytest.mark.parametrize("shape, pitch", [((211, 173), 11.0), ((64, 90), 5.1), ((128, 128), 16.0)])
def test_denoise_resampled_matches_scipy_zooms(shape, pitch):
    f = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    target = 8.0
    denoise = lambda a: np.tanh(a) + 0.1 * a ** 2  # any non-linear map: the zooms must wrap it exactly
    got = denoise_resampled(f, target, pitch, denoise)
    ref = _reference(f, target / pitch, denoise)
    assert got.shape == shape and got.dtype == np.float32
    assert np.abs(got - ref).max() < 1e-5


def test_frame_zoom_refuses_another_shape():
    op = FrameZoom((32, 32), (20, 20), smooth_sigma=0.8)
    with pytest.raises(ValueError, match=r"expected a frame of \(32, 32\) \(got \(32, 31\)\)"):
        op(np.zeros((32, 31), np.float32))
    with pytest.raises(ValueError, match="order must be 1"):
        FrameZoom((32, 32), (20, 20), order=2)


@pytest.mark.parametrize("peak, order", [(1.0, 1), (200.0, 3)])
def test_a_series_of_few_counts_is_zoomed_up_linearly(peak, order):
    from noise2atom.scaling import estimate_scaling, zoom_up_order
    from noise2atom.stem_sim import StemSimulator

    raw = StemSimulator(shape=(96, 96), scene="crystal", peak_counts=peak, gain=7.0, offset_adu=300,
                        read_noise=0.0, seed=2).frame(0).noisy
    assert zoom_up_order(estimate_scaling(raw).to_model(raw)) == order


def test_zoom_up_order_reaches_denoise_resampled():
    f = np.random.default_rng(5).normal(size=(48, 48)).astype(np.float32)
    lin = denoise_resampled(f, 12.0, 8.0, lambda a: a, up_order=1)
    cub = denoise_resampled(f, 12.0, 8.0, lambda a: a, up_order=3)
    assert np.abs(lin - cub).max() > 1e-3
    assert np.abs(lin - _reference(f, 1.5, lambda a: a, up_order=1)).max() < 1e-5
