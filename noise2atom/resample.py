"""Zooms of whole frames as cached sparse matrices, exactly what ``scipy.ndimage`` computes.

:func:`noise2atom.scaling.denoise_resampled` zooms every frame of a series by the same factor,
smoothed first where pixels merge. Each of those steps (``gaussian_filter``, ``zoom`` with linear
or cubic splines) is linear and acts on rows and columns separately, so for one frame shape and
factor it is ``R_rows @ frame @ R_cols.T`` with two fixed matrices. They are built once per series
by running the same ``scipy.ndimage`` calls on an identity matrix, and have a handful of non-zeros
per row: a 1024² frame is zoomed in a few milliseconds instead of the ~30 ms ``ndimage`` takes on
one thread, with the same result to float32 rounding.

Examples
--------
>>> import numpy as np
>>> from scipy.ndimage import gaussian_filter, zoom
>>> f = np.random.default_rng(0).random((40, 50), dtype=np.float32)
>>> op = FrameZoom(f.shape, (30, 37), smooth_sigma=0.7, order=1)
>>> ref = zoom(gaussian_filter(f, 0.7), (30 / 40, 37 / 50), order=1, mode="nearest")
>>> bool(np.abs(op(f) - ref).max() < 1e-5)
True
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["FrameZoom", "zoomed_shape", "to_model_sampling", "from_model_sampling"]


@lru_cache(maxsize=16)
def _axis_matrix(n_in: int, n_out: int, smooth_sigma: float, order: int):
    """(n_out, n_in) CSR matrix: ``gaussian_filter1d`` (mode reflect, as ``gaussian_filter``) then
    ``zoom`` along one axis (mode nearest), applied to the unit vectors."""
    from scipy import sparse
    from scipy.ndimage import gaussian_filter1d, zoom

    eye = np.eye(n_in, dtype=np.float64)
    if smooth_sigma > 0:
        eye = gaussian_filter1d(eye, smooth_sigma, axis=0)
    m = zoom(eye, (n_out / n_in, 1.0), order=order, mode="nearest") if n_out != n_in else eye
    if m.shape != (n_out, n_in):
        raise ValueError(f"zoom of {n_in} to {n_out} gave {m.shape[0]} rows")
    m[np.abs(m) < 1e-7] = 0.0  # spline tails: below float32 resolution of the result
    return sparse.csr_matrix(m.astype(np.float32))


class FrameZoom:
    """``zoom(gaussian_filter(frame, smooth_sigma), out_shape / in_shape, order, mode="nearest")``
    for frames of ``in_shape``, as two cached sparse matrices."""

    def __init__(self, in_shape: tuple[int, int], out_shape: tuple[int, int], *, smooth_sigma: float = 0.0,
                 order: int = 1) -> None:
        if order not in (1, 3):
            raise ValueError(f"order must be 1 (linear) or 3 (cubic) (got {order!r})")
        self.in_shape = (int(in_shape[0]), int(in_shape[1]))
        self.out_shape = (int(out_shape[0]), int(out_shape[1]))
        s = float(smooth_sigma)
        self._rows = _axis_matrix(self.in_shape[0], self.out_shape[0], s, order)
        self._cols = _axis_matrix(self.in_shape[1], self.out_shape[1], s, order)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        f = np.asarray(frame, dtype=np.float32)
        if f.shape != self.in_shape:
            raise ValueError(f"expected a frame of {self.in_shape} (got {f.shape})")
        rows = self._rows @ f  # (out_h, in_w)
        return np.ascontiguousarray((self._cols @ rows.T).T, dtype=np.float32)


def zoomed_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    """The (h, w) a frame of ``shape`` has once zoomed by ``factor``."""
    return tuple(max(1, int(round(n * factor))) for n in shape)  # type: ignore[return-value]


def to_model_sampling(frame: np.ndarray, factor: float, *, up_order: int = 3) -> np.ndarray:
    """``frame`` zoomed by ``factor``, as the network sees it.

    Down (factor < 1): smoothed over the pixels merged first (sigma ``0.5 / factor``, so no counts
    are dropped and little noise aliases), then linear. Up: ``up_order`` 3 (cubic) keeps the detail
    (a noise-free abTEM frame zoomed x1.4 up and back keeps SSIM 0.9999; linear 0.989); 1 (linear)
    smooths, which pays at a few counts (:func:`noise2atom.scaling.zoom_up_order`). The bundled
    model is trained on frames zoomed the same way (``noise2atom.mixture``), so it knows the
    correlated noise that zooming makes.
    """
    f = np.asarray(frame, dtype=np.float32)
    size = zoomed_shape(f.shape, factor)
    if factor < 1.0:
        return FrameZoom(f.shape, size, smooth_sigma=0.5 / factor, order=1)(f)
    return FrameZoom(f.shape, size, order=up_order)(f)


def from_model_sampling(out: np.ndarray, factor: float, shape: tuple[int, int]) -> np.ndarray:
    """The network's output (zoomed by ``factor``) back to ``shape``: linear up where the network
    saw a smaller frame (its output is smooth; 4x cheaper than cubic), cubic down after
    anti-alias smoothing (sigma ``0.5 * (factor - 1)``) where it saw a larger one."""
    o = np.asarray(out, dtype=np.float32)
    if factor < 1.0:
        return FrameZoom(o.shape, shape, order=1)(o)
    return FrameZoom(o.shape, shape, smooth_sigma=0.5 * (factor - 1.0), order=3)(o)
